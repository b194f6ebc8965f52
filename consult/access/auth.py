"""Logins and server-side sessions.

The session cookie holds a random token; the catalog holds only its SHA-256, so a copy of
the database does not let anyone log in. Every request looks the session up together with
its user: logging out deletes the row, and a disabled user's sessions stop working on the
next request. Each session has its own CSRF token, sent back in forms (``csrf_token``) and
by API clients (``X-CSRF-Token``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select

from consult.access import audit
from consult.access.audit import Actor, Outcome
from consult.access.directory import Role, User, authenticate
from consult.catalog import Catalog, as_utc, utcnow
from consult.catalog.tables import hospitals, sessions, users
from consult.errors import Forbidden, NotAuthenticated

log = logging.getLogger(__name__)

COOKIE_NAME = "consult_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_MAX_TOKEN = 128


@dataclass(frozen=True)
class Session:
    """A live session and the user it belongs to."""

    token_hash: str
    user: User
    hospital_name: str
    csrf_token: str
    expires_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def sign_in(
    catalog: Catalog,
    username: str,
    password: str,
    *,
    client: str,
    hours: float,
    old_token: str | None = None,
) -> tuple[str, Session]:
    """Check the password and open a session (ending ``old_token``'s, and purging expired
    ones); returns (cookie token, session). Audited either way; a refusal raises
    :class:`NotAuthenticated`.

    The password hash is checked in a read transaction: it takes a tenth of a second or
    more, and must not hold the catalog's write lock (ingest waits on it) while it runs.
    """
    user = None
    if username and len(username) <= 100 and len(password) <= 1024:
        with catalog.read() as conn:
            user = authenticate(conn, username, password)
    if user is None:
        log.info("login refused for a user name from %s", client)
        with catalog.write() as conn:
            audit.record(
                conn,
                Actor(user_id=None, username=username[:100], client=client),
                action="session.login",
                object_type="user",
                object_id=username[:128],
                outcome=Outcome.DENIED,
                detail="wrong user name or password, or account disabled",
            )
        raise NotAuthenticated("wrong user name or password")
    with catalog.write() as conn:
        logout(conn, old_token)
        purge_expired(conn)
        token, session = open_session(conn, user, client=client, hours=hours)
        audit.record(
            conn,
            Actor.of(user, client),
            action="session.login",
            object_type="user",
            object_id=str(user.id),
            outcome=Outcome.SUCCESS,
        )
    return token, session


def sign_out(catalog: Catalog, token: str | None, session: Session | None, *, client: str) -> None:
    """End the session of a cookie token; audited when it was a live session."""
    with catalog.write() as conn:
        logout(conn, token)
        if session is not None:
            audit.record(
                conn,
                Actor.of(session.user, client),
                action="session.logout",
                object_type="user",
                object_id=str(session.user.id),
                outcome=Outcome.SUCCESS,
            )


def open_session(conn: Connection, user: User, *, client: str, hours: float) -> tuple[str, Session]:
    token = new_token()
    csrf = secrets.token_hex(32)
    now = utcnow()
    expires = now + timedelta(hours=hours)
    digest = token_hash(token)
    conn.execute(
        sessions.insert().values(
            token_hash=digest,
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=expires,
            client=client[:100],
        )
    )
    name = conn.execute(
        select(hospitals.c.name).where(hospitals.c.id == user.hospital_id)
    ).scalar_one()
    session = Session(
        token_hash=digest, user=user, hospital_name=name, csrf_token=csrf, expires_at=expires
    )
    return token, session


def resolve(conn: Connection, token: str | None) -> Session | None:
    """The live session for a cookie token, or None (unknown, expired, user disabled)."""
    if not token or len(token) > _MAX_TOKEN:
        return None
    digest = token_hash(token)
    row = conn.execute(
        select(
            sessions.c.token_hash,
            sessions.c.csrf_token,
            sessions.c.expires_at,
            users.c.id,
            users.c.username,
            users.c.display_name,
            users.c.hospital_id,
            users.c.role,
            users.c.disabled,
            hospitals.c.name.label("hospital_name"),
        )
        .join(users, users.c.id == sessions.c.user_id)
        .join(hospitals, hospitals.c.id == users.c.hospital_id)
        .where(sessions.c.token_hash == digest)
    ).first()
    if row is None or row.disabled:
        return None
    expires = as_utc(row.expires_at)
    if expires <= utcnow():
        return None
    user = User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        hospital_id=row.hospital_id,
        role=Role(row.role),
        disabled=False,
    )
    return Session(
        token_hash=row.token_hash,
        user=user,
        hospital_name=row.hospital_name,
        csrf_token=row.csrf_token,
        expires_at=expires,
    )


def logout(conn: Connection, token: str | None) -> bool:
    """Delete the session row for a cookie token; True if there was one."""
    if not token or len(token) > _MAX_TOKEN:
        return False
    result = conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash(token)))
    return result.rowcount == 1


def end_user_sessions(conn: Connection, user_id: int) -> int:
    """Log a user out everywhere; returns the number of sessions ended."""
    return int(conn.execute(delete(sessions).where(sessions.c.user_id == user_id)).rowcount)


def purge_expired(conn: Connection) -> int:
    """Delete the sessions that have expired (every login does this); returns how many."""
    return int(conn.execute(delete(sessions).where(sessions.c.expires_at <= utcnow())).rowcount)


def check_csrf(session: Session, provided: str | None) -> None:
    """Refuse a state change whose CSRF token is missing or not the session's."""
    if not provided or not hmac.compare_digest(
        provided.encode("utf-8", "replace"), session.csrf_token.encode("utf-8")
    ):
        raise Forbidden("CSRF token missing or wrong; reload the page and try again")
