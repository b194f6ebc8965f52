"""``consult verify`` (every stored object against its SHA-256) and ``consult receipt``
(arrival tracking), on every catalog and store; then the commands themselves, in this process."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from consult.access import directory
from consult.catalog import Catalog
from consult.catalog.tables import instance_versions, instances, series, studies
from consult.dicom.synthetic import dataset_bytes, demo_study
from consult.errors import StudyNotFound
from consult.ingest.pipeline import Origin, StoredInstance, ingest
from consult.services import Services
from consult.settings import Settings
from consult.studies.receipt import is_stable, study_receipt, to_json, to_text
from consult.studies.verify import verify
from storage import ObjectStore
from tests.support import ConsultCli


def _ingest_demo(services: Services) -> tuple[str, list[StoredInstance]]:
    """The demo study, then a second version of its first instance (different bytes)."""
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Referring")
    origin = Origin(hospital.id, "REFPACS", "127.0.0.1", 40000)
    stored = [
        ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
        for ds, ts in demo_study()
    ]
    ds, ts = demo_study()[0]
    ds.ImageComments = "corrected"
    stored.append(ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin))
    assert stored[-1].version == 2
    return stored[0].study_uid, stored


def _key(services: Services, version_id: int) -> tuple[str, int]:
    with services.catalog.read() as conn:
        row = conn.execute(
            select(instance_versions.c.object_key, instance_versions.c.dataset_offset).where(
                instance_versions.c.id == version_id
            )
        ).one()
    return str(row.object_key), int(row.dataset_offset)


@pytest.fixture
def services(settings: Settings, catalog: Catalog, store: ObjectStore) -> Services:
    return Services(settings=settings, catalog=catalog, store=store)


def test_verify_finds_corrupted_and_missing_objects(services: Services) -> None:
    study_uid, stored = _ingest_demo(services)
    steps: list[tuple[int, int]] = []
    report = verify(services, on_step=lambda done, total: steps.append((done, total)))
    assert report.ok and report.checked == 6
    assert steps[-1] == (6, 6)

    # A flipped byte in the file meta (ours, before the dataset) is not a mismatch...
    key, offset = _key(services, stored[1].version_id)
    blob = bytearray(services.store.get(key))
    blob[10] ^= 0xFF
    services.store.put(key, bytes(blob))
    assert verify(services).ok
    # ...one in the dataset as received is.
    blob[offset + 100] ^= 0xFF
    services.store.put(key, bytes(blob))
    missing_key, _ = _key(services, stored[-1].version_id)  # version 2 of instance 1
    services.store.delete(missing_key)

    report = verify(services)
    assert report.checked == 6
    problems = {(p.kind, p.sop_instance_uid, p.version) for p in report.problems}
    assert problems == {
        ("mismatch", stored[1].sop_instance_uid, 1),
        ("missing", stored[0].sop_instance_uid, 2),
    }
    mismatch = next(p for p in report.problems if p.kind == "mismatch")
    assert stored[1].sha256 in mismatch.detail and mismatch.study_uid == study_uid

    assert len(verify(services, study_uid=study_uid).problems) == 2
    with pytest.raises(StudyNotFound):
        verify(services, study_uid="1.2.3.4")


def test_is_stable_is_one_rule() -> None:
    last = datetime(2024, 5, 1, 12, 0, 0)  # naive, as SQLite returns it: UTC
    assert not is_stable(last, 60, datetime(2024, 5, 1, 12, 0, 59, tzinfo=UTC))
    assert is_stable(last, 60, datetime(2024, 5, 1, 12, 1, 0, tzinfo=UTC))
    assert is_stable(last, 0, last.replace(tzinfo=UTC))


def test_receipt_lists_series_instances_and_versions(services: Services) -> None:
    study_uid, stored = _ingest_demo(services)
    with services.catalog.read() as conn:
        last = conn.execute(select(studies.c.last_received_at)).scalar_one()
        quiet = study_receipt(conn, study_uid, stable_seconds=0.5)
        now = last.replace(tzinfo=UTC) if last.tzinfo is None else last
        before = study_receipt(
            conn, study_uid, stable_seconds=0.5, now=now + timedelta(seconds=0.4)
        )
        after = study_receipt(conn, study_uid, stable_seconds=0.5, now=now + timedelta(seconds=0.5))
        with pytest.raises(StudyNotFound, match="no study"):
            study_receipt(conn, "1.2.3.4", stable_seconds=0.5)
    assert not before.stable and after.stable
    assert before.stable_at == after.stable_at == now + timedelta(seconds=0.5)
    assert quiet.sender == "Referring"
    assert quiet.instance_count == 5 and quiet.version_count == 6
    assert [(s.number, s.modality, s.instance_count) for s in quiet.series] == [
        ("1", "CT", 4),
        ("2", "OT", 1),
    ]
    ct = quiet.series[0]
    first = [i for i in ct.instances if i.sop_instance_uid == stored[0].sop_instance_uid]
    assert [(i.version, i.current, i.sha256) for i in first] == [
        (1, False, stored[0].sha256),
        (2, True, stored[-1].sha256),
    ]
    assert ct.last_received_at == max(i.received_at for i in ct.instances)

    text = to_text(before)
    assert f"Study {study_uid}" in text and "stable:        no" in text
    assert stored[-1].sha256 in text and "1 (old)" in text
    assert "stable:        yes" in to_text(after)

    data = json.loads(to_json(after))
    assert data["study_uid"] == study_uid and data["stable"] is True
    assert data["instance_count"] == 5 and data["version_count"] == 6
    assert data["last_received_at"].endswith("Z")
    inst = data["series"][0]["instances"][0]
    assert set(inst) >= {"sop_instance_uid", "version", "size", "sha256", "received_at"}


def test_series_counters_track_arrivals(services: Services) -> None:
    """Per series: instance count (versions do not count twice) and last arrival."""
    _ingest_demo(services)
    with services.catalog.read() as conn:
        rows = conn.execute(
            select(series.c.instance_count, series.c.last_received_at, series.c.id)
        ).all()
        for row in rows:
            times = conn.execute(
                select(instance_versions.c.received_at)
                .join(instances, instances.c.id == instance_versions.c.instance_pk)
                .where(instances.c.series_pk == row.id)
            ).all()
            assert row.last_received_at == max(t.received_at for t in times)
    assert sorted(r.instance_count for r in rows) == [1, 4]


# ------------------------------------------------------------------ the commands themselves


def test_verify_and_receipt_commands(settings: Settings) -> None:
    services = Services.open(settings)
    try:
        study_uid, stored = _ingest_demo(services)
        cli = ConsultCli(settings.data_dir)
        ok = cli("verify", "--progress")
        assert ok.status == 0, ok.err
        assert ok.out == "6 object(s) checked, 0 problem(s)\n"
        assert "verifying [" in ok.err and "6/6" in ok.err

        key, offset = _key(services, stored[2].version_id)
        path = settings.objects_dir / key  # the folder store keeps each key as a file
        blob = bytearray(path.read_bytes())
        blob[offset + 7] ^= 0x01
        path.write_bytes(bytes(blob))
        services.store.delete(_key(services, stored[3].version_id)[0])
        bad = cli("verify")
        assert bad.status == 1
        assert f"MISMATCH: {stored[2].sop_instance_uid} version 1" in bad.out
        assert f"MISSING: {stored[3].sop_instance_uid} version 1" in bad.out
        assert "6 object(s) checked, 2 problem(s)" in bad.out
        assert bad.err == ""  # no bar when stderr is not a terminal

        one = cli("verify", "--study", study_uid)
        assert one.status == 1 and "6 object(s) checked, 2 problem(s)" in one.out
        nowhere = cli("verify", "--study", "1.2.3.4")
        assert nowhere.status == 2 and "no study '1.2.3.4'" in nowhere.err

        waiting = cli("receipt", study_uid, env={"CONSULT_STABLE_SECONDS": "3600"})
        assert waiting.status == 0, waiting.err
        assert "stable:        no" in waiting.out
        assert stored[0].sha256 in waiting.out

        as_json = cli("receipt", study_uid, "--json", env={"CONSULT_STABLE_SECONDS": "0"})
        assert as_json.status == 0, as_json.err
        data = json.loads(as_json.out)
        assert data["stable"] is True
        assert len(data["series"]) == 2

        unknown = cli("receipt", "1.2.3.4")
        assert unknown.status == 2
        assert "no study '1.2.3.4'" in unknown.err
    finally:
        services.close()
