"""The HTML pages: templates and their context, forms (with CSRF), escaping, error pages."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from consult.services import Services
from consult.settings import Settings
from consult.web.app import create_app
from tests.support import launch_chromium, serve, wait_until
from tests.web_world import CT, PASSWORD, World, build_world, hostile_copy

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    opened = Services.open(settings)
    yield opened
    opened.close()


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert match is not None, "page has no CSRF field"
    return match.group(1)


def submit(client: TestClient, page: str, action: str, **fields: str) -> str:
    """Post a form of ``page`` to ``action`` with the page's CSRF token; returns Location."""
    html = client.get(page).text
    assert f'action="{action}"' in html or f'formaction="{action}"' in html, action
    response = client.post(action, data={"csrf_token": csrf_of(html), **fields})
    assert response.status_code == 303, response.text
    return response.headers["location"]


def test_studies_list(world: World) -> None:
    with world.client("ref_north") as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.template.name == "studies.html"  # type: ignore[attr-defined]
    [study] = response.context["studies"]  # type: ignore[attr-defined]
    assert study.study_uid == world.study_uid
    assert study.modalities == ["CT"]
    assert study.instance_count == 1
    assert study.stable
    html = response.text
    assert f'href="/studies/{world.study_uid}"' in html
    assert "CompressedSamples, CT1" in html and "1CT1" in html and "2004-01-19" in html
    assert 'id="current-hospital">North Referring Hospital<' in html
    assert ">Log out</button>" in html
    assert response.headers["cache-control"] == "no-store"


def test_study_page_shows_series_previews_and_request_form(world: World) -> None:
    with world.client("ref_north") as client:
        response = client.get(f"/studies/{world.study_uid}")
    assert response.template.name == "study.html"  # type: ignore[attr-defined]
    context = response.context  # type: ignore[attr-defined]
    assert context["can_request"] is True
    assert [h.name for h in context["targets"]] == [
        "East Unrelated Hospital",
        "South Specialist Hospital",
    ]
    [series] = context["series"]
    [instance] = series.instances
    assert instance.sha256 == world.stored[0].sha256
    html = response.text
    assert f'<img src="/previews/{instance.previews[0].id}/thumbnail"' in html
    for field in ("question", "urgency", "target_hospital"):
        assert f'<label for="{field}">' in html and f'id="{field}"' in html
    assert ">Request consultation</button>" in html
    assert 'id="all_sent"' not in html  # the study is stable


@pytest.mark.parametrize("username", ["spec_north", "admin_north"])
def test_only_referring_users_get_the_request_form(world: World, username: str) -> None:
    with world.client(username) as client:
        response = client.get(f"/studies/{world.study_uid}")
    assert response.status_code == 200
    assert response.context["can_request"] is False  # type: ignore[attr-defined]
    assert "Request consultation" not in response.text


def test_whole_flow_through_the_forms(world: World) -> None:
    with world.client("ref_north") as referring, world.client("spec_south") as specialist:
        study = f"/studies/{world.study_uid}"
        location = submit(
            referring,
            study,
            f"{study}/consultations",
            question="Fracture?\r\nPlease compare.",
            urgency="stat",
            target_hospital=str(world.hospitals["south"].id),
        )
        cid = int(location.rsplit("/", 1)[1])
        page = f"/consultations/{cid}"
        assert location == page

        inbox = specialist.get("/consultations")
        assert inbox.template.name == "consultations.html"  # type: ignore[attr-defined]
        assert f'href="{page}"' in inbox.text
        view = specialist.get(page)
        assert view.context["allowed"].answer is True  # type: ignore[attr-defined]
        assert ">Accept</button>" in view.text and ">Decline</button>" in view.text
        assert "Fracture?\nPlease compare." in view.text

        submit(specialist, page, f"{page}/accept")
        submit(specialist, page, f"{page}/messages", body="Any prior imaging?")
        assert submit(referring, page, f"{page}/messages", body="No.") == f"{page}#thread"
        thread = referring.get(page).context["thread"]  # type: ignore[attr-defined]
        assert [m.body for m in thread] == ["Any prior imaging?", "No."]

        editor = specialist.get(page).text
        assert '<label for="opinion_body">' in editor
        assert ">Save draft</button>" in editor and ">Sign opinion</button>" in editor
        assert "Sign opinion" not in referring.get(page).text
        submit(specialist, page, f"{page}/opinion", opinion_body="Draft text")
        assert ">Draft text</textarea>" in specialist.get(page).text
        submit(specialist, page, f"{page}/opinion/sign", opinion_body="No fracture.\r\nOK.")

        final = referring.get(page)
        opinion = final.context["opinion"]  # type: ignore[attr-defined]
    assert opinion.body == "No fracture.\nOK."
    assert opinion.sha256 == hashlib.sha256(b"No fracture.\nOK.").hexdigest()
    html = final.text
    assert f'id="opinion-sha256">{opinion.sha256}<' in html
    assert 'id="opinion-signer">Dr spec_south<' in html
    assert re.search(r'<time datetime="[0-9T:.-]+Z">[0-9-]+ [0-9:]+ UTC</time>', html)
    assert "NORTH_PACS @ 127.0.0.1:40104" in html and "pending" in html
    assert ">Close consultation</button>" in html


def test_hostile_strings_are_escaped(world: World, tmp_path: Path) -> None:
    hostile = hostile_copy(
        tmp_path, CT, PatientName=HOSTILE, StudyDescription=HOSTILE[:16], PatientID="<i>x"
    )
    uid = world.ingest(hostile).study_uid
    with world.client("ref_north") as referring, world.client("spec_south") as specialist:
        location = submit(
            referring,
            f"/studies/{uid}",
            f"/studies/{uid}/consultations",
            question=HOSTILE,
            urgency="routine",
            target_hospital=str(world.hospitals["south"].id),
        )
        submit(referring, location, f"{location}/messages", body=f"look {HOSTILE}")
        pages = [
            referring.get("/").text,
            referring.get(f"/studies/{uid}").text,
            specialist.get("/consultations").text,
            specialist.get(location).text,
        ]
    for html in pages:
        assert "<script>" not in html
        assert "<i>x" not in html
        assert "&lt;script&gt;" in html


def test_error_pages(world: World) -> None:
    with world.client("spec_east") as client:
        missing = client.get(f"/studies/{world.study_uid}")
        assert missing.status_code == 404
        assert missing.template.name == "error.html"  # type: ignore[attr-defined]
        assert "study not found" in missing.text
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/api/no/such").json() == {"error": "Not Found"}
        wrong = client.get("/logout")
        assert wrong.status_code == 405
        assert "allow" in wrong.headers
        assert client.put("/api/studies").json() == {"error": "Method Not Allowed"}
        assert client.get("/previews/abc").status_code == 404


def test_static_assets_are_served(world: World) -> None:
    with world.client() as client:
        css = client.get("/static/consult.css")
        js = client.get("/static/consult.js")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200 and "DOMContentLoaded" in js.text
    assert "no-store" not in css.headers.get("cache-control", "")


@pytest.mark.e2e
def test_pages_in_chromium(world: World, tmp_path: Path) -> None:
    """The pages work in a real browser under our CSP: labels, buttons, images, local times."""
    from playwright.sync_api import sync_playwright

    with serve(create_app(world.services)) as base, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/consultations")
            page.get_by_label("User name").fill("ref_north")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/consultations")
            page.get_by_role("link", name="Studies").click()
            page.get_by_role("link", name="CompressedSamples, CT1").click()
            # Polled from outside: wait_for_function would eval in the page, which our CSP forbids.
            wait_until(
                lambda: page.evaluate(
                    "[...document.images].every(i => i.complete && i.naturalWidth > 0)"
                )
            )
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert widths == [128, 128]  # the series thumbnail, then the instance one
            page.get_by_label("Clinical question").fill(HOSTILE)
            page.get_by_label("Urgency").select_option("stat")
            page.get_by_label("Target hospital").select_option(label="South Specialist Hospital")
            page.get_by_role("button", name="Request consultation").click()
            page.wait_for_url(re.compile(r".*/consultations/\d+$"))
            assert page.locator("#question-text").inner_text() == HOSTILE
            # consult.js replaced the UTC text with local time, keeping UTC in the title.
            title = page.locator("time").first.get_attribute("title")
            assert title is not None and title.endswith(" UTC")
            page.screenshot(path=str(tmp_path / "consultation.png"), full_page=True)
            page.get_by_role("button", name="Log out").click()
            page.wait_for_url(f"{base}/login")
            assert problems == []
        finally:
            browser.close()


def test_a_busy_catalog_is_503_with_retry_after_on_pages_and_api(settings: Settings) -> None:
    """Every "try again shortly" goes through the one error handler, with Retry-After."""
    services = Services.open(settings.model_copy(update={"catalog_lock_timeout": 0.3}))
    try:
        world = build_world(services)
        with world.client("ref_north") as client:
            locker = sqlite3.connect(settings.data_dir / "catalog.sqlite3", isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
            try:
                page = client.get("/")
                listed = client.get("/api/studies")
            finally:
                locker.rollback()
                locker.close()
            for response in (page, listed):
                assert response.status_code == 503
                assert response.headers["retry-after"] == "2"
                assert response.headers["cache-control"] == "no-store"
            assert "try again shortly" in page.text
            assert "try again shortly" in listed.json()["error"]
            assert client.get("/").status_code == 200  # and back once the lock is gone
    finally:
        services.close()
