"""The catalog database: migrations, SQLite durability settings, transactions, failures."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from consult.catalog import Catalog, CatalogUnavailable, as_utc, insert_id, utcnow
from consult.catalog.tables import hospitals, metadata
from tests.support import free_port


def _tables(catalog: Catalog) -> set[str]:
    with catalog.read() as conn:
        return set(inspect(conn).get_table_names())


def _revision(catalog: Catalog) -> list[str]:
    with catalog.read() as conn:
        return [str(r) for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def _within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; fail unless it finishes before the deadline. Returns its error."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).exception(timeout=seconds)


def test_migrate_creates_every_table_and_is_idempotent(database_url: str) -> None:
    catalog = Catalog(database_url)
    try:
        catalog.migrate()
        first = _tables(catalog)
        catalog.migrate()
        assert _tables(catalog) == first
        assert set(metadata.tables) <= first
        assert first - set(metadata.tables) == {"alembic_version"}
        assert len(_revision(catalog)) == 1
    finally:
        catalog.dispose()


def test_migrated_columns_match_the_schema(catalog: Catalog) -> None:
    """The migrations and tables.py describe the same columns."""
    with catalog.read() as conn:
        inspector = inspect(conn)
        for table in metadata.sorted_tables:
            migrated = {c["name"] for c in inspector.get_columns(table.name)}
            assert migrated == set(table.columns.keys()), table.name


def test_sqlite_runs_wal_with_full_sync(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite3'}", busy_timeout_ms=4321)
    try:
        for open_transaction in (catalog.read, catalog.write):
            with open_transaction() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4321
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        catalog.dispose()


def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'new' / 'folder' / 'c.sqlite3'}")
    try:
        catalog.migrate()
        assert (tmp_path / "new" / "folder" / "c.sqlite3").is_file()
    finally:
        catalog.dispose()


def test_write_commits(catalog: Catalog) -> None:
    with catalog.write() as conn:
        pk = insert_id(conn, hospitals.insert().values(name="Kept", created_at=utcnow()))
    with catalog.read() as conn:
        assert conn.execute(select(hospitals.c.name).where(hospitals.c.id == pk)).scalar() == "Kept"


def test_write_rolls_back_on_error(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with catalog.write() as conn:
            conn.execute(hospitals.insert().values(name="Lost", created_at=utcnow()))
            raise RuntimeError("boom")
    with catalog.read() as conn:
        assert conn.execute(select(hospitals.c.id)).all() == []


def test_database_error_in_write_is_catalog_unavailable_and_rolls_back(catalog: Catalog) -> None:
    with pytest.raises(CatalogUnavailable):
        with catalog.write() as conn:
            conn.execute(hospitals.insert().values(name="Twice", created_at=utcnow()))
            conn.execute(hospitals.insert().values(name="Twice", created_at=utcnow()))
    with catalog.read() as conn:
        assert conn.execute(select(hospitals.c.id)).all() == []


def test_times_come_back_as_utc(catalog: Catalog) -> None:
    when = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    with catalog.write() as conn:
        pk = insert_id(conn, hospitals.insert().values(name="Clock", created_at=when))
    with catalog.read() as conn:
        stored = conn.execute(select(hospitals.c.created_at).where(hospitals.c.id == pk)).scalar()
    assert stored is not None
    assert as_utc(stored) == when
    assert as_utc(stored).utcoffset() == timedelta(0)
    assert utcnow().tzinfo is UTC


@pytest.mark.parametrize("operation", ["read", "write", "migrate"])
def test_unreachable_postgresql_fails_fast(operation: str) -> None:
    catalog = Catalog(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")

    def call() -> None:
        if operation == "migrate":
            catalog.migrate()
            return
        with getattr(catalog, operation)() as conn:
            conn.execute(text("SELECT 1"))

    try:
        error = _within(10, call)
    finally:
        catalog.dispose()
    assert isinstance(error, CatalogUnavailable), error
    assert error.status == 503


def test_concurrent_migrate_in_threads(database_url: str) -> None:
    catalogs = [Catalog(database_url) for _ in range(4)]
    barrier = threading.Barrier(len(catalogs))

    def migrate(catalog: Catalog) -> None:
        barrier.wait(timeout=30)
        catalog.migrate()

    try:
        with ThreadPoolExecutor(max_workers=len(catalogs)) as pool:
            for future in [pool.submit(migrate, c) for c in catalogs]:
                future.result(timeout=60)
        assert set(metadata.tables) <= _tables(catalogs[0])
        assert len(_revision(catalogs[0])) == 1
    finally:
        for catalog in catalogs:
            catalog.dispose()


def _migrate_in_child(url: str, barrier: threading.Barrier) -> None:
    barrier.wait(timeout=60)
    catalog = Catalog(url)
    catalog.migrate()
    catalog.dispose()


def test_concurrent_migrate_in_processes(database_url: str) -> None:
    """Several processes starting at once (serve, worker, receiver) all migrate safely."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(3)
    children = [
        spawn.Process(target=_migrate_in_child, args=(database_url, barrier)) for _ in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    codes = [child.exitcode for child in children]
    for child in children:
        if child.is_alive():
            child.kill()
            child.join()
    assert codes == [0, 0, 0]
    catalog = Catalog(database_url)
    try:
        assert set(metadata.tables) <= _tables(catalog)
        assert len(_revision(catalog)) == 1
    finally:
        catalog.dispose()
