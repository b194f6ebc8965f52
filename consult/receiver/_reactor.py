"""Event-driven reactors for the receiver's associations.

pynetdicom 3.0 polls. Each association runs two threads and both sleep between checks:
the DUL reactor sleeps 1 ms whenever it found nothing to do, and the association reactor
sleeps 1 ms before every look at its DIMSE queue. Every C-STORE pays for both: the
received dataset waits for the association thread's next look, and the response waits for
the DUL's next look (measured: about 1.5 ms of a bare SCP's 3.8 ms per 513 KiB CT
instance, and three thousand wake-ups a second per association while idle).

The two subclasses here wait for work instead:

- the DUL thread waits in ``poll`` on the peer's socket and a wake-up eventfd that every
  primitive the association hands it (a C-STORE response, a release, an abort) writes to;
- the association thread waits on an event set whenever the DUL queues a DIMSE message or
  an ACSE primitive for it, or ends;
- C-STORE responses are encoded directly (_responses.py), not through a pydicom Dataset.

Both still wake at least every ``_IDLE_WAIT`` seconds for what nothing signals (ARTIM and
idle timers, kills). Everything else, the state machine, PDU decoding and the checks of
each loop, is pynetdicom's own. Only the receiver's acceptor associations are upgraded
(:func:`upgrade`, from the server's request handler); associations we request as a
client are pynetdicom's unchanged. The version range in pyproject.toml pins the pynetdicom
internals this relies on; tests/test_receiver_reactor.py checks them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import RequestHandler

from consult.dicom.assoc_loop import install, serve_loop
from consult.receiver._responses import store_response_command

install()  # the requests we make on this process's other associations (assoc_loop.py)

log = logging.getLogger(__name__)

# Longest wait without a signal: bounds how late timers and kills are noticed.
_IDLE_WAIT = 0.05


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` after every put."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class EventDrivenDUL(DULServiceProvider):
    """The DUL provider, waiting on its socket and a wake-up socket instead of sleeping."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        # An eventfd: one descriptor, written by any thread, read (and reset) by ours.
        self._wake_fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_lock = threading.Lock()  # no write to the number once it is closed
        self.to_provider_queue = _WakingQueue(self.wake)

    def wake(self) -> None:
        """Make the reactor look at its queues now (safe from any thread, at any time)."""
        with self._wake_lock:
            if self._wake_fd is not None:
                os.eventfd_write(self._wake_fd, 1)

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if the connection is closed (state Sta1), as pynetdicom's does,
        but wake it rather than wait for its next look."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake()
        if threading.current_thread() is not self and self.is_alive():
            self.join()
        return True

    def _wait_for_work(self) -> None:
        """Wait until the peer sent something, a primitive was queued, or _IDLE_WAIT.
        poll(), not select(): descriptors past 1024 are common in a busy receiver."""
        wake_fd = self._wake_fd
        if wake_fd is None:
            return
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        assoc_socket = self.socket
        raw = assoc_socket.socket if assoc_socket is not None else None
        if raw is not None and assoc_socket is not None and assoc_socket._is_connected:
            pending = getattr(raw, "pending", None)  # TLS may hold decrypted bytes
            if pending is not None and pending():
                return
            try:
                poller.register(raw, select.POLLIN)
            except (OSError, ValueError):
                pass  # closed under us: the next loop's transport check reports it
        poller.poll(int(_IDLE_WAIT * 1000))
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(wake_fd)

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop, waiting for work where it would sleep and poll."""
        self._idle_timer.start()
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if self._kill_thread:
                    break
                # The ARTIM timer's event goes on the queue ahead of this loop's others.
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    # Either hand on one primitive from the user or read one PDU.
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    log.exception("DUL reactor failed; aborting the association")
                    self._abort_now()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    self._wait_for_work()
                    continue
                self.state_machine.do_action(event)
        finally:
            with self._wake_lock:
                if self._wake_fd is not None:
                    os.close(self._wake_fd)
                    self._wake_fd = None
            wake_assoc = getattr(self.assoc, "wake", None)
            if wake_assoc is not None:
                wake_assoc()  # it checks whether we are alive

    def _abort_now(self) -> None:
        """Send an A-ABORT outside the state machine (whose state can no longer be
        trusted) and stop both reactors, as pynetdicom's own loop does on an error."""
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class DirectResponseDIMSE(DIMSEServiceProvider):
    """The DIMSE provider, sending C-STORE responses encoded directly (_responses.py)."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        command = store_response_command(primitive)
        limit = self.maximum_pdu_size
        if (
            command is None
            or (limit and len(command) + 6 > limit)  # would need fragments: pynetdicom's way
            or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)  # someone wants the message
        ):
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        # Message control header 0x03: a command, and its last fragment (PS3.8 E.2).
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
        self.dul.send_pdu(pdata)


class EventDrivenAssociation(Association):
    """An acceptor association whose reactor waits for DIMSE messages instead of polling.

    Not constructed directly: :func:`upgrade` turns a configured acceptor into one.
    """

    _wake_event: threading.Event

    def wake(self) -> None:
        self._wake_event.set()

    def kill(self) -> None:
        self._wake_event.set()
        super().kill()

    def _run_reactor(self) -> None:
        """The association loop (consult/dicom/assoc_loop.py), waiting on an event where
        pynetdicom's sleeps 1 ms."""
        messages = self.dimse.msg_queue
        event = self._wake_event

        def wait() -> None:
            if messages.empty():
                event.wait(_IDLE_WAIT)
            event.clear()

        serve_loop(self, wait)


def upgrade(assoc: Association) -> Association:
    """Give a configured, not yet started acceptor association the event-driven reactors."""
    if assoc.is_alive() or not assoc.is_acceptor:
        raise ValueError("only a new acceptor association can be upgraded")
    old = assoc.dul
    dul = EventDrivenDUL(assoc)
    dul.socket = old.socket
    dul.event_queue = old.event_queue  # holds the "connection open" event (Evt5)
    assoc.dul = dul
    # The timers live on the DUL: apply the association's timeouts to the new one.
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout
    assoc.__class__ = EventDrivenAssociation
    assert isinstance(assoc, EventDrivenAssociation)
    assoc._wake_event = threading.Event()
    assoc.dimse = DirectResponseDIMSE(assoc)
    assoc.dimse.msg_queue = _WakingQueue(assoc.wake)
    dul.to_user_queue = _WakingQueue(assoc.wake)
    return assoc


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, building event-driven acceptor associations."""

    def _create_association(self) -> Association:
        return upgrade(super()._create_association())
