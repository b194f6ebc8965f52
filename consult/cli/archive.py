"""What is stored, for the operator: ``verify`` (checksums), ``receipt`` (what arrived of a
study) and ``export`` (a study as Part 10 files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consult.cli.command import Commands, with_services
from consult.cli.progress import Progress
from consult.services import Services


def register(commands: Commands) -> None:
    verify = commands.add_parser("verify", help="re-read stored objects and check their SHA-256")
    verify.add_argument("--study", metavar="UID", help="only this study")
    verify.add_argument("--progress", action="store_true", help="progress bar even when piped")
    verify.set_defaults(run=with_services(cmd_verify))

    receipt = commands.add_parser(
        "receipt", help="what arrived of a study: series, instances, sums"
    )
    receipt.add_argument("study_uid")
    receipt.add_argument("--json", action="store_true", help="JSON instead of a table")
    receipt.set_defaults(run=with_services(cmd_receipt))

    export = commands.add_parser("export", help="write a study's stored instances as Part 10 files")
    export.add_argument("study_uid")
    export.add_argument("--out", required=True, type=Path)
    export.add_argument(
        "--all-versions", action="store_true", help="every version, not just current"
    )
    export.set_defaults(run=with_services(cmd_export))


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


def cmd_export(services: Services, args: argparse.Namespace) -> int:
    from consult.studies.export import export_study

    written = export_study(services, args.study_uid, args.out, all_versions=args.all_versions)
    for path in written:
        print(path)
    print(f"{len(written)} file(s) written to {args.out}", file=sys.stderr)
    return 0
