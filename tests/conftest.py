"""Fixtures: settings on temporary folders, a catalog on SQLite and PostgreSQL, object stores
on a local folder and on moto's S3 server over HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from consult.catalog import Catalog
from consult.settings import Settings
from storage import LocalObjectStore, ObjectStore, S3ObjectStore
from tests.support import IN_CI, free_port

PG_URL = os.environ.get("CONSULT_TEST_DATABASE_URL", "")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a temporary data folder; ports 0 (the OS picks)."""
    return Settings(
        data_dir=tmp_path / "data",
        dicom_host="127.0.0.1",
        dicom_port=0,
        http_port=0,
        stable_seconds=0,
    )


def _backends() -> list[str]:
    return ["sqlite", "postgresql"]


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty catalog database: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
        return
    if not PG_URL:
        if IN_CI:
            pytest.fail("CONSULT_TEST_DATABASE_URL must be set in CI")
        pytest.skip("PostgreSQL not configured (set CONSULT_TEST_DATABASE_URL)")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"consult_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def catalog(database_url: str) -> Iterator[Catalog]:
    cat = Catalog(database_url)
    cat.migrate()
    yield cat
    cat.dispose()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server, threaded, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def make_s3_store(endpoint: str) -> S3ObjectStore:
    store = S3ObjectStore(
        endpoint=endpoint,
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
    )
    store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """An empty object store: a local folder, or a fresh bucket on moto's S3 server."""
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    s3 = make_s3_store(request.getfixturevalue("moto_endpoint"))
    yield s3
    s3.close()
