"""Serving stored previews: the frame row behind an access-checked preview, the pack a
request names (the stored pyramid, or an on-demand render), range reads through a cache of
pack indexes, and a rebuild queued when a stored pack has gone missing.

The web's preview routes (consult/web/preview_routes.py) check access, then call these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import NoReturn

from sqlalchemy import Connection, select

from consult.access.check import PreviewRef
from consult.catalog import Catalog
from consult.catalog.tables import instance_versions, instances, previews, series, studies
from consult.dicom.display import number_key
from consult.errors import BadRequest, NotFound, Unavailable
from consult.previews import renders
from consult.previews.builds import PreviewStatus, request_build
from consult.previews.renders import Render, RenderSpec, Target, quantise
from consult.services import Services
from storage import ObjectNotFound, ObjectStore
from storage.keys import digest
from viewer.tilepack import IndexCache, PackIndex, read_index

_indexes = IndexCache(1024)


class Rebuilding(Unavailable):
    """The stored pyramid is missing; a rebuild is queued."""


@dataclass(frozen=True)
class Frame:
    """A preview row the user may see, with what serving it needs."""

    ref: PreviewRef
    reason: str | None
    width: int | None
    height: int | None
    tile_format: str | None
    bytes: int | None
    source_lossy: bool | None
    window: tuple[float | None, float | None, str | None]
    windows: str | None
    original_key: str


@dataclass(frozen=True)
class Pack:
    key: str
    size: int
    spec: RenderSpec
    render: Render | None  # None: the stored default pyramid

    @property
    def lossy(self) -> bool:
        return self.spec.fmt == "jpeg"


def load(catalog: Catalog, ref: PreviewRef) -> Frame:
    """The preview row behind an access-checked reference."""
    with catalog.read() as conn:
        row = conn.execute(
            select(previews, instance_versions.c.object_key.label("original_key"))
            .join(instance_versions, instance_versions.c.id == previews.c.version_pk)
            .where(previews.c.id == ref.id)
        ).first()
    if row is None:  # deleted since the access check
        raise NotFound("preview not found")
    return Frame(
        ref=replace(ref, status=row.status, object_key=row.object_key),
        reason=row.reason,
        width=row.width,
        height=row.height,
        tile_format=row.tile_format,
        bytes=row.bytes,
        source_lossy=row.source_lossy,
        window=(row.window_center, row.window_width, row.window_function),
        windows=row.windows,
        original_key=row.original_key,
    )


def spec_for(frame: Frame, query: Mapping[str, str], default_format: str) -> RenderSpec:
    """The window and format a request's query asks for (400 if malformed)."""
    default = frame.tile_format or default_format
    try:
        spec = renders.parse_spec(query, default)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    center, width, function = frame.window
    if spec.window is not None and center is not None and width is not None and function:
        # The dataset's own window, rounded as any asked-for window is: the stored pyramid.
        try:
            if quantise(center, width, function) == spec.window:
                return RenderSpec(spec.fmt)
        except ValueError:
            pass
    return spec


def ready(frame: Frame) -> tuple[int, int]:
    """The frame's size, or 404 saying why it has no picture."""
    if frame.ref.status == PreviewStatus.NO_IMAGE:
        raise NotFound(f"no image: {frame.reason or 'the object has no pixel data'}")
    if frame.ref.status != PreviewStatus.READY or not frame.width or not frame.height:
        raise NotFound(f"no preview: {frame.reason or 'the frame could not be rendered'}")
    return frame.width, frame.height


def pack_for(services: Services, frame: Frame, spec: RenderSpec) -> Pack:
    """The stored pack, or the on-demand render ``spec`` asks for (built if need be)."""
    ready(frame)
    if frame.tile_format is None:  # a one-image preview from before tile packs
        rebuild(services.catalog, frame)
    if spec.is_default and spec.fmt == frame.tile_format and frame.ref.object_key:
        key = frame.ref.object_key
        size = frame.bytes if frame.bytes is not None else services.store.head(key).size
        return Pack(key, size, spec, None)
    target = Target(frame.ref.version_pk, frame.ref.frame, frame.ref.sha256, frame.original_key)
    render = renders.get_render(services, target, spec)
    return Pack(render.object_key, render.bytes, spec, render)


def _index(store: ObjectStore, pack: Pack) -> PackIndex:
    found = _indexes.get(pack.key)
    if found is None:
        found = read_index(lambda start, n: store.get_range(pack.key, start, n), pack.size)
        _indexes.put(pack.key, found)
    return found


def read_part(
    services: Services,
    frame: Frame,
    spec: RenderSpec,
    part: Callable[[PackIndex], tuple[int, int]],
    *,
    if_none_match: str | None,
) -> tuple[Pack, bytes | None, str]:
    """The bytes of one part of the pack ``spec`` names (a tile or an extra), its pack and
    ETag; None for the bytes when the client's copy is current (``if_none_match``). A stored
    pyramid gone missing is queued for a rebuild (:class:`Rebuilding`)."""
    for _attempt in range(3):
        pack = pack_for(services, frame, spec)
        etag = etag_of(frame, pack)
        if etag_matches(if_none_match, etag):
            return pack, None, etag
        try:
            start, length = part(_index(services.store, pack))
            return pack, services.store.get_range(pack.key, start, length), etag
        except ObjectNotFound:
            _indexes.drop(pack.key)
            if pack.render is not None:
                renders.forget(services, pack.render)
                continue
            fresh = load(services.catalog, frame.ref)
            if fresh.ref.object_key != frame.ref.object_key:  # rebuilt meanwhile
                frame = fresh
                continue
            rebuild(services.catalog, frame)
    raise Rebuilding("the preview is being rebuilt; try again shortly")


def rebuild(catalog: Catalog, frame: Frame) -> NoReturn:
    """Queue a build of the frame's version (at most one at a time) and say so."""
    with catalog.write() as conn:
        request_build(conn, frame.ref.version_pk)
    raise Rebuilding("the preview is being rebuilt; try again shortly")


def check_stored(services: Services, frame: Frame, spec: RenderSpec) -> None:
    """When ``spec`` names the stored pyramid and its pack is gone, queue a rebuild (the
    descriptor is served anyway: its tiles will say 503 until the build is done)."""
    if spec.is_default and spec.fmt == frame.tile_format and frame.ref.object_key:
        if not services.store.exists(frame.ref.object_key):
            with services.catalog.write() as conn:
                request_build(conn, frame.ref.version_pk)


def etag_of(frame: Frame, pack: Pack) -> str:
    ref = frame.ref
    return f'"{ref.sha256}-{ref.frame}-{pack.spec.token}-{pack.spec.fmt}-{digest(pack.key)[:12]}"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return etag in candidates or "*" in candidates


@dataclass(frozen=True)
class SeriesThumbnail:
    """Where a series' thumbnail comes from: its study, and the preview of its middle
    instance (by Instance Number) that has a thumbnail, if any has one yet."""

    study_uid: str
    preview_id: int | None
    version_pk: int | None


def series_thumbnail(conn: Connection, series_uid: str) -> SeriesThumbnail | None:
    """The series' thumbnail source, or None when there is no such series."""
    found = conn.execute(
        select(series.c.id, studies.c.study_uid)
        .join(studies, studies.c.id == series.c.study_pk)
        .where(series.c.series_uid == series_uid)
    ).first()
    if found is None:
        return None
    candidates = conn.execute(
        select(previews.c.id, previews.c.version_pk, instances.c.instance_number)
        .join(instance_versions, instance_versions.c.id == previews.c.version_pk)
        .join(instances, instances.c.id == instance_versions.c.instance_pk)
        .where(
            instances.c.series_pk == found.id,
            instance_versions.c.version == instances.c.current_version,
            previews.c.frame == 0,
            previews.c.status == PreviewStatus.READY.value,
        )
    ).all()
    ordered = sorted(candidates, key=lambda r: (number_key(r.instance_number), r.id))
    if not ordered:
        return SeriesThumbnail(found.study_uid, None, None)
    chosen = ordered[len(ordered) // 2]
    return SeriesThumbnail(found.study_uid, int(chosen.id), int(chosen.version_pk))
