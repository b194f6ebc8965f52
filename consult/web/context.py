"""What every route shares: the session lookup, CSRF and Origin checks, and the audited action.

Routes are plain functions ``handler(ctx) -> Response`` wrapped by :func:`endpoint`. The
wrapper does the asynchronous part (reading the form or JSON body) and runs the handler,
which talks to the catalog and the object store (both blocking), in the thread pool. No
``BaseHTTPMiddleware``: the session is looked up by the route that needs it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from consult import access
from consult.access import auth
from consult.access.audit import Actor
from consult.access.auth import Session
from consult.access.check import Caller, StudyRef
from consult.access.directory import User
from consult.errors import BadRequest, Forbidden, NotAuthenticated, NotFound
from consult.services import Services
from consult.web.templating import path_for

T = TypeVar("T")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_JSON_BYTES = 1024 * 1024
MAX_ID = 2**31 - 1
Handler = Callable[["Ctx"], Response]


@dataclass
class Ctx:
    """One request, as a handler sees it."""

    request: Request
    services: Services
    session: Session | None
    client: str
    form: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> User:
        if self.session is None:
            raise NotAuthenticated("log in first")
        return self.session.user

    @property
    def actor(self) -> Actor:
        if self.session is None:
            return Actor(user_id=None, username="", client=self.client)
        return Actor.of(self.session.user, self.client)

    @property
    def caller(self) -> Caller:
        """The logged-in user and their address, as the domain operations take them."""
        return Caller(self.user, self.client)

    @property
    def session_key(self) -> str:
        """A stable, non-secret name for the session (for audit de-duplication)."""
        if self.session is None:
            return "anonymous"
        return hashlib.sha256(b"audit:" + self.session.token_hash.encode()).hexdigest()[:32]

    def study(self) -> StudyRef:
        """The study the path's ``study_uid`` names, if the user may see it (else 404, audited)."""
        return access.require_study(
            self.services.catalog,
            self.user,
            self.path_param("study_uid"),
            action="study.read",
            client=self.client,
        )

    def path_param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def int_param(self, name: str) -> int:
        value = self.request.path_params[name]
        if not isinstance(value, int):
            raise BadRequest(f"{name} must be an integer")
        if not 0 < value <= MAX_ID:  # beyond any key; SQLite cannot even bind it
            raise NotFound("not found")
        return value

    def url(self, name: str, /, **params: Any) -> str:
        """The path of a named route (relative to the app's root path)."""
        return path_for(self.request, name, **params)

    def redirect(self, name: str, /, *, anchor: str = "", **params: Any) -> RedirectResponse:
        target = self.url(name, **params) + (f"#{anchor}" if anchor else "")
        return RedirectResponse(target, status_code=303)


def form_text(value: str) -> str:
    """Browsers send form text with CRLF line ends; keep the text as the user typed it."""
    return value.replace("\r\n", "\n")


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def check_origin(request: Request) -> None:
    """Refuse a state change sent from another site (Origin, or Sec-Fetch-Site)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in {
        "same-origin",
        "none",
    }:
        raise Forbidden("cross-site request refused")
    origin = request.headers.get("origin")
    if origin is None:
        return
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    if origin == "null" or parts.netloc.lower() != host.lower():
        raise Forbidden("cross-site request refused")


def safe_next(value: str | None, default: str) -> str:
    """A local path to go back to after login; anything else (an open redirect) is ignored."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 32 for c in value)
    ):
        return default
    return value


async def _read_form(request: Request) -> dict[str, str]:
    async with request.form(max_files=0, max_fields=50, max_part_size=256 * 1024) as form:
        return {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}


async def _read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    if len(raw) > MAX_JSON_BYTES:
        raise BadRequest(f"request body must be at most {MAX_JSON_BYTES} bytes")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise BadRequest("request body must be application/json")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _resolve(services: Services, token: str) -> Session | None:
    with services.catalog.read() as conn:
        return auth.resolve(conn, token)


def endpoint(
    handler: Handler, *, api: bool = False, public: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: session, login redirect or 401, Origin and CSRF checks, body parsing.

    ``public`` handlers (the login routes) run without a session and check their own CSRF
    token (a pre-session one: the user has no session yet).
    """

    async def run(request: Request) -> Response:
        services: Services = request.app.state.services
        token = request.cookies.get(auth.COOKIE_NAME)
        session = await run_in_threadpool(_resolve, services, token) if token else None
        if session is None and not public:
            if api:
                raise NotAuthenticated("log in first (POST /api/session)")
            login = str(request.app.url_path_for("login"))
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method in SAFE_METHODS:
                return RedirectResponse(f"{login}?next={quote(wanted, safe='/')}", status_code=303)
            return RedirectResponse(login, status_code=303)
        ctx = Ctx(request=request, services=services, session=session, client="")
        ctx.client = client_address(request)
        if request.method not in SAFE_METHODS:
            check_origin(request)
            if api:
                ctx.body = await _read_json(request)
                provided = request.headers.get(auth.CSRF_HEADER)
            else:
                ctx.form = await _read_form(request)
                provided = ctx.form.get(auth.CSRF_FIELD) or request.headers.get(auth.CSRF_HEADER)
            if session is not None and not public:
                auth.check_csrf(session, provided)
        return await run_in_threadpool(handler, ctx)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
