"""The association reactor loop, with pynetdicom 3.0's pause race fixed.

While a thread sends a request on an association (``send_c_echo``, ``send_c_store``, our
``consult send``), pynetdicom pauses the association's reactor so that the reactor does
not take the response off the DIMSE queue: the sender clears a checkpoint, waits until the
reactor says it is paused, sends, and waits for the response. But the reactor raises its
"paused" flag *before* it passes the checkpoint and lowers it after: a sender that clears
the checkpoint just after the reactor passed it still sees the flag up, sends at once, and
the reactor goes on to take a message off the queue. Against a peer that answers within
microseconds (dcmtk's storescp, our own receiver) it now and then takes the response, and
the sender waits out its DIMSE timeout (30 s) and reports a failure.

:func:`serve_loop` is pynetdicom's loop with one more look at the checkpoint after the flag
is lowered: once a send has begun, the queue is left to the sender. :func:`install` makes
it every association's loop in this process (our receiver's associations run it through
their own subclass, consult/receiver/_reactor.py). The loop's other checks are pynetdicom's:
a release or abort from the peer, the DUL's end, the network timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association

# Where pynetdicom logs association events (quiet unless pynetdicom's log is on).
assoc_log = logging.getLogger("pynetdicom.assoc")


def serve_loop(assoc: Any, wait: Callable[[], None]) -> None:
    """Serve ``assoc``'s DIMSE requests until it ends; ``wait()`` until there may be work."""
    assoc._is_paused = False
    checkpoint = assoc._reactor_checkpoint
    while not assoc._kill:
        wait()
        # A thread sending a request pauses us here until it has its response.
        assoc._is_paused = True
        checkpoint.wait()
        assoc._is_paused = False
        if not checkpoint.is_set():
            continue  # a send began after we passed: the next message is its response

        context_id, msg = assoc.dimse.get_msg(block=False)
        if msg:
            assoc._serve_request(msg, int(context_id or 0))

        if assoc.is_established and assoc.acse.is_release_requested():
            assoc.acse.send_release(is_response=True)
            assoc_log.info("Association Released")
            assoc.is_released = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.kill()
            return

        if assoc.acse.is_aborted():
            assoc_log.info(
                "Association Aborted%s",
                " (A-P-ABORT)" if assoc.acse.is_aborted("a-p-abort") else "",
            )
            assoc.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return

        if not assoc.dul.is_alive():
            assoc.kill()
            return

        if assoc.dul.idle_timer_expired():
            assoc_log.error("Network timeout reached")
            if assoc.network_timeout_response == "A-RELEASE":
                assoc._is_paused = True
                checkpoint.wait()
                assoc.release()
                assoc._is_paused = False
            else:
                assoc.abort()
            assoc.kill()
            return


def _poll() -> None:
    time.sleep(0.001)  # pynetdicom's own pace, for associations whose DUL polls


def _run_reactor(self: Association) -> None:
    serve_loop(self, _poll)


def install() -> None:
    """Make :func:`serve_loop` the loop of every pynetdicom association in this process."""
    Association._run_reactor = _run_reactor  # type: ignore[method-assign]
