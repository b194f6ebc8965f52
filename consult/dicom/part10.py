"""Reading untrusted DICOM safely, and writing Part 10 files around bytes as received.

Nothing here ``str()``s, ``repr()``s or walks a received dataset: deeply nested sequences
make those take minutes. Only the header up to group 0028 is parsed.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from consult.errors import InvalidDataset

# Received data is read leniently (real equipment sends non-conformant values); what
# matters is validated by us, explicitly. pydicom's per-value warnings would only flood logs.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

IMPLEMENTATION_CLASS_UID = PYDICOM_IMPLEMENTATION_UID + ".7263"
IMPLEMENTATION_VERSION_NAME = "CONSULT_010"


def _stop_after_group_28(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return bool(tag.group > 0x0028)


def read_header(data: bytes, transfer_syntax_uid: str) -> Dataset:
    """Parse the header (groups up to 0028) of dataset bytes in the given transfer syntax."""
    ts = UID(transfer_syntax_uid)
    buffer = data
    if ts == DeflatedExplicitVRLittleEndian:
        try:
            buffer = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, 64 * 1024 * 1024)
        except zlib.error as exc:
            raise InvalidDataset(f"deflated dataset does not inflate: {exc}") from None
    implicit = ts == ImplicitVRLittleEndian
    little = ts != ExplicitVRBigEndian
    try:
        ds = read_dataset(
            io.BytesIO(buffer),
            is_implicit_VR=implicit,
            is_little_endian=little,
            stop_when=_stop_after_group_28,
        )
    except (
        ValueError,
        KeyError,
        EOFError,
        OverflowError,
        RecursionError,
        NotImplementedError,
    ) as exc:
        raise InvalidDataset(f"dataset cannot be parsed: {type(exc).__name__}") from None
    if len(ds) == 0:
        raise InvalidDataset("dataset is empty or cannot be parsed")
    return ds


def text_of(ds: Dataset, keyword: str, limit: int = 324) -> str:
    """An attribute as text, or "" when absent or undecodable (never raises)."""
    try:
        value: Any = ds.get(keyword, "")
        text = "" if value is None else str(value)
    except Exception:
        return ""
    text = "".join(c for c in text if c.isprintable())
    return text.strip()[:limit]


def int_of(ds: Dataset, keyword: str) -> int | None:
    try:
        value: Any = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae: str,
) -> FileMetaDataset:
    """Our file meta for a dataset received over the network (PS3.10 7.1)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    return meta


def part10_prefix(meta: FileMetaDataset) -> bytes:
    """Preamble, "DICM" and the encoded file meta group: what goes before the dataset."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def received_prefix(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """The same bytes as ``part10_prefix(file_meta(...))``, encoded directly: this runs
    once per received instance, and pydicom's general writer costs ~0.5 ms each time."""

    def element(elem: int, vr: bytes, value: bytes) -> bytes:
        if vr == b"OB":
            return struct.pack("<HH2sHL", 0x0002, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", 0x0002, elem, vr, len(value)) + value

    def uid(text: str) -> bytes:
        raw = text.encode("ascii")
        return raw + b"\x00" if len(raw) % 2 else raw

    def padded(text: str) -> bytes:
        raw = text.encode("ascii")
        return raw + b" " if len(raw) % 2 else raw

    body = b"".join(
        [
            element(0x0001, b"OB", b"\x00\x01"),
            element(0x0002, b"UI", uid(sop_class_uid)),
            element(0x0003, b"UI", uid(sop_instance_uid)),
            element(0x0010, b"UI", uid(transfer_syntax_uid)),
            element(0x0012, b"UI", uid(IMPLEMENTATION_CLASS_UID)),
            element(0x0013, b"SH", padded(IMPLEMENTATION_VERSION_NAME)),
            element(0x0016, b"AE", padded(source_ae)) if source_ae else b"",
        ]
    )
    length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + length + body


def split_part10(blob: bytes) -> tuple[FileMetaDataset, int]:
    """Parse a Part 10 file's meta group; returns it and the offset where the dataset starts."""
    from pydicom.filereader import _read_file_meta_info

    if len(blob) < 132 or blob[128:132] != b"DICM":
        raise InvalidDataset("not a DICOM Part 10 file (no DICM prefix)")
    fp = io.BytesIO(blob)
    fp.seek(132)
    try:
        meta = _read_file_meta_info(fp)
    except Exception as exc:
        raise InvalidDataset(f"file meta cannot be parsed: {type(exc).__name__}") from None
    if "TransferSyntaxUID" not in meta:
        raise InvalidDataset("file meta has no Transfer Syntax UID")
    return meta, fp.tell()


# Explicit VRs whose length field is 4 bytes (after 2 reserved bytes), PS3.5 7.1.2.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_VRS = _LONG_VRS | frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split()
)
_UNDEFINED = 0xFFFFFFFF


def check_complete(data: bytes, transfer_syntax_uid: str) -> None:
    """Refuse (0xC210) a dataset whose encoding ends early: an element longer than the bytes
    left, or a sequence never closed. pydicom reads such data silently.

    Only element headers are read, never values, with an explicit stack instead of
    recursion, so deep nesting costs nothing more than its bytes.
    """
    ts = UID(transfer_syntax_uid)
    buffer = data
    if ts == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            buffer = inflater.decompress(data, 64 * 1024 * 1024)
        except zlib.error as exc:
            raise InvalidDataset(f"deflated dataset does not inflate: {exc}") from None
        if inflater.unconsumed_tail:
            return  # inflates to more than we walk here; read_header checked its start
        if not inflater.eof:
            raise InvalidDataset("deflated dataset ends before its deflate stream does")
    little = ts != ExplicitVRBigEndian
    implicit = ts == ImplicitVRLittleEndian
    if len(buffer) >= 6:  # follow pydicom, which trusts the first element over the syntax
        implicit = buffer[4:6] not in _VRS
    _walk_headers(buffer, little=little, implicit=implicit)


def _walk_headers(buf: bytes, *, little: bool, implicit: bool) -> None:
    end = len(buf)
    tag_fmt, u32 = ("<HH", "<L") if little else (">HH", ">L")
    u16 = "<H" if little else ">H"
    # Open undefined-length sequences and items: (is_item, implicit VR inside).
    stack: list[tuple[bool, bool]] = []
    pos = 0
    while pos < end:
        if end - pos < 8:
            if not any(buf[pos:]):
                break  # trailing zero padding
            raise InvalidDataset("dataset ends inside an element header")
        group, elem = struct.unpack_from(tag_fmt, buf, pos)
        if group == 0xFFFE:
            (length,) = struct.unpack_from(u32, buf, pos + 4)
            pos += 8
            if elem == 0xE000 and length == _UNDEFINED:
                stack.append((True, stack[-1][1] if stack else implicit))
            elif elem == 0xE000:
                pos += length
            elif elem == 0xE00D and stack and stack[-1][0]:
                stack.pop()
            elif elem == 0xE0DD:
                while stack and stack.pop()[0]:
                    pass
        else:
            here_implicit = stack[-1][1] if stack else implicit
            vr = b""
            if here_implicit:
                (length,) = struct.unpack_from(u32, buf, pos + 4)
                pos += 8
            else:
                vr = buf[pos + 4 : pos + 6]
                if vr not in _VRS:
                    raise InvalidDataset("dataset has an element with an unknown VR")
                if vr in _LONG_VRS:
                    if end - pos < 12:
                        raise InvalidDataset("dataset ends inside an element header")
                    (length,) = struct.unpack_from(u32, buf, pos + 8)
                    pos += 12
                else:
                    (length,) = struct.unpack_from(u16, buf, pos + 6)
                    pos += 8
            if length == _UNDEFINED:
                # The items of an undefined-length UN are implicit VR (PS3.5 6.2.2).
                stack.append((False, True if vr == b"UN" else here_implicit))
            else:
                pos += length
        if pos > end:
            raise InvalidDataset("dataset is truncated: an element is longer than the data")
    if stack:
        raise InvalidDataset("dataset is truncated: a sequence is never closed")
