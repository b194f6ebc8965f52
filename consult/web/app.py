"""The Starlette application: the route table (consult/web/routes.py) over one set of services,
one error handler, and the security headers.

``create_app(services)`` does not open or close the services: whoever calls it (the CLI's
``web``/``serve``, a test) owns them.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from consult.errors import ConsultError
from consult.services import Services
from consult.web.error_pages import SecurityHeaders, handle_error
from consult.web.routes import routes
from storage import StorageError


def create_app(services: Services) -> Starlette:
    """The web app over ``services`` (which the caller opens and closes)."""
    app = Starlette(
        routes=routes(services.settings),
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
