"""The preview job: each frame of an instance version as a deep-zoom tile pack, in the store.

Job kind ``preview``, payload ``{"version_id": N}``. Per frame (decoded one at a time by
:mod:`viewer.pixels`, rendered with the dataset's default window): the 8-bit picture is cut
into a DZI pyramid (:mod:`viewer.pyramid`; frames over 1024 px are tiled, smaller ones are
one image per level) and stored as one tile pack (:mod:`viewer.tilepack`) under a key that is
new for every build. Each frame's ``previews`` row is written as soon as its pack is
stored, so the first frame can be shown while the others are built.

Objects without pixels get one ``no_image`` row; objects or frames that cannot be shown
right get ``failed`` rows with the reason. Those are outcomes, not job failures: the job is
done. Store and catalog trouble raises, and the job is retried.

:func:`request_build` queues a build so that there is never more than one queued or
running preview job per version, however many requests ask at once.
"""

from __future__ import annotations

import enum
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from consult import jobs
from consult.catalog import CatalogUnavailable, utcnow
from consult.catalog.tables import instance_versions, previews
from consult.catalog.tables import jobs as jobs_table
from consult.services import Services
from storage import StorageError
from storage.keys import tiles_key
from viewer import FrameSource, LookupTable, NoImage, RenderError, Window, open_frames
from viewer.luts import Voi
from viewer.pyramid import build

log = logging.getLogger(__name__)

KIND = "preview"
PACK_MEDIA_TYPE = "application/vnd.consult.tiles"
ACTIVE = (jobs.JobStatus.QUEUED, jobs.JobStatus.RUNNING)


class PreviewStatus(enum.StrEnum):
    """What became of one frame's preview (a ``previews`` row); each is a job outcome, and
    a rebuild writes the row again."""

    READY = "ready"
    """Its tile pack is stored: the frame can be shown."""
    NO_IMAGE = "no_image"
    """The object has no pixel data (a report, a plan): nothing to show, by design."""
    FAILED = "failed"
    """The frame has pixels that cannot be shown; ``reason`` says why."""


def _latest_job(conn: Connection, version_id: int) -> Any:
    return conn.execute(
        select(jobs_table.c.id, jobs_table.c.status)
        .where(
            or_(
                jobs_table.c.dedup_key == f"preview-{version_id}",
                jobs_table.c.dedup_key.like(f"preview-{version_id}-after-%"),
            )
        )
        .order_by(jobs_table.c.id.desc())
        .limit(1)
    ).first()


def active_build(conn: Connection, version_id: int) -> int | None:
    """The queued or running preview job of a version, if there is one."""
    latest = _latest_job(conn, version_id)
    return int(latest.id) if latest is not None and latest.status in ACTIVE else None


def request_build(conn: Connection, version_id: int) -> int | None:
    """Queue a preview build of a version unless one is queued or running; the job id or
    None.

    The dedup key names the latest preview job of the version (``preview-N`` first, then
    ``preview-N-after-J``), so concurrent callers that all found the pyramid missing
    compute the same key and the unique index lets exactly one of them queue it.
    """
    latest = _latest_job(conn, version_id)
    if latest is not None and latest.status in ACTIVE:
        return None
    key = f"preview-{version_id}" if latest is None else f"preview-{version_id}-after-{latest.id}"
    return jobs.enqueue(conn, KIND, {"version_id": version_id}, dedup_key=key)


def window_fields(voi: Voi | None) -> dict[str, Any]:
    """The catalog's description of the window a frame was rendered with."""
    if isinstance(voi, Window):
        return {
            "window_center": voi.center,
            "window_width": voi.width,
            "window_function": voi.function,
        }
    if isinstance(voi, LookupTable):
        return {"window_center": None, "window_width": None, "window_function": "VOI_LUT"}
    return {"window_center": None, "window_width": None, "window_function": None}


def presets_json(source: FrameSource, frame: int) -> str:
    """The VOI choices of a frame (dataset, automatic, modality), for the viewer."""
    out = []
    for index, preset in enumerate(source.windows(frame)):
        item: dict[str, Any] = {
            "index": index,
            "name": preset.name,
            "explanation": preset.explanation,
            "source": preset.source,
        }
        fields = window_fields(preset.window)
        item.update(
            center=fields["window_center"],
            width=fields["window_width"],
            function=fields["window_function"],
        )
        out.append(item)
    return json.dumps(out, separators=(",", ":"))


def _upsert(conn: Connection, version_id: int, frame: int, values: dict[str, Any]) -> None:
    where = (previews.c.version_pk == version_id, previews.c.frame == frame)
    if conn.execute(update(previews).where(*where).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(
                previews.insert().values(
                    version_pk=version_id, frame=frame, created_at=utcnow(), **values
                )
            )
    except IntegrityError:  # another build of the same version wrote it first
        conn.execute(update(previews).where(*where).values(**values))


_CLEAR = {
    "object_key": None,
    "media_type": None,
    "width": None,
    "height": None,
    "tile_format": None,
    "tile_size": None,
    "overlap": None,
    "levels": None,
    "bytes": None,
    "lossy": None,
    "source_lossy": None,
    "window_center": None,
    "window_width": None,
    "window_function": None,
    "windows": None,
}


def _outcome(status: PreviewStatus, reason: str) -> dict[str, Any]:
    return {**_CLEAR, "status": status.value, "reason": reason[:500], "built_at": utcnow()}


@dataclass
class _Rendered:
    """A frame rendered to 8 bits, with what its catalog row needs from the source."""

    pixels: npt.NDArray[np.uint8] | None
    voi: Voi | None
    windows: str
    source_lossy: bool
    failure: dict[str, Any] | None = None


def _render(source: FrameSource, frame: int) -> _Rendered:
    try:
        voi = source.default_window(frame)
        windows = presets_json(source, frame)
        pixels = source.render(frame, voi)
    except (StorageError, CatalogUnavailable):
        raise
    except (NoImage, RenderError) as exc:
        return _Rendered(None, None, "", source.lossy, _outcome(PreviewStatus.FAILED, str(exc)))
    except Exception as exc:  # a bug or an image too big: a named reason, not a crash
        log.exception("frame %d cannot be rendered", frame)
        reason = f"rendering failed: {type(exc).__name__}: {exc}"
        return _Rendered(None, None, "", source.lossy, _outcome(PreviewStatus.FAILED, reason))
    return _Rendered(pixels, voi, windows, source.lossy)


def _store(services: Services, rendered: _Rendered, key: str) -> dict[str, Any]:
    """Cut a rendered frame into its pyramid and store the pack; the ``previews`` row."""
    if rendered.failure is not None or rendered.pixels is None:
        return rendered.failure or _outcome(PreviewStatus.FAILED, "frame was not rendered")
    settings = services.settings
    try:
        pyramid = build(rendered.pixels, fmt=settings.tile_format, quality=settings.tile_quality)
    except MemoryError:
        return _outcome(PreviewStatus.FAILED, "frame too large to cut into tiles (out of memory)")
    rendered.pixels = None
    services.store.put(key, pyramid.data, content_type=PACK_MEDIA_TYPE)
    g = pyramid.geometry
    return {
        "status": PreviewStatus.READY.value,
        "reason": None,
        "object_key": key,
        "media_type": g.media_type,
        "width": g.width,
        "height": g.height,
        "tile_format": g.format,
        "tile_size": g.tile_size,
        "overlap": g.overlap,
        "levels": g.levels,
        "bytes": len(pyramid.data),
        "lossy": g.lossy,
        "source_lossy": rendered.source_lossy,
        **window_fields(rendered.voi),
        "windows": rendered.windows,
        "built_at": utcnow(),
    }


def handle_preview(services: Services, payload: dict[str, Any]) -> None:
    """Build the tile packs of every frame of one stored instance version (job ``preview``).

    Instances without pixels get one ``no_image`` row; undecodable ones ``failed`` rows
    with the reason. Store or catalog trouble raises, so the job is retried.
    """
    version_id = int(payload["version_id"])
    with services.catalog.read() as conn:
        row = conn.execute(
            select(instance_versions.c.object_key, instance_versions.c.sha256).where(
                instance_versions.c.id == version_id
            )
        ).first()
        old_keys = set(
            conn.execute(
                select(previews.c.object_key).where(
                    previews.c.version_pk == version_id, previews.c.object_key.is_not(None)
                )
            ).scalars()
        )
    if row is None:
        log.warning("preview job for unknown version %d dropped", version_id)
        return
    blob: bytes | None = services.store.get(row.object_key)
    assert blob is not None
    build_id = secrets.token_hex(8)
    try:
        source = open_frames(blob)
    except Exception as exc:  # no pixels, or none we can show: a named entry, not a retry
        if isinstance(exc, NoImage):
            outcome = _outcome(PreviewStatus.NO_IMAGE, str(exc))
        elif isinstance(exc, RenderError):
            outcome = _outcome(PreviewStatus.FAILED, str(exc))
        else:
            log.exception("version %d cannot be read", version_id)
            outcome = _outcome(PreviewStatus.FAILED, f"cannot be read: {type(exc).__name__}: {exc}")
        with services.catalog.write() as conn:
            _upsert(conn, version_id, 0, outcome)
        _finish(services, version_id, 1, set(), old_keys)
        return
    blob = None  # the source holds what it needs
    frames = source.frames
    new_keys: set[str] = set()
    for frame in range(frames):
        rendered = _render(source, frame)
        if frame == frames - 1:
            # Drop the object's bytes and its decoded frame before cutting the last (often
            # the only) frame into tiles, so that they are never held at the same time.
            source = None  # type: ignore[assignment]
        key = tiles_key(row.sha256, frame, services.settings.tile_format, build_id)
        values = _store(services, rendered, key)
        del rendered
        with services.catalog.write() as conn:
            _upsert(conn, version_id, frame, values)
        if values["object_key"]:
            new_keys.add(values["object_key"])
    _finish(services, version_id, frames, new_keys, old_keys)


def _finish(
    services: Services, version_id: int, frames: int, new_keys: set[str], old_keys: set[str]
) -> None:
    """Drop the rows of frames that no longer exist and delete the replaced packs."""
    with services.catalog.write() as conn:
        conn.execute(
            delete(previews).where(previews.c.version_pk == version_id, previews.c.frame >= frames)
        )
    for key in old_keys - new_keys:
        try:
            services.store.delete(key)
        except StorageError as exc:  # an orphan pack wastes space, nothing else
            log.warning("old preview pack not deleted: %s", exc)
