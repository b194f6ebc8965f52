"""Jinja2 set-up: autoescape on for every template, URLs from named routes, UTC times.

Times are rendered as ``<time datetime="...">YYYY-MM-DD HH:MM UTC</time>``; the small
static script turns them into the reader's local time. DICOM dates stay as the sender
wrote them (they have no time zone).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from consult.previews import PreviewStatus

TEMPLATES = Path(__file__).resolve().parent / "templates"


def path_for(request: Request, name: str, /, **params: Any) -> str:
    """The path of a named route; paths keep pages working behind any host name. The root
    is the app's (``app_root_path``), not that of the mount the request came through."""
    root = str(request.scope.get("app_root_path", request.scope.get("root_path", "")))
    return root + str(request.app.url_path_for(name, **params))


@jinja2.pass_context
def _url_for(context: Any, name: str, /, **params: Any) -> str:
    return path_for(context["request"], name, **params)


def utc_text(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dicom_date(value: str) -> str:
    """``YYYYMMDD`` as ``YYYY-MM-DD``; anything else as sent."""
    value = value.strip()
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["url_for"] = _url_for
    env.globals["PreviewStatus"] = PreviewStatus
    env.filters["utc"] = utc_text
    env.filters["iso"] = iso
    env.filters["dicom_date"] = dicom_date
    return env


templates = Jinja2Templates(env=_environment())


def render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    """A page; ``context`` must hold ``session`` (None on public pages)."""
    headers = {"Cache-Control": "no-store"}
    return templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=headers
    )
