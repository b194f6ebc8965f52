"""Errors raised by the application.

The tree::

    ConsultError
    ├── ConfigurationError          bad CONSULT_* setting or CLI argument
    ├── InvalidDataset              a DICOM dataset we refuse (C-STORE 0xC2xx / 0xA9xx)
    ├── NotFound (404)
    │   ├── StudyNotFound
    │   ├── ConsultationNotFound
    │   └── UserNotFound
    ├── NotAuthenticated (401)
    ├── Forbidden (403)
    ├── BadRequest (400)
    ├── Conflict (409)
    │   └── OpinionAlreadySigned
    └── Unavailable (503, Retry-After)  try again shortly: the catalog is busy or
        │                               unreachable, a picture is being rendered or rebuilt
        ├── CatalogUnavailable          (consult.catalog)
        ├── RenderBusy                  (consult.previews.renders)
        └── Rebuilding                  (consult.previews.served)

Errors that reach the web carry an HTTP ``status`` (and perhaps ``headers``) and are
rendered by one handler (consult/web/error_pages.py); object-store failures
(:class:`storage.StorageError`) are answered there as :class:`Unavailable` too.
"""

from __future__ import annotations


class ConsultError(Exception):
    """Base of every error of the application."""

    status = 500
    public_message: str | None = None
    """What users are told instead of the message, when that is for operators' logs."""

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer to this error carries."""
        return {}


class ConfigurationError(ConsultError):
    """A setting, CLI argument or file named by the operator is wrong."""


class InvalidDataset(ConsultError):
    """A dataset received over DICOM that we refuse to store.

    ``dicom_status`` is the C-STORE status to return to the sender.
    """

    def __init__(self, message: str, *, dicom_status: int = 0xC210) -> None:
        super().__init__(message)
        self.dicom_status = dicom_status


class NotFound(ConsultError):
    status = 404


class StudyNotFound(NotFound):
    pass


class ConsultationNotFound(NotFound):
    pass


class UserNotFound(NotFound):
    pass


class NotAuthenticated(ConsultError):
    status = 401


class Forbidden(ConsultError):
    status = 403


class BadRequest(ConsultError):
    status = 400


class Conflict(ConsultError):
    status = 409


class OpinionAlreadySigned(Conflict):
    pass


class Unavailable(ConsultError):
    """Not now: the client should ask again after ``retry_after`` seconds."""

    status = 503
    retry_after = 2

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after), "Cache-Control": "no-store"}
