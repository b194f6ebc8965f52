"""On-demand renders: a frame with another window, or as lossless tiles, in a bounded cache.

The stored preview of a frame is rendered once, with the dataset's default window, in the
configured tile format. Anything else a viewer asks for (a window dragged to new values,
a preset, lossless PNG tiles) is rendered here from the stored original, on the first
request for it, into a tile pack like the stored one.

Two things keep a client that drags the window from filling the store or the CPU:

- window values are quantised (:func:`quantise`): the step is a power of two no larger
  than half an output grey level (``width / 512``), so renders that would look the same
  are one render;
- the renders are a cache bounded by count and bytes (``CONSULT_RENDER_CACHE_ITEMS``,
  ``CONSULT_RENDER_CACHE_MB``), evicted least recently used first, and at most
  :data:`CONCURRENT_RENDERS` are built at once per process.

The ``renders`` row is the build lock: the request that inserts it (status ``building``)
builds; the others wait for it to be ``ready`` (or get :class:`RenderBusy`, a 503 with
Retry-After). A build left ``building`` by a process that died is taken over after
``stale_after`` seconds.
"""

from __future__ import annotations

import enum
import logging
import math
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from consult.catalog import as_utc, utcnow
from consult.catalog.tables import renders
from consult.errors import NotFound, Unavailable
from consult.services import Services
from storage import StorageError
from storage.keys import render_key
from viewer import NoImage, RenderError, Window, open_frames
from viewer.dzi import FORMATS
from viewer.luts import WINDOW_FUNCTIONS, Voi
from viewer.pyramid import build

log = logging.getLogger(__name__)

CONCURRENT_RENDERS = 2
_slots = threading.BoundedSemaphore(CONCURRENT_RENDERS)
MAX_WINDOW_VALUE = 1e9
MAX_PRESETS = 64


class RenderStatus(enum.StrEnum):
    """Where an on-demand render stands (a ``renders`` row)."""

    BUILDING = "building"
    """Claimed by the request that builds it: the row is the build lock, others wait."""
    READY = "ready"
    """Its tile pack is stored; evicted least recently used first."""
    FAILED = "failed"
    """The frame cannot be rendered so; ``reason`` says why (kept, so it is not retried)."""


class RenderBusy(Unavailable):
    """The render is being built (or too many are): ask again after ``retry_after`` s."""


class RenderFailed(NotFound):
    """The frame cannot be rendered as asked (the reason says why)."""


def quantise(center: float, width: float, function: str = "LINEAR") -> Window:
    """A window rounded to a step of ``2**floor(log2(width / 512))``: at most half an output
    grey level, so the rounded window renders the same picture to the eye."""
    function = function.upper()
    if function not in WINDOW_FUNCTIONS:
        raise ValueError(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}")
    if not (math.isfinite(center) and math.isfinite(width)):
        raise ValueError("window center and width must be finite numbers")
    if abs(center) > MAX_WINDOW_VALUE or not 0 < width <= MAX_WINDOW_VALUE:
        raise ValueError("window center or width out of range")
    step = 2.0 ** max(-20, math.floor(math.log2(width / 512)))
    c = round(center / step) * step
    w = max(round(width / step) * step, step)
    if function == "LINEAR":
        w = max(w, 1.0)
    return Window(c + 0.0, w, function)


@dataclass(frozen=True)
class RenderSpec:
    """What a request asks for: a window, a preset (index into the frame's presets) or the
    dataset default (both None), and a tile format."""

    fmt: str
    window: Window | None = None
    preset: int | None = None

    @property
    def is_default(self) -> bool:
        """Neither a window nor a preset: the dataset's own window."""
        return self.window is None and self.preset is None

    @property
    def token(self) -> str:
        """The name of the window, as stored and put into ETags."""
        if self.window is not None:
            w = self.window
            return f"{w.function}:{w.center!r}:{w.width!r}"
        if self.preset is not None:
            return f"preset:{self.preset}"
        return "default"


def parse_spec(params: Mapping[str, str], default_format: str) -> RenderSpec:
    """Read ``window=CENTER,WIDTH`` (with ``function=linear|linear_exact|sigmoid``),
    ``preset=N`` and ``format=jpeg|png`` from query parameters; ValueError if malformed."""
    fmt = params.get("format", default_format).lower()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    window = params.get("window")
    preset = params.get("preset")
    if window is not None and preset is not None:
        raise ValueError("give a window or a preset, not both")
    if window is not None:
        parts = window.split(",")
        if len(parts) != 2 or any(len(p) > 32 for p in parts):
            raise ValueError("window must be CENTER,WIDTH")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError("window must be two numbers: CENTER,WIDTH") from None
        function = params.get("function", "LINEAR")[:16]
        return RenderSpec(fmt, window=quantise(center, width, function))
    if preset is not None:
        if not preset.isdigit() or int(preset) >= MAX_PRESETS:
            raise ValueError(f"preset must be a number below {MAX_PRESETS}")
        return RenderSpec(fmt, preset=int(preset))
    return RenderSpec(fmt)


@dataclass(frozen=True)
class Target:
    """The frame to render: its instance version, the original's key and hash."""

    version_pk: int
    frame: int
    sha256: str
    original_key: str


@dataclass(frozen=True)
class Render:
    id: int
    object_key: str
    bytes: int


def _where(target: Target, spec: RenderSpec) -> tuple[ColumnElement[bool], ...]:
    return (
        renders.c.version_pk == target.version_pk,
        renders.c.frame == target.frame,
        renders.c.window == spec.token,
        renders.c.tile_format == spec.fmt,
    )


def get_render(
    services: Services,
    target: Target,
    spec: RenderSpec,
    *,
    wait: float = 20.0,
    touch_after: float = 30.0,
    stale_after: float = 120.0,
) -> Render:
    """The stored render of ``target`` as ``spec`` asks, building it if needed.

    Raises :class:`RenderBusy` when another request is still building it after ``wait``
    seconds (or this process has no free build slot), :class:`RenderFailed` when the frame
    cannot be rendered so.
    """
    deadline = time.monotonic() + wait
    while True:
        with services.catalog.read() as conn:
            row = conn.execute(select(renders).where(*_where(target, spec))).first()
        now = utcnow()
        if row is None:
            claimed = _claim(services, target, spec)
            if claimed is not None:
                return _build(services, target, spec, claimed, deadline)
        elif row.status == RenderStatus.READY:
            if now - as_utc(row.last_used_at) > timedelta(seconds=touch_after):
                with services.catalog.write() as conn:
                    conn.execute(
                        update(renders).where(renders.c.id == row.id).values(last_used_at=now)
                    )
            return Render(row.id, row.object_key, int(row.bytes))
        elif row.status == RenderStatus.FAILED:
            raise RenderFailed(row.reason or "the frame cannot be rendered")
        elif now - as_utc(row.claimed_at) > timedelta(seconds=stale_after):
            with services.catalog.write() as conn:
                taken = conn.execute(
                    update(renders)
                    .where(renders.c.id == row.id, renders.c.claimed_at == row.claimed_at)
                    .values(claimed_at=now)
                ).rowcount
            if taken:
                return _build(services, target, spec, int(row.id), deadline)
        if time.monotonic() >= deadline:
            raise RenderBusy("the picture is being rendered; try again shortly")
        time.sleep(0.05)


def _claim(services: Services, target: Target, spec: RenderSpec) -> int | None:
    """Insert the ``building`` row; None if another request holds it already."""
    now = utcnow()
    with services.catalog.write() as conn:
        try:
            with conn.begin_nested():
                key = conn.execute(
                    renders.insert().values(
                        version_pk=target.version_pk,
                        frame=target.frame,
                        window=spec.token,
                        tile_format=spec.fmt,
                        status=RenderStatus.BUILDING.value,
                        bytes=0,
                        claimed_at=now,
                        last_used_at=now,
                    )
                ).inserted_primary_key
        except IntegrityError:
            return None
    return int(key[0]) if key else None


def _resolve_voi(spec: RenderSpec, windows: list[Voi]) -> Voi | None:
    if spec.window is not None:
        return spec.window
    if spec.preset is not None:
        if spec.preset >= len(windows):
            raise RenderFailed(f"the frame has no preset {spec.preset}")
        return windows[spec.preset]
    return None


def _build(
    services: Services, target: Target, spec: RenderSpec, row_id: int, deadline: float
) -> Render:
    if not _slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
        _release(services, row_id)
        raise RenderBusy("too many pictures are being rendered; try again shortly")
    try:
        render = _make(services, target, spec, row_id)
    except RenderFailed:
        raise
    except BaseException:
        _release(services, row_id)
        raise
    finally:
        _slots.release()
    evict(services)
    return render


def _make(services: Services, target: Target, spec: RenderSpec, row_id: int) -> Render:
    """Render, cut, store, and mark the row ready (or failed, with the reason)."""
    try:
        source = open_frames(services.store.get(target.original_key))
        if target.frame >= source.frames:
            raise RenderFailed(f"the object has no frame {target.frame}")
        windows = (
            [p.window for p in source.windows(target.frame)] if spec.preset is not None else []
        )
        pixels = source.render(target.frame, _resolve_voi(spec, windows))
        del source  # the original's bytes and decoded frame go before tiles are cut
        pyramid = build(pixels, fmt=spec.fmt, quality=services.settings.tile_quality)
        del pixels
    except (NoImage, RenderError, RenderFailed) as exc:
        _mark_failed(services, row_id, str(exc))
        raise RenderFailed(str(exc)) from None
    key = render_key(target.sha256, target.frame, spec.token, spec.fmt, secrets.token_hex(8))
    services.store.put(key, pyramid.data, content_type="application/vnd.consult.tiles")
    with services.catalog.write() as conn:
        conn.execute(
            update(renders)
            .where(renders.c.id == row_id)
            .values(
                status=RenderStatus.READY.value,
                object_key=key,
                bytes=len(pyramid.data),
                last_used_at=utcnow(),
            )
        )
    return Render(row_id, key, len(pyramid.data))


def _mark_failed(services: Services, row_id: int, reason: str) -> None:
    with services.catalog.write() as conn:
        conn.execute(
            update(renders)
            .where(renders.c.id == row_id)
            .values(status=RenderStatus.FAILED.value, reason=reason[:500], last_used_at=utcnow())
        )


def _release(services: Services, row_id: int) -> None:
    """Give up a claim (the build could not be done now); the next request tries again."""
    try:
        with services.catalog.write() as conn:
            conn.execute(
                delete(renders).where(
                    renders.c.id == row_id, renders.c.status == RenderStatus.BUILDING.value
                )
            )
    except Exception as exc:  # the claim goes stale and is taken over later
        log.warning("render claim %d not released: %s", row_id, exc)


def forget(services: Services, render: Render) -> None:
    """Drop a render whose object went missing, so that the next request rebuilds it."""
    with services.catalog.write() as conn:
        conn.execute(delete(renders).where(renders.c.id == render.id))


def drop_for(services: Services, version_ids: list[int]) -> int:
    """Delete the finished renders of these versions (e.g. before a rebuild with a changed
    pipeline); returns how many."""
    with services.catalog.write() as conn:
        victims = [
            (int(r.id), r.object_key)
            for r in conn.execute(
                select(renders.c.id, renders.c.object_key).where(
                    renders.c.version_pk.in_(version_ids),
                    renders.c.status != RenderStatus.BUILDING.value,
                )
            )
        ]
        if victims:
            conn.execute(delete(renders).where(renders.c.id.in_([v[0] for v in victims])))
    _delete_objects(services, victims)
    return len(victims)


def _delete_objects(services: Services, victims: list[tuple[int, str | None]]) -> None:
    for _id, key in victims:
        if key:
            try:
                services.store.delete(key)
            except StorageError as exc:
                log.warning("render not deleted from the store: %s", exc)


def evict(services: Services) -> int:
    """Delete the least recently used renders beyond the count and byte bounds; returns how
    many were deleted."""
    settings = services.settings
    max_items, max_bytes = settings.render_cache_items, settings.render_cache_mb * 1024 * 1024
    with services.catalog.write() as conn:
        victims = _victims(conn, max_items, max_bytes)
        if victims:
            conn.execute(delete(renders).where(renders.c.id.in_([v[0] for v in victims])))
    _delete_objects(services, victims)
    return len(victims)


def _victims(conn: Connection, max_items: int, max_bytes: int) -> list[tuple[int, str | None]]:
    rows = conn.execute(
        select(renders.c.id, renders.c.object_key, renders.c.bytes)
        .where(renders.c.status != RenderStatus.BUILDING.value)
        .order_by(renders.c.last_used_at.desc(), renders.c.id.desc())
    ).all()
    kept = total = 0
    victims = []
    for row in rows:
        size = int(row.bytes or 0)
        if kept < max_items and (kept == 0 or total + size <= max_bytes):
            kept += 1
            total += size
        else:
            victims.append((int(row.id), row.object_key))
    return victims
