"""Our side of the associations we request: `consult send` and opinion delivery."""

from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger(__name__)


def new_ae(calling_ae: str, timeout: float) -> Any:
    """A pynetdicom AE for requesting associations, every timeout set to ``timeout``."""
    from pynetdicom import AE

    from consult.dicom import assoc_loop

    assoc_loop.install()  # pynetdicom's reactor can take our response (assoc_loop.py)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def no_delay(assoc: Any) -> None:
    """Turn Nagle's algorithm off: pynetdicom leaves it on, and a C-STORE's dataset PDU then
    waits for the peer's delayed ACK of the command PDU (about 40 ms per instance)."""
    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # pragma: no cover - no socket (closed) or no TCP
        log.debug("could not set TCP_NODELAY")
