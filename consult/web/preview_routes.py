"""Deep-zoom routes: descriptors, tiles, frame images and thumbnails, through the app.

All GET, all behind the session and :mod:`consult.access.check` (a study the user may not see
is a 404, audited as denied; reads are audited once per session and instance version, not
once per tile). Tiles are read from the frame's tile pack (:mod:`viewer.tilepack`, through
:mod:`consult.web.preview_reads`) with one range read; nothing is handed out as a presigned URL.

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
it so) and answered 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from consult import access
from consult.access import audit
from consult.access.audit import Actor, Outcome
from consult.catalog.tables import instance_versions, instances, previews, series, studies
from consult.errors import NotFound
from consult.previews.builds import request_build
from consult.previews.renders import RenderBusy, RenderSpec
from consult.settings import Settings
from consult.web import preview_reads
from consult.web.context import Ctx, endpoint
from viewer.dzi import MEDIA_TYPES, geometry_for
from viewer.tilepack import PackIndex

CACHE_CONTROL = "private, max-age=60"
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _image(pack: preview_reads.Pack, data: bytes | None, etag: str) -> Response:
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Consult-Lossy": "true" if pack.lossy else "false",
        "X-Consult-Window": pack.spec.token,
    }
    if data is None:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=MEDIA_TYPES[pack.spec.fmt], headers=headers)


def _retry_later(handler: Callable[[Ctx], Response]) -> Callable[[Ctx], Response]:
    """Answer "being built" as 503 with Retry-After (not as an error page without it)."""

    def run(ctx: Ctx) -> Response:
        try:
            return handler(ctx)
        except (preview_reads.Rebuilding, RenderBusy) as exc:
            return Response(
                str(exc),
                status_code=503,
                media_type="text/plain",
                headers={"Retry-After": str(RenderBusy.retry_after), "Cache-Control": "no-store"},
            )

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _extra(name: str) -> Callable[[PackIndex], tuple[int, int]]:
    def part(index: PackIndex) -> tuple[int, int]:
        span = index.extra_span(name)
        if span is None:
            raise NotFound(f"the preview has no {name}")
        return span

    return part


def frame_image(ctx: Ctx) -> Response:
    """The frame at the largest level that fits 1024 px (the whole frame when smaller)."""
    frame = preview_reads.frame_for(ctx)
    pack, data, etag = preview_reads.read_part(
        ctx, frame, preview_reads.spec_for(ctx, frame), _extra("overview")
    )
    return _image(pack, data, etag)


def thumbnail(ctx: Ctx) -> Response:
    frame = preview_reads.frame_for(ctx)
    pack, data, etag = preview_reads.read_part(
        ctx, frame, preview_reads.spec_for(ctx, frame), _extra("thumbnail")
    )
    return _image(pack, data, etag)


def tile(ctx: Ctx) -> Response:
    frame = preview_reads.frame_for(ctx)
    spec = preview_reads.spec_for(ctx, frame)
    width, height = preview_reads.ready(frame)
    level, col, row = (int(ctx.request.path_params[k]) for k in ("level", "col", "row"))
    if ctx.path_param("ext") != spec.fmt:
        raise NotFound(f"tiles of this pyramid are .{spec.fmt}")
    geometry = geometry_for(width, height, format=spec.fmt)
    try:
        geometry.tile_box(level, col, row)
    except ValueError:
        raise NotFound("no such tile") from None
    pack, data, etag = preview_reads.read_part(
        ctx, frame, spec, lambda index: index.tile(level, col, row)
    )
    return _image(pack, data, etag)


def descriptor(ctx: Ctx) -> Response:
    """The ``.dzi`` XML. Asking for it is also when a missing stored pyramid is noticed."""
    frame = preview_reads.frame_for(ctx)
    spec = preview_reads.spec_for(ctx, frame)
    width, height = preview_reads.ready(frame)
    geometry = geometry_for(width, height, format=spec.fmt)
    if spec.is_default and spec.fmt == frame.tile_format and frame.ref.object_key:
        if not ctx.services.store.exists(frame.ref.object_key):
            with ctx.services.catalog.write() as conn:
                request_build(conn, frame.ref.version_pk)
    etag = f'"{frame.ref.sha256}-{frame.ref.frame}-{spec.token}-{spec.fmt}-dzi"'
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Consult-Lossy": "true" if spec.fmt == "jpeg" else "false",
        "X-Consult-Window": spec.token,
    }
    if preview_reads.etag_matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(geometry.descriptor(), media_type="application/xml", headers=headers)


def info(ctx: Ctx) -> Response:
    """What the viewer needs about a frame: size, tiles, lossiness, windows, URLs."""
    frame = preview_reads.frame_for(ctx)
    ref = frame.ref
    body: dict[str, Any] = {"id": ref.id, "frame": ref.frame, "status": ref.status}
    if ref.status != "ready" or not frame.width or not frame.height:
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


def _number_key(value: str) -> tuple[int, int, str]:
    stripped = value.strip()
    return (0, int(stripped), "") if stripped.isdigit() else (1, 0, stripped)


def series_thumbnail(ctx: Ctx) -> Response:
    """The thumbnail of the series' middle instance (by instance number) that has one."""
    series_uid = ctx.path_param("series_uid")
    catalog, user = ctx.services.catalog, ctx.user
    with catalog.read() as conn:
        found = (
            conn.execute(
                select(series.c.id, studies.c.study_uid)
                .join(studies, studies.c.id == series.c.study_pk)
                .where(series.c.series_uid == series_uid)
            ).first()
            if access.valid_uid(series_uid)
            else None
        )
        candidates = (
            conn.execute(
                select(previews.c.id, previews.c.version_pk, instances.c.instance_number)
                .join(instance_versions, instance_versions.c.id == previews.c.version_pk)
                .join(instances, instances.c.id == instance_versions.c.instance_pk)
                .where(
                    instances.c.series_pk == found.id,
                    instance_versions.c.version == instances.c.current_version,
                    previews.c.frame == 0,
                    previews.c.status == "ready",
                )
            ).all()
            if found is not None
            else []
        )
    if found is None:
        with catalog.write() as conn:
            audit.record(
                conn,
                Actor(user_id=user.id, username=user.username, client=ctx.client),
                action="preview.read",
                object_type="series",
                object_id=series_uid[:128],
                outcome=Outcome.DENIED,
                detail="no such series",
            )
        raise NotFound("series not found")
    ordered = sorted(candidates, key=lambda r: (_number_key(r.instance_number), r.id))
    chosen = ordered[len(ordered) // 2] if ordered else None
    try:
        access.require_study(
            catalog,
            user,
            found.study_uid,
            action="preview.read",
            client=ctx.client,
            audit_object=(
                ("instance_version", str(chosen.version_pk)) if chosen else ("series", series_uid)
            ),
            dedup_key=f"preview:{ctx.session_key}:{chosen.version_pk}" if chosen else None,
        )
    except NotFound:
        raise NotFound("series not found") from None
    if chosen is None:
        raise NotFound("no thumbnail yet for this series")
    ref = access.require_preview(
        catalog, user, int(chosen.id), client=ctx.client, session_key=ctx.session_key
    )
    frame = preview_reads.load(ctx, ref)
    pack, data, etag = preview_reads.read_part(
        ctx, frame, RenderSpec(frame.tile_format or "jpeg"), _extra("thumbnail")
    )
    return _image(pack, data, etag)


def openseadragon_dir(settings: Settings) -> Path:
    """OpenSeadragon's build folder, from ``CONSULT_NODE_MODULES_DIR`` or beside the sources."""
    root = Path(settings.node_modules_dir) if settings.node_modules_dir else SOURCE_ROOT
    modules = root if root.name == "node_modules" else root / "node_modules"
    return modules / "openseadragon" / "build" / "openseadragon"


def _missing_vendor(ctx: Ctx) -> Response:
    raise NotFound("OpenSeadragon is not installed: run `npm install` in the source folder")


def routes(settings: Settings) -> list[BaseRoute]:
    """The routes above, to be placed before the app's other routes."""
    osd = openseadragon_dir(settings)
    vendor: BaseRoute = (
        Mount("/static/vendor/openseadragon", app=StaticFiles(directory=osd), name="openseadragon")
        if osd.is_dir()
        else Route(
            "/static/vendor/openseadragon/{path:path}",
            endpoint(_missing_vendor, public=True),
            name="openseadragon",
        )
    )
    p = "/previews/{preview_id:int}"
    tile_path = f"{p}_files/{{level:int}}/{{col:int}}_{{row:int}}.{{ext}}"
    return [
        vendor,
        Route(p, endpoint(_retry_later(frame_image)), name="preview", methods=["GET"]),
        Route(f"{p}.dzi", endpoint(_retry_later(descriptor)), name="preview_dzi", methods=["GET"]),
        Route(f"{p}.json", endpoint(info), name="preview_info", methods=["GET"]),
        Route(tile_path, endpoint(_retry_later(tile)), name="preview_tile", methods=["GET"]),
        Route(
            f"{p}/thumbnail",
            endpoint(_retry_later(thumbnail)),
            name="preview_thumbnail",
            methods=["GET"],
        ),
        Route(
            "/series/{series_uid}/thumbnail",
            endpoint(_retry_later(series_thumbnail)),
            name="series_thumbnail",
            methods=["GET"],
        ),
    ]
