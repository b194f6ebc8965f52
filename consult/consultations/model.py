"""What a consultation is: its states, urgencies, and the records read from the catalog."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


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
