"""The S3 endpoint goes away in the middle of an association: the sender is told to retry
(0xA700, within seconds), nothing half-stored shows, and its retry after the outage stores
every instance exactly once, byte for byte. moto's server sits behind a TCP proxy that the
test cuts and restores (restarting moto would lose its data)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from consult.catalog import Catalog
from consult.dicom.part10 import split_part10
from consult.services import Services, open_store
from consult.settings import Settings
from storage import S3ObjectStore
from tests.fault_support import (
    Sender,
    assert_one_set,
    check_catalog,
    expected_sha,
    make_study,
    register_sender,
    running_receiver,
    send_all,
)
from tests.tcpproxy import CutMode, TcpProxy

# Short client timeouts for the test: connect 1 s, read 2 s, one attempt.
FAIL_WITHIN = 5.0  # seconds for each 0xA700 to reach the sender


def _s3(endpoint: str, bucket: str, **timeouts: float) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint=endpoint,
        bucket=bucket,
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        **timeouts,  # type: ignore[arg-type]
    )


@pytest.fixture
def moto_proxy(moto_endpoint: str) -> Iterator[TcpProxy]:
    target = urlsplit(moto_endpoint)
    assert target.hostname and target.port
    with TcpProxy(target.hostname, target.port, lifetime=120) as proxy:
        yield proxy


def _assert_bucket_intact(store: S3ObjectStore) -> None:
    """Every object under originals/ holds the dataset its key's SHA-256 names."""
    import hashlib

    for info in store.list("originals/"):
        blob = store.get(info.key)
        _meta, offset = split_part10(blob)
        assert info.key.endswith(hashlib.sha256(blob[offset:]).hexdigest() + ".dcm"), info.key


# A refused endpoint on both catalogs; the blackhole (seconds per status) on SQLite only.
@pytest.mark.parametrize(
    ("database_url", "mode"),
    [("sqlite", "refuse"), ("postgresql", "refuse"), ("sqlite", "blackhole")],
    indirect=["database_url"],
)
def test_s3_outage_mid_association_fails_fast_and_retry_completes(
    settings: Settings,
    catalog: Catalog,
    moto_endpoint: str,
    moto_proxy: TcpProxy,
    mode: CutMode,
) -> None:
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    through_proxy = _s3(
        f"http://127.0.0.1:{moto_proxy.port}",
        bucket,
        connect_timeout=1.0,
        read_timeout=2.0,
        attempts=1,
    )
    through_proxy.ensure_bucket()
    direct = _s3(moto_endpoint, bucket)  # what is really there, seen past the proxy
    services = Services(settings=settings, catalog=catalog, store=through_proxy)
    check = Services(settings=settings, catalog=catalog, store=direct)
    register_sender(services)
    study = make_study(5, seed=f"s3-outage-{mode}")
    try:
        with running_receiver(services) as port:
            with Sender(port) as sender:
                before = [sender.send(ds) for ds in study[:3]]
                assert [s.status for s in before] == [0x0000] * 3
                moto_proxy.cut(mode)
                during = [sender.send(ds) for ds in study[3:]]
            for sent in during:
                assert sent.status is not None and 0xA700 <= sent.status <= 0xA7FF, sent
                assert sent.seconds < FAIL_WITHIN, sent
            # Only what was confirmed is indexed, and the indexed objects are whole.
            summary = check_catalog(check)
            assert summary.uids == {s.sop_instance_uid for s in before}
            assert summary.versions == 3
            _assert_bucket_intact(direct)

            moto_proxy.restore()
            retry = send_all(port, study)  # the sender's retry: everything again
        assert [s.status for s in retry] == [0x0000] * len(study), retry
        assert_one_set(check_catalog(check), study)
        with catalog.read() as conn:
            from sqlalchemy import select

            from consult.catalog.tables import instance_versions, instances

            shas = dict(
                conn.execute(
                    select(instances.c.sop_instance_uid, instance_versions.c.sha256).join(
                        instance_versions, instance_versions.c.instance_pk == instances.c.id
                    )
                ).all()
            )
        assert shas == {str(ds.SOPInstanceUID): expected_sha(ds) for ds in study}
        _assert_bucket_intact(direct)
        assert sum(1 for _ in direct.list("originals/")) == len(study)
    finally:
        through_proxy.close()
        direct.close()


def test_production_s3_timeouts_are_short(moto_endpoint: str, settings: Settings) -> None:
    """The receiver's defaults bound a C-STORE during an outage to about
    attempts x (connect or read timeout) + backoff: well under a sender's patience."""
    store = open_store(
        settings.model_copy(
            update={
                "s3_endpoint": moto_endpoint,
                "s3_bucket": f"defaults-{uuid.uuid4().hex[:12]}",
                "s3_access_key": "testing",
                "s3_secret_key": "testing",
            }
        )
    )
    assert isinstance(store, S3ObjectStore)
    try:
        config: Any = store.client.meta.config
        assert config.retries is not None
        attempts = config.retries["total_max_attempts"]
        # Each attempt of a PUT to an endpoint that accepts but never answers: botocore
        # waits up to 1 s for "100 Continue", then the read timeout; then up to 1 s of
        # backoff before the next attempt (measured with the test's timeouts above).
        worst = attempts * (1 + max(config.connect_timeout, config.read_timeout)) + attempts - 1
        assert worst < 10, f"a C-STORE could wait {worst} s for its 0xA700"
    finally:
        store.close()
