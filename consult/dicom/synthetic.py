"""A small synthetic study, the same every time: 4 CT slices and one JPEG capture.

The demo ingests it (``consult demo``); tests and benchmarks build on it. The UIDs come
from fixed strings, so every call gives the same UIDs; the patient is made up.
"""

from __future__ import annotations

import io
import os
from datetime import date

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["consult-demo", *map(str, parts)]))


def _base(study_uid: str, series_uid: str, sop_class: str, number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(series_uid, number)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "DEMO^Patient"
    ds.PatientID = "DEMO-0001"
    ds.IssuerOfPatientID = "REFHOSP"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = date.today().strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.StudyDescription = "Demo chest CT"
    ds.AccessionNumber = "DEMO1"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyID = "1"
    ds.InstanceNumber = number
    return ds


def _greyscale(
    ds: Dataset, shape: tuple[int, ...], *, bits_allocated: int, bits_stored: int
) -> None:
    """The Image Pixel module of an unsigned MONOCHROME2 image of ``shape`` (rows, columns)."""
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def demo_study() -> list[tuple[Dataset, str]]:
    """A small synthetic study: 4 uncompressed CT slices and one JPEG baseline capture.

    Returns (dataset, transfer syntax UID) pairs; the pixel data is already encoded.
    """
    study_uid = _uid("study")
    out: list[tuple[Dataset, str]] = []
    ct_series = _uid("series", "ct")
    yy, xx = np.mgrid[0:256, 0:256]
    for i in range(4):
        ds = _base(study_uid, ct_series, CTImageStorage, i + 1)
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.SeriesDescription = "Axial 5 mm"
        body = ((xx - 128) ** 2 / 110**2 + (yy - 128) ** 2 / 90**2) < 1
        lesion = ((xx - 150 - 4 * i) ** 2 + (yy - 110) ** 2) < (12 - i) ** 2
        hu = np.where(body, 40, -1000) + np.where(lesion, 60, 0)
        pixels = (hu + 1024).astype(np.uint16)
        _greyscale(ds, pixels.shape, bits_allocated=16, bits_stored=12)
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.ImagePositionPatient = [0, 0, -5.0 * i]
        ds.PixelData = pixels.tobytes()
        out.append((ds, str(ExplicitVRLittleEndian)))
    sc_series = _uid("series", "sc")
    ds = _base(study_uid, sc_series, SecondaryCaptureImageStorage, 1)
    ds.Modality = "OT"
    ds.SeriesNumber = 2
    ds.SeriesDescription = "Key image (JPEG)"
    grey = (np.hypot(xx - 128, yy - 128) * 2).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, "L").save(buffer, format="JPEG", quality=90)
    _greyscale(ds, grey.shape, bits_allocated=8, bits_stored=8)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    out.append((ds, str(JPEGBaseline8Bit)))
    return out


def dataset_bytes(ds: Dataset) -> bytes:
    """The dataset encoded Explicit VR Little Endian (as every transfer syntax here is)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def write_part10(ds: Dataset, transfer_syntax_uid: str, path: os.PathLike[str] | str) -> None:
    """Save a dataset of the study as a Part 10 file (for sending with storescu)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
