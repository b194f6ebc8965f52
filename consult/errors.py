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
    └── Conflict (409)
        └── OpinionAlreadySigned

Errors that reach the web carry an HTTP ``status`` and are rendered by one handler.
"""

from __future__ import annotations


class ConsultError(Exception):
    """Base of every error of the application."""

    status = 500


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
