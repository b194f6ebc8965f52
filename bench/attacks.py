"""Service under attack: legitimate C-STOREs and page views while each attack runs.

Starts ``consult serve`` (receiver, web app, one worker; SQLite + folder store, the demo
hospitals), then, for every attack, measures in the same run and interleaved:

- stores: dcmtk ``storescu`` sending fresh CT instances (256x256 int16) as the demo PACS,
  in instances/s, and how many got a status other than Success;
- pages: a logged-in referring doctor loading the study list and the study page back to
  back for as long as the stores take: median and 95th percentile latency, and failures;
- memory: the resident size of the server's process tree at the end of the round, against
  its size before the attack.

Attacks (each from its own threads, as fast as they go, for the whole round):

- ``pdu``: 8 connections to the DICOM port, each declaring a 512 MiB PDU and sending
  nothing more (reconnecting when dropped);
- ``login``: 32 threads posting wrong passwords for a real account to ``POST /api/session``;
- ``body``: 4 threads streaming 600 MiB bodies to ``POST /api/session`` (public route);
- ``render``: 16 threads of one logged-in user asking for a new window of a 2048x2048 CT
  frame each time.

Reports the median of N rounds per row and the ratios to the no-attack row.

usage: python bench/attacks.py [--runs 3] [--count 60] [--only pdu,login,...]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ATTACKS = ("pdu", "login", "body", "render")


def ct_file(path: Path, study: str, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = "BENCH^Attack", "BENCH-2", "REFHOSP"
    ds.Modality, ds.InstanceNumber = "CT", 1
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = rng.integers(0, 2500, size=(size, size), dtype=np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (Linux /proc)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_rss(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


class RssPeak:
    """The largest resident size of a process tree, sampled every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._done = pid, tree_rss(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, tree_rss(self.pid))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


@dataclass
class Server:
    proc: subprocess.Popen[str]
    web_port: int
    dicom_port: int
    ae_title: str
    passwords: dict[str, str]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        cookie: str = "",
        timeout: float = 30,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=timeout)
        headers = {"content-type": "application/json"} if body is not None else {}
        if cookie:
            headers["cookie"] = cookie
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), response
        finally:
            conn.close()

    def login(self, username: str) -> str:
        body = json.dumps({"username": username, "password": self.passwords[username]})
        status, _, response = self.request("POST", "/api/session", body.encode())
        if status != 200:
            raise RuntimeError(f"login of {username} failed: {status}")
        cookie = response.getheader("set-cookie") or ""
        return cookie.split(";", 1)[0]


@contextmanager
def serve(work: Path) -> Iterator[Server]:
    env = {
        **os.environ,
        "CONSULT_DATA_DIR": str(work / "data"),
        "CONSULT_DICOM_PORT": "0",
        "CONSULT_HTTP_PORT": "0",
        "CONSULT_DICOM_HOST": "127.0.0.1",
        "CONSULT_HTTP_HOST": "127.0.0.1",
        "CONSULT_WORKERS": "1",
        "CONSULT_STABLE_SECONDS": "0",
    }
    env.pop("CONSULT_DATABASE_URL", None)
    consult = [sys.executable, "-m", "consult"]
    subprocess.run([*consult, "demo"], env=env, check=True, capture_output=True)
    passwords = dict(
        line.split(" ", 1)
        for line in (work / "data" / "demo-credentials.txt").read_text().splitlines()
    )
    proc = subprocess.Popen(
        [*consult, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not any("web:" in line for line in lines):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"consult serve did not start: {lines}")
        lines.append(line)
    text = "".join(lines)
    dicom = re.search(r"AE title (\S+) on port (\d+)", text)
    web = re.search(r"http://[^:]+:(\d+)/", text)
    assert dicom and web, text
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
    try:
        yield Server(proc, int(web.group(1)), int(dicom.group(2)), dicom.group(1), passwords)
    finally:
        proc.terminate()
        proc.wait(30)


# --- the attacks -------------------------------------------------------------------------


def pdu_flood(server: Server, stop: threading.Event) -> None:
    header = struct.pack(">BBI", 0x01, 0, 512 * 1024 * 1024)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=2) as sock:
                sock.sendall(header + b"\x00" * 64)
                while not stop.is_set() and sock.recv(4096):
                    pass
        except OSError:
            pass


def login_flood(server: Server, stop: threading.Event) -> None:
    body = json.dumps({"username": "specialist", "password": "not-the-password-1"}).encode()
    while not stop.is_set():
        try:
            server.request("POST", "/api/session", body, timeout=10)
        except OSError:
            pass


def body_flood(server: Server, stop: threading.Event) -> None:
    chunk = b"0" * (1 << 20)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", server.web_port), timeout=10) as sock:
                sock.sendall(
                    b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 629145600\r\n\r\n"
                )
                for _ in range(600):
                    if stop.is_set():
                        break
                    sock.sendall(chunk)
        except OSError:
            pass


def render_flood(server: Server, stop: threading.Event, preview_url: str, cookie: str) -> None:
    rng = random.Random()
    while not stop.is_set():
        window = f"{rng.randint(-500, 1500)},{rng.randint(100, 3000)}"
        try:
            server.request("GET", f"{preview_url}?window={window}", cookie=cookie, timeout=30)
        except OSError:
            pass


# --- the legitimate load -----------------------------------------------------------------


@dataclass
class Round:
    stores_per_s: float
    store_failures: int
    page_p50: float
    page_p95: float
    page_failures: int
    rss_growth: int


def measure(server: Server, work: Path, count: int, cookie: str, study_uid: str) -> Round:
    folder = Path(tempfile.mkdtemp(dir=work))
    study = generate_uid()
    files = [folder / f"{i}.dcm" for i in range(count)]
    for i, path in enumerate(files):
        ct_file(path, study, 256, i)
    latencies: list[float] = []
    failures = 0
    done = threading.Event()

    def pages() -> None:
        nonlocal failures
        while not done.is_set():
            for path in ("/", f"/studies/{study_uid}"):
                start = time.perf_counter()
                try:
                    status, _, _ = server.request("GET", path, cookie=cookie, timeout=30)
                except OSError:
                    status = 0
                latencies.append(time.perf_counter() - start)
                failures += status != 200

    viewer = threading.Thread(target=pages)
    viewer.start()
    start = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aet", "REFPACS", "-aec", server.ae_title, "-to", "30",
         "127.0.0.1", str(server.dicom_port), *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    done.set()
    viewer.join()
    refused = len(re.findall(r"status=?\s*(?!0000)[0-9A-F]{4}H|Store Failed|failed", result.stderr))
    latencies.sort()
    return Round(
        stores_per_s=count / elapsed,
        store_failures=refused + (result.returncode != 0),
        page_p50=statistics.median(latencies),
        page_p95=latencies[int(0.95 * (len(latencies) - 1))],
        page_failures=failures,
        rss_growth=0,
    )


def big_preview(server: Server, work: Path, cookie: str) -> str:
    """Store one 2048x2048 CT frame and wait for its pyramid; its preview URL."""
    path = work / "big.dcm"
    study = generate_uid()
    ct_file(path, study, 2048, 7)
    subprocess.run(
        ["storescu", "-aet", "REFPACS", "-aec", server.ae_title, "127.0.0.1",
         str(server.dicom_port), str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body, _ = server.request("GET", f"/api/studies/{study}", cookie=cookie)
        if status == 200:
            previews = json.loads(body)["series"][0]["instances"][0]["previews"]
            if previews and previews[0]["status"] == "ready":
                return str(previews[0]["url"])
        time.sleep(0.2)
    raise RuntimeError("the 2048x2048 preview was not built within 60 s")


def run_attack(
    name: str, server: Server, preview_url: str, attacker_cookie: str
) -> tuple[Callable[[threading.Event], None], int]:
    if name == "pdu":
        return (lambda stop: pdu_flood(server, stop)), 8
    if name == "login":
        return (lambda stop: login_flood(server, stop)), 32
    if name == "body":
        return (lambda stop: body_flood(server, stop)), 4
    return (lambda stop: render_flood(server, stop, preview_url, attacker_cookie)), 16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--only", default=",".join(ATTACKS))
    args = parser.parse_args()
    attacks = [a for a in args.only.split(",") if a]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        parser.error(
            f"unknown attack(s): {', '.join(sorted(unknown))}; known: {', '.join(ATTACKS)}"
        )
    rows: dict[str, list[Round]] = {name: [] for name in ["none", *attacks]}
    with tempfile.TemporaryDirectory(prefix="bench-attacks-") as tmp, serve(Path(tmp)) as server:
        work = Path(tmp)
        cookie = server.login("referrer")
        attacker = server.login("referrer")
        _, body, _ = server.request("GET", "/api/studies", cookie=cookie)
        study_uid = json.loads(body)["studies"][0]["study_uid"]
        preview_url = big_preview(server, work, cookie) if "render" in attacks else ""
        for _ in range(args.runs):
            for name in rows:
                before = tree_rss(server.proc.pid)
                peak = RssPeak(server.proc.pid)
                stop = threading.Event()
                threads: list[threading.Thread] = []
                if name != "none":
                    attack, n = run_attack(name, server, preview_url, attacker)
                    threads = [
                        threading.Thread(target=attack, args=(stop,), daemon=True) for _ in range(n)
                    ]
                    for thread in threads:
                        thread.start()
                result = measure(server, work, args.count, cookie, study_uid)
                result.rss_growth = peak.stop() - before
                stop.set()
                for thread in threads:
                    thread.join(30)
                rows[name].append(result)
                print(f"  {name}: {result}", file=sys.stderr, flush=True)
    base = rows["none"]
    base_rate = statistics.median(r.stores_per_s for r in base)
    base_p50 = statistics.median(r.page_p50 for r in base)
    print(f"\n{args.runs} rounds, {args.count} instances per round; medians\n")
    print(
        "| attack | stores/s | vs none | store failures | page p50 | p95 | vs none (p50) "
        "| page failures | peak RSS growth |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, results in rows.items():
        rate = statistics.median(r.stores_per_s for r in results)
        p50 = statistics.median(r.page_p50 for r in results)
        p95 = statistics.median(r.page_p95 for r in results)
        growth = max(r.rss_growth for r in results) / 2**20
        store_failures = sum(r.store_failures for r in results)
        print(
            f"| {name} | {rate:.1f} | {rate / base_rate:.2f}x | {store_failures} "
            f"| {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms | {p50 / base_p50:.2f}x "
            f"| {sum(r.page_failures for r in results)} | {growth:+.0f} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
