"""Stored means reachable: a UID that ingest stores is a UID every route serves, and a UID
ingest refuses is refused by every route (404).

One rule decides both (:mod:`consult.dicom.identifiers`). Before it, ingest accepted letters
in UIDs (real equipment sends hexadecimal components) while the web took digits and dots
only: such a study was stored, indexed and acknowledged, and then nobody could open it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, generate_uid
from sqlalchemy import func, select
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from consult.catalog.tables import instances, opinions, series, studies
from consult.dicom.synthetic import demo_study, write_part10
from consult.receiver import Receiver
from consult.services import Services
from consult.settings import Settings
from consult.web.app import create_app
from storage.keys import export_key
from tests.support import storescu
from tests.web_world import World, build_world

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(settings: Settings, database_url: str) -> Iterator[World]:
    opened = Services.open(settings.model_copy(update={"database_url": database_url}))
    try:
        yield build_world(opened, with_study=False)
    finally:
        opened.close()


@pytest.fixture
def receiver(world: World) -> Iterator[int]:
    rx = Receiver(world.services)
    port = rx.start()
    yield port
    rx.stop()


def _instance(study_uid: str, series_uid: str, sop_uid: str) -> tuple[Dataset, str]:
    ds, ts = demo_study()[0]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, sop_uid
    return ds, ts


# --- (a) UIDs that ingest accepts, although PS3.5 allows digits and dots only -------------

ROOT = "1.2.826.0.1.3680043.8.498"  # pydicom's UID root

# fmt: off
ACCEPTED: list[tuple[str, str, str, str]] = [
    # what,                        study,                  series,           SOP instance
    ("hexadecimal components",     f"{ROOT}.1a2b3c4d5e6f", f"{ROOT}.ff00.2", f"{ROOT}.ee11.3f"),
    ("a letter after digits",      "1.2.3a",               "1.2.3a.1",       "1.2.3a.1.1"),
    ("upper case, leading zeros",  "1.2.840.0012.3ABC",    "1.2.840.0012.4", "1.2.840.0012.4.01"),
    ("_ - + inside components",    "1.2.3_4-5+6",          "1.2.3_4-5+6.1",  "1.2.3_4-5+6.1.1"),
]
# fmt: on

# Every route that takes a UID or shows the study, by name: (route, parameters, status).
# "{...}" values are filled in from what was stored.
ROUTES: list[tuple[str, dict[str, str], int]] = [
    ("home", {}, 200),
    ("study", {"study_uid": "{study}"}, 200),
    ("api_study", {"study_uid": "{study}"}, 200),
    ("series_thumbnail", {"series_uid": "{series}"}, 200),
    ("preview", {"preview_id": "{preview}"}, 200),
    ("preview_info", {"preview_id": "{preview}"}, 200),
    ("preview_dzi", {"preview_id": "{preview}"}, 200),
    ("preview_thumbnail", {"preview_id": "{preview}"}, 200),
    (
        "preview_tile",
        {"preview_id": "{preview}", "level": "{level}", "col": "0", "row": "0", "ext": "{ext}"},
        200,
    ),
]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(
    ("what", "study_uid", "series_uid", "sop_uid"), ACCEPTED, ids=[a[0] for a in ACCEPTED]
)
def test_a_study_ingest_stores_is_reachable_through_every_route(
    world: World,
    receiver: int,
    tmp_path: Path,
    what: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
) -> None:
    path = tmp_path / "instance.dcm"
    write_part10(*_instance(study_uid, series_uid, sop_uid), path)
    sent = storescu(receiver, path, aet="NORTH_PACS")
    assert sent.returncode == 0, sent.stdout + sent.stderr  # C-STORE Success
    with world.services.catalog.read() as conn:
        stored = conn.execute(
            select(studies.c.study_uid, series.c.series_uid, instances.c.sop_instance_uid)
            .join(series, series.c.study_pk == studies.c.id)
            .join(instances, instances.c.series_pk == series.c.id)
        ).one()
    assert tuple(stored) == (study_uid, series_uid, sop_uid)
    assert world.run_jobs() == 1  # the preview job
    world.study_uid = study_uid

    with world.client("ref_north") as client:
        detail = client.get(f"/api/studies/{study_uid}").json()
        [instance] = detail["series"][0]["instances"]
        assert instance["sop_instance_uid"] == sop_uid
        [preview] = instance["previews"]
        info = client.get(f"/previews/{preview['id']}.json").json()
        values = {
            "study": study_uid,
            "series": series_uid,
            "preview": str(preview["id"]),
            "level": str(info["levels"] - 1),
            "ext": info["format"],
        }
        for name, template, status in ROUTES:
            params = {k: v.format(**values) for k, v in template.items()}
            url = client.app.url_path_for(name, **params)  # type: ignore[attr-defined]
            response = client.get(url)
            assert response.status_code == status, f"{name} {url}: {response.text[:200]}"
        home = client.get("/").text
        assert f'href="/studies/{study_uid}"' in home
        page = client.get(f"/studies/{study_uid}").text
        assert f'src="/series/{series_uid}/thumbnail"' in page

        cid = _request_consultation(client, world, study_uid)
    _answer(world, cid, study_uid)


def _request_consultation(client: TestClient, world: World, study_uid: str) -> int:
    """One through the page's form (to South, whose id is returned), one through the API."""
    form = client.post(
        f"/studies/{study_uid}/consultations",
        data={
            "target_hospital": str(world.hospitals["south"].id),
            "question": "Fracture?",
            "urgency": "urgent",
        },
    )
    assert form.status_code == 303, form.text
    created = client.post(
        "/api/consultations",
        json={
            "study_uid": study_uid,
            "target_hospital_id": world.hospitals["east"].id,
            "question": "And you?",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["study_uid"] == study_uid
    return int(form.headers["location"].rsplit("/", 1)[1])


def _answer(world: World, cid: int, study_uid: str) -> None:
    """The specialist opens the study through the consultation and signs an opinion; the
    SR built for the referring PACS is in the study."""
    with world.client("spec_south") as client:
        assert client.get(f"/studies/{study_uid}").status_code == 200
        assert client.get(f"/api/studies/{study_uid}").status_code == 200
        assert client.post(f"/api/consultations/{cid}/accept").status_code == 200
        saved = client.put(f"/api/consultations/{cid}/opinion", json={"body": "No fracture."})
        assert saved.status_code == 200, saved.text
        signed = client.post(f"/api/consultations/{cid}/opinion/sign", json={})
        assert signed.status_code == 200, signed.text
    world.run_jobs()  # the delivery: the SR is built and kept before it is sent
    with world.services.catalog.read() as conn:
        sr_uid = conn.execute(select(opinions.c.sr_sop_instance_uid)).scalar_one()
    sr = dcmread(io.BytesIO(world.services.store.get(export_key(sr_uid))))
    assert sr.StudyInstanceUID == study_uid


# --- (b) UIDs that ingest refuses: refused by every route too ------------------------------

# fmt: off
REFUSED: list[tuple[str, str, str]] = [
    # what,                     attribute,            value
    ("parent folder",           "StudyInstanceUID",   ".."),
    ("current folder",          "StudyInstanceUID",   "."),
    ("a path",                  "StudyInstanceUID",   "../../etc/passwd"),
    ("a slash",                 "SeriesInstanceUID",  "1.2/3"),
    ("a backslash",             "StudyInstanceUID",   "1.2\\3"),
    ("a space",                 "StudyInstanceUID",   "1.2 3"),
    ("a control character",     "SeriesInstanceUID",  "1.2.\x01"),
    ("a NUL inside",            "StudyInstanceUID",   "1.2\x003"),
    ("a line break",            "SOPInstanceUID",     "1.2\n3"),
    ("percent-encoded dots",    "StudyInstanceUID",   "%2e%2e"),
    ("a query",                 "StudyInstanceUID",   "1.2?x=1"),
    ("a fragment",              "SeriesInstanceUID",  "1.2#3"),
    ("non-ASCII",               "StudyInstanceUID",   "1.2.3é"),
    ("65 characters",           "StudyInstanceUID",   "1" * 65),
]
# fmt: on


def _store_raw(port: int, ds: Dataset, ts: str) -> int:
    """C-STORE with pynetdicom, which sends what storescu would repair (it drops spaces from
    UIDs) and reads the exact status back."""
    from pynetdicom import AE

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    ae = AE(ae_title="NORTH_PACS")
    ae.add_requested_context(ds.SOPClassUID, ts)
    assoc = ae.associate("127.0.0.1", port, ae_title="CONSULT")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return int(status.Status)


def _percent_encoded(text: str) -> str:
    """Every byte percent-encoded, so that nothing on the way normalises it (``..``)."""
    return "".join(f"%{b:02X}" for b in text.encode("utf-8"))


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
@pytest.mark.parametrize(("what", "attribute", "value"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_uid_ingest_refuses_is_refused_by_every_route(
    world: World, receiver: int, what: str, attribute: str, value: str
) -> None:
    ds, ts = _instance(generate_uid(), generate_uid(), generate_uid())
    setattr(ds, attribute, value)
    assert _store_raw(receiver, ds, ts) == 0xC003
    with world.services.catalog.read() as conn:
        assert conn.execute(select(func.count()).select_from(instances)).scalar_one() == 0
    assert list(world.services.store.list()) == []

    raw = _percent_encoded(value)
    with world.client("ref_north") as client:
        answers = {
            name: client.request(method, path.format(raw=raw), data=form)
            for name, method, path, form in UID_ROUTES
        }
        answers["api_consultation_create"] = client.post(
            "/api/consultations",
            json={"study_uid": value, "target_hospital_id": 1, "question": "?"},
        )
    wrong = {k: (r.status_code, r.text[:100]) for k, r in answers.items() if r.status_code != 404}
    assert not wrong, wrong


# Routes with a UID in the path: (name, method, path, form).
FORM = {"target_hospital": "1", "question": "?"}
UID_ROUTES: list[tuple[str, str, str, dict[str, str] | None]] = [
    ("study", "GET", "/studies/{raw}", None),
    ("request_consultation", "POST", "/studies/{raw}/consultations", FORM),
    ("api_study", "GET", "/api/studies/{raw}", None),
    ("series_thumbnail", "GET", "/series/{raw}/thumbnail", None),
]


def _paths(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _paths(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield route.name, prefix + route.path


def test_the_route_table_holds_every_route_with_a_uid(world: World) -> None:
    with_uid = {name for name, path in _paths(create_app(world.services).routes) if "_uid}" in path}
    assert with_uid == {name for name, *_ in UID_ROUTES}
