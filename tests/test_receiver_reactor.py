"""The receiver's event-driven association reactors (consult/receiver/_reactor.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler

from consult import directory
from consult.receiver import Receiver
from consult.receiver._reactor import EventDrivenAssociation, EventDrivenDUL, upgrade
from consult.services import Services
from consult.settings import Settings
from tests.support import wait_until


@pytest.fixture
def receiver(settings: Settings) -> Iterator[Receiver]:
    svc = Services.open(settings)
    with svc.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Referring")
        directory.add_peer(conn, hospital, "REFPACS", "127.0.0.1")
    rx = Receiver(svc)
    rx.start()
    yield rx
    rx.stop()
    svc.close()


def _port(rx: Receiver) -> int:
    return int(rx._server.server_address[1])


def _associate(rx: Receiver) -> Any:
    ae = AE(ae_title="REFPACS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", _port(rx), ae_title="CONSULT")
    assert assoc.is_established
    return assoc


def _served(rx: Receiver) -> list[Any]:
    return list(rx._server.active_associations)


def test_acceptor_associations_are_event_driven(receiver: Receiver) -> None:
    assoc = _associate(receiver)
    try:
        served = _served(receiver)
        assert len(served) == 1
        assert isinstance(served[0], EventDrivenAssociation)
        assert isinstance(served[0].dul, EventDrivenDUL)
        # Our own end of the association (a requestor) is pynetdicom's, unchanged.
        assert type(assoc) is Association
        assert type(assoc.dul) is DULServiceProvider
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released
    wait_until(lambda: not _served(receiver), timeout=5)


def test_no_wakeup_is_lost(receiver: Receiver) -> None:
    """Every request wakes the association thread and every response the DUL thread: a
    lost wake-up costs a 50 ms wait, 400 of them 20 s; pynetdicom's polling needs about
    2 ms per echo, waking on events far less."""
    assoc = _associate(receiver)
    began = time.monotonic()
    try:
        statuses = [assoc.send_c_echo().Status for _ in range(400)]
    finally:
        assoc.release()
    assert statuses == [0x0000] * 400
    assert time.monotonic() - began < 10
    wait_until(lambda: not _served(receiver), timeout=5)


def test_abort_ends_the_association(receiver: Receiver) -> None:
    assoc = _associate(receiver)
    served = _served(receiver)[0]
    assoc.abort()
    wait_until(lambda: not served.is_alive() and not served.dul.is_alive(), timeout=5)
    assert served.is_aborted


def test_dropped_connection_ends_the_association(receiver: Receiver) -> None:
    assoc = _associate(receiver)
    served = _served(receiver)[0]
    assoc.dul.socket.socket.close()  # the peer vanishes without A-RELEASE or A-ABORT
    wait_until(lambda: not served.is_alive() and not served.dul.is_alive(), timeout=5)
    assoc.kill()


def test_only_new_acceptors_are_upgraded() -> None:
    ae = AE(ae_title="REFPACS")
    requestor = Association(ae, "requestor")
    with pytest.raises(ValueError, match="only a new acceptor"):
        upgrade(requestor)


def test_pynetdicom_internals_we_rely_on() -> None:
    """_reactor.py drives these pynetdicom 3.0 internals; a new pynetdicom must keep them
    (pyproject.toml pins the minor version)."""
    for name in (
        "_process_recv_primitive",
        "_is_transport_event",
        "idle_timer_expired",
        "receive_pdu",
        "stop_dul",
        "kill_dul",
    ):
        assert callable(getattr(DULServiceProvider, name)), name
    dul = DULServiceProvider(Association(AE(), "acceptor"))
    for attr in ("_idle_timer", "artim_timer", "state_machine", "event_queue", "_kill_thread"):
        assert hasattr(dul, attr), attr
    for name in ("_serve_request", "_run_reactor", "kill", "release", "abort"):
        assert callable(getattr(Association, name)), name
    assoc = Association(AE(), "acceptor")
    for attr in ("_reactor_checkpoint", "_dul_ready", "dimse", "acse", "_kill"):
        assert hasattr(assoc, attr), attr
    assert hasattr(assoc.dimse, "msg_queue")
    assert callable(RequestHandler._create_association)
