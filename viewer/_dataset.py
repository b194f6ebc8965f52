"""Reading the stored bytes: the header once, and where the pixel data element lies.

Part 10 files (preamble + "DICM"), a file meta group without preamble, and raw datasets
(encoding guessed by pydicom) are read. A deflated dataset (PS3.5 A.5) is inflated first,
to at most :data:`MAX_INFLATED` bytes: a few kilobytes can claim gigabytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from viewer import _header as hdr
from viewer.errors import NoImage, RenderError

PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
MAX_INFLATED = 1 << 30  # a deflated dataset may inflate to 1 GiB, no more


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_INFLATED)
    except zlib.error as exc:
        raise RenderError(f"deflated dataset does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise RenderError(f"deflated dataset inflates to more than {MAX_INFLATED >> 20} MiB")
    return out


def _stop_at_pixels(tag: Any, _vr: Any, _length: int) -> bool:
    return int(tag) in PIXEL_TAGS


def parse(blob: bytes) -> tuple[Dataset, UID, bytes, int]:
    """The header, the transfer syntax to decode with, the buffer holding the dataset and
    where the pixel data element starts in it (at its tag, or at the end: none)."""
    try:
        # Part 10 (preamble + "DICM"), or a file meta group with no preamble before it
        start = 132 if blob[128:132] == b"DICM" else (0 if blob[:2] == b"\x02\x00" else -1)
        if start >= 0:
            fp = io.BytesIO(blob)
            fp.seek(start)
            meta = _read_file_meta_info(fp)
            ts_value = meta.get("TransferSyntaxUID")
            if not ts_value:
                raise RenderError("file meta has no Transfer Syntax UID")
            ts = UID(str(ts_value))
            buffer = blob
            if ts == DeflatedExplicitVRLittleEndian:
                buffer = _inflate(blob[fp.tell() :])
                fp = io.BytesIO(buffer)
                ts = ExplicitVRLittleEndian  # what the inflated bytes are
            ds = read_dataset(
                fp,
                is_implicit_VR=ts.is_implicit_VR,
                is_little_endian=ts.is_little_endian,
                stop_when=_stop_at_pixels,
            )
            ds.file_meta = meta
            return ds, ts, buffer, fp.tell()
        # A raw dataset (no file meta): pydicom guesses the encoding.
        fp = io.BytesIO(blob)
        ds = dcmread(fp, force=True, stop_before_pixels=True)
        implicit, little = ds.original_encoding
        ts = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
        return ds, ts, blob, fp.tell()
    except RenderError:
        raise
    except Exception as exc:
        raise RenderError(f"header cannot be read: {type(exc).__name__}") from None


def pixel_element(ds: Dataset, ts: UID, buffer: bytes, pos: int) -> tuple[str, str, int, int]:
    """Keyword, VR, value offset and length of the pixel data element at ``pos``."""
    head = buffer[pos : pos + 12]
    order = "<" if ts.is_little_endian else ">"
    if len(head) < 8:
        raise NoImage(f"{hdr.sop_class_name(ds)} has no pixel data")
    group, element = struct.unpack(f"{order}HH", head[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        raise NoImage(f"{hdr.sop_class_name(ds)} has no pixel data")
    if ts.is_implicit_VR:
        (length,) = struct.unpack(f"{order}L", head[4:8])
        return PIXEL_TAGS[tag], "", pos + 8, length
    if len(head) < 12:
        raise RenderError("pixel data element header is cut short")
    vr = head[4:6].decode("ascii", "replace")
    (length,) = struct.unpack(f"{order}L", head[8:12])
    return PIXEL_TAGS[tag], vr, pos + 12, length
