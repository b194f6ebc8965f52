"""HTML pages: login, the studies list and a study (preview images: consult/web/preview_routes.py).

Every page that shows patient data goes through :mod:`consult.access.check` first; every form
carries the session's CSRF token (checked by :func:`consult.web.context.endpoint`).
"""

from __future__ import annotations

import hmac
import re
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from consult import access, consultations, studies
from consult.access import audit, auth
from consult.access.audit import Actor, Outcome
from consult.access.directory import Role, list_hospitals
from consult.errors import BadRequest, Forbidden, NotAuthenticated
from consult.services import Services
from consult.web.context import Ctx, form_text, safe_next
from consult.web.templating import render

LOGIN_CSRF_COOKIE = "consult_login_csrf"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def set_session_cookie(response: Response, token: str, services: Services) -> None:
    settings = services.settings
    response.set_cookie(
        auth.COOKIE_NAME,
        token,
        max_age=int(settings.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )


def clear_session_cookie(response: Response, services: Services) -> None:
    response.delete_cookie(
        auth.COOKIE_NAME,
        path="/",
        httponly=True,
        samesite="lax",
        secure=services.settings.secure_cookies,
    )


def do_login(ctx: Ctx, username: str, password: str) -> tuple[str, auth.Session]:
    """Check the password, open a session (ending the old one), audit either way."""
    old = ctx.request.cookies.get(auth.COOKIE_NAME)
    try:
        with ctx.services.catalog.write() as conn:
            auth.logout(conn, old)
            token, session = auth.login(
                conn,
                username,
                password,
                client=ctx.client,
                hours=ctx.services.settings.session_hours,
            )
            actor = Actor(
                user_id=session.user.id, username=session.user.username, client=ctx.client
            )
            audit.record(
                conn,
                actor,
                action="session.login",
                object_type="user",
                object_id=str(session.user.id),
                outcome=Outcome.SUCCESS,
            )
    except NotAuthenticated:
        with ctx.services.catalog.write() as conn:
            audit.record(
                conn,
                Actor(user_id=None, username=username[:100], client=ctx.client),
                action="session.login",
                object_type="user",
                object_id=username[:128],
                outcome=Outcome.DENIED,
                detail="wrong user name or password, or account disabled",
            )
        raise
    return token, session


def do_logout(ctx: Ctx) -> None:
    with ctx.services.catalog.write() as conn:
        auth.logout(conn, ctx.request.cookies.get(auth.COOKIE_NAME))
        if ctx.session is not None:
            audit.record(
                conn,
                ctx.actor,
                action="session.logout",
                object_type="user",
                object_id=str(ctx.session.user.id),
                outcome=Outcome.SUCCESS,
            )


def _login_page(
    ctx: Ctx, token: str, *, next_path: str, error: str = "", status: int = 200
) -> Response:
    response = render(
        ctx.request,
        "login.html",
        {"session": None, "csrf_token": token, "next": next_path, "error": error},
        status_code=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path=ctx.url("login"),
        httponly=True,
        samesite="lax",
        secure=ctx.services.settings.secure_cookies,
    )
    return response


def _login_token(request: Request) -> str:
    existing = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    return existing if _HEX64.match(existing) else secrets.token_hex(32)


def login_form(ctx: Ctx) -> Response:
    home = ctx.url("home")
    next_path = safe_next(ctx.request.query_params.get("next"), home)
    if ctx.session is not None:
        return RedirectResponse(next_path, status_code=303)
    return _login_page(ctx, _login_token(ctx.request), next_path=next_path)


def login_submit(ctx: Ctx) -> Response:
    expected = ctx.request.cookies.get(LOGIN_CSRF_COOKIE, "")
    provided = ctx.form.get(auth.CSRF_FIELD, "")
    if not _HEX64.match(expected) or not hmac.compare_digest(expected, provided):
        raise Forbidden("the login form expired or came from another site; reload and try again")
    next_path = safe_next(ctx.form.get("next"), ctx.url("home"))
    try:
        token, _session = do_login(ctx, ctx.form.get("username", ""), ctx.form.get("password", ""))
    except NotAuthenticated as exc:
        return _login_page(ctx, expected, next_path=next_path, error=str(exc), status=401)
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(response, token, ctx.services)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=ctx.url("login"))
    return response


def logout(ctx: Ctx) -> Response:
    do_logout(ctx)
    response = ctx.redirect("login")
    clear_session_cookie(response, ctx.services)
    return response


def home(ctx: Ctx) -> Response:
    """The studies the user's hospital sent or takes part in a consultation on."""
    user = ctx.user
    found = studies.list_audited(
        ctx.services.catalog,
        ctx.actor,
        user.hospital_id,
        stable_seconds=ctx.services.settings.stable_seconds,
    )
    return render(ctx.request, "studies.html", {"session": ctx.session, "studies": found})


def study_page(ctx: Ctx) -> Response:
    user = ctx.user
    ref = access.require_study(
        ctx.services.catalog,
        user,
        ctx.path_param("study_uid"),
        action="study.read",
        client=ctx.client,
    )
    with ctx.services.catalog.read() as conn:
        detail = studies.study_detail(
            conn, ref.pk, stable_seconds=ctx.services.settings.stable_seconds
        )
        on_study = consultations.for_study(conn, ref.pk, user)
        targets = [h for h in list_hospitals(conn) if h.id != user.hospital_id]
    can_request = user.role is Role.REFERRING and ref.hospital_id == user.hospital_id
    return render(
        ctx.request,
        "study.html",
        {
            "session": ctx.session,
            "study": detail.summary,
            "series": detail.series,
            "consultations": on_study,
            "can_request": can_request and bool(targets),
            "targets": targets,
            "urgencies": list(consultations.Urgency),
        },
    )


def request_consultation(ctx: Ctx) -> Response:
    user = ctx.user
    ref = access.require_study(
        ctx.services.catalog,
        user,
        ctx.path_param("study_uid"),
        action="study.read",
        client=ctx.client,
    )
    try:
        target = int(ctx.form.get("target_hospital", ""))
    except ValueError:
        raise BadRequest("choose a target hospital") from None
    stable_seconds = ctx.services.settings.stable_seconds
    new_id = ctx.perform(
        lambda conn: consultations.request(
            conn,
            user,
            ref.pk,
            target_hospital_id=target,
            question=form_text(ctx.form.get("question", "")),
            urgency=ctx.form.get("urgency", ""),
            study_stable=studies.get_summary(conn, ref.pk, stable_seconds=stable_seconds).stable,
            all_sent=ctx.form.get("all_sent") == "yes",
        ),
        action="consultation.request",
        object_type="study",
        object_id=ref.study_uid,
    )
    return ctx.redirect("consultation", consultation_id=new_id)
