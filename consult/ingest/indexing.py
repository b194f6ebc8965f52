"""The index transaction of an ingest: patient, study, series, instance, a new version,
arrival counters and the preview job, in one catalog transaction (consult/ingest/pipeline.py runs
it once the object is durable).

Study and series row ids are cached per catalog and process (rows are never deleted or
moved), and the hot statements run on the DB-API cursor (consult/catalog/driver.py).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.dataset import Dataset
from sqlalchemy import Connection, bindparam, func, select, update

from consult import jobs
from consult.catalog import Catalog, insert_id, utcnow
from consult.catalog.driver import DriverStatement
from consult.catalog.tables import instance_versions, instances, patients, series, studies
from consult.dicom.part10 import int_of, text_of
from consult.errors import InvalidDataset

log = logging.getLogger("consult.ingest.pipeline")


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
class Header:
    """What ingest read from the dataset's header: its UIDs (checked) and the rest."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    ds: Dataset


def bound_lock_wait(conn: Connection, seconds: float) -> None:
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


def index(
    conn: Connection,
    cache: IdCache,
    header: Header,
    origin: Origin,
    sha256: str,
    size: int,
    key: str,
    offset: int,
    transfer_syntax_uid: str,
) -> tuple[StoredInstance, Known]:
    now = utcnow()
    ds = header.ds
    known = Known(series_uid=header.series_uid, study_uid=header.study_uid)
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
    cache: IdCache,
    header: Header,
    origin: Origin,
    now: datetime,
    known: Known,
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
    cache: IdCache,
    header: Header,
    study_pk: int,
    now: datetime,
    known: Known,
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


@dataclass
class Known:
    """Row ids learnt in one index transaction, remembered once it committed."""

    study_uid: str
    series_uid: str
    study: tuple[int, int, float] | None = None  # (pk, hospital id, last touched, monotonic)
    series: tuple[int, int] | None = None  # (pk, study pk)


@dataclass
class IdCache:
    """Study and series row ids by UID, per catalog and process, so that the instances of
    a study after its first cost no lookups. Rows are never deleted or moved to another
    study or hospital, so a remembered id stays right; the cache is bounded."""

    limit: int = 4096
    studies: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    series: dict[str, tuple[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, known: Known) -> None:
        with self.lock:
            if len(self.studies) >= self.limit or len(self.series) >= self.limit:
                self.studies.clear()
                self.series.clear()
            if known.study is not None:
                self.studies[known.study_uid] = known.study
            if known.series is not None:
                self.series[known.series_uid] = known.series


_caches: weakref.WeakKeyDictionary[Catalog, IdCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def cache_for(catalog: Catalog) -> IdCache:
    with _caches_lock:
        cache = _caches.get(catalog)
        if cache is None:
            cache = _caches[catalog] = IdCache()
        return cache
