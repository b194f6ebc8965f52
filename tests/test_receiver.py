"""The DICOM receiver against real senders: dcmtk's echoscu/storescu, and pynetdicom's SCU
where an exact status must be read back."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from consult.access import directory
from consult.catalog.tables import instance_versions, instances
from consult.dicom.part10 import split_part10
from consult.dicom.synthetic import demo_study, write_part10
from consult.receiver import Receiver
from consult.services import Services
from consult.settings import Settings
from storage import S3ObjectStore
from tests.support import free_port, referring_services, require_tool


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    with referring_services(settings, ("REFPACS", "127.0.0.1"), ("FARPACS", "127.0.0.2")) as svc:
        yield svc


@pytest.fixture
def receiver(services: Services) -> Iterator[int]:
    rx = Receiver(services)
    port = rx.start()
    yield port
    rx.stop()


@pytest.fixture
def study_files(tmp_path: Path) -> list[Path]:
    paths = []
    for i, (ds, ts) in enumerate(demo_study()):
        path = tmp_path / f"in-{i}.dcm"
        write_part10(ds, ts, path)
        paths.append(path)
    return paths


def _storescu(port: int, files: list[Path], *args: str, aet: str = "REFPACS") -> str:
    storescu = require_tool("storescu", "dcmtk")
    result = subprocess.run(
        [storescu, "-aet", aet, "-aec", "CONSULT", *args, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TCP_NODELAY": "1"},
    )
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


def test_echo(receiver: int) -> None:
    echoscu = require_tool("echoscu", "dcmtk")
    result = subprocess.run(
        [echoscu, "-aet", "REFPACS", "-aec", "CONSULT", "127.0.0.1", str(receiver)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_storescu_study_is_stored_byte_exact(
    services: Services, receiver: int, study_files: list[Path]
) -> None:
    uncompressed, jpeg = study_files[:4], study_files[4:]
    out = _storescu(receiver, uncompressed)
    assert out.startswith("rc=0"), out
    out = _storescu(receiver, jpeg, "-xy")
    assert out.startswith("rc=0"), out

    with services.catalog.read() as conn:
        rows = conn.execute(
            select(instances.c.sop_instance_uid, instance_versions).join(
                instance_versions, instance_versions.c.instance_pk == instances.c.id
            )
        ).all()
    assert len(rows) == 5
    by_uid = {r.sop_instance_uid: r for r in rows}
    for path in study_files:
        blob = path.read_bytes()
        meta, offset = split_part10(blob)
        row = by_uid[str(meta.MediaStorageSOPInstanceUID)]
        assert row.transfer_syntax_uid == meta.TransferSyntaxUID
        assert row.sha256 == hashlib.sha256(blob[offset:]).hexdigest()
        stored = services.store.get(row.object_key)
        assert stored[row.dataset_offset :] == blob[offset:]
        assert row.calling_ae == "REFPACS" and row.peer_host == "127.0.0.1"
    assert {r.transfer_syntax_uid for r in rows} == {
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.50",
    }


@pytest.mark.parametrize("aet", ["NOBODY", "FARPACS"])  # unknown AE; known AE, wrong host
def test_unknown_peers_are_rejected(
    services: Services, receiver: int, study_files: list[Path], aet: str
) -> None:
    out = _storescu(receiver, study_files[:1], aet=aet)
    assert not out.startswith("rc=0")
    assert "Calling AE Title Not Recognized" in out, out
    with services.catalog.read() as conn:
        assert conn.execute(select(instances)).first() is None


def test_unknown_peers_accepted_when_configured(
    settings: Settings, study_files: list[Path]
) -> None:
    svc = Services.open(settings.model_copy(update={"accept_unknown_peers": True}))
    rx = Receiver(svc)
    port = rx.start()
    try:
        out = _storescu(port, study_files[:1], aet="NOBODY")
        assert out.startswith("rc=0"), out
        with svc.catalog.read() as conn:
            hospitals = {h.name for h in directory.list_hospitals(conn)}
            row = conn.execute(select(instance_versions)).one()
        assert directory.UNKNOWN_SENDER in hospitals
        assert row.calling_ae == "NOBODY"
    finally:
        rx.stop()
        svc.close()


def test_storage_outage_gives_a700_and_stores_nothing(settings: Settings) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID
    from pynetdicom import AE

    svc = Services.open(settings)
    # An S3 endpoint nobody listens on: the put fails fast, the sender is told to retry.
    svc.store = S3ObjectStore(
        endpoint=f"http://127.0.0.1:{free_port()}",
        bucket="nowhere",
        access_key="x",
        secret_key="x",
        region="us-east-1",
        connect_timeout=0.5,
        attempts=1,
    )
    with svc.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Referring")
        directory.add_peer(conn, hospital, "REFPACS", "127.0.0.1")
    rx = Receiver(svc)
    port = rx.start()
    try:
        ds, ts = demo_study()[0]
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(ts)
        ae = AE(ae_title="REFPACS")
        ae.add_requested_context(ds.SOPClassUID, ts)
        assoc = ae.associate("127.0.0.1", port, ae_title="CONSULT")
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
        assert status.Status == 0xA700
        with svc.catalog.read() as conn:
            assert conn.execute(select(instances)).first() is None
    finally:
        rx.stop()
        svc.close()
