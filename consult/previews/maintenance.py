"""What operators ask of the previews (``consult previews status|rebuild``): where the
pyramids stand, and building them again after a pipeline fix, a lost bucket or a changed
tile format."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from consult.catalog.tables import instance_versions, instances, previews, series, studies
from consult.catalog.tables import jobs as jobs_table
from consult.catalog.tables import renders as renders_table
from consult.errors import StudyNotFound
from consult.jobs.queue import FINISHED, JobStatus
from consult.previews import renders
from consult.previews.builds import KIND, PreviewStatus, active_build, request_build
from consult.services import Services

CHUNK = 500  # ids per IN (...) list, well under every database's limit on parameters


@dataclass(frozen=True)
class FailedFrame:
    sop_instance_uid: str
    frame: int
    reason: str


@dataclass(frozen=True)
class PreviewReport:
    """Where the previews of some instances stand (see :func:`preview_status`)."""

    instances: int
    without_previews: int
    frames: dict[PreviewStatus, int]  # frame status -> frames
    jobs: dict[JobStatus, int]  # job status -> preview jobs, of all studies
    cache_items: int  # on-demand renders held, of all studies
    cache_bytes: int
    failures: list[FailedFrame]


def current_versions(conn: Connection, study_uid: str | None = None) -> list[int]:
    """The ids of the current version of every instance (of one study, or all), in order.

    Raises
    ------
    StudyNotFound
        There is no study ``study_uid``.
    """
    stmt = (
        select(instance_versions.c.id)
        .join(instances, instances.c.id == instance_versions.c.instance_pk)
        .where(instance_versions.c.version == instances.c.current_version)
        .order_by(instance_versions.c.id)
    )
    if study_uid is not None:
        study_pk = conn.execute(
            select(studies.c.id).where(studies.c.study_uid == study_uid)
        ).scalar_one_or_none()
        if study_pk is None:
            raise StudyNotFound(f"no study {study_uid!r} in the catalog")
        stmt = stmt.join(series, series.c.id == instances.c.series_pk).where(
            series.c.study_pk == study_pk
        )
    return [int(v) for v in conn.execute(stmt).scalars()]


def preview_status(conn: Connection, study_uid: str | None = None) -> PreviewReport:
    """The previews of the current versions (of one study, or all): frames by outcome with
    the failures' reasons, instances without any yet; the preview job queue and the render
    cache, which are counted for all studies."""
    versions = current_versions(conn, study_uid)
    frames: dict[PreviewStatus, int] = {}
    built: set[int] = set()
    failures: list[FailedFrame] = []
    for chunk in _chunks(versions):
        for row in conn.execute(
            select(
                previews.c.version_pk,
                previews.c.frame,
                previews.c.status,
                previews.c.reason,
                instances.c.sop_instance_uid,
            )
            .join(instance_versions, instance_versions.c.id == previews.c.version_pk)
            .join(instances, instances.c.id == instance_versions.c.instance_pk)
            .where(previews.c.version_pk.in_(chunk))
            .order_by(previews.c.version_pk, previews.c.frame)
        ):
            status = PreviewStatus(row.status)
            frames[status] = frames.get(status, 0) + 1
            built.add(row.version_pk)
            if status is PreviewStatus.FAILED:
                failures.append(FailedFrame(row.sop_instance_uid, row.frame, row.reason or ""))
    queue = {
        JobStatus(status): int(n)
        for status, n in conn.execute(
            select(jobs_table.c.status, func.count())
            .where(jobs_table.c.kind == KIND)
            .group_by(jobs_table.c.status)
        )
    }
    cache_items, cache_bytes = conn.execute(
        select(func.count(), func.coalesce(func.sum(renders_table.c.bytes), 0))
    ).one()
    return PreviewReport(
        instances=len(versions),
        without_previews=len(versions) - len(built),
        frames=frames,
        jobs=queue,
        cache_items=int(cache_items),
        cache_bytes=int(cache_bytes),
        failures=failures,
    )


def queue_rebuild(services: Services, version_ids: list[int]) -> list[int]:
    """Queue a preview build of each version (one per version however often asked: a build
    already queued or running counts) and drop their on-demand renders, which the old
    pipeline made too; returns the job ids."""
    job_ids: list[int] = []
    for chunk in _chunks(version_ids, 200):
        with services.catalog.write() as conn:
            for version_id in chunk:
                job = request_build(conn, version_id) or active_build(conn, version_id)
                if job is not None:
                    job_ids.append(job)
        renders.drop_for(services, chunk)
    return job_ids


def job_outcomes(conn: Connection, job_ids: list[int]) -> tuple[int, int]:
    """How many of these jobs are finished (done or failed), and how many of those failed."""
    finished = failed = 0
    for chunk in _chunks(job_ids):
        query = (
            select(jobs_table.c.status, func.count())
            .where(jobs_table.c.id.in_(chunk), jobs_table.c.status.in_([s.value for s in FINISHED]))
            .group_by(jobs_table.c.status)
        )
        for status, n in conn.execute(query):
            finished += int(n)
            failed += int(n) if status == JobStatus.FAILED else 0
    return finished, failed


def _chunks(values: list[int], size: int = CHUNK) -> list[list[int]]:
    return [values[i : i + size] for i in range(0, len(values), size)]
