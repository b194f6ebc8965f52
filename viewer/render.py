"""Render the frames of a stored DICOM object to 8-bit preview images.

The skeleton pipeline, per frame: decode one frame (pydicom + pylibjpeg) -> modality LUT
(rescale slope/intercept) -> VOI window from the dataset (first Window Center/Width pair,
else the frame's min/max) -> 8 bit -> MONOCHROME1 inverted. Colour images (RGB, and YBR,
which pydicom already converts to RGB) and palette colour are shown as RGB.
The previews issue deepens this (VOI LUT functions, per-frame groups, presets, pyramids).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian


class NoImage(Exception):
    """The object has no pixel data (SR, RT plan, waveform, ...)."""


class RenderError(Exception):
    """The pixel data cannot be decoded or rendered; the message names why."""


@dataclass(frozen=True)
class RenderedFrame:
    frame: int
    data: bytes
    media_type: str
    width: int
    height: int


PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _window(ds: Dataset) -> tuple[float, float] | None:
    try:
        center: Any = ds.get("WindowCenter")
        width: Any = ds.get("WindowWidth")
        if center is None or width is None:
            return None
        c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (c, w) if w >= 1 else None


def to_8bit(arr: np.ndarray[Any, Any], ds: Dataset) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Greyscale frame -> uint8 through rescale and the default window (PS3.3 C.11.2.1.2)."""
    values = apply_modality_lut(arr, ds).astype(np.float32, copy=False)
    window = _window(ds)
    if window is not None:
        center, width = window
        low = center - 0.5 - (width - 1) / 2
        high = center - 0.5 + (width - 1) / 2
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = max(high - low, 1e-6)
    out = np.clip((values - low) / span * 255.0, 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255 - out
    return np.asarray(out, dtype=np.uint8)


def render_frame(ds: Dataset, arr: np.ndarray[Any, Any]) -> Image.Image:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        if rgb.dtype != np.uint8:
            rgb = (rgb / 257).astype(np.uint8) if rgb.max() > 255 else rgb.astype(np.uint8)
        return Image.fromarray(rgb, "RGB")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB")
    if arr.ndim != 2:
        raise RenderError(f"unsupported frame shape {arr.shape} for {photometric or 'unknown'}")
    return Image.fromarray(to_8bit(arr, ds), "L")


def render_frames(blob: bytes) -> Iterator[RenderedFrame]:
    """Render every frame of a Part 10 object to PNG, one frame decoded at a time.

    Raises
    ------
    NoImage
        The object has no pixel data.
    RenderError
        The header or pixel data cannot be read or decoded.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)
    except Exception as exc:
        raise RenderError(f"header cannot be read: {type(exc).__name__}") from None
    raw = pydicom.dcmread(io.BytesIO(blob), specific_tags=list(PIXEL_TAGS), defer_size=None)
    if not any(tag in raw for tag in PIXEL_TAGS):
        raise NoImage("no pixel data")
    try:
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        raise RenderError("Number of Frames is not a number") from None
    # pydicom decodes one frame from a file-like source without reading the others; a
    # deflated dataset must be inflated whole first.
    source: Any = io.BytesIO(blob)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        source = pydicom.dcmread(io.BytesIO(blob))
    for index in range(frames):
        try:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            arr = pixel_array(source, index=index)
        except Exception as exc:
            raise RenderError(f"frame {index} cannot be decoded: {exc}") from None
        image = render_frame(ds, arr)
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=1)
        yield RenderedFrame(index, out.getvalue(), "image/png", image.width, image.height)
