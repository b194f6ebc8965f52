"""Read queries over the catalog's studies: lists, details, receipts.

These functions do not check access: callers pass a study the access check granted
(:func:`consult.access.check.require_study`) or a hospital whose visible studies to list (the
list uses the same rule, :func:`consult.access.check.visible_to`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from consult.access import audit
from consult.access.audit import Outcome
from consult.access.check import Caller, visible_to
from consult.catalog import Catalog, as_utc, utcnow
from consult.catalog.tables import (
    hospitals,
    instance_versions,
    instances,
    patients,
    previews,
    series,
    studies,
)
from consult.dicom.display import display_name, number_key
from consult.errors import StudyNotFound
from consult.previews.builds import PreviewStatus
from consult.studies.receipt import is_stable


@dataclass(frozen=True)
class StudySummary:
    pk: int
    study_uid: str
    hospital_id: int
    hospital_name: str
    patient_name: str
    patient_id: str
    issuer: str
    birth_date: str
    sex: str
    study_date: str
    study_time: str
    description: str
    accession_number: str
    modalities: list[str]
    series_count: int
    instance_count: int
    first_received_at: datetime
    last_received_at: datetime
    stable: bool


@dataclass(frozen=True)
class PreviewInfo:
    id: int
    frame: int
    status: PreviewStatus
    width: int | None
    height: int | None


@dataclass(frozen=True)
class VersionInfo:
    version: int
    sha256: str
    size: int
    transfer_syntax_uid: str
    calling_ae: str
    received_at: datetime


@dataclass(frozen=True)
class InstanceInfo:
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: str
    version: int
    sha256: str
    size: int
    frames: int
    versions: list[VersionInfo]
    previews: list[PreviewInfo]


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    modality: str
    series_number: str
    description: str
    instances: list[InstanceInfo]


@dataclass(frozen=True)
class StudyDetail:
    summary: StudySummary
    series: list[SeriesInfo]


def _summaries(
    conn: Connection, where: object, *, stable_seconds: float, limit: int
) -> list[StudySummary]:
    counts = (
        select(
            series.c.study_pk,
            func.count(func.distinct(series.c.id)).label("series_count"),
            func.count(instances.c.id).label("instance_count"),
        )
        .select_from(series.outerjoin(instances, instances.c.series_pk == series.c.id))
        .group_by(series.c.study_pk)
        .subquery()
    )
    stmt = (
        select(
            studies,
            patients.c.name.label("patient_name"),
            patients.c.patient_id,
            patients.c.issuer,
            patients.c.birth_date,
            patients.c.sex,
            hospitals.c.name.label("hospital_name"),
            func.coalesce(counts.c.series_count, 0).label("series_count"),
            func.coalesce(counts.c.instance_count, 0).label("instance_count"),
        )
        .join(patients, patients.c.id == studies.c.patient_pk)
        .join(hospitals, hospitals.c.id == studies.c.hospital_id)
        .outerjoin(counts, counts.c.study_pk == studies.c.id)
        .where(where)  # type: ignore[arg-type]
        .order_by(studies.c.last_received_at.desc(), studies.c.id.desc())
        .limit(limit)
    )
    rows = conn.execute(stmt).all()
    modalities: dict[int, set[str]] = defaultdict(set)
    if rows:
        for study_pk, modality in conn.execute(
            select(series.c.study_pk, series.c.modality).where(
                series.c.study_pk.in_([r.id for r in rows])
            )
        ).all():
            if modality:
                modalities[study_pk].add(modality)
    now = utcnow()
    return [
        StudySummary(
            pk=r.id,
            study_uid=r.study_uid,
            hospital_id=r.hospital_id,
            hospital_name=r.hospital_name,
            patient_name=display_name(r.patient_name),
            patient_id=r.patient_id,
            issuer=r.issuer,
            birth_date=r.birth_date,
            sex=r.sex,
            study_date=r.study_date,
            study_time=r.study_time,
            description=r.description,
            accession_number=r.accession_number,
            modalities=sorted(modalities[r.id]),
            series_count=int(r.series_count),
            instance_count=int(r.instance_count),
            first_received_at=as_utc(r.first_received_at),
            last_received_at=as_utc(r.last_received_at),
            stable=is_stable(r.last_received_at, stable_seconds, now),
        )
        for r in rows
    ]


def list_studies(
    conn: Connection, hospital_id: int, *, stable_seconds: float, limit: int = 500
) -> list[StudySummary]:
    """Studies visible to users of ``hospital_id``, newest arrival first."""
    return _summaries(conn, visible_to(hospital_id), stable_seconds=stable_seconds, limit=limit)


def get_summary(conn: Connection, study_pk: int, *, stable_seconds: float) -> StudySummary:
    found = _summaries(conn, studies.c.id == study_pk, stable_seconds=stable_seconds, limit=1)
    if not found:
        raise StudyNotFound("study not found")
    return found[0]


def study_detail(conn: Connection, study_pk: int, *, stable_seconds: float) -> StudyDetail:
    """The study with its series, their instances (current version first) and previews."""
    summary = get_summary(conn, study_pk, stable_seconds=stable_seconds)
    series_rows = conn.execute(select(series).where(series.c.study_pk == study_pk)).all()
    series_pks = [s.id for s in series_rows]
    instance_rows = conn.execute(
        select(instances).where(instances.c.series_pk.in_(series_pks))
    ).all()
    versions: dict[int, list[tuple[int, VersionInfo, int]]] = defaultdict(list)
    version_rows = conn.execute(
        select(instance_versions).where(
            instance_versions.c.instance_pk.in_([i.id for i in instance_rows])
        )
    ).all()
    for v in version_rows:
        info = VersionInfo(
            version=v.version,
            sha256=v.sha256,
            size=int(v.size),
            transfer_syntax_uid=v.transfer_syntax_uid,
            calling_ae=v.calling_ae,
            received_at=as_utc(v.received_at),
        )
        versions[v.instance_pk].append((v.id, info, int(v.frames or 0)))
    preview_map: dict[int, list[PreviewInfo]] = defaultdict(list)
    for p in conn.execute(
        select(previews)
        .where(previews.c.version_pk.in_([v.id for v in version_rows]))
        .order_by(previews.c.frame)
    ).all():
        preview_map[p.version_pk].append(
            PreviewInfo(
                id=p.id,
                frame=p.frame,
                status=PreviewStatus(p.status),
                width=p.width,
                height=p.height,
            )
        )
    by_series: dict[int, list[InstanceInfo]] = defaultdict(list)
    for i in instance_rows:
        all_versions = sorted(versions[i.id], key=lambda t: t[1].version, reverse=True)
        current = next((t for t in all_versions if t[1].version == i.current_version), None)
        if current is None:  # not indexed completely; never show half an instance
            continue
        version_pk, info, frames = current
        by_series[i.series_pk].append(
            InstanceInfo(
                sop_instance_uid=i.sop_instance_uid,
                sop_class_uid=i.sop_class_uid,
                instance_number=i.instance_number,
                version=info.version,
                sha256=info.sha256,
                size=info.size,
                frames=frames,
                versions=[t[1] for t in all_versions],
                previews=preview_map[version_pk],
            )
        )
    result = []
    for s in sorted(series_rows, key=lambda s: (number_key(s.series_number), s.series_uid)):
        items = sorted(
            by_series[s.id], key=lambda i: (number_key(i.instance_number), i.sop_instance_uid)
        )
        result.append(
            SeriesInfo(
                series_uid=s.series_uid,
                modality=s.modality,
                series_number=s.series_number,
                description=s.description,
                instances=items,
            )
        )
    return StudyDetail(summary=summary, series=result)


def list_audited(catalog: Catalog, caller: Caller, *, stable_seconds: float) -> list[StudySummary]:
    """The studies the caller's hospital may see, with the audit event of that listing."""
    hospital_id = caller.user.hospital_id
    with catalog.write() as conn:
        found = list_studies(conn, hospital_id, stable_seconds=stable_seconds)
        audit.record(
            conn,
            caller.actor,
            action="studies.list",
            object_type="hospital",
            object_id=str(hospital_id),
            outcome=Outcome.SUCCESS,
            detail=f"{len(found)} studies",
        )
    return found
