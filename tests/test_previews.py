"""Preview jobs: the worker renders each frame with the dataset's default window."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from consult import jobs
from consult.access import directory
from consult.catalog import Catalog
from consult.catalog.tables import instance_versions, previews
from consult.cli.servers import job_handlers
from consult.dicom.synthetic import dataset_bytes, demo_study
from consult.ingest.pipeline import Origin, ingest, ingest_file
from consult.jobs.worker import Worker
from consult.services import Services
from consult.settings import Settings
from storage import LocalObjectStore
from tests.pyramid_support import stored_level
from tests.support import sample


@pytest.fixture
def services(settings: Settings, catalog: Catalog) -> Services:
    # Lossless tiles, so that pixel values can be checked exactly.
    settings = settings.model_copy(update={"tile_format": "png"})
    return Services(
        settings=settings, catalog=catalog, store=LocalObjectStore(settings.objects_dir)
    )


@pytest.fixture
def origin(services: Services) -> Origin:
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Sender")
    return Origin(hospital.id, "REFPACS", "127.0.0.1", 1)


def _drain(services: Services) -> int:
    worker = Worker(services, job_handlers())
    n = 0
    while worker.run_once():
        n += 1
    return n


def _preview_image(services: Services, version_id: int, frame: int = 0) -> Image.Image:
    with services.catalog.read() as conn:
        row = conn.execute(
            select(previews).where(previews.c.version_pk == version_id, previews.c.frame == frame)
        ).one()
    assert row.status == "ready", row.reason
    assert row.media_type == "image/png"
    # The frame's full-resolution level, put back together from its stored tile pack.
    return Image.fromarray(stored_level(services.store, row.object_key))


def test_worker_renders_ct_with_the_dataset_window(services: Services, origin: Origin) -> None:
    ds, ts = demo_study()[0]
    stored = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    assert _drain(services) == 1
    image = _preview_image(services, stored.version_id)
    assert image.size == (256, 256) and image.mode == "L"
    pixels = np.asarray(image)
    # Window 40/400: air (-1000 HU) is black, soft tissue (40 HU) mid-grey, the lesion brighter.
    assert pixels[5, 5] == 0
    assert 120 <= pixels[150, 80] <= 135
    assert pixels[110, 150] > pixels[150, 80]
    with services.catalog.read() as conn:
        assert jobs.counts(conn) == {"done": 1}


def test_worker_renders_jpeg_baseline(services: Services, origin: Origin) -> None:
    ds, ts = demo_study()[4]
    stored = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    _drain(services)
    pixels = np.asarray(_preview_image(services, stored.version_id)).astype(int)
    assert pixels[128, 128] < 10 and pixels[0, 0] > 240  # radial ramp: dark centre, bright corner


def test_multiframe_gets_one_preview_per_frame(services: Services, origin: Origin) -> None:
    stored = ingest_file(services, sample("pydicom__SC_rgb_rle_2frame.dcm"), origin=origin)
    _drain(services)
    with services.catalog.read() as conn:
        rows = conn.execute(
            select(previews.c.frame, previews.c.status).where(
                previews.c.version_pk == stored.version_id
            )
        ).all()
    assert sorted(rows) == [(0, "ready"), (1, "ready")]
    assert _preview_image(services, stored.version_id, 1).mode == "RGB"


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("pydicom__test-SR.dcm", "no_image", "no pixel data"),
    ],
)
def test_no_image_and_undecodable_get_named_entries(
    services: Services, origin: Origin, name: str, status: str, reason: str
) -> None:
    stored = ingest_file(services, sample(name), origin=origin)
    _drain(services)
    with services.catalog.read() as conn:
        row = conn.execute(select(previews).where(previews.c.version_pk == stored.version_id)).one()
        done = jobs.counts(conn)
    assert row.status == status and reason in row.reason
    assert done == {"done": 1}  # a picture we cannot make is not a failed job


def test_undecodable_pixels_get_a_named_failure(services: Services, origin: Origin) -> None:
    from pydicom.encaps import encapsulate

    ds, ts = demo_study()[4]  # JPEG baseline; its compressed stream is replaced by noise
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    stored = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    _drain(services)
    with services.catalog.read() as conn:
        row = conn.execute(select(previews).where(previews.c.version_pk == stored.version_id)).one()
        done = jobs.counts(conn)
    assert row.status == "failed" and row.reason
    assert done == {"done": 1}  # a picture we cannot make is not a failed job


def test_missing_original_fails_the_job_for_retry(services: Services, origin: Origin) -> None:
    ds, ts = demo_study()[0]
    stored = ingest(services, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)
    with services.catalog.read() as conn:
        key = conn.execute(
            select(instance_versions.c.object_key).where(
                instance_versions.c.id == stored.version_id
            )
        ).scalar_one()
    services.store.delete(key)
    _drain(services)
    with services.catalog.read() as conn:
        assert jobs.counts(conn) == {"queued": 1}  # back in the queue with a backoff
