"""HTML pages of studies: the list of studies and one study (its images are served by
consult/web/preview_routes.py), and the request for a consultation on it.

Every page that shows patient data goes through :mod:`consult.access.check` first; every form
carries the session's CSRF token (checked by :func:`consult.web.context.endpoint`).
"""

from __future__ import annotations

from starlette.responses import Response

from consult import consultations, studies
from consult.access.directory import list_hospitals
from consult.consultations import actions
from consult.errors import BadRequest
from consult.web.context import Ctx, form_text
from consult.web.templating import render


def home(ctx: Ctx) -> Response:
    """The studies the user's hospital sent or takes part in a consultation on."""
    stable_seconds = ctx.services.settings.stable_seconds
    found = studies.list_audited(ctx.services.catalog, ctx.caller, stable_seconds=stable_seconds)
    return render(ctx.request, "studies.html", {"session": ctx.session, "studies": found})


def study_page(ctx: Ctx) -> Response:
    user = ctx.user
    ref = ctx.study()
    with ctx.services.catalog.read() as conn:
        detail = studies.study_detail(
            conn, ref.pk, stable_seconds=ctx.services.settings.stable_seconds
        )
        on_study = consultations.for_study(conn, ref.pk, user)
        targets = [h for h in list_hospitals(conn) if h.id != user.hospital_id]
    may_request = consultations.refuse_request(user, ref.hospital_id) is None
    return render(
        ctx.request,
        "study.html",
        {
            "session": ctx.session,
            "study": detail.summary,
            "series": detail.series,
            "consultations": on_study,
            "can_request": may_request and bool(targets),
            "targets": targets,
            "urgencies": list(consultations.Urgency),
        },
    )


def request_consultation(ctx: Ctx) -> Response:
    try:
        target = int(ctx.form.get("target_hospital", ""))
    except ValueError:
        raise BadRequest("choose a target hospital") from None
    new_id = actions.request(
        ctx.services.catalog,
        ctx.caller,
        ctx.path_param("study_uid"),
        target_hospital_id=target,
        question=form_text(ctx.form.get("question", "")),
        urgency=ctx.form.get("urgency", ""),
        all_sent=ctx.form.get("all_sent") == "yes",
        stable_seconds=ctx.services.settings.stable_seconds,
    )
    return ctx.redirect("consultation", consultation_id=new_id)
