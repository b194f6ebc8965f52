"""Builds the application entity and runs the non-blocking SCP."""

from __future__ import annotations

import logging
from typing import Any

from consult.receiver.handlers import StoreHandlers
from consult.services import Services

log = logging.getLogger(__name__)


class Receiver:
    """C-ECHO/C-STORE SCP for every storage SOP class and transfer syntax.

    ``start()`` binds (port 0 picks a free port) and returns the bound port.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.handlers = StoreHandlers(services)
        self._server: Any = None

    def _build_ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, _config
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        # Accept SOP classes pynetdicom does not know (private and newer ones) too.
        _config.UNRESTRICTED_STORAGE_SERVICE = True
        settings = self.services.settings
        ae = AE(ae_title=settings.ae_title)
        ae.require_called_aet = True
        # Idle or half-open connections must not hold slots for long (PITFALLS: 11 idle
        # sockets block pynetdicom's defaults for 30 s).
        ae.maximum_associations = 64
        ae.acse_timeout = 10
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        ae.maximum_pdu_size = 0  # unlimited: fewer, larger PDUs
        for cx in StoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> int:
        settings = self.services.settings
        ae = self._build_ae()
        self._server = ae.start_server(
            (settings.dicom_host, settings.dicom_port),
            block=False,
            evt_handlers=self.handlers.handlers(),
        )
        port = int(self._server.server_address[1])
        log.info(
            "DICOM receiver %s listening on %s:%d", settings.ae_title, settings.dicom_host, port
        )
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
