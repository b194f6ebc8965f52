"""Ingest benchmark: C-STORE throughput of our receiver against two baselines.

Workload: 300 CT instances, 512x512 int16 (about 525 KB each), generated deterministically,
sent by dcmtk ``storescu`` over loopback, with ``TCP_NODELAY=1`` in its environment (dcmtk
leaves Nagle on otherwise) and, for comparison, without it.

Receivers, measured in the same run, each started fresh per run (so every instance is new):
- ours: ``consult receive`` (durable + indexed: folder store with fsync, SQLite catalog with
  synchronous=FULL; no preview workers), 1 process for 1 association, and
  ``CONSULT_RECEIVER_PROCESSES`` processes sharing the port for 4 parallel associations;
- dcmtk ``storescp`` writing files;
- a bare pynetdicom SCP writing files (bench/bare_scp.py).

Every row is measured once per round and the rounds interleave the rows, so that the
machine's drift hits all alike. Reports the median of N rounds (default 5) in instances/s,
the ratios to the baselines (of the medians, and the median of per-round ratios), and the
receiver's CPU time per instance (user+system of its whole process tree).

usage: python bench/ingest.py [--runs 5] [--count 300] [--processes N] [--s3] [--quick]
                              [--only TEXT] [--database-url POSTGRESQL_URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def generate(folder: Path, count: int) -> list[Path]:
    """``count`` CT slices, 512x512 int16, deterministic UIDs and pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261129)
    study = generate_uid(entropy_srcs=["bench-ingest-study"])
    series = generate_uid(entropy_srcs=["bench-ingest-series"])
    base = rng.integers(-1000, 1500, size=(512, 512), dtype=np.int16)
    paths = []
    for i in range(count):
        path = folder / f"ct-{i:04d}.dcm"
        paths.append(path)
        if path.exists():
            continue
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench-ingest", str(i)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = "BENCH^Ingest", "BENCH-1"
        ds.Modality, ds.InstanceNumber = "CT", i + 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.roll(base, i, axis=0).tobytes()
        ds.save_as(path, enforce_file_format=True)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not ready within {timeout} s")


def tree_cpu(pid: int) -> float:
    """User+system CPU seconds of a process and its descendants (Linux /proc)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_cpu(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


Receiver = Callable[[Path, int], "subprocess.Popen[bytes]"]


_databases: list[str] = []  # PostgreSQL databases made for runs, dropped at the end


def _admin(database_url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(database_url, isolation_level="AUTOCOMMIT")


def _fresh_database(database_url: str, name: str) -> str:
    """A new, empty database beside ``database_url``'s; returns its URL."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = _admin(database_url)
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    _databases.append(name)
    return make_url(database_url).set(database=name).render_as_string(hide_password=False)


def _drop_databases(database_url: str) -> None:
    from sqlalchemy import text

    engine = _admin(database_url)
    with engine.connect() as conn:
        for name in _databases:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
    _databases.clear()


def ours(processes: int, s3: str = "", database_url: str = "") -> Receiver:
    def start(work: Path, port: int) -> subprocess.Popen[bytes]:
        catalog = {}
        if database_url:
            fresh = _fresh_database(database_url, f"bench_ingest_{port}_{time.time_ns()}")
            catalog = {"CONSULT_DATABASE_URL": fresh}
        env = {
            **catalog,
            **os.environ,
            "CONSULT_DATA_DIR": str(work / "data"),
            "CONSULT_DICOM_PORT": str(port),
            "CONSULT_DICOM_HOST": "127.0.0.1",
            "CONSULT_RECEIVER_PROCESSES": str(processes),
            "CONSULT_S3_ENDPOINT": s3,
            "CONSULT_S3_BUCKET": f"bench-{port}",
            "CONSULT_S3_ACCESS_KEY": "bench",
            "CONSULT_S3_SECRET_KEY": "bench",
        }
        if not database_url:
            env.pop("CONSULT_DATABASE_URL", None)
        consult = [sys.executable, "-m", "consult"]
        setup = [
            ["hospitals", "add", "Bench"],
            ["peers", "add", "--hospital", "Bench", "--ae", "BENCHSCU", "--host", "127.0.0.1"],
        ]
        for args in setup:
            subprocess.run([*consult, *args], env=env, check=True, capture_output=True)
        proc = subprocess.Popen(
            [*consult, "receive"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        # "listening" comes once every receiver process listens (connections that arrive
        # earlier all go to the first ones).
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"listening" not in line:
            raise RuntimeError(f"consult receive did not start: {line!r}")
        return proc

    return start


def storescp(work: Path, port: int) -> subprocess.Popen[bytes]:
    out = work / "out"
    out.mkdir()
    return subprocess.Popen(
        ["storescp", "-od", str(out), "+xa", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bare(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_scp.py"), str(port), str(work / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextmanager
def running(start: Receiver) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    port = free_port()
    proc = start(work, port)
    try:
        wait_port(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def send(port: int, files: list[Path], associations: int, nodelay: bool) -> float:
    env = {"PATH": os.environ.get("PATH", "/usr/bin")}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    chunks = [files[i::associations] for i in range(associations)]
    began = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "storescu",
                "-aet",
                "BENCHSCU",
                "-aec",
                "CONSULT",
                "127.0.0.1",
                str(port),
                *map(str, chunk),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - began


@dataclass
class Row:
    """One receiver and workload, measured once per round."""

    name: str
    start: Receiver
    associations: int
    nodelay: bool = True
    runs: int = 0  # 0: every round
    rates: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    def measure_once(self, files: list[Path]) -> None:
        with running(self.start) as (port, proc):
            cpu0 = tree_cpu(proc.pid)
            seconds = send(port, files, self.associations, self.nodelay)
            self.cpus.append((tree_cpu(proc.pid) - cpu0) * 1000 / len(files))
        self.rates.append(len(files) / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--s3", action="store_true", help="also our receiver on moto's S3")
    parser.add_argument(
        "--database-url",
        default="",
        help="also our receiver with its catalog on this PostgreSQL server (report only; a "
        "fresh database per run, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument("--quick", action="store_true", help="skip the runs without TCP_NODELAY")
    parser.add_argument(
        "--only", default="", help="run only the rows whose name contains this (ratios need all)"
    )
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (apt-get install dcmtk)")
    files = generate(Path(tempfile.gettempdir()) / "consult-bench-ct", args.count)
    print(
        f"{len(files)} instances, {files[0].stat().st_size / 1024:.0f} KiB each; "
        f"median of {args.runs} rounds (every row once per round, interleaved); "
        f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}"
    )
    bare1 = Row("bare pynetdicom SCP, 1 association", bare, 1)
    dcmtk1 = Row("dcmtk storescp, 1 association", storescp, 1)
    ours1 = Row("consult receive, 1 association", ours(1), 1)
    ours4 = Row(
        f"consult receive x{args.processes} processes, 4 associations", ours(args.processes), 4
    )
    bare4 = Row("bare pynetdicom SCP, 4 associations", bare, 4)
    rows = [bare1, dcmtk1, ours1, ours4, bare4]
    if not args.quick:
        slow = max(1, args.runs // 2)
        rows.append(Row("consult receive, 1 association, no TCP_NODELAY", ours(1), 1, False, slow))
        rows.append(Row("dcmtk storescp, 1 association, no TCP_NODELAY", storescp, 1, False, slow))
    with contextlib.ExitStack() as stack:
        if args.s3:
            endpoint = stack.enter_context(moto_server())
            rows.append(
                Row(
                    "consult receive on moto S3, 1 association (report only)",
                    ours(1, endpoint),
                    1,
                    runs=max(1, args.runs // 2),
                )
            )
        if args.database_url:
            stack.callback(_drop_databases, args.database_url)
            rows.append(
                Row(
                    "consult receive on PostgreSQL, 1 association (report only)",
                    ours(1, database_url=args.database_url),
                    1,
                )
            )
            rows.append(
                Row(
                    f"consult receive x{args.processes} on PostgreSQL, 4 associations (report)",
                    ours(args.processes, database_url=args.database_url),
                    4,
                )
            )
        rows = [row for row in rows if args.only in row.name]
        for round_ in range(args.runs):
            for row in rows:
                if not row.runs or round_ < row.runs:
                    row.measure_once(files)
            print(f"  round {round_ + 1}/{args.runs} done", file=sys.stderr, flush=True)
    for row in rows:
        rate, cpu = statistics.median(row.rates), statistics.median(row.cpus)
        print(f"  {row.name:<52} {rate:7.1f} inst/s  {cpu:6.2f} ms CPU/inst", flush=True)
    print()

    def ratio(label: str, mine: Row, base: Row, target: str = "") -> None:
        if not mine.rates or not base.rates:
            return
        paired = statistics.median(m / b for m, b in zip(mine.rates, base.rates, strict=False))
        of_medians = statistics.median(mine.rates) / statistics.median(base.rates)
        note = f"  (target >= {target})" if target else ""
        print(f"{label:<46} {of_medians:.2f}x  (median of per-round ratios {paired:.2f}x){note}")

    ratio("ours 1 assoc / bare pynetdicom 1 assoc:", ours1, bare1, "1.0")
    ratio("ours 4 assoc / bare pynetdicom 1 assoc:", ours4, bare1, "1.5")
    ratio("ours 4 assoc / bare pynetdicom 4 assoc:", ours4, bare4)
    ratio("ours 1 assoc / dcmtk storescp 1 assoc:", ours1, dcmtk1)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


if __name__ == "__main__":
    main()
