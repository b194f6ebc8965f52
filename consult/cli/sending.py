"""``consult send``: C-STORE files to a DICOM peer, each file's dataset bytes as in the file."""

from __future__ import annotations

import argparse
from pathlib import Path

from consult.cli.command import Commands
from consult.cli.progress import Progress
from consult.settings import Settings


def register(commands: Commands) -> None:
    send = commands.add_parser(
        "send", help="send DICOM files to a peer (C-STORE, bytes as in the file)"
    )
    send.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    send.add_argument("--to", required=True, metavar="AE@HOST:PORT", help="the receiving peer")
    send.add_argument("--aet", help="our calling AE title (default: CONSULT_AE_TITLE)")
    send.add_argument("--recursive", action="store_true", help="descend into subfolders")
    send.add_argument("--progress", action="store_true", help="progress bar even when piped")
    send.add_argument("--timeout", type=float, default=30.0, help="network timeout, seconds")
    # Sending needs no catalog or store: it runs without them (no data folder made).
    send.set_defaults(run=cmd_send)


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
