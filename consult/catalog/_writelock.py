"""The SQLite writers' queue: one lock for the threads of a process and the processes of
a host.

SQLite lets one writer in at a time and makes the others wait in its busy handler, which
sleeps 1, 2, 5, 10, 15, 20, 25... ms between tries: with a few busy writers (receiver
processes sharing a port), a transaction that would wait a fraction of a millisecond for
the lock sleeps several (measured with 4 receiver processes: a mean of 1.5-2.6 ms and a
90th percentile of 8 ms before BEGIN IMMEDIATE went through, for transactions of under
1 ms). Writers that queue here first find SQLite's lock free:

- the threads of one process on a :class:`threading.RLock` (woken the moment it is free);
- the processes on an ``flock`` of a file beside the database, tried every 50 us at first
  and at most every 1 ms (``flock`` itself has no timeout, and a writer stuck holding it
  must not hold a C-STORE past the catalog's lock timeout).

Reentrant within a thread, as the RLock is: the file lock is taken by the outermost
acquire and released by the matching release.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time


class WriterLock:
    """Mutual exclusion for SQLite writers across threads and processes."""

    def __init__(self, path: str | None) -> None:
        """``path``: the lock file (created if missing); None for threads only (an
        in-memory database has no other process)."""
        self._threads = threading.RLock()
        self._path = path
        self._fd: int | None = None
        self._depth = 0  # guarded by _threads

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=timeout):
            return False
        if self._depth == 0 and self._path is not None:
            try:
                acquired = self._lock_file(deadline)
            except BaseException:
                self._threads.release()
                raise
            if not acquired:
                self._threads.release()
                return False
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def _lock_file(self, deadline: float) -> bool:
        if self._fd is None:
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        pause = 0.00005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
