"""The ``consult`` command line, run as a real subprocess."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest

from consult.cli.demo import demo_study
from consult.dicom.part10 import split_part10
from tests.support import run_consult


def test_admin_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_consult(data, "hospitals", "add", "St. Elsewhere").returncode == 0
    result = run_consult(
        data,
        "peers",
        "add",
        "--hospital",
        "St. Elsewhere",
        "--ae",
        "ELSEPACS",
        "--host",
        "10.1.2.3",
        "--port",
        "104",
    )
    assert result.returncode == 0, result.stderr
    assert "ELSEPACS@10.1.2.3" in result.stdout
    result = run_consult(
        data,
        "users",
        "add",
        "alice",
        "--hospital",
        "St. Elsewhere",
        "--role",
        "referring",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert result.returncode == 0, result.stderr
    listing = run_consult(data, "hospitals", "list")
    assert "St. Elsewhere" in listing.stdout

    again = run_consult(
        data,
        "users",
        "add",
        "alice",
        "--hospital",
        "St. Elsewhere",
        "--role",
        "referring",
        "--password-stdin",
        stdin="correct horse battery\n",
    )
    assert again.returncode == 2 and "exists already" in again.stderr
    nowhere = run_consult(data, "peers", "add", "--hospital", "Nowhere", "--ae", "X", "--host", "h")
    assert nowhere.returncode == 2 and "Nowhere" in nowhere.stderr
    short = run_consult(
        data,
        "users",
        "add",
        "bob",
        "--hospital",
        "St. Elsewhere",
        "--role",
        "specialist",
        "--password-stdin",
        stdin="short\n",
    )
    assert short.returncode == 2 and "at least 8" in short.stderr


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = run_consult(tmp_path, "hospitals", "list", env={"CONSULT_DICOM_PORT": "eleven"})
    assert result.returncode == 2
    assert "CONSULT_DICOM_PORT" in result.stderr


@pytest.mark.parametrize("all_versions", [False, True])
def test_demo_then_export_gives_the_bytes_as_received(tmp_path: Path, all_versions: bool) -> None:
    data = tmp_path / "data"
    demo = run_consult(data, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "login referrer / " in demo.stdout and "login specialist / " in demo.stdout
    assert run_consult(data, "demo").stdout == demo.stdout  # idempotent, same credentials

    study = demo_study()
    out = tmp_path / "export"
    args = ["export", str(study[0][0].StudyInstanceUID), "--out", str(out)]
    result = run_consult(data, *args, *(["--all-versions"] if all_versions else []))
    assert result.returncode == 0, result.stderr
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == len(study)
    from consult.cli.demo import dataset_bytes

    expected = {hashlib.sha256(dataset_bytes(ds)).hexdigest() for ds, _ in study}
    got = set()
    for path in files:
        blob = path.read_bytes()
        meta, offset = split_part10(blob)
        got.add(hashlib.sha256(blob[offset:]).hexdigest())
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == meta.MediaStorageSOPInstanceUID
        assert ds.StudyInstanceUID not in str(path)
    assert got == expected

    missing = run_consult(data, "export", "1.2.3.4", "--out", str(out))
    assert missing.returncode == 2 and "no study" in missing.stderr
