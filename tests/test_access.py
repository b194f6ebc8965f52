"""Who sees which study: the permission table over every patient-data route, on SQLite and
PostgreSQL, with the audit events the access check writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from consult import access
from consult.access import audit
from consult.access.directory import get_user_by_name
from consult.catalog import Catalog
from consult.catalog.tables import audit_events, consultations
from consult.errors import StudyNotFound
from consult.services import Services
from consult.settings import Settings
from storage import LocalObjectStore
from tests.support import sample
from tests.web_world import MR, World, build_world, request_consultation

SEES = {"ref_north", "spec_north", "admin_north", "spec_south", "ref_south"}
UNRELATED = {"ref_east", "spec_east"}


@pytest.fixture
def services(settings: Settings, catalog: Catalog, tmp_path: Path) -> Iterator[Services]:
    """Services on both catalog backends (the ``catalog`` fixture's parameter)."""
    store = LocalObjectStore(tmp_path / "objects")
    yield Services(settings=settings, catalog=catalog, store=store)
    store.close()


@pytest.fixture
def world(services: Services) -> World:
    world = build_world(services)
    with world.client("ref_north") as client:
        request_consultation(client, world)
    return world


def routes(world: World) -> dict[str, str]:
    preview_id = world.preview_ids()[0]
    consultation_id = world.consultation_ids()[0]
    return {
        "study page": f"/studies/{world.study_uid}",
        "study api": f"/api/studies/{world.study_uid}",
        "preview": f"/previews/{preview_id}",
        "consultation page": f"/consultations/{consultation_id}",
        "consultation api": f"/api/consultations/{consultation_id}",
    }


def denied_events(services: Services, username: str) -> list[audit.AuditEvent]:
    with services.catalog.read() as conn:
        return [
            e for e in audit.events(conn, username=username) if e.outcome is audit.Outcome.DENIED
        ]


@pytest.mark.parametrize("username", sorted(SEES | UNRELATED))
def test_permission_table(world: World, services: Services, username: str) -> None:
    expected = 200 if username in SEES else 404
    with world.client(username) as client:
        got = {name: client.get(path).status_code for name, path in routes(world).items()}
        listed = [s["study_uid"] for s in client.get("/api/studies").json()["studies"]]
    assert got == dict.fromkeys(got, expected)
    assert listed == ([world.study_uid] if username in SEES else [])
    denied = denied_events(services, username)
    if username in UNRELATED:
        # One denied event per refused route, naming what was asked for.
        assert len(denied) == len(got)
        assert {e.action for e in denied} == {"study.read", "preview.read", "consultation.read"}
        assert all(e.client == "testclient" for e in denied)
        assert world.study_uid in {e.object_id for e in denied}
    else:
        assert denied == []


def test_target_hospital_sees_study_only_through_a_consultation(world: World) -> None:
    fresh = world.ingest(sample(MR))
    world.run_jobs()
    with world.client("spec_south") as client:
        assert client.get(f"/studies/{fresh.study_uid}").status_code == 404
        assert client.get(f"/api/studies/{fresh.study_uid}").status_code == 404
        listed = [s["study_uid"] for s in client.get("/api/studies").json()["studies"]]
    assert listed == [world.study_uid]
    with world.client("ref_north") as client:
        listed = [s["study_uid"] for s in client.get("/api/studies").json()["studies"]]
    assert sorted(listed) == sorted([world.study_uid, fresh.study_uid])


def test_unknown_and_malformed_study_uids_are_404(world: World, services: Services) -> None:
    with world.client("ref_north") as client:
        # A decoded slash does not even match the route.
        assert client.get("/api/studies/..%2F..%2Fetc").status_code == 404
        for uid in ["1.2.3.4", "1..2", "1.2.<script>", "9" * 65]:
            response = client.get(f"/api/studies/{uid}")
            assert response.status_code == 404, uid
            assert response.json() == {"error": "study not found"}
        assert client.get("/studies/1.2.3.4").status_code == 404
    reasons = {e.detail for e in denied_events(services, "ref_north")}
    assert reasons == {"no such study", "malformed study UID"}


def test_preview_reads_are_audited_once_per_session_and_version(
    world: World, services: Services
) -> None:
    preview_id = world.preview_ids()[0]

    def preview_events() -> int:
        with services.catalog.read() as conn:
            rows = conn.execute(
                select(audit_events.c.id).where(
                    audit_events.c.action == "preview.read", audit_events.c.outcome == "success"
                )
            ).all()
        return len(rows)

    with world.client("spec_south") as client:
        for _ in range(3):
            assert client.get(f"/previews/{preview_id}").status_code == 200
    assert preview_events() == 1
    with world.client("spec_south") as client:  # a new session
        assert client.get(f"/previews/{preview_id}").status_code == 200
    assert preview_events() == 2
    with world.client("spec_east") as client:
        for _ in range(2):
            assert client.get(f"/previews/{preview_id}").status_code == 404
        assert client.get("/previews/999999").status_code == 404
    denied = denied_events(services, "spec_east")
    assert [e.object_type for e in denied] == ["preview", "instance_version", "instance_version"]


def test_require_study_directly(world: World, services: Services) -> None:
    with services.catalog.read() as conn:
        east = get_user_by_name(conn, "ref_east")
        north = get_user_by_name(conn, "ref_north")
    ref = access.require_study(
        services.catalog, north, world.study_uid, action="test.read", client="10.0.0.1"
    )
    assert ref.study_uid == world.study_uid
    assert ref.hospital_id == world.hospitals["north"].id
    with pytest.raises(StudyNotFound):
        access.require_study(
            services.catalog, east, world.study_uid, action="test.read", client="10.0.0.2"
        )
    with services.catalog.read() as conn:
        events = audit.events(conn, object_id=world.study_uid)
    latest = {(e.username, e.outcome, e.client) for e in events if e.action == "test.read"}
    assert latest == {
        ("ref_north", audit.Outcome.SUCCESS, "10.0.0.1"),
        ("ref_east", audit.Outcome.DENIED, "10.0.0.2"),
    }
    assert all(e.at.tzinfo is not None for e in events)


def test_preview_image_has_etag_and_private_cache(world: World) -> None:
    preview_id = world.preview_ids()[0]
    sha = world.stored[0].sha256
    with world.client("ref_north") as client:
        response = client.get(f"/previews/{preview_id}")
        assert response.status_code == 200
        # JPEG by default (CONSULT_TILE_FORMAT); the ETag names version, frame, window,
        # format and build (tests/test_tiles_routes.py checks the tile routes in depth).
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content.startswith(b"\xff\xd8")
        etag = response.headers["etag"]
        assert etag.startswith(f'"{sha}-0-default-jpeg-')
        assert response.headers["cache-control"] == "private, max-age=60"
        again = client.get(f"/previews/{preview_id}", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""


def test_participation_rule_is_one_rule_in_sql_and_in_python(
    world: World, services: Services
) -> None:
    """``access.taking_part`` (SQL) and ``access.takes_part`` (a loaded consultation) agree
    for every hospital and every status the consultation can be in."""
    [cid] = world.consultation_ids()
    seen: dict[tuple[str, str], bool] = {}
    for status in ["requested", "accepted", "declined", "answered", "closed"]:
        with services.catalog.write() as conn:
            conn.execute(
                update(consultations).where(consultations.c.id == cid).values(status=status)
            )
            row = conn.execute(select(consultations).where(consultations.c.id == cid)).one()
            for key, hospital in world.hospitals.items():
                in_sql = conn.execute(
                    select(consultations.c.id).where(
                        consultations.c.id == cid, access.taking_part(hospital.id)
                    )
                ).first()
                in_python = access.takes_part(
                    hospital.id,
                    requesting_id=row.requesting_hospital_id,
                    target_id=row.target_hospital_id,
                    status=status,
                )
                assert (in_sql is not None) is in_python, (key, status)
                seen[key, status] = in_python
    assert all(seen["north", s] for s in ["requested", "declined", "closed"])
    assert seen["south", "accepted"] and not seen["south", "declined"]
    assert not any(takes for (key, _), takes in seen.items() if key == "east")
