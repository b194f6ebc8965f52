"""Builds the application entity and runs the non-blocking SCP.

One receiver process is CPU-bound near one core (pynetdicom decodes PDUs in Python under
the GIL), so ``consult receive`` scales by running several processes on one port: they
accept from one listening socket their parent made, the least busy first.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from consult.receiver import _socket
from consult.receiver._reactor import EventDrivenRequestHandler
from consult.receiver.handlers import StoreHandlers
from consult.receiver.limits import ConnectionGuard
from consult.services import Services

log = logging.getLogger(__name__)


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with per-peer admission, optionally on a listening
    socket that several receiver processes share."""

    def __init__(
        self, *args: Any, guard: ConnectionGuard, listen_socket: socket.socket | None, **kwargs: Any
    ) -> None:
        self.guard = guard
        self.listen_socket = listen_socket
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.listen_socket is None:
            super().server_bind()
            return
        if self.socket is not None:  # the one TCPServer made: the shared one listens already
            self.socket.close()
        self.socket = self.listen_socket
        # Every process wakes for a connection and one accepts it; the others get EAGAIN
        # (socketserver ignores it) rather than blocking in accept().
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.listen_socket is None:
            super().server_activate()

    def server_close(self) -> None:
        if self.listen_socket is None:
            super().server_close()
            return
        # Close our descriptor only: shutdown() would stop the socket for every process.
        self.listen_socket.close()

    def get_request(self) -> tuple[socket.socket, Any]:
        """On a shared socket, a process serving associations lets less busy ones accept
        first (5 ms per association it serves, at most 25 ms)."""
        if self.listen_socket is not None:
            busy = len(self.active_associations)
            if busy:
                time.sleep(0.005 * min(busy, 5))
        return super().get_request()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.guard.admit(request, client_address)


class Receiver:
    """C-ECHO/C-STORE SCP for every storage SOP class and transfer syntax.

    ``start()`` binds (port 0 picks a free port) and returns the bound port.
    """

    def __init__(self, services: Services, *, listen_socket: socket.socket | None = None) -> None:
        """``listen_socket``: a bound, listening socket to accept from (shared with other
        receiver processes) instead of binding the configured address."""
        self.services = services
        self.guard = ConnectionGuard(per_peer=services.settings.max_connections_per_peer)
        self.handlers = StoreHandlers(services, guard=self.guard)
        self.listen_socket = listen_socket
        self._server: Any = None

    def _build_ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        _socket.install()
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
            # pynetdicom's default handlers describe every PDU and DIMSE message for its
            # log (about a tenth of the receiver's CPU) even when the log discards them.
            _config.LOG_HANDLER_LEVEL = "none"
        # Accept SOP classes pynetdicom does not know (private and newer ones) too.
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        settings = self.services.settings
        ae = AE(ae_title=settings.ae_title)
        ae.require_called_aet = True
        # Connections that never send an A-ASSOCIATE-RQ are dropped after acse_timeout
        # and, per peer, evicted by newer ones (limits.py); the global cap is generous.
        ae.maximum_associations = 256
        ae.acse_timeout = 10
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        ae.maximum_pdu_size = 0  # unlimited: fewer, larger PDUs (about 1.2x faster)
        # Only Verification is listed: with the unrestricted storage service pynetdicom
        # accepts every storage-like context (known, private or unknown SOP class) with
        # the first transfer syntax proposed, whatever is listed here. Listing the ~120
        # storage classes x every syntax only cost a deepcopy of them per association
        # (a quarter of a second here).
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> int:
        settings = self.services.settings
        ae = self._build_ae()
        server = ae.make_server(
            (settings.dicom_host, settings.dicom_port),
            evt_handlers=self.handlers.handlers(),
            server_class=GuardedServer,
            guard=self.guard,
            listen_socket=self.listen_socket,
            request_handler=EventDrivenRequestHandler,
        )
        ae._servers.append(server)  # so that server.shutdown() can deregister it
        thread = threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True)
        thread.start()
        self._server = server
        port = int(server.server_address[1])
        log.info(
            "DICOM receiver %s listening on %s:%d", settings.ae_title, settings.dicom_host, port
        )
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
