"""pynetdicom event handlers: association checks, C-ECHO, C-STORE.

Handlers never raise (pynetdicom would answer 0xC211); they return explicit statuses
(PS3.4 Annex B.2.3 for C-STORE, PS3.7 C.4.2):

- ``0x0000`` Success: the dataset is in the object store (acknowledged) and indexed.
- ``0xA700`` Refused, out of resources: object store or catalog trouble; retry later.
- ``0xA900`` Error, dataset does not match SOP class (request and dataset UIDs differ).
- ``0xC210`` Cannot understand: the dataset cannot be parsed.
- ``0xC001``-``0xC004`` Cannot understand, with a comment: UID owned by another sender,
  required UID missing, hostile UID, dataset over the size limit.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from pydicom.dataset import Dataset

from consult.access import directory
from consult.catalog import CatalogUnavailable
from consult.errors import InvalidDataset
from consult.ingest.pipeline import Origin, ingest
from consult.receiver.limits import ConnectionGuard
from consult.services import Services
from storage import StorageError

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: result, source, diagnostic (PS3.8 9.3.4)
REJECT_PERMANENT = 0x01
REJECT_TRANSIENT = 0x02
SOURCE_USER = 0x01
SOURCE_PRESENTATION = 0x03
DIAG_CALLING_AE_NOT_RECOGNISED = 0x03
DIAG_TEMPORARY_CONGESTION = 0x01


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


class StoreHandlers:
    """Event handlers bound to the process's services; one instance per receiver."""

    def __init__(self, services: Services, *, guard: ConnectionGuard | None = None) -> None:
        self.services = services
        self.guard = guard
        self._origins: weakref.WeakKeyDictionary[Any, Origin] = weakref.WeakKeyDictionary()

    def handlers(self) -> list[tuple[Any, Any]]:
        from pynetdicom import evt

        return [
            (evt.EVT_REQUESTED, self.handle_requested),
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
        ]

    def handle_requested(self, event: Any) -> None:
        """Accept only registered peers: calling AE title from its registered host."""
        assoc = event.assoc
        # requestor.ae_title is filled in only after EVT_REQUESTED; read the A-ASSOCIATE-RQ.
        calling_ae = str(assoc.requestor.primitive.calling_ae_title).strip()
        host = str(assoc.requestor.address)
        port = int(assoc.requestor.port)
        if self.guard is not None:
            self.guard.associated(host, port)
        try:
            # A read for registered peers: a write transaction here would make every
            # association wait for (and fail on) a catalog write lock held elsewhere.
            with self.services.catalog.read() as conn:
                peer = directory.find_peer(conn, calling_ae, host)
            if peer is not None:
                origin: Origin | None = Origin(peer.hospital_id, calling_ae, host, port)
            elif self.services.settings.accept_unknown_peers:
                with self.services.catalog.write() as conn:
                    hospital = directory.get_or_add_hospital(conn, directory.UNKNOWN_SENDER)
                origin = Origin(hospital.id, calling_ae, host, port)
            else:
                origin = None
        except CatalogUnavailable:
            log.warning("catalog unavailable; association from %s@%s refused", calling_ae, host)
            self._reject(assoc, REJECT_TRANSIENT, SOURCE_PRESENTATION, DIAG_TEMPORARY_CONGESTION)
            return
        if origin is None:
            log.warning("association from unknown peer %s@%s rejected", calling_ae, host)
            self._reject(assoc, REJECT_PERMANENT, SOURCE_USER, DIAG_CALLING_AE_NOT_RECOGNISED)
            return
        self._origins[assoc] = origin

    @staticmethod
    def _reject(assoc: Any, result: int, source: int, diagnostic: int) -> None:
        """Send A-ASSOCIATE-RJ, then wait (as pynetdicom's own rejections do) until the DUL
        has sent it; closing at once would make the peer see an abort instead."""
        assoc.acse.send_reject(result, source, diagnostic)
        assoc.kill()

    def handle_echo(self, event: Any) -> int:
        return 0x0000

    def handle_store(self, event: Any) -> Dataset:
        """Store the dataset bytes as received; answer Success only once durable and indexed."""
        origin = self._origins.get(event.assoc)
        if origin is None:  # pragma: no cover - every accepted association has one
            return _status(0xA700, "association not registered")
        try:
            data = event.request.DataSet.getvalue()
            stored = ingest(
                self.services,
                data,
                transfer_syntax_uid=str(event.context.transfer_syntax),
                origin=origin,
                expected_sop_instance_uid=str(event.request.AffectedSOPInstanceUID),
            )
        except InvalidDataset as exc:
            log.warning("refused dataset from %s: %s", origin.calling_ae, exc)
            return _status(exc.dicom_status, str(exc))
        except (StorageError, CatalogUnavailable) as exc:
            log.error("cannot store dataset from %s: %s", origin.calling_ae, exc)
            return _status(0xA700, "storage unavailable, retry later")
        except Exception:
            log.exception("unexpected error storing a dataset from %s", origin.calling_ae)
            return _status(0xA700, "internal error, retry later")
        log.debug("C-STORE %s v%d ok", stored.sop_instance_uid, stored.version)
        return _status(0x0000)
