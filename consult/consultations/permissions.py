"""Who may do what to a consultation, and when: each rule once.

Each ``refuse_*`` says why an action is refused (a :class:`Forbidden` for the wrong user,
a :class:`Conflict` for the wrong moment), or None. The actions in
:mod:`consult.consultations.lifecycle` and :mod:`consult.consultations.opinions` raise that
refusal; the pages offer what :func:`allowed` says, so they never offer a refused action.
"""

from __future__ import annotations

from dataclasses import dataclass

from consult import access
from consult.access.directory import Role, User
from consult.consultations.model import Consultation, ConsultationStatus
from consult.errors import Conflict, ConsultError, Forbidden


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


def raise_if(refusal: ConsultError | None) -> None:
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


def is_participant(user: User, c: Consultation) -> bool:
    """Whether ``user``'s hospital takes part in ``c`` (:func:`consult.access.taking_part`)."""
    return access.takes_part(
        user.hospital_id,
        requesting_id=c.requesting_hospital_id,
        target_id=c.target_hospital_id,
        status=c.status.value,
    )
