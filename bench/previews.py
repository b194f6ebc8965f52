"""Preview benchmark: stored DICOM -> finished, stored deep-zoom pyramid, against baselines.

Workloads, generated deterministically: MG 4096x3328 uint16 MONOCHROME2 and CR 3000x3000
12-bit MONOCHROME1 (smooth structures plus noise, a Window Center/Width each).

Measured in the same run, each run in its own fresh process, median of N (default 5):
- ours: ``consult.previews.builds.handle_preview`` on the instance already in the folder store
  (fetch, decode, LUT window, levels, JPEG q85 tiles, one fsynced pack, catalog rows);
- plain Pillow: pydicom ``pixel_array``, window with numpy, ``resize`` per level (each
  from the level above, Pillow's default filter), crop tiles, save JPEG q85 files (no
  fsync) -- the reference our path must not be slower than;
- ``vips dzsave`` (Debian libvips-tools) on the same windowed 8-bit image (pyramid only).
Time in seconds and memory growth (peak RSS over the process's RSS before the work) as a
multiple of the decoded 16-bit image.

Also: from the C-STORE response of an MG instance to its first tile served by the app
(``consult serve``: receiver + web + 1 worker), and a 300-slice CT (512x512) ingested, then
all previews built by 1 and 2 ``consult worker`` processes.

usage: python bench/previews.py [--runs 5] [--quick] [--skip-latency] [--skip-ct]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "bench password 1"  # noqa: S105 - a throwaway user in a temporary folder
TS = ExplicitVRLittleEndian


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def rss() -> int:
    return _status("VmRSS:")


def peak() -> int:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from
    the parent through fork and exec, so a child of this (large) bench would report the
    bench's own peak."""
    return _status("VmHWM:")


# -- workloads ------------------------------------------------------------------------------


def image(kind: str) -> Dataset:
    """The MG or CR workload (same pixels every run; fresh UIDs)."""
    rng = np.random.default_rng(20261129)
    if kind == "MG":
        rows, cols, top, sop = 3328, 4096, 16383, DigitalMammographyXRayImageStorageForPresentation
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        breast = (xx / (0.8 * cols)) ** 2 + ((yy - rows / 2) / (0.48 * rows)) ** 2 < 1
        tissue = 7000 + 2500 * np.sin(xx / 53) * np.cos(yy / 71) - 2000 * (xx / cols)
        values = np.where(breast, tissue + rng.normal(0, 60, (rows, cols)), 300)
        photometric, bits, window = "MONOCHROME2", 16, (6500, 7000)
    else:
        rows, cols, top, sop = 3000, 3000, 4095, ComputedRadiographyImageStorage
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        body = 2000 + 900 * np.cos(xx / 300) * np.sin(yy / 450) + 300 * np.sin(xx / 17)
        values = body + rng.normal(0, 25, (rows, cols))
        photometric, bits, window = "MONOCHROME1", 12, (2000, 2400)
    pixels = np.clip(values, 0, top).astype(np.uint16)
    ds = dataset(sop, kind, rows, cols)
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    return ds


def dataset(sop: str, modality: str, rows: int, cols: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = modality, "BENCH-1", "BENCH^Previews"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.InstanceNumber = rows, cols, 1, 1
    return ds


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ct_slices(count: int) -> list[Dataset]:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2 < 220**2).astype(np.int16)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(count):
        ds = dataset(CTImageStorage, "CT", 512, 512)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, i + 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
        noise = rng.integers(-20, 20, (512, 512), dtype=np.int16)
        ds.PixelData = (body * (1064 + 30 * (i % 7)) + noise).astype(np.int16).tobytes()
        out.append(ds)
    return out


# -- one measured run per process ----------------------------------------------------------


def child_ours(data_dir: str, version_id: str) -> dict[str, float]:
    from consult.previews.builds import handle_preview
    from consult.services import Services
    from consult.settings import Settings

    services = Services.open(Settings(data_dir=Path(data_dir)), migrate=False)
    with services.catalog.read():
        pass
    base = rss()
    start = time.perf_counter()
    handle_preview(services, {"version_id": int(version_id)})
    return {"seconds": time.perf_counter() - start, "growth": peak() - base}


def child_pillow(path: str, out_dir: str) -> dict[str, float]:
    import pydicom
    from PIL import Image

    base = rss()
    start = time.perf_counter()
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float32)
    values = values * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    low = center - width / 2
    pixels = np.clip((values - low) / width * 255.0, 0, 255).astype(np.uint8)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = 255 - pixels
    full = Image.fromarray(pixels)
    w, h = full.size
    top = (max(w, h) - 1).bit_length()
    img = full
    for level in range(top, -1, -1):
        scale = 2 ** (top - level)
        size = (math.ceil(w / scale), math.ceil(h / scale))
        img = img if level == top else img.resize(size)  # from the level above
        folder = Path(out_dir) / str(level)
        folder.mkdir(parents=True)
        for row in range(math.ceil(size[1] / 254)):
            for col in range(math.ceil(size[0] / 254)):
                box = (
                    max(col * 254 - 1, 0),
                    max(row * 254 - 1, 0),
                    min((col + 1) * 254 + 1, size[0]),
                    min((row + 1) * 254 + 1, size[1]),
                )
                img.crop(box).save(folder / f"{col}_{row}.jpeg", quality=85)
    return {"seconds": time.perf_counter() - start, "growth": peak() - base}


# vips runs under a tiny launcher (python -S, nothing imported) so that its peak RSS, as
# wait4 reports it, is its own and not inherited from a large parent.
VIPS_LAUNCHER = """
import json, resource, subprocess, sys, time
pgm, out = sys.argv[1], sys.argv[2]
subprocess.run(["vips", "--version"], capture_output=True, check=True)
base = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
start = time.perf_counter()
subprocess.run(["vips", "dzsave", pgm, out + "/pyramid", "--tile-size", "254",
                "--overlap", "1", "--suffix", ".jpeg[Q=85]"], check=True)
seconds = time.perf_counter() - start
top = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "growth": top - base}))
"""


def measure(mode: str, *args: str) -> dict[str, float]:
    command = (
        [sys.executable, "-S", "-c", VIPS_LAUNCHER, *args]
        if mode == "vips"
        else [sys.executable, __file__, "--child", mode, *args]
    )
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the workloads' figures -----------------------------------------------------------------


def pyramid_figures(kind: str, work: Path, runs: int) -> dict[str, Any]:
    from consult.access import directory
    from consult.dicom.synthetic import dataset_bytes
    from consult.ingest.pipeline import Origin, ingest
    from consult.services import Services
    from consult.settings import Settings
    from viewer import open_frames

    ds = image(kind)
    decoded = int(ds.Rows) * int(ds.Columns) * 2
    path = work / f"{kind}.dcm"
    blob = part10(ds)
    path.write_bytes(blob)
    data = work / f"{kind}-data"
    services = Services.open(Settings(data_dir=data))
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, f"Bench {kind}")
    origin = Origin(hospital.id, "BENCH", "127.0.0.1", 1)
    stored = ingest(services, dataset_bytes(ds), transfer_syntax_uid=TS, origin=origin)
    services.close()
    pgm = work / f"{kind}.pgm"
    rendered = open_frames(blob).render(0)
    pgm.write_bytes(b"P5 %d %d 255\n" % (rendered.shape[1], rendered.shape[0]) + rendered.tobytes())
    del rendered, blob
    results: dict[str, list[dict[str, float]]] = {"ours": [], "pillow": [], "vips": []}
    for i in range(runs):
        results["ours"].append(measure("ours", str(data), str(stored.version_id)))
        out = work / f"{kind}-pillow-{i}"
        results["pillow"].append(measure("pillow", str(path), str(out)))
        shutil.rmtree(out, ignore_errors=True)
        if shutil.which("vips"):
            out = work / f"{kind}-vips-{i}"
            out.mkdir()
            results["vips"].append(measure("vips", str(pgm), str(out)))
            shutil.rmtree(out, ignore_errors=True)
    figures: dict[str, Any] = {"decoded_mb": decoded / 1e6}
    for name, runs_ in results.items():
        if runs_:
            figures[name] = {
                "seconds": statistics.median(r["seconds"] for r in runs_),
                "growth_x": statistics.median(r["growth"] for r in runs_) / decoded,
            }
    return figures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def first_tile_latency(work: Path, runs: int) -> list[float]:
    """C-STORE response of an MG instance -> its first tile served (serve: 1 worker)."""
    import httpx
    from pynetdicom import AE

    from consult.access import directory
    from consult.services import Services
    from consult.settings import Settings

    data, http, dicom = work / "serve-data", free_port(), free_port()
    services = Services.open(Settings(data_dir=data))
    with services.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Bench sender")
        directory.add_peer(conn, hospital, "BENCH", "127.0.0.1")
        directory.add_user(
            conn, "bench", hospital=hospital, role=directory.Role.SPECIALIST, password=PASSWORD
        )
    services.close()
    env = {
        **os.environ,
        "CONSULT_DATA_DIR": str(data),
        "CONSULT_HTTP_PORT": str(http),
        "CONSULT_DICOM_PORT": str(dicom),
        "CONSULT_WORKERS": "1",
        "PYTHONPATH": str(ROOT),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "consult", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{http}"
    latencies = []
    try:
        client = httpx.Client(base_url=base, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                if (
                    client.post(
                        "/api/session", json={"username": "bench", "password": PASSWORD}
                    ).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("consult serve did not start")
            time.sleep(0.1)
        time.sleep(2)  # let the worker process start
        template = image("MG")
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(template.SOPClassUID, ExplicitVRLittleEndian)
        for _ in range(runs):
            ds = template.copy()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            assoc = ae.associate("127.0.0.1", dicom, ae_title="CONSULT")
            status = assoc.send_c_store(ds)
            sent = time.perf_counter()
            assoc.release()
            assert status.Status == 0, status
            while True:
                detail = client.get(f"/api/studies/{ds.StudyInstanceUID}").json()
                previews = detail["series"][0]["instances"][0]["previews"]
                if previews and previews[0]["status"] == "ready":
                    tile = client.get(f"/previews/{previews[0]['id']}_files/0/0_0.jpeg")
                    if tile.status_code == 200:
                        latencies.append(time.perf_counter() - sent)
                        break
                time.sleep(0.01)
    finally:
        server.terminate()
        server.wait(30)
    return latencies


def ct_series(work: Path, count: int) -> dict[int, float]:
    """Ingest ``count`` CT slices, then time 1 and 2 worker processes building all previews."""
    from sqlalchemy import func, select

    from consult.access import directory
    from consult.catalog.tables import jobs
    from consult.dicom.synthetic import dataset_bytes
    from consult.ingest.pipeline import Origin, ingest
    from consult.services import Services
    from consult.settings import Settings

    bodies = [dataset_bytes(ds) for ds in ct_slices(count)]
    out: dict[int, float] = {}
    for workers in (1, 2):
        data = work / f"ct-{workers}"
        services = Services.open(Settings(data_dir=data))
        with services.catalog.write() as conn:
            hospital = directory.add_hospital(conn, "Bench CT")
        origin = Origin(hospital.id, "BENCH", "127.0.0.1", 1)
        for body in bodies:
            ingest(services, body, transfer_syntax_uid=TS, origin=origin)
        env = {**os.environ, "CONSULT_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        command = [sys.executable, "-m", "consult", "worker"]
        procs = [
            subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL) for _ in range(workers)
        ]
        try:
            while True:
                with services.catalog.read() as conn:
                    left = conn.execute(
                        select(func.count()).where(jobs.c.status != "done")
                    ).scalar_one()
                if not left:
                    break
                time.sleep(0.05)
            out[workers] = time.perf_counter() - start
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
            services.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 run, 30 CT slices")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        runner = {"ours": child_ours, "pillow": child_pillow}[mode]
        print(json.dumps(runner(*rest)))
        return
    runs = 1 if args.quick else args.runs
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-previews-") as tmp:
        work = Path(tmp)
        for kind in ("MG", "CR"):
            f = pyramid_figures(kind, work, runs)
            report[kind] = f
            ours, pillow = f["ours"], f["pillow"]
            ratio = ours["seconds"] / pillow["seconds"]
            print(
                f"{kind}: ours {ours['seconds']:.3f} s (growth {ours['growth_x']:.2f}x the "
                f"{f['decoded_mb']:.1f} MB decoded image), plain Pillow {pillow['seconds']:.3f} s "
                f"({pillow['growth_x']:.2f}x): ours/Pillow = {ratio:.2f}"
            )
            if "vips" in f:
                vips = f["vips"]
                ratio = ours["seconds"] / vips["seconds"]
                print(
                    f"{kind}: vips dzsave {vips['seconds']:.3f} s for the pyramid alone "
                    f"({vips['growth_x']:.2f}x): ours/vips = {ratio:.2f}"
                )
        if not args.skip_latency:
            latencies = first_tile_latency(work, runs)
            report["first_tile_s"] = statistics.median(latencies)
            print(
                f"MG C-STORE response -> first tile served: median {report['first_tile_s']:.3f} s "
                f"(runs: {', '.join(f'{x:.3f}' for x in latencies)})"
            )
        if not args.skip_ct:
            count = 30 if args.quick else 300
            ct = ct_series(work, count)
            report["ct"] = ct
            for workers, seconds in ct.items():
                print(
                    f"{count}-slice CT, all previews built by {workers} worker(s): {seconds:.2f} s "
                    f"({1000 * seconds / count:.1f} ms per slice)"
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
