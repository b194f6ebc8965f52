"""Helpers shared by the tests: free ports, deadlines, required tools, sample files."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "dicom-samples"
IN_CI = os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and read it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def need_or_skip(reason: str) -> None:
    """Skip with a reason, except in CI (CI=true), where a missing tool fails the run."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    """Path of a command-line tool, or skip (fail in CI) naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        need_or_skip(f"{name} not installed (apt-get install {package})")
    assert path is not None
    return path


def samples_dir() -> Path:
    """The shared DICOM samples folder, or skip when this checkout has none beside it."""
    if not (SAMPLES / "MANIFEST.md").is_file():
        pytest.skip(f"DICOM samples not found at {SAMPLES} (shared/ is not beside the checkout)")
    return SAMPLES


def sample(name: str) -> Path:
    return samples_dir() / name
