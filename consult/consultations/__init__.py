"""Consultations: what one is (``model``), who may do what (``permissions``), their
lifecycle and thread (``lifecycle``), opinions (``opinions``), the operations pages and API
share (``actions``), the signed opinion as DICOM SR (``sr``) and its delivery to the
referring PACS (``delivery``).
"""

from consult.consultations.lifecycle import (
    accept,
    close,
    decline,
    for_study,
    get,
    list_audited,
    mark_answered,
    post_message,
    request,
    thread,
)
from consult.consultations.model import Urgency
from consult.consultations.permissions import refuse_request

__all__ = [
    "Urgency",
    "accept",
    "close",
    "decline",
    "for_study",
    "get",
    "list_audited",
    "mark_answered",
    "post_message",
    "refuse_request",
    "request",
    "thread",
]
