"""Builds the application entity and runs the non-blocking SCP.

One receiver process is CPU-bound near one core (pynetdicom decodes PDUs in Python under
the GIL), so ``consult receive`` scales by running several processes on one port: each
binds with ``SO_REUSEPORT`` and the kernel spreads incoming connections among them.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from consult.receiver import _socket
from consult.receiver._reactor import EventDrivenRequestHandler
from consult.receiver.handlers import StoreHandlers
from consult.receiver.limits import ConnectionGuard
from consult.services import Services

log = logging.getLogger(__name__)


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with per-peer admission and optional SO_REUSEPORT."""

    def __init__(self, *args: Any, guard: ConnectionGuard, reuse_port: bool, **kwargs: Any) -> None:
        self.guard = guard
        self.reuse_port = reuse_port
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.reuse_port and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.guard.admit(request, client_address)


class Receiver:
    """C-ECHO/C-STORE SCP for every storage SOP class and transfer syntax.

    ``start()`` binds (port 0 picks a free port) and returns the bound port.
    """

    def __init__(self, services: Services, *, reuse_port: bool = False) -> None:
        self.services = services
        self.guard = ConnectionGuard(per_peer=services.settings.max_connections_per_peer)
        self.handlers = StoreHandlers(services, guard=self.guard)
        self.reuse_port = reuse_port
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
            reuse_port=self.reuse_port,
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
