"""One error handler for the app, and the security headers every response carries.

A :class:`~consult.errors.ConsultError` (or a plain 404/405 from routing) becomes an HTML
error page, or ``{"error": message}`` under ``/api/``, with the error's status and headers
(``Retry-After`` for :class:`~consult.errors.Unavailable`). An object-store failure is
answered as :class:`~consult.errors.Unavailable`. Anything else is logged and answered 500
without details.
"""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consult.errors import ConsultError, Unavailable
from consult.web.templating import render
from storage import StorageError

log = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    401: "Not logged in",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    500: "Server error",
    503: "Service unavailable",
}

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def _classify(exc: Exception) -> tuple[int, str, dict[str, str]]:
    if isinstance(exc, StorageError):
        log.warning("object store failure: %s", type(exc).__name__)
        exc = Unavailable("the object store is unavailable; try again shortly")
    if isinstance(exc, ConsultError):
        message = exc.public_message or str(exc) or TITLES.get(exc.status, "Error")
        return exc.status, message, exc.headers
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        return exc.status_code, detail, headers
    log.exception("unhandled error", exc_info=exc)
    return 500, "internal server error", {}


async def handle_error(request: Request, exc: Exception) -> Response:
    status, message, headers = _classify(exc)
    if status >= 500 and isinstance(exc, ConsultError):
        level = logging.INFO if isinstance(exc, Unavailable) else logging.WARNING
        log.log(level, "request failed with %s: %s", status, type(exc).__name__)
    if is_api(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    response = render(
        request,
        "error.html",
        {
            "session": None,
            "status": status,
            "title": TITLES.get(status, "Error"),
            "message": message,
        },
        status_code=status,
    )
    response.headers.update(headers)
    return response


class SecurityHeaders:
    """Pure ASGI middleware (no BaseHTTPMiddleware): adds the headers to every response.

    Responses that did not set ``Cache-Control`` get ``no-store`` (they may hold patient
    data), except static files.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if not static and "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
