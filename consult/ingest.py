"""Ingest: validate a received dataset, store it byte-exact, index it, queue its preview.

No pynetdicom here: the receiver's handlers turn a C-STORE into a call to :func:`ingest`
and its outcome (or :class:`~consult.errors.InvalidDataset`, or a storage/catalog failure)
into a DICOM status.

Order of operations, so that success means safe and nothing half-stored is visible:

1. parse and validate the header (UIDs, size);
2. if this exact content is already indexed, stop: an identical retry is a no-op;
3. put the Part 10 object (our file meta + the dataset bytes as received) under a key made
   of hashes and the content's SHA-256, and wait for the store to acknowledge it;
4. in one catalog transaction: patient, study, series, instance, a new version, arrival
   counters and the preview job. A crash between 3 and 4 leaves an unindexed object that
   the sender's retry writes again under the same key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError

from consult import jobs
from consult.catalog import Catalog, CatalogUnavailable, insert_id, utcnow
from consult.catalog.driver import DriverStatement
from consult.catalog.tables import instance_versions, instances, patients, series, studies
from consult.dicomio import (
    check_complete,
    check_uid,
    int_of,
    read_header,
    received_prefix,
    split_part10,
    text_of,
)
from consult.errors import InvalidDataset
from consult.services import Services
from storage import LocalObjectStore, ObjectStore
from storage.keys import instance_key
from storage.local import StagedObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Who sent an instance: the sending hospital, calling AE title and peer address."""

    hospital_id: int
    calling_ae: str
    peer_host: str
    peer_port: int


@dataclass(frozen=True)
class StoredInstance:
    """The outcome of a successful ingest."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    version_id: int
    version: int
    sha256: str
    created: bool  # False when this exact content was already stored (an identical retry)


@dataclass(frozen=True)
class _Header:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    ds: Dataset


def _validate(data: bytes, transfer_syntax_uid: str, max_bytes: int) -> _Header:
    if len(data) > max_bytes:
        raise InvalidDataset(
            f"dataset of {len(data)} bytes exceeds CONSULT_MAX_DATASET_BYTES ({max_bytes})",
            dicom_status=0xC004,
        )
    ds = read_header(data, transfer_syntax_uid)
    check_complete(data, transfer_syntax_uid)
    return _Header(
        study_uid=check_uid(ds.get("StudyInstanceUID"), "Study Instance UID"),
        series_uid=check_uid(ds.get("SeriesInstanceUID"), "Series Instance UID"),
        sop_instance_uid=check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID"),
        sop_class_uid=check_uid(ds.get("SOPClassUID"), "SOP Class UID"),
        ds=ds,
    )


def ingest(
    services: Services,
    data: bytes,
    *,
    transfer_syntax_uid: str,
    origin: Origin,
    expected_sop_instance_uid: str | None = None,
) -> StoredInstance:
    """Store and index one received dataset (bytes exactly as received).

    Raises
    ------
    InvalidDataset
        The dataset is refused; ``dicom_status`` says why (0xC210 unparseable, 0xC002 a
        required UID missing, 0xC003 a hostile UID, 0xC004 too large, 0xA900 the SOP
        Instance UID differs from the request's, 0xC001 the study belongs to another sender).
    storage.StorageError, CatalogUnavailable
        The store or catalog failed: the sender should retry (0xA700).
    """
    transfer_syntax_uid = check_uid(transfer_syntax_uid, "Transfer Syntax UID")
    header = _validate(data, transfer_syntax_uid, services.settings.max_dataset_bytes)
    if expected_sop_instance_uid is not None and (
        expected_sop_instance_uid.rstrip("\x00 ") != header.sop_instance_uid
    ):
        raise InvalidDataset(
            "SOP Instance UID of the dataset differs from the C-STORE request's",
            dicom_status=0xA900,
        )
    prefix = received_prefix(
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        source_ae=origin.calling_ae,
    )
    # On a local store the bytes go to disk (write + fsync, off the GIL) in a helper
    # thread while this one hashes them for the key; S3 needs the key first.
    staging = _stage(services.store, prefix, data)
    sha256 = hashlib.sha256(data).hexdigest()
    # No catalog read first: an identical retry (rare) rewrites the same bytes under the
    # same key, and the index transaction then finds the version and changes nothing.
    key = instance_key(header.study_uid, header.sop_instance_uid, sha256)
    if staging is None:
        _put_once(
            services, key, lambda: services.store.put(key, prefix + data, content_type=_DICOM)
        )
    else:
        staged = staging.result()
        _put_once(services, key, lambda: staged.publish(key), staged.discard)

    lock_timeout = services.settings.catalog_lock_timeout
    cache = _cache_for(services.catalog)
    for attempt in range(3):
        try:
            with services.catalog.write() as conn:
                _bound_lock_wait(conn, lock_timeout)
                stored, known = _index(
                    conn,
                    cache,
                    header,
                    origin,
                    sha256,
                    len(data),
                    key,
                    len(prefix),
                    transfer_syntax_uid,
                )
            cache.remember(known)  # only once the transaction that made them committed
            return stored
        except CatalogUnavailable as exc:
            # A concurrent sender created the same patient/study/series/version first.
            if isinstance(exc.__cause__, IntegrityError) and attempt < 2:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def ingest_file(services: Services, path: Path, *, origin: Origin) -> StoredInstance:
    """Ingest a Part 10 file as if its dataset had been received in its transfer syntax."""
    blob = path.read_bytes()
    meta, offset = split_part10(blob)
    return ingest(
        services, blob[offset:], transfer_syntax_uid=str(meta.TransferSyntaxUID), origin=origin
    )


def _bound_lock_wait(conn: Connection, seconds: float) -> None:
    """On PostgreSQL, wait at most ``seconds`` for a lock in this transaction (the default
    is forever: a table locked elsewhere would hold the C-STORE until the sender aborts).
    SQLite's busy timeout, set on the engine, plays this part there."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(int(seconds * 1000), 1)}")


# Built once: executing a prebuilt statement skips SQLAlchemy's per-call construction
# and cache-key work (measured: about half of the index transaction's CPU).
_FIND_INSTANCE = DriverStatement(
    select(instances.c.id, instances.c.series_pk).where(
        instances.c.sop_instance_uid == bindparam("b_uid")
    )
)
_INSERT_INSTANCE = DriverStatement(instances.insert().returning(instances.c.id))
_INSERT_VERSION = DriverStatement(instance_versions.insert().returning(instance_versions.c.id))
_COUNT_INSTANCE = DriverStatement(
    update(series)
    .where(series.c.id == bindparam("b_pk"))
    .values(instance_count=series.c.instance_count + 1, last_received_at=bindparam("b_now"))
)


def _index(
    conn: Connection,
    cache: _IdCache,
    header: _Header,
    origin: Origin,
    sha256: str,
    size: int,
    key: str,
    offset: int,
    transfer_syntax_uid: str,
) -> tuple[StoredInstance, _Known]:
    now = utcnow()
    ds = header.ds
    known = _Known(series_uid=header.series_uid, study_uid=header.study_uid)
    found = _FIND_INSTANCE.first(conn, {"b_uid": header.sop_instance_uid})
    inst_id, inst_series = found if found is not None else (None, None)
    if inst_id is not None:
        version_row = conn.execute(
            select(instance_versions.c.id, instance_versions.c.version).where(
                instance_versions.c.instance_pk == inst_id, instance_versions.c.sha256 == sha256
            )
        ).first()
        if version_row is not None:  # an identical send: nothing changes
            return StoredInstance(
                header.study_uid,
                header.series_uid,
                header.sop_instance_uid,
                int(version_row.id),
                int(version_row.version),
                sha256,
                False,
            ), known
    study_pk = _upsert_study(conn, cache, header, origin, now, known)
    series_pk = _upsert_series(conn, cache, header, study_pk, now, known)
    if inst_id is None:
        version = 1
        instance_pk = _INSERT_INSTANCE.scalar(
            conn,
            {
                "series_pk": series_pk,
                "sop_instance_uid": header.sop_instance_uid,
                "sop_class_uid": header.sop_class_uid,
                "instance_number": text_of(ds, "InstanceNumber", 12),
                "current_version": 1,
            },
        )
        _COUNT_INSTANCE.execute(conn, {"b_pk": series_pk, "b_now": now})
    else:
        if inst_series != series_pk:
            raise InvalidDataset(
                "SOP Instance UID already stored in another series", dicom_status=0xC001
            )
        instance_pk = int(inst_id)
        latest = conn.execute(
            select(func.max(instance_versions.c.version)).where(
                instance_versions.c.instance_pk == instance_pk
            )
        ).scalar_one()
        version = int(latest or 0) + 1
        conn.execute(
            update(instances)
            .where(instances.c.id == instance_pk)
            .values(current_version=version, sop_class_uid=header.sop_class_uid)
        )
        conn.execute(update(series).where(series.c.id == series_pk).values(last_received_at=now))
    version_id = _INSERT_VERSION.scalar(
        conn,
        {
            "instance_pk": instance_pk,
            "version": version,
            "sha256": sha256,
            "size": size,
            "object_key": key,
            "dataset_offset": offset,
            "transfer_syntax_uid": transfer_syntax_uid,
            "hospital_id": origin.hospital_id,
            "calling_ae": origin.calling_ae,
            "peer_host": origin.peer_host,
            "peer_port": origin.peer_port,
            "rows": int_of(ds, "Rows"),
            "columns": int_of(ds, "Columns"),
            "frames": _frames(ds),
            "received_at": now,
        },
    )
    jobs.enqueue(
        conn,
        "preview",
        {"version_id": version_id},
        dedup_key=f"preview-{version_id}",
        fresh_key=True,  # the version was created just now
    )
    log.info(
        "stored %s version %d (%d bytes) from %s@%s",
        header.sop_instance_uid,
        version,
        size,
        origin.calling_ae,
        origin.peer_host,
    )
    return StoredInstance(
        header.study_uid,
        header.series_uid,
        header.sop_instance_uid,
        version_id,
        version,
        sha256,
        True,
    ), known


def _frames(ds: Dataset) -> int:
    """Number of frames: 0 when the instance has no pixel data in its header's terms."""
    if int_of(ds, "Rows") is None or int_of(ds, "Columns") is None:
        return 0
    return max(int_of(ds, "NumberOfFrames") or 1, 1)


def _upsert_study(
    conn: Connection,
    cache: _IdCache,
    header: _Header,
    origin: Origin,
    now: datetime,
    known: _Known,
) -> int:
    cached = cache.studies.get(header.study_uid)
    if cached is not None:
        study_pk, hospital_id, touched = cached
        row_hospital = hospital_id
    else:
        row = conn.execute(
            select(studies.c.id, studies.c.hospital_id).where(
                studies.c.study_uid == header.study_uid
            )
        ).first()
        study_pk, row_hospital, touched = (
            (int(row.id), int(row.hospital_id), 0.0) if row is not None else (0, 0, 0.0)
        )
    if study_pk:
        if row_hospital != origin.hospital_id:
            raise InvalidDataset(
                "Study Instance UID already belongs to another sending hospital",
                dicom_status=0xC001,
            )
        # The study's last arrival only matters to the second (stability is measured in
        # tens of seconds); touching its row once a second spares a write per instance.
        if time.monotonic() - touched >= 1.0:
            conn.execute(
                update(studies).where(studies.c.id == study_pk).values(last_received_at=now)
            )
            touched = time.monotonic()
        known.study = (study_pk, row_hospital, touched)
        return study_pk
    ds = header.ds
    patient_pk = _upsert_patient(conn, ds, origin.hospital_id)
    study_pk = insert_id(
        conn,
        studies.insert().values(
            study_uid=header.study_uid,
            hospital_id=origin.hospital_id,
            patient_pk=patient_pk,
            study_date=text_of(ds, "StudyDate", 8),
            study_time=text_of(ds, "StudyTime", 16),
            description=text_of(ds, "StudyDescription", 64),
            accession_number=text_of(ds, "AccessionNumber", 16),
            referring_physician=text_of(ds, "ReferringPhysicianName"),
            study_id=text_of(ds, "StudyID", 16),
            first_received_at=now,
            last_received_at=now,
        ),
    )
    known.study = (study_pk, origin.hospital_id, time.monotonic())
    return study_pk


def _upsert_patient(conn: Connection, ds: Dataset, hospital_id: int) -> int:
    patient_id = text_of(ds, "PatientID", 64)
    issuer = text_of(ds, "IssuerOfPatientID", 64)
    row = conn.execute(
        select(patients.c.id).where(
            patients.c.hospital_id == hospital_id,
            patients.c.patient_id == patient_id,
            patients.c.issuer == issuer,
        )
    ).first()
    if row is not None:
        return int(row.id)
    return insert_id(
        conn,
        patients.insert().values(
            hospital_id=hospital_id,
            patient_id=patient_id,
            issuer=issuer,
            name=text_of(ds, "PatientName"),
            birth_date=text_of(ds, "PatientBirthDate", 8),
            sex=text_of(ds, "PatientSex", 16),
        ),
    )


def _upsert_series(
    conn: Connection,
    cache: _IdCache,
    header: _Header,
    study_pk: int,
    now: datetime,
    known: _Known,
) -> int:
    cached = cache.series.get(header.series_uid)
    if cached is not None:
        series_pk, series_study = cached
    else:
        row = conn.execute(
            select(series.c.id, series.c.study_pk).where(series.c.series_uid == header.series_uid)
        ).first()
        series_pk, series_study = (int(row.id), int(row.study_pk)) if row else (0, 0)
    if series_pk:
        if series_study != study_pk:
            raise InvalidDataset(
                "Series Instance UID already stored in another study", dicom_status=0xC001
            )
        known.series = (series_pk, series_study)
        return series_pk
    ds = header.ds
    series_pk = insert_id(
        conn,
        series.insert().values(
            study_pk=study_pk,
            series_uid=header.series_uid,
            modality=text_of(ds, "Modality", 16),
            series_number=text_of(ds, "SeriesNumber", 12),
            description=text_of(ds, "SeriesDescription", 64),
            instance_count=0,
            last_received_at=now,
        ),
    )
    known.series = (series_pk, study_pk)
    return series_pk


def _nothing() -> None:
    return None


_DICOM = "application/dicom"
_PUT_LOCKS = [threading.Lock() for _ in range(64)]
# Per store object (not per id(): a new store can get a collected one's id).
_recent_puts: weakref.WeakKeyDictionary[ObjectStore, OrderedDict[str, None]] = (
    weakref.WeakKeyDictionary()
)


def _put_once(
    services: Services, key: str, put: Callable[[], None], skip: Callable[[], None] = _nothing
) -> None:
    """Run ``put`` unless this process stored something under ``key`` already (then
    ``skip``).

    Senders that retry, or several senders with one study, send the same bytes at the
    same time; one put per key and process is enough (a content-addressed key always
    holds the same bytes), and S3 servers need not take N concurrent writes of one key.
    """
    with _PUT_LOCKS[hash(key) % len(_PUT_LOCKS)]:
        with _caches_lock:
            recent = _recent_puts.get(services.store)
            if recent is None:
                recent = _recent_puts[services.store] = OrderedDict()
        if key in recent:
            skip()
            return
        put()
        with _caches_lock:
            recent[key] = None
            if len(recent) > 4096:
                recent.popitem(last=False)


_stagers: ThreadPoolExecutor | None = None
_stagers_pid = 0


def _stage(store: ObjectStore, prefix: bytes, data: bytes) -> Future[StagedObject] | None:
    """Start writing ``prefix + data`` to a local store's staging area in a helper thread;
    None for stores that cannot stage (S3)."""
    global _stagers, _stagers_pid
    if not isinstance(store, LocalObjectStore):
        return None
    with _caches_lock:
        if _stagers is None or _stagers_pid != os.getpid():  # none yet, or forked
            _stagers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ingest-stage")
            _stagers_pid = os.getpid()
        pool = _stagers
    return pool.submit(store.stage, (prefix, data))


@dataclass
class _Known:
    """Row ids learnt in one index transaction, remembered once it committed."""

    study_uid: str
    series_uid: str
    study: tuple[int, int, float] | None = None  # (pk, hospital id, last touched, monotonic)
    series: tuple[int, int] | None = None  # (pk, study pk)


@dataclass
class _IdCache:
    """Study and series row ids by UID, per catalog and process, so that the instances of
    a study after its first cost no lookups. Rows are never deleted or moved to another
    study or hospital, so a remembered id stays right; the cache is bounded."""

    limit: int = 4096
    studies: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    series: dict[str, tuple[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, known: _Known) -> None:
        with self.lock:
            if len(self.studies) >= self.limit or len(self.series) >= self.limit:
                self.studies.clear()
                self.series.clear()
            if known.study is not None:
                self.studies[known.study_uid] = known.study
            if known.series is not None:
                self.series[known.series_uid] = known.series


_caches: weakref.WeakKeyDictionary[Catalog, _IdCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_for(catalog: Catalog) -> _IdCache:
    with _caches_lock:
        cache = _caches.get(catalog)
        if cache is None:
            cache = _caches[catalog] = _IdCache()
        return cache
