"""Helpers shared by the tests: free ports, deadlines, required tools, sample files."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Ran:
    """What a command did: its exit status and what it wrote."""

    status: int
    out: str
    err: str


class ConsultCli:
    """The ``consult`` command line called in this process (``consult.cli.main.main``), as
    a shell would run it: settings from ``CONSULT_*`` variables, the embedded defaults
    (SQLite and the folder store in ``data_dir``) whatever this environment configures,
    ``stdin`` as standard input, standard output and error captured."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __call__(self, *args: str, stdin: str = "", env: Mapping[str, str] | None = None) -> Ran:
        from consult.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CONSULT_DATA_DIR", str(self.data_dir))
            for name in ("CONSULT_DATABASE_URL", "CONSULT_S3_ENDPOINT"):
                patch.delenv(name, raising=False)
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            patch.setattr(sys, "stdin", io.StringIO(stdin))
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    status = main(list(args))
                except SystemExit as exc:  # argparse: --help, or arguments it refuses
                    status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        return Ran(status, out.getvalue(), err.getvalue())


def consult_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``consult`` process on ``data_dir`` with the embedded defaults,
    listening on 127.0.0.1 on ports the system picks, plus ``settings`` (CONSULT_*)."""
    env = {
        **os.environ,
        "CONSULT_DATA_DIR": str(data_dir),
        "CONSULT_DICOM_HOST": "127.0.0.1",
        "CONSULT_DICOM_PORT": "0",
        "CONSULT_HTTP_HOST": "127.0.0.1",
        "CONSULT_HTTP_PORT": "0",
        **settings,
    }
    for name in ("CONSULT_DATABASE_URL", "CONSULT_S3_ENDPOINT"):
        env.pop(name, None)
    return env


class ConsultProcess:
    """A running ``python -m consult COMMAND``: its output (stdout and stderr), read line by
    line on a thread so that waiting for a line never blocks past its deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: Iterable[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, *, timeout: float = 60.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (a regex), waited for until the
        deadline; fails with the output if the process ends first or the deadline passes."""

        def found() -> re.Match[str] | None:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise ProcessLookupError(f"exited with {self.proc.returncode}")
            return None

        try:
            return wait_until(found, timeout=timeout)
        except ProcessLookupError as exc:
            raise AssertionError(f"{exc} before printing {pattern!r}:\n{self.output}") from None
        except AssertionError:
            raise AssertionError(
                f"{pattern!r} not printed within {timeout} s:\n{self.output}"
            ) from None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit status (SIGKILL, and a failure, past the deadline)."""
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
            raise AssertionError(f"did not stop within {timeout} s:\n{self.output}") from None
        finally:
            self._reader.join(timeout)


@contextmanager
def consult_process(*args: str, env: Mapping[str, str]) -> Iterator[ConsultProcess]:
    """``python -m consult ARGS`` as a real process with ``env``, in a process group of its
    own: at the end whatever of the group still runs (its workers too) is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "consult", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = ConsultProcess(proc)
    try:
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        running._reader.join(10)  # the end of the output, now that no process holds the pipe
        if proc.stdout is not None:
            proc.stdout.close()
