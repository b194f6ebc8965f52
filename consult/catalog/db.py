"""The catalog database: engine set-up for SQLite and PostgreSQL, transactions, migrations.

SQLite runs in WAL mode with ``synchronous=FULL`` (NORMAL can lose the last commits on
power loss) and a busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so two
writers never deadlock upgrading a read lock. PostgreSQL gets a short connect timeout so a
dead database gives a quick failure (the C-STORE sender is told to retry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from consult.catalog._writelock import WriterLock
from consult.errors import Unavailable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


# Set in a connection's info by jobs.enqueue: this transaction queued a job.
JOBS_QUEUED = "consult.jobs_queued"


class CatalogUnavailable(Unavailable):
    """The catalog database could not be reached or refused the transaction."""

    public_message = "the service is busy or its database unreachable; try again shortly"


def utcnow() -> datetime:
    """The current time in UTC, as stored in the catalog."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Catalog:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite}
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000, "check_same_thread": False}
        else:
            kwargs["connect_args"] = {"connect_timeout": 3}
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 8
        self.engine: Engine = create_engine(self.url, **kwargs)
        self._lock_timeout = busy_timeout_ms / 1000
        self._write_lock: WriterLock | None = None
        # Called after a write transaction that queued a job has committed.
        self.after_jobs_queued: Callable[[], None] | None = None
        if self.is_sqlite:
            database = self.url.database
            on_disk = bool(database) and database != ":memory:"
            self._write_lock = WriterLock(f"{database}.write-lock" if on_disk else None)
        if self.is_sqlite:
            self._configure_sqlite(busy_timeout_ms)

    def _configure_sqlite(self, busy_timeout_ms: int) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("consult_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed on success, rolled back on error.

        When the transaction queued a job (``jobs.enqueue`` marks it), ``after_jobs_queued``
        runs once it has committed: the workers' doorbell (consult/jobs/doorbell.py).
        """
        queued = False
        with self._serialised_write() as conn:
            try:
                yield conn
                queued = bool(conn.info.get(JOBS_QUEUED, False))
            finally:
                conn.info.pop(JOBS_QUEUED, None)
        if queued and self.after_jobs_queued is not None:
            self.after_jobs_queued()

    @contextmanager
    def _serialised_write(self) -> Iterator[Connection]:
        """On SQLite the writers of all threads and processes queue on a lock first
        (_writelock.py): SQLite's own busy handler sleeps milliseconds between tries, so
        under concurrent writers transactions wait far longer than the lock is held, and
        one can starve past the timeout while the database is free most of the time.
        """
        if self._write_lock is None:
            with self._write() as conn:
                yield conn
            return
        if not self._write_lock.acquire(timeout=self._lock_timeout):
            raise CatalogUnavailable("catalog write failed: timed out waiting for the write lock")
        try:
            with self._write() as conn:
                yield conn
        finally:
            self._write_lock.release()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(consult_write=True) as conn:
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise CatalogUnavailable(f"catalog write failed: {type(exc).__name__}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (rolled back at the end)."""
        try:
            with self.engine.connect() as conn:
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise CatalogUnavailable(f"catalog read failed: {type(exc).__name__}") from exc

    def migrate(self) -> None:
        """Bring the schema up to date; serialised across processes.

        Raises :class:`CatalogUnavailable` when the database cannot be reached.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._sqlite_migration_lock():
            self._migrate(config)

    @contextmanager
    def _sqlite_migration_lock(self) -> Iterator[None]:
        """On SQLite, serialise migrations with a lock file beside the database. Its write
        lock alone is not enough: a brand-new file's first connections race to switch it
        to WAL, and one of them gets "database is locked" without waiting."""
        database = self.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            yield
            return
        import fcntl

        with open(f"{database}.migrate-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _migrate(self, config: Config) -> None:
        try:
            with self.engine.connect().execution_options(consult_write=True) as conn:
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_lock(7263510)"))
                    conn.commit()
                try:
                    with conn.begin():
                        config.attributes["connection"] = conn
                        command.upgrade(config, "head")
                finally:
                    if not self.is_sqlite and not conn.invalidated:
                        conn.execute(text("SELECT pg_advisory_unlock(7263510)"))
                        conn.commit()
        except SQLAlchemyError as exc:
            # No patient data in migrations: the first line of the error helps the operator.
            reason = (str(exc).splitlines() or [""])[0][:300]
            raise CatalogUnavailable(
                f"catalog migration failed: {type(exc).__name__}: {reason}"
            ) from exc

    def dispose(self) -> None:
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()


def insert_id(conn: Connection, stmt: Any, params: dict[str, Any] | None = None) -> int:
    """Run an INSERT (with ``params`` for a prebuilt one) and return the new row's key."""
    key = (
        conn.execute(stmt) if params is None else conn.execute(stmt, params)
    ).inserted_primary_key
    if key is None:  # pragma: no cover - every table has an integer key
        raise RuntimeError("insert returned no primary key")
    return int(key[0])
