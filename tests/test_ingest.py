"""Ingest: byte-exact storage, SHA-256, versions, validation, on every catalog and store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from consult.access import directory
from consult.catalog import Catalog
from consult.catalog.tables import (
    instance_versions,
    instances,
    jobs,
    patients,
    series,
    studies,
)
from consult.dicom.part10 import split_part10
from consult.dicom.synthetic import dataset_bytes, demo_study
from consult.errors import InvalidDataset
from consult.ingest.pipeline import Origin, ingest, ingest_file
from consult.services import Services
from consult.settings import Settings
from storage import ObjectStore
from tests.support import sample


@pytest.fixture
def services(settings: Settings, catalog: Catalog, store: ObjectStore) -> Services:
    return Services(settings=settings, catalog=catalog, store=store)


@pytest.fixture
def origin(services: Services) -> Origin:
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Sender")
    return Origin(hospital.id, "REFPACS", "127.0.0.1", 40000)


def test_stores_dataset_bytes_exactly_and_indexes_them(services: Services, origin: Origin) -> None:
    ds, ts = demo_study()[0]
    data = dataset_bytes(ds)
    stored = ingest(services, data, transfer_syntax_uid=ts, origin=origin)

    assert stored.created and stored.version == 1
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    with services.catalog.read() as conn:
        row = conn.execute(select(instance_versions)).one()
        study = conn.execute(select(studies)).one()
        patient = conn.execute(select(patients)).one()
        queued = conn.execute(select(jobs.c.kind, jobs.c.payload)).all()
    blob = services.store.get(row.object_key)
    assert blob[row.dataset_offset :] == data  # the bytes as received, untouched
    meta, offset = split_part10(blob)
    assert offset == row.dataset_offset
    assert meta.TransferSyntaxUID == ts
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.SourceApplicationEntityTitle == "REFPACS"
    assert ds.SOPInstanceUID not in row.object_key and ds.StudyInstanceUID not in row.object_key
    assert (row.calling_ae, row.peer_host, row.peer_port) == ("REFPACS", "127.0.0.1", 40000)
    assert (row.rows, row.columns, row.frames) == (256, 256, 1)
    assert study.study_uid == ds.StudyInstanceUID and study.hospital_id == origin.hospital_id
    assert (patient.patient_id, patient.issuer, patient.name) == (
        "DEMO-0001",
        "REFHOSP",
        "DEMO^Patient",
    )
    assert [k for k, _ in queued] == ["preview"]
    # The stored object is a valid Part 10 file that decodes to the same pixels.
    decoded = pydicom.dcmread(io.BytesIO(blob))
    assert decoded.pixel_array.shape == (256, 256)


def test_identical_retry_is_a_no_op_and_new_bytes_make_a_version(
    services: Services, origin: Origin
) -> None:
    ds, ts = demo_study()[0]
    first = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    again = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    assert not again.created and again.version_id == first.version_id

    ds.SeriesDescription = "Axial 5 mm (corrected)"
    second = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    assert second.created and second.version == 2 and second.sha256 != first.sha256
    with services.catalog.read() as conn:
        versions = conn.execute(
            select(instance_versions.c.version, instance_versions.c.object_key).order_by(
                instance_versions.c.version
            )
        ).all()
        current = conn.execute(select(instances.c.current_version)).scalar_one()
        count = conn.execute(select(series.c.instance_count)).scalar_one()
        n_jobs = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
    assert [v.version for v in versions] == [1, 2] and current == 2
    assert count == 1  # still one instance, with two versions
    assert n_jobs == 2  # one preview per version
    assert all(services.store.exists(v.object_key) for v in versions)  # both kept


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(
    ("uid", "status"),
    [
        ("../../etc/passwd", 0xC003),
        ("1.2.3/4", 0xC003),
        ("1.2.\x01", 0xC003),
        ("1.2..3", 0xC003),
        ("", 0xC002),
    ],
)
def test_hostile_or_missing_uids_are_refused(
    services: Services, origin: Origin, uid: str, status: int
) -> None:
    ds, ts = demo_study()[0]
    ds.SOPInstanceUID = uid
    with pytest.raises(InvalidDataset) as info:
        ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    assert info.value.dicom_status == status
    assert list(services.store.list()) == []  # nothing stored


def test_non_conformant_but_harmless_uids_are_accepted(services: Services, origin: Origin) -> None:
    ds, ts = demo_study()[0]
    ds.SOPInstanceUID = "1.2.840.0012.3ABC"  # leading zero and hex digits, as real devices send
    stored = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    assert stored.sop_instance_uid == "1.2.840.0012.3ABC"


def test_unparseable_dataset_is_refused_with_c210(services: Services, origin: Origin) -> None:
    with pytest.raises(InvalidDataset) as info:
        ingest(services, b"\xff" * 64, transfer_syntax_uid="1.2.840.10008.1.2.1", origin=origin)
    assert info.value.dicom_status == 0xC210
    assert list(services.store.list()) == []


def test_a_study_of_another_hospital_is_refused(services: Services, origin: Origin) -> None:
    ds, ts = demo_study()[0]
    ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    with services.catalog.write() as conn:
        other = directory.add_hospital(conn, "Other")
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    with pytest.raises(InvalidDataset) as info:
        ingest(
            services,
            dataset_bytes(ds),
            transfer_syntax_uid=ts,
            origin=Origin(other.id, "OTHER", "127.0.0.2", 1),
        )
    assert info.value.dicom_status == 0xC001


def test_oversized_dataset_is_refused(
    settings: Settings, catalog: Catalog, store: ObjectStore, tmp_path: Path
) -> None:
    small = Services(
        settings=settings.model_copy(update={"max_dataset_bytes": 1000}),
        catalog=catalog,
        store=store,
    )
    with catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Sender")
    ds, ts = demo_study()[0]
    with pytest.raises(InvalidDataset) as info:
        ingest(
            small,
            dataset_bytes(ds),
            transfer_syntax_uid=ts,
            origin=Origin(hospital.id, "A", "h", 1),
        )
    assert info.value.dicom_status == 0xC004


def test_ingest_file_keeps_a_compressed_sample_byte_exact(
    services: Services, origin: Origin
) -> None:
    path = sample("pydicom__SC_rgb_jpeg_dcmtk.dcm")
    stored = ingest_file(services, path, origin=origin)
    blob = path.read_bytes()
    _, offset = split_part10(blob)
    with services.catalog.read() as conn:
        row = conn.execute(select(instance_versions)).one()
    assert row.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    assert services.store.get(row.object_key)[row.dataset_offset :] == blob[offset:]
    assert stored.sha256 == hashlib.sha256(blob[offset:]).hexdigest()


@pytest.mark.parametrize("source_ae", ["REFPACS", "ODD", ""])
@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths
def test_received_prefix_is_what_pydicom_writes(source_ae: str, sop_uid: str) -> None:
    from consult.dicom.part10 import file_meta, part10_prefix, received_prefix

    args = {
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": sop_uid,
        "transfer_syntax_uid": "1.2.840.10008.1.2.4.50",
        "source_ae": source_ae,
    }
    assert received_prefix(**args) == part10_prefix(file_meta(**args))


@pytest.mark.parametrize("failing", ["file", "folder"])
def test_a_failing_disk_stores_and_indexes_nothing(
    settings: Settings,
    catalog: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """The folder store's disk fails while the object is staged (its fsync, in the helper
    thread) or published (the folder's fsync): a storage error (the sender gets 0xA700),
    no index row, no file left behind; the retry once the disk is back stores it."""
    import os

    import storage.local
    from storage import LocalObjectStore, StorageError

    root = tmp_path / "objects"
    services = Services(settings=settings, catalog=catalog, store=LocalObjectStore(root))
    with catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Sender")
    origin = Origin(hospital.id, "REFPACS", "127.0.0.1", 40000)
    ds, ts = demo_study()[0]
    data = dataset_bytes(ds)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    if failing == "file":
        monkeypatch.setattr(os, "fsync", broken)  # storage.local calls os.fsync
    else:
        monkeypatch.setattr(storage.local, "_fsync_dir", lambda folder: broken(0))
    with pytest.raises(StorageError, match="Input/output error"):
        ingest(services, data, transfer_syntax_uid=ts, origin=origin)
    monkeypatch.undo()
    with catalog.read() as conn:
        assert conn.execute(select(func.count()).select_from(instance_versions)).scalar() == 0
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    # A failed folder fsync may leave the renamed file: unindexed, rewritten by the retry.
    assert leftovers == [] if failing == "file" else all(".tmp-" not in p.name for p in leftovers)

    stored = ingest(services, data, transfer_syntax_uid=ts, origin=origin)
    assert stored.created and services.store.get(
        instance_versions_key(catalog, stored.version_id)
    ).endswith(data)
    assert os.listdir(root) == ["originals"]


def instance_versions_key(catalog: Catalog, version_id: int) -> str:
    with catalog.read() as conn:
        return str(
            conn.execute(
                select(instance_versions.c.object_key).where(instance_versions.c.id == version_id)
            ).scalar_one()
        )
