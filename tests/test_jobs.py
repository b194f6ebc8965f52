"""The durable job queue, on SQLite and PostgreSQL: claims, leases, retries, concurrency."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from consult import jobs
from consult.catalog import Catalog, as_utc, utcnow
from consult.catalog.tables import jobs as jobs_table


def _enqueue(catalog: Catalog, kind: str = "preview", payload: Any = None, **options: Any) -> int:
    with catalog.write() as conn:
        job_id = jobs.enqueue(conn, kind, payload or {"n": 1}, **options)
    assert job_id is not None
    return job_id


def _row(catalog: Catalog, job_id: int) -> Any:
    with catalog.read() as conn:
        return conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).one()


def _pass_time(catalog: Catalog, seconds: float) -> None:
    """Move every job's clock back, as if ``seconds`` had passed (no sleeping in tests).

    Done in Python: SQLite keeps times as text and cannot subtract an interval.
    """
    shift = timedelta(seconds=seconds)
    with catalog.write() as conn:
        rows = conn.execute(
            select(jobs_table.c.id, jobs_table.c.run_after, jobs_table.c.lease_until)
        ).all()
        for row in rows:
            lease = None if row.lease_until is None else as_utc(row.lease_until) - shift
            conn.execute(
                update(jobs_table)
                .where(jobs_table.c.id == row.id)
                .values(run_after=as_utc(row.run_after) - shift, lease_until=lease)
            )


def test_enqueue_claim_complete(catalog: Catalog) -> None:
    job_id = _enqueue(catalog, "preview", {"version_id": 7, "uid": "1.2.3"})
    assert _row(catalog, job_id).status == "queued"

    job = jobs.claim(catalog, "w1")

    assert job is not None
    assert (job.id, job.kind, job.payload) == (job_id, "preview", {"version_id": 7, "uid": "1.2.3"})
    assert job.attempts == 1
    row = _row(catalog, job_id)
    assert (row.status, row.worker) == ("running", "w1")
    assert as_utc(row.lease_until) > utcnow()

    assert jobs.complete(catalog, job, "w1")
    row = _row(catalog, job_id)
    assert (row.status, row.lease_until, row.last_error) == ("done", None, None)
    assert row.finished_at is not None
    assert jobs.claim(catalog, "w1") is None
    with catalog.read() as conn:
        assert jobs.counts(conn) == {"done": 1}


def test_claim_on_empty_queue_returns_none(catalog: Catalog) -> None:
    assert jobs.claim(catalog, "w1") is None


def test_claim_takes_the_oldest_first_and_filters_by_kind(catalog: Catalog) -> None:
    first = _enqueue(catalog, "preview")
    second = _enqueue(catalog, "delivery")
    third = _enqueue(catalog, "preview")

    assert jobs.claim(catalog, "w", kinds=["delivery"]) == jobs.Job(
        second, "delivery", {"n": 1}, 1, 5
    )
    claimed = [jobs.claim(catalog, "w", kinds=["preview"]) for _ in range(3)]
    assert [j.id if j else None for j in claimed] == [first, third, None]


def test_dedup_key(catalog: Catalog) -> None:
    with catalog.write() as conn:
        first = jobs.enqueue(conn, "preview", {"n": 1}, dedup_key="preview:abc")
        again = jobs.enqueue(conn, "preview", {"n": 2}, dedup_key="preview:abc")
        other = jobs.enqueue(conn, "preview", {"n": 3}, dedup_key="preview:def")
    with catalog.write() as conn:
        later = jobs.enqueue(conn, "preview", {"n": 4}, dedup_key="preview:abc")
    assert first is not None
    assert other is not None
    assert (again, later) == (None, None)
    with catalog.read() as conn:
        assert jobs.counts(conn) == {"queued": 2}


def test_dedup_does_not_spoil_the_callers_transaction(catalog: Catalog) -> None:
    """A duplicate is skipped inside the caller's transaction; its other writes commit."""
    _enqueue(catalog, dedup_key="same")
    with catalog.write() as conn:
        assert jobs.enqueue(conn, "preview", {}, dedup_key="same") is None
        kept = jobs.enqueue(conn, "preview", {"n": 5})
    assert kept is not None
    assert _row(catalog, kept).status == "queued"


def test_failed_job_retries_with_backoff_then_fails(catalog: Catalog) -> None:
    job_id = _enqueue(catalog, max_attempts=3)
    delays = []
    for attempt in (1, 2):
        job = jobs.claim(catalog, "w")
        assert job is not None
        assert (job.id, job.attempts) == (job_id, attempt)
        before = utcnow()
        assert jobs.fail(catalog, job, "w", f"broken {attempt}", base_delay=100) == "queued"
        row = _row(catalog, job_id)
        assert (row.status, row.attempts, row.last_error) == (
            "queued",
            attempt,
            f"broken {attempt}",
        )
        delays.append((as_utc(row.run_after) - before).total_seconds())
        assert jobs.claim(catalog, "w") is None, "claimed before its backoff ran out"
        _pass_time(catalog, 100 * 2 ** (attempt - 1))

    assert 99 < delays[0] < 110
    assert 199 < delays[1] < 210  # exponential
    job = jobs.claim(catalog, "w")
    assert job is not None
    assert job.attempts == 3
    assert jobs.fail(catalog, job, "w", "broken for good" * 500) == "failed"
    row = _row(catalog, job_id)
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.finished_at is not None
    assert len(row.last_error) == 2000
    _pass_time(catalog, 10_000)
    assert jobs.claim(catalog, "w") is None


def test_expired_lease_is_claimed_by_another_worker(catalog: Catalog) -> None:
    job_id = _enqueue(catalog)
    dead = jobs.claim(catalog, "dead-worker", lease_seconds=30)
    assert dead is not None
    assert jobs.claim(catalog, "alive") is None, "a live lease was taken"
    assert jobs.extend_lease(catalog, dead, "dead-worker", lease_seconds=30)

    _pass_time(catalog, 31)
    alive = jobs.claim(catalog, "alive")

    assert alive is not None
    assert (alive.id, alive.attempts) == (job_id, 2)
    assert not jobs.complete(catalog, dead, "dead-worker")
    assert jobs.fail(catalog, dead, "dead-worker", "late") == "lost"
    assert not jobs.extend_lease(catalog, dead, "dead-worker")
    assert _row(catalog, job_id).status == "running"
    assert jobs.complete(catalog, alive, "alive")
    assert _row(catalog, job_id).status == "done"


def test_a_stale_claim_of_the_same_worker_is_lost_too(catalog: Catalog) -> None:
    """The claim is (worker, attempt): a worker re-claiming its own job voids the old claim."""
    _enqueue(catalog)
    old = jobs.claim(catalog, "w", lease_seconds=5)
    assert old is not None
    _pass_time(catalog, 6)
    new = jobs.claim(catalog, "w")
    assert new is not None
    assert not jobs.complete(catalog, old, "w")
    assert jobs.complete(catalog, new, "w")


def test_a_job_that_kills_its_workers_ends_failed(catalog: Catalog) -> None:
    job_id = _enqueue(catalog, max_attempts=2)
    for worker in ("w1", "w2"):
        assert jobs.claim(catalog, worker, lease_seconds=10) is not None
        _pass_time(catalog, 11)
    assert jobs.claim(catalog, "w3") is None
    row = _row(catalog, job_id)
    assert (row.status, row.attempts) == ("failed", 2)
    assert "lease expired" in row.last_error


@pytest.mark.parametrize("threads", [8])
def test_concurrent_claims_take_each_job_exactly_once(catalog: Catalog, threads: int) -> None:
    with catalog.write() as conn:
        queued = [jobs.enqueue(conn, "preview", {"n": n}) for n in range(60)]
    expected = [job_id for job_id in queued if job_id is not None]
    assert len(expected) == 60
    barrier = threading.Barrier(threads)

    def work(name: str) -> list[int]:
        barrier.wait(timeout=30)
        taken = []
        while (job := jobs.claim(catalog, name)) is not None:
            assert jobs.complete(catalog, job, name)
            taken.append(job.id)
        return taken

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(work, f"w{i}") for i in range(threads)]
        taken = [future.result(timeout=120) for future in futures]

    claims = Counter(job_id for ids in taken for job_id in ids)
    assert sorted(claims) == sorted(expected)
    assert set(claims.values()) == {1}, "a job was claimed twice"
    with catalog.read() as conn:
        assert jobs.counts(conn) == {"done": len(expected)}
        rows = conn.execute(select(jobs_table.c.attempts)).scalars().all()
    assert set(rows) == {1}
