"""Every URL of the web app, in one table that reads top to bottom.

Each route is declared the same way, ``_route(METHOD, path, handler, name)``: the handler is
a plain function of a :class:`~consult.web.context.Ctx` (consult/web/context.py wraps it:
session, CSRF and Origin checks, the body). Routes are named, and pages and templates build
URLs from the names (``ctx.url``, ``url_for``), never by hand.

Under ``/api`` the handlers answer JSON and a missing session is 401 rather than a redirect
to the login page; ``public`` routes (logging in, the OpenAPI document) need no session.
Order matters in one place only, said where it is: inside ``/static``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from consult.settings import Settings
from consult.web import (
    api,
    consultation_pages,
    login_pages,
    openapi,
    preview_routes,
    study_pages,
)
from consult.web.context import Handler, endpoint

STATIC = Path(__file__).resolve().parent / "static"
CONSULTATION = "/consultations/{consultation_id:int}"
PREVIEW = "/{preview_id:int}"


def _route(
    method: str,
    path: str,
    handler: Handler,
    name: str,
    *,
    api: bool = False,
    public: bool = False,
) -> Route:
    return Route(path, endpoint(handler, api=api, public=public), name=name, methods=[method])


def _api(method: str, path: str, handler: Handler, name: str, *, public: bool = False) -> Route:
    return _route(method, path, handler, name, api=True, public=public)


def _openseadragon(settings: Settings) -> BaseRoute:
    """OpenSeadragon from npm (``npm install``), or a 404 saying how to install it."""
    folder = preview_routes.openseadragon_dir(settings)
    if folder.is_dir():
        return Mount(
            "/vendor/openseadragon", app=StaticFiles(directory=folder), name="openseadragon"
        )
    return _route(
        "GET",
        "/vendor/openseadragon/{path:path}",
        preview_routes.missing_vendor,
        "openseadragon",
        public=True,
    )


def routes(settings: Settings) -> list[BaseRoute]:
    c = CONSULTATION
    return [
        # Logging in and out.
        _route("GET", "/login", login_pages.login_form, "login", public=True),
        _route("POST", "/login", login_pages.login_submit, "login_submit", public=True),
        _route("POST", "/logout", login_pages.logout, "logout"),
        # Studies.
        _route("GET", "/", study_pages.home, "home"),
        _route("GET", "/studies/{study_uid}", study_pages.study_page, "study"),
        _route(
            "POST",
            "/studies/{study_uid}/consultations",
            study_pages.request_consultation,
            "request_consultation",
        ),
        # Consultations.
        _route("GET", "/consultations", consultation_pages.inbox, "consultations"),
        _route("GET", c, consultation_pages.consultation_page, "consultation"),
        _route("POST", f"{c}/accept", consultation_pages.accept, "consultation_accept"),
        _route("POST", f"{c}/decline", consultation_pages.decline, "consultation_decline"),
        _route("POST", f"{c}/close", consultation_pages.close, "consultation_close"),
        _route("POST", f"{c}/messages", consultation_pages.post_message, "message_post"),
        _route("POST", f"{c}/opinion", consultation_pages.save_opinion, "opinion_save"),
        _route("POST", f"{c}/opinion/sign", consultation_pages.sign_opinion, "opinion_sign"),
        # Preview images: descriptors, tiles, frame images, thumbnails.
        Mount(
            "/previews",
            routes=[
                _route("GET", PREVIEW, preview_routes.frame_image, "preview"),
                _route("GET", f"{PREVIEW}.dzi", preview_routes.descriptor, "preview_dzi"),
                _route("GET", f"{PREVIEW}.json", preview_routes.info, "preview_info"),
                _route(
                    "GET",
                    f"{PREVIEW}_files/{{level:int}}/{{col:int}}_{{row:int}}.{{ext}}",
                    preview_routes.tile,
                    "preview_tile",
                ),
                _route(
                    "GET", f"{PREVIEW}/thumbnail", preview_routes.thumbnail, "preview_thumbnail"
                ),
            ],
        ),
        _route(
            "GET",
            "/series/{series_uid}/thumbnail",
            preview_routes.series_thumbnail,
            "series_thumbnail",
        ),
        # The JSON API (documented in /api/openapi.json).
        Mount(
            "/api",
            routes=[
                _api("GET", "/openapi.json", openapi.openapi, "api_openapi", public=True),
                _api("POST", "/session", api.login, "api_login", public=True),
                _api("GET", "/session", api.whoami, "api_session"),
                _api("DELETE", "/session", api.logout, "api_logout"),
                _api("GET", "/hospitals", api.hospitals, "api_hospitals"),
                _api("GET", "/studies", api.list_studies, "api_studies"),
                _api("GET", "/studies/{study_uid}", api.get_study, "api_study"),
                _api("GET", "/consultations", api.list_consultations, "api_consultations"),
                _api("POST", "/consultations", api.create_consultation, "api_consultation_create"),
                _api("GET", c, api.get_consultation, "api_consultation"),
                _api("POST", f"{c}/accept", api.accept, "api_accept"),
                _api("POST", f"{c}/decline", api.decline, "api_decline"),
                _api("POST", f"{c}/close", api.close, "api_close"),
                _api("POST", f"{c}/messages", api.post_message, "api_message_post"),
                _api("PUT", f"{c}/opinion", api.save_opinion, "api_opinion_save"),
                _api("POST", f"{c}/opinion/sign", api.sign_opinion, "api_opinion_sign"),
            ],
        ),
        # Static files: OpenSeadragon first, since the app's own files are mounted at the
        # root of /static and would otherwise answer /static/vendor/... with a 404.
        Mount(
            "/static",
            routes=[
                _openseadragon(settings),
                Mount("", app=StaticFiles(directory=STATIC), name="static"),
            ],
        ),
    ]
