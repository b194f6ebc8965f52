"""Helpers for tests that look inside stored tile packs (read an index, put a level back
together from its tiles, compare pictures) and that need large generated images."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from storage import ObjectStore
from viewer.tilepack import PackIndex, read_index


def pack_index(store: ObjectStore, key: str) -> PackIndex:
    size = store.head(key).size
    return read_index(lambda start, n: store.get_range(key, start, n), size)


def decode(data: bytes) -> npt.NDArray[Any]:
    return np.asarray(Image.open(io.BytesIO(data)))


def assemble(index: PackIndex, read: Any, level: int) -> npt.NDArray[Any]:
    """A level put back together from its tiles, each tile's overlap cut off.

    ``read(start, length)`` reads bytes of the pack.
    """
    g = index.geometry
    width, height = g.level_size(level)
    out: npt.NDArray[Any] | None = None
    for col, row in g.tiles(level):
        left, top, right, bottom = g.tile_box(level, col, row)
        tile = decode(read(*index.tile(level, col, row)))
        assert tile.shape[:2] == (bottom - top, right - left), (level, col, row, tile.shape)
        if out is None:
            out = np.zeros((height, width, *tile.shape[2:]), dtype=tile.dtype)
        x0, y0 = col * g.tile_size, row * g.tile_size
        x1, y1 = min(x0 + g.tile_size, width), min(y0 + g.tile_size, height)
        out[y0:y1, x0:x1] = tile[y0 - top : y1 - top, x0 - left : x1 - left]
    assert out is not None
    return out


def stored_level(store: ObjectStore, key: str, level: int | None = None) -> npt.NDArray[Any]:
    """A level (default: full resolution) of a stored pack, from its tiles."""
    index = pack_index(store, key)
    top = index.geometry.max_level if level is None else level
    return assemble(index, lambda start, n: store.get_range(key, start, n), top)


def psnr(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    """Peak signal-to-noise ratio of two 8-bit pictures, in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def mono16_dataset(
    rows: int,
    columns: int,
    *,
    frames: int = 1,
    modality: str = "MG",
    window: tuple[float, float] | None = (1800.0, 1600.0),
    seed: int = 7,
) -> Dataset:
    """A deterministic 16-bit MONOCHROME2 image (one or more frames): smooth structures and
    mild noise, 12 bits used, with a Window Center/Width when ``window`` is given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    base = 1800 + 600 * np.sin(xx / 40.0) * np.cos(yy / 55.0)
    stack = []
    for frame in range(frames):
        noise = rng.normal(0, 20, (rows, columns)).astype(np.float32)
        stack.append(np.clip(base + noise + 50 * frame, 0, 4095).astype(np.uint16))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "PYR-1"
    ds.PatientName = "PYRAMID^Test"
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = b"".join(a.tobytes() for a in stack)
    return ds


def write_dataset(ds: Dataset, path: Path) -> Path:
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path
