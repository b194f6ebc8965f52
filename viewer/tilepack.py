"""Tile packs: every tile of one frame's pyramid in one stored object, served by range reads.

A 4096x3328 mammogram has about 340 tiles. Storing each as its own object would mean
340 fsyncs (folder store) or 340 PUTs (S3) per frame, and a pyramid that can be seen half
written. A pack is written with one ``put``: it exists whole or not at all, a missing
pyramid is one missing object, and evicting a render deletes one object. A tile is read
with one ``get_range`` once the index is known (the index is small and cached).

Layout (all integers big-endian)::

    b"CTILES01"            magic, 8 bytes
    uint32                 length N of the JSON header
    N bytes                JSON: geometry, format, the (offset, length) of every tile in
                           canonical order (level 0 first, then row by row, see
                           :meth:`viewer.dzi.Geometry.tile_index`), named extras
                           ("overview", "thumbnail") and free metadata (the window)
    data                   tile bytes; offsets count from the start of the data

Extras may point at a tile's bytes (the thumbnail is usually the first level that fits
in one tile), so they cost nothing to store twice.
"""

from __future__ import annotations

import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from viewer.dzi import Geometry

MAGIC = b"CTILES01"
_HEAD = struct.Struct(">8sI")
MAX_HEADER = 16 * 1024 * 1024
FIRST_READ = 64 * 1024
"""Bytes read first when opening a pack: the header of a 4096x3328 pyramid is ~8 KB."""


class PackError(ValueError):
    """A stored object is not a well-formed tile pack."""


Span = tuple[int, int]


@dataclass(frozen=True)
class PackIndex:
    """Where each tile and extra of a pack lies (absolute byte offsets in the object)."""

    geometry: Geometry
    tiles: tuple[Span, ...]
    extras: dict[str, Span]
    meta: dict[str, Any]
    size: int

    def tile(self, level: int, col: int, row: int) -> Span:
        """(start, length) of a tile; ValueError if the tile does not exist."""
        return self.tiles[self.geometry.tile_index(level, col, row)]

    def extra_span(self, name: str) -> Span | None:
        return self.extras.get(name)


@dataclass
class PackWriter:
    """Collects encoded tiles (in any order), then writes the pack in one piece."""

    geometry: Geometry
    chunks: list[bytes] = field(default_factory=list)
    spans: dict[int, Span] = field(default_factory=dict)
    extras: dict[str, Span] = field(default_factory=dict)
    offset: int = 0

    def _append(self, data: bytes) -> Span:
        span = (self.offset, len(data))
        self.chunks.append(data)
        self.offset += len(data)
        return span

    def add_tile(self, level: int, col: int, row: int, data: bytes) -> None:
        self.spans[self.geometry.tile_index(level, col, row)] = self._append(data)

    def add_extra(self, name: str, data: bytes) -> None:
        self.extras[name] = self._append(data)

    def alias_extra(self, name: str, level: int, col: int, row: int) -> None:
        """Make extra ``name`` the same bytes as an already added tile."""
        self.extras[name] = self.spans[self.geometry.tile_index(level, col, row)]

    def finish(self, meta: dict[str, Any] | None = None) -> bytes:
        count = self.geometry.tile_count()
        if len(self.spans) != count:
            raise ValueError(f"pack has {len(self.spans)} of {count} tiles")
        g = self.geometry
        header = json.dumps(
            {
                "width": g.width,
                "height": g.height,
                "tile_size": g.tile_size,
                "overlap": g.overlap,
                "format": g.format,
                "tiles": [self.spans[i] for i in range(count)],
                "extras": self.extras,
                "meta": meta or {},
            },
            separators=(",", ":"),
        ).encode("utf-8")
        return b"".join([_HEAD.pack(MAGIC, len(header)), header, *self.chunks])


def _span(value: Any, data_start: int, size: int) -> Span:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and v >= 0 for v in value)
    ):
        raise PackError("bad span in pack header")
    start, length = data_start + value[0], value[1]
    if start + length > size:
        raise PackError("span beyond the end of the pack")
    return start, length


def read_index(
    fetch: Callable[[int, int], bytes], size: int, *, first_read: int = FIRST_READ
) -> PackIndex:
    """Parse a pack's header; ``fetch(start, length)`` reads bytes of the ``size``-byte
    object (one read of ``first_read`` bytes, a second one if the header is longer)."""
    first = fetch(0, min(first_read, size))
    if len(first) < _HEAD.size:
        raise PackError("pack too short")
    magic, length = _HEAD.unpack_from(first)
    if magic != MAGIC or length > MAX_HEADER or _HEAD.size + length > size:
        raise PackError("not a tile pack")
    raw = first[_HEAD.size : _HEAD.size + length]
    if len(raw) < length:
        raw += fetch(_HEAD.size + len(raw), length - len(raw))
    try:
        header = json.loads(raw)
        geometry = Geometry(
            int(header["width"]),
            int(header["height"]),
            tile_size=int(header["tile_size"]),
            overlap=int(header["overlap"]),
            format=str(header["format"]),
        )
        data_start = _HEAD.size + length
        tiles = tuple(_span(v, data_start, size) for v in header["tiles"])
        extras = {str(k): _span(v, data_start, size) for k, v in dict(header["extras"]).items()}
        meta = dict(header.get("meta") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise PackError(f"bad pack header: {exc}") from None
    if len(tiles) != geometry.tile_count():
        raise PackError("pack header lists the wrong number of tiles")
    return PackIndex(geometry=geometry, tiles=tiles, extras=extras, meta=meta, size=size)


class IndexCache:
    """A small thread-safe LRU of pack indexes by object key (packs are never rewritten in
    place: every build has its own key, see :func:`storage.keys.tiles_key`)."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, PackIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> PackIndex | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str, index: PackIndex) -> None:
        with self._lock:
            self._items[key] = index
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)
