"""What users do with consultations: the one implementation that the pages and the API share.

Each operation first checks that the caller's hospital takes part in the consultation (or
may see the study, for a request): outsiders get a 404, audited as denied
(:mod:`consult.access.check`). Then it runs the change in one transaction together with its
audit event; a refusal (400, 403, 409) is audited as denied too (:func:`audit.perform`).
Who may do what, and when, is decided in :mod:`consult.consultations.lifecycle` and
:mod:`consult.consultations.opinions`; the edges (web pages, JSON API) only read their
input, call these and render the outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from consult import access
from consult.access import audit
from consult.access.check import Caller, StudyRef
from consult.catalog import Catalog
from consult.consultations import lifecycle, opinions, permissions
from consult.consultations.model import Consultation, Message
from consult.consultations.opinions import Delivery, Opinion, OpinionStatus
from consult.consultations.permissions import Allowed
from consult.studies.receipt import is_stable_study


def check(catalog: Catalog, caller: Caller, consultation_id: int) -> StudyRef:
    """The consultation's study, if the caller's hospital takes part in it (else 404)."""
    return access.require_consultation(
        catalog, caller.user, consultation_id, action="consultation.read", client=caller.client
    )


@dataclass(frozen=True)
class View:
    """A consultation as its participant sees it."""

    consultation: Consultation
    study: StudyRef
    thread: list[Message]
    opinion: Opinion | None
    """The signed opinion, or the draft for its author; None otherwise."""
    signed: bool
    deliveries: list[Delivery]
    """Where the signed opinion went back to (empty before it is signed)."""
    allowed: Allowed


def view(
    catalog: Catalog, caller: Caller, consultation_id: int, *, study: StudyRef | None = None
) -> View:
    """The consultation, its thread and opinion, and what the caller may do with it.

    ``study`` is the result of an access check this request already made (:func:`check`);
    without it the check is made here.
    """
    ref = study if study is not None else check(catalog, caller, consultation_id)
    user = caller.user
    with catalog.read() as conn:
        c = lifecycle.get(conn, consultation_id)
        thread = lifecycle.thread(conn, consultation_id)
        opinion = opinions.visible_to(user, opinions.get(conn, consultation_id))
        signed = opinion is not None and opinion.status is OpinionStatus.SIGNED
        deliveries = opinions.delivery_status(conn, opinion.id) if opinion and signed else []
    return View(
        consultation=c,
        study=ref,
        thread=thread,
        opinion=opinion,
        signed=signed,
        deliveries=deliveries,
        allowed=permissions.allowed(user, c, opinion_signed=signed),
    )


def request(
    catalog: Catalog,
    caller: Caller,
    study_uid: str,
    *,
    target_hospital_id: int,
    question: str,
    urgency: str,
    all_sent: bool,
    stable_seconds: float,
) -> int:
    """Ask another hospital for an opinion on a study; returns the new consultation's id."""
    ref = access.require_study(
        catalog, caller.user, study_uid, action="study.read", client=caller.client
    )
    return audit.perform(
        catalog,
        caller.actor,
        lambda conn: lifecycle.request(
            conn,
            caller.user,
            ref.pk,
            target_hospital_id=target_hospital_id,
            question=question,
            urgency=urgency,
            study_stable=is_stable_study(conn, ref.pk, stable_seconds),
            all_sent=all_sent,
        ),
        action="consultation.request",
        object_type="study",
        object_id=ref.study_uid,
    )


class Operation(enum.StrEnum):
    """What a participant does to a consultation (the value is its audit action)."""

    ACCEPT = "consultation.accept"
    """A specialist of the target hospital takes the consultation on."""
    DECLINE = "consultation.decline"
    """A specialist of the target hospital declines; the hospital then takes no part."""
    CLOSE = "consultation.close"
    """The referring hospital closes an answered consultation."""
    POST = "message.post"
    """Add a message (the text) to the thread."""
    SAVE_OPINION = "opinion.save"
    """Save the draft opinion's text."""
    SIGN_OPINION = "opinion.sign"
    """Sign the opinion (with the text as its final text, if given); queues its delivery."""


TAKES_TEXT = frozenset({Operation.POST, Operation.SAVE_OPINION, Operation.SIGN_OPINION})


def perform(
    catalog: Catalog,
    caller: Caller,
    consultation_id: int,
    operation: Operation,
    text: str | None = None,
) -> StudyRef:
    """Do ``operation`` (with ``text``, for those that take one) to a consultation the
    caller's hospital takes part in; returns its study (the access check's result)."""
    user, cid = caller.user, consultation_id
    changes: dict[Operation, Callable[[Connection], object]] = {
        Operation.ACCEPT: lambda conn: lifecycle.accept(conn, user, cid),
        Operation.DECLINE: lambda conn: lifecycle.decline(conn, user, cid),
        Operation.CLOSE: lambda conn: lifecycle.close(conn, user, cid),
        Operation.POST: lambda conn: lifecycle.post_message(conn, user, cid, text or ""),
        Operation.SAVE_OPINION: lambda conn: opinions.save_draft(conn, user, cid, text or ""),
        Operation.SIGN_OPINION: lambda conn: opinions.sign(conn, user, cid, text),
    }
    ref = check(catalog, caller, cid)
    audit.perform(
        catalog,
        caller.actor,
        changes[operation],
        action=operation.value,
        object_type="consultation",
        object_id=str(cid),
    )
    return ref
