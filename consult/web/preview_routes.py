"""Deep-zoom routes: descriptors, tiles, frame images and thumbnails, through the app.

All GET, all behind the session and :mod:`consult.access.check` (a study the user may not see
is a 404, audited as denied; reads are audited once per session and instance version, not
once per tile). Tiles are read from the frame's tile pack (:mod:`viewer.tilepack`, through
:mod:`consult.previews.served`) with one range read; nothing is handed out as a presigned URL.

======================================================  =====================  =========
path                                                    what                   name
======================================================  =====================  =========
``/previews/{id}``                                      frame image (<= 1024)  preview
``/previews/{id}.dzi``                                  DZI descriptor         preview_dzi
``/previews/{id}.json``                                 frame info (viewer)    preview_info
``/previews/{id}_files/{level}/{col}_{row}.{ext}``      one tile               preview_tile
``/previews/{id}/thumbnail``                            frame thumbnail        preview_thumbnail
``/series/{series_uid}/thumbnail``                      series thumbnail       series_thumbnail
``/static/vendor/openseadragon/``                       OpenSeadragon (npm)    openseadragon
======================================================  =====================  =========

Query parameters of the first five: ``window=CENTER,WIDTH`` (``function=``), ``preset=N``
and ``format=jpeg|png`` (see :func:`consult.previews.renders.parse_spec`). Without them the stored
pyramid is served (the dataset's window, ``CONSULT_TILE_FORMAT``); with them an on-demand
render. Responses say ``X-Consult-Lossy: true|false`` (JPEG or PNG tiles) and carry an
ETag made of the version's SHA-256, the frame, the window, the format and the build.

A stored pyramid found missing is queued for a rebuild (once, however many requests find
it so) and answered 503 with ``Retry-After`` (:class:`~consult.errors.Unavailable`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.responses import Response

from consult import access
from consult.dicom.identifiers import is_uid
from consult.errors import NotFound
from consult.previews import served
from consult.previews.builds import PreviewStatus
from consult.previews.renders import RenderSpec
from consult.settings import Settings
from consult.web.context import Ctx
from viewer.dzi import MEDIA_TYPES, geometry_for
from viewer.tilepack import PackIndex

CACHE_CONTROL = "private, max-age=60"
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _frame(ctx: Ctx) -> served.Frame:
    """The request's ``preview_id``, if the user may see it (404 and audited otherwise)."""
    ref = access.require_preview(
        ctx.services.catalog,
        ctx.user,
        ctx.int_param("preview_id"),
        client=ctx.client,
        session_key=ctx.session_key,
    )
    return served.load(ctx.services.catalog, ref)


def _spec(ctx: Ctx, frame: served.Frame) -> RenderSpec:
    return served.spec_for(frame, ctx.request.query_params, ctx.services.settings.tile_format)


def _image(
    ctx: Ctx,
    frame: served.Frame,
    spec: RenderSpec,
    part: Callable[[PackIndex], tuple[int, int]],
) -> Response:
    """One part of the frame's pack (a tile, the overview, the thumbnail) as a response."""
    pack, data, etag = served.read_part(
        ctx.services, frame, spec, part, if_none_match=ctx.request.headers.get("if-none-match")
    )
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Consult-Lossy": "true" if pack.lossy else "false",
        "X-Consult-Window": pack.spec.token,
    }
    if data is None:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=MEDIA_TYPES[pack.spec.fmt], headers=headers)


def _extra(name: str) -> Callable[[PackIndex], tuple[int, int]]:
    def part(index: PackIndex) -> tuple[int, int]:
        span = index.extra_span(name)
        if span is None:
            raise NotFound(f"the preview has no {name}")
        return span

    return part


def frame_image(ctx: Ctx) -> Response:
    """The frame at the largest level that fits 1024 px (the whole frame when smaller)."""
    frame = _frame(ctx)
    return _image(ctx, frame, _spec(ctx, frame), _extra("overview"))


def thumbnail(ctx: Ctx) -> Response:
    frame = _frame(ctx)
    return _image(ctx, frame, _spec(ctx, frame), _extra("thumbnail"))


def tile(ctx: Ctx) -> Response:
    frame = _frame(ctx)
    spec = _spec(ctx, frame)
    width, height = served.ready(frame)
    level, col, row = (int(ctx.request.path_params[k]) for k in ("level", "col", "row"))
    if ctx.path_param("ext") != spec.fmt:
        raise NotFound(f"tiles of this pyramid are .{spec.fmt}")
    geometry = geometry_for(width, height, format=spec.fmt)
    try:
        geometry.tile_box(level, col, row)
    except ValueError:
        raise NotFound("no such tile") from None
    return _image(ctx, frame, spec, lambda index: index.tile(level, col, row))


def descriptor(ctx: Ctx) -> Response:
    """The ``.dzi`` XML. Asking for it is also when a missing stored pyramid is noticed."""
    frame = _frame(ctx)
    spec = _spec(ctx, frame)
    width, height = served.ready(frame)
    geometry = geometry_for(width, height, format=spec.fmt)
    served.check_stored(ctx.services, frame, spec)
    etag = f'"{frame.ref.sha256}-{frame.ref.frame}-{spec.token}-{spec.fmt}-dzi"'
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Consult-Lossy": "true" if spec.fmt == "jpeg" else "false",
        "X-Consult-Window": spec.token,
    }
    if served.etag_matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(geometry.descriptor(), media_type="application/xml", headers=headers)


def info(ctx: Ctx) -> Response:
    """What the viewer needs about a frame: size, tiles, lossiness, windows, URLs."""
    frame = _frame(ctx)
    ref = frame.ref
    body: dict[str, Any] = {"id": ref.id, "frame": ref.frame, "status": ref.status}
    if ref.status != PreviewStatus.READY or not frame.width or not frame.height:
        body["reason"] = frame.reason or ""
        return Response(json.dumps(body), media_type="application/json")
    fmt = frame.tile_format or ctx.services.settings.tile_format
    geometry = geometry_for(frame.width, frame.height, format=fmt)
    center, width, function = frame.window
    body.update(
        width=geometry.width,
        height=geometry.height,
        tile_size=geometry.tile_size,
        overlap=geometry.overlap,
        levels=geometry.levels,
        layout="single" if geometry.single_tile else "tiled",
        format=fmt,
        lossy=geometry.lossy,
        source_lossy=bool(frame.source_lossy),
        window={"center": center, "width": width, "function": function},
        windows=json.loads(frame.windows) if frame.windows else [],
        urls={
            "dzi": ctx.url("preview_dzi", preview_id=ref.id),
            "image": ctx.url("preview", preview_id=ref.id),
            "thumbnail": ctx.url("preview_thumbnail", preview_id=ref.id),
        },
    )
    return Response(
        json.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


def series_thumbnail(ctx: Ctx) -> Response:
    """The thumbnail of the series' middle instance (by instance number) that has one."""
    series_uid = ctx.path_param("series_uid")
    catalog, user = ctx.services.catalog, ctx.user
    source = None
    if is_uid(series_uid):
        with catalog.read() as conn:
            source = served.series_thumbnail(conn, series_uid)
    if source is None:
        access.deny(
            catalog, user, ctx.client, "preview.read", "series", series_uid[:128], "no such series"
        )
        raise NotFound("series not found")
    try:
        access.require_study(
            catalog,
            user,
            source.study_uid,
            action="preview.read",
            client=ctx.client,
            audit_object=(
                ("instance_version", str(source.version_pk))
                if source.version_pk is not None
                else ("series", series_uid)
            ),
            dedup_key=(
                f"preview:{ctx.session_key}:{source.version_pk}"
                if source.version_pk is not None
                else None
            ),
        )
    except NotFound:
        raise NotFound("series not found") from None
    if source.preview_id is None:
        raise NotFound("no thumbnail yet for this series")
    ref = access.require_preview(
        catalog, user, source.preview_id, client=ctx.client, session_key=ctx.session_key
    )
    frame = served.load(catalog, ref)
    return _image(ctx, frame, RenderSpec(frame.tile_format or "jpeg"), _extra("thumbnail"))


def openseadragon_dir(settings: Settings) -> Path:
    """OpenSeadragon's build folder, from ``CONSULT_NODE_MODULES_DIR`` or beside the sources."""
    root = Path(settings.node_modules_dir) if settings.node_modules_dir else SOURCE_ROOT
    modules = root if root.name == "node_modules" else root / "node_modules"
    return modules / "openseadragon" / "build" / "openseadragon"


def missing_vendor(ctx: Ctx) -> Response:
    raise NotFound("OpenSeadragon is not installed: run `npm install` in the source folder")
