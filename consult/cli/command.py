"""How a command runs: the one convention every module of ``consult/cli/`` follows.

A command-group module has ``register(commands)``, which adds its parsers to the
``consult`` subcommands and names each parser's handler with ``set_defaults(run=...)``.
A handler is a :data:`Command`: it takes the settings (read from ``CONSULT_*``) and the
parsed arguments and returns the exit status. A handler that wants the catalog and the
object store is written as ``fn(services, args)`` and registered as ``with_services(fn)``,
which opens them (bringing the catalog schema up to date) and closes them afterwards.
``consult.cli.main`` calls ``args.run(settings, args)`` for every command alike.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import TypeAlias

from consult.services import Services
from consult.settings import Settings

Command: TypeAlias = Callable[[Settings, argparse.Namespace], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def with_services(fn: Callable[[Services, argparse.Namespace], int]) -> Command:
    """``fn(services, args)`` as a :data:`Command`: run with the catalog and store open."""

    @functools.wraps(fn)
    def run(settings: Settings, args: argparse.Namespace) -> int:
        services = Services.open(settings)
        try:
            return fn(services, args)
        finally:
            services.close()

    return run
