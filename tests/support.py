"""Helpers shared by the tests: free ports, deadlines, required tools, sample files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium under Playwright (Playwright cannot download its own browser here),
    or skip (fail in CI) when it is not installed."""
    if not Path(CHROMIUM).exists():
        need_or_skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """An ASGI app under uvicorn in a thread, on a port the OS picked; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def referring_services(settings: Any, *peers: tuple[str, str]) -> Iterator[Any]:
    """Services (opened, closed at the end) with a hospital "Referring" whose PACS
    ``peers`` (AE title, host) may send; REFPACS@127.0.0.1 when none are given."""
    from consult.access import directory
    from consult.services import Services

    svc = Services.open(settings)
    try:
        with svc.catalog.write() as conn:
            hospital = directory.add_hospital(conn, "Referring")
            for ae_title, host in peers or (("REFPACS", "127.0.0.1"),):
                directory.add_peer(conn, hospital, ae_title, host)
        yield svc
    finally:
        svc.close()


def storescu(port: int, *files: Path, aet: str = "REFPACS") -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu, as a referring PACS with Nagle off, sending ``files`` to our
    receiver (AE CONSULT) on ``port``; the CompletedProcess (text)."""
    return subprocess.run(
        [
            require_tool("storescu", "dcmtk"),
            "-aet",
            aet,
            "-aec",
            "CONSULT",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TCP_NODELAY": "1"},
    )


def run_consult(
    data_dir: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``consult`` command line as a subprocess, on ``data_dir`` with the embedded
    defaults (SQLite, the folder store) whatever this environment configures."""
    full_env = {**os.environ, "CONSULT_DATA_DIR": str(data_dir), **(env or {})}
    full_env.pop("CONSULT_DATABASE_URL", None)
    full_env.pop("CONSULT_S3_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "consult", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )
