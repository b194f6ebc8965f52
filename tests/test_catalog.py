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
from consult.catalog.tables import hospitals, metadata, patients
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


# --- the SQLite writers' lock ------------------------------------------------------------------


def _sqlite_catalog(tmp_path: Path, timeout_ms: int = 5000) -> Catalog:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite3'}", busy_timeout_ms=timeout_ms)
    catalog.migrate()
    return catalog


def test_sqlite_writer_held_elsewhere_times_out_then_passes(tmp_path: Path) -> None:
    """Another process's writer holding the lock file: a write waits at most the lock
    timeout, fails as CatalogUnavailable, and goes through once the lock is free."""
    import fcntl
    import time

    catalog = _sqlite_catalog(tmp_path, timeout_ms=300)
    try:
        with open(f"{tmp_path / 'catalog.sqlite3'}.write-lock", "a") as other:
            fcntl.flock(other, fcntl.LOCK_EX)  # a separate open file: as another process
            began = time.monotonic()
            with pytest.raises(CatalogUnavailable, match="write lock"):
                with catalog.write() as conn:
                    conn.execute(hospitals.insert().values(name="Blocked", created_at=utcnow()))
            assert 0.25 <= time.monotonic() - began < 3
            fcntl.flock(other, fcntl.LOCK_UN)
        with catalog.write() as conn:
            conn.execute(hospitals.insert().values(name="After", created_at=utcnow()))
        with catalog.read() as conn:
            names = list(conn.execute(select(hospitals.c.name)).scalars())
        assert names == ["After"]
    finally:
        catalog.dispose()


def test_writer_lock_is_reentrant_and_holds_the_file_until_the_outermost_release(
    tmp_path: Path,
) -> None:
    import fcntl

    from consult.catalog._writelock import WriterLock

    path = str(tmp_path / "lock")
    lock = WriterLock(path)

    def held_elsewhere() -> bool:
        with open(path, "a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
            return False

    try:
        assert lock.acquire(timeout=1)
        assert lock.acquire(timeout=1)
        lock.release()
        assert held_elsewhere()
        # Another thread waits for the outermost release, and times out before it.
        results: list[bool] = []
        other = threading.Thread(target=lambda: results.append(lock.acquire(timeout=0.2)))
        other.start()
        other.join()
        assert results == [False]
        lock.release()
        assert not held_elsewhere()
    finally:
        lock.close()


def _add_hospitals(url: str, prefix: str, count: int) -> None:
    catalog = Catalog(url)
    try:
        for i in range(count):
            with catalog.write() as conn:
                conn.execute(hospitals.insert().values(name=f"{prefix}-{i}", created_at=utcnow()))
    finally:
        catalog.dispose()


def test_sqlite_writers_in_several_processes_all_commit(tmp_path: Path) -> None:
    """Four processes x 50 write transactions at once: every one commits, none times out."""
    catalog = _sqlite_catalog(tmp_path)
    url = str(catalog.url)
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=_add_hospitals, args=(url, f"p{n}", 50)) for n in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    try:
        assert [child.exitcode for child in children] == [0, 0, 0, 0]
        with catalog.read() as conn:
            names = set(conn.execute(select(hospitals.c.name)).scalars())
        assert names == {f"p{n}-{i}" for n in range(4) for i in range(50)}
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
        catalog.dispose()


# --- statements on the DB-API cursor (the ingest hot path) ---------------------------------


def test_driver_statements_match_core(catalog: Catalog) -> None:
    """Insert, update and select through DriverStatement store and read back what Core
    does (timestamps included), inside the caller's transaction."""
    from sqlalchemy import bindparam, update

    from consult.catalog.driver import DriverStatement

    insert = DriverStatement(hospitals.insert().returning(hospitals.c.id))
    rename = DriverStatement(
        update(hospitals)
        .where(hospitals.c.id == bindparam("b_id"))
        .values(name=hospitals.c.name + "-renamed", created_at=bindparam("b_at"))
    )
    find = DriverStatement(
        select(hospitals.c.id, hospitals.c.created_at).where(hospitals.c.name == bindparam("b"))
    )
    at = datetime(2026, 11, 29, 10, 11, 12, 345678, tzinfo=UTC)
    later = at + timedelta(hours=1)
    with catalog.write() as conn:
        first = insert.scalar(conn, {"name": "Direct", "created_at": at})
        second = insert.scalar(conn, {"name": "Other", "created_at": at})
        assert second == first + 1
        assert rename.execute(conn, {"b_id": first, "b_at": later}) == 1
        assert find.first(conn, {"b": "Nothing"}) is None
    with catalog.read() as conn:
        rows = {r.name: as_utc(r.created_at) for r in conn.execute(select(hospitals))}
        assert rows == {"Direct-renamed": later, "Other": at}
        row = find.first(conn, {"b": "Other"})  # DB-API values, not converted by Core
        assert row is not None and row[0] == second
    with pytest.raises(CatalogUnavailable):
        with catalog.write() as conn:
            insert.scalar(conn, {"name": "Rolled back", "created_at": at})
            insert.scalar(conn, {"name": "Other", "created_at": at})  # unique name
    with catalog.read() as conn:
        assert conn.execute(select(hospitals.c.name)).scalars().all().count("Rolled back") == 0


def test_driver_statement_errors_are_sqlalchemy_errors(catalog: Catalog) -> None:
    from sqlalchemy.exc import IntegrityError

    from consult.catalog.driver import DriverStatement

    insert = DriverStatement(hospitals.insert().returning(hospitals.c.id))
    with catalog.engine.connect() as conn:
        with conn.begin():
            insert.scalar(conn, {"name": "Twice", "created_at": utcnow()})
        with pytest.raises(IntegrityError):
            with conn.begin():
                insert.scalar(conn, {"name": "Twice", "created_at": utcnow()})
    # A column whose Python-side default Core would fill in: refused, not left NULL.
    with pytest.raises(ValueError, match="no value for parameter 'name'"):
        with catalog.write() as conn:
            DriverStatement(patients.insert()).execute(
                conn, {"hospital_id": 1, "patient_id": "P", "issuer": "", "birth_date": ""}
            )
