"""Build the deep-zoom pyramid of one rendered frame: 8-bit image -> levels -> tiles -> pack.

The input is the frame already rendered to 8 bits (greyscale ``(H, W)`` or colour
``(H, W, 3)``, see :mod:`viewer.pixels`). Levels follow :mod:`viewer.dzi`: the top level is
the full image, each lower level is the one above reduced 2x (box filter; Pillow's
``reduce`` rounds odd sizes up, which is exactly ``ceil(size / 2**k)``), down to 1x1.

Memory: the full-resolution level shares the caller's array (Pillow maps an ``L`` array
without copying), each lower level is a quarter of the one above and replaces it, and
tiles are cropped one at a time. Nothing is ever converted to floating point here. Peak
extra memory is about a third of the 8-bit image plus the encoded tiles.

Extras stored in the pack beside the tiles:

- ``thumbnail``: the highest level that fits in one tile and in :data:`THUMBNAIL_SIDE`
  pixels (the same bytes as that level's only tile);
- ``overview``: the highest level that fits in :data:`OVERVIEW_SIDE` pixels, as one image
  (the same bytes as the top tile for frames that are one image anyway).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from viewer.dzi import Geometry, geometry_for
from viewer.tilepack import PackWriter

THUMBNAIL_SIDE = 256
OVERVIEW_SIDE = 1024
DEFAULT_QUALITY = 85


@dataclass(frozen=True)
class Pyramid:
    """A built pyramid: the pack's bytes and what the catalog records about it."""

    geometry: Geometry
    data: bytes
    thumbnail_size: tuple[int, int]
    overview_size: tuple[int, int]


def to_image(pixels: np.ndarray[Any, Any]) -> Image.Image:
    """An 8-bit frame as a Pillow image (``L`` shares the array's memory)."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(pixels), "L")
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    raise ValueError(f"pixels must be (H, W) or (H, W, 3), got {pixels.shape}")


def levels(image: Image.Image, geometry: Geometry) -> Iterator[tuple[int, Image.Image]]:
    """(level, image) from the full-resolution level down to 1x1, by successive 2x box
    reduction."""
    current = image
    for level in range(geometry.max_level, -1, -1):
        if level != geometry.max_level:
            current = current.reduce(2)
        if current.size != geometry.level_size(level):  # pragma: no cover - by construction
            raise AssertionError(f"level {level} is {current.size}")
        yield level, current


def encode(image: Image.Image, fmt: str, quality: int = DEFAULT_QUALITY) -> bytes:
    """One tile or extra as JPEG (baseline, 4:4:4 for colour) or lossless PNG."""
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, format="JPEG", quality=quality, subsampling=0)
    elif fmt == "png":
        image.save(out, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown tile format {fmt!r}")
    return out.getvalue()


def build(
    pixels: np.ndarray[Any, Any],
    *,
    fmt: str = "jpeg",
    quality: int = DEFAULT_QUALITY,
    meta: dict[str, Any] | None = None,
) -> Pyramid:
    """Cut an 8-bit frame into its DZI pyramid and pack it (see :mod:`viewer.tilepack`).

    Parameters
    ----------
    pixels
        The rendered frame, uint8, ``(H, W)`` or ``(H, W, 3)``. Not modified.
    fmt
        ``jpeg`` (lossy, ``quality`` 1-95) or ``png`` (lossless).
    meta
        Stored in the pack header (e.g. the window the frame was rendered with).
    """
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    geometry = geometry_for(width, height, format=fmt)
    writer = PackWriter(geometry)
    thumbnail_level = overview_level = -1
    thumbnail_size = overview_size = (0, 0)
    for level, image in levels(to_image(pixels), geometry):
        side = max(image.size)
        for col, row in geometry.tiles(level):
            box = geometry.tile_box(level, col, row)
            whole = box == (0, 0, *image.size)
            writer.add_tile(
                level, col, row, encode(image if whole else image.crop(box), fmt, quality)
            )
        if overview_level < 0 and side <= OVERVIEW_SIDE:
            overview_level, overview_size = level, image.size
            if geometry.grid(level) == (1, 1):
                writer.alias_extra("overview", level, 0, 0)
            else:
                writer.add_extra("overview", encode(image, fmt, quality))
        if thumbnail_level < 0 and side <= THUMBNAIL_SIDE and geometry.grid(level) == (1, 1):
            thumbnail_level, thumbnail_size = level, image.size
            writer.alias_extra("thumbnail", level, 0, 0)
    data = writer.finish(
        {
            **(meta or {}),
            "thumbnail_level": thumbnail_level,
            "overview_level": overview_level,
        }
    )
    return Pyramid(
        geometry=geometry, data=data, thumbnail_size=thumbnail_size, overview_size=overview_size
    )
