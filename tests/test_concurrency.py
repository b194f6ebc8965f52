"""Many senders at once, and the same instance sent again: exactly one set of records, and
a new version only when the bytes differ. Real receiver, pynetdicom senders (exact
statuses), SQLite and PostgreSQL, folder store and S3 (moto)."""

from __future__ import annotations

import copy
import hashlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from consult.catalog import Catalog
from consult.catalog.tables import instance_versions, instances, jobs
from consult.dicom.synthetic import dataset_bytes
from consult.services import Services
from consult.settings import Settings
from storage import LocalObjectStore, ObjectStore, S3ObjectStore
from tests.fault_support import (
    Sent,
    assert_one_set,
    check_catalog,
    expected_sha,
    make_study,
    register_sender,
    running_receiver,
    send_all,
)

SENDERS = 10
REPEATS = 3


@pytest.fixture
def opened(
    request: pytest.FixtureRequest, settings: Settings, database_url: str
) -> Iterator[Services]:
    """Services as the receiver opens them, on the folder store or a fresh moto bucket."""
    svc = Services.open(settings.model_copy(update={"database_url": database_url}))
    assert isinstance(svc.store, LocalObjectStore)
    if request.param == "s3":
        svc.store = S3ObjectStore(
            endpoint=request.getfixturevalue("moto_endpoint"),
            bucket=f"concurrent-{uuid.uuid4().hex[:12]}",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
        svc.store.ensure_bucket()
    register_sender(svc)
    yield svc
    svc.close()


@pytest.mark.parametrize(
    ("database_url", "opened"),
    [("sqlite", "local"), ("postgresql", "local"), ("postgresql", "s3")],
    indirect=True,
)
def test_concurrent_senders_give_one_set_of_records(opened: Services) -> None:
    study = make_study(4, seed="concurrent")
    start = threading.Barrier(SENDERS, timeout=30)

    def sender(_: int) -> list[Sent]:
        start.wait()
        return [s for _ in range(REPEATS) for s in send_all(port, study)]

    with running_receiver(opened) as port:
        with ThreadPoolExecutor(SENDERS) as pool:
            results = [s for batch in pool.map(sender, range(SENDERS)) for s in batch]
    assert len(results) == SENDERS * REPEATS * len(study)
    failed = [s for s in results if s.status != 0x0000]
    assert failed == [], failed
    assert_one_set(check_catalog(opened), study)
    with opened.catalog.read() as conn:
        rows = conn.execute(
            select(instances.c.current_version, instance_versions.c.version).join(
                instance_versions, instance_versions.c.instance_pk == instances.c.id
            )
        ).all()
    assert {(r.current_version, r.version) for r in rows} == {(1, 1)}
    stored = list(opened.store.list("originals/"))
    assert len(stored) == len(study)


@pytest.fixture
def services(settings: Settings, catalog: Catalog, store: ObjectStore) -> Services:
    svc = Services(settings=settings, catalog=catalog, store=store)
    register_sender(svc)
    return svc


def test_same_sop_instance_with_other_bytes_is_a_second_version(services: Services) -> None:
    first = make_study(1, seed="versions")[0]
    second = copy.deepcopy(first)
    second.ImageComments = "corrected"
    with running_receiver(services) as port:
        sent = send_all(port, [first, first, second, second])
    assert [s.status for s in sent] == [0x0000] * 4, sent

    with services.catalog.read() as conn:
        current = conn.execute(select(instances.c.current_version)).scalar_one()
        versions = conn.execute(
            select(
                instance_versions.c.id,
                instance_versions.c.version,
                instance_versions.c.sha256,
                instance_versions.c.object_key,
                instance_versions.c.dataset_offset,
            ).order_by(instance_versions.c.version)
        ).all()
        previews = conn.execute(
            select(jobs.c.dedup_key).where(jobs.c.kind == "preview").order_by(jobs.c.id)
        ).scalars()
        preview_keys = list(previews)
    assert current == 2
    assert [v.version for v in versions] == [1, 2]
    assert [v.sha256 for v in versions] == [expected_sha(first), expected_sha(second)]
    assert versions[0].object_key != versions[1].object_key
    for version, ds in zip(versions, (first, second), strict=True):
        blob = services.store.get(version.object_key)  # both objects kept, byte for byte
        assert blob[version.dataset_offset :] == dataset_bytes(ds)
        assert hashlib.sha256(blob[version.dataset_offset :]).hexdigest() == version.sha256
    assert preview_keys == [f"preview-{v.id}" for v in versions]
    summary = check_catalog(services)
    assert (summary.instances, summary.versions, summary.counted) == (1, 2, 1)
