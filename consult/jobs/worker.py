"""The worker loop: claim a job, run its handler, complete or fail it.

Several workers (threads, processes, machines) may run against one catalog and one
object store; the queue's leases keep each job with one worker at a time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from consult import jobs
from consult.catalog import CatalogUnavailable
from consult.jobs import doorbell
from consult.services import Services

log = logging.getLogger(__name__)

Handler = Callable[[Services, dict[str, Any]], None]


class Worker:
    """Runs jobs of the kinds ``handlers`` names (kind -> handler), one at a time."""

    def __init__(
        self,
        services: Services,
        handlers: Mapping[str, Handler],
        *,
        poll_seconds: float = 0.25,
    ) -> None:
        self.services = services
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.poll_seconds = poll_seconds
        self.handlers = dict(handlers)
        self.stopping = threading.Event()
        self._bell: doorbell.Doorbell | None = None

    def run_once(self) -> bool:
        """Run one job if there is one; True if a job was run."""
        lease = self.services.settings.job_lease_seconds
        job = jobs.claim(
            self.services.catalog, self.name, kinds=list(self.handlers), lease_seconds=lease
        )
        if job is None:
            return False
        log.info("job %d (%s) attempt %d", job.id, job.kind, job.attempts)
        try:
            with self._renewing(job, lease):
                self.handlers[job.kind](self.services, job.payload)
        except Exception as exc:
            status = jobs.fail(
                self.services.catalog, job, self.name, f"{type(exc).__name__}: {exc}"
            )
            log.warning("job %d (%s) failed (%s): %s", job.id, job.kind, status, exc)
        else:
            jobs.complete(self.services.catalog, job, self.name)
        return True

    @contextmanager
    def _renewing(self, job: jobs.Job, lease: float) -> Iterator[None]:
        """Renew the job's lease every third of its length while the handler runs, so a
        long job (a big pyramid, a large multi-frame object) keeps it, while a job whose
        worker died is taken over after at most one lease."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(lease / 3):
                try:
                    if not jobs.extend_lease(self.services.catalog, job, self.name, lease):
                        log.warning("job %d: lease lost to another worker", job.id)
                        return
                except CatalogUnavailable as exc:
                    log.warning("job %d: lease not renewed: %s", job.id, exc)

        thread = threading.Thread(target=renew, name=f"lease-{job.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def run(self) -> None:
        """Work until ``stop()``. With the queue empty, wait for the doorbell (rung when a
        job is queued on this machine) or the next poll (jobs queued elsewhere)."""
        log.info("worker %s started", self.name)
        try:
            self._bell = doorbell.Doorbell(self.services.settings.doorbells_dir)
        except OSError as exc:
            log.warning("no doorbell (%s): polling every %.2f s only", exc, self.poll_seconds)
        try:
            while not self.stopping.is_set():
                try:
                    busy = self.run_once()
                except CatalogUnavailable as exc:
                    log.warning("catalog unavailable: %s", exc)
                    busy = False
                if not busy and not self.stopping.is_set():
                    if self._bell is not None:
                        self._bell.wait(self.poll_seconds)
                    else:
                        self.stopping.wait(self.poll_seconds)
        finally:
            bell, self._bell = self._bell, None
            if bell is not None:
                bell.close()

    def stop(self) -> None:
        self.stopping.set()
        bell = self._bell
        if bell is not None:
            bell.ring()
