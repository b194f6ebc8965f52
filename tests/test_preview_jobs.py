"""Preview jobs build tile packs: pyramids for large frames, rebuilds, one build at a time,
leases renewed for long jobs, and a worker killed mid-job leaves a job another completes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit
from sqlalchemy import select

from consult import previews
from consult.access import directory
from consult.catalog import as_utc
from consult.catalog.tables import instance_versions
from consult.catalog.tables import jobs as jobs_table
from consult.catalog.tables import previews as previews_table
from consult.cli.servers import job_handlers
from consult.ingest.pipeline import Origin, StoredInstance, ingest_file
from consult.jobs.worker import Worker
from consult.services import Services
from consult.settings import Settings
from tests.pyramid_support import mono16_dataset, psnr, stored_level, write_dataset
from tests.support import ConsultCli, sample, wait_until
from viewer import open_frames
from viewer.pyramid import build as real_build

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def services(settings: Settings, database_url: str) -> Iterator[Services]:
    opened = Services.open(settings.model_copy(update={"database_url": database_url}))
    yield opened
    opened.close()


@pytest.fixture
def origin(services: Services) -> Origin:
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Sender")
    return Origin(hospital.id, "REFPACS", "127.0.0.1", 1)


def with_settings(services: Services, **changes: Any) -> Services:
    return Services(
        settings=services.settings.model_copy(update=changes),
        catalog=services.catalog,
        store=services.store,
    )


def drain(services: Services) -> int:
    worker = Worker(services, job_handlers())
    ran = 0
    while worker.run_once():
        ran += 1
    return ran


def rows(services: Services, version_id: int) -> list[Any]:
    with services.catalog.read() as conn:
        return list(
            conn.execute(
                select(previews_table)
                .where(previews_table.c.version_pk == version_id)
                .order_by(previews_table.c.frame)
            ).all()
        )


def job_rows(services: Services) -> list[Any]:
    with services.catalog.read() as conn:
        return list(conn.execute(select(jobs_table).order_by(jobs_table.c.id)).all())


def original(services: Services, stored: StoredInstance) -> bytes:
    with services.catalog.read() as conn:
        key = conn.execute(
            select(instance_versions.c.object_key).where(
                instance_versions.c.id == stored.version_id
            )
        ).scalar_one()
    return services.store.get(key)


def ingest_generated(
    services: Services, origin: Origin, tmp_path: Path, **kwargs: Any
) -> StoredInstance:
    path = write_dataset(mono16_dataset(**kwargs), tmp_path / f"gen-{time.monotonic_ns()}.dcm")
    return ingest_file(services, path, origin=origin)


def test_large_frame_gets_a_lossless_pyramid_with_the_dataset_window(
    services: Services, origin: Origin, tmp_path: Path
) -> None:
    services = with_settings(services, tile_format="png")
    stored = ingest_generated(services, origin, tmp_path, rows=1100, columns=1300)
    assert drain(services) == 1
    [row] = rows(services, stored.version_id)
    assert row.status == "ready" and row.reason is None
    assert (row.width, row.height, row.tile_size, row.overlap) == (1300, 1100, 254, 1)
    assert (row.levels, row.tile_format, row.media_type, row.lossy) == (12, "png", "image/png", 0)
    assert (row.window_center, row.window_width, row.window_function) == (1800, 1600, "LINEAR")
    assert row.bytes == services.store.head(row.object_key).size and not row.source_lossy
    windows = json.loads(row.windows)
    assert windows[0]["name"] and windows[0]["center"] == 1800 and windows[0]["source"] == "dataset"
    assert any(w["source"] == "automatic" for w in windows)
    lossless = open_frames(original(services, stored)).render(0)
    assert np.array_equal(stored_level(services.store, row.object_key), lossless)


def test_jpeg_tiles_by_default_within_the_stated_psnr(
    services: Services, origin: Origin, tmp_path: Path
) -> None:
    stored = ingest_generated(services, origin, tmp_path, rows=1030, columns=700)
    drain(services)
    [row] = rows(services, stored.version_id)
    assert (row.tile_format, row.media_type, row.lossy) == ("jpeg", "image/jpeg", 1)
    lossless = open_frames(original(services, stored)).render(0)
    assert psnr(stored_level(services.store, row.object_key), lossless) >= 35.0


def test_rebuild_keeps_preview_ids_and_replaces_the_pack(
    services: Services, origin: Origin, tmp_path: Path
) -> None:
    stored = ingest_generated(services, origin, tmp_path, rows=300, columns=200, frames=2)
    drain(services)
    before = rows(services, stored.version_id)
    assert [r.frame for r in before] == [0, 1] and all(r.status == "ready" for r in before)
    with services.catalog.write() as conn:
        assert previews.request_build(conn, stored.version_id) is not None
        assert previews.request_build(conn, stored.version_id) is None  # one is queued
    drain(services)
    after = rows(services, stored.version_id)
    assert [r.id for r in after] == [r.id for r in before]
    assert all(a.object_key != b.object_key for a, b in zip(after, before, strict=True))
    assert not any(services.store.exists(b.object_key) for b in before)
    assert all(services.store.exists(a.object_key) for a in after)


def test_concurrent_build_requests_queue_one_job(
    services: Services, origin: Origin, tmp_path: Path
) -> None:
    stored = ingest_generated(services, origin, tmp_path, rows=64, columns=64)
    drain(services)
    barrier = threading.Barrier(8)

    def ask(_: int) -> int | None:
        barrier.wait()
        with services.catalog.write() as conn:
            return previews.request_build(conn, stored.version_id)

    with ThreadPoolExecutor(8) as pool:
        queued = [j for j in pool.map(ask, range(8)) if j is not None]
    assert len(queued) == 1
    assert [j.status for j in job_rows(services)] == ["done", "queued"]


def test_undecodable_pixels_are_a_named_failure_not_a_crash(
    services: Services, origin: Origin, tmp_path: Path
) -> None:
    ds = mono16_dataset(64, 64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 this is not a JPEG stream"])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    stored = ingest_file(services, write_dataset(ds, tmp_path / "bad.dcm"), origin=origin)
    assert drain(services) == 1
    [row] = rows(services, stored.version_id)
    assert row.status == "failed" and "cannot be decoded" in row.reason
    assert row.object_key is None
    assert [j.status for j in job_rows(services)] == ["done"]


def test_lease_is_renewed_so_two_workers_never_build_one_pyramid_at_once(
    services: Services, origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job takes several leases' time; the second worker never gets it."""
    lease = 0.4
    services = with_settings(services, job_lease_seconds=lease, tile_format="png")
    stored = ingest_generated(services, origin, tmp_path, rows=1280, columns=1280, frames=6)
    builds: list[tuple[str, float, float]] = []

    def recording_build(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return real_build(*args, **kwargs)
        finally:
            # Each frame takes at least half a lease however fast the machine builds it,
            # so that the job outlasts its first leases.
            threading.Event().wait(max(0.0, start + lease / 2 - time.monotonic()))
            builds.append((threading.current_thread().name, start, time.monotonic()))

    monkeypatch.setattr("consult.previews.builds.build", recording_build)
    workers = [Worker(services, job_handlers(), poll_seconds=0.05) for _ in range(2)]
    threads = [threading.Thread(target=w.run, name=f"worker-{i}") for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: [j.status for j in job_rows(services)] == ["done"], timeout=60)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(10)
    [job] = job_rows(services)
    assert job.attempts == 1, job.last_error
    assert len(builds) == 6 and len({name for name, _, _ in builds}) == 1
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(builds))  # one at a time
    assert as_utc(job.finished_at) - as_utc(job.created_at) > timedelta(seconds=2 * lease)
    assert all(r.status == "ready" for r in rows(services, stored.version_id))


def test_worker_killed_mid_job_leaves_a_job_another_worker_completes(
    services: Services, origin: Origin, tmp_path: Path
) -> None:
    stored = ingest_generated(services, origin, tmp_path, rows=1536, columns=1536, frames=6)
    env = {
        **os.environ,
        "CONSULT_DATA_DIR": str(services.settings.data_dir),
        "CONSULT_DATABASE_URL": services.settings.catalog_url,
        "CONSULT_JOB_LEASE_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "consult", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:

        def first_frame_built() -> bool:
            if child.poll() is not None:
                pytest.fail(f"worker exited early: {log.read_text()}")
            return len(rows(services, stored.version_id)) >= 1

        wait_until(first_frame_built, timeout=60)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == -signal.SIGKILL
    killed = rows(services, stored.version_id)
    assert 1 <= len(killed) < 6, "the worker was not killed mid-job"
    [job] = job_rows(services)
    assert (job.status, job.attempts) == ("running", 1)  # its lease is held by the dead

    survivor = Worker(services, job_handlers(), poll_seconds=0.05)
    wait_until(lambda: survivor.run_once() and True, timeout=30, interval=0.1)
    [job] = job_rows(services)
    assert (job.status, job.attempts) == ("done", 2)
    final = rows(services, stored.version_id)
    assert [r.frame for r in final] == list(range(6)) and all(r.status == "ready" for r in final)
    assert all(services.store.exists(r.object_key) for r in final)
    assert not any(services.store.exists(r.object_key) for r in killed)  # replaced, deleted


def test_previews_status_and_rebuild_commands(settings: Settings, tmp_path: Path) -> None:
    local = Services.open(settings)
    try:
        with local.catalog.write() as conn:
            hospital = directory.add_hospital(conn, "Sender")
        origin = Origin(hospital.id, "REFPACS", "127.0.0.1", 1)
        image = ingest_generated(local, origin, tmp_path, rows=200, columns=300)
        ingest_file(local, sample("pydicom__test-SR.dcm"), origin=origin)
    finally:
        local.close()
    cli = ConsultCli(settings.data_dir)
    before = cli("previews", "status")
    assert before.status == 0, before.err
    assert before.out == (
        "instances: 2 (2 without previews yet)\n"
        "frames: ready 0, no image 0, failed 0\n"
        "preview jobs (all studies): queued 2, running 0, done 0, failed 0\n"
        "on-demand renders: 0 of at most 500, 0.0 of at most 2048 MB\n"
    )
    rebuilt = cli("previews", "rebuild", "--progress")
    assert rebuilt.status == 0, rebuilt.err
    assert "2 preview job(s) queued for 2 instance(s)" in rebuilt.out
    assert "2 rebuilt, 0 failed" in rebuilt.out
    assert "rebuilding previews [##############################] 2/2" in rebuilt.err
    after = cli("previews", "status", "--study", image.study_uid)
    assert "instances: 1 (0 without previews yet)" in after.out
    assert "frames: ready 1, no image 0, failed 0" in after.out

    nowhere = cli("previews", "status", "--study", "1.2.3")
    assert nowhere.status == 2 and "no study '1.2.3'" in nowhere.err
    queued = cli("previews", "rebuild", "--study", image.study_uid, "--no-wait")
    assert queued.status == 0 and queued.out == "1 preview job(s) queued for 1 instance(s)\n"
    local = Services.open(settings)
    try:
        assert [j.status for j in job_rows(local)] == ["done", "done", "queued"]
    finally:
        local.close()
