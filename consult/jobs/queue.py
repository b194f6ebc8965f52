"""The durable job queue, kept in the catalog.

One queue serves every kind of background work (previews now; deliveries and
notifications too). A worker claims a job with a lease: one ``UPDATE ... RETURNING``
that picks the oldest runnable job (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the
database write lock on SQLite). A job whose lease ran out (its worker died) is runnable
again, unless it has used all its attempts: a job that keeps killing its worker (say, an
image that exhausts memory) ends ``failed`` instead of looping forever. Failures are
retried with exponential backoff up to ``max_attempts``.

A claim is held by (worker, attempt): ``complete``, ``fail`` and ``extend_lease`` change
the job only while that claim is current, and report when it was lost.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from consult.catalog import Catalog, insert_id, utcnow
from consult.catalog.db import JOBS_QUEUED
from consult.catalog.driver import DriverStatement
from consult.catalog.tables import jobs

log = logging.getLogger(__name__)


class JobStatus(enum.StrEnum):
    """Where a job stands in the queue."""

    QUEUED = "queued"
    """Waiting to be claimed, from ``run_after`` on (new, or back after a failed attempt)."""
    RUNNING = "running"
    """Claimed by a worker whose lease has not run out."""
    DONE = "done"
    """Its handler finished; final."""
    FAILED = "failed"
    """Failed on its last attempt, or its worker died then; final (``last_error`` says why)."""


FINISHED = (JobStatus.DONE, JobStatus.FAILED)


@dataclass(frozen=True)
class Job:
    """A claimed job."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    dedup_key: str | None = None,
    fresh_key: bool = False,
    max_attempts: int = 5,
) -> int | None:
    """Queue a job inside the caller's transaction; returns its id.

    With ``dedup_key``, a second job with the same key is not queued (returns None) while
    the first exists. ``fresh_key`` says the key cannot exist yet (it names a row the
    caller's transaction just created): no look-up, no savepoint, on the hot ingest path.
    """
    now = utcnow()
    conn.info[JOBS_QUEUED] = True  # ring the workers' doorbell once committed
    values = {
        "kind": kind,
        "payload": json.dumps(payload, sort_keys=True),
        "status": JobStatus.QUEUED.value,
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": now,
        "created_at": now,
        "dedup_key": dedup_key,
    }
    if dedup_key is not None and not fresh_key:
        existing = conn.execute(select(jobs.c.id).where(jobs.c.dedup_key == dedup_key)).first()
        if existing is not None:
            return None
        try:
            with conn.begin_nested():
                return insert_id(conn, _INSERT_JOB, values)
        except IntegrityError:
            return None
    if fresh_key:
        return int(_INSERT_JOB_DIRECT.scalar(conn, values))
    return insert_id(conn, _INSERT_JOB, values)


_INSERT_JOB = jobs.insert()
_INSERT_JOB_DIRECT = DriverStatement(jobs.insert().returning(jobs.c.id))  # the hot path


def claim(
    catalog: Catalog, worker: str, *, kinds: list[str] | None = None, lease_seconds: float = 60
) -> Job | None:
    """Claim the oldest runnable job for ``worker``, or return None."""
    now = utcnow()
    expired = and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now)
    runnable = or_(
        and_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.run_after <= now),
        and_(expired, jobs.c.attempts < jobs.c.max_attempts),
    )
    # Jobs whose workers died on their last attempt are failed for good.
    dead = select(jobs.c.id).where(expired, jobs.c.attempts >= jobs.c.max_attempts)
    if not catalog.is_sqlite:
        dead = dead.with_for_update(skip_locked=True)
    reap = (
        update(jobs)
        .where(jobs.c.id.in_(dead.scalar_subquery()))
        .values(
            status=JobStatus.FAILED.value,
            lease_until=None,
            finished_at=now,
            last_error="lease expired on the last attempt (the worker stopped or died)",
        )
    )
    pick = select(jobs.c.id).where(runnable)
    if kinds:
        pick = pick.where(jobs.c.kind.in_(kinds))
    pick = pick.order_by(jobs.c.run_after, jobs.c.id).limit(1)
    if not catalog.is_sqlite:
        pick = pick.with_for_update(skip_locked=True)
    stmt = (
        update(jobs)
        .where(jobs.c.id == pick.scalar_subquery())
        .values(
            status=JobStatus.RUNNING.value,
            attempts=jobs.c.attempts + 1,
            lease_until=now + timedelta(seconds=lease_seconds),
            worker=worker,
        )
        .returning(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.attempts, jobs.c.max_attempts)
    )
    with catalog.write() as conn:
        reaped = conn.execute(reap).rowcount
        row = conn.execute(stmt).first()
    if reaped:
        log.warning("%d job(s) failed: lease expired on their last attempt", reaped)
    if row is None:
        return None
    return Job(
        id=row.id,
        kind=row.kind,
        payload=json.loads(row.payload),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
    )


def _held(job: Job, worker: str) -> tuple[ColumnElement[bool], ...]:
    """The job is still running under this worker's claim (same worker, same attempt)."""
    return (
        jobs.c.id == job.id,
        jobs.c.worker == worker,
        jobs.c.attempts == job.attempts,
        jobs.c.status == JobStatus.RUNNING.value,
    )


def complete(catalog: Catalog, job: Job, worker: str) -> bool:
    """Mark a job done; False if the lease was lost to another worker meanwhile."""
    with catalog.write() as conn:
        result = conn.execute(
            update(jobs)
            .where(*_held(job, worker))
            .values(
                status=JobStatus.DONE.value, finished_at=utcnow(), lease_until=None, last_error=None
            )
        )
    return result.rowcount == 1


def fail(
    catalog: Catalog, job: Job, worker: str, error: str, *, base_delay: float = 2.0
) -> JobStatus | Literal["lost"]:
    """Record a failure: back to the queue with backoff, or failed for good.

    Returns the job's new status (``queued`` or ``failed``), or ``lost`` when the claim
    was lost meanwhile (the lease expired and another worker holds the job).
    """
    final = job.attempts >= job.max_attempts
    status = JobStatus.FAILED if final else JobStatus.QUEUED
    delay = timedelta(seconds=base_delay * (2 ** (job.attempts - 1)))
    now = utcnow()
    with catalog.write() as conn:
        result = conn.execute(
            update(jobs)
            .where(*_held(job, worker))
            .values(
                status=status.value,
                run_after=now + delay,
                lease_until=None,
                last_error=error[:2000],
                finished_at=now if final else None,
            )
        )
    return status if result.rowcount == 1 else "lost"


def extend_lease(catalog: Catalog, job: Job, worker: str, lease_seconds: float = 60) -> bool:
    """Keep a long job's lease; False if it was lost."""
    with catalog.write() as conn:
        result = conn.execute(
            update(jobs)
            .where(*_held(job, worker))
            .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
        )
    return result.rowcount == 1


def counts(conn: Connection) -> dict[JobStatus, int]:
    """Number of jobs per status."""
    from sqlalchemy import func

    rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
    return {JobStatus(status): int(n) for status, n in rows}
