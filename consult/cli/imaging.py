"""``consult previews status|rebuild [--study UID]``: where the preview pyramids stand, and
building them again (after a pixel pipeline fix, a lost bucket, a changed tile format)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from sqlalchemy import Connection, func, select

from consult.catalog.tables import instance_versions, instances, previews, series, studies
from consult.catalog.tables import jobs as jobs_table
from consult.catalog.tables import renders as renders_table
from consult.cli.archive import Progress
from consult.dicom.identifiers import is_uid
from consult.errors import ConfigurationError
from consult.jobs.queue import FINISHED, JobStatus
from consult.previews import renders
from consult.previews.builds import (
    KIND,
    PreviewStatus,
    active_build,
    handle_preview,
    request_build,
)
from consult.services import Services


def register(sub: Any) -> None:
    parser = sub.add_parser("previews", help="preview pyramids: status, rebuild")
    actions = parser.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="previews built, missing, failed (with reasons)")
    status.add_argument("--study", metavar="UID", help="only this study")
    status.set_defaults(handler=cmd_status)
    rebuild = actions.add_parser(
        "rebuild", help="build the previews again; this process works on them too"
    )
    rebuild.add_argument("--study", metavar="UID", help="only this study")
    rebuild.add_argument(
        "--no-wait", action="store_true", help="queue the jobs and leave them to the workers"
    )
    rebuild.add_argument("--progress", action="store_true", help="progress bar even when piped")
    rebuild.set_defaults(handler=cmd_rebuild)


def _versions(conn: Connection, study_uid: str | None) -> list[int]:
    """The current version of every instance (of one study, or all)."""
    stmt = (
        select(instance_versions.c.id)
        .join(instances, instances.c.id == instance_versions.c.instance_pk)
        .where(instance_versions.c.version == instances.c.current_version)
        .order_by(instance_versions.c.id)
    )
    if study_uid is not None:
        if not is_uid(study_uid):
            raise ConfigurationError(f"--study is not a UID: {study_uid!r}")
        study_pk = conn.execute(
            select(studies.c.id).where(studies.c.study_uid == study_uid)
        ).scalar_one_or_none()
        if study_pk is None:
            raise ConfigurationError(f"no study {study_uid}")
        stmt = stmt.join(series, series.c.id == instances.c.series_pk).where(
            series.c.study_pk == study_pk
        )
    return [int(v) for v in conn.execute(stmt).scalars()]


def cmd_status(services: Services, args: argparse.Namespace) -> int:
    with services.catalog.read() as conn:
        versions = _versions(conn, args.study)
        frames: dict[str, int] = {}
        built: set[int] = set()
        failures: list[Any] = []
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
            ):
                frames[row.status] = frames.get(row.status, 0) + 1
                built.add(row.version_pk)
                if row.status == PreviewStatus.FAILED:
                    failures.append(row)
        queue: dict[JobStatus, int] = {
            JobStatus(status): int(n)
            for status, n in conn.execute(
                select(jobs_table.c.status, func.count())
                .where(jobs_table.c.kind == KIND)
                .group_by(jobs_table.c.status)
            ).tuples()
        }
        cache_items, cache_bytes = conn.execute(
            select(func.count(), func.coalesce(func.sum(renders_table.c.bytes), 0))
        ).one()
    settings = services.settings
    print(f"instances: {len(versions)} ({len(versions) - len(built)} without previews yet)")
    print(
        "frames: " + ", ".join(f"{s.replace('_', ' ')} {frames.get(s, 0)}" for s in PreviewStatus)
    )
    print("preview jobs (all studies): " + ", ".join(f"{s} {queue.get(s, 0)}" for s in JobStatus))
    print(
        f"on-demand renders: {cache_items} of at most {settings.render_cache_items}, "
        f"{int(cache_bytes) / 1048576:.1f} of at most {settings.render_cache_mb} MB"
    )
    for row in failures[:50]:
        print(f"failed: {row.sop_instance_uid} frame {row.frame}: {row.reason}")
    if len(failures) > 50:
        print(f"... and {len(failures) - 50} more failed frames")
    return 0


def _chunks(values: list[int], size: int = 500) -> list[list[int]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def cmd_rebuild(services: Services, args: argparse.Namespace) -> int:
    """Queue a build of every current version (one per version, however often asked) and,
    unless ``--no-wait``, work on preview jobs here until they are all finished."""
    with services.catalog.read() as conn:
        versions = _versions(conn, args.study)
    job_ids: list[int] = []
    for chunk in _chunks(versions, 200):
        with services.catalog.write() as conn:
            for version_id in chunk:
                job = request_build(conn, version_id) or active_build(conn, version_id)
                if job is not None:
                    job_ids.append(job)
        renders.drop_for(services, chunk)  # rendered by the old pipeline too
    print(f"{len(job_ids)} preview job(s) queued for {len(versions)} instance(s)")
    if args.no_wait or not job_ids:
        return 0
    from consult.jobs.worker import Worker

    worker = Worker(services, {KIND: handle_preview})
    bar = Progress(len(job_ids), "rebuilding previews") if Progress.wanted(args.progress) else None
    finished = 0
    while finished < len(job_ids):
        if not worker.run_once():
            time.sleep(0.2)  # the others are with other workers
        now = _finished(services, job_ids)
        if bar is not None:
            while bar.done < now:
                bar.step()
        finished = now
    failed = _failed(services, job_ids)
    print(f"{len(job_ids) - failed} rebuilt, {failed} failed (see `consult previews status`)")
    return 1 if failed else 0


def _finished(services: Services, job_ids: list[int]) -> int:
    with services.catalog.read() as conn:
        total = 0
        for chunk in _chunks(job_ids):
            total += conn.execute(
                select(func.count()).where(
                    jobs_table.c.id.in_(chunk),
                    jobs_table.c.status.in_([s.value for s in FINISHED]),
                )
            ).scalar_one()
    return int(total)


def _failed(services: Services, job_ids: list[int]) -> int:
    with services.catalog.read() as conn:
        total = 0
        for chunk in _chunks(job_ids):
            total += conn.execute(
                select(func.count()).where(
                    jobs_table.c.id.in_(chunk), jobs_table.c.status == JobStatus.FAILED.value
                )
            ).scalar_one()
    return int(total)
