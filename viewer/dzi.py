"""Deep Zoom (DZI) geometry: levels, level sizes, the tile grid and the ``.dzi`` descriptor.

Pure functions over integers, as OpenSeadragon's ``DziTileSource`` reads them:

- Level 0 is 1x1 pixel; the highest level, ``max_level = ceil(log2(max(width, height)))``,
  is the full-resolution image. Level ``k`` is ``ceil(width / 2**(max_level - k))`` by
  ``ceil(height / 2**(max_level - k))``.
- A level is cut into ``ceil(level_width / tile_size)`` columns and as many rows; tile
  ``(col, row)`` covers ``[col * tile_size, (col + 1) * tile_size)`` plus ``overlap`` pixels
  on every side that has a neighbour (none at the image's edges).
- The descriptor's ``Format`` is the tile file extension (``jpeg`` or ``png``).

Frames up to :data:`PYRAMID_THRESHOLD` pixels on a side get a *single-tile* geometry: the
tile size is the frame's longer side, so every level is one tile and the frame is one
image at full resolution (see :func:`geometry_for`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

PYRAMID_THRESHOLD = 1024
"""Frames with a side longer than this get a tiled pyramid; smaller ones one image."""
TILE_SIZE = 254
TILE_OVERLAP = 1
FORMATS = ("jpeg", "png")
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
MAX_SIDE = 1 << 20
"""Largest frame side we describe (DICOM Rows/Columns are 16-bit; this is generous)."""


@dataclass(frozen=True)
class Geometry:
    """The DZI layout of one image.

    Parameters
    ----------
    width, height
        Full-resolution size in pixels (1 .. :data:`MAX_SIDE`).
    tile_size
        Tile edge in pixels, without overlap.
    overlap
        Pixels each tile repeats from its neighbours (0 when there is one tile per level).
    format
        Tile encoding and file extension: ``jpeg`` or ``png``.
    """

    width: int
    height: int
    tile_size: int = TILE_SIZE
    overlap: int = TILE_OVERLAP
    format: str = "jpeg"

    def __post_init__(self) -> None:
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ValueError(f"image size must be 1..{MAX_SIDE}, got {self.width}x{self.height}")
        if self.tile_size < 1 or not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"bad tile size/overlap {self.tile_size}/{self.overlap}")
        if self.format not in FORMATS:
            raise ValueError(f"tile format must be one of {FORMATS}, got {self.format!r}")

    @property
    def max_level(self) -> int:
        """Index of the full-resolution level: ``ceil(log2(max(width, height)))``."""
        return (max(self.width, self.height) - 1).bit_length()

    @property
    def levels(self) -> int:
        """Number of levels, 0 to :attr:`max_level` inclusive."""
        return self.max_level + 1

    @property
    def single_tile(self) -> bool:
        """Whether every level is one tile (the frame is one image)."""
        return self.tile_size >= max(self.width, self.height)

    @property
    def lossy(self) -> bool:
        return self.format == "jpeg"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) of ``level``: the full size divided by ``2**(max_level - level)``,
        rounded up."""
        self.check_level(level)
        shift = self.max_level - level
        return -(-self.width >> shift), -(-self.height >> shift)

    def grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        width, height = self.level_size(level)
        return -(-width // self.tile_size), -(-height // self.tile_size)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """Pixel box ``(left, top, right, bottom)`` of a tile in its level, overlap included."""
        cols, rows = self.grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"tile {col}_{row} is outside level {level} ({cols}x{rows} tiles)")
        width, height = self.level_size(level)
        size, overlap = self.tile_size, self.overlap
        left = col * size - (overlap if col > 0 else 0)
        top = row * size - (overlap if row > 0 else 0)
        right = min((col + 1) * size + overlap, width)
        bottom = min((row + 1) * size + overlap, height)
        return left, top, right, bottom

    def tiles(self, level: int) -> Iterator[tuple[int, int]]:
        """Every (col, row) of ``level``, row by row."""
        cols, rows = self.grid(level)
        for row in range(rows):
            for col in range(cols):
                yield col, row

    def tile_count(self) -> int:
        """Tiles in all levels together."""
        total = 0
        for level in range(self.levels):
            cols, rows = self.grid(level)
            total += cols * rows
        return total

    def tile_index(self, level: int, col: int, row: int) -> int:
        """Position of a tile in the canonical order: level 0 first, then row by row."""
        self.tile_box(level, col, row)  # validates
        before = 0
        for lower in range(level):
            cols, rows = self.grid(lower)
            before += cols * rows
        cols, _rows = self.grid(level)
        return before + row * cols + col

    def descriptor(self) -> str:
        """The ``.dzi`` XML descriptor."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Image xmlns={quoteattr(DZI_NAMESPACE)} Format={quoteattr(self.format)}"
            f' Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def check_level(self, level: int) -> None:
        """Raise ValueError unless ``level`` exists."""
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level must be 0..{self.max_level}, got {level}")


def geometry_for(
    width: int,
    height: int,
    *,
    format: str = "jpeg",
    threshold: int = PYRAMID_THRESHOLD,
    tile_size: int = TILE_SIZE,
    overlap: int = TILE_OVERLAP,
) -> Geometry:
    """The geometry we use for a frame: tiled above ``threshold`` px on a side, else one
    tile per level (tile size = the longer side, no overlap)."""
    if max(width, height) > threshold:
        return Geometry(width, height, tile_size=tile_size, overlap=overlap, format=format)
    return Geometry(width, height, tile_size=max(width, height, 1), overlap=0, format=format)
