"""Tile routes: descriptors and tiles through the app, access and audit, ETags, lossy marks,
windows rendered on demand in a bounded cache, a missing pyramid rebuilt once."""

from __future__ import annotations

import io
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from consult.catalog.tables import audit_events, instance_versions, previews
from consult.catalog.tables import jobs as jobs_table
from consult.catalog.tables import renders as renders_table
from consult.previews import renders
from consult.services import Services
from consult.settings import Settings
from consult.web.app import create_app
from tests.pyramid_support import mono16_dataset, write_dataset
from tests.support import launch_chromium, need_or_skip, sample, serve, wait_until
from tests.web_world import PASSWORD, World, build_world
from viewer import Window, open_frames
from viewer.dzi import DZI_NAMESPACE
from viewer.tilepack import IndexCache

NS = {"dzi": DZI_NAMESPACE}


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    opened = Services.open(settings)
    yield opened
    opened.close()


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


@pytest.fixture
def big(world: World, tmp_path: Path) -> dict[str, Any]:
    """A 1300x1100 frame (tiled) in North's study, with its preview built."""
    ds = mono16_dataset(1100, 1300)
    ds.StudyInstanceUID = world.study_uid
    stored = world.ingest(write_dataset(ds, tmp_path / "big.dcm"))
    world.run_jobs()
    with world.services.catalog.read() as conn:
        row = conn.execute(
            select(previews, instance_versions.c.object_key.label("original"))
            .join(instance_versions, instance_versions.c.id == previews.c.version_pk)
            .where(previews.c.version_pk == stored.version_id)
        ).one()
    return {"id": row.id, "row": row, "stored": stored, "series_uid": stored.series_uid}


def image(response: Any) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(io.BytesIO(response.content)))


def audit_rows(services: Services, **where: str) -> list[Any]:
    stmt = select(audit_events).order_by(audit_events.c.id)
    for name, value in where.items():
        stmt = stmt.where(audit_events.c[name] == value)
    with services.catalog.read() as conn:
        return list(conn.execute(stmt).all())


def test_descriptor_tiles_and_info_of_a_large_frame(world: World, big: dict[str, Any]) -> None:
    pid = big["id"]
    with world.client("spec_north") as client:
        dzi = client.get(f"/previews/{pid}.dzi")
        assert dzi.status_code == 200 and dzi.headers["content-type"] == "application/xml"
        assert dzi.headers["x-consult-lossy"] == "true"
        root = ET.fromstring(dzi.text)  # noqa: S314 - our own output
        assert root.attrib == {"Format": "jpeg", "Overlap": "1", "TileSize": "254"}
        size = root.find("dzi:Size", NS)
        assert size is not None and size.attrib == {"Width": "1300", "Height": "1100"}
        corner = client.get(f"/previews/{pid}_files/11/0_0.jpeg")
        assert corner.status_code == 200 and corner.headers["content-type"] == "image/jpeg"
        assert image(corner).shape == (255, 255)
        inner = client.get(f"/previews/{pid}_files/11/1_1.jpeg")
        assert image(inner).shape == (256, 256)
        last = client.get(f"/previews/{pid}_files/11/5_4.jpeg")
        assert image(last).shape == (1100 - 4 * 254 + 1, 1300 - 5 * 254 + 1)
        assert image(client.get(f"/previews/{pid}_files/0/0_0.jpeg")).shape == (1, 1)
        for missing in ["11/6_0.jpeg", "12/0_0.jpeg", "11/0_0.png", "11/0_0.gif"]:
            assert client.get(f"/previews/{pid}_files/{missing}").status_code == 404, missing
        info = client.get(f"/previews/{pid}.json").json()
        assert info["status"] == "ready" and info["layout"] == "tiled"
        assert (info["width"], info["height"], info["levels"]) == (1300, 1100, 12)
        assert info["lossy"] is True and info["source_lossy"] is False
        assert info["window"] == {"center": 1800.0, "width": 1600.0, "function": "LINEAR"}
        assert info["windows"][0]["center"] == 1800.0
        assert info["urls"]["dzi"] == f"/previews/{pid}.dzi"
        overview = client.get(info["urls"]["image"])
        assert image(overview).shape == (550, 650)  # the level that fits 1024 px
        thumb = client.get(info["urls"]["thumbnail"])
        assert thumb.status_code == 200 and max(image(thumb).shape) <= 256


def test_small_frames_are_one_tile_per_level(world: World) -> None:
    [pid] = world.preview_ids()
    with world.client("spec_north") as client:
        root = ET.fromstring(client.get(f"/previews/{pid}.dzi").text)  # noqa: S314
        assert root.attrib["TileSize"] == "128" and root.attrib["Overlap"] == "0"
        assert image(client.get(f"/previews/{pid}_files/7/0_0.jpeg")).shape == (128, 128)
        assert image(client.get(f"/previews/{pid}_files/6/0_0.jpeg")).shape == (64, 64)
        assert client.get(f"/previews/{pid}_files/7/1_0.jpeg").status_code == 404
        assert client.get(f"/previews/{pid}.json").json()["layout"] == "single"


def test_lossless_png_on_request(world: World, big: dict[str, Any]) -> None:
    pid = big["id"]
    lossless = open_frames(world.services.store.get(big["row"].original)).render(0)
    with world.client("spec_north") as client:
        dzi = client.get(f"/previews/{pid}.dzi?format=png")
        assert dzi.headers["x-consult-lossy"] == "false"
        assert ET.fromstring(dzi.text).attrib["Format"] == "png"  # noqa: S314
        tile = client.get(f"/previews/{pid}_files/11/1_1.png?format=png")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
        assert tile.headers["x-consult-lossy"] == "false"
        assert np.array_equal(image(tile), lossless[253:509, 253:509])
        jpeg = client.get(f"/previews/{pid}_files/11/1_1.jpeg")
        assert jpeg.headers["x-consult-lossy"] == "true"
        assert client.get(f"/previews/{pid}.dzi?format=gif").status_code == 400


def test_other_hospitals_get_404_and_a_denied_audit_row(world: World, big: dict[str, Any]) -> None:
    pid = big["id"]
    urls = [
        f"/previews/{pid}.dzi",
        f"/previews/{pid}.json",
        f"/previews/{pid}_files/11/0_0.jpeg",
        f"/previews/{pid}/thumbnail",
        f"/previews/{pid}",
        f"/series/{big['series_uid']}/thumbnail",
    ]
    with world.client("spec_east") as client:
        for url in urls:
            assert client.get(url).status_code == 404, url
        assert client.get("/series/1.2.3.999/thumbnail").status_code == 404
    denied = audit_rows(world.services, username="spec_east", outcome="denied")
    assert len(denied) == len(urls) + 1
    assert {d.action for d in denied} == {"preview.read"}
    assert {d.object_type for d in denied} == {"instance_version", "series"}
    with world.client() as anonymous:
        assert anonymous.get(urls[2]).status_code == 303  # to the login page


def test_reads_are_audited_once_per_session_and_version(world: World, big: dict[str, Any]) -> None:
    pid = big["id"]

    def successes() -> int:
        return len(
            audit_rows(
                world.services,
                action="preview.read",
                outcome="success",
                object_id=str(big["stored"].version_id),
            )
        )

    with world.client("spec_north") as client:
        client.get(f"/previews/{pid}.dzi")
        for col in range(4):
            assert client.get(f"/previews/{pid}_files/11/{col}_0.jpeg").status_code == 200
        client.get(f"/previews/{pid}/thumbnail")
    assert successes() == 1
    with world.client("spec_north") as client:  # a new session
        client.get(f"/previews/{pid}_files/11/0_0.jpeg")
    assert successes() == 2


def test_etag_names_version_frame_window_format_and_gives_304(
    world: World, big: dict[str, Any]
) -> None:
    pid, sha = big["id"], big["stored"].sha256
    with world.client("spec_north") as client:
        tile = client.get(f"/previews/{pid}_files/10/1_1.jpeg")
        etag = tile.headers["etag"]
        assert etag.startswith(f'"{sha}-0-default-jpeg-')
        assert tile.headers["cache-control"].startswith("private")
        again = client.get(f"/previews/{pid}_files/10/1_1.jpeg", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["x-consult-lossy"] == "true"
        png = client.get(f"/previews/{pid}_files/10/1_1.png?format=png")
        assert png.headers["etag"].startswith(f'"{sha}-0-default-png-')
        windowed = client.get(f"/previews/{pid}_files/10/1_1.jpeg?window=2000,1000")
        assert windowed.headers["etag"].startswith(f'"{sha}-0-LINEAR:2000.0:1000.0-jpeg-')
        stale = client.get(f"/previews/{pid}_files/10/1_1.jpeg", headers={"If-None-Match": '"x"'})
        assert stale.status_code == 200


def test_other_windows_are_rendered_on_demand_and_quantised(
    world: World, big: dict[str, Any]
) -> None:
    pid = big["id"]
    lossless = open_frames(world.services.store.get(big["row"].original))
    expected = lossless.render(0, Window(2000.0, 1000.0))
    with world.client("spec_north") as client:
        first = client.get(f"/previews/{pid}_files/11/1_1.png?window=2000,1000&format=png")
        assert first.status_code == 200
        assert first.headers["x-consult-window"] == "LINEAR:2000.0:1000.0"
        assert np.array_equal(image(first), expected[253:509, 253:509])
        # 1000 wide: the step is 1 unit, so these are the same render.
        nudged = client.get(f"/previews/{pid}_files/11/1_1.png?window=2000.3,999.8&format=png")
        assert nudged.headers["etag"] == first.headers["etag"]
        # The dataset's own window asked for explicitly is the stored pyramid.
        own = client.get(f"/previews/{pid}_files/11/1_1.jpeg?window=1800,1600")
        assert own.headers["x-consult-window"] == "default"
        preset = client.get(f"/previews/{pid}_files/11/1_1.jpeg?preset=0")
        assert preset.status_code == 200
        for bad in ["window=abc", "window=1,0", "window=1,2,3", "preset=x", "window=nan,5"]:
            assert client.get(f"/previews/{pid}_files/11/1_1.jpeg?{bad}").status_code == 400
        assert client.get(f"/previews/{pid}_files/11/1_1.jpeg?preset=63").status_code == 404
    with world.services.catalog.read() as conn:
        windows = sorted(
            (r.window, r.status)
            for r in conn.execute(select(renders_table.c.window, renders_table.c.status))
        )
    assert windows == [
        ("LINEAR:2000.0:1000.0", "ready"),
        ("preset:0", "ready"),
        ("preset:63", "failed"),
    ]


def test_quantisation_is_below_half_a_grey_level() -> None:
    for center, width in [(40, 400), (-600, 1500), (1800.3, 1600.7), (32, 8), (0.5, 0.02)]:
        w = renders.quantise(center, width, "LINEAR_EXACT")
        assert abs(w.center - center) <= width / 1024 and abs(w.width - width) <= width / 1024
    assert renders.quantise(40.1, 400.2) == renders.quantise(39.9, 399.9)  # step 0.5
    assert renders.quantise(3, 0.5, "LINEAR").width == 1  # LINEAR needs a width of 1
    for bad in [(float("inf"), 1), (0, -1), (0, 0), (1e12, 10)]:
        with pytest.raises(ValueError):
            renders.quantise(*bad)


def test_render_cache_is_bounded_and_least_recently_used_goes_first(
    world: World, big: dict[str, Any]
) -> None:
    services = Services(
        settings=world.services.settings.model_copy(update={"render_cache_items": 2}),
        catalog=world.services.catalog,
        store=world.services.store,
    )
    row = big["row"]
    target = renders.Target(row.version_pk, 0, big["stored"].sha256, row.original)

    def get(center: int) -> renders.Render:
        spec = renders.RenderSpec("jpeg", window=renders.quantise(center, 1000))
        return renders.get_render(services, target, spec, touch_after=0)

    first, _second = get(1000), get(1500)
    assert get(1000) == first  # used again: now the most recent
    get(2000)
    with services.catalog.read() as conn:
        kept = sorted(r.window for r in conn.execute(select(renders_table.c.window)))
    assert kept == ["LINEAR:1000.0:1000.0", "LINEAR:2000.0:1000.0"]
    stored = [o for o in services.store.list("renders/")]
    assert len(stored) == 2 and first.object_key in {o.key for o in stored}
    # By bytes: with a 1 MB bound, renders larger than that are kept one at a time.
    tight = Services(
        settings=services.settings.model_copy(
            update={"render_cache_items": 100, "render_cache_mb": 1, "tile_format": "png"}
        ),
        catalog=services.catalog,
        store=services.store,
    )
    for center in (1100, 1200, 1300):
        spec = renders.RenderSpec("png", window=renders.quantise(center, 1000))
        newest = renders.get_render(tight, target, spec)
        total = sum(o.size for o in services.store.list("renders/"))
        assert total <= max(1024 * 1024, newest.bytes)
    assert renders.evict(tight) == 0


def login(base: str, username: str) -> dict[str, str]:
    response = httpx.post(f"{base}/api/session", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return dict(response.cookies)


@pytest.fixture
def any_db_world(settings: Settings, database_url: str) -> Iterator[World]:
    opened = Services.open(settings.model_copy(update={"database_url": database_url}))
    try:
        yield build_world(opened)
    finally:
        opened.close()


def test_missing_pyramid_is_rebuilt_once_under_concurrent_requests(
    any_db_world: World,
) -> None:
    world = any_db_world
    services = world.services
    [pid] = world.preview_ids()
    with services.catalog.read() as conn:
        key = conn.execute(select(previews.c.object_key)).scalar_one()
    services.store.delete(key)
    tile = f"/previews/{pid}_files/7/0_0.jpeg"
    with serve(create_app(services)) as base:
        cookies = login(base, "spec_north")
        barrier = threading.Barrier(8)

        def fetch(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, cookies=cookies) as client:
                barrier.wait()
                return client.get(tile)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(fetch, range(8)))
        assert [a.status_code for a in answers] == [503] * 8
        assert all(a.headers["retry-after"] == "2" for a in answers)
        with services.catalog.read() as conn:
            queued = conn.execute(
                select(jobs_table.c.id).where(jobs_table.c.status == "queued")
            ).all()
        assert len(queued) == 1
        assert world.run_jobs() == 1
        with httpx.Client(base_url=base, cookies=cookies) as client:
            again = client.get(tile)
            assert again.status_code == 200 and again.headers["content-type"] == "image/jpeg"
            assert client.get(f"/previews/{pid}.dzi").status_code == 200
    with services.catalog.read() as conn:
        assert conn.execute(select(previews.c.id)).scalar_one() == pid  # same preview id


def test_series_thumbnails_and_no_image_entries(
    world: World, big: dict[str, Any], tmp_path: Path
) -> None:
    sr = world.ingest(sample("pydicom__test-SR.dcm"))
    world.run_jobs()
    with world.services.catalog.read() as conn:
        sr_preview = conn.execute(
            select(previews.c.id).where(previews.c.version_pk == sr.version_id)
        ).scalar_one()
    with world.client("spec_north") as client:
        thumb = client.get(f"/series/{big['series_uid']}/thumbnail")
        assert thumb.status_code == 200 and max(image(thumb).shape) <= 256
        assert client.get(f"/series/{sr.series_uid}/thumbnail").status_code == 404
        info = client.get(f"/previews/{sr_preview}.json").json()
        assert info["status"] == "no_image" and "no pixel data" in info["reason"]
        missing = client.get(f"/previews/{sr_preview}.dzi")
        assert missing.status_code == 404 and "no image" in missing.text
        page = client.get(f"/studies/{world.study_uid}").text
        assert f'src="/series/{big["series_uid"]}/thumbnail"' in page
        assert f'src="/previews/{big["id"]}/thumbnail"' in page


def test_openseadragon_is_served_from_node_modules(world: World) -> None:
    root = Path(__file__).resolve().parent.parent / "node_modules" / "openseadragon"
    if not root.is_dir():
        need_or_skip("OpenSeadragon not installed (npm install)")
    with world.client() as client:
        js = client.get("/static/vendor/openseadragon/openseadragon.min.js")
        assert js.status_code == 200 and "OpenSeadragon" in js.text[:5000]


def test_index_cache_is_bounded() -> None:
    cache = IndexCache(2)
    marker: Any = object()
    for key in "abc":
        cache.put(key, marker)
    assert cache.get("a") is None and cache.get("c") is marker


@pytest.mark.e2e
def test_openseadragon_opens_our_descriptor_and_draws_tiles(
    world: World, big: dict[str, Any]
) -> None:
    """One Chromium check: OpenSeadragon reads one of our .dzi descriptors through the app
    and draws its tiles (the viewer page itself is the viewer issue's)."""
    root = Path(__file__).resolve().parent.parent / "node_modules" / "openseadragon"
    if not root.is_dir():
        need_or_skip("OpenSeadragon not installed (npm install)")
    from playwright.sync_api import sync_playwright

    with serve(create_app(world.services)) as base, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/login")
            page.get_by_label("User name").fill("spec_north")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/")
            page.goto(f"{base}/studies/{world.study_uid}")
            page.add_script_tag(url="/static/vendor/openseadragon/openseadragon.min.js")
            page.evaluate(
                """(dzi) => {
                    const box = document.createElement('div');
                    box.id = 'osd';
                    box.style.width = '600px';
                    box.style.height = '500px';
                    document.body.prepend(box);
                    window.tilesLoaded = 0;
                    window.tileErrors = 0;
                    window.viewer = OpenSeadragon({
                        element: box, tileSources: dzi, drawer: 'canvas',
                        showNavigationControl: false, maxZoomPixelRatio: 8,
                        animationTime: 0, immediateRender: true,
                    });
                    window.viewer.addHandler('tile-loaded', () => { window.tilesLoaded++; });
                    window.viewer.addHandler('tile-load-failed', () => { window.tileErrors++; });
                }""",
                f"/previews/{big['id']}.dzi",
            )
            wait_until(lambda: page.evaluate("window.tilesLoaded") >= 4, timeout=20)
            wait_until(lambda: page.evaluate("window.viewer.world.getItemCount()") == 1)
            item = json.loads(
                page.evaluate("JSON.stringify(window.viewer.world.getItemAt(0).getContentSize())")
            )
            assert item == {"x": 1300, "y": 1100}
            wait_until(
                lambda: page.evaluate(
                    """(() => {
                        const c = window.viewer.drawer.canvas;
                        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                        let lit = 0;
                        for (let i = 0; i < d.length; i += 4) if (d[i] > 40) lit++;
                        return lit > (c.width * c.height) / 10;
                    })()"""
                ),
                timeout=20,
            )
            assert page.evaluate("window.tileErrors") == 0
            assert errors == []
        finally:
            browser.close()
