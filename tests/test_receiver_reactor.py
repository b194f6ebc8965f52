"""The receiver's event-driven association reactors (consult/receiver/_reactor.py)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler
from sqlalchemy import func, select

from consult.catalog.tables import instances
from consult.dicom import assoc_loop
from consult.dicom.assoc_loop import serve_loop
from consult.dicom.synthetic import demo_study, write_part10
from consult.receiver import Receiver
from consult.receiver._reactor import (
    DirectResponseDIMSE,
    EventDrivenAssociation,
    EventDrivenDUL,
    upgrade,
)
from consult.receiver._responses import store_response_command
from consult.settings import Settings
from tests.support import referring_services, storescu, wait_until


@pytest.fixture
def receiver(settings: Settings) -> Iterator[Receiver]:
    with referring_services(settings) as svc:
        rx = Receiver(svc)
        rx.start()
        yield rx
        rx.stop()


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
        assert isinstance(served[0].dimse, DirectResponseDIMSE)
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


def _pynetdicom_command(primitive: Any) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return bytes(encoded)


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC210, 0xC001, 0xB000])
@pytest.mark.parametrize("comment", [None, "", "odd", "even", "storage unavailable, retry"])
@pytest.mark.parametrize(
    "instance_uid", ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.8.498." + "9" * 37, None]
)
def test_direct_store_responses_match_pynetdicom(
    status: int, comment: str | None, instance_uid: str | None
) -> None:
    primitive: Any = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    if instance_uid is not None:
        primitive.AffectedSOPInstanceUID = instance_uid
    primitive.Status = status
    primitive.ErrorComment = comment
    assert store_response_command(primitive) == _pynetdicom_command(primitive)


def test_direct_store_responses_leave_the_rest_to_pynetdicom() -> None:
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    assert store_response_command(request) is None  # a request, not a response
    response: Any = C_STORE()
    response.MessageIDBeingRespondedTo = 7
    response.Status = 0xA900
    response.OffendingElement = [0x00100010]
    assert store_response_command(response) is None
    response.OffendingElement = None
    response.ErrorComment = "Zürich"  # not ASCII: pydicom's character sets decide
    assert store_response_command(response) is None
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 1
    echo.Status = 0
    assert store_response_command(echo) is None


class _Stop(Exception):
    pass


class _ClearedOncePassed(threading.Event):
    """A checkpoint that a sender clears just after the reactor passed it."""

    def wait(self, timeout: float | None = None) -> bool:
        passed = super().wait(timeout)
        self.clear()
        return passed


@pytest.mark.parametrize("sender_cleared_after_the_pass", [True, False])
def test_the_reactor_leaves_a_senders_response_alone(sender_cleared_after_the_pass: bool) -> None:
    """pynetdicom's race (consult/dicom/assoc_loop.py): a send that begins just after the reactor
    passed its checkpoint. The response on the queue stays for the sender; without a send
    in progress the reactor serves the queue as usual."""
    assoc: Any = Association(AE(), "requestor")
    if sender_cleared_after_the_pass:
        assoc._reactor_checkpoint = _ClearedOncePassed()
        assoc._reactor_checkpoint.set()
    response = (1, object())
    assoc.dimse.msg_queue.put(response)
    served: list[Any] = []
    assoc._serve_request = lambda msg, context_id: served.append(msg)
    calls = iter(range(2))

    def wait() -> None:
        if next(calls) == 1:
            raise _Stop

    # Stops at its second wait, or after the first pass (no DUL thread runs here).
    with contextlib.suppress(_Stop):
        serve_loop(assoc, wait)
    if sender_cleared_after_the_pass:
        assert served == [] and assoc.dimse.msg_queue.get_nowait() is response
    else:
        assert served == [response[1]] and assoc.dimse.msg_queue.empty()


def test_every_association_runs_the_fixed_loop() -> None:
    assert Association._run_reactor is assoc_loop._run_reactor


def test_descriptors_past_1024_do_not_drop_associations(settings: Settings, tmp_path: Path) -> None:
    """select() refuses descriptors numbered 1024 or more, and pynetdicom took that for a
    closed connection: a busy receiver (hundreds of associations, the files it writes)
    dropped every new association. Ours polls."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted + 100:
        pytest.skip(f"the descriptor limit ({hard}) is below {wanted + 100}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted + 100), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(wanted)]
    try:
        assert max(filler) >= 1024
        with referring_services(settings) as svc:
            rx = Receiver(svc)
            port = rx.start()
            try:
                ds, ts = demo_study()[0]
                path = tmp_path / "one.dcm"
                write_part10(ds, ts, path)
                result = storescu(port, path)
                assert result.returncode == 0, result.stderr
            finally:
                rx.stop()
            with svc.catalog.read() as conn:
                assert conn.execute(select(func.count()).select_from(instances)).scalar() == 1
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
