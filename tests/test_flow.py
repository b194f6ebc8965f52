"""The whole chain, with real peers, as users meet it.

dcmtk ``storescu`` (the referring hospital's PACS) sends a study to ``consult serve``; the
worker builds previews; the referring doctor and the specialist use the pages in headless
Chromium; the signed opinion goes back as a Basic Text SR to a dcmtk ``storescp`` (the
referring PACS), where ``dsrdump`` reads it. Screenshots land in test-output/flow/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consult.access import directory
from consult.dicom.synthetic import demo_study, write_part10
from consult.services import Services
from consult.settings import Settings
from tests.support import free_port, launch_chromium, require_tool, wait_until

pytestmark = pytest.mark.e2e

SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "flow"
PASSWORDS = {"rita": "rita-password-1", "sam": "sam-password-1"}
OPINION = (
    "Befund: 9 mm Läsion im rechten Oberlappen, kein Hinweis auf Malignität.\n"
    "Follow-up CT in 6 months."
)
LOADED_IMAGES = (
    "Array.from(document.querySelectorAll('img'))"
    ".filter(i => i.complete && i.naturalWidth > 0).length"
)


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """dcmtk storescp standing in for the referring hospital's PACS."""
    storescp = require_tool("storescp", "dcmtk")
    folder = tmp_path / "pacs"
    folder.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [storescp, "-aet", "REFPACS", "-od", str(folder), "+xa", "-B", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _accepts(port), timeout=15)
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _accepts(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def server(tmp_path: Path, pacs: tuple[int, Path]) -> Iterator[dict[str, Any]]:
    """`consult serve` as a subprocess on free ports, with two hospitals and two users."""
    dicom_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "CONSULT_DATA_DIR": str(tmp_path / "data"),
        "CONSULT_DICOM_PORT": str(dicom_port),
        "CONSULT_HTTP_PORT": str(http_port),
        "CONSULT_DICOM_HOST": "127.0.0.1",
        "CONSULT_STABLE_SECONDS": "1",
        "CONSULT_WORKERS": "1",
    }
    for name in ("CONSULT_DATABASE_URL", "CONSULT_S3_ENDPOINT"):
        env.pop(name, None)
    services = Services.open(Settings(data_dir=tmp_path / "data"))
    with services.catalog.write() as conn:
        referring = directory.add_hospital(conn, "Referring Hospital")
        consulting = directory.add_hospital(conn, "Consulting Hospital")
        directory.add_peer(conn, referring, "REFPACS", "127.0.0.1", pacs[0])
        directory.add_user(
            conn,
            "rita",
            hospital=referring,
            role=directory.Role.REFERRING,
            password=PASSWORDS["rita"],
            display_name="Dr. Rita Referrer",
        )
        directory.add_user(
            conn,
            "sam",
            hospital=consulting,
            role=directory.Role.SPECIALIST,
            password=PASSWORDS["sam"],
            display_name="Dr. Sam Specialist",
        )
    services.close()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "consult", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{http_port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "serve.log").read_text())
        try:
            return httpx.get(base + "/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=60, interval=0.2)
        yield {"base": base, "dicom_port": dicom_port, "log": tmp_path / "serve.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


def _login(page: Any, base: str, user: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert "/login" not in page.url


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _images_loaded(page: Any) -> int:
    return int(page.evaluate(LOADED_IMAGES))


def test_study_to_signed_opinion_back_in_the_referring_pacs(
    server: dict[str, Any], pacs: tuple[int, Path], browser: Any, tmp_path: Path
) -> None:
    base = server["base"]
    # 1. The referring PACS sends a study: uncompressed CT slices and a JPEG baseline image.
    files = []
    for i, (ds, ts) in enumerate(demo_study()):
        path = tmp_path / f"send-{i}.dcm"
        write_part10(ds, ts, path)
        files.append(path)
    study_uid = str(demo_study()[0][0].StudyInstanceUID)
    storescu = require_tool("storescu", "dcmtk")
    for batch, extra in ((files[:4], []), (files[4:], ["-xy"])):
        sent = subprocess.run(
            [
                storescu,
                "-aet",
                "REFPACS",
                "-aec",
                "CONSULT",
                *extra,
                "127.0.0.1",
                str(server["dicom_port"]),
                *map(str, batch),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"TCP_NODELAY": "1"},
        )
        assert sent.returncode == 0, sent.stderr

    # 2. The referring doctor sees the study with its previews and asks for an opinion.
    rita = browser.new_context().new_page()
    _login(rita, base, "rita")
    assert "DEMO-0001" in rita.locator("#studies").inner_text()
    rita.locator("#studies a").first.click()
    rita.wait_for_load_state()
    wait_until(lambda: _reload_until_images(rita, 5), timeout=60, interval=0.5)
    # Quiet for CONSULT_STABLE_SECONDS (1 s): no "all images sent" needed. Previews can be
    # ready before that on a fast machine.
    wait_until(lambda: _reload_until_stable(rita), timeout=30, interval=0.3)
    _shot(rita, "1-referrer-study")
    rita.get_by_label("Clinical question").fill("Nodule in the right upper lobe: malignant?")
    rita.get_by_label("Urgency").select_option("urgent")
    rita.get_by_label("Target hospital").select_option(label="Consulting Hospital")
    rita.get_by_role("button", name="Request consultation").click()
    rita.wait_for_load_state()
    consultation_url = rita.url
    assert re.search(r"/consultations/\d+$", consultation_url), consultation_url
    _shot(rita, "2-referrer-requested")

    # 3. The specialist sees the request, accepts it, looks at the previews, asks something.
    sam = browser.new_context().new_page()
    _login(sam, base, "sam")
    sam.goto(base + "/consultations")
    assert "Nodule in the right upper lobe" in sam.content()
    sam.locator("#consultations a").first.click()
    sam.wait_for_load_state()
    sam.get_by_role("button", name="Accept").click()
    sam.wait_for_load_state()
    assert _images_loaded(sam) >= 1
    sam.get_by_label("Message").fill("Any prior imaging to compare with?")
    sam.get_by_role("button", name="Post message").click()
    sam.wait_for_load_state()

    # 4. The referring doctor answers in the thread.
    rita.goto(consultation_url)
    assert "Any prior imaging to compare with?" in rita.content()
    rita.get_by_label("Message").fill("No priors, first CT.")
    rita.get_by_role("button", name="Post message").click()
    rita.wait_for_load_state()

    # 5. The specialist writes, saves and signs the opinion.
    sam.goto(consultation_url)
    assert "No priors, first CT." in sam.content()
    sam.get_by_label(re.compile("^Opinion")).fill(OPINION)
    sam.get_by_role("button", name="Save draft").click()
    sam.wait_for_load_state()
    sam.get_by_role("button", name="Sign opinion").click()
    sam.wait_for_load_state()
    _shot(sam, "3-specialist-signed")
    assert sam.locator("#opinion-form").count() == 0  # signed: no editor any more

    # 6. The referring doctor reads the signed opinion.
    rita.goto(consultation_url)
    assert rita.locator("#opinion-text").inner_text().strip() == OPINION
    assert "Sam Specialist" in rita.locator("#opinion-signer").inner_text()
    import hashlib

    assert (
        rita.locator("#opinion-sha256").inner_text().strip()
        == hashlib.sha256(OPINION.encode()).hexdigest()
    )

    # 7. The opinion arrives in the referring PACS as a Basic Text SR in the same study.
    received = wait_until(lambda: sorted(pacs[1].iterdir()), timeout=60, interval=0.2)
    dsrdump = require_tool("dsrdump", "dcmtk")
    dump = subprocess.run(
        [dsrdump, "+Pl", str(received[0])], capture_output=True, text=True, timeout=30
    )
    assert dump.returncode == 0, dump.stderr
    assert "Basic Text SR" in dump.stdout
    assert "VERIFIED" in dump.stdout
    assert "kein Hinweis auf Malignität" in dump.stdout
    import pydicom

    sr = pydicom.dcmread(received[0])
    assert sr.StudyInstanceUID == study_uid
    assert sr.PatientID == "DEMO-0001" and sr.Modality == "SR"
    assert sr.SeriesInstanceUID not in {str(ds.SeriesInstanceUID) for ds, _ in demo_study()}
    rita.goto(consultation_url)
    wait_until(lambda: _reload_until_text(rita, "#deliveries", "sent"), timeout=30, interval=0.5)
    _shot(rita, "4-referrer-opinion-delivered")


def _reload_until_images(page: Any, n: int) -> bool:
    page.reload()
    page.wait_for_load_state("networkidle")
    return _images_loaded(page) >= n


def _reload_until_stable(page: Any) -> bool:
    page.reload()
    page.wait_for_load_state()
    return bool(page.locator(".badge.ok", has_text="stable").count() > 0)


def _reload_until_text(page: Any, selector: str, text: str) -> bool:
    page.reload()
    page.wait_for_load_state()
    return page.locator(selector).count() > 0 and text in page.locator(selector).inner_text()
