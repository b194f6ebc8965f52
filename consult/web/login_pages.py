"""Logging in and out: the login page, the session cookie, and the same for the API.

The password check and the session are :mod:`consult.access.auth`'s (audited there); here
are only the form, its pre-session CSRF token (a cookie the form must echo: the user has
no session yet) and the cookie that carries the session token.
"""

from __future__ import annotations

import hmac
import re
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from consult.access import auth
from consult.errors import Forbidden, NotAuthenticated
from consult.services import Services
from consult.web.context import Ctx, safe_next
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


def sign_in(ctx: Ctx, username: str, password: str) -> tuple[str, auth.Session]:
    """Check the password and open a session, ending the request's old one."""
    return auth.sign_in(
        ctx.services.catalog,
        username,
        password,
        client=ctx.client,
        hours=ctx.services.settings.session_hours,
        old_token=ctx.request.cookies.get(auth.COOKIE_NAME),
    )


def sign_out(ctx: Ctx) -> None:
    auth.sign_out(
        ctx.services.catalog,
        ctx.request.cookies.get(auth.COOKIE_NAME),
        ctx.session,
        client=ctx.client,
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
        token, _session = sign_in(ctx, ctx.form.get("username", ""), ctx.form.get("password", ""))
    except NotAuthenticated as exc:
        return _login_page(ctx, expected, next_path=next_path, error=str(exc), status=401)
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(response, token, ctx.services)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=ctx.url("login"))
    return response


def logout(ctx: Ctx) -> Response:
    sign_out(ctx)
    response = ctx.redirect("login")
    clear_session_cookie(response, ctx.services)
    return response
