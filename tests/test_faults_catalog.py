"""The catalog locked or unreachable: C-STOREs get 0xA700 within seconds, nothing is
indexed that was not confirmed, and sending again once the catalog is back succeeds.

The receiver runs with the production wiring (``Services.open``): the SQLite busy timeout
and the PostgreSQL ``lock_timeout`` on the ingest path both come from
``CONSULT_CATALOG_LOCK_TIMEOUT`` (3 s by default). PostgreSQL is reached through a TCP
proxy that the test cuts, as a database host that goes away would be."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from consult.catalog import Catalog
from consult.services import Services
from consult.settings import Settings
from tests.fault_support import (
    OUR_AE,
    SENDER_AE,
    TS,
    Sender,
    assert_one_set,
    check_catalog,
    make_study,
    register_sender,
    running_receiver,
    send_all,
)
from tests.tcpproxy import CutMode, TcpProxy

LOCK_TIMEOUT = Settings().catalog_lock_timeout  # the production default
FAIL_WITHIN = LOCK_TIMEOUT + 2.5  # seconds for each 0xA700 to reach the sender

PG_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _is_a700(status: int | None) -> bool:
    return status is not None and 0xA700 <= status <= 0xA7FF


@pytest.fixture
def services(settings: Settings, database_url: str) -> Iterator[Services]:
    svc = Services.open(settings.model_copy(update={"database_url": database_url}))
    register_sender(svc)
    yield svc
    svc.close()


class _Lock:
    """Another client holding the catalog's write lock: ``BEGIN EXCLUSIVE`` on SQLite,
    ``LOCK TABLE instances IN EXCLUSIVE MODE`` on PostgreSQL (reads still pass)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self._sqlite: sqlite3.Connection | None = None
        self._engine = None
        if parsed.get_backend_name() == "sqlite":
            assert parsed.database
            self._sqlite = sqlite3.connect(parsed.database, isolation_level=None)
            self._sqlite.execute("BEGIN EXCLUSIVE")
        else:
            self._engine = create_engine(url)
            self._conn = self._engine.connect()
            self._conn.begin()
            self._conn.execute(text("LOCK TABLE instances IN EXCLUSIVE MODE"))

    def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.rollback()
            self._sqlite.close()
        else:
            assert self._engine is not None
            self._conn.rollback()
            self._conn.close()
            self._engine.dispose()


def test_locked_catalog_gives_a700_quickly_then_succeeds(
    services: Services, database_url: str
) -> None:
    study = make_study(3, seed="locked-catalog")
    with running_receiver(services) as port, Sender(port) as sender:
        assert sender.send(study[0]).status == 0x0000
        lock = _Lock(database_url)
        try:
            during = sender.send(study[1])
            # New associations are still accepted (registered peers are looked up with a
            # read, which the lock does not block).
            with Sender(port):
                pass
            indexed = check_catalog(services).uids
        finally:
            lock.release()
        assert _is_a700(during.status), during
        assert during.seconds < FAIL_WITHIN, during
        assert indexed == {str(study[0].SOPInstanceUID)}
        retry = [sender.send(ds) for ds in study]
    assert [s.status for s in retry] == [0x0000] * 3, retry
    assert_one_set(check_catalog(services), study)


@PG_ONLY
@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_postgresql_unreachable_gives_a700_quickly_then_succeeds(
    settings: Settings, database_url: str, mode: CutMode
) -> None:
    url = make_url(database_url)
    assert url.host and url.port
    direct = Catalog(database_url)
    with TcpProxy(url.host, url.port, lifetime=120) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        services = Services.open(
            settings.model_copy(
                update={"database_url": proxied.render_as_string(hide_password=False)}
            )
        )
        register_sender(services)
        checker = Services(settings=settings, catalog=direct, store=services.store)
        study = make_study(3, seed=f"pg-unreachable-{mode}")
        try:
            with running_receiver(services) as port:
                with Sender(port) as sender:
                    assert sender.send(study[0]).status == 0x0000
                    proxy.cut(mode)
                    during = sender.send(study[1])
                # A new association while the catalog is away: refused as transient.
                started = time.monotonic()
                rejected = _associate(port)
                refused_after = time.monotonic() - started
                assert _is_a700(during.status), during
                assert during.seconds < FAIL_WITHIN, during
                # Rejected transient, service provider (presentation), temporary congestion.
                assert rejected == (2, 3, 1), rejected
                assert refused_after < FAIL_WITHIN
                assert check_catalog(checker).uids == {str(study[0].SOPInstanceUID)}

                proxy.restore()
                retry = send_all(port, study)
            assert [s.status for s in retry] == [0x0000] * 3, retry
            assert_one_set(check_catalog(checker), study)
        finally:
            services.close()
            direct.dispose()


@PG_ONLY
def test_postgresql_backends_terminated_mid_association_recover(
    services: Services, database_url: str
) -> None:
    """The catalog's connections are killed (failover, restart): the next C-STORE
    reconnects (pool pre-ping) instead of failing."""
    study = make_study(3, seed="pg-terminated")
    name = make_url(database_url).database
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with running_receiver(services) as port, Sender(port) as sender:
            assert sender.send(study[0]).status == 0x0000
            with admin.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                ).scalar_one()
            assert killed >= 1
            rest = [sender.send(ds) for ds in study[1:]]
        assert [s.status for s in rest] == [0x0000] * 2, rest
        assert_one_set(check_catalog(services), study)
    finally:
        admin.dispose()


def _associate(port: int) -> tuple[int, int, int] | None:
    """Request an association; the (result, source, reason) of a rejection, else None."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=SENDER_AE)
    ae.acse_timeout = 15
    ae.add_requested_context(CTImageStorage, TS)
    assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE)
    if assoc.is_established:
        assoc.release()
        return None
    if not assoc.is_rejected:
        raise AssertionError("association neither established nor rejected (aborted?)")
    rj: Any = assoc.acceptor.primitive
    return (int(rj.result), int(rj.result_source), int(rj.diagnostic))
