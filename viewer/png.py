"""Render the frames of a stored DICOM object to PNG previews, one frame at a time.

The pixel pipeline itself (decode, modality LUT, VOI, photometric handling) is
:mod:`viewer.pixels`; this module only encodes its 8-bit frames.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from viewer.errors import NoImage, RenderError
from viewer.pixels import open_frames

__all__ = ["NoImage", "RenderError", "RenderedFrame", "encode_png", "render_frames"]


@dataclass(frozen=True)
class RenderedFrame:
    frame: int
    data: bytes
    media_type: str
    width: int
    height: int


def encode_png(pixels: npt.NDArray[np.uint8], *, compress_level: int = 1) -> bytes:
    """A uint8 (rows, columns) greyscale or (rows, columns, 3) RGB array as PNG (lossless)."""
    image = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


def render_frames(blob: bytes) -> Iterator[RenderedFrame]:
    """Render every frame of a Part 10 object to PNG with its default window, decoding one
    frame at a time.

    Raises
    ------
    NoImage
        The object has no pixel data.
    RenderError
        The header or pixel data cannot be read, decoded or shown right (the message says
        why).
    """
    source = open_frames(blob)
    for index in range(source.frames):
        pixels = source.render(index)
        height, width = pixels.shape[:2]
        yield RenderedFrame(index, encode_png(pixels), "image/png", width, height)
