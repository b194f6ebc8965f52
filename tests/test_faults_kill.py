"""The receiver process is SIGKILLed in the middle of a study: every instance the sender saw
confirmed is indexed with its object intact, no catalog row points at a missing or wrong
object, and after a restart the sender's full resend leaves exactly one set of records.

The receiver is the real thing (``python -m consult receive`` with ``CONSULT_*`` settings,
local folder store); the sender is dcmtk's ``storescu -v``, whose output says which files
were confirmed."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from consult.dicom.part10 import split_part10
from consult.services import Services
from consult.settings import Settings
from tests.fault_support import (
    OUR_AE,
    SENDER_AE,
    assert_one_set,
    check_catalog,
    make_study,
    register_sender,
    write_files,
)
from tests.support import require_tool

ROOT = Path(__file__).resolve().parent.parent
STUDY_SIZE = 30
KILL_AFTER = 10  # confirmed instances


class _Lines:
    """A child's output, line by line, read on a thread (never blocks the test)."""

    def __init__(self, stream: object) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, timeout: float) -> str | None:
        line = self.lines.get(timeout=timeout)
        if line is not None:
            self.seen.append(line)
        return line


@contextmanager
def _receiver(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    with log.open("a") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consult", "receive"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        out = _Lines(proc.stdout)
        line = out.next(timeout=30)
        match = re.search(r"listening on port (\d+)", line or "")
        assert match, f"receiver did not start: {line!r}\n{log.read_text()}"
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _storescu(port: int, files: list[Path]) -> subprocess.Popen[str]:
    storescu = require_tool("storescu", "dcmtk")
    return subprocess.Popen(
        [storescu, "-v", "-aet", SENDER_AE, "-aec", OUR_AE, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": os.environ.get("PATH", "")},
    )


def test_sigkill_mid_study_loses_nothing_confirmed(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"database_url": database_url})
    services = Services.open(settings)
    register_sender(services)
    services.close()
    study = make_study(STUDY_SIZE, seed="sigkill", size=256)
    files = write_files(study, tmp_path / "study")
    uid_of = {str(f): str(ds.SOPInstanceUID) for f, ds in zip(files, study, strict=True)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSULT_")}
    env |= {
        "CONSULT_DATA_DIR": str(settings.data_dir),
        "CONSULT_DATABASE_URL": database_url,
        "CONSULT_DICOM_HOST": "127.0.0.1",
        "CONSULT_DICOM_PORT": "0",
    }
    log = tmp_path / "receiver.log"

    # 1. Send the study; SIGKILL the receiver once KILL_AFTER instances are confirmed.
    confirmed: list[str] = []
    with _receiver(env, log) as (proc, port):
        sender = _storescu(port, files)
        out = _Lines(sender.stdout)
        current = ""
        while (line := out.next(timeout=60)) is not None:
            if m := re.match(r"I: Sending file: (.+)$", line):
                current = m.group(1)
            elif "Received Store Response (Success)" in line:
                confirmed.append(uid_of[current])
                if len(confirmed) == KILL_AFTER:
                    proc.send_signal(signal.SIGKILL)
        sender.wait(timeout=30)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    assert sender.returncode != 0, "\n".join(out.seen)
    assert KILL_AFTER <= len(confirmed) < STUDY_SIZE, "the kill did not land mid-study"

    # 2. What survived: every confirmed instance, with a whole object of the right bytes.
    services = Services.open(settings)
    try:
        summary = check_catalog(services)
        assert set(confirmed) <= summary.uids
        assert summary.instances == summary.versions == summary.counted == len(summary.uids)
        assert summary.preview_jobs == summary.versions
        for path, ds in zip(files, study, strict=True):
            if str(ds.SOPInstanceUID) in summary.uids:
                _assert_stored_as_sent(services, path)
        _assert_store_intact(services)
    finally:
        services.close()

    # 3. Restart and resend everything: one set of records.
    with _receiver(env, log) as (_proc, port):
        sender = _storescu(port, files)
        output, _ = sender.communicate(timeout=60)
        assert sender.returncode == 0, output
        assert output.count("Received Store Response (Success)") == STUDY_SIZE, output
    services = Services.open(settings)
    try:
        assert_one_set(check_catalog(services), study)
        for path in files:
            _assert_stored_as_sent(services, path)
        _assert_store_intact(services)
    finally:
        services.close()


def _assert_stored_as_sent(services: Services, path: Path) -> None:
    """The stored dataset bytes are the file's (storescu sends them unchanged here)."""
    from sqlalchemy import select

    from consult.catalog.tables import instance_versions, instances

    blob = path.read_bytes()
    meta, offset = split_part10(blob)
    with services.catalog.read() as conn:
        row = conn.execute(
            select(instance_versions.c.object_key, instance_versions.c.dataset_offset)
            .join(instances, instances.c.id == instance_versions.c.instance_pk)
            .where(instances.c.sop_instance_uid == str(meta.MediaStorageSOPInstanceUID))
        ).one()
    assert services.store.get(row.object_key)[row.dataset_offset :] == blob[offset:]


def _assert_store_intact(services: Services) -> None:
    """Every object under originals/ holds the dataset its key's SHA-256 names (an
    interrupted write leaves at most a hidden temporary file, never a partial object)."""
    import hashlib

    for info in services.store.list("originals/"):
        blob = services.store.get(info.key)
        _meta, offset = split_part10(blob)
        assert info.key.endswith(hashlib.sha256(blob[offset:]).hexdigest() + ".dcm"), info.key
