"""Ingest: validate a received dataset, store it byte-exact, index it, queue its preview.

No pynetdicom here: the receiver's handlers turn a C-STORE into a call to :func:`ingest`
and its outcome (or :class:`~consult.errors.InvalidDataset`, or a storage/catalog failure)
into a DICOM status.

Order of operations, so that success means safe and nothing half-stored is visible:

1. parse and validate the header (UIDs, size);
2. put the Part 10 object (our file meta + the dataset bytes as received) under a key made
   of hashes and the content's SHA-256, and wait for the store to acknowledge it (on the
   folder store the bytes are written and fsynced while they are hashed, then renamed
   under the key);
3. in one catalog transaction (consult/ingest/indexing.py): patient, study, series, instance,
   a new version (or none: an identical retry changes nothing), arrival counters and the
   preview job. A crash between 2 and 3 leaves an unindexed object that the sender's
   retry writes again under the same key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from consult.catalog import CatalogUnavailable
from consult.dicom import identifiers
from consult.dicom.part10 import (
    check_complete,
    read_header,
    received_prefix,
    split_part10,
)
from consult.errors import InvalidDataset
from consult.ingest.indexing import (
    Header,
    Origin,
    StoredInstance,
    bound_lock_wait,
    cache_for,
    index,
)
from consult.services import Services
from storage import LocalObjectStore, ObjectStore
from storage.keys import instance_key
from storage.local import StagedObject

__all__ = ["Origin", "StoredInstance", "ingest", "ingest_file"]

log = logging.getLogger(__name__)


def check_uid(value: object, name: str) -> str:
    """A UID of a received dataset by the one rule (:mod:`consult.dicom.identifiers`);
    refused with 0xC002 when missing, 0xC003 when it is not a UID we can serve."""
    try:
        return identifiers.uid(value, name)
    except identifiers.IdentifierError as exc:
        raise InvalidDataset(str(exc), dicom_status=0xC002 if exc.missing else 0xC003) from None


def _validate(data: bytes, transfer_syntax_uid: str, max_bytes: int) -> Header:
    if len(data) > max_bytes:
        raise InvalidDataset(
            f"dataset of {len(data)} bytes exceeds CONSULT_MAX_DATASET_BYTES ({max_bytes})",
            dicom_status=0xC004,
        )
    ds = read_header(data, transfer_syntax_uid)
    check_complete(data, transfer_syntax_uid)
    return Header(
        study_uid=check_uid(ds.get("StudyInstanceUID"), "Study Instance UID"),
        series_uid=check_uid(ds.get("SeriesInstanceUID"), "Series Instance UID"),
        sop_instance_uid=check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID"),
        sop_class_uid=check_uid(ds.get("SOPClassUID"), "SOP Class UID"),
        ds=ds,
    )


def ingest(
    services: Services,
    data: bytes,
    *,
    transfer_syntax_uid: str,
    origin: Origin,
    expected_sop_instance_uid: str | None = None,
) -> StoredInstance:
    """Store and index one received dataset (bytes exactly as received).

    Raises
    ------
    InvalidDataset
        The dataset is refused; ``dicom_status`` says why (0xC210 unparseable, 0xC002 a
        required UID missing, 0xC003 a hostile UID, 0xC004 too large, 0xA900 the SOP
        Instance UID differs from the request's, 0xC001 the study belongs to another sender).
    storage.StorageError, CatalogUnavailable
        The store or catalog failed: the sender should retry (0xA700).
    """
    transfer_syntax_uid = check_uid(transfer_syntax_uid, "Transfer Syntax UID")
    header = _validate(data, transfer_syntax_uid, services.settings.max_dataset_bytes)
    if expected_sop_instance_uid is not None and (
        expected_sop_instance_uid.rstrip("\x00 ") != header.sop_instance_uid
    ):
        raise InvalidDataset(
            "SOP Instance UID of the dataset differs from the C-STORE request's",
            dicom_status=0xA900,
        )
    prefix = received_prefix(
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        source_ae=origin.calling_ae,
    )
    # On a local store the bytes go to disk (write + fsync, off the GIL) in a helper
    # thread while this one hashes them for the key; S3 needs the key first.
    staging = _stage(services.store, prefix, data)
    sha256 = hashlib.sha256(data).hexdigest()
    # No catalog read first: an identical retry (rare) rewrites the same bytes under the
    # same key, and the index transaction then finds the version and changes nothing.
    key = instance_key(header.study_uid, header.sop_instance_uid, sha256)
    if staging is None:
        _put_once(
            services, key, lambda: services.store.put(key, prefix + data, content_type=_DICOM)
        )
    else:
        staged = staging.result()
        _put_once(services, key, lambda: staged.publish(key), staged.discard)

    lock_timeout = services.settings.catalog_lock_timeout
    cache = cache_for(services.catalog)
    for attempt in range(3):
        try:
            with services.catalog.write() as conn:
                bound_lock_wait(conn, lock_timeout)
                stored, known = index(
                    conn,
                    cache,
                    header,
                    origin,
                    sha256,
                    len(data),
                    key,
                    len(prefix),
                    transfer_syntax_uid,
                )
            cache.remember(known)  # only once the transaction that made them committed
            return stored
        except CatalogUnavailable as exc:
            # A concurrent sender created the same patient/study/series/version first.
            if isinstance(exc.__cause__, IntegrityError) and attempt < 2:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def ingest_file(services: Services, path: Path, *, origin: Origin) -> StoredInstance:
    """Ingest a Part 10 file as if its dataset had been received in its transfer syntax."""
    blob = path.read_bytes()
    meta, offset = split_part10(blob)
    return ingest(
        services, blob[offset:], transfer_syntax_uid=str(meta.TransferSyntaxUID), origin=origin
    )


def _nothing() -> None:
    return None


_DICOM = "application/dicom"
_puts_lock = threading.Lock()
_PUT_LOCKS = [threading.Lock() for _ in range(64)]
# Per store object (not per id(): a new store can get a collected one's id).
_recent_puts: weakref.WeakKeyDictionary[ObjectStore, OrderedDict[str, None]] = (
    weakref.WeakKeyDictionary()
)


def _put_once(
    services: Services, key: str, put: Callable[[], None], skip: Callable[[], None] = _nothing
) -> None:
    """Run ``put`` unless this process stored something under ``key`` already (then
    ``skip``).

    Senders that retry, or several senders with one study, send the same bytes at the
    same time; one put per key and process is enough (a content-addressed key always
    holds the same bytes), and S3 servers need not take N concurrent writes of one key.
    """
    with _PUT_LOCKS[hash(key) % len(_PUT_LOCKS)]:
        with _puts_lock:
            recent = _recent_puts.get(services.store)
            if recent is None:
                recent = _recent_puts[services.store] = OrderedDict()
        if key in recent:
            skip()
            return
        put()
        with _puts_lock:
            recent[key] = None
            if len(recent) > 4096:
                recent.popitem(last=False)


_stagers: ThreadPoolExecutor | None = None
_stagers_pid = 0


def _stage(store: ObjectStore, prefix: bytes, data: bytes) -> Future[StagedObject] | None:
    """Start writing ``prefix + data`` to a local store's staging area in a helper thread;
    None for stores that cannot stage (S3)."""
    global _stagers, _stagers_pid
    if not isinstance(store, LocalObjectStore):
        return None
    with _puts_lock:
        if _stagers is None or _stagers_pid != os.getpid():  # none yet, or forked
            _stagers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ingest-stage")
            _stagers_pid = os.getpid()
        pool = _stagers
    return pool.submit(store.stage, (prefix, data))
