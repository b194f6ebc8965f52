"""Export a study's stored instances as Part 10 files (our file meta + bytes as received)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from consult.catalog.tables import instance_versions, instances, series, studies
from consult.errors import StudyNotFound
from consult.services import Services
from storage.keys import digest


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
