"""The OpenAPI 3.1 document of the JSON API, built by hand (a test checks it lists every
``/api/`` route of the app with its methods). Enumerations are generated from the enums
the API serialises, so they cannot drift."""

from __future__ import annotations

import enum
from typing import Any

from starlette.responses import JSONResponse, Response

from consult import __version__
from consult.access.directory import Role
from consult.consultations.model import ConsultationStatus, Urgency
from consult.consultations.opinions import DeliveryStatus, OpinionStatus
from consult.previews import PreviewStatus
from consult.web.context import Ctx


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _enum(values: type[enum.StrEnum]) -> dict[str, Any]:
    return {"type": "string", "enum": [v.value for v in values]}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
TIME = {"type": ["string", "null"], "format": "date-time"}
NSTR = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], error=STR),
    "Login": _obj(["username", "password"], username=STR, password=STR),
    "Session": _obj(
        ["username", "role", "hospital", "csrf_token"],
        username=STR,
        display_name=STR,
        role=_enum(Role),
        hospital=STR,
        csrf_token=STR,
    ),
    "Hospitals": _obj(
        ["hospitals"], hospitals={"type": "array", "items": _obj(["id", "name"], id=INT, name=STR)}
    ),
    "StudySummary": _obj(
        ["study_uid", "patient_name", "patient_id", "instance_count", "stable"],
        study_uid=STR,
        hospital=STR,
        patient_name=STR,
        patient_id=STR,
        issuer_of_patient_id=STR,
        birth_date=STR,
        sex=STR,
        study_date=STR,
        study_time=STR,
        description=STR,
        accession_number=STR,
        modalities={"type": "array", "items": STR},
        series_count=INT,
        instance_count=INT,
        first_received_at=TIME,
        last_received_at=TIME,
        stable=BOOL,
    ),
    "Studies": _obj(["studies"], studies={"type": "array", "items": _ref("StudySummary")}),
    "Preview": _obj(
        ["id", "frame", "status", "url"],
        id=INT,
        frame=INT,
        status=_enum(PreviewStatus),
        width={"type": ["integer", "null"]},
        height={"type": ["integer", "null"]},
        url=STR,
    ),
    "Version": _obj(
        ["version", "sha256", "size"],
        version=INT,
        sha256=STR,
        size=INT,
        transfer_syntax_uid=STR,
        calling_ae=STR,
        received_at=TIME,
    ),
    "Instance": _obj(
        ["sop_instance_uid", "version", "sha256", "size", "previews"],
        sop_instance_uid=STR,
        sop_class_uid=STR,
        instance_number=STR,
        version=INT,
        sha256=STR,
        size=INT,
        frames=INT,
        versions={"type": "array", "items": _ref("Version")},
        previews={"type": "array", "items": _ref("Preview")},
    ),
    "Series": _obj(
        ["series_uid", "instances"],
        series_uid=STR,
        modality=STR,
        series_number=STR,
        description=STR,
        instances={"type": "array", "items": _ref("Instance")},
    ),
    "StudyDetail": {
        "allOf": [
            _ref("StudySummary"),
            _obj(["series"], series={"type": "array", "items": _ref("Series")}),
        ]
    },
    "NewConsultation": _obj(
        ["study_uid", "target_hospital_id", "question"],
        study_uid=STR,
        target_hospital_id=INT,
        question=STR,
        urgency=_enum(Urgency),
        all_sent={**BOOL, "description": "confirm every image was sent (study not stable yet)"},
    ),
    "ConsultationSummary": _obj(
        ["id", "study_uid", "status", "urgency", "question"],
        id=INT,
        study_uid=STR,
        patient_name=STR,
        patient_id=STR,
        study_date=STR,
        study_description=STR,
        requesting_hospital=STR,
        requested_by=STR,
        target_hospital=STR,
        question=STR,
        urgency=_enum(Urgency),
        status=_enum(ConsultationStatus),
        accepted_by=NSTR,
        created_at=TIME,
        updated_at=TIME,
    ),
    "Consultations": _obj(
        ["consultations"], consultations={"type": "array", "items": _ref("ConsultationSummary")}
    ),
    "Message": _obj(
        ["id", "author", "body", "created_at"],
        id=INT,
        author=STR,
        hospital=STR,
        body=STR,
        created_at=TIME,
    ),
    "NewMessage": _obj(["body"], body=STR),
    "Delivery": _obj(
        ["peer", "status"],
        peer=STR,
        status=_enum(DeliveryStatus),
        dicom_status={"type": ["integer", "null"]},
        detail=NSTR,
        updated_at=TIME,
    ),
    "Opinion": _obj(
        ["id", "body", "status"],
        id=INT,
        author=STR,
        body=STR,
        status=_enum(OpinionStatus),
        signed_by=NSTR,
        signed_at=TIME,
        sha256={**NSTR, "description": "SHA-256 of the exact UTF-8 text, set when signed"},
        updated_at=TIME,
        deliveries={"type": "array", "items": _ref("Delivery")},
    ),
    "OpinionText": _obj(["body"], body=STR),
    "SignOpinion": _obj([], body={**STR, "description": "final text; default: the draft"}),
    "Consultation": {
        "allOf": [
            _ref("ConsultationSummary"),
            _obj(
                ["messages", "opinion"],
                messages={"type": "array", "items": _ref("Message")},
                opinion={"oneOf": [_ref("Opinion"), {"type": "null"}]},
            ),
        ]
    },
}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(schema)}}}


def _op(
    summary: str,
    *,
    ok: str | None,
    status: str = "200",
    body: str | None = None,
    params: list[str] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        status: {"description": summary, **(_json(ok) if ok else {})},
        "default": {"description": "error", **_json("Error")},
    }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = [
            {
                "name": p,
                "in": "path",
                "required": True,
                "schema": INT if p.endswith("_id") else STR,
            }
            for p in params
        ]
    if not auth:
        op["security"] = []
    return op


CID = ["consultation_id"]

PATHS: dict[str, dict[str, Any]] = {
    "/api/openapi.json": {"get": _op("This document", ok=None, auth=False)},
    "/api/session": {
        "post": _op("Log in; sets the session cookie", ok="Session", body="Login", auth=False),
        "get": _op("The current session", ok="Session"),
        "delete": _op("Log out", ok=None, status="204"),
    },
    "/api/hospitals": {"get": _op("Hospitals (targets of consultations)", ok="Hospitals")},
    "/api/studies": {"get": _op("Studies visible to the user's hospital", ok="Studies")},
    "/api/studies/{study_uid}": {
        "get": _op(
            "A study with series, instances, versions and previews",
            ok="StudyDetail",
            params=["study_uid"],
        ),
    },
    "/api/consultations": {
        "get": _op("The user's consultations (inbox)", ok="Consultations"),
        "post": _op(
            "Request a consultation", ok="Consultation", status="201", body="NewConsultation"
        ),
    },
    "/api/consultations/{consultation_id}": {
        "get": _op("A consultation with its thread and opinion", ok="Consultation", params=CID),
    },
    "/api/consultations/{consultation_id}/accept": {
        "post": _op("Accept (specialist of the target hospital)", ok="Consultation", params=CID),
    },
    "/api/consultations/{consultation_id}/decline": {
        "post": _op("Decline (specialist of the target hospital)", ok="Consultation", params=CID),
    },
    "/api/consultations/{consultation_id}/close": {
        "post": _op(
            "Close an answered consultation (requesting hospital)", ok="Consultation", params=CID
        ),
    },
    "/api/consultations/{consultation_id}/messages": {
        "post": _op(
            "Post a message to the thread",
            ok="Consultation",
            status="201",
            body="NewMessage",
            params=CID,
        ),
    },
    "/api/consultations/{consultation_id}/opinion": {
        "put": _op("Save the opinion draft", ok="Consultation", body="OpinionText", params=CID),
    },
    "/api/consultations/{consultation_id}/opinion/sign": {
        "post": _op(
            "Sign the opinion (immutable afterwards)",
            ok="Consultation",
            body="SignOpinion",
            params=CID,
        ),
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "consult",
            "version": __version__,
            "description": (
                "Second-opinion consultations between hospitals. Log in with POST "
                "/api/session; send the returned csrf_token as X-CSRF-Token on every "
                "state-changing call."
            ),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "consult_session"},
            },
        },
        "security": [{"session": []}],
        "paths": PATHS,
    }


def openapi(ctx: Ctx) -> Response:
    return JSONResponse(document(), headers={"Cache-Control": "no-cache"})
