"""Consultations: one hospital asks another for an opinion on a study, and they discuss it.

Lifecycle::

    requested --accept--> accepted --opinion signed--> answered --close--> closed
        \\--decline--> declined

Every state change is a conditional UPDATE on the expected status, so two users acting
at once cannot both win; the loser gets :class:`Conflict`. Access to the study itself is
checked by :mod:`consult.access.check`; this module checks who may do what to a consultation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, or_, select, update
from sqlalchemy.orm import aliased

from consult import access
from consult.access import audit
from consult.access.audit import Actor, Outcome
from consult.access.directory import Role, User
from consult.catalog import Catalog, as_utc, insert_id, utcnow
from consult.catalog.tables import consultations, hospitals, messages, patients, studies, users
from consult.dicom.display import display_name
from consult.errors import (
    BadRequest,
    Conflict,
    ConsultationNotFound,
    ConsultError,
    Forbidden,
    NotFound,
)

MAX_QUESTION = 10_000
MAX_MESSAGE = 20_000


class ConsultationStatus(enum.StrEnum):
    """Where a consultation stands."""

    REQUESTED = "requested"
    """Asked by the referring hospital; waiting for a specialist of the target hospital."""
    ACCEPTED = "accepted"
    """A specialist took it on; the thread is open and an opinion is being written."""
    DECLINED = "declined"
    """The target hospital will not answer; final."""
    ANSWERED = "answered"
    """The opinion is signed (and on its way back to the referring hospital)."""
    CLOSED = "closed"
    """The referring side closed it after reading the opinion; final."""


class Urgency(enum.StrEnum):
    """How soon an answer is needed."""

    ROUTINE = "routine"
    """In the normal course of work."""
    URGENT = "urgent"
    """Within hours."""
    STAT = "stat"
    """Immediately."""


OPEN = (ConsultationStatus.REQUESTED, ConsultationStatus.ACCEPTED)


@dataclass(frozen=True)
class Consultation:
    id: int
    study_pk: int
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    requesting_hospital_id: int
    requesting_hospital: str
    requested_by: str
    target_hospital_id: int
    target_hospital: str
    question: str
    urgency: Urgency
    status: ConsultationStatus
    accepted_by_id: int | None
    accepted_by: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Message:
    id: int
    author: str
    author_hospital: str
    body: str
    created_at: datetime


def _select() -> Select[Any]:
    requester = aliased(users)
    acceptor = aliased(users)
    req_h = aliased(hospitals)
    tgt_h = aliased(hospitals)
    return (
        select(
            consultations,
            studies.c.study_uid,
            studies.c.study_date,
            studies.c.description.label("study_description"),
            patients.c.name.label("patient_name"),
            patients.c.patient_id,
            req_h.c.name.label("requesting_hospital"),
            tgt_h.c.name.label("target_hospital"),
            requester.c.display_name.label("requested_by_name"),
            acceptor.c.display_name.label("accepted_by_name"),
        )
        .join(studies, studies.c.id == consultations.c.study_pk)
        .join(patients, patients.c.id == studies.c.patient_pk)
        .join(req_h, req_h.c.id == consultations.c.requesting_hospital_id)
        .join(tgt_h, tgt_h.c.id == consultations.c.target_hospital_id)
        .join(requester, requester.c.id == consultations.c.requested_by)
        .outerjoin(acceptor, acceptor.c.id == consultations.c.accepted_by)
    )


def _consultation(row: Row[Any]) -> Consultation:
    return Consultation(
        id=row.id,
        study_pk=row.study_pk,
        study_uid=row.study_uid,
        patient_name=display_name(row.patient_name),
        patient_id=row.patient_id,
        study_date=row.study_date,
        study_description=row.study_description,
        requesting_hospital_id=row.requesting_hospital_id,
        requesting_hospital=row.requesting_hospital,
        requested_by=row.requested_by_name,
        target_hospital_id=row.target_hospital_id,
        target_hospital=row.target_hospital,
        question=row.question,
        urgency=Urgency(row.urgency),
        status=ConsultationStatus(row.status),
        accepted_by_id=row.accepted_by,
        accepted_by=row.accepted_by_name,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def get(conn: Connection, consultation_id: int) -> Consultation:
    row = conn.execute(_select().where(consultations.c.id == consultation_id)).first()
    if row is None:
        raise ConsultationNotFound("consultation not found")
    return _consultation(row)


def list_for(conn: Connection, user: User) -> list[Consultation]:
    """The inbox: consultations sent to a specialist's hospital, or asked by a referring one.

    Admins see both directions for their hospital.
    """
    h = user.hospital_id
    if user.role is Role.SPECIALIST:
        where = consultations.c.target_hospital_id == h
    elif user.role is Role.REFERRING:
        where = consultations.c.requesting_hospital_id == h
    else:
        where = or_(
            consultations.c.target_hospital_id == h, consultations.c.requesting_hospital_id == h
        )
    stmt = (
        _select()
        .where(where)
        .order_by(consultations.c.updated_at.desc(), consultations.c.id.desc())
    )
    return [_consultation(r) for r in conn.execute(stmt).all()]


def list_audited(catalog: Catalog, actor: Actor, user: User) -> list[Consultation]:
    """The user's consultations (``list_for``), with the audit event of that listing."""
    with catalog.write() as conn:
        found = list_for(conn, user)
        audit.record(
            conn,
            actor,
            action="consultations.list",
            object_type="hospital",
            object_id=str(user.hospital_id),
            outcome=Outcome.SUCCESS,
            detail=f"{len(found)} consultations",
        )
    return found


def for_study(conn: Connection, study_pk: int, user: User) -> list[Consultation]:
    """Consultations on a study that ``user``'s hospital takes part in."""
    stmt = (
        _select()
        .where(consultations.c.study_pk == study_pk, access.taking_part(user.hospital_id))
        .order_by(consultations.c.id)
    )
    return [_consultation(r) for r in conn.execute(stmt).all()]


def request(
    conn: Connection,
    user: User,
    study_pk: int,
    *,
    target_hospital_id: int,
    question: str,
    urgency: str,
    study_stable: bool,
    all_sent: bool = False,
) -> int:
    """Ask another hospital for an opinion on a study this user's hospital sent."""
    study = conn.execute(select(studies).where(studies.c.id == study_pk)).first()
    if study is None:
        raise NotFound("study not found")
    _raise(refuse_request(user, study.hospital_id))
    question = question.strip()
    if not question:
        raise BadRequest("question is required")
    if len(question) > MAX_QUESTION:
        raise BadRequest(f"question must be at most {MAX_QUESTION} characters")
    try:
        level = Urgency(urgency)
    except ValueError:
        raise BadRequest(
            f"urgency must be one of {', '.join(u.value for u in Urgency)}, got {urgency!r}"
        ) from None
    if target_hospital_id == user.hospital_id:
        raise BadRequest("target hospital must be another hospital")
    target = conn.execute(
        select(hospitals.c.id).where(hospitals.c.id == target_hospital_id)
    ).first()
    if target is None:
        raise BadRequest(f"no hospital with id {target_hospital_id}")
    if not study_stable and not all_sent:
        raise Conflict(
            "the study is still arriving; wait until it is stable or confirm all images were sent"
        )
    open_one = conn.execute(
        select(consultations.c.id).where(
            consultations.c.study_pk == study_pk,
            consultations.c.target_hospital_id == target_hospital_id,
            consultations.c.status.in_([s.value for s in OPEN]),
        )
    ).first()
    if open_one is not None:
        raise Conflict(
            f"an open consultation on this study to that hospital exists ({open_one.id})"
        )
    now = utcnow()
    return insert_id(
        conn,
        consultations.insert().values(
            study_pk=study_pk,
            requesting_hospital_id=user.hospital_id,
            requested_by=user.id,
            target_hospital_id=target_hospital_id,
            question=question,
            urgency=level.value,
            status=ConsultationStatus.REQUESTED.value,
            accepted_by=None,
            created_at=now,
            updated_at=now,
        ),
    )


def _transition(
    conn: Connection,
    consultation_id: int,
    expected: ConsultationStatus,
    new: ConsultationStatus,
    **values: object,
) -> None:
    result = conn.execute(
        update(consultations)
        .where(consultations.c.id == consultation_id, consultations.c.status == expected.value)
        .values(status=new.value, updated_at=utcnow(), **values)
    )
    if result.rowcount != 1:
        current = get(conn, consultation_id).status
        raise Conflict(f"consultation is {current.value}, not {expected.value}")


# Who may do what, and when: each rule once, used both to refuse an action (the error
# says why) and to offer it in the pages (:func:`allowed`).


def refuse_request(user: User, study_hospital_id: int) -> ConsultError | None:
    """Why ``user`` may not request a consultation on a study of that hospital, if not."""
    if user.role is not Role.REFERRING:
        return Forbidden("only referring doctors can request a consultation")
    if study_hospital_id != user.hospital_id:
        return Forbidden("only the hospital that sent the study can request a consultation")
    return None


def _refuse_status(c: Consultation, *expected: ConsultationStatus) -> ConsultError | None:
    if c.status in expected:
        return None
    return Conflict(f"consultation is {c.status.value}, not {' or '.join(expected)}")


def refuse_answer(user: User, c: Consultation, verb: str = "accept") -> ConsultError | None:
    """Why ``user`` may not accept (or decline) ``c`` now, if not."""
    if user.role is not Role.SPECIALIST or user.hospital_id != c.target_hospital_id:
        return Forbidden(f"only a specialist of {c.target_hospital} can {verb} this consultation")
    return _refuse_status(c, ConsultationStatus.REQUESTED)


def refuse_close(user: User, c: Consultation) -> ConsultError | None:
    """Why ``user`` may not close ``c`` now, if not."""
    if user.hospital_id != c.requesting_hospital_id or user.role is Role.SPECIALIST:
        return Forbidden(f"only {c.requesting_hospital} can close this consultation")
    return _refuse_status(c, ConsultationStatus.ANSWERED)


def refuse_opinion(user: User, c: Consultation) -> ConsultError | None:
    """Why ``user`` may not write (or sign) the opinion of ``c`` now, if not (a signed
    opinion is refused by :mod:`consult.consultations.opinions`)."""
    if c.accepted_by_id is None or c.accepted_by_id != user.id:
        return Forbidden("only the specialist who accepted the consultation writes its opinion")
    if c.status is not ConsultationStatus.ACCEPTED:
        return Conflict(f"consultation is {c.status.value}; an opinion needs it accepted")
    return None


def refuse_post(user: User, c: Consultation) -> ConsultError | None:
    """Why ``user`` may not post to the thread of ``c`` now, if not: participants post once
    it is accepted; the requesting side may also post while it is requested."""
    if not is_participant(user, c):
        return Forbidden("only the two hospitals of the consultation can post")
    if c.status in (ConsultationStatus.ACCEPTED, ConsultationStatus.ANSWERED):
        return None
    if c.status is ConsultationStatus.REQUESTED and user.hospital_id == c.requesting_hospital_id:
        return None
    return Conflict(f"cannot post to a consultation that is {c.status.value}")


def _raise(refusal: ConsultError | None) -> None:
    if refusal is not None:
        raise refusal


@dataclass(frozen=True)
class Allowed:
    """What ``user`` may do to a consultation now: what the pages offer."""

    answer: bool
    """Accept or decline it."""
    post: bool
    """Post to the thread."""
    write_opinion: bool
    """Write, save and sign the opinion."""
    close: bool
    """Close it."""


def allowed(user: User, c: Consultation, *, opinion_signed: bool) -> Allowed:
    return Allowed(
        answer=refuse_answer(user, c) is None,
        post=refuse_post(user, c) is None,
        write_opinion=refuse_opinion(user, c) is None and not opinion_signed,
        close=refuse_close(user, c) is None,
    )


def accept(conn: Connection, user: User, consultation_id: int) -> None:
    c = get(conn, consultation_id)
    _raise(refuse_answer(user, c, "accept"))
    _transition(
        conn,
        consultation_id,
        ConsultationStatus.REQUESTED,
        ConsultationStatus.ACCEPTED,
        accepted_by=user.id,
    )


def decline(conn: Connection, user: User, consultation_id: int) -> None:
    c = get(conn, consultation_id)
    _raise(refuse_answer(user, c, "decline"))
    _transition(conn, consultation_id, ConsultationStatus.REQUESTED, ConsultationStatus.DECLINED)


def mark_answered(conn: Connection, consultation_id: int) -> None:
    """The opinion was signed (called by :mod:`consult.consultations.opinions`, in its
    transaction)."""
    _transition(conn, consultation_id, ConsultationStatus.ACCEPTED, ConsultationStatus.ANSWERED)


def close(conn: Connection, user: User, consultation_id: int) -> None:
    """The referring hospital closes an answered consultation."""
    c = get(conn, consultation_id)
    _raise(refuse_close(user, c))
    _transition(conn, consultation_id, ConsultationStatus.ANSWERED, ConsultationStatus.CLOSED)


def is_participant(user: User, c: Consultation) -> bool:
    """Whether ``user``'s hospital takes part in ``c`` (:func:`consult.access.taking_part`)."""
    return access.takes_part(
        user.hospital_id,
        requesting_id=c.requesting_hospital_id,
        target_id=c.target_hospital_id,
        status=c.status.value,
    )


def post_message(conn: Connection, user: User, consultation_id: int, body: str) -> int:
    c = get(conn, consultation_id)
    _raise(refuse_post(user, c))
    if not body.strip():
        raise BadRequest("message is empty")
    if len(body) > MAX_MESSAGE:
        raise BadRequest(f"message must be at most {MAX_MESSAGE} characters")
    now = utcnow()
    message_id = insert_id(
        conn,
        messages.insert().values(
            consultation_pk=consultation_id, author_id=user.id, body=body, created_at=now
        ),
    )
    conn.execute(
        update(consultations).where(consultations.c.id == consultation_id).values(updated_at=now)
    )
    return message_id


def thread(conn: Connection, consultation_id: int) -> list[Message]:
    rows = conn.execute(
        select(
            messages.c.id,
            messages.c.body,
            messages.c.created_at,
            users.c.display_name,
            hospitals.c.name.label("hospital"),
        )
        .join(users, users.c.id == messages.c.author_id)
        .join(hospitals, hospitals.c.id == users.c.hospital_id)
        .where(messages.c.consultation_pk == consultation_id)
        .order_by(messages.c.created_at, messages.c.id)
    ).all()
    return [
        Message(
            id=r.id,
            author=r.display_name,
            author_hospital=r.hospital,
            body=r.body,
            created_at=as_utc(r.created_at),
        )
        for r in rows
    ]
