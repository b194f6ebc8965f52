"""C-STORE SCU for operators: send files' dataset bytes exactly as they are in the files.

pynetdicom's ``send_c_store(path)`` decodes the file with ``dcmread`` and encodes it again
(only ``_config.STORE_SEND_CHUNKED_DATASET``, a process-wide switch that needs file meta,
sends the file's bytes). A re-encoded dataset is not what the file holds: odd lengths get
padded, a deflated dataset is deflated again at another level, and whatever pydicom cannot
read cannot be sent. So this module reads each file's meta group itself, proposes the
file's own SOP class and transfer syntax, and hands the DIMSE layer the dataset bytes as
they follow the meta (:func:`_c_store_raw`). Files without meta (raw datasets) are sent as
Implicit or Explicit VR Little Endian, whichever their first element shows.

One presentation context per (SOP class, transfer syntax); at most 128 per association,
so more pairs mean more associations.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from consult.dicom import identifiers, scu
from consult.dicom.part10 import read_header, split_part10
from consult.errors import ConfigurationError, InvalidDataset

log = logging.getLogger(__name__)

_HEAD_BYTES = 4 * 1024 * 1024  # enough for any header up to group 0028 in practice
MAX_CONTEXTS = 128  # presentation context IDs are odd numbers 1..255
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split()
)


_NO_RESPONSE = "no response"


class Unsendable(Exception):
    """A file this SCU cannot send (unreadable, no SOP class or instance UID)."""


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class SendItem:
    """A file ready to send: its UIDs, transfer syntax and where its dataset starts."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    offset: int

    @property
    def context(self) -> tuple[str, str]:
        return (self.sop_class_uid, self.transfer_syntax_uid)


@dataclass(frozen=True)
class Outcome:
    """What became of one file: ``status`` is the peer's C-STORE status, or None when the
    file never reached the peer (``comment`` says why)."""

    path: Path
    status: int | None
    comment: str = ""
    sop_instance_uid: str = ""

    @property
    def ok(self) -> bool:
        """Success, or a warning (the peer stored it, perhaps coerced)."""
        return self.status is not None and (
            self.status == 0x0000 or 0xB000 <= self.status <= 0xBFFF or self.status == 0x0001
        )


def parse_destination(text: str) -> Destination:
    """``AE@host:port`` (an IPv6 host in brackets: ``AE@[::1]:104``)."""
    ae, at, rest = text.rpartition("@")
    host, colon, port = rest.rpartition(":")
    host = host.strip("[]")
    if not at or not colon or not ae.strip() or not host or not port.isdigit():
        raise ConfigurationError(f"--to must be AE@host:port, got {text!r}")
    ae_title = identifiers.ae_title(ae, "--to: AE title", error=ConfigurationError)
    number = int(port)
    if not 0 < number < 65536:
        raise ConfigurationError(f"--to: port must be 1-65535, got {port}")
    return Destination(ae_title, host, number)


def collect(paths: Iterable[Path], *, recursive: bool) -> Iterator[Path]:
    """Files named, and the files in folders named (their subfolders too when recursive).
    A name that is neither is still yielded, so that it is reported as unreadable."""
    for path in paths:
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            yield from sorted(p for p in found if p.is_file())
        else:
            yield path


def _clean(value: object) -> str:
    return str(value if value is not None else "").rstrip("\x00 ")


def _raw_syntax(blob: bytes) -> str:
    """A dataset with no meta: explicit VR when its first element carries a VR code."""
    return EXPLICIT_LE if blob[4:6] in _VRS else IMPLICIT_LE


def inspect_file(path: Path) -> SendItem:
    """Read a file's meta group (or guess a raw dataset's encoding) and its UIDs.

    Only the first few MB are read, unless the UIDs are not found in them.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
            whole = len(head) < _HEAD_BYTES or not fh.read(1)
    except OSError as exc:
        raise Unsendable(f"cannot read: {exc.strerror or exc}") from None
    try:
        return _inspect(path, head)
    except Unsendable:
        if whole:
            raise
    try:
        return _inspect(path, path.read_bytes())
    except OSError as exc:
        raise Unsendable(f"cannot read: {exc.strerror or exc}") from None


def _inspect(path: Path, blob: bytes) -> SendItem:
    meta: Dataset = Dataset()
    try:
        if blob[128:132] == b"DICM":
            meta, offset = split_part10(blob)
        elif blob[:2] == b"\x02\x00" and blob[4:6] in _VRS:  # meta without a preamble
            from pydicom.filereader import _read_file_meta_info

            fp = io.BytesIO(blob)
            meta = _read_file_meta_info(fp)
            offset = fp.tell()
        else:
            offset = 0
        ts = _clean(meta.get("TransferSyntaxUID")) or _raw_syntax(blob[offset:])
        with warnings.catch_warnings():  # pydicom's notes on odd files are not our output
            warnings.simplefilter("ignore")
            ds = read_header(blob[offset:], ts)
    except InvalidDataset as exc:
        raise Unsendable(str(exc)) from None
    except Exception as exc:  # a hostile file must be reported, not crash the run
        raise Unsendable(f"cannot parse: {type(exc).__name__}") from None
    # UIDs by the rule consult's own ingest applies (consult.dicom.identifiers): a file
    # whose UIDs break it (a path, a control character, ...) is reported, not sent.
    sop_class = identifiers.uid(
        _clean(ds.get("SOPClassUID")) or meta.get("MediaStorageSOPClassUID"),
        "SOP Class UID",
        error=Unsendable,
    )
    sop_instance = identifiers.uid(
        _clean(ds.get("SOPInstanceUID")) or meta.get("MediaStorageSOPInstanceUID"),
        "SOP Instance UID",
        error=Unsendable,
    )
    return SendItem(path, sop_class, sop_instance, ts, offset)


def _batches(pairs: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(pairs), MAX_CONTEXTS):
        yield pairs[start : start + MAX_CONTEXTS]


def send_files(
    paths: Iterable[Path],
    to: Destination,
    *,
    calling_ae: str,
    timeout: float = 30.0,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Send every file; one outcome per path, in order. Never raises for a bad file."""
    report = on_done or (lambda _o: None)
    paths = list(paths)
    outcomes: dict[int, Outcome] = {}
    items: list[tuple[int, SendItem]] = []
    for index, path in enumerate(paths):
        try:
            items.append((index, inspect_file(path)))
        except Unsendable as exc:
            outcomes[index] = Outcome(path, None, str(exc))
            report(outcomes[index])
    pairs = list(dict.fromkeys(item.context for _, item in items))
    for batch in _batches(pairs):
        wanted = set(batch)
        group = [(i, item) for i, item in items if item.context in wanted]
        for index, outcome in _send_association(group, batch, to, calling_ae, timeout):
            outcomes[index] = outcome
            report(outcome)
    return [outcomes[i] for i in range(len(paths))]


def _associate(
    contexts: list[tuple[str, str]], to: Destination, calling_ae: str, timeout: float
) -> tuple[Any, dict[tuple[str, str], str]]:
    """Request the association; returns it and the pairs pynetdicom would not propose."""
    ae = scu.new_ae(calling_ae, timeout)
    refused: dict[tuple[str, str], str] = {}
    for sop_class, ts in contexts:
        try:
            ae.add_requested_context(sop_class, ts)
        except ValueError:
            refused[(sop_class, ts)] = "SOP Class or Transfer Syntax UID is not a valid UID"
    if len(refused) == len(contexts):
        return None, refused
    return ae.associate(to.host, to.port, ae_title=to.ae_title), refused


def _why_not_established(assoc: Any) -> str:
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        try:
            return f"association rejected ({rsp.result_str}, {rsp.source_str}: {rsp.reason_str})"
        except Exception:
            return "association rejected"
    if assoc.is_aborted and assoc.rejected_contexts and not assoc.accepted_contexts:
        return "no presentation context accepted"
    return "association failed (peer unreachable, aborted or timed out)"


def _send_association(
    group: list[tuple[int, SendItem]],
    contexts: list[tuple[str, str]],
    to: Destination,
    calling_ae: str,
    timeout: float,
) -> Iterator[tuple[int, Outcome]]:
    """Send a group over one association; when the peer aborts it (some peers abort on one
    file they dislike), the file is reported and the rest go over a new association."""
    pending = list(group)
    while pending:
        assoc, refused = _associate(contexts, to, calling_ae, timeout)
        if assoc is None or not assoc.is_established:
            why = "" if assoc is None else _why_not_established(assoc)
            for index, item in pending:
                comment = refused.get(item.context, why)
                yield index, Outcome(item.path, None, comment, item.sop_instance_uid)
            return
        scu.no_delay(assoc)
        accepted = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])): int(cx.context_id)
            for cx in assoc.accepted_contexts
        }
        try:
            msg_id = 0
            while pending and (assoc.is_established or msg_id == 0):
                index, item = pending.pop(0)
                msg_id += 1
                outcome = _send_one(assoc, accepted, refused, item, msg_id=msg_id % 65535)
                yield index, outcome
                if outcome.comment.startswith(_NO_RESPONSE):
                    # The flag can lag behind the abort: never send into this one again.
                    if assoc.is_established:
                        assoc.abort()
                    break
        finally:
            if assoc.is_established:
                assoc.release()


def _send_one(
    assoc: Any,
    accepted: dict[tuple[str, str], int],
    refused: dict[tuple[str, str], str],
    item: SendItem,
    *,
    msg_id: int,
) -> Outcome:
    def fail(comment: str) -> Outcome:
        return Outcome(item.path, None, comment, item.sop_instance_uid)

    if item.context in refused:
        return fail(refused[item.context])
    context_id = accepted.get(item.context)
    if context_id is None:
        return fail(
            f"no presentation context accepted for SOP class {item.sop_class_uid} "
            f"in transfer syntax {item.transfer_syntax_uid}"
        )
    if not assoc.is_established:
        return fail("association lost before this file was sent")
    try:
        with item.path.open("rb") as fh:
            fh.seek(item.offset)
            data = fh.read()
    except OSError as exc:
        return fail(f"cannot read: {exc.strerror or exc}")
    try:
        rsp = _c_store_raw(assoc, context_id, item, data, msg_id)
    except ValueError as exc:  # pynetdicom refused a UID in the request
        return fail(f"cannot build the C-STORE request: {exc}")
    if "Status" not in rsp:
        odd = " (the dataset has an odd length, which strict peers refuse)" if len(data) % 2 else ""
        return fail(f"{_NO_RESPONSE}: the peer aborted or timed out{odd}")
    # The peer's words, printed on the operator's terminal: printable characters only.
    comment = "".join(c for c in _clean(rsp.get("ErrorComment", "")) if c.isprintable())[:200]
    return Outcome(item.path, int(rsp.Status), comment, item.sop_instance_uid)


def _c_store_raw(assoc: Any, context_id: int, item: SendItem, data: bytes, msg_id: int) -> Dataset:
    """``Association.send_c_store`` without its decode/encode: the request carries ``data``.

    Mirrors pynetdicom 3.0's own sequence: pause the reactor so it does not take our
    response off the queue, send, wait for the response, resume.
    """
    from pynetdicom.dimse_primitives import C_STORE

    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = 2  # low, as pynetdicom's default
    req.AffectedSOPClassUID = item.sop_class_uid
    req.AffectedSOPInstanceUID = item.sop_instance_uid
    req.DataSet = io.BytesIO(data)
    assoc._reactor_checkpoint.clear()
    try:
        while not assoc._is_paused:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(rsp)  # type: ignore[no-any-return]


def status_meaning(code: int) -> str:
    """The C-STORE status's category and meaning (PS3.4 B.2.3, PS3.7 C)."""
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

    category, text = STORAGE_SERVICE_CLASS_STATUS.get(code, (code_to_category(code), ""))
    return f"{category}: {text}" if text else str(category)


def summary(outcomes: list[Outcome]) -> list[str]:
    """Counts per status with its meaning, then each file that was not stored."""
    stored = sum(1 for o in outcomes if o.ok)
    lines = [f"{len(outcomes)} file(s): {stored} stored, {len(outcomes) - stored} not stored"]
    counts: dict[int | None, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    for code in sorted(counts, key=lambda c: -1 if c is None else c):
        what = "not sent" if code is None else f"0x{code:04X} {status_meaning(code)}"
        lines.append(f"  {what}: {counts[code]}")
    failures = [o for o in outcomes if not o.ok]
    if failures:
        lines.append("not stored:")
    for o in failures:
        status = "not sent" if o.status is None else f"0x{o.status:04X}"
        lines.append(f"  {o.path}: {status}" + (f" - {o.comment}" if o.comment else ""))
    return lines
