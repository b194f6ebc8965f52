"""A doorbell for the job queue: workers wait on it, whoever commits a job rings it.

Without it a worker polls the queue (every 0.25 s), and every job waits half a poll on
average before it starts: the first tile of a just-received image, the opinion going
back to the PACS. Each waiting worker owns a named pipe in ``<data dir>/doorbells``; a
ring writes a byte to each (non-blocking, a few microseconds), so the worker's wait ends
at once. Pipes of workers that are gone are removed by the next ring (no reader). Workers
on another machine, with another data folder, see no ring and keep polling.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".bell"


class Doorbell:
    """One waiter's bell: a named pipe in ``folder``, open for reading (and for writing,
    so that it never reads as closed while no one rings)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        os.mkfifo(self.path, 0o600)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.path.unlink(missing_ok=True)
            raise

    def wait(self, timeout: float) -> bool:
        """Wait until rung or ``timeout`` seconds; True if rung."""
        if self._fd is None:
            raise RuntimeError("doorbell closed")
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 4096):
                pass
        return True

    def ring(self) -> None:
        """Ring this bell (a stopping worker wakes itself); safe from any thread."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._fd, b"!")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self.path.unlink(missing_ok=True)


def ring(folder: Path) -> None:
    """Ring every bell in ``folder``; never raises (a missed ring costs one poll)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        path = folder / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nobody reads it: its worker is gone
                path.unlink(missing_ok=True)
            continue
        try:
            os.write(fd, b"!")
        except OSError:  # full: it is awake anyway
            pass
        finally:
            os.close(fd)
