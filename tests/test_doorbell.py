"""The workers' doorbell: a job committed wakes a waiting worker at once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import select

from consult import jobs
from consult.access import directory
from consult.catalog.tables import jobs as jobs_table
from consult.cli.servers import job_handlers
from consult.dicom.synthetic import dataset_bytes, demo_study
from consult.ingest.pipeline import Origin, ingest
from consult.jobs import doorbell
from consult.jobs.worker import Worker
from consult.services import Services
from consult.settings import Settings
from tests.support import wait_until


def test_a_ring_wakes_every_bell_and_removes_those_nobody_waits_on(tmp_path: Path) -> None:
    folder = tmp_path / "bells"
    bells = [doorbell.Doorbell(folder), doorbell.Doorbell(folder)]
    stale = folder / f"999999-gone{doorbell.SUFFIX}"
    os.mkfifo(stale)  # a worker that died without closing its bell
    try:
        assert [bell.wait(0.01) for bell in bells] == [False, False]
        doorbell.ring(folder)
        assert [bell.wait(5) for bell in bells] == [True, True]
        assert [bell.wait(0.01) for bell in bells] == [False, False]  # drained
        assert not stale.exists()
    finally:
        for bell in bells:
            bell.close()
    assert os.listdir(folder) == []
    doorbell.ring(tmp_path / "missing")  # nobody waits: nothing to do, no error


def test_committed_jobs_ring_and_others_do_not(settings: Settings) -> None:
    services = Services.open(settings)
    bell = doorbell.Doorbell(settings.doorbells_dir)
    try:
        with services.catalog.write() as conn:
            directory.add_hospital(conn, "No job here")
        assert not bell.wait(0.01)
        try:
            with services.catalog.write() as conn:
                jobs.enqueue(conn, "preview", {"version_id": 1})
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert not bell.wait(0.01)
        with services.catalog.write() as conn:
            jobs.enqueue(conn, "preview", {"version_id": 1})
        assert bell.wait(5)
        with services.catalog.write() as conn:  # the connection's mark does not linger
            directory.add_hospital(conn, "Still no job")
        assert not bell.wait(0.01)
    finally:
        bell.close()
        services.close()


class _CountingWorker(Worker):
    runs = 0

    def run_once(self) -> bool:
        ran = super().run_once()
        self.runs += 1
        return ran


def test_a_waiting_worker_starts_a_received_instances_job_at_once(settings: Settings) -> None:
    """The worker polls only every 30 s here: the preview job of an instance received
    while it waits is done within seconds all the same, and stop() ends its wait."""
    services = Services.open(settings)
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Referring")
    origin = Origin(hospital.id, "REFPACS", "127.0.0.1", 40000)
    worker = _CountingWorker(services, job_handlers(), poll_seconds=30)
    thread = threading.Thread(target=worker.run, name="worker")
    thread.start()
    try:
        # It found the queue empty and waits (or is about to) for 30 s.
        wait_until(lambda: worker.runs >= 1, timeout=10)
        ds, ts = demo_study()[0]
        ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)

        def done() -> bool:
            with services.catalog.read() as conn:
                return conn.execute(select(jobs_table.c.status)).scalars().all() == ["done"]

        wait_until(done, timeout=10)  # a third of one poll
    finally:
        worker.stop()
        thread.join(timeout=5)
        services.close()
    assert not thread.is_alive()
    assert list(settings.doorbells_dir.glob("*.bell")) == []
