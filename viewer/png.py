"""Encode the 8-bit frames of the pixel pipeline (:mod:`viewer.pixels`) as lossless PNG."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["encode_png"]


def encode_png(pixels: npt.NDArray[np.uint8], *, compress_level: int = 1) -> bytes:
    """A uint8 (rows, columns) greyscale or (rows, columns, 3) RGB array as PNG (lossless)."""
    image = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()
