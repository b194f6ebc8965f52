"""Stored instances read back out: one version's bytes (``consult render``), a whole study as
Part 10 files (``consult export``: our file meta + the dataset bytes as received)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from consult.catalog.tables import instance_versions, instances, series, studies
from consult.errors import NotFound, StudyNotFound
from consult.services import Services
from storage.keys import digest


def stored_bytes(services: Services, sop_instance_uid: str, version: int | None = None) -> bytes:
    """The stored Part 10 bytes of an instance's current version (or of ``version``).

    Raises
    ------
    NotFound
        No such instance, or no such version of it (the message lists the versions).
    """
    with services.catalog.read() as conn:
        inst = conn.execute(
            select(instances.c.id, instances.c.current_version).where(
                instances.c.sop_instance_uid == sop_instance_uid
            )
        ).first()
        if inst is None:
            raise NotFound(f"no instance {sop_instance_uid!r} in the catalog")
        wanted = inst.current_version if version is None else version
        row = conn.execute(
            select(instance_versions.c.object_key).where(
                instance_versions.c.instance_pk == inst.id,
                instance_versions.c.version == wanted,
            )
        ).first()
        if row is None:
            known = conn.scalars(
                select(instance_versions.c.version)
                .where(instance_versions.c.instance_pk == inst.id)
                .order_by(instance_versions.c.version)
            ).all()
            raise NotFound(
                f"instance {sop_instance_uid!r} has no version {wanted} "
                f"(versions: {', '.join(str(v) for v in known)})"
            )
    return services.store.get(row.object_key)


def export_study(
    services: Services, study_uid: str, out: Path, *, all_versions: bool = False
) -> list[Path]:
    """Write each instance (current version, or every version) to ``out``; returns the paths.

    File names come from digests of the UIDs, never the UIDs themselves.
    """
    with services.catalog.read() as conn:
        study = conn.execute(select(studies.c.id).where(studies.c.study_uid == study_uid)).first()
        if study is None:
            raise StudyNotFound(f"no study {study_uid!r} in the catalog")
        query = (
            select(
                series.c.series_uid,
                instances.c.sop_instance_uid,
                instance_versions.c.version,
                instance_versions.c.object_key,
            )
            .join(instances, instances.c.series_pk == series.c.id)
            .join(instance_versions, instance_versions.c.instance_pk == instances.c.id)
            .where(series.c.study_pk == study.id)
            .order_by(series.c.id, instances.c.id, instance_versions.c.version)
        )
        if not all_versions:
            query = query.where(instance_versions.c.version == instances.c.current_version)
        rows = conn.execute(query).all()
    written: list[Path] = []
    for row in rows:
        folder = out / f"series-{digest(row.series_uid)[:16]}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest(row.sop_instance_uid)[:24]}-v{row.version}.dcm"
        path.write_bytes(services.store.get(row.object_key))
        written.append(path)
    return written
