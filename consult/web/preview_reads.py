"""Reading preview tile packs for the routes: the frame row behind a preview id, the pack a
request names (stored, or an on-demand render), range reads through a cache of pack
indexes, and a rebuild queued when a stored pack has gone missing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NoReturn

from sqlalchemy import select

from consult import access
from consult.access.check import PreviewRef
from consult.catalog.tables import instance_versions, previews
from consult.errors import BadRequest, ConsultError, NotFound
from consult.previews import renders
from consult.previews.builds import request_build
from consult.previews.renders import Render, RenderSpec, Target, quantise
from consult.web.context import Ctx
from storage import ObjectNotFound, ObjectStore
from storage.keys import digest
from viewer.tilepack import IndexCache, PackIndex, read_index

_indexes = IndexCache(1024)


class Rebuilding(ConsultError):
    """The stored pyramid is missing; a rebuild is queued."""

    status = 503


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


def load(ctx: Ctx, ref: PreviewRef) -> Frame:
    """The preview row behind an access-checked reference."""
    with ctx.services.catalog.read() as conn:
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


def frame_for(ctx: Ctx) -> Frame:
    """The request's ``preview_id``, if the user may see it (404 and audited otherwise)."""
    ref = access.require_preview(
        ctx.services.catalog,
        ctx.user,
        ctx.int_param("preview_id"),
        client=ctx.client,
        session_key=ctx.session_key,
    )
    return load(ctx, ref)


def spec_for(ctx: Ctx, frame: Frame) -> RenderSpec:
    """The window and format the query asks for (400 if malformed)."""
    default = frame.tile_format or ctx.services.settings.tile_format
    try:
        spec = renders.parse_spec(ctx.request.query_params, default)
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
    if frame.ref.status == "no_image":
        raise NotFound(f"no image: {frame.reason or 'the object has no pixel data'}")
    if frame.ref.status != "ready" or not frame.width or not frame.height:
        raise NotFound(f"no preview: {frame.reason or 'the frame could not be rendered'}")
    return frame.width, frame.height


def pack_for(ctx: Ctx, frame: Frame, spec: RenderSpec) -> Pack:
    """The stored pack, or the on-demand render ``spec`` asks for (built if need be)."""
    ready(frame)
    if frame.tile_format is None:  # a one-image preview from before tile packs
        rebuild(ctx, frame)
    if spec.is_default and spec.fmt == frame.tile_format and frame.ref.object_key:
        key = frame.ref.object_key
        size = frame.bytes if frame.bytes is not None else ctx.services.store.head(key).size
        return Pack(key, size, spec, None)
    target = Target(frame.ref.version_pk, frame.ref.frame, frame.ref.sha256, frame.original_key)
    render = renders.get_render(ctx.services, target, spec)
    return Pack(render.object_key, render.bytes, spec, render)


def _index(store: ObjectStore, pack: Pack) -> PackIndex:
    found = _indexes.get(pack.key)
    if found is None:
        found = read_index(lambda start, n: store.get_range(pack.key, start, n), pack.size)
        _indexes.put(pack.key, found)
    return found


def read_part(
    ctx: Ctx, frame: Frame, spec: RenderSpec, part: Callable[[PackIndex], tuple[int, int]]
) -> tuple[Pack, bytes | None, str]:
    """The bytes of one part of the pack ``spec`` names (a tile or an extra), its pack and
    ETag; None for the bytes when the client's copy is current (If-None-Match). A stored
    pyramid gone missing is queued for a rebuild (:class:`Rebuilding`)."""
    services = ctx.services
    for _attempt in range(3):
        pack = pack_for(ctx, frame, spec)
        etag = etag_of(frame, pack)
        if etag_matches(ctx.request.headers.get("if-none-match"), etag):
            return pack, None, etag
        try:
            start, length = part(_index(services.store, pack))
            return pack, services.store.get_range(pack.key, start, length), etag
        except ObjectNotFound:
            _indexes.drop(pack.key)
            if pack.render is not None:
                renders.forget(services, pack.render)
                continue
            fresh = load(ctx, frame.ref)
            if fresh.ref.object_key != frame.ref.object_key:  # rebuilt meanwhile
                frame = fresh
                continue
            rebuild(ctx, frame)
    raise Rebuilding("the preview is being rebuilt; try again shortly")


def rebuild(ctx: Ctx, frame: Frame) -> NoReturn:
    """Queue a build of the frame's version (at most one at a time) and say so."""
    with ctx.services.catalog.write() as conn:
        request_build(conn, frame.ref.version_pk)
    raise Rebuilding("the preview is being rebuilt; try again shortly")


def etag_of(frame: Frame, pack: Pack) -> str:
    ref = frame.ref
    return f'"{ref.sha256}-{ref.frame}-{pack.spec.token}-{pack.spec.fmt}-{digest(pack.key)[:12]}"'


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return etag in candidates or "*" in candidates
