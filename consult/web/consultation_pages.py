"""HTML pages of consultations: the inbox, one consultation, and its actions.

Each action re-checks access to the consultation (404 for outsiders, audited) and then
runs the state change with its own audit event through :meth:`Ctx.perform`; the domain
functions in :mod:`consult.consultations.lifecycle` and :mod:`consult.consultations.opinions`
decide who may do what (403) and when (409).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection
from starlette.responses import Response

from consult import access, consultations, studies
from consult.access.directory import Role
from consult.consultations import opinions
from consult.consultations.lifecycle import ConsultationStatus
from consult.consultations.opinions import OpinionStatus
from consult.web.context import Ctx, form_text
from consult.web.templating import render


def inbox(ctx: Ctx) -> Response:
    user = ctx.user
    found = consultations.list_audited(ctx.services.catalog, ctx.actor, user)
    return render(
        ctx.request, "consultations.html", {"session": ctx.session, "consultations": found}
    )


def _check(ctx: Ctx) -> tuple[int, access.StudyRef]:
    cid = ctx.int_param("consultation_id")
    ref = access.require_consultation(
        ctx.services.catalog, ctx.user, cid, action="consultation.read", client=ctx.client
    )
    return cid, ref


def consultation_page(ctx: Ctx) -> Response:
    user = ctx.user
    cid, ref = _check(ctx)
    with ctx.services.catalog.read() as conn:
        c = consultations.get(conn, cid)
        thread = consultations.thread(conn, cid)
        opinion = opinions.visible_to(user, opinions.get(conn, cid))
        signed = opinion is not None and opinion.status is OpinionStatus.SIGNED
        deliveries = opinions.delivery_status(conn, opinion.id) if opinion and signed else []
        detail = studies.study_detail(
            conn, ref.pk, stable_seconds=ctx.services.settings.stable_seconds
        )
    is_target_specialist = user.role is Role.SPECIALIST and user.hospital_id == c.target_hospital_id
    return render(
        ctx.request,
        "consultation.html",
        {
            "session": ctx.session,
            "c": c,
            "study": detail.summary,
            "series": detail.series,
            "thread": thread,
            "opinion": opinion,
            "signed": signed,
            "deliveries": deliveries,
            "can_accept": is_target_specialist and c.status is ConsultationStatus.REQUESTED,
            "can_post": consultations.can_post(user, c),
            "can_write_opinion": (
                c.status is ConsultationStatus.ACCEPTED
                and c.accepted_by_id == user.id
                and not signed
            ),
            "can_close": (
                c.status is ConsultationStatus.ANSWERED
                and user.hospital_id == c.requesting_hospital_id
                and user.role is not Role.SPECIALIST
            ),
        },
    )


def _act(
    ctx: Ctx, action: str, fn: Callable[[Connection, int], object], *, anchor: str = ""
) -> Response:
    cid, _ref = _check(ctx)
    ctx.perform(
        lambda conn: fn(conn, cid),
        action=action,
        object_type="consultation",
        object_id=str(cid),
    )
    return ctx.redirect("consultation", consultation_id=cid, anchor=anchor)


def accept(ctx: Ctx) -> Response:
    return _act(
        ctx, "consultation.accept", lambda conn, cid: consultations.accept(conn, ctx.user, cid)
    )


def decline(ctx: Ctx) -> Response:
    return _act(
        ctx, "consultation.decline", lambda conn, cid: consultations.decline(conn, ctx.user, cid)
    )


def close(ctx: Ctx) -> Response:
    return _act(
        ctx, "consultation.close", lambda conn, cid: consultations.close(conn, ctx.user, cid)
    )


def post_message(ctx: Ctx) -> Response:
    body = form_text(ctx.form.get("body", ""))
    return _act(
        ctx,
        "message.post",
        lambda conn, cid: consultations.post_message(conn, ctx.user, cid, body),
        anchor="thread",
    )


def save_opinion(ctx: Ctx) -> Response:
    body = form_text(ctx.form.get("opinion_body", ""))
    return _act(
        ctx,
        "opinion.save",
        lambda conn, cid: opinions.save_draft(conn, ctx.user, cid, body),
        anchor="opinion",
    )


def sign_opinion(ctx: Ctx) -> Response:
    raw = ctx.form.get("opinion_body")
    body = None if raw is None else form_text(raw)
    return _act(
        ctx,
        "opinion.sign",
        lambda conn, cid: opinions.sign(conn, ctx.user, cid, body),
        anchor="opinion",
    )
