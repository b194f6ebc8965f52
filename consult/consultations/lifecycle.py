"""Consultations: one hospital asks another for an opinion on a study, and they discuss it.

Lifecycle::

    requested --accept--> accepted --opinion signed--> answered --close--> closed
        \\--decline--> declined

Every state change is a conditional UPDATE on the expected status, so two users acting
at once cannot both win; the loser gets :class:`Conflict`. Access to the study itself is
checked by :mod:`consult.access.check`; who may do what to a consultation, by
:mod:`consult.consultations.permissions`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, Select, or_, select, update
from sqlalchemy.orm import aliased

from consult import access
from consult.access import audit
from consult.access.audit import Actor, Outcome
from consult.access.directory import Role, User
from consult.catalog import Catalog, as_utc, insert_id, utcnow
from consult.catalog.tables import consultations, hospitals, messages, patients, studies, users
from consult.consultations import permissions
from consult.consultations.model import (
    OPEN,
    Consultation,
    ConsultationStatus,
    Message,
    Urgency,
)
from consult.dicom.display import display_name
from consult.errors import BadRequest, Conflict, ConsultationNotFound, NotFound

MAX_QUESTION = 10_000
MAX_MESSAGE = 20_000


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
    permissions.raise_if(permissions.refuse_request(user, study.hospital_id))
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


def accept(conn: Connection, user: User, consultation_id: int) -> None:
    c = get(conn, consultation_id)
    permissions.raise_if(permissions.refuse_answer(user, c, "accept"))
    _transition(
        conn,
        consultation_id,
        ConsultationStatus.REQUESTED,
        ConsultationStatus.ACCEPTED,
        accepted_by=user.id,
    )


def decline(conn: Connection, user: User, consultation_id: int) -> None:
    c = get(conn, consultation_id)
    permissions.raise_if(permissions.refuse_answer(user, c, "decline"))
    _transition(conn, consultation_id, ConsultationStatus.REQUESTED, ConsultationStatus.DECLINED)


def mark_answered(conn: Connection, consultation_id: int) -> None:
    """The opinion was signed (called by :mod:`consult.consultations.opinions`, in its
    transaction)."""
    _transition(conn, consultation_id, ConsultationStatus.ACCEPTED, ConsultationStatus.ANSWERED)


def close(conn: Connection, user: User, consultation_id: int) -> None:
    """The referring hospital closes an answered consultation."""
    c = get(conn, consultation_id)
    permissions.raise_if(permissions.refuse_close(user, c))
    _transition(conn, consultation_id, ConsultationStatus.ANSWERED, ConsultationStatus.CLOSED)


def post_message(conn: Connection, user: User, consultation_id: int, body: str) -> int:
    c = get(conn, consultation_id)
    permissions.raise_if(permissions.refuse_post(user, c))
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
