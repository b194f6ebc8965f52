"""Sending a signed opinion back to the referring hospital's PACS, as a Basic Text SR.

The job handler for kind ``deliver_opinion`` (payload ``{"opinion_id": N}``):

1. load the signed opinion, its consultation, study, signer and hospitals (refuse drafts);
2. give the opinion its SR series and SOP Instance UIDs once, saved before anything is
   sent, so that every re-send carries the same UIDs and the receiving PACS de-duplicates;
3. build the SR from the header of one current instance of the study and keep it in the
   object store (a re-send reuses the stored bytes);
4. C-STORE it to each ``deliveries`` row not yet sent (created from the requesting
   hospital's destination peers when the opinion has none), recording status and detail;
5. raise :class:`DeliveryFailed` after recording when any destination failed, so the job
   queue retries with backoff. Rows already sent are skipped: a re-run is idempotent.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from consult.access import audit, directory
from consult.catalog import as_utc, insert_id, utcnow
from consult.catalog.tables import (
    consultations,
    deliveries,
    hospitals,
    instance_versions,
    instances,
    opinions,
    peers,
    series,
    studies,
    users,
)
from consult.consultations.opinions import DeliveryStatus, OpinionStatus
from consult.consultations.sr import OpinionDocument, build_sr, to_part10
from consult.dicom import scu
from consult.dicom.part10 import read_header, text_of
from consult.errors import BadRequest, Conflict, ConsultError, NotFound
from consult.services import Services
from storage.keys import export_key

log = logging.getLogger(__name__)

KIND = "deliver_opinion"
TIMEOUT_S = 10.0
# Enough for the header of any sane instance (study and patient attributes come first);
# a header that does not fit is read from the whole object.
HEADER_BYTES = 4 * 1024 * 1024
# C-STORE statuses that mean the PACS kept the object (PS3.4 B.2.3: success, warnings).
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}
_SYSTEM = audit.Actor(user_id=None, username="system", client="delivery")


class DeliveryFailed(ConsultError):
    """At least one destination did not take the opinion; the job is retried."""

    status = 502


@dataclass(frozen=True)
class DeliveryOutcome:
    """What happened to one destination in this run."""

    delivery_id: int
    peer_ae: str
    host: str
    port: int | None
    status: DeliveryStatus  # SENT or FAILED
    dicom_status: int | None
    detail: str


@dataclass(frozen=True)
class _Target:
    delivery_id: int
    peer_ae: str
    host: str
    port: int | None


@dataclass(frozen=True)
class _Context:
    opinion_id: int
    text: str
    sha256: str
    signed_at: datetime
    signer_name: str
    signer_hospital: str
    question: str
    study_pk: int
    study_uid: str
    requesting_hospital_id: int


def handle_deliver_opinion(services: Services, payload: dict[str, Any]) -> None:
    """Job handler for ``deliver_opinion``."""
    opinion_id = payload.get("opinion_id")
    if not isinstance(opinion_id, int) or isinstance(opinion_id, bool) or opinion_id < 1:
        raise BadRequest(f"deliver_opinion payload needs an integer opinion_id, got {payload!r}")
    deliver_now(services, opinion_id)


def deliver_now(services: Services, opinion_id: int) -> list[DeliveryOutcome]:
    """Export the signed opinion and send it to every destination not yet served."""
    with services.catalog.read() as conn:
        ctx = _load(conn, opinion_id)
    series_uid, sop_uid = _ensure_uids(services, opinion_id)
    sr_bytes = _sr_object(services, ctx, series_uid, sop_uid)
    targets = _pending_targets(services, ctx)
    if not targets:
        log.info("opinion %d (SR %s): nothing left to deliver", opinion_id, sop_uid)
        return []
    dataset = dcmread(io.BytesIO(sr_bytes))
    outcomes = []
    for target in targets:
        outcome = _send(services.settings.ae_title, target, dataset)
        _record(services, ctx.opinion_id, outcome)
        outcomes.append(outcome)
    failed = [o for o in outcomes if o.status is not DeliveryStatus.SENT]
    if failed:
        names = ", ".join(f"{o.peer_ae}@{o.host}:{o.port} ({o.detail})" for o in failed)
        raise DeliveryFailed(f"opinion {opinion_id} not delivered to {names}")
    return outcomes


def _load(conn: Connection, opinion_id: int) -> _Context:
    op = conn.execute(select(opinions).where(opinions.c.id == opinion_id)).first()
    if op is None:
        raise NotFound(f"no opinion with id {opinion_id}")
    if op.status != OpinionStatus.SIGNED.value or op.signed_at is None or op.signed_by is None:
        raise Conflict(f"opinion {opinion_id} is not signed; only signed opinions are sent")
    cons = conn.execute(select(consultations).where(consultations.c.id == op.consultation_pk)).one()
    study = conn.execute(select(studies).where(studies.c.id == cons.study_pk)).one()
    signer = conn.execute(
        select(users.c.display_name, hospitals.c.name)
        .join(hospitals, hospitals.c.id == users.c.hospital_id)
        .where(users.c.id == op.signed_by)
    ).one()
    return _Context(
        opinion_id=opinion_id,
        text=op.body,
        sha256=op.sha256 or "",
        signed_at=as_utc(op.signed_at),
        signer_name=signer.display_name,
        signer_hospital=signer.name,
        question=cons.question,
        study_pk=int(study.id),
        study_uid=study.study_uid,
        requesting_hospital_id=int(cons.requesting_hospital_id),
    )


def _ensure_uids(services: Services, opinion_id: int) -> tuple[str, str]:
    """The opinion's SR UIDs, assigned and committed on first use (before any send)."""
    with services.catalog.write() as conn:
        # Only fills empty columns: a concurrent run that got here first keeps its UIDs.
        conn.execute(
            update(opinions)
            .where(opinions.c.id == opinion_id, opinions.c.sr_sop_instance_uid.is_(None))
            .values(sr_series_uid=generate_uid(), sr_sop_instance_uid=generate_uid())
        )
        row = conn.execute(
            select(opinions.c.sr_series_uid, opinions.c.sr_sop_instance_uid).where(
                opinions.c.id == opinion_id
            )
        ).one()
    if row.sr_series_uid is None:  # pragma: no cover - set together above
        raise Conflict(f"opinion {opinion_id} has an SR instance UID but no series UID")
    return str(row.sr_series_uid), str(row.sr_sop_instance_uid)


def _sr_object(services: Services, ctx: _Context, series_uid: str, sop_uid: str) -> bytes:
    """The SR's Part 10 bytes: the stored ones when an earlier run built them."""
    key = export_key(sop_uid)
    if services.store.exists(key):
        return services.store.get(key)
    header = _study_header(services, ctx)
    with services.catalog.read() as conn:
        institution = conn.execute(
            select(hospitals.c.name)
            .join(consultations, consultations.c.target_hospital_id == hospitals.c.id)
            .join(opinions, opinions.c.consultation_pk == consultations.c.id)
            .where(opinions.c.id == ctx.opinion_id)
        ).scalar_one()
    document = OpinionDocument(
        text=ctx.text,
        signer_name=ctx.signer_name,
        signer_hospital=ctx.signer_hospital,
        signed_at=ctx.signed_at,
        sha256=ctx.sha256,
        question=ctx.question,
        sr_series_uid=series_uid,
        sr_sop_instance_uid=sop_uid,
        institution_name=institution,
        ae_title=services.settings.ae_title,
    )
    data = to_part10(build_sr(header, document), ae_title=services.settings.ae_title)
    services.store.put(key, data, content_type="application/dicom")
    log.info("opinion %d exported as SR %s in study %s", ctx.opinion_id, sop_uid, ctx.study_uid)
    return data


def _study_header(services: Services, ctx: _Context) -> Dataset:
    """Header (up to group 0028) of one current instance of the study."""
    with services.catalog.read() as conn:
        row = conn.execute(
            select(
                instance_versions.c.object_key,
                instance_versions.c.dataset_offset,
                instance_versions.c.size,
                instance_versions.c.transfer_syntax_uid,
            )
            .select_from(instances)
            .join(series, series.c.id == instances.c.series_pk)
            .join(
                instance_versions,
                (instance_versions.c.instance_pk == instances.c.id)
                & (instance_versions.c.version == instances.c.current_version),
            )
            .where(series.c.study_pk == ctx.study_pk)
            .order_by(instances.c.id)
            .limit(1)
        ).first()
    if row is None:
        raise NotFound(f"study {ctx.study_uid} has no stored instance to copy the patient from")
    size, offset = int(row.size), int(row.dataset_offset)
    data = services.store.get_range(row.object_key, offset, min(size, HEADER_BYTES))
    header = read_header(data, row.transfer_syntax_uid)
    if "StudyInstanceUID" not in header and size > HEADER_BYTES:
        header = read_header(services.store.get(row.object_key)[offset:], row.transfer_syntax_uid)
    if text_of(header, "StudyInstanceUID", 64) != ctx.study_uid:
        raise Conflict(f"stored instance {row.object_key} is not in study {ctx.study_uid}")
    return header


def _pending_targets(services: Services, ctx: _Context) -> list[_Target]:
    """Deliveries not yet sent; rows are created for the destinations when there are none."""
    with services.catalog.write() as conn:
        existing = conn.execute(
            select(deliveries.c.id).where(deliveries.c.opinion_pk == ctx.opinion_id).limit(1)
        ).first()
        if existing is None:
            destinations = directory.destinations(conn, ctx.requesting_hospital_id)
            if not destinations:
                log.warning(
                    "opinion %d: hospital %d has no destination peer; nothing sent",
                    ctx.opinion_id,
                    ctx.requesting_hospital_id,
                )
            for peer in destinations:
                try:
                    with conn.begin_nested():
                        insert_id(
                            conn,
                            deliveries.insert().values(
                                opinion_pk=ctx.opinion_id,
                                peer_pk=peer.id,
                                status=DeliveryStatus.PENDING.value,
                                updated_at=utcnow(),
                            ),
                        )
                except IntegrityError:  # a concurrent run created it
                    continue
        rows = conn.execute(
            select(deliveries.c.id, peers.c.ae_title, peers.c.host, peers.c.port)
            .join(peers, peers.c.id == deliveries.c.peer_pk)
            .where(
                deliveries.c.opinion_pk == ctx.opinion_id,
                deliveries.c.status.in_(
                    [DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value]
                ),
            )
            .order_by(deliveries.c.id)
        ).all()
    return [_Target(int(r.id), r.ae_title, r.host, r.port) for r in rows]


def _send(calling_ae: str, target: _Target, dataset: Dataset) -> DeliveryOutcome:
    """C-STORE one dataset to one peer; never raises."""

    def outcome(status: DeliveryStatus, dicom_status: int | None, detail: str) -> DeliveryOutcome:
        return DeliveryOutcome(
            target.delivery_id,
            target.peer_ae,
            target.host,
            target.port,
            status,
            dicom_status,
            detail,
        )

    if target.port is None:
        return outcome(DeliveryStatus.FAILED, None, "peer has no port to send to")
    try:
        ae = scu.new_ae(calling_ae, TIMEOUT_S)
        ae.add_requested_context(
            BasicTextSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        assoc = ae.associate(target.host, target.port, ae_title=target.peer_ae)
        if not assoc.is_established:
            reason = (
                "rejected"
                if assoc.is_rejected
                else "aborted"
                if assoc.is_aborted
                else "could not be opened"
            )
            return outcome(DeliveryStatus.FAILED, None, f"association {reason}")
        scu.no_delay(assoc)
        try:
            response = assoc.send_c_store(dataset)
        finally:
            assoc.release()
    except Exception as exc:  # a network or encoding error must not lose the record
        log.exception("C-STORE to %s@%s:%s failed", target.peer_ae, target.host, target.port)
        return outcome(DeliveryStatus.FAILED, None, f"{type(exc).__name__}: {exc}"[:500])
    if "Status" not in response:
        return outcome(DeliveryStatus.FAILED, None, "no C-STORE response (timeout or abort)")
    code = int(response.Status)
    comment = text_of(response, "ErrorComment", 200)
    detail = f"C-STORE status 0x{code:04X}" + (f": {comment}" if comment else "")
    sent = code in _STORED
    return outcome(DeliveryStatus.SENT if sent else DeliveryStatus.FAILED, code, detail)


def _record(services: Services, opinion_id: int, outcome: DeliveryOutcome) -> None:
    with services.catalog.write() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == outcome.delivery_id)
            .values(
                status=outcome.status.value,
                dicom_status=outcome.dicom_status,
                detail=outcome.detail[:2000],
                updated_at=utcnow(),
            )
        )
        audit.record(
            conn,
            _SYSTEM,
            action="opinion.deliver",
            object_type="opinion",
            object_id=str(opinion_id),
            outcome=(
                audit.Outcome.SUCCESS
                if outcome.status is DeliveryStatus.SENT
                else audit.Outcome.FAILURE
            ),
            detail=f"{outcome.peer_ae}@{outcome.host}:{outcome.port} {outcome.detail}",
        )
    log_at = logging.INFO if outcome.status is DeliveryStatus.SENT else logging.WARNING
    log.log(
        log_at,
        "opinion %d to %s@%s:%s: %s",
        opinion_id,
        outcome.peer_ae,
        outcome.host,
        outcome.port,
        outcome.detail,
    )
