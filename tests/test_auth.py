"""Logins, server-side sessions, CSRF and Origin checks, through the real app."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from consult.access import audit, directory
from consult.catalog import utcnow
from consult.catalog.tables import sessions
from consult.services import Services
from consult.settings import Settings
from consult.web.app import create_app
from tests.web_world import PASSWORD, World, build_world


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    opened = Services.open(settings)
    yield opened
    opened.close()


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services, with_study=False)


def session_count(services: Services) -> int:
    with services.catalog.read() as conn:
        return int(conn.execute(select(func.count()).select_from(sessions)).scalar_one())


def form_login(client: TestClient, username: str, password: str = PASSWORD, **extra: str) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert match is not None
    response = client.post(
        "/login",
        data={"csrf_token": match.group(1), "username": username, "password": password, **extra},
    )
    return response.headers.get("location", str(response.status_code))


def page_csrf(client: TestClient) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', client.get("/").text)
    assert match is not None
    return match.group(1)


def test_login_page_has_labelled_fields(world: World) -> None:
    with world.client() as client:
        response = client.get("/login")
    assert response.status_code == 200
    assert response.template.name == "login.html"  # type: ignore[attr-defined]
    assert '<label for="username">' in response.text
    assert '<label for="password">' in response.text
    assert ">Log in</button>" in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_pages_redirect_to_login_when_logged_out(world: World) -> None:
    with world.client() as client:
        response = client.get("/consultations")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/consultations"
        assert client.get("/api/studies").status_code == 401
        assert client.get("/api/studies").json() == {"error": "log in first (POST /api/session)"}


def test_form_login_and_logout(world: World, services: Services) -> None:
    with world.client() as client:
        assert form_login(client, "ref_north") == "/"
        cookie = client.cookies["consult_session"]
        with services.catalog.read() as conn:
            row = conn.execute(select(sessions)).one()
        # The catalog holds the SHA-256 of the token, never the token.
        assert row.token_hash == hashlib.sha256(cookie.encode()).hexdigest()
        home = client.get("/")
        assert home.status_code == 200
        assert "Dr ref_north" in home.text and "North Referring Hospital" in home.text

        response = client.post("/logout", data={"csrf_token": page_csrf(client)})
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
        assert session_count(services) == 0
        assert "consult_session" not in client.cookies

    # The old cookie no longer opens anything.
    with world.client() as replay:
        replay.cookies.set("consult_session", cookie)
        assert replay.get("/").status_code == 303
        assert replay.get("/api/studies").status_code == 401


def test_login_redirects_only_to_local_paths(world: World) -> None:
    with world.client() as client:
        assert form_login(client, "ref_north", next="/consultations") == "/consultations"
    with world.client() as client:
        assert form_login(client, "ref_north", next="//evil.example/") == "/"
    with world.client() as client:
        assert form_login(client, "ref_north", next="https://evil.example/") == "/"


def test_wrong_password_is_refused_and_audited(world: World, services: Services) -> None:
    with world.client() as client:
        assert form_login(client, "ref_north", "not the password") == "401"
        assert client.post(
            "/api/session", json={"username": "ref_north", "password": "nope-nope"}
        ).json() == {"error": "wrong user name or password"}
    assert session_count(services) == 0
    with services.catalog.read() as conn:
        events = audit.events(conn, username="ref_north")
    assert [e.outcome for e in events] == [audit.Outcome.DENIED] * 2
    assert all(e.action == "session.login" and e.client == "testclient" for e in events)


def test_login_form_needs_its_csrf_token(world: World) -> None:
    with world.client() as client:
        client.get("/login")
        response = client.post("/login", data={"username": "ref_north", "password": PASSWORD})
        assert response.status_code == 403
        assert "consult_session" not in client.cookies


def test_disabled_user_is_refused_at_once(world: World, services: Services) -> None:
    with world.client("ref_north") as client:
        assert client.get("/api/studies").status_code == 200
        with services.catalog.write() as conn:
            directory.set_disabled(conn, "ref_north", True)
        assert client.get("/api/studies").status_code == 401
        assert client.get("/").status_code == 303
        refused = client.post("/api/session", json={"username": "ref_north", "password": PASSWORD})
        assert refused.status_code == 401


def test_expired_session_is_refused(world: World, services: Services) -> None:
    with world.client("ref_north") as client:
        with services.catalog.write() as conn:
            conn.execute(update(sessions).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert client.get("/api/session").status_code == 401


def test_logging_in_purges_expired_sessions(world: World, services: Services) -> None:
    with world.client("ref_north"), world.client("spec_south"):
        pass
    with services.catalog.write() as conn:
        conn.execute(update(sessions).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert session_count(services) == 2
    with world.client("ref_east"):
        assert session_count(services) == 1  # the new one; the expired two are gone


def test_api_session_round_trip(world: World, services: Services) -> None:
    with world.client() as client:
        response = client.post(
            "/api/session", json={"username": "spec_south", "password": PASSWORD}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["username"] == "spec_south"
        assert body["role"] == "specialist"
        assert body["hospital"] == "South Specialist Hospital"
        assert len(body["csrf_token"]) == 64
        assert client.get("/api/session").json()["csrf_token"] == body["csrf_token"]
        # DELETE without the CSRF header is refused; with it, the session ends.
        assert client.delete("/api/session").status_code == 403
        assert session_count(services) == 1
        response = client.delete("/api/session", headers={"X-CSRF-Token": body["csrf_token"]})
        assert response.status_code == 204
        assert session_count(services) == 0
        assert client.get("/api/session").status_code == 401


def test_session_cookie_flags(world: World) -> None:
    with world.client() as client:
        response = client.post("/api/session", json={"username": "ref_north", "password": PASSWORD})
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header and "path=/" in header
    assert "secure" not in header


def test_secure_cookies_setting(settings: Settings) -> None:
    secure = settings.model_copy(update={"secure_cookies": True})
    services = Services.open(secure)
    try:
        build_world(services, with_study=False)
        with TestClient(create_app(services)) as client:
            response = client.post(
                "/api/session", json={"username": "ref_north", "password": PASSWORD}
            )
        assert "secure" in response.headers["set-cookie"].lower()
    finally:
        services.close()


@pytest.mark.parametrize(
    ("headers", "field"),
    [({}, None), ({"X-CSRF-Token": "0" * 64}, None), ({}, "wrong"), ({}, "")],
)
def test_csrf_missing_or_wrong_is_refused(
    world: World, headers: dict[str, str], field: str | None
) -> None:
    with world.client("ref_north") as client:
        del client.headers["X-CSRF-Token"]
        data = {} if field is None else {"csrf_token": field}
        response = client.post("/logout", data=data, headers=headers)
        assert response.status_code == 403
        assert "CSRF" in response.text
        api = client.delete("/api/session", headers=headers)
        assert api.status_code == 403
        assert api.json()["error"].startswith("CSRF token missing or wrong")
        assert client.get("/api/session").status_code == 200


def test_cross_site_origin_is_refused(world: World) -> None:
    with world.client("ref_north") as client:
        evil = {"Origin": "https://evil.example"}
        assert client.delete("/api/session", headers=evil).status_code == 403
        assert client.delete("/api/session", headers={"Origin": "null"}).status_code == 403
        cross = {"Sec-Fetch-Site": "cross-site"}
        assert client.delete("/api/session", headers=cross).status_code == 403
        refused = client.post(
            "/api/session", json={"username": "ref_north", "password": PASSWORD}, headers=evil
        )
        assert refused.status_code == 403
        # The same origin is fine.
        same = {"Origin": "http://testserver"}
        assert client.delete("/api/session", headers=same).status_code == 204


def test_api_login_needs_json(world: World) -> None:
    with world.client() as client:
        response = client.post("/api/session", data={"username": "ref_north", "password": PASSWORD})
        assert response.status_code == 400
        assert response.json() == {"error": "request body must be application/json"}
