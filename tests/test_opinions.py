"""Opinions: drafts, signing (hash, signer, UTC time), immutability, and the delivery queued
in the signing transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from consult.access.directory import get_user_by_name
from consult.catalog import Catalog
from consult.catalog.tables import deliveries, jobs, peers
from consult.catalog.tables import opinions as opinion_rows
from consult.consultations import opinions
from consult.errors import OpinionAlreadySigned
from consult.services import Services
from consult.settings import Settings
from storage import LocalObjectStore
from tests.support import sample
from tests.web_world import MR, World, build_world, request_consultation

TEXT = "Ödem, keine Fraktur ✓\nKontrolle in 6 Wochen.\n"


@pytest.fixture
def services(settings: Settings, catalog: Catalog, tmp_path: Path) -> Iterator[Services]:
    store = LocalObjectStore(tmp_path / "objects")
    yield Services(settings=settings, catalog=catalog, store=store)
    store.close()


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


@pytest.fixture
def accepted(world: World) -> int:
    with world.client("ref_north") as referring, world.client("spec_south") as specialist:
        cid = request_consultation(referring, world)
        assert specialist.post(f"/api/consultations/{cid}/accept").status_code == 200
    return cid


def test_sign_records_hash_signer_time_and_queues_delivery(
    world: World, services: Services, accepted: int
) -> None:
    cid = accepted
    with world.client("spec_south") as specialist:
        draft = specialist.put(f"/api/consultations/{cid}/opinion", json={"body": "first"})
        assert draft.status_code == 200
        assert draft.json()["opinion"]["status"] == "draft"
        assert draft.json()["opinion"]["sha256"] is None
        before = datetime.now(UTC)
        signed = specialist.post(f"/api/consultations/{cid}/opinion/sign", json={"body": TEXT})
        after = datetime.now(UTC)
    assert signed.status_code == 200, signed.text
    data = signed.json()
    opinion = data["opinion"]
    assert data["status"] == "answered"
    assert opinion["status"] == "signed"
    assert opinion["body"] == TEXT
    assert opinion["sha256"] == hashlib.sha256(TEXT.encode("utf-8")).hexdigest()
    assert opinion["signed_by"] == "Dr spec_south"
    signed_at = datetime.fromisoformat(opinion["signed_at"])
    assert signed_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= signed_at <= after + timedelta(seconds=1)

    with services.catalog.read() as conn:
        row = conn.execute(select(opinion_rows)).one()
        delivery_rows = conn.execute(
            select(deliveries.c.status, deliveries.c.opinion_pk, peers.c.ae_title).join(
                peers, peers.c.id == deliveries.c.peer_pk
            )
        ).all()
        job_rows = conn.execute(select(jobs).where(jobs.c.kind == "deliver_opinion")).all()
    assert row.sha256 == hashlib.sha256(row.body.encode("utf-8")).hexdigest()
    # One pending row per destination peer (NORTH_MOD has no port: it only sends).
    assert [tuple(r) for r in delivery_rows] == [("pending", row.id, "NORTH_PACS")]
    assert len(job_rows) == 1
    assert json.loads(job_rows[0].payload) == {"opinion_id": row.id}
    assert job_rows[0].dedup_key == f"deliver-opinion-{row.id}"
    assert job_rows[0].status == "queued"
    assert opinion["deliveries"] == [
        {
            "peer": "NORTH_PACS@127.0.0.1:40104",
            "status": "pending",
            "dicom_status": None,
            "detail": None,
            "updated_at": opinion["deliveries"][0]["updated_at"],
        }
    ]


def test_signed_opinion_is_immutable(world: World, services: Services, accepted: int) -> None:
    cid = accepted
    with world.client("spec_south") as specialist:
        specialist.post(f"/api/consultations/{cid}/opinion/sign", json={"body": TEXT})
        edit = specialist.put(f"/api/consultations/{cid}/opinion", json={"body": "changed"})
        assert edit.status_code == 409
        assert edit.json() == {"error": "the opinion is signed and can no longer be changed"}
        resign = specialist.post(f"/api/consultations/{cid}/opinion/sign", json={"body": "x"})
        assert resign.status_code == 409
        assert specialist.post(f"/api/consultations/{cid}/opinion/sign").status_code == 409
    with services.catalog.read() as conn:
        user = get_user_by_name(conn, "spec_south")
        row = conn.execute(select(opinion_rows)).one()
    assert row.body == TEXT
    # The domain functions refuse too, with the dedicated error.
    with services.catalog.write() as conn, pytest.raises(OpinionAlreadySigned):
        opinions.save_draft(conn, user, cid, "sneaky")
    with services.catalog.write() as conn, pytest.raises(OpinionAlreadySigned):
        opinions.sign(conn, user, cid)
    with services.catalog.read() as conn:
        job_count = len(conn.execute(select(jobs).where(jobs.c.kind == "deliver_opinion")).all())
    assert job_count == 1


@pytest.mark.parametrize(
    ("username", "expected"),
    [("spec_south", 200), ("ref_north", 403), ("ref_south", 403), ("spec_east", 404)],
)
def test_only_the_accepting_specialist_writes(
    world: World, accepted: int, username: str, expected: int
) -> None:
    with world.client(username) as client:
        response = client.put(f"/api/consultations/{accepted}/opinion", json={"body": "mine"})
    assert response.status_code == expected


def test_draft_is_private_until_signed(world: World, accepted: int) -> None:
    cid = accepted
    with world.client("spec_south") as specialist, world.client("ref_north") as referring:
        specialist.put(f"/api/consultations/{cid}/opinion", json={"body": "thinking..."})
        assert referring.get(f"/api/consultations/{cid}").json()["opinion"] is None
        assert specialist.get(f"/api/consultations/{cid}").json()["opinion"]["body"] == (
            "thinking..."
        )
        specialist.put(f"/api/consultations/{cid}/opinion", json={"body": TEXT})
        assert specialist.post(f"/api/consultations/{cid}/opinion/sign").status_code == 200
        read = referring.get(f"/api/consultations/{cid}").json()["opinion"]
        assert read["body"] == TEXT and read["status"] == "signed"
        closed = referring.post(f"/api/consultations/{cid}/close")
        assert closed.json()["status"] == "closed"


def test_sign_needs_an_accepted_consultation_and_text(world: World) -> None:
    with world.client("ref_north") as referring, world.client("spec_south") as specialist:
        cid = request_consultation(referring, world)
        early = specialist.put(f"/api/consultations/{cid}/opinion", json={"body": "x"})
        assert early.status_code == 403  # nobody accepted it yet
        specialist.post(f"/api/consultations/{cid}/accept")
        nothing = specialist.post(f"/api/consultations/{cid}/opinion/sign")
        assert nothing.status_code == 409
        assert nothing.json() == {"error": "there is no draft to sign; write the opinion first"}
        blank = specialist.post(f"/api/consultations/{cid}/opinion/sign", json={"body": " \n"})
        assert blank.status_code == 400


def test_no_destination_means_no_delivery(world: World, services: Services) -> None:
    # East has no DICOM peers: an opinion for it is signed but nothing is queued.
    east = world.ingest(sample(MR), key="east")
    world.run_jobs()
    with world.client("ref_east") as referring, world.client("spec_south") as specialist:
        cid = request_consultation(referring, world, study_uid=east.study_uid)
        specialist.post(f"/api/consultations/{cid}/accept")
        signed = specialist.post(f"/api/consultations/{cid}/opinion/sign", json={"body": "ok"})
    assert signed.json()["opinion"]["deliveries"] == []
    with services.catalog.read() as conn:
        assert conn.execute(select(deliveries)).all() == []
        assert conn.execute(select(jobs).where(jobs.c.kind == "deliver_opinion")).all() == []
