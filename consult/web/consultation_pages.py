"""HTML pages of consultations: the inbox, one consultation, and its actions.

Each action is :mod:`consult.consultations.actions`' (the access check, the change and its
audit event); here the form is read and the outcome shown.
"""

from __future__ import annotations

from starlette.responses import Response

from consult import consultations, studies
from consult.consultations import actions
from consult.web.context import Ctx, Handler, form_text
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


def _acting(
    operation: actions.Operation, *, field: str = "", anchor: str = "", optional: bool = False
) -> Handler:
    """The form handler of ``operation``: its text from the form ``field`` (missing is
    empty, or None when ``optional``), then back to the consultation page at ``anchor``."""

    def handler(ctx: Ctx) -> Response:
        cid = ctx.int_param("consultation_id")
        raw = ctx.form.get(field) if field else None
        text = form_text(raw) if raw is not None else (None if optional else "")
        actions.perform(ctx.services.catalog, ctx.caller, cid, operation, text)
        return ctx.redirect("consultation", consultation_id=cid, anchor=anchor)

    handler.__name__ = operation.name.lower()
    return handler


accept = _acting(actions.Operation.ACCEPT)
decline = _acting(actions.Operation.DECLINE)
close = _acting(actions.Operation.CLOSE)
post_message = _acting(actions.Operation.POST, field="body", anchor="thread")
save_opinion = _acting(actions.Operation.SAVE_OPINION, field="opinion_body", anchor="opinion")
sign_opinion = _acting(
    actions.Operation.SIGN_OPINION, field="opinion_body", anchor="opinion", optional=True
)
