"""The consultation lifecycle and who may do what, through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, update

from consult.access import audit
from consult.access.directory import User, get_user_by_name
from consult.catalog import Catalog
from consult.catalog.tables import consultations
from consult.consultations import lifecycle, opinions, permissions
from consult.consultations.model import ConsultationStatus, Urgency
from consult.errors import ConsultError
from consult.services import Services
from consult.settings import Settings
from storage import LocalObjectStore
from tests.web_world import USERS, World, build_world, request_consultation


@pytest.fixture
def services(settings: Settings, catalog: Catalog, tmp_path: Path) -> Iterator[Services]:
    store = LocalObjectStore(tmp_path / "objects")
    yield Services(settings=settings, catalog=catalog, store=store)
    store.close()


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


def test_consultation_vocabularies() -> None:
    assert [s.value for s in ConsultationStatus] == [
        "requested",
        "accepted",
        "declined",
        "answered",
        "closed",
    ]
    assert [u.value for u in Urgency] == ["routine", "urgent", "stat"]
    # Their member docstrings are checked with every other enum's (tests/test_vocabularies.py).


def test_request_accept_and_discuss(world: World, services: Services) -> None:
    with world.client("ref_north") as referring, world.client("spec_south") as specialist:
        cid = request_consultation(referring, world, question="Fracture of the <b>tibia</b>?")
        seen = specialist.get(f"/api/consultations/{cid}").json()
        assert seen["status"] == "requested"
        assert seen["question"] == "Fracture of the <b>tibia</b>?"
        assert seen["urgency"] == "urgent"
        assert seen["requesting_hospital"] == "North Referring Hospital"
        assert seen["target_hospital"] == "South Specialist Hospital"
        assert seen["requested_by"] == "Dr ref_north"
        assert seen["opinion"] is None
        assert [c["id"] for c in specialist.get("/api/consultations").json()["consultations"]] == [
            cid
        ]

        accepted = specialist.post(f"/api/consultations/{cid}/accept")
        assert accepted.status_code == 200
        assert accepted.json()["status"] == "accepted"
        assert accepted.json()["accepted_by"] == "Dr spec_south"

        posted = specialist.post(f"/api/consultations/{cid}/messages", json={"body": "Prior?"})
        assert posted.status_code == 201
        referring.post(f"/api/consultations/{cid}/messages", json={"body": "None, 2 weeks ago."})
        thread = referring.get(f"/api/consultations/{cid}").json()["messages"]
    assert [(m["author"], m["hospital"], m["body"]) for m in thread] == [
        ("Dr spec_south", "South Specialist Hospital", "Prior?"),
        ("Dr ref_north", "North Referring Hospital", "None, 2 weeks ago."),
    ]
    assert all(m["created_at"].endswith("Z") for m in thread)
    with services.catalog.read() as conn:
        events = audit.events(conn, object_id=str(cid))
    assert ("consultation.accept", audit.Outcome.SUCCESS) in {(e.action, e.outcome) for e in events}


ACCEPT = {
    "ref_north": 403,
    "spec_north": 403,
    "admin_north": 403,
    "ref_south": 403,
    "spec_south": 200,
    "ref_east": 404,
    "spec_east": 404,
}


@pytest.mark.parametrize(("username", "expected"), sorted(ACCEPT.items()))
def test_who_may_accept(world: World, services: Services, username: str, expected: int) -> None:
    with world.client("ref_north") as referring:
        cid = request_consultation(referring, world)
    with world.client(username) as client:
        response = client.post(f"/api/consultations/{cid}/accept")
    assert response.status_code == expected, response.text
    with services.catalog.read() as conn:
        mine = audit.events(conn, username=username)
    if expected == 403:
        refused = [e for e in mine if e.action == "consultation.accept"]
        assert [e.outcome for e in refused] == [audit.Outcome.DENIED]
        assert "only a specialist of South Specialist Hospital" in refused[0].detail
    if expected == 404:
        assert [(e.action, e.outcome) for e in mine if e.object_id == str(cid)] == [
            ("consultation.read", audit.Outcome.DENIED)
        ]


@pytest.mark.parametrize(
    ("username", "expected"),
    [("ref_north", 201), ("spec_north", 403), ("admin_north", 403), ("ref_east", 404)],
)
def test_who_may_request(world: World, username: str, expected: int) -> None:
    with world.client(username) as client:
        response = client.post(
            "/api/consultations",
            json={
                "study_uid": world.study_uid,
                "target_hospital_id": world.hospitals["south"].id,
                "question": "Why?",
            },
        )
    assert response.status_code == expected, response.text


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"question": "   "}, 400, "question is required"),
        ({"urgency": "whenever"}, 400, "urgency must be one of routine, urgent, stat"),
        ({"target_hospital_id": "south"}, 400, "field 'target_hospital_id' must be an integer"),
        ({"target_hospital_id": 99999}, 400, "no hospital with id 99999"),
        ({"study_uid": "1.2.3"}, 404, "study not found"),
    ],
)
def test_request_validation(
    world: World, change: dict[str, object], status: int, message: str
) -> None:
    with world.client("ref_north") as client:
        body: dict[str, object] = {
            "study_uid": world.study_uid,
            "target_hospital_id": world.hospitals["south"].id,
            "question": "Why?",
            **change,
        }
        response = client.post("/api/consultations", json=body)
    assert response.status_code == status
    assert response.json()["error"].startswith(message)


def test_target_must_be_another_hospital_and_not_twice(world: World) -> None:
    with world.client("ref_north") as client:
        own = client.post(
            "/api/consultations",
            json={
                "study_uid": world.study_uid,
                "target_hospital_id": world.hospitals["north"].id,
                "question": "Why?",
            },
        )
        assert own.status_code == 400
        assert own.json() == {"error": "target hospital must be another hospital"}
        request_consultation(client, world)
        again = client.post(
            "/api/consultations",
            json={
                "study_uid": world.study_uid,
                "target_hospital_id": world.hospitals["south"].id,
                "question": "Again?",
            },
        )
        assert again.status_code == 409
        # Another hospital can be asked at the same time.
        request_consultation(client, world, target_hospital_id=world.hospitals["east"].id)


def test_state_changes_are_validated(world: World) -> None:
    with world.client("ref_north") as referring, world.client("spec_south") as specialist:
        cid = request_consultation(referring, world)
        # The requester may post while requested; the target may not yet.
        assert (
            referring.post(f"/api/consultations/{cid}/messages", json={"body": "More info"})
        ).status_code == 201
        early = specialist.post(f"/api/consultations/{cid}/messages", json={"body": "Hi"})
        assert early.status_code == 409
        assert early.json() == {"error": "cannot post to a consultation that is requested"}
        assert specialist.post(f"/api/consultations/{cid}/accept").status_code == 200
        twice = specialist.post(f"/api/consultations/{cid}/accept")
        assert twice.status_code == 409
        assert twice.json() == {"error": "consultation is accepted, not requested"}
        assert specialist.post(f"/api/consultations/{cid}/decline").status_code == 409
        assert referring.post(f"/api/consultations/{cid}/close").status_code == 409
        empty = referring.post(f"/api/consultations/{cid}/messages", json={"body": "  "})
        assert empty.status_code == 400


def test_declined_consultation_is_final(world: World) -> None:
    with world.client("ref_north") as referring, world.client("spec_south") as specialist:
        cid = request_consultation(referring, world)
        declined = specialist.post(f"/api/consultations/{cid}/decline")
        assert declined.json()["status"] == "declined"
        # The declining hospital takes no part any more: the consultation and study are gone
        # from its view (404, as for any study it may not see).
        assert specialist.post(f"/api/consultations/{cid}/accept").status_code == 404
        assert specialist.get(f"/api/consultations/{cid}").status_code == 404
        refused = referring.post(f"/api/consultations/{cid}/messages", json={"body": "Why?"})
        assert refused.status_code == 409
        # Once declined, the same hospital may be asked again.
        request_consultation(referring, world)


def test_inboxes(world: World) -> None:
    with world.client("ref_north") as client:
        cid = request_consultation(client, world)
    expected = {"ref_north": [cid], "spec_south": [cid], "ref_south": [], "spec_east": []}
    for username, ids in expected.items():
        with world.client(username) as client:
            listed = client.get("/api/consultations").json()["consultations"]
        assert [c["id"] for c in listed] == ids, username


def test_unstable_study_needs_confirmation(settings: Settings) -> None:
    slow = settings.model_copy(update={"stable_seconds": 3600.0})
    services = Services.open(slow)
    try:
        world = build_world(services)
        with world.client("ref_north") as client:
            assert client.get("/api/studies").json()["studies"][0]["stable"] is False
            body = {
                "study_uid": world.study_uid,
                "target_hospital_id": world.hospitals["south"].id,
                "question": "Why?",
            }
            refused = client.post("/api/consultations", json=body)
            assert refused.status_code == 409
            assert "still arriving" in refused.json()["error"]
            confirmed = client.post("/api/consultations", json={**body, "all_sent": True})
            assert confirmed.status_code == 201
    finally:
        services.close()


@pytest.mark.parametrize("status", list(ConsultationStatus))
def test_pages_offer_exactly_what_the_rules_allow(world: World, status: ConsultationStatus) -> None:
    """``permissions.allowed`` (what the pages show) agrees with what the actions accept, for
    every user and every state: the rules live once, in permissions."""
    with world.client("ref_north") as client:
        cid = request_consultation(client, world)
    catalog = world.services.catalog
    with catalog.write() as conn:
        specialist = get_user_by_name(conn, "spec_south")
        accepted_by = specialist.id if status not in ("requested", "declined") else None
        conn.execute(
            update(consultations)
            .where(consultations.c.id == cid)
            .values(status=status.value, accepted_by=accepted_by)
        )
    attempts: dict[str, Callable[[Connection, User], object]] = {
        "answer": lambda conn, user: lifecycle.accept(conn, user, cid),
        "post": lambda conn, user: lifecycle.post_message(conn, user, cid, "a message"),
        "write_opinion": lambda conn, user: opinions.save_draft(conn, user, cid, "An opinion"),
        "close": lambda conn, user: lifecycle.close(conn, user, cid),
    }
    for username in USERS:
        with catalog.write() as conn:
            user = get_user_by_name(conn, username)
            offered = permissions.allowed(user, lifecycle.get(conn, cid), opinion_signed=False)
            for name, attempt in attempts.items():
                savepoint = conn.begin_nested()
                try:
                    attempt(conn, user)
                    done = True
                except ConsultError:
                    done = False
                finally:
                    savepoint.rollback()
                assert getattr(offered, name) is done, (username, status.value, name)
