"""The audit log: who did what, when (UTC), from where, with what outcome.

One event model for every access to patient data and every state change. Events that
would repeat for each image of a study (preview reads) carry a ``dedup_key`` and are
written once per (session, instance version); the unique index on the column makes the
second insert a no-op even when two requests race.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from consult.access.directory import User
from consult.catalog import Catalog, as_utc, utcnow
from consult.catalog.tables import audit_events
from consult.errors import ConsultError

T = TypeVar("T")

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """How an audited action ended."""

    SUCCESS = "success"
    """The user was allowed and the action was done."""
    DENIED = "denied"
    """The user was refused (no access, wrong role, invalid state)."""
    FAILURE = "failure"
    """The action was allowed but failed for another reason."""


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where: enough to write an event without a user lookup."""

    user_id: int | None
    username: str
    client: str

    @classmethod
    def of(cls, user: User, client: str) -> Actor:
        return cls(user_id=user.id, username=user.username, client=client)


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    user_id: int | None
    username: str
    action: str
    object_type: str
    object_id: str
    outcome: Outcome
    client: str
    detail: str


def record(
    conn: Connection,
    actor: Actor,
    *,
    action: str,
    object_type: str,
    object_id: str,
    outcome: Outcome,
    detail: str = "",
    dedup_key: str | None = None,
) -> bool:
    """Write one event in the caller's transaction; False if ``dedup_key`` was already used."""
    values = {
        "at": utcnow(),
        "user_id": actor.user_id,
        "username": _text(actor.username, 100),
        "action": action[:60],
        "object_type": object_type[:40],
        "object_id": _text(object_id, 128),
        "outcome": outcome.value,
        "client": actor.client[:100],
        "detail": _text(detail, 2000),
        "dedup_key": dedup_key,
    }
    if dedup_key is None:
        conn.execute(audit_events.insert().values(**values))
        return True
    if seen(conn, dedup_key):
        return False
    try:
        with conn.begin_nested():
            conn.execute(audit_events.insert().values(**values))
    except IntegrityError:
        return False
    return True


def perform(
    catalog: Catalog,
    actor: Actor,
    fn: Callable[[Connection], T],
    *,
    action: str,
    object_type: str,
    object_id: str,
    detail: str = "",
) -> T:
    """Run a state change in one write transaction together with its audit event.

    A refusal (an error below 500: bad request, forbidden, not found, conflict) is audited
    as denied, with its message, and raised again.
    """

    def event(conn: Connection, outcome: Outcome, detail: str) -> None:
        record(
            conn,
            actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            outcome=outcome,
            detail=detail,
        )

    try:
        with catalog.write() as conn:
            result = fn(conn)
            event(conn, Outcome.SUCCESS, detail)
        return result
    except ConsultError as exc:
        if exc.status >= 500:
            raise
        with catalog.write() as conn:
            event(conn, Outcome.DENIED, str(exc))
        raise


def _text(value: str, limit: int) -> str:
    """A string from a request, fit for a text column: NUL written out (PostgreSQL refuses
    it; a refused UID or user name may hold one), then cut to the column's length."""
    return value.replace("\x00", "\\x00")[:limit]


def seen(conn: Connection, dedup_key: str) -> bool:
    """Whether an event with this dedup key exists."""
    row = conn.execute(
        select(audit_events.c.id).where(audit_events.c.dedup_key == dedup_key)
    ).first()
    return row is not None


def events(
    conn: Connection,
    *,
    object_id: str | None = None,
    username: str | None = None,
    limit: int = 200,
) -> list[AuditEvent]:
    """The newest events first, optionally for one object or one user."""
    stmt = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    if object_id is not None:
        stmt = stmt.where(audit_events.c.object_id == object_id)
    if username is not None:
        stmt = stmt.where(audit_events.c.username == username)
    return [
        AuditEvent(
            id=r.id,
            at=as_utc(r.at),
            user_id=r.user_id,
            username=r.username,
            action=r.action,
            object_type=r.object_type,
            object_id=r.object_id,
            outcome=Outcome(r.outcome),
            client=r.client,
            detail=r.detail,
        )
        for r in conn.execute(stmt).all()
    ]
