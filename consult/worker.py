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

from consult import jobs
from consult.catalog import CatalogUnavailable
from consult.services import Services
from consult.tasks import Handler, handlers

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, services: Services, *, poll_seconds: float = 0.25) -> None:
        self.services = services
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.poll_seconds = poll_seconds
        self.handlers: dict[str, Handler] = handlers()
        self.stopping = threading.Event()

    def run_once(self) -> bool:
        """Run one job if there is one; True if a job was run."""
        job = jobs.claim(self.services.catalog, self.name, kinds=list(self.handlers))
        if job is None:
            return False
        log.info("job %d (%s) attempt %d", job.id, job.kind, job.attempts)
        try:
            self.handlers[job.kind](self.services, job.payload)
        except Exception as exc:
            status = jobs.fail(
                self.services.catalog, job, self.name, f"{type(exc).__name__}: {exc}"
            )
            log.warning("job %d (%s) failed (%s): %s", job.id, job.kind, status, exc)
        else:
            jobs.complete(self.services.catalog, job, self.name)
        return True

    def run(self) -> None:
        """Work until ``stop()``; sleep between polls only when the queue is empty."""
        log.info("worker %s started", self.name)
        while not self.stopping.is_set():
            try:
                busy = self.run_once()
            except CatalogUnavailable as exc:
                log.warning("catalog unavailable: %s", exc)
                busy = False
            if not busy:
                self.stopping.wait(self.poll_seconds)

    def stop(self) -> None:
        self.stopping.set()
