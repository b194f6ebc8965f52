"""The JSON API: its OpenAPI document, study details, errors as JSON, CSRF header."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence

import pytest
from starlette.routing import BaseRoute, Mount, Route

from consult.access.directory import Role
from consult.consultations.model import ConsultationStatus, Urgency
from consult.consultations.opinions import DeliveryStatus, OpinionStatus
from consult.previews import PreviewStatus
from consult.services import Services
from consult.settings import Settings
from consult.web import openapi
from consult.web.app import create_app
from tests.support import sample
from tests.web_world import MR, World, build_world


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    opened = Services.open(settings)
    yield opened
    opened.close()


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


def test_openapi_lists_every_api_route(world: World, services: Services) -> None:
    with world.client() as client:
        response = client.get("/api/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    app_routes: set[tuple[str, str]] = set()

    def collect(routes: Sequence[BaseRoute], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                collect(route.routes, prefix + route.path)
            elif isinstance(route, Route) and (prefix + route.path).startswith("/api/"):
                path = (prefix + route.path).replace(":int}", "}")
                for method in route.methods or set():
                    if method != "HEAD":
                        app_routes.add((path, method.lower()))

    collect(create_app(services).routes, "")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert app_routes == documented
    assert ("/api/studies/{study_uid}", "get") in documented
    # Every $ref points at a schema that exists.
    schemas = doc["components"]["schemas"]
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.append(ref.rsplit("/", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs and set(refs) <= set(schemas)


# Every enumeration of the OpenAPI document: (schema, property, the enum it serialises).
OPENAPI_ENUMS: list[tuple[str, str, type[enum.StrEnum]]] = [
    ("Session", "role", Role),
    ("Preview", "status", PreviewStatus),
    ("NewConsultation", "urgency", Urgency),
    ("ConsultationSummary", "urgency", Urgency),
    ("ConsultationSummary", "status", ConsultationStatus),
    ("Delivery", "status", DeliveryStatus),
    ("Opinion", "status", OpinionStatus),
]


def test_openapi_enumerations_are_the_enums_values() -> None:
    schemas = openapi.document()["components"]["schemas"]
    found = {
        (name, prop): spec["enum"]
        for name, schema in schemas.items()
        for prop, spec in schema.get("properties", {}).items()
        if "enum" in spec
    }
    expected = {(name, prop): [m.value for m in kind] for name, prop, kind in OPENAPI_ENUMS}
    assert found == expected


def test_study_detail(world: World) -> None:
    extra = world.ingest(sample(MR))
    world.run_jobs()
    stored = world.stored[0]
    with world.client("ref_north") as client:
        listed = client.get("/api/studies").json()["studies"]
        detail = client.get(f"/api/studies/{world.study_uid}").json()
        assert {s["study_uid"] for s in listed} == {world.study_uid, extra.study_uid}
        [series] = detail["series"]
        assert series["series_uid"] == stored.series_uid
        assert series["modality"] == "CT"
        [instance] = series["instances"]
        assert instance["sop_instance_uid"] == stored.sop_instance_uid
        assert instance["version"] == 1
        assert instance["sha256"] == stored.sha256
        assert instance["size"] > 30_000
        assert [v["sha256"] for v in instance["versions"]] == [stored.sha256]
        [preview] = instance["previews"]
        assert preview["status"] == "ready" and preview["frame"] == 0
        assert preview["url"] == f"/previews/{preview['id']}"
        image = client.get(preview["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert detail["patient_id"] == "1CT1"
    assert detail["instance_count"] == 1
    assert detail["stable"] is True


def test_api_errors_are_json(world: World) -> None:
    with world.client() as anonymous:
        response = anonymous.get("/api/studies")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/json"
        assert anonymous.post("/api/consultations", json={}).status_code == 401
        assert anonymous.get("/api/openapi.json").status_code == 200
    with world.client("ref_north") as client:
        token = client.headers.pop("X-CSRF-Token")
        refused = client.post("/api/consultations", json={"study_uid": world.study_uid})
        assert refused.status_code == 403
        headers = {"X-CSRF-Token": token}
        bad_json = client.post(
            "/api/consultations",
            content=b"{not json",
            headers={**headers, "Content-Type": "application/json"},
        )
        assert bad_json.json() == {"error": "request body is not valid JSON"}
        not_object = client.post("/api/consultations", json=[1, 2], headers=headers)
        assert not_object.json() == {"error": "request body must be a JSON object"}
        missing = client.post("/api/consultations", json={}, headers=headers)
        assert missing.status_code == 400
        assert missing.json() == {"error": "field 'study_uid' is required"}
        assert client.get("/api/consultations/12345").json() == {"error": "consultation not found"}


def test_hospitals_for_the_request_form(world: World) -> None:
    with world.client("ref_north") as client:
        hospitals = client.get("/api/hospitals").json()["hospitals"]
    assert [h["name"] for h in hospitals] == [
        "East Unrelated Hospital",
        "North Referring Hospital",
        "South Specialist Hospital",
    ]


def test_api_responses_carry_security_headers(world: World) -> None:
    with world.client("ref_north") as client:
        response = client.get("/api/studies")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in response.headers["content-security-policy"]
