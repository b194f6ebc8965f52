"""Opinions: written by the specialist who accepted a consultation, signed, then immutable.

One opinion per consultation. While a draft, its author edits it freely. Signing records
the signer, the time (UTC) and the SHA-256 of the exact UTF-8 text, and from then on any
edit is refused with :class:`OpinionAlreadySigned`: every UPDATE here is conditional on
``status = 'draft'``, so even a racing edit cannot change a signed text.

In the signing transaction the consultation becomes ``answered`` and the return of the
opinion to the requesting hospital is queued: one ``deliveries`` row (pending) per
destination peer of that hospital, and one ``deliver_opinion`` job that sends them all.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import aliased

from consult import consultations, jobs
from consult.access.directory import User, destinations
from consult.catalog import as_utc, insert_id, utcnow
from consult.catalog.tables import consultations as consultations_table
from consult.catalog.tables import deliveries, opinions, peers, users
from consult.consultations import permissions
from consult.errors import BadRequest, Conflict, Forbidden, OpinionAlreadySigned

log = logging.getLogger(__name__)

MAX_OPINION = 100_000


class OpinionStatus(enum.StrEnum):
    """Whether an opinion may still change."""

    DRAFT = "draft"
    """Being written; only its author sees and edits it."""
    SIGNED = "signed"
    """Signed by its author: final, immutable, sent back to the requesting hospital."""


class DeliveryStatus(enum.StrEnum):
    """Where the return of a signed opinion to one destination peer stands (a ``deliveries``
    row: created here when the opinion is signed, moved on by the job in
    :mod:`consult.consultations.delivery`, which imports this module)."""

    PENDING = "pending"
    """Not sent yet: queued with the signature (or when the hospital got its first peer)."""
    SENT = "sent"
    """The peer answered the C-STORE with success or a warning: it keeps the SR; final."""
    FAILED = "failed"
    """The last attempt did not get the SR stored; ``detail`` says why. The job retries."""


@dataclass(frozen=True)
class Delivery:
    id: int
    peer_ae_title: str
    peer_host: str
    peer_port: int | None
    status: DeliveryStatus
    dicom_status: int | None
    detail: str | None
    updated_at: datetime


@dataclass(frozen=True)
class Opinion:
    id: int
    consultation_id: int
    author_id: int
    author: str
    body: str
    status: OpinionStatus
    signed_by: str | None
    signed_at: datetime | None
    sha256: str | None
    created_at: datetime
    updated_at: datetime


def text_sha256(body: str) -> str:
    """The SHA-256 that signing records: of the exact UTF-8 bytes of the text."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def get(conn: Connection, consultation_id: int) -> Opinion | None:
    author = aliased(users)
    signer = aliased(users)
    row = conn.execute(
        select(
            opinions,
            author.c.display_name.label("author_name"),
            signer.c.display_name.label("signer_name"),
        )
        .join(author, author.c.id == opinions.c.author_id)
        .outerjoin(signer, signer.c.id == opinions.c.signed_by)
        .where(opinions.c.consultation_pk == consultation_id)
    ).first()
    if row is None:
        return None
    return Opinion(
        id=row.id,
        consultation_id=row.consultation_pk,
        author_id=row.author_id,
        author=row.author_name,
        body=row.body,
        status=OpinionStatus(row.status),
        signed_by=row.signer_name,
        signed_at=as_utc(row.signed_at) if row.signed_at is not None else None,
        sha256=row.sha256,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def visible_to(user: User, opinion: Opinion | None) -> Opinion | None:
    """A draft is its author's alone; a signed opinion is for every participant."""
    if opinion is None:
        return None
    if opinion.status is OpinionStatus.SIGNED or opinion.author_id == user.id:
        return opinion
    return None


def _check_body(body: str) -> None:
    if len(body) > MAX_OPINION:
        raise BadRequest(f"opinion must be at most {MAX_OPINION} characters")


def _check_author(conn: Connection, user: User, consultation_id: int) -> Opinion | None:
    """The existing opinion, after checking that ``user`` may write it now."""
    c = consultations.get(conn, consultation_id)
    refusal = permissions.refuse_opinion(user, c)
    if isinstance(refusal, Forbidden):
        raise refusal
    existing = get(conn, consultation_id)
    if existing is not None and existing.status is OpinionStatus.SIGNED:
        raise OpinionAlreadySigned("the opinion is signed and can no longer be changed")
    if refusal is not None:
        raise refusal
    return existing


def save_draft(conn: Connection, user: User, consultation_id: int, body: str) -> Opinion:
    """Create or replace the draft text."""
    _check_body(body)
    existing = _check_author(conn, user, consultation_id)
    now = utcnow()
    if existing is None:
        insert_id(
            conn,
            opinions.insert().values(
                consultation_pk=consultation_id,
                author_id=user.id,
                body=body,
                status=OpinionStatus.DRAFT.value,
                created_at=now,
                updated_at=now,
            ),
        )
    else:
        result = conn.execute(
            update(opinions)
            .where(opinions.c.id == existing.id, opinions.c.status == OpinionStatus.DRAFT.value)
            .values(body=body, updated_at=now)
        )
        if result.rowcount != 1:
            raise OpinionAlreadySigned("the opinion is signed and can no longer be changed")
    saved = get(conn, consultation_id)
    assert saved is not None
    return saved


def sign(conn: Connection, user: User, consultation_id: int, body: str | None = None) -> Opinion:
    """Sign the opinion (with ``body`` as its final text, if given) and queue its delivery."""
    if body is not None:
        save_draft(conn, user, consultation_id, body)
    existing = _check_author(conn, user, consultation_id)
    if existing is None:
        raise Conflict("there is no draft to sign; write the opinion first")
    if not existing.body.strip():
        raise BadRequest("an empty opinion cannot be signed")
    now = utcnow()
    result = conn.execute(
        update(opinions)
        .where(opinions.c.id == existing.id, opinions.c.status == OpinionStatus.DRAFT.value)
        .values(
            status=OpinionStatus.SIGNED.value,
            signed_by=user.id,
            signed_at=now,
            sha256=text_sha256(existing.body),
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        raise OpinionAlreadySigned("the opinion is signed and can no longer be changed")
    consultations.mark_answered(conn, consultation_id)
    c = consultations.get(conn, consultation_id)
    targets = destinations(conn, c.requesting_hospital_id)
    for peer in targets:
        conn.execute(
            deliveries.insert().values(
                opinion_pk=existing.id,
                peer_pk=peer.id,
                status=DeliveryStatus.PENDING.value,
                updated_at=now,
            )
        )
    if targets:
        jobs.enqueue(
            conn,
            "deliver_opinion",
            {"opinion_id": existing.id},
            dedup_key=f"deliver-opinion-{existing.id}",
        )
    else:
        log.warning(
            "opinion %s signed but hospital %s has no destination peer",
            existing.id,
            c.requesting_hospital_id,
        )
    signed = get(conn, consultation_id)
    assert signed is not None
    return signed


def queue_undelivered(conn: Connection, hospital_id: int, new_peer_id: int) -> list[int]:
    """Queue the delivery of ``hospital_id``'s signed opinions that were never sent anywhere
    (signed while the hospital had no peer to send to); returns their ids.

    For when the hospital gets a destination peer (``new_peer_id``). Opinions already
    delivered (or being delivered) to another peer are left alone: a PACS added beside the
    first one does not get the old opinions again.
    """
    delivered = select(deliveries.c.id).where(deliveries.c.opinion_pk == opinions.c.id)
    rows = conn.execute(
        select(opinions.c.id)
        .join(consultations_table, consultations_table.c.id == opinions.c.consultation_pk)
        .where(
            consultations_table.c.requesting_hospital_id == hospital_id,
            opinions.c.status == OpinionStatus.SIGNED.value,
            ~delivered.exists(),
        )
        .order_by(opinions.c.id)
    ).all()
    queued = []
    for row in rows:
        job = jobs.enqueue(
            conn,
            "deliver_opinion",
            {"opinion_id": int(row.id)},
            dedup_key=f"deliver-opinion-{row.id}-to-new-peer-{new_peer_id}",
        )
        if job is not None:
            queued.append(int(row.id))
    return queued


def delivery_status(conn: Connection, opinion_id: int) -> list[Delivery]:
    rows = conn.execute(
        select(deliveries, peers.c.ae_title, peers.c.host, peers.c.port)
        .join(peers, peers.c.id == deliveries.c.peer_pk)
        .where(deliveries.c.opinion_pk == opinion_id)
        .order_by(deliveries.c.id)
    ).all()
    return [
        Delivery(
            id=r.id,
            peer_ae_title=r.ae_title,
            peer_host=r.host,
            peer_port=r.port,
            status=DeliveryStatus(r.status),
            dicom_status=r.dicom_status,
            detail=r.detail,
            updated_at=as_utc(r.updated_at),
        )
        for r in rows
    ]
