"""HTML pages of consultations: the inbox, one consultation, and its actions.

Each action is :mod:`consult.consultations.actions`' (the access check, the change and its
audit event); here the form is read and the outcome shown.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from consult import consultations, studies
from consult.consultations import actions
from consult.web.context import Ctx, form_text
from consult.web.templating import render


def inbox(ctx: Ctx) -> Response:
    found = consultations.list_audited(ctx.services.catalog, ctx.actor, ctx.user)
    return render(
        ctx.request, "consultations.html", {"session": ctx.session, "consultations": found}
    )


def consultation_page(ctx: Ctx) -> Response:
    view = actions.view(ctx.services.catalog, ctx.caller, ctx.int_param("consultation_id"))
    with ctx.services.catalog.read() as conn:
        detail = studies.study_detail(
            conn, view.study.pk, stable_seconds=ctx.services.settings.stable_seconds
        )
    return render(
        ctx.request,
        "consultation.html",
        {
            "session": ctx.session,
            "c": view.consultation,
            "study": detail.summary,
            "series": detail.series,
            "thread": view.thread,
            "opinion": view.opinion,
            "signed": view.signed,
            "deliveries": view.deliveries,
            "allowed": view.allowed,
        },
    )


def _act(ctx: Ctx, action: Callable[[int], object], *, anchor: str = "") -> Response:
    cid = ctx.int_param("consultation_id")
    action(cid)
    return ctx.redirect("consultation", consultation_id=cid, anchor=anchor)


def accept(ctx: Ctx) -> Response:
    return _act(ctx, lambda cid: actions.accept(ctx.services.catalog, ctx.caller, cid))


def decline(ctx: Ctx) -> Response:
    return _act(ctx, lambda cid: actions.decline(ctx.services.catalog, ctx.caller, cid))


def close(ctx: Ctx) -> Response:
    return _act(ctx, lambda cid: actions.close(ctx.services.catalog, ctx.caller, cid))


def post_message(ctx: Ctx) -> Response:
    body = form_text(ctx.form.get("body", ""))
    return _act(
        ctx,
        lambda cid: actions.post_message(ctx.services.catalog, ctx.caller, cid, body),
        anchor="thread",
    )


def save_opinion(ctx: Ctx) -> Response:
    body = form_text(ctx.form.get("opinion_body", ""))
    return _act(
        ctx,
        lambda cid: actions.save_opinion(ctx.services.catalog, ctx.caller, cid, body),
        anchor="opinion",
    )


def sign_opinion(ctx: Ctx) -> Response:
    raw = ctx.form.get("opinion_body")
    body = None if raw is None else form_text(raw)
    return _act(
        ctx,
        lambda cid: actions.sign_opinion(ctx.services.catalog, ctx.caller, cid, body),
        anchor="opinion",
    )
