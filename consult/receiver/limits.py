"""Connection admission for the DICOM receiver: idle sockets must not lock senders out.

pynetdicom starts an association thread for every accepted TCP connection and counts it
against ``maximum_associations`` until an A-ASSOCIATE-RQ arrives or ``acse_timeout`` fires;
with its defaults, eleven idle sockets block every sender for 30 s (measured). Here each
peer address may hold at most ``per_peer`` connections. When a peer is at its limit, a new
connection evicts that peer's oldest connection that has not even sent an association
request yet (a real sender retrying behind its own stale sockets gets through); if all of
them are in real associations, the new connection is refused (closed at once).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class _Conn:
    sock: socket.socket
    opened: float
    associated: bool = False


@dataclass
class ConnectionGuard:
    per_peer: int
    _conns: dict[str, dict[int, _Conn]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, sock: socket.socket, address: tuple[str, int]) -> bool:
        """Called on the accept thread for each new connection; False closes it."""
        host, port = str(address[0]), int(address[1])
        with self._lock:
            conns = self._conns.setdefault(host, {})
            for key in [k for k, c in conns.items() if c.sock.fileno() == -1]:
                del conns[key]  # closed since (association ended, or timed out)
            if len(conns) >= self.per_peer:
                idle = [(c.opened, k) for k, c in conns.items() if not c.associated]
                if not idle:
                    log.warning(
                        "refused connection from %s: %d associations open", host, len(conns)
                    )
                    return False
                _, oldest = min(idle)
                victim = conns.pop(oldest)
                log.warning("closing idle connection %s:%d to admit a new one", host, oldest)
                try:
                    victim.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            conns[port] = _Conn(sock=sock, opened=time.monotonic())
        return True

    def associated(self, host: str, port: int) -> None:
        """The connection sent an A-ASSOCIATE-RQ: it is a real association now."""
        with self._lock:
            conn = self._conns.get(host, {}).get(port)
            if conn is not None:
                conn.associated = True

    def open_connections(self, host: str) -> int:
        with self._lock:
            return sum(1 for c in self._conns.get(host, {}).values() if c.sock.fileno() != -1)
