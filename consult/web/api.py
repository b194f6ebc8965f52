"""The JSON API under ``/api/``: the same operations as the pages, for programs.

Authentication is the same server-side session: ``POST /api/session`` sets the cookie and
returns the CSRF token, which every state-changing call sends as ``X-CSRF-Token``. Bodies
are JSON objects (``application/json``); errors are ``{"error": message}``. The OpenAPI
document (``/api/openapi.json``) lists every route here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from consult import consultations, studies
from consult.access.auth import Session
from consult.access.directory import list_hospitals
from consult.consultations import actions, opinions
from consult.consultations.model import Consultation
from consult.consultations.opinions import Opinion
from consult.errors import BadRequest
from consult.web.context import Ctx, Handler
from consult.web.login_pages import clear_session_cookie, set_session_cookie, sign_in, sign_out


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _str(ctx: Ctx, name: str, *, required: bool = True, default: str = "") -> str:
    value = ctx.body.get(name, None)
    if value is None:
        if required:
            raise BadRequest(f"field {name!r} is required")
        return default
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string")
    return value


def _session_json(session: Session) -> dict[str, Any]:
    return {
        "username": session.user.username,
        "display_name": session.user.display_name,
        "role": session.user.role.value,
        "hospital": session.hospital_name,
        "csrf_token": session.csrf_token,
    }


def login(ctx: Ctx) -> Response:
    token, session = sign_in(ctx, _str(ctx, "username"), _str(ctx, "password"))
    response = JSONResponse(_session_json(session))
    set_session_cookie(response, token, ctx.services)
    return response


def whoami(ctx: Ctx) -> Response:
    assert ctx.session is not None
    return JSONResponse(_session_json(ctx.session))


def logout(ctx: Ctx) -> Response:
    sign_out(ctx)
    response = Response(status_code=204)
    clear_session_cookie(response, ctx.services)
    return response


def hospitals(ctx: Ctx) -> Response:
    with ctx.services.catalog.read() as conn:
        found = list_hospitals(conn)
    return JSONResponse(
        {"hospitals": [{"id": h.id, "name": h.name} for h in found]},
    )


def _summary(s: studies.StudySummary) -> dict[str, Any]:
    return {
        "study_uid": s.study_uid,
        "hospital": s.hospital_name,
        "patient_name": s.patient_name,
        "patient_id": s.patient_id,
        "issuer_of_patient_id": s.issuer,
        "birth_date": s.birth_date,
        "sex": s.sex,
        "study_date": s.study_date,
        "study_time": s.study_time,
        "description": s.description,
        "accession_number": s.accession_number,
        "modalities": s.modalities,
        "series_count": s.series_count,
        "instance_count": s.instance_count,
        "first_received_at": _time(s.first_received_at),
        "last_received_at": _time(s.last_received_at),
        "stable": s.stable,
    }


def list_studies(ctx: Ctx) -> Response:
    stable_seconds = ctx.services.settings.stable_seconds
    found = studies.list_audited(ctx.services.catalog, ctx.caller, stable_seconds=stable_seconds)
    return JSONResponse({"studies": [_summary(s) for s in found]})


def _series(ctx: Ctx, detail: studies.StudyDetail) -> list[dict[str, Any]]:
    return [
        {
            "series_uid": s.series_uid,
            "modality": s.modality,
            "series_number": s.series_number,
            "description": s.description,
            "instances": [
                {
                    "sop_instance_uid": i.sop_instance_uid,
                    "sop_class_uid": i.sop_class_uid,
                    "instance_number": i.instance_number,
                    "version": i.version,
                    "sha256": i.sha256,
                    "size": i.size,
                    "frames": i.frames,
                    "versions": [
                        {
                            "version": v.version,
                            "sha256": v.sha256,
                            "size": v.size,
                            "transfer_syntax_uid": v.transfer_syntax_uid,
                            "calling_ae": v.calling_ae,
                            "received_at": _time(v.received_at),
                        }
                        for v in i.versions
                    ],
                    "previews": [
                        {
                            "id": p.id,
                            "frame": p.frame,
                            "status": p.status.value,
                            "width": p.width,
                            "height": p.height,
                            "url": ctx.url("preview", preview_id=p.id),
                        }
                        for p in i.previews
                    ],
                }
                for i in s.instances
            ],
        }
        for s in detail.series
    ]


def get_study(ctx: Ctx) -> Response:
    ref = ctx.study()
    with ctx.services.catalog.read() as conn:
        detail = studies.study_detail(
            conn, ref.pk, stable_seconds=ctx.services.settings.stable_seconds
        )
    return JSONResponse({**_summary(detail.summary), "series": _series(ctx, detail)})


def _consultation(c: Consultation) -> dict[str, Any]:
    return {
        "id": c.id,
        "study_uid": c.study_uid,
        "patient_name": c.patient_name,
        "patient_id": c.patient_id,
        "study_date": c.study_date,
        "study_description": c.study_description,
        "requesting_hospital": c.requesting_hospital,
        "requested_by": c.requested_by,
        "target_hospital": c.target_hospital,
        "question": c.question,
        "urgency": c.urgency.value,
        "status": c.status.value,
        "accepted_by": c.accepted_by,
        "created_at": _time(c.created_at),
        "updated_at": _time(c.updated_at),
    }


def _opinion(o: Opinion | None, deliveries: list[opinions.Delivery]) -> dict[str, Any] | None:
    if o is None:
        return None
    return {
        "id": o.id,
        "author": o.author,
        "body": o.body,
        "status": o.status.value,
        "signed_by": o.signed_by,
        "signed_at": _time(o.signed_at),
        "sha256": o.sha256,
        "updated_at": _time(o.updated_at),
        "deliveries": [
            {
                "peer": f"{d.peer_ae_title}@{d.peer_host}:{d.peer_port}",
                "status": d.status.value,
                "dicom_status": d.dicom_status,
                "detail": d.detail,
                "updated_at": _time(d.updated_at),
            }
            for d in deliveries
        ],
    }


def list_consultations(ctx: Ctx) -> Response:
    user = ctx.user
    found = consultations.list_audited(ctx.services.catalog, ctx.actor, user)
    return JSONResponse({"consultations": [_consultation(c) for c in found]})


def _full(view: actions.View, *, status_code: int = 200) -> Response:
    data = _consultation(view.consultation)
    data["messages"] = [
        {
            "id": m.id,
            "author": m.author,
            "hospital": m.author_hospital,
            "body": m.body,
            "created_at": _time(m.created_at),
        }
        for m in view.thread
    ]
    data["opinion"] = _opinion(view.opinion, view.deliveries)
    return JSONResponse(data, status_code=status_code)


def get_consultation(ctx: Ctx) -> Response:
    return _full(actions.view(ctx.services.catalog, ctx.caller, ctx.int_param("consultation_id")))


def create_consultation(ctx: Ctx) -> Response:
    study_uid = _str(ctx, "study_uid")
    target = ctx.body.get("target_hospital_id")
    if not isinstance(target, int) or isinstance(target, bool):
        raise BadRequest("field 'target_hospital_id' must be an integer")
    all_sent = ctx.body.get("all_sent", False)
    if not isinstance(all_sent, bool):
        raise BadRequest("field 'all_sent' must be true or false")
    catalog = ctx.services.catalog
    new_id = actions.request(
        catalog,
        ctx.caller,
        study_uid,
        target_hospital_id=target,
        question=_str(ctx, "question"),
        urgency=_str(ctx, "urgency", required=False, default=consultations.Urgency.ROUTINE.value),
        all_sent=all_sent,
        stable_seconds=ctx.services.settings.stable_seconds,
    )
    return _full(actions.view(catalog, ctx.caller, new_id), status_code=201)


def _acting(
    operation: actions.Operation, *, required: bool = True, status_code: int = 200
) -> Handler:
    """The API handler of ``operation``: its text is the body's ``"body"`` field (which may
    be left out unless ``required``); answers the consultation as it now stands."""

    def handler(ctx: Ctx) -> Response:
        cid = ctx.int_param("consultation_id")
        text = None
        if operation in actions.TAKES_TEXT and (required or "body" in ctx.body):
            text = _str(ctx, "body")
        catalog = ctx.services.catalog
        ref = actions.perform(catalog, ctx.caller, cid, operation, text)
        return _full(actions.view(catalog, ctx.caller, cid, study=ref), status_code=status_code)

    handler.__name__ = operation.name.lower()
    return handler


accept = _acting(actions.Operation.ACCEPT)
decline = _acting(actions.Operation.DECLINE)
close = _acting(actions.Operation.CLOSE)
post_message = _acting(actions.Operation.POST, status_code=201)
save_opinion = _acting(actions.Operation.SAVE_OPINION)
sign_opinion = _acting(actions.Operation.SIGN_OPINION, required=False)
