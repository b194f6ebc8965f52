"""A faster read, and a readiness check without select()'s limit, for pynetdicom's
association sockets.

pynetdicom 3.0 reads every PDU 4 KiB at a time into a growing bytearray: about 130
``recv`` calls and copies for a 525 KB CT instance. Reading straight into a buffer of the
PDU's size with ``recv_into`` returns the same bytes with a few calls.

It asks whether a socket has data with ``select()``, which refuses descriptors numbered
1024 or more; pynetdicom takes that refusal for a closed connection and drops the
association. A receiver with a few hundred associations and the files it writes gets
there. ``poll()`` has no such limit.

Installed once by the receiver (it applies to the process's pynetdicom sockets).
"""

from __future__ import annotations

import select
import ssl
from typing import Any

from pynetdicom.transport import AssociationSocket


def _recv(self: Any, nr_bytes: int) -> bytearray:
    """Read ``nr_bytes`` (fewer only if the peer closed the connection), as pynetdicom's
    ``AssociationSocket.recv`` does."""
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    got = 0
    try:
        while got < nr_bytes:
            n = self.socket.recv_into(view[got:], nr_bytes - got)
            if n == 0:  # connection closed: what we have so far
                break
            got += n
    finally:
        view.release()
    if got < nr_bytes:
        del buffer[got:]
    return buffer


def readable(sock: Any, timeout: float) -> bool:
    """Whether ``sock`` has data (or end of file) within ``timeout`` seconds, by poll()."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def _ready(self: Any) -> bool:
    """pynetdicom's ``AssociationSocket.ready`` with poll() for select()."""
    if self.socket is None or self._is_connected is False:
        return False
    try:
        ready = readable(self.socket, 0)
    except (OSError, ValueError):
        self.event_queue.put("Evt17")  # the transport connection is closed
        return False
    if isinstance(self.socket, ssl.SSLSocket):  # may hold decrypted bytes poll cannot see
        return ready or bool(self.socket.pending())
    return ready


def install() -> None:
    """Use the faster read and the poll()-based readiness check for every pynetdicom
    association socket of this process."""
    AssociationSocket.recv = _recv  # type: ignore[method-assign]
    AssociationSocket.ready = property(_ready)  # type: ignore[method-assign,assignment]
