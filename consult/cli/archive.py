"""Operator commands around ingest: ``send`` (C-STORE SCU), ``verify``, ``receipt``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from consult.services import Services
from consult.settings import Settings


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self._drawn = 0.0

    @staticmethod
    def wanted(forced: bool) -> bool:
        return forced or sys.stderr.isatty()

    def step(self, note: str = "") -> None:
        self.done += 1
        now = time.monotonic()
        if self.done == self.total or now - self._drawn >= 0.1:
            self._drawn = now
            self.draw(note)

    def draw(self, note: str = "") -> None:
        width = 30
        filled = width * self.done // self.total if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        text = f"\r{self.label} [{bar}] {self.done}/{self.total} {note}"[:120]
        self.stream.write(text.ljust(121) if self.done < self.total else text + "\n")
        self.stream.flush()


def register(sub: Any) -> None:
    send = sub.add_parser("send", help="send DICOM files to a peer (C-STORE, bytes as in the file)")
    send.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    send.add_argument("--to", required=True, metavar="AE@HOST:PORT", help="the receiving peer")
    send.add_argument("--aet", help="our calling AE title (default: CONSULT_AE_TITLE)")
    send.add_argument("--recursive", action="store_true", help="descend into subfolders")
    send.add_argument("--progress", action="store_true", help="progress bar even when piped")
    send.add_argument("--timeout", type=float, default=30.0, help="network timeout, seconds")
    # Sending needs no catalog or store: run without opening them (no data folder made).
    send.set_defaults(handler=cmd_send, settings_only=True)

    verify = sub.add_parser("verify", help="re-read stored objects and check their SHA-256")
    verify.add_argument("--study", metavar="UID", help="only this study")
    verify.add_argument("--progress", action="store_true", help="progress bar even when piped")
    verify.set_defaults(handler=cmd_verify)

    receipt = sub.add_parser("receipt", help="what arrived of a study: series, instances, sums")
    receipt.add_argument("study_uid")
    receipt.add_argument("--json", action="store_true", help="JSON instead of a table")
    receipt.set_defaults(handler=cmd_receipt)


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from consult.dicom import identifiers
    from consult.dicom.sender import collect, parse_destination, send_files, summary
    from consult.errors import ConfigurationError

    to = parse_destination(args.to)
    calling_ae = identifiers.ae_title(
        args.aet or settings.ae_title, "--aet", error=ConfigurationError
    )
    paths = list(collect(args.paths, recursive=args.recursive))
    bar = Progress(len(paths), "sending") if Progress.wanted(args.progress) else None
    outcomes = send_files(
        paths,
        to,
        calling_ae=calling_ae,
        timeout=args.timeout,
        on_done=(lambda o: bar.step(o.path.name[:40])) if bar else None,
    )
    for line in summary(outcomes):
        print(line)
    return 0 if outcomes and all(o.ok for o in outcomes) else 1


def cmd_verify(services: Services, args: argparse.Namespace) -> int:
    from consult.studies.verify import verify

    bar: Progress | None = None

    def step(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, "verifying")
        bar.step()

    report = verify(
        services, study_uid=args.study, on_step=step if Progress.wanted(args.progress) else None
    )
    for p in report.problems:
        print(
            f"{p.kind.upper()}: {p.sop_instance_uid} version {p.version} ({p.object_key}): "
            f"{p.detail}"
        )
    print(f"{report.checked} object(s) checked, {len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def cmd_receipt(services: Services, args: argparse.Namespace) -> int:
    from consult.studies.receipt import study_receipt, to_json, to_text

    with services.catalog.read() as conn:
        receipt = study_receipt(
            conn, args.study_uid, stable_seconds=services.settings.stable_seconds
        )
    print(to_json(receipt) if args.json else to_text(receipt))
    return 0
