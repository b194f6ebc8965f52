"""Consultations: their lifecycle and thread (``lifecycle``), opinions (``opinions``), the
signed opinion as DICOM SR (``sr``) and its delivery to the referring PACS (``delivery``).
"""

from consult.consultations.lifecycle import (
    Urgency,
    accept,
    close,
    decline,
    for_study,
    get,
    list_audited,
    mark_answered,
    post_message,
    refuse_request,
    request,
    thread,
)

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
