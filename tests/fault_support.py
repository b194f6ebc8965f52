"""Helpers for the fault and concurrency tests: a deterministic study, a receiver on port 0
with a registered peer, a pynetdicom sender that reads back each exact status and how long
it took, and a consistency check of catalog against object store."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import FromClause, func, select

from consult.access import directory
from consult.catalog.tables import (
    instance_versions,
    instances,
    jobs,
    patients,
    series,
    studies,
)
from consult.dicom.part10 import split_part10
from consult.dicom.synthetic import dataset_bytes, write_part10
from consult.receiver import Receiver
from consult.services import Services
from storage import ObjectNotFound

SENDER_AE = "REFPACS"
OUR_AE = "CONSULT"
TS = str(ExplicitVRLittleEndian)


def make_study(count: int, *, seed: str = "faults", size: int = 64) -> list[Dataset]:
    """``count`` small CT instances in two series of one study, the same for the same seed."""
    study_uid = str(generate_uid(entropy_srcs=[seed, "study"]))
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    out = []
    for i in range(count):
        series_no = 1 + i % 2
        series_uid = str(generate_uid(entropy_srcs=[seed, "series", str(series_no)]))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(TS)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = str(generate_uid(entropy_srcs=[seed, "instance", str(i)]))
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientName = "FAULT^Test"
        ds.PatientID = "FAULT-1"
        ds.IssuerOfPatientID = "REFHOSP"
        ds.StudyDate = "20240101"
        ds.StudyTime = "101500"
        ds.Modality = "CT"
        ds.SeriesNumber = series_no
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
        out.append(ds)
    return out


def expected_sha(ds: Dataset) -> str:
    """SHA-256 of the dataset as it travels (Explicit VR Little Endian)."""
    return hashlib.sha256(dataset_bytes(ds)).hexdigest()


def write_files(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i:03d}.dcm"
        write_part10(copy.deepcopy(ds), TS, path)
        paths.append(path)
    return paths


def register_sender(services: Services) -> None:
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Referring")
        directory.add_peer(conn, hospital, SENDER_AE, "127.0.0.1")


@contextmanager
def running_receiver(services: Services) -> Iterator[int]:
    """A receiver on a free port; yields the port."""
    rx = Receiver(services)
    port = rx.start()
    try:
        yield port
    finally:
        rx.stop()


@dataclass(frozen=True)
class Sent:
    """One C-STORE as the sender saw it: status None means no response at all."""

    sop_instance_uid: str
    status: int | None
    seconds: float


class Sender:
    """One association from the registered peer; send datasets one by one."""

    def __init__(self, port: int, *, dimse_timeout: float = 30) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=SENDER_AE)
        ae.dimse_timeout = dimse_timeout
        ae.acse_timeout = 15
        ae.add_requested_context(CTImageStorage, TS)
        self.assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE)
        if not self.assoc.is_established:
            raise AssertionError("association not established")

    def send(self, ds: Dataset) -> Sent:
        started = time.monotonic()
        response = self.assoc.send_c_store(ds)
        status = int(response.Status) if "Status" in response else None
        return Sent(str(ds.SOPInstanceUID), status, time.monotonic() - started)

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_all(port: int, datasets: Sequence[Dataset]) -> list[Sent]:
    with Sender(port) as sender:
        return [sender.send(ds) for ds in datasets]


@dataclass(frozen=True)
class Summary:
    patients: int
    studies: int
    series: int
    instances: int
    versions: int
    preview_jobs: int
    counted: int  # sum of series.instance_count
    uids: frozenset[str]


def check_catalog(services: Services) -> Summary:
    """Counts of the catalog, after checking that every version row points at an object
    holding exactly the bytes whose SHA-256 and size the row records."""
    with services.catalog.read() as conn:
        rows = conn.execute(
            select(
                instances.c.sop_instance_uid,
                instances.c.current_version,
                instance_versions.c.version,
                instance_versions.c.sha256,
                instance_versions.c.size,
                instance_versions.c.object_key,
                instance_versions.c.dataset_offset,
            ).join(instance_versions, instance_versions.c.instance_pk == instances.c.id)
        ).all()

        def count(table: FromClause) -> int:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

        preview_jobs = int(
            conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.kind == "preview")
            ).scalar_one()
        )
        summary = Summary(
            patients=count(patients),
            studies=count(studies),
            series=count(series),
            instances=count(instances),
            versions=count(instance_versions),
            preview_jobs=preview_jobs,
            counted=int(
                conn.execute(select(func.coalesce(func.sum(series.c.instance_count), 0))).scalar()
                or 0
            ),
            uids=frozenset(r.sop_instance_uid for r in rows),
        )
    for row in rows:
        try:
            blob = services.store.get(row.object_key)
        except ObjectNotFound:
            raise AssertionError(f"catalog row without object: {row.sop_instance_uid}") from None
        _meta, offset = split_part10(blob)
        data = blob[row.dataset_offset :]
        assert offset == row.dataset_offset, row.sop_instance_uid
        assert len(data) == row.size, row.sop_instance_uid
        assert hashlib.sha256(data).hexdigest() == row.sha256, row.sop_instance_uid
        assert row.current_version >= row.version
    return summary


def assert_one_set(summary: Summary, datasets: Sequence[Dataset]) -> None:
    """Exactly one set of records for a study made by :func:`make_study`."""
    n = len(datasets)
    n_series = len({ds.SeriesInstanceUID for ds in datasets})
    assert summary.uids == {str(ds.SOPInstanceUID) for ds in datasets}
    assert (
        summary.patients,
        summary.studies,
        summary.series,
        summary.instances,
        summary.versions,
        summary.preview_jobs,
        summary.counted,
    ) == (1, 1, n_series, n, n, n, n)
