"""Pyramids and tile packs: tiles put back together give each level; PNG is lossless, JPEG
within 35 dB PSNR of the lossless picture; packs are read back by range."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.pyramid_support import assemble, decode, psnr
from tests.support import sample
from viewer import open_frames
from viewer.dzi import Geometry
from viewer.pyramid import OVERVIEW_SIDE, THUMBNAIL_SIDE, Pyramid, build
from viewer.tilepack import FIRST_READ, PackError, PackIndex, PackWriter, read_index

JPEG_MIN_PSNR = 35.0


def picture(
    height: int, width: int, *, colour: bool = False, seed: int = 1
) -> npt.NDArray[np.uint8]:
    """A deterministic, image-like 8-bit picture: smooth structures plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + 40 * (xx / max(width, 1) - 0.5)
    base += rng.normal(0, 3, (height, width)).astype(np.float32)
    grey = np.asarray(np.clip(base, 0, 255), dtype=np.uint8)
    if not colour:
        return grey
    rgb = np.stack([grey, 255 - grey, np.roll(grey, 7, axis=1)], axis=-1)
    return np.asarray(rgb, dtype=np.uint8)


def index_of(pyramid: Pyramid) -> PackIndex:
    return read_index(lambda start, n: pyramid.data[start : start + n], len(pyramid.data))


def reader(pyramid: Pyramid) -> Any:
    return lambda start, n: pyramid.data[start : start + n]


def box_reduce(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """2x box reduction with numpy (edge rows/columns averaged alone): an independent
    reference for the levels."""
    h, w = a.shape[:2]
    padded = np.pad(a.astype(np.float64), [(0, h % 2), (0, w % 2)] + [(0, 0)] * (a.ndim - 2))
    counts = np.pad(np.ones((h, w)), [(0, h % 2), (0, w % 2)])
    s = padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    n = counts[0::2, 0::2] + counts[1::2, 0::2] + counts[0::2, 1::2] + counts[1::2, 1::2]
    if a.ndim == 3:
        n = n[..., None]
    return np.asarray(np.floor(s / n + 0.5), dtype=np.uint8)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (300, 600), (1300, 1100), (1030, 1)])
def test_png_tiles_reassemble_to_every_level_losslessly(height: int, width: int) -> None:
    pixels = picture(height, width)
    pyramid = build(pixels, fmt="png")
    index = index_of(pyramid)
    g = index.geometry
    assert (g.width, g.height, g.format) == (width, height, "png")
    assert not pyramid.geometry.lossy
    expected = pixels
    for level in range(g.max_level, -1, -1):
        got = assemble(index, reader(pyramid), level)
        assert got.shape == (g.level_size(level)[1], g.level_size(level)[0])
        if level == g.max_level:
            assert np.array_equal(got, pixels)  # lossless at full resolution
        else:
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        expected = box_reduce(expected)


def test_jpeg_tiles_stay_within_the_stated_psnr() -> None:
    pixels = picture(1300, 1500)
    pyramid = build(pixels, fmt="jpeg", quality=85)
    index = index_of(pyramid)
    assert pyramid.geometry.lossy and index.geometry.format == "jpeg"
    full = assemble(index, reader(pyramid), index.geometry.max_level)
    assert psnr(full, pixels) >= JPEG_MIN_PSNR
    assert decode(pyramid.data[slice(*_abs(index.tile(0, 0, 0)))]).shape == (1, 1)


def _abs(span: tuple[int, int]) -> tuple[int, int]:
    return span[0], span[0] + span[1]


def test_jpeg_tiles_of_a_real_ct_stay_within_the_stated_psnr() -> None:
    source = open_frames(sample("pydicom__CT_small.dcm").read_bytes())
    lossless = source.render(0)
    for fmt, bound in (("png", float("inf")), ("jpeg", JPEG_MIN_PSNR)):
        pyramid = build(lossless, fmt=fmt)
        index = index_of(pyramid)
        got = assemble(index, reader(pyramid), index.geometry.max_level)
        assert psnr(got, lossless) >= bound


def test_colour_pictures_keep_their_channels() -> None:
    pixels = picture(700, 1200, colour=True)
    png = build(pixels, fmt="png")
    index = index_of(png)
    assert np.array_equal(assemble(index, reader(png), index.geometry.max_level), pixels)
    jpeg = build(pixels, fmt="jpeg")
    got = assemble(index_of(jpeg), reader(jpeg), index.geometry.max_level)
    assert got.shape == pixels.shape and psnr(got, pixels) >= JPEG_MIN_PSNR


def test_small_frames_are_one_tile_per_level_with_aliased_extras() -> None:
    pixels = picture(512, 384)
    pyramid = build(pixels, fmt="png")
    index = index_of(pyramid)
    g = index.geometry
    assert g.single_tile and g.tile_count() == g.levels == 10
    top = index.tile(g.max_level, 0, 0)
    assert index.extra_span("overview") == top  # the frame is the overview: stored once
    thumb = decode(pyramid.data[slice(*_abs(index.extra_span("thumbnail") or (0, 0)))])
    assert thumb.shape == (256, 192) == pyramid.thumbnail_size[::-1]
    assert np.array_equal(thumb, assemble(index, reader(pyramid), g.max_level - 1))


def test_large_frames_get_an_overview_and_a_one_tile_thumbnail() -> None:
    pyramid = build(picture(2100, 1500), fmt="jpeg")
    index = index_of(pyramid)
    overview = decode(pyramid.data[slice(*_abs(index.extra_span("overview") or (0, 0)))])
    assert overview.shape == (525, 375) and max(overview.shape) <= OVERVIEW_SIDE
    thumb_level = index.meta["thumbnail_level"]
    assert index.extra_span("thumbnail") == index.tile(thumb_level, 0, 0)
    assert max(pyramid.thumbnail_size) <= min(THUMBNAIL_SIDE, 254)
    assert index.meta["overview_level"] == index.geometry.max_level - 2


def test_pack_header_is_found_by_range_reads_and_checked() -> None:
    pyramid = build(picture(1300, 1100), fmt="jpeg")
    for first_read, reads_needed in ((FIRST_READ, 1), (100, 2)):
        reads: list[tuple[int, int]] = []

        def fetch(start: int, n: int, reads: list[tuple[int, int]] = reads) -> bytes:
            reads.append((start, n))
            return pyramid.data[start : start + n]

        index = read_index(fetch, len(pyramid.data), first_read=first_read)
        assert reads[0] == (0, first_read) and len(reads) == reads_needed
        assert len(index.tiles) == index.geometry.tile_count()
    with pytest.raises(PackError):
        read_index(lambda s, n: b"not a pack at all", 17)
    with pytest.raises(PackError):
        read_index(lambda s, n: pyramid.data[s : s + n], 100)  # cut short
    broken = bytearray(pyramid.data)
    broken[20:30] = b"}}}}}}}}}}"
    with pytest.raises(PackError):
        read_index(lambda s, n: bytes(broken[s : s + n]), len(broken))
    with pytest.raises(ValueError):
        index.tile(index.geometry.max_level + 1, 0, 0)


def test_pack_writer_needs_every_tile() -> None:
    writer = PackWriter(Geometry(300, 300))
    writer.add_tile(9, 0, 0, b"x")
    with pytest.raises(ValueError):
        writer.finish()
    with pytest.raises(ValueError):
        writer.add_tile(9, 5, 0, b"x")


def test_pixels_must_be_8_bit() -> None:
    with pytest.raises(ValueError):
        build(np.zeros((4, 4), dtype=np.uint16))
    with pytest.raises(ValueError):
        build(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError):
        build(np.zeros((4, 4), dtype=np.uint8), fmt="gif")
