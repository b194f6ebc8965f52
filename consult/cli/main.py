"""The ``consult`` command line: the parser assembled from the command groups, and the one
way every command runs (:mod:`consult.cli.command`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Protocol

from consult.cli import admin, archive, demo, imaging, sending, servers
from consult.cli.command import Commands
from consult.errors import ConsultError
from consult.settings import load_settings


class CommandGroup(Protocol):
    """A module of ``consult/cli/`` that adds its commands to the parser."""

    def register(self, commands: Commands) -> None: ...


# In the order ``consult --help`` lists them.
COMMAND_GROUPS: tuple[CommandGroup, ...] = (servers, demo, admin, sending, archive, imaging)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consult",
        description="consult: ask another hospital for an expert opinion on medical images.",
        epilog="Every command reads its settings from CONSULT_* environment variables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def _configure_logging(verbose: bool) -> None:
    """Log to stderr, unless whoever calls ``main`` (a test run) has set logging up."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (2 for an error the message explains)."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.run(load_settings(), args))
    except ConsultError as exc:
        print(f"consult: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
