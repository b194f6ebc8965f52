"""DZI geometry as OpenSeadragon reads it: levels, level sizes, tile grids, overlap, XML."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from viewer.dzi import DZI_NAMESPACE, Geometry, geometry_for

# size -> (max level, [(cols, rows) of the top levels, top first], total tiles)
GRIDS = {
    (1, 1): (0, [(1, 1)], 1),
    (255, 255): (8, [(2, 2), (1, 1)], 4 + 8),
    (256, 256): (8, [(2, 2), (1, 1)], 4 + 8),
    (257, 257): (9, [(2, 2), (1, 1)], 4 + 9),
    (1025, 1025): (11, [(5, 5), (3, 3), (2, 2), (1, 1)], 25 + 9 + 4 + 9),
    (600, 300): (10, [(3, 2), (2, 1), (1, 1)], 6 + 2 + 9),
    (1, 1025): (11, [(1, 5), (1, 3), (1, 2), (1, 1)], 5 + 3 + 2 + 9),
    (4096, 3328): (
        12,
        [(17, 14), (9, 7), (5, 4), (3, 2), (2, 1), (1, 1)],
        238 + 63 + 20 + 6 + 2 + 8,
    ),
}


@pytest.mark.parametrize(("width", "height"), sorted(GRIDS))
def test_levels_and_grids(width: int, height: int) -> None:
    max_level, top_grids, total = GRIDS[(width, height)]
    g = Geometry(width, height)
    assert g.max_level == max_level and g.levels == max_level + 1
    assert g.level_size(0) == (1, 1)
    assert g.level_size(max_level) == (width, height)
    for level in range(g.levels):
        scale = 2 ** (max_level - level)
        assert g.level_size(level) == (math.ceil(width / scale), math.ceil(height / scale))
    for k, grid in enumerate(top_grids):
        assert g.grid(max_level - k) == grid
    assert g.tile_count() == total
    assert sum(len(list(g.tiles(level))) for level in range(g.levels)) == total
    with pytest.raises(ValueError):
        g.level_size(max_level + 1)
    with pytest.raises(ValueError):
        g.level_size(-1)


def test_tiles_overlap_one_pixel_except_at_the_edges() -> None:
    g = Geometry(1025, 1025)
    assert g.tile_box(11, 0, 0) == (0, 0, 255, 255)  # edge: overlap right and below only
    assert g.tile_box(11, 1, 1) == (253, 253, 509, 509)  # inside: 254 + 2 * 1
    assert g.tile_box(11, 4, 4) == (1015, 1015, 1025, 1025)  # last: 9 px + 1 overlap
    assert g.tile_box(11, 4, 0) == (1015, 0, 1025, 255)
    g255 = Geometry(255, 255)
    assert g255.tile_box(8, 1, 0) == (253, 0, 255, 255)  # a 1 px tile plus its overlap
    g256 = Geometry(256, 256)
    assert g256.tile_box(8, 1, 1) == (253, 253, 256, 256)
    g257 = Geometry(257, 257)
    assert g257.tile_box(9, 1, 0) == (253, 0, 257, 255)
    assert g257.tile_box(8, 0, 0) == (0, 0, 129, 129)  # one tile, nothing to overlap
    assert Geometry(1, 1).tile_box(0, 0, 0) == (0, 0, 1, 1)
    for bad in [(11, 5, 0), (11, 0, 5), (11, -1, 0), (12, 0, 0)]:
        with pytest.raises(ValueError):
            g.tile_box(*bad)


@pytest.mark.parametrize(("width", "height"), [(1025, 1025), (600, 300), (4096, 3328), (1, 1025)])
def test_tiles_cover_each_level_exactly_once_without_overlap(width: int, height: int) -> None:
    g = Geometry(width, height)
    for level in range(g.levels):
        lw, lh = g.level_size(level)
        covered = 0
        for col, row in g.tiles(level):
            left, top, right, bottom = g.tile_box(level, col, row)
            assert 0 <= left < right <= lw and 0 <= top < bottom <= lh
            inner_w = min((col + 1) * g.tile_size, lw) - col * g.tile_size
            inner_h = min((row + 1) * g.tile_size, lh) - row * g.tile_size
            covered += inner_w * inner_h
        assert covered == lw * lh


def test_tile_index_is_canonical_order() -> None:
    g = Geometry(600, 300)
    order = [(level, c, r) for level in range(g.levels) for c, r in g.tiles(level)]
    assert [g.tile_index(*t) for t in order] == list(range(g.tile_count()))
    assert g.tiles(10).__next__() == (0, 0)
    assert list(g.tiles(10))[:4] == [(0, 0), (1, 0), (2, 0), (0, 1)]  # row by row


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_descriptor_xml(fmt: str) -> None:
    xml = Geometry(4096, 3328, format=fmt).descriptor()
    root = ET.fromstring(xml)  # noqa: S314 - our own output
    assert root.tag == f"{{{DZI_NAMESPACE}}}Image"
    assert root.attrib == {"Format": fmt, "Overlap": "1", "TileSize": "254"}
    size = root.find(f"{{{DZI_NAMESPACE}}}Size")
    assert size is not None and size.attrib == {"Width": "4096", "Height": "3328"}
    assert Geometry(1, 1, format=fmt).media_type == f"image/{fmt}"
    assert Geometry(1, 1, format=fmt).lossy is (fmt == "jpeg")


def test_small_frames_are_one_image_per_level() -> None:
    for width, height in [(1, 1), (512, 512), (1024, 768), (300, 1024)]:
        g = geometry_for(width, height)
        assert g.single_tile and g.overlap == 0 and g.tile_size == max(width, height)
        assert all(g.grid(level) == (1, 1) for level in range(g.levels))
        assert g.tile_box(g.max_level, 0, 0) == (0, 0, width, height)
    tiled = geometry_for(1025, 10, format="png")
    assert (tiled.tile_size, tiled.overlap, tiled.format) == (254, 1, "png")
    assert not tiled.single_tile and tiled.grid(tiled.max_level) == (5, 1)


@pytest.mark.parametrize(
    "args",
    [
        {"width": 0, "height": 1},
        {"width": 1, "height": -3},
        {"width": 1 << 21, "height": 1},
        {"width": 1, "height": 1, "tile_size": 0},
        {"width": 1, "height": 1, "overlap": 254},
        {"width": 1, "height": 1, "format": "gif"},
    ],
)
def test_bad_geometries_are_refused(args: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Geometry(**args)  # type: ignore[arg-type]
