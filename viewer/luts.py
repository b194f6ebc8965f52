"""Greyscale lookup: modality LUT -> VOI -> presentation, folded into one 8-bit table.

The DICOM greyscale pipeline (PS3.3 C.11, PS3.4 N.2) maps a stored value through

1. the modality LUT: Rescale Slope/Intercept, or a Modality LUT Sequence (C.11.1);
2. the VOI LUT: Window Center/Width with a VOI LUT Function (LINEAR, LINEAR_EXACT,
   SIGMOID; C.11.2.1.2, C.11.2.1.3), or a VOI LUT Sequence table (C.11.2.1.1);
3. the presentation LUT: MONOCHROME1 (or a Presentation LUT Shape of INVERSE) is shown
   inverted, so that the lowest value is white (C.11.6, C.7.6.3.1.2).

For integer pixel data of up to 16 bits, :func:`greyscale_lut` folds all three, plus the
masking of bits above Bits Stored and the sign extension of signed pixels, into one table
indexed by the raw 8- or 16-bit sample: rendering a frame is then one ``take`` with no float
copy of the image. 32-bit and float pixel data go through :func:`render_values`, the same
arithmetic applied to chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Bytes8 = npt.NDArray[np.uint8]

WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (e.g. Hounsfield units for CT).

    ``function`` is the VOI LUT Function (0028,1056): ``LINEAR`` (the default; PS3.3
    C.11.2.1.2.1, width at least 1), ``LINEAR_EXACT`` (C.11.2.1.3.2) or ``SIGMOID``
    (C.11.2.1.3.1); both of the latter need a width above 0. Invalid values raise
    ``ValueError``.
    """

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if self.function not in WINDOW_FUNCTIONS:
            raise ValueError(f"unknown VOI LUT function {self.function!r}")
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise ValueError("window center and width must be finite numbers")
        if self.function == "LINEAR" and self.width < 1:
            raise ValueError(f"a LINEAR window needs a width of at least 1, not {self.width:g}")
        if self.width <= 0:
            raise ValueError(f"a {self.function} window needs a width above 0")

    def unit(self, x: Floats) -> Floats:
        """Map modality values to [0, 1] by this window's function."""
        c, w = self.center, self.width
        if self.function == "LINEAR":
            # y = ((x - (c - 0.5)) / (w - 1) + 0.5), clamped at c - 0.5 -/+ (w - 1) / 2.
            low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
            inner = (x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5
            y = np.where(x <= low, 0.0, np.where(x > high, 1.0, inner))
        elif self.function == "LINEAR_EXACT":
            low, high = c - w / 2, c + w / 2
            y = np.where(x <= low, 0.0, np.where(x > high, 1.0, (x - c) / w + 0.5))
        else:  # SIGMOID
            y = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - c) / w, -700, 700)))
        return np.asarray(np.clip(y, 0.0, 1.0), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class LookupTable:
    """A LUT from the dataset: a VOI LUT Sequence or Modality LUT Sequence item.

    Input values below ``first_mapped`` take the first entry, above the last mapped value
    the last entry (PS3.3 C.11.2.1.1). Entries range over ``0 .. 2**bits - 1``.
    """

    first_mapped: int
    bits: int
    data: npt.NDArray[np.int64]
    explanation: str = ""

    def lookup(self, x: Floats) -> Floats:
        index = np.clip(np.floor(x) - self.first_mapped, 0, len(self.data) - 1)
        return np.asarray(self.data[index.astype(np.intp)], dtype=np.float64)

    def unit(self, x: Floats) -> Floats:
        """As a VOI LUT: map modality values to [0, 1] over the entries' range."""
        return self.lookup(x) / float(2**self.bits - 1)


Voi = Window | LookupTable


@dataclass(frozen=True, eq=False)
class Rescale:
    """The modality LUT: ``slope * stored + intercept``, or a Modality LUT Sequence table."""

    slope: float = 1.0
    intercept: float = 0.0
    table: LookupTable | None = None

    @property
    def identity(self) -> bool:
        return self.table is None and self.slope == 1.0 and self.intercept == 0.0

    def apply(self, stored: Floats) -> Floats:
        if self.table is not None:
            return self.table.lookup(stored)
        return stored * self.slope + self.intercept

    def key(self) -> tuple[Any, ...]:
        return (self.slope, self.intercept, id(self.table))


@dataclass(frozen=True)
class Preset:
    """A named VOI choice offered to the user, with where it comes from."""

    name: str
    window: Voi
    explanation: str
    source: str = "dataset"  # dataset | automatic | modality


def table_from_item(item: Any, *, signed_input: bool, little_endian: bool) -> LookupTable:
    """Read a LUT Descriptor + LUT Data pair (VOI or Modality LUT Sequence item).

    Raises ``ValueError`` when the descriptor or data are unusable.
    """
    descriptor = [int(v) for v in item.LUTDescriptor]
    if len(descriptor) != 3:
        raise ValueError("LUT Descriptor does not have three values")
    entries = descriptor[0] or 65536  # 0 means 2**16 entries (C.11.1.1.1)
    first = descriptor[1]
    if signed_input and first >= 32768:  # US or SS by Pixel Representation
        first -= 65536
    bits = descriptor[2]
    if not 1 <= bits <= 16:
        raise ValueError(f"{bits} bits per LUT entry is not allowed")
    raw = item["LUTData"].value
    if isinstance(raw, bytes | bytearray):
        data = np.frombuffer(raw, dtype="<u2" if little_endian else ">u2").astype(np.int64)
    else:
        values = [raw] if isinstance(raw, int) else list(raw)
        data = np.asarray(values, dtype=np.int64)
    if data.size < entries:
        raise ValueError(f"LUT Data has {data.size} entries, the descriptor says {entries}")
    data = data[:entries]
    top = int(data.max(initial=0))
    if top >= 2**bits:
        # Some writers declare fewer bits than their entries use; follow the entries.
        bits = min(max(top.bit_length(), 1), 16)
    explanation = str(item.get("LUTExplanation", "") or "")
    return LookupTable(first, bits, data, explanation)


def stored_values(n: int, *, bits_stored: int, signed: bool, shift: int = 0) -> Floats:
    """The stored value each raw n-entry index stands for: shift by High Bit, mask the
    unused high bits, sign-extend signed pixels."""
    raw = np.arange(n, dtype=np.int64)
    values = (raw >> shift) & ((1 << bits_stored) - 1)
    if signed:
        sign = 1 << (bits_stored - 1)
        values = np.where(values >= sign, values - (1 << bits_stored), values)
    return values.astype(np.float64)


def to_bytes(unit: Floats, *, invert: bool) -> Bytes8:
    """[0, 1] -> 0..255, rounded; inverted for MONOCHROME1."""
    out = np.rint(unit * 255.0)
    if invert:
        out = 255.0 - out
    return out.astype(np.uint8)


def greyscale_lut(
    *,
    index_bits: int,
    bits_stored: int,
    signed: bool,
    rescale: Rescale,
    voi: Voi,
    invert: bool,
    shift: int = 0,
) -> Bytes8:
    """One uint8 table indexed by the raw (unsigned view of the) 8- or 16-bit sample."""
    stored = stored_values(
        1 << index_bits, bits_stored=min(bits_stored, index_bits), signed=signed, shift=shift
    )
    return to_bytes(voi.unit(rescale.apply(stored)), invert=invert)


def render_values(values: Floats, *, rescale: Rescale, voi: Voi, invert: bool) -> Bytes8:
    """The same pipeline for a chunk of 32-bit or float stored values."""
    modality = rescale.apply(values)
    unit = voi.unit(np.nan_to_num(modality, nan=0.0, posinf=1e300, neginf=-1e300))
    return to_bytes(unit, invert=invert)


def full_range_window(low: float, high: float) -> Window:
    """The LINEAR window that maps ``low`` to black and ``high`` to white."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return Window(0.5, 1.0)
    if high < low:
        low, high = high, low
    return Window((low + high) / 2 + 0.5, max(high - low + 1, 1.0))


def percentile_range(
    values: npt.NDArray[np.float64], counts: npt.NDArray[np.int64]
) -> tuple[float, float]:
    """The 0.5th and 99.5th percentile of values given with their counts (a histogram);
    the full range when those coincide."""
    present = counts > 0
    if not present.any():
        return 0.0, 1.0
    v, c = values[present], counts[present]
    order = np.argsort(v, kind="stable")
    v, cum = v[order], np.cumsum(c[order])
    total = float(cum[-1])
    low = float(v[int(np.searchsorted(cum, total * 0.005))])
    high = float(v[min(int(np.searchsorted(cum, total * 0.995)), v.size - 1)])
    if high <= low:
        low, high = float(v[0]), float(v[-1])
    return low, high


def _window(name: str, center: float, width: float, note: str) -> Preset:
    return Preset(
        name, Window(center, width), f"{note} (center {center:g}, width {width:g})", "modality"
    )


# Common CT windows in Hounsfield units (center, width); the usual radiology values.
_CT = [
    _window("Brain", 40, 80, "brain parenchyma"),
    _window("Subdural", 75, 215, "blood against brain and bone"),
    _window("Stroke", 40, 40, "early ischaemia, grey-white matter differentiation"),
    _window("Lung", -600, 1500, "lung parenchyma and airways"),
    _window("Mediastinum", 50, 350, "mediastinal soft tissue and vessels"),
    _window("Abdomen", 40, 400, "abdominal soft tissue"),
    _window("Liver", 60, 160, "liver lesions"),
    _window("Bone", 400, 1800, "bone and calcification"),
    _window("Angio", 300, 600, "contrast-filled vessels"),
]
_PRESETS: dict[str, list[Preset]] = {"CT": _CT}


def presets_for(modality: str) -> list[Preset]:
    """Fixed windows that make sense for a modality (CT in Hounsfield units); [] for the
    others, whose values depend on the acquisition."""
    return list(_PRESETS.get(modality.strip().upper(), []))
