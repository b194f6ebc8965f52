"""Delivering a signed opinion: SR built from the stored study, C-STORE to a real dcmtk
``storescp`` playing the referring hospital's PACS, recorded per destination, idempotent."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select, update

from consult.access import directory
from consult.access.directory import Role
from consult.catalog import Catalog, insert_id, utcnow
from consult.catalog.tables import (
    audit_events,
    consultations,
    deliveries,
    opinions,
    peers,
    studies,
)
from consult.consultations.delivery import DeliveryFailed, deliver_now, handle_deliver_opinion
from consult.errors import BadRequest, Conflict
from consult.ingest.pipeline import Origin, ingest_file
from consult.services import Services
from consult.settings import Settings
from storage import LocalObjectStore, ObjectStore
from storage.keys import export_key
from tests.support import free_port, require_tool, sample, wait_until

OPINION = "Befund: kein Hinweis auf Malignität.\nEmpfehlung: Verlaufskontrolle in 6 Monaten."
QUESTION = "Raumforderung im Oberbauch, Größe 3 cm: maligne?"


@dataclass
class Pacs:
    port: int
    folder: Path

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Pacs]:
    """dcmtk's storescp on a free port, AE title PACS, writing what it receives to a folder."""
    storescp = require_tool("storescp", "dcmtk")
    folder = tmp_path / "pacs"
    folder.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [storescp, "-aet", "PACS", "-od", str(folder), "+xa", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_until(lambda: proc.poll() is not None or _accepts(port), timeout=10)
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"storescp exited with {proc.returncode}: {out}")
        yield Pacs(port=port, folder=folder)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@dataclass
class World:
    services: Services
    opinion_id: int
    referring_id: int
    study_uid: str


def make_world(
    settings: Settings,
    catalog: Catalog,
    store: ObjectStore,
    *,
    pacs_port: int | None,
    signed: bool = True,
) -> World:
    """Hospitals, users, a PACS peer, one ingested study, a consultation and its opinion."""
    services = Services(settings=settings, catalog=catalog, store=store)
    with catalog.write() as conn:
        referring = directory.add_hospital(conn, "Referring Hospital")
        consulting = directory.add_hospital(conn, "Klinikum Süd")
        directory.add_peer(conn, referring, "PACS", "127.0.0.1", pacs_port)
        doctor = directory.add_user(
            conn, "doctor", hospital=referring, role=Role.REFERRING, password="doctor-pass"
        )
        specialist = directory.add_user(
            conn,
            "specialist",
            hospital=consulting,
            role=Role.SPECIALIST,
            password="specialist-pass",
            display_name="Dr. Anna Müller",
        )
    stored = ingest_file(
        services,
        sample("pydicom__CT_small.dcm"),
        origin=Origin(
            hospital_id=referring.id, calling_ae="PACS", peer_host="127.0.0.1", peer_port=104
        ),
    )
    now = utcnow()
    with catalog.write() as conn:
        study_pk = conn.execute(
            select(studies.c.id).where(studies.c.study_uid == stored.study_uid)
        ).scalar_one()
        consultation_pk = insert_id(
            conn,
            consultations.insert().values(
                study_pk=study_pk,
                requesting_hospital_id=referring.id,
                requested_by=doctor.id,
                target_hospital_id=consulting.id,
                question=QUESTION,
                urgency="routine",
                status="answered" if signed else "accepted",
                accepted_by=specialist.id,
                created_at=now,
                updated_at=now,
            ),
        )
        opinion_id = insert_id(
            conn,
            opinions.insert().values(
                consultation_pk=consultation_pk,
                author_id=specialist.id,
                body=OPINION,
                status="signed" if signed else "draft",
                signed_by=specialist.id if signed else None,
                signed_at=now if signed else None,
                sha256=hashlib.sha256(OPINION.encode()).hexdigest() if signed else None,
                created_at=now,
                updated_at=now,
            ),
        )
    return World(services, opinion_id, referring.id, stored.study_uid)


def delivery_rows(catalog: Catalog, opinion_id: int) -> list[tuple[str, int | None, str | None]]:
    with catalog.read() as conn:
        rows = conn.execute(
            select(deliveries.c.status, deliveries.c.dicom_status, deliveries.c.detail)
            .where(deliveries.c.opinion_pk == opinion_id)
            .order_by(deliveries.c.id)
        ).all()
    return [(r.status, r.dicom_status, r.detail) for r in rows]


def sr_uids(catalog: Catalog, opinion_id: int) -> tuple[str | None, str | None]:
    with catalog.read() as conn:
        row = conn.execute(
            select(opinions.c.sr_series_uid, opinions.c.sr_sop_instance_uid).where(
                opinions.c.id == opinion_id
            )
        ).one()
    return row.sr_series_uid, row.sr_sop_instance_uid


def dsrdump(path: Path) -> str:
    tool = require_tool("dsrdump", "dcmtk")
    done = subprocess.run([tool, "+Pl", str(path)], capture_output=True, check=True, timeout=30)
    return done.stdout.decode("utf-8")


def dsr2xml(path: Path) -> str:
    tool = require_tool("dsr2xml", "dcmtk")
    done = subprocess.run([tool, str(path)], capture_output=True, check=True, timeout=30)
    return done.stdout.decode("utf-8")


def test_signed_opinion_reaches_the_referring_pacs_once(
    settings: Settings, catalog: Catalog, store: ObjectStore, pacs: Pacs
) -> None:
    world = make_world(settings, catalog, store, pacs_port=pacs.port)

    handle_deliver_opinion(world.services, {"opinion_id": world.opinion_id})

    [received] = pacs.files()
    text = dsrdump(received)
    assert "Befund: kein Hinweis auf Malignität." in text
    assert "Verification Flag   : VERIFIED" in text
    assert "Dr. Anna Müller" in text
    assert QUESTION in text
    assert f'<study uid="{world.study_uid}">' in dsr2xml(received)
    series_uid, sop_uid = sr_uids(catalog, world.opinion_id)
    ds = dcmread(received)
    assert (ds.SeriesInstanceUID, ds.SOPInstanceUID) == (series_uid, sop_uid)
    assert ds.StudyInstanceUID == world.study_uid
    assert ds.PatientID == "1CT1"
    assert store.exists(export_key(str(sop_uid)))
    assert delivery_rows(catalog, world.opinion_id) == [("sent", 0, "C-STORE status 0x0000")]
    with catalog.read() as conn:
        events = conn.execute(
            select(audit_events.c.action, audit_events.c.outcome).where(
                audit_events.c.object_id == str(world.opinion_id)
            )
        ).all()
    assert [(e.action, e.outcome) for e in events] == [("opinion.deliver", "success")]

    # A second run (a retried job, a CLI re-send) sends nothing new.
    assert deliver_now(world.services, world.opinion_id) == []
    assert pacs.files() == [received]
    assert delivery_rows(catalog, world.opinion_id) == [("sent", 0, "C-STORE status 0x0000")]
    assert sr_uids(catalog, world.opinion_id) == (series_uid, sop_uid)


def test_failed_delivery_is_recorded_raised_and_retried_with_the_same_uids(
    settings: Settings, catalog: Catalog, tmp_path: Path, pacs: Pacs
) -> None:
    closed = free_port()  # nothing listens there
    world = make_world(settings, catalog, LocalObjectStore(tmp_path / "objects"), pacs_port=closed)

    with pytest.raises(DeliveryFailed, match=r"PACS@127\.0\.0\.1"):
        handle_deliver_opinion(world.services, {"opinion_id": world.opinion_id})
    [(status, dicom_status, detail)] = delivery_rows(catalog, world.opinion_id)
    assert (status, dicom_status) == ("failed", None)
    assert detail is not None and "association" in detail
    uids = sr_uids(catalog, world.opinion_id)
    assert None not in uids  # assigned and saved before the first send
    assert pacs.files() == []

    # The PACS comes back (here: the peer is corrected); the retry sends the same object.
    with catalog.write() as conn:
        conn.execute(update(peers).values(port=pacs.port))
    [outcome] = deliver_now(world.services, world.opinion_id)
    assert (outcome.status, outcome.dicom_status) == ("sent", 0)
    [received] = pacs.files()
    assert dcmread(received).SOPInstanceUID == uids[1]
    assert sr_uids(catalog, world.opinion_id) == uids
    assert delivery_rows(catalog, world.opinion_id)[0][:2] == ("sent", 0)


def test_unsigned_opinion_is_refused(settings: Settings, catalog: Catalog, tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    world = make_world(settings, catalog, store, pacs_port=free_port(), signed=False)
    with pytest.raises(Conflict, match="not signed"):
        handle_deliver_opinion(world.services, {"opinion_id": world.opinion_id})
    assert sr_uids(catalog, world.opinion_id) == (None, None)
    assert delivery_rows(catalog, world.opinion_id) == []


def test_no_destination_peer_exports_but_sends_nothing(
    settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    world = make_world(settings, catalog, store, pacs_port=None)  # a sender-only peer
    assert deliver_now(world.services, world.opinion_id) == []
    assert delivery_rows(catalog, world.opinion_id) == []
    _, sop_uid = sr_uids(catalog, world.opinion_id)
    assert store.exists(export_key(str(sop_uid)))


@pytest.mark.parametrize("payload", [{}, {"opinion_id": "1"}, {"opinion_id": True}])
def test_bad_payload_is_refused(
    settings: Settings, tmp_path: Path, payload: dict[str, object]
) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    services = Services(settings=settings, catalog=catalog, store=LocalObjectStore(tmp_path))
    try:
        with pytest.raises(BadRequest):
            handle_deliver_opinion(services, payload)
    finally:
        catalog.dispose()


def test_opinions_signed_without_a_destination_go_to_the_first_one_added(
    settings: Settings, catalog: Catalog, tmp_path: Path, pacs: Pacs
) -> None:
    """Signed while the referring hospital had no peer with a port: when one is added
    (`consult peers add ... --port`), the opinion is queued and reaches it; a peer added
    after that does not get it again."""
    from consult import jobs
    from consult.catalog.tables import jobs as jobs_table
    from consult.consultations import opinions

    store = LocalObjectStore(tmp_path / "objects")
    world = make_world(settings, catalog, store, pacs_port=None)  # a sender-only peer
    assert deliver_now(world.services, world.opinion_id) == []

    with catalog.write() as conn:
        hospital = directory.get_hospital(conn, "Referring Hospital")
        first = directory.add_peer(conn, hospital, "ARCHIVE", "127.0.0.1", pacs.port)
        assert opinions.queue_undelivered(conn, hospital.id, first.id) == [world.opinion_id]
    job = jobs.claim(catalog, "test-worker", kinds=["deliver_opinion"])
    assert job is not None and job.payload == {"opinion_id": world.opinion_id}
    handle_deliver_opinion(world.services, job.payload)
    [received] = pacs.files()
    assert dcmread(received).SOPInstanceUID == sr_uids(catalog, world.opinion_id)[1]
    assert delivery_rows(catalog, world.opinion_id) == [("sent", 0, "C-STORE status 0x0000")]

    with catalog.write() as conn:
        second = directory.add_peer(conn, hospital, "SECOND", "127.0.0.1", pacs.port)
        assert opinions.queue_undelivered(conn, hospital.id, second.id) == []
    with catalog.read() as conn:
        kinds = conn.execute(select(jobs_table.c.kind)).scalars().all()
    assert kinds.count("deliver_opinion") == 1
