"""Hospitals, their DICOM peers, and users: who is who.

Roles are fixed: ``admin`` (manages its hospital), ``referring`` (asks for opinions on
studies its hospital sent) and ``specialist`` (answers consultations sent to its hospital).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from consult.catalog import insert_id, utcnow
from consult.catalog.tables import hospitals, peers, users
from consult.dicom import identifiers
from consult.errors import BadRequest, Conflict, NotFound, UserNotFound

_hasher = PasswordHasher()
_USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")
UNKNOWN_SENDER = "unknown sender"


class Role(enum.StrEnum):
    """What a user may do."""

    ADMIN = "admin"
    """Manages the hospital's users and peers; sees its studies."""
    REFERRING = "referring"
    """Asks for consultations on studies the hospital sent, answers in the thread."""
    SPECIALIST = "specialist"
    """Accepts consultations sent to the hospital, discusses, writes and signs opinions."""


@dataclass(frozen=True)
class Hospital:
    id: int
    name: str


@dataclass(frozen=True)
class Peer:
    id: int
    hospital_id: int
    ae_title: str
    host: str
    port: int | None


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    hospital_id: int
    role: Role
    disabled: bool


def add_hospital(conn: Connection, name: str) -> Hospital:
    name = name.strip()
    if not name or len(name) > 200:
        raise BadRequest(f"hospital name must be 1-200 characters, got {name!r}")
    try:
        with conn.begin_nested():
            pk = insert_id(
                conn,
                hospitals.insert().values(name=name, created_at=utcnow()),
            )
    except IntegrityError:
        raise Conflict(f"hospital {name!r} exists already") from None
    return Hospital(id=int(pk), name=name)


def get_hospital(conn: Connection, name: str) -> Hospital:
    row = conn.execute(select(hospitals).where(hospitals.c.name == name)).first()
    if row is None:
        raise NotFound(f"no hospital named {name!r}")
    return Hospital(id=row.id, name=row.name)


def get_or_add_hospital(conn: Connection, name: str) -> Hospital:
    try:
        return get_hospital(conn, name)
    except NotFound:
        return add_hospital(conn, name)


def list_hospitals(conn: Connection) -> list[Hospital]:
    rows = conn.execute(select(hospitals).order_by(hospitals.c.name)).all()
    return [Hospital(id=r.id, name=r.name) for r in rows]


def add_peer(
    conn: Connection, hospital: Hospital, ae_title: str, host: str, port: int | None = None
) -> Peer:
    ae_title = identifiers.ae_title(ae_title, "peer AE title", error=BadRequest)
    host = host.strip()
    if not host or len(host) > 255 or not all(c.isalnum() or c in ".-:_" for c in host):
        raise BadRequest(f"peer host must be a host name or address, got {host!r}")
    if port is not None and not 0 < port < 65536:
        raise BadRequest(f"peer port must be 1-65535, got {port}")
    try:
        with conn.begin_nested():
            pk = insert_id(
                conn,
                peers.insert().values(
                    hospital_id=hospital.id,
                    ae_title=ae_title,
                    host=host,
                    port=port,
                    created_at=utcnow(),
                ),
            )
    except IntegrityError:
        raise Conflict(f"peer {ae_title}@{host} exists already") from None
    return Peer(id=int(pk), hospital_id=hospital.id, ae_title=ae_title, host=host, port=port)


def _peer(row: object) -> Peer:
    return Peer(
        id=row.id,  # type: ignore[attr-defined]
        hospital_id=row.hospital_id,  # type: ignore[attr-defined]
        ae_title=row.ae_title,  # type: ignore[attr-defined]
        host=row.host,  # type: ignore[attr-defined]
        port=row.port,  # type: ignore[attr-defined]
    )


def find_peer(conn: Connection, ae_title: str, host: str) -> Peer | None:
    """The registered peer for a calling AE title from a host, if any."""
    row = conn.execute(
        select(peers).where(peers.c.ae_title == ae_title.strip(), peers.c.host == host)
    ).first()
    return None if row is None else _peer(row)


def destinations(conn: Connection, hospital_id: int) -> list[Peer]:
    """Peers of a hospital we can send to (those with a port)."""
    rows = conn.execute(
        select(peers)
        .where(peers.c.hospital_id == hospital_id, peers.c.port.is_not(None))
        .order_by(peers.c.id)
    ).all()
    return [_peer(r) for r in rows]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def add_user(
    conn: Connection,
    username: str,
    *,
    hospital: Hospital,
    role: Role,
    password: str,
    display_name: str = "",
) -> User:
    if not _USERNAME.match(username):
        raise BadRequest(f"username must be 1-100 of A-Z a-z 0-9 . _ @ -, got {username!r}")
    if len(password) < 8:
        raise BadRequest("password must have at least 8 characters")
    try:
        with conn.begin_nested():
            pk = insert_id(
                conn,
                users.insert().values(
                    username=username,
                    display_name=display_name or username,
                    hospital_id=hospital.id,
                    role=role.value,
                    password_hash=hash_password(password),
                    disabled=False,
                    created_at=utcnow(),
                ),
            )
    except IntegrityError:
        raise Conflict(f"user {username!r} exists already") from None
    return User(
        id=int(pk),
        username=username,
        display_name=display_name or username,
        hospital_id=hospital.id,
        role=role,
        disabled=False,
    )


def _user(row: object) -> User:
    return User(
        id=row.id,  # type: ignore[attr-defined]
        username=row.username,  # type: ignore[attr-defined]
        display_name=row.display_name,  # type: ignore[attr-defined]
        hospital_id=row.hospital_id,  # type: ignore[attr-defined]
        role=Role(row.role),  # type: ignore[attr-defined]
        disabled=bool(row.disabled),  # type: ignore[attr-defined]
    )


def get_user_by_name(conn: Connection, username: str) -> User:
    row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        raise UserNotFound(f"no user named {username!r}")
    return _user(row)


def authenticate(conn: Connection, username: str, password: str) -> User | None:
    """The user if the password matches and the account is enabled, else None."""
    row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        # Spend the same time as a real check so user names cannot be probed by timing.
        _hasher.hash(password)
        return None
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    user = _user(row)
    return None if user.disabled else user


def set_disabled(conn: Connection, username: str, disabled: bool) -> None:
    result = conn.execute(
        users.update().where(users.c.username == username).values(disabled=disabled)
    )
    if result.rowcount != 1:
        raise UserNotFound(f"no user named {username!r}")
