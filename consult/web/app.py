"""The Starlette application: pages, previews and the JSON API over one set of services.

``create_app(services)`` does not open or close the services: whoever calls it (the CLI's
``web``/``serve``, a test) owns them. Routes are named; templates build URLs from names.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from consult.errors import ConsultError
from consult.services import Services
from consult.web import api, consultation_pages, openapi, preview_routes, study_pages
from consult.web.context import Handler, endpoint
from consult.web.error_pages import SecurityHeaders, handle_error
from storage import StorageError

STATIC = Path(__file__).resolve().parent / "static"


def _page(path: str, handler: Handler, name: str, methods: list[str]) -> Route:
    return Route(path, endpoint(handler), name=name, methods=methods)


def _api(
    path: str, handler: Handler, name: str, methods: list[str], *, public: bool = False
) -> Route:
    return Route(path, endpoint(handler, api=True, public=public), name=name, methods=methods)


def routes() -> list[BaseRoute]:
    cid = "/consultations/{consultation_id:int}"
    return [
        Route(
            "/login", endpoint(study_pages.login_form, public=True), name="login", methods=["GET"]
        ),
        Route(
            "/login",
            endpoint(study_pages.login_submit, public=True),
            name="login_submit",
            methods=["POST"],
        ),
        _page("/logout", study_pages.logout, "logout", ["POST"]),
        _page("/", study_pages.home, "home", ["GET"]),
        _page("/studies/{study_uid}", study_pages.study_page, "study", ["GET"]),
        _page(
            "/studies/{study_uid}/consultations",
            study_pages.request_consultation,
            "request_consultation",
            ["POST"],
        ),
        _page("/consultations", consultation_pages.inbox, "consultations", ["GET"]),
        _page(cid, consultation_pages.consultation_page, "consultation", ["GET"]),
        _page(f"{cid}/accept", consultation_pages.accept, "consultation_accept", ["POST"]),
        _page(f"{cid}/decline", consultation_pages.decline, "consultation_decline", ["POST"]),
        _page(f"{cid}/close", consultation_pages.close, "consultation_close", ["POST"]),
        _page(f"{cid}/messages", consultation_pages.post_message, "message_post", ["POST"]),
        _page(f"{cid}/opinion", consultation_pages.save_opinion, "opinion_save", ["POST"]),
        _page(f"{cid}/opinion/sign", consultation_pages.sign_opinion, "opinion_sign", ["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        _api("/api/openapi.json", openapi.openapi, "api_openapi", ["GET"], public=True),
        _api("/api/session", api.login, "api_login", ["POST"], public=True),
        _api("/api/session", api.whoami, "api_session", ["GET"]),
        _api("/api/session", api.logout, "api_logout", ["DELETE"]),
        _api("/api/hospitals", api.hospitals, "api_hospitals", ["GET"]),
        _api("/api/studies", api.list_studies, "api_studies", ["GET"]),
        _api("/api/studies/{study_uid}", api.get_study, "api_study", ["GET"]),
        _api("/api/consultations", api.list_consultations, "api_consultations", ["GET"]),
        _api("/api/consultations", api.create_consultation, "api_consultation_create", ["POST"]),
        _api(f"/api{cid}", api.get_consultation, "api_consultation", ["GET"]),
        _api(f"/api{cid}/accept", api.accept, "api_accept", ["POST"]),
        _api(f"/api{cid}/decline", api.decline, "api_decline", ["POST"]),
        _api(f"/api{cid}/close", api.close, "api_close", ["POST"]),
        _api(f"/api{cid}/messages", api.post_message, "api_message_post", ["POST"]),
        _api(f"/api{cid}/opinion", api.save_opinion, "api_opinion_save", ["PUT"]),
        _api(f"/api{cid}/opinion/sign", api.sign_opinion, "api_opinion_sign", ["POST"]),
    ]


def create_app(services: Services) -> Starlette:
    """The web app over ``services`` (which the caller opens and closes)."""
    app = Starlette(
        routes=[
            *preview_routes.routes(services.settings),
            *routes(),
        ],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            ConsultError: handle_error,
            HTTPException: handle_error,
            StorageError: handle_error,
            Exception: handle_error,
        },
    )
    app.state.services = services
    return app
