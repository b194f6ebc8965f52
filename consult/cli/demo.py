"""The demo: a referring and a consulting hospital, their users, and a sample study.

Only ``consult demo`` calls this. Passwords are random, printed, and kept (mode 0600) in
the data folder so that a second run prints the same ones; nothing is created twice.
"""

from __future__ import annotations

import io
import os
import secrets
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

from consult.access import directory
from consult.errors import Conflict
from consult.ingest.pipeline import Origin, ingest
from consult.services import Services

REFERRING = "Referring Hospital"
CONSULTING = "Consulting Hospital"
DEMO_AE = "REFPACS"
DEMO_PACS_PORT = 11113
USERS = (
    ("referrer", REFERRING, directory.Role.REFERRING, "Dr. Rita Referrer"),
    ("specialist", CONSULTING, directory.Role.SPECIALIST, "Dr. Sam Specialist"),
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
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
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
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    out.append((ds, str(JPEGBaseline8Bit)))
    return out


def dataset_bytes(ds: Dataset) -> bytes:
    """The dataset encoded Explicit VR Little Endian (as every demo transfer syntax is)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def write_part10(ds: Dataset, transfer_syntax_uid: str, path: os.PathLike[str] | str) -> None:
    """Save a demo dataset as a Part 10 file (for sending with storescu)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def create_demo(services: Services) -> None:
    settings = services.settings
    creds_path = settings.data_dir / "demo-credentials.txt"
    saved: dict[str, str] = {}
    if creds_path.exists():
        for line in creds_path.read_text().splitlines():
            name, _, password = line.partition(" ")
            saved[name] = password
    with services.catalog.write() as conn:
        referring = directory.get_or_add_hospital(conn, REFERRING)
        directory.get_or_add_hospital(conn, CONSULTING)
        peer = directory.find_peer(conn, DEMO_AE, "127.0.0.1")
        if peer is None:
            peer = directory.add_peer(conn, referring, DEMO_AE, "127.0.0.1", DEMO_PACS_PORT)
        for username, hospital_name, role, display in USERS:
            password = saved.get(username) or secrets.token_urlsafe(12)
            try:
                directory.add_user(
                    conn,
                    username,
                    hospital=directory.get_hospital(conn, hospital_name),
                    role=role,
                    password=password,
                    display_name=display,
                )
            except Conflict:
                if username not in saved:
                    password = "(set before; not known to the demo)"  # noqa: S105
            saved[username] = password
    fd = os.open(creds_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{name} {pw}\n" for name, pw in saved.items())
    origin = Origin(peer.hospital_id, DEMO_AE, "127.0.0.1", 0)
    for ds, ts in demo_study():
        ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    print("Demo ready:")
    print(f"  hospitals: {REFERRING!r} (sends studies) and {CONSULTING!r} (gives opinions)")
    for username, hospital_name, role, _ in USERS:
        print(f"  login {username} / {saved[username]}  ({role.value}, {hospital_name})")
    print(
        f"  DICOM peer {DEMO_AE}@127.0.0.1 may send to AE {settings.ae_title} "
        f"port {settings.dicom_port}; opinions go back to 127.0.0.1:{DEMO_PACS_PORT}"
    )
