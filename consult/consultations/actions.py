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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection

from consult import access
from consult.access import audit
from consult.access.check import Caller, StudyRef
from consult.catalog import Catalog
from consult.consultations import lifecycle, opinions
from consult.consultations.lifecycle import Allowed, Consultation, Message
from consult.consultations.opinions import Delivery, Opinion, OpinionStatus
from consult.studies.receipt import is_stable_study

T = TypeVar("T")


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
        allowed=lifecycle.allowed(user, c, opinion_signed=signed),
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


def _act(
    catalog: Catalog,
    caller: Caller,
    consultation_id: int,
    action: str,
    change: Callable[[Connection], T],
) -> tuple[StudyRef, T]:
    ref = check(catalog, caller, consultation_id)
    result = audit.perform(
        catalog,
        caller.actor,
        change,
        action=action,
        object_type="consultation",
        object_id=str(consultation_id),
    )
    return ref, result


def accept(catalog: Catalog, caller: Caller, consultation_id: int) -> StudyRef:
    """A specialist of the target hospital takes the consultation on."""
    return _act(
        catalog,
        caller,
        consultation_id,
        "consultation.accept",
        lambda conn: lifecycle.accept(conn, caller.user, consultation_id),
    )[0]


def decline(catalog: Catalog, caller: Caller, consultation_id: int) -> StudyRef:
    """A specialist of the target hospital declines; the hospital then takes no part."""
    return _act(
        catalog,
        caller,
        consultation_id,
        "consultation.decline",
        lambda conn: lifecycle.decline(conn, caller.user, consultation_id),
    )[0]


def close(catalog: Catalog, caller: Caller, consultation_id: int) -> StudyRef:
    """The referring hospital closes an answered consultation."""
    return _act(
        catalog,
        caller,
        consultation_id,
        "consultation.close",
        lambda conn: lifecycle.close(conn, caller.user, consultation_id),
    )[0]


def post_message(catalog: Catalog, caller: Caller, consultation_id: int, body: str) -> StudyRef:
    """Add a message to the thread."""
    return _act(
        catalog,
        caller,
        consultation_id,
        "message.post",
        lambda conn: lifecycle.post_message(conn, caller.user, consultation_id, body),
    )[0]


def save_opinion(catalog: Catalog, caller: Caller, consultation_id: int, body: str) -> StudyRef:
    """Save the draft opinion's text."""
    return _act(
        catalog,
        caller,
        consultation_id,
        "opinion.save",
        lambda conn: opinions.save_draft(conn, caller.user, consultation_id, body),
    )[0]


def sign_opinion(
    catalog: Catalog, caller: Caller, consultation_id: int, body: str | None
) -> StudyRef:
    """Sign the opinion (with ``body`` as its final text, if given); queues its delivery."""
    return _act(
        catalog,
        caller,
        consultation_id,
        "opinion.sign",
        lambda conn: opinions.sign(conn, caller.user, consultation_id, body),
    )[0]
