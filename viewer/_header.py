"""The image attributes of an untrusted header, read typed and checked.

Nothing here ``str()``s or walks a dataset (deeply nested sequences make that take minutes):
only named attributes are read, each inside a guard. Functional groups of enhanced
multi-frame objects (PS3.3 C.7.6.16) come first: the frame's own item of the Per-frame
Functional Groups Sequence, then the Shared one, then the top-level attributes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from viewer.errors import RenderError
from viewer.luts import WINDOW_FUNCTIONS, Preset, Rescale, Window, table_from_item

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
# Transfer syntaxes whose pixels may have lost information: JPEG baseline and extended,
# JPEG-LS near-lossless, JPEG 2000 (part 1 and 2) and HTJ2K not restricted to lossless,
# the video syntaxes (1.2.840.10008.1.2.4.100 onwards) and JPEG XL (.110 onwards).
_LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.203",
}


def text(ds: Dataset, keyword: str) -> str:
    """An attribute as printable text ("" when absent or unreadable); never raises."""
    try:
        value: Any = ds.get(keyword, "")
        value = "" if value is None else value
        if not isinstance(value, str | bytes) and hasattr(value, "__iter__"):
            value = next(iter(value), "")
        result = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    except Exception:
        return ""
    return "".join(c for c in result if c.isprintable()).strip()[:200]


def numbers(ds: Dataset, keyword: str) -> list[float | None]:
    """Every value of a numeric attribute; None for one that is not a finite number."""
    try:
        value: Any = ds.get(keyword)
    except Exception:
        return []
    if value is None or value == "":
        return []
    items = list(value) if not isinstance(value, str | bytes | int | float) else [value]
    out: list[float | None] = []
    for item in items:
        try:
            number = float(item)
        except (TypeError, ValueError, OverflowError):
            out.append(None)
            continue
        out.append(number if math.isfinite(number) else None)
    return out


def number(ds: Dataset, keyword: str) -> float | None:
    values = numbers(ds, keyword)
    return values[0] if values else None


def texts(ds: Dataset, keyword: str) -> list[str]:
    try:
        value: Any = ds.get(keyword)
    except Exception:
        return []
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return ["".join(c for c in str(v) if c.isprintable()).strip()[:64] for v in items]


def sop_class_name(ds: Dataset) -> str:
    uid = text(ds, "SOPClassUID")
    name = UID(uid).name if uid else ""
    return name if name and name != uid else (f"SOP class {uid}" if uid else "this object")


def is_lossy(ds: Dataset, ts: UID) -> bool:
    """Whether the pixels went through lossy compression (here or before, per (0028,2110))."""
    return (
        str(ts) in _LOSSY
        or str(ts).startswith(("1.2.840.10008.1.2.4.1",))
        or (text(ds, "LossyImageCompression") == "01")
    )


def _integer(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    try:
        value: Any = ds.get(keyword)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        if not isinstance(value, str | int) and hasattr(value, "__iter__"):
            value = next(iter(value))
        return int(str(value).strip())
    except (TypeError, ValueError, OverflowError, StopIteration):
        raise RenderError(f"{keyword} {text(ds, keyword)!r} is not a number") from None


@dataclass(frozen=True)
class ImagePixel:
    """The Image Pixel module (PS3.3 C.7.6.3) as checked integers."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    signed: bool
    photometric: str
    planar: int

    def expected_bytes(self) -> int:
        """Bytes of native pixel data for all frames (YBR_FULL_422 holds 2 samples a pixel,
        1-bit frames are packed back to back)."""
        samples = 2 if self.photometric == "YBR_FULL_422" and self.samples == 3 else self.samples
        return math.ceil(self.rows * self.columns * self.frames * samples * self.bits_allocated / 8)

    def decoder_options(self, ts: UID, keyword: str) -> dict[str, Any]:
        """The keyword arguments pydicom's decoders take for a file-like source."""
        opts: dict[str, Any] = {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": int(self.signed),
            "photometric_interpretation": self.photometric,
            "number_of_frames": self.frames,
            "transfer_syntax_uid": ts,
            "pixel_keyword": keyword,
        }
        if self.samples > 1:
            opts["planar_configuration"] = self.planar
        return opts


def image_pixel(ds: Dataset, keyword: str, *, max_frame_pixels: int) -> ImagePixel:
    """Read and check the Image Pixel attributes; RenderError names the first bad one."""
    rows, columns = _integer(ds, "Rows", 0) or 0, _integer(ds, "Columns", 0) or 0
    if rows < 1 or columns < 1:
        raise RenderError("Rows and Columns must be present and above 0")
    if rows * columns > max_frame_pixels:
        raise RenderError(f"a frame of {rows}x{columns} pixels is larger than we render")
    photometric = text(ds, "PhotometricInterpretation").upper()
    if not photometric:
        raise RenderError("Photometric Interpretation is missing")
    if photometric not in GREYSCALE + COLOR:
        raise RenderError(f"Photometric Interpretation {photometric!r} is not supported")
    wanted = 1 if photometric in GREYSCALE or photometric == "PALETTE COLOR" else 3
    samples = _integer(ds, "SamplesPerPixel", wanted)
    if samples != wanted:
        raise RenderError(f"{photometric} needs {wanted} samples per pixel, not {samples}")
    frames = _integer(ds, "NumberOfFrames", 1)
    if frames is None or frames < 1:
        raise RenderError(f"Number of Frames {frames} is not a count of frames")
    if keyword == "PixelData":
        bits_allocated = _integer(ds, "BitsAllocated")
        if bits_allocated not in (1, 8, 16, 32):
            raise RenderError(f"Bits Allocated {bits_allocated} is not supported")
    else:
        bits_allocated = 32 if keyword == "FloatPixelData" else 64
    bits_stored = _integer(ds, "BitsStored", bits_allocated) or bits_allocated
    if not 1 <= bits_stored <= bits_allocated:
        raise RenderError(f"Bits Stored {bits_stored} does not fit Bits Allocated {bits_allocated}")
    high_bit = _integer(ds, "HighBit", bits_stored - 1)
    if high_bit is None or not bits_stored - 1 <= high_bit < bits_allocated:
        high_bit = bits_stored - 1  # inconsistent; the usual layout is the safe reading
    representation = _integer(ds, "PixelRepresentation", 0)
    planar = _integer(ds, "PlanarConfiguration", 0) or 0
    return ImagePixel(
        rows=rows,
        columns=columns,
        frames=frames,
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=high_bit,
        signed=representation == 1 and keyword == "PixelData",
        photometric=photometric,
        planar=1 if planar == 1 else 0,
    )


def _groups(ds: Dataset, frame: int) -> list[Dataset]:
    """The functional group items that apply to a frame: its own, then the shared one."""
    out: list[Dataset] = []
    for keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        item = _item(ds, keyword, index)
        if item is not None:
            out.append(item)
    return out


def _item(ds: Dataset, keyword: str, index: int) -> Dataset | None:
    """Item ``index`` of a sequence, or None when absent or unreadable (then what follows
    in the order of precedence applies)."""
    try:
        seq: Any = ds.get(keyword)
        return seq[index] if seq is not None and index < len(seq) else None
    except Exception:
        return None


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    return _item(ds, keyword, 0)


def rescale(ds: Dataset, frame: int, *, signed: bool, little_endian: bool) -> Rescale:
    """The modality LUT of a frame: Pixel Value Transformation (per frame, shared), else the
    Modality LUT Sequence, else Rescale Slope/Intercept, else the identity."""
    sources = [
        item
        for g in _groups(ds, frame)
        if (item := _first_item(g, "PixelValueTransformationSequence")) is not None
    ]
    table_item = _first_item(ds, "ModalityLUTSequence")
    if not sources and table_item is not None:
        try:
            return Rescale(
                table=table_from_item(table_item, signed_input=signed, little_endian=little_endian)
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            pass  # unusable table: fall back to the rescale attributes
    for source in [*sources, ds]:
        slope, intercept = number(source, "RescaleSlope"), number(source, "RescaleIntercept")
        if slope is not None or intercept is not None:
            # A slope of 0 would flatten the picture: no writer means it; read it as 1.
            return Rescale(slope or 1.0, intercept or 0.0)
    return Rescale()


def dataset_windows(
    ds: Dataset, frame: int, *, signed_input: bool, little_endian: bool
) -> list[Preset]:
    """The dataset's windows for a frame (Frame VOI LUT per frame, shared, then top level;
    the first place that has any wins), then its VOI LUT Sequence tables."""
    presets: list[Preset] = []
    sources = [
        item
        for g in _groups(ds, frame)
        if (item := _first_item(g, "FrameVOILUTSequence")) is not None
    ]
    for source in [*sources, ds]:
        centers, widths = numbers(source, "WindowCenter"), numbers(source, "WindowWidth")
        notes = texts(source, "WindowCenterWidthExplanation")
        function = text(source, "VOILUTFunction").upper() or "LINEAR"
        if function not in WINDOW_FUNCTIONS:
            function = "LINEAR"  # PS3.3 C.11.2.1.3: LINEAR when absent; unknown ones too
        for i, (center, width) in enumerate(zip(centers, widths, strict=False)):
            if center is None or width is None:
                continue
            try:
                window = Window(center, width, function)
            except ValueError:
                continue
            note = notes[i] if i < len(notes) else ""
            how = f", {function}" if function != "LINEAR" else ""
            presets.append(
                Preset(
                    note or f"Window {i + 1}",
                    window,
                    f"from the dataset{': ' + note if note else ''} "
                    f"(center {center:g}, width {width:g}{how})",
                )
            )
        if presets:
            break
    try:
        items = list(ds.get("VOILUTSequence") or [])
    except Exception:
        items = []
    for i, item in enumerate(items):
        try:
            table = table_from_item(item, signed_input=signed_input, little_endian=little_endian)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        presets.append(
            Preset(
                table.explanation or f"VOI LUT {i + 1}",
                table,
                f"VOI LUT from the dataset{': ' + table.explanation if table.explanation else ''} "
                f"({len(table.data)} entries from {table.first_mapped})",
            )
        )
    return presets
