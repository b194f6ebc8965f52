"""Decode a stored DICOM object one frame at a time and render frames as 8-bit pictures.

The public interface (the preview and pyramid builders use it)::

    source = open_frames(blob)            # Part 10 bytes; parses the header once
    source.frames, source.rows, source.columns, source.photometric, source.is_color
    source.default_window(frame)          # Window | LookupTable | None (colour)
    source.windows(frame)                 # [Preset]: the dataset's, automatic, modality's
    source.dataset_windows(frame)         # [Preset]: the dataset's own only
    source.auto_window(frame)             # Preset: from the frame's values
    source.rescale(frame)                 # Rescale: the frame's modality LUT
    source.render(frame, window=None)     # uint8 (rows, columns) or (rows, columns, 3)
    source.decode(frame)                  # the frame's stored values, read-only

``Window(center, width, function="LINEAR")`` is in modality units; ``presets_for(modality)``
gives fixed windows (CT: brain, subdural, stroke, lung, mediastinum, abdomen, liver, bone,
angio). Frame numbers start at 0; a bad one raises ``IndexError``.

``render`` is the whole greyscale pipeline of PS3.3 C.11 through one lookup table (see
:mod:`viewer.luts`): Bits Stored/High Bit masking, signed pixels, rescale or Modality LUT
(per frame for enhanced multi-frame objects), the window (LINEAR, LINEAR_EXACT, SIGMOID) or
VOI LUT, and MONOCHROME1 inversion. Colour comes out as RGB: pydicom already converts
YBR_FULL and YBR_FULL_422, JPEG 2000 decoders return YBR_ICT/YBR_RCT as RGB, and PALETTE
COLOR (segmented palettes too) goes through a table built once. ``window`` is ignored for
colour pictures.

Only one frame is ever decoded at a time (and the last one kept): a multi-frame object is
never held decoded whole. A deflated dataset is inflated first (bounded). Errors:
:class:`NoImage` for objects without pixels (SR, RT plans, presentation states, PDFs,
waveforms, annotations), :class:`RenderError` with a reason that names the problem for
everything that cannot be shown right (truncated data, unknown photometric, decoder failure).
"""

from __future__ import annotations

import io
import math
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pydicom import config as pydicom_config
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, convert_color_space

from viewer import _header as hdr
from viewer._dataset import parse, pixel_element
from viewer.errors import RenderError
from viewer.luts import (
    Bytes8,
    Preset,
    Rescale,
    Voi,
    Window,
    full_range_window,
    greyscale_lut,
    percentile_range,
    presets_for,
    render_values,
    stored_values,
)

# Received data is read leniently (as consult.dicom.part10 does): what matters is checked here.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

MAX_FRAME_PIXELS = 1 << 28  # 16384 x 16384: more in one frame is refused, not allocated
CHUNK = 1 << 18  # pixels per step where a step needs a temporary copy (cache-sized)
GREYSCALE, COLOR = hdr.GREYSCALE, hdr.COLOR


def open_frames(blob: bytes, *, max_frame_pixels: int = MAX_FRAME_PIXELS) -> FrameSource:
    """Parse a Part 10 object's header once; frames are decoded when asked for."""
    return FrameSource(blob, max_frame_pixels=max_frame_pixels)


class FrameSource:
    """One stored object's frames; see the module docstring for the interface.

    Attributes describe the image as the header does (``rows``, ``columns``, ``frames``,
    ``photometric``, ``bits_stored``, ``signed``, ``modality``, ``pixel_keyword``...);
    ``is_color`` says that renders are RGB, ``inverted`` that greyscale is shown inverted,
    ``lossy`` that the pixels went through lossy compression. Not safe to share between
    threads (it keeps the last decoded frame and a few tables): use one per thread.
    """

    def __init__(self, blob: bytes, *, max_frame_pixels: int = MAX_FRAME_PIXELS) -> None:
        ds, ts, buffer, pos = parse(blob)
        self.dataset = ds
        self.transfer_syntax = ts
        self._buffer = buffer
        element = pixel_element(ds, ts, buffer, pos)
        self.pixel_keyword, vr, self._value_start, length = element
        image = hdr.image_pixel(ds, self.pixel_keyword, max_frame_pixels=max_frame_pixels)
        self.rows, self.columns, self.frames = image.rows, image.columns, image.frames
        self.samples_per_pixel = image.samples
        self.bits_allocated, self.bits_stored = image.bits_allocated, image.bits_stored
        self.high_bit, self.signed = image.high_bit, image.signed
        self.photometric = image.photometric
        self.is_color = image.photometric in COLOR
        self.modality = hdr.text(ds, "Modality").upper()
        self.lossy = hdr.is_lossy(ds, ts)
        self.inverted = image.photometric == "MONOCHROME1" or (
            hdr.text(ds, "PresentationLUTShape").upper() == "INVERSE"
            and image.photometric in GREYSCALE
        )
        encapsulated = length == 0xFFFFFFFF
        self._value_end = self._value_start + (0 if encapsulated else length)
        self._bounded: bytes | None = None
        item_tag = b"\xfe\xff\x00\xe0" if ts.is_little_endian else b"\xff\xfe\xe0\x00"
        start = self._value_start
        if ts.is_encapsulated and not encapsulated and buffer[start : start + 4] == item_tag:
            # Encapsulated fragments under a defined length (PS3.5 A.4 asks for an undefined
            # one; some writers do this): decode from exactly that many bytes.
            self._bounded = buffer[start : start + length]
            encapsulated = True
        if ts.is_encapsulated != encapsulated:
            raise RenderError(
                "pixel data is encapsulated but the transfer syntax is not a compressed one"
                if encapsulated
                else f"{ts.name} needs encapsulated pixel data, the element is not"
            )
        if not encapsulated:
            expected = image.expected_bytes()
            present = min(length, len(buffer) - self._value_start)
            if present < expected:
                raise RenderError(
                    f"pixel data truncated, cannot be decoded: {present} bytes present, "
                    f"{expected} expected for {image.rows}x{image.columns}x{image.frames} "
                    f"frames of {image.samples}x{image.bits_allocated} bits"
                )
        try:
            self._decoder = get_decoder(ts)
        except NotImplementedError:
            raise RenderError(f"no decoder for the transfer syntax {ts.name}") from None
        self._options: dict[str, Any] = image.decoder_options(ts, self.pixel_keyword)
        if not encapsulated and (
            self.high_bit != self.bits_stored - 1
            or (self.pixel_keyword == "PixelData" and self.bits_allocated in (8, 16))
        ):
            # Have pydicom keep the whole word: the lookup table shifts, masks and
            # sign-extends the stored bits itself. (Stored bits not at the bottom of the word
            # need this; for the others it spares pydicom masking a writable copy of the
            # frame, so the frame stays a view into the stored object's bytes.)
            self._options["bits_stored"] = self.bits_allocated
        if vr:
            self._options["pixel_vr"] = vr
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            self._options["extended_offsets"] = (
                ds.ExtendedOffsetTable,
                ds.ExtendedOffsetTableLengths,
            )
        self._cached: tuple[int, npt.NDArray[Any]] | None = None
        self._luts: dict[tuple[Any, ...], Bytes8] = {}
        self._palette: Bytes8 | None = None
        self._rescales: dict[int, Rescale] = {}
        self._own_windows: dict[int, list[Preset]] = {}

    # -- decoding -------------------------------------------------------------------------

    def _check_frame(self, frame: int) -> None:
        if not isinstance(frame, int) or not 0 <= frame < self.frames:
            raise IndexError(f"frame {frame} is out of range: the object has {self.frames}")

    def decode(self, frame: int) -> npt.NDArray[Any]:
        """The stored values of one frame: (rows, columns) or (rows, columns, 3) as RGB.

        Only this frame is decoded; the last decoded frame is kept for the next call.
        """
        self._check_frame(frame)
        if self._cached is not None and self._cached[0] == frame:
            return self._cached[1]
        src: Any
        extra: dict[str, Any] = {}
        if self._bounded is not None:
            src = io.BytesIO(self._bounded)
        elif self.transfer_syntax.is_encapsulated:
            src = io.BytesIO(self._buffer)  # shares the bytes, no copy
            src.seek(self._value_start)
        else:
            # Native pixels: a read-only view into the stored object's bytes, not a copy
            # (with a BytesIO, pydicom reads the frame out into a new buffer first).
            src = memoryview(self._buffer)[self._value_start : self._value_end]
            extra["view_only"] = True
        try:
            arr, props = self._decoder.as_array(
                src, index=frame, validate=True, **self._options, **extra
            )
        except Exception as exc:
            detail = " ".join(str(exc).split())[:200]
            raise RenderError(
                f"frame {frame} cannot be decoded ({self.transfer_syntax.name}): "
                f"{type(exc).__name__}: {detail}"
            ) from None
        arr = self._normalise(arr, str(props.get("photometric_interpretation", "")))
        arr.flags.writeable = False  # kept for the next call: nobody may change it
        self._cached = (frame, arr)
        return arr

    def _normalise(self, arr: npt.NDArray[Any], photometric: str) -> npt.NDArray[Any]:
        shape = (self.rows, self.columns) + ((3,) if self.samples_per_pixel == 3 else ())
        if arr.shape != shape:
            raise RenderError(f"decoded frame has shape {arr.shape}, expected {shape}")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if photometric in ("YBR_FULL", "YBR_FULL_422"):  # only when the decoder left it so
            arr = convert_color_space(arr, photometric, "RGB")
        return np.ascontiguousarray(arr)

    # -- windows --------------------------------------------------------------------------

    def rescale(self, frame: int) -> Rescale:
        """The modality LUT of a frame (per-frame Pixel Value Transformation first)."""
        self._check_frame(frame)
        found = self._rescales.get(frame)
        if found is None:
            found = hdr.rescale(
                self.dataset,
                frame,
                signed=self.signed,
                little_endian=self.transfer_syntax.is_little_endian,
            )
            self._rescales[frame] = found
        return found

    def dataset_windows(self, frame: int) -> list[Preset]:
        """The dataset's own windows and VOI LUTs for a frame, in the dataset's order."""
        self._check_frame(frame)
        found = self._own_windows.get(frame)
        if found is None:
            rescale = self.rescale(frame)
            found = hdr.dataset_windows(
                self.dataset,
                frame,
                # VOI LUT input is the modality output: SS when that can be negative.
                signed_input=self.signed or rescale.intercept < 0,
                little_endian=self.transfer_syntax.is_little_endian,
            )
            self._own_windows[frame] = found
        return found

    def windows(self, frame: int) -> list[Preset]:
        """Every VOI choice for a frame: the dataset's windows and VOI LUTs (first is the
        default), the automatic window, then the modality's presets. [] for colour."""
        if self.is_color:
            return []
        own = self.dataset_windows(frame)
        auto = self.auto_window(frame)
        return [*own, auto, *presets_for(self.modality)]

    def default_window(self, frame: int) -> Voi | None:
        """The first window or VOI LUT of the dataset, else the automatic one; None for
        colour."""
        self._check_frame(frame)
        if self.is_color:
            return None
        own = self.dataset_windows(frame)
        return own[0].window if own else self.auto_window(frame).window

    def auto_window(self, frame: int) -> Preset:
        """A window from the frame's own values: the full range of 8-bit data shown as is,
        else the 0.5th to 99.5th percentile (Pixel Padding Value left out)."""
        rescale = self.rescale(frame)
        integer_lut = self.bits_allocated <= 16 and self.pixel_keyword == "PixelData"
        if integer_lut and self.bits_stored <= 8 and rescale.identity:
            low = float(-(1 << (self.bits_stored - 1)) if self.signed else 0)
            high = low + (1 << self.bits_stored) - 1
            return Preset(
                "Automatic",
                full_range_window(low, high),
                "the full range of the stored values",
                "automatic",
            )
        arr = self.decode(frame)
        if integer_lut and arr.dtype.itemsize <= 2:
            low, high = self._percentiles_lut(arr, rescale)
        else:
            low, high = self._percentiles_float(arr, rescale)
        return Preset(
            "Automatic",
            full_range_window(low, high),
            "0.5th to 99.5th percentile of this frame's values",
            "automatic",
        )

    def _percentiles_lut(self, arr: npt.NDArray[Any], rescale: Rescale) -> tuple[float, float]:
        bits = arr.dtype.itemsize * 8
        flat = arr.view(np.uint8 if bits == 8 else np.uint16).reshape(-1)
        counts = np.zeros(1 << bits, dtype=np.int64)
        for start in range(0, flat.size, CHUNK):
            counts += np.bincount(flat[start : start + CHUNK], minlength=1 << bits)
        padding = hdr.number(self.dataset, "PixelPaddingValue")
        if padding is not None and counts.sum() > counts[int(padding) & ((1 << bits) - 1)]:
            counts[int(padding) & ((1 << bits) - 1)] = 0
        values = rescale.apply(
            stored_values(1 << bits, bits_stored=min(self.bits_stored, bits), signed=self.signed)
        )
        return percentile_range(values, counts)

    def _percentiles_float(self, arr: npt.NDArray[Any], rescale: Rescale) -> tuple[float, float]:
        step = max(1, math.ceil(math.sqrt(arr.size / 1_000_000)))
        sample = self._stored(arr[::step, ::step].reshape(-1))
        values = rescale.apply(sample)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return 0.0, 1.0
        low, high = np.percentile(values, [0.5, 99.5])
        if high <= low:
            low, high = float(values.min()), float(values.max())
        return float(low), float(high)

    def _stored(self, chunk: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """Stored values of a chunk of 32-bit or float data (integers masked, signed)."""
        if chunk.dtype.kind == "f":
            return chunk.astype(np.float64)
        values = chunk.astype(np.int64)
        if self.bits_stored < 64:
            values &= (1 << self.bits_stored) - 1
            if self.signed:
                sign = 1 << (self.bits_stored - 1)
                values = np.where(values >= sign, values - (1 << self.bits_stored), values)
        return values.astype(np.float64)

    # -- rendering ------------------------------------------------------------------------

    def render(self, frame: int, window: Voi | None = None) -> Bytes8:
        """One frame as uint8: (rows, columns) greyscale or (rows, columns, 3) RGB."""
        arr = self.decode(frame)
        if self.photometric == "PALETTE COLOR":
            return self._palette_rgb(arr)
        if self.is_color:
            rgb = _rgb8(arr, self.bits_stored)
            return rgb.copy() if rgb is arr else rgb
        voi = window if window is not None else self.default_window(frame)
        assert voi is not None
        rescale = self.rescale(frame)
        out = np.empty(arr.shape, dtype=np.uint8)
        flat_out = out.reshape(-1)
        if self.pixel_keyword == "PixelData" and arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
            lut = self._lut(arr.dtype.itemsize * 8, rescale, voi)
            view = arr.view(np.uint8 if arr.dtype.itemsize == 1 else np.uint16).reshape(-1)
            index = cast("npt.NDArray[np.uint16]", view)
            for start in range(0, index.size, CHUNK):
                np.take(lut, index[start : start + CHUNK], out=flat_out[start : start + CHUNK])
            return out
        flat = arr.reshape(-1)
        for start in range(0, flat.size, CHUNK):
            chunk = self._stored(flat[start : start + CHUNK])
            flat_out[start : start + CHUNK] = render_values(
                chunk, rescale=rescale, voi=voi, invert=self.inverted
            )
        return out

    def _lut(self, index_bits: int, rescale: Rescale, voi: Voi) -> Bytes8:
        voi_key = (voi.center, voi.width, voi.function) if isinstance(voi, Window) else (id(voi),)
        key = (index_bits, rescale.key(), voi_key)
        lut = self._luts.get(key)
        if lut is None:
            native = not self.transfer_syntax.is_encapsulated
            shift = max(self.high_bit + 1 - self.bits_stored, 0) if native else 0
            lut = greyscale_lut(
                index_bits=index_bits,
                bits_stored=self.bits_stored,
                signed=self.signed,
                rescale=rescale,
                voi=voi,
                invert=self.inverted,
                shift=shift,
            )
            if len(self._luts) >= 8:
                self._luts.pop(next(iter(self._luts)))
            self._luts[key] = lut
        return lut

    def _palette_rgb(self, arr: npt.NDArray[Any]) -> Bytes8:
        if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2:
            raise RenderError(f"palette colour indices of type {arr.dtype} are not supported")
        bits = arr.dtype.itemsize * 8
        if self._palette is None:
            try:
                table = apply_color_lut(np.arange(1 << bits, dtype=arr.dtype), self.dataset)
            except Exception as exc:
                raise RenderError(f"palette cannot be read: {type(exc).__name__}") from None
            if table.dtype.itemsize > 1 and int(table.max(initial=0)) >= 256:
                table = table >> 8
            # else: 8-bit entries, or 16 bits declared and 8-bit entries written (seen in
            # real files; scaling those down would show a black picture)
            self._palette = table.astype(np.uint8)
        index = arr.view(np.uint8 if bits == 8 else np.uint16)
        return np.asarray(self._palette[index], dtype=np.uint8)


def _rgb8(arr: npt.NDArray[Any], bits_stored: int) -> Bytes8:
    """Colour samples to 8 bits: as is for 8-bit data, scaled from the stored range else."""
    if arr.dtype == np.uint8 and bits_stored == 8:
        return arr
    top = float((1 << min(bits_stored, 32)) - 1)
    masked = np.bitwise_and(arr.astype(np.int64), int(top))
    return np.rint(masked * (255.0 / top)).astype(np.uint8)
