"""The preview job: render each frame of an instance version and store it beside the original."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from consult.catalog import utcnow
from consult.catalog.tables import instance_versions, previews
from consult.services import Services
from storage.keys import preview_key
from viewer import NoImage, RenderError, render_frames

log = logging.getLogger(__name__)


def _record(services: Services, version_id: int, rows: list[dict[str, Any]]) -> None:
    with services.catalog.write() as conn:
        conn.execute(previews.delete().where(previews.c.version_pk == version_id))
        now = utcnow()
        for row in rows:
            conn.execute(previews.insert().values(version_pk=version_id, created_at=now, **row))


def handle_preview(services: Services, payload: dict[str, Any]) -> None:
    """Render every frame of one stored instance version (job kind ``preview``).

    Instances without pixels get one ``no_image`` row; undecodable ones one ``failed`` row
    with the reason. Store or catalog trouble raises, so the job is retried.
    """
    version_id = int(payload["version_id"])
    with services.catalog.read() as conn:
        row = conn.execute(
            select(instance_versions.c.object_key, instance_versions.c.sha256).where(
                instance_versions.c.id == version_id
            )
        ).first()
    if row is None:
        log.warning("preview job for unknown version %d dropped", version_id)
        return
    blob = services.store.get(row.object_key)
    rows: list[dict[str, Any]] = []
    try:
        for frame in render_frames(blob):
            key = preview_key(row.sha256, frame.frame, "png")
            services.store.put(key, frame.data, content_type=frame.media_type)
            rows.append(
                {
                    "frame": frame.frame,
                    "status": "ready",
                    "object_key": key,
                    "media_type": frame.media_type,
                    "width": frame.width,
                    "height": frame.height,
                }
            )
    except NoImage as exc:
        rows = [{"frame": 0, "status": "no_image", "reason": str(exc)}]
    except RenderError as exc:
        log.warning("version %d cannot be rendered: %s", version_id, exc)
        rows = [{"frame": 0, "status": "failed", "reason": str(exc)[:500]}]
    _record(services, version_id, rows)
