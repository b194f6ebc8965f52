"""``consult send``: the C-STORE SCU, against our receiver and a bit-preserving dcmtk storescp."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from consult.catalog.tables import instance_versions
from consult.dicom import sender as send
from consult.dicom.part10 import split_part10
from consult.dicom.sender import Destination, collect, parse_destination, send_files, summary
from consult.dicom.synthetic import demo_study, write_part10
from consult.errors import ConfigurationError
from consult.receiver import Receiver
from consult.services import Services
from consult.settings import Settings
from tests.support import (
    ConsultCli,
    free_port,
    referring_services,
    require_tool,
    sample,
    wait_until,
)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    with referring_services(settings) as svc:
        yield svc


@pytest.fixture
def receiver(services: Services) -> Iterator[int]:
    rx = Receiver(services)
    port = rx.start()
    yield port
    rx.stop()


@pytest.fixture
def study_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "study" / "nested"
    folder.mkdir(parents=True)
    paths = []
    for i, (ds, ts) in enumerate(demo_study()):
        path = (folder if i % 2 else folder.parent) / f"in-{i}.dcm"
        write_part10(ds, ts, path)
        paths.append(path)
    return paths


def _dataset_sha(path: Path) -> str:
    blob = path.read_bytes()
    _, offset = split_part10(blob)
    return hashlib.sha256(blob[offset:]).hexdigest()


def test_parse_destination() -> None:
    assert parse_destination("PACS@10.0.0.1:104") == Destination("PACS", "10.0.0.1", 104)
    assert parse_destination("A B@[::1]:11112") == Destination("A B", "::1", 11112)
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:x", "PACS@host:0", "X" * 17 + "@h:1"):
        with pytest.raises(ConfigurationError):
            parse_destination(bad)


def test_collect_recursive(study_files: list[Path]) -> None:
    top = study_files[0].parent
    assert len(list(collect([top], recursive=False))) == 3
    assert sorted(collect([top], recursive=True)) == sorted(study_files)


def test_send_cli_to_receiver(
    services: Services, receiver: int, study_files: list[Path], tmp_path: Path
) -> None:
    top = study_files[0].parent
    cli = ConsultCli(tmp_path / "cli-data")
    result = cli(
        "send",
        str(top),
        "--recursive",
        "--progress",
        "--to",
        f"CONSULT@127.0.0.1:{receiver}",
        "--aet",
        "REFPACS",
    )
    assert result.status == 0, result.out + result.err
    assert "5 file(s): 5 stored, 0 not stored" in result.out
    assert "0x0000 Success: 5" in result.out
    assert "sending [" in result.err and "5/5" in result.err
    with services.catalog.read() as conn:
        stored = {r.sha256 for r in conn.execute(select(instance_versions.c.sha256))}
    assert stored == {_dataset_sha(p) for p in study_files}
    assert not (tmp_path / "cli-data").exists()  # sending opens no catalog or store

    again = send_files(
        study_files, Destination("CONSULT", "127.0.0.1", receiver), calling_ae="REFPACS"
    )
    assert all(o.status == 0 for o in again)  # an identical resend is a no-op success
    with services.catalog.read() as conn:
        assert len(conn.execute(select(instance_versions.c.id)).all()) == 5


def test_send_reports_what_was_not_stored(
    services: Services, receiver: int, study_files: list[Path], tmp_path: Path
) -> None:
    ds, ts = demo_study()[0]
    del ds.StudyInstanceUID
    ds.SOPInstanceUID = generate_uid()
    no_study = tmp_path / "no-study.dcm"
    write_part10(ds, ts, no_study)
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM at all\n")
    missing = tmp_path / "missing.dcm"
    result = ConsultCli(tmp_path / "cli-data")(
        "send",
        str(study_files[0]),
        str(no_study),
        str(text),
        str(missing),
        "--to",
        f"CONSULT@127.0.0.1:{receiver}",
        "--aet",
        "REFPACS",
    )
    assert result.status == 1
    out = result.out
    assert "4 file(s): 1 stored, 3 not stored" in out
    assert "0x0000 Success: 1" in out
    assert "0xC002 Failure: Cannot Understand: 1" in out
    assert "not sent: 2" in out
    assert f"{no_study}: 0xC002 - Study Instance UID is missing" in out
    assert f"{text}: not sent - " in out
    assert f"{missing}: not sent - cannot read" in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--to", "CONSULT@127.0.0.1", "--aet", "REFPACS"], "--to must be AE@host:port"),
        (
            ["--to", "CONSULT@127.0.0.1:104", "--aet", "X" * 17],
            "--aet must be 1-16 printable ASCII characters",
        ),
    ],
)
def test_send_refuses_bad_options(
    study_files: list[Path], tmp_path: Path, options: list[str], message: str
) -> None:
    result = ConsultCli(tmp_path / "cli-data")("send", str(study_files[0]), *options)
    assert result.status == 2 and result.out == ""
    assert result.err.startswith("consult: error: ") and message in result.err


def test_send_rejected_association(receiver: int, study_files: list[Path]) -> None:
    outcomes = send_files(
        study_files, Destination("CONSULT", "127.0.0.1", receiver), calling_ae="NOBODY"
    )
    assert all(o.status is None for o in outcomes)
    assert "association rejected" in outcomes[0].comment
    assert "Calling AE title not recognised" in outcomes[0].comment
    lines = summary(outcomes)
    assert lines[0] == "5 file(s): 0 stored, 5 not stored"


def test_send_nobody_listening(study_files: list[Path]) -> None:
    outcomes = send_files(
        study_files[:1], Destination("CONSULT", "127.0.0.1", free_port()), calling_ae="REFPACS"
    )
    assert outcomes[0].status is None
    assert "association failed" in outcomes[0].comment


def test_more_than_128_contexts_take_more_associations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """130 private SOP classes, one context each, to a bare pynetdicom SCP that accepts them
    (our receiver would fsync 130 objects, which only slows this test down)."""
    from pynetdicom import AE, _config, evt

    # Accept SOP classes pynetdicom does not know (a process-wide switch; restored after).
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", True)

    ds = Dataset()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    files, sop_classes = [], []
    for i in range(130):
        ds.SOPClassUID = f"1.2.826.0.1.3680043.8.498.77.{i}"
        ds.SOPInstanceUID = generate_uid()
        sop_classes.append(ds.SOPClassUID)
        files.append(tmp_path / f"{i}.dcm")
        write_part10(ds, ExplicitVRLittleEndian, files[-1])
    received: list[bytes] = []

    def on_store(event: Any) -> int:
        received.append(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="BARE")
    for sop_class in sop_classes:
        ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
    server: Any = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    calls: list[int] = []
    real = send._associate

    def counting(contexts: list[tuple[str, str]], *args: Any) -> Any:
        calls.append(len(contexts))
        return real(contexts, *args)

    monkeypatch.setattr(send, "_associate", counting)
    try:
        port = int(server.server_address[1])
        outcomes = send_files(files, Destination("BARE", "127.0.0.1", port), calling_ae="ME")
    finally:
        server.shutdown()
    assert [o.status for o in outcomes] == [0] * 130
    assert calls == [128, 2]
    assert sorted(received) == sorted(
        f.read_bytes()[split_part10(f.read_bytes())[1] :] for f in files
    )


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp, bit preserving (-B): it writes the dataset bytes it received."""
    binary = require_tool("storescp", "dcmtk")
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-B", "+xa", "-aet", "PACS", "-od", str(out), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        echoscu = require_tool("echoscu", "dcmtk")
        wait_until(
            lambda: (
                subprocess.run(
                    [echoscu, "-aec", "PACS", "127.0.0.1", str(port)], capture_output=True
                ).returncode
                == 0
            )
        )
        yield port, out
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


# Samples with distinct SOP Instance UIDs that dcmtk's storescp accepts and writes back as
# received. Even with -B ("bit preserving") storescp rewrites undefined-length sequences with
# explicit lengths and drops a trailing (FFFC,FFFC) padding element, so files that have those
# are not here (tests/test_samples_ingest.py lists them: storescu does the same).
BIT_EXACT_SAMPLES = [
    "dicom3tools__0051.dcm",  # Explicit VR LE
    "pydicom__MR_small_bigendian.dcm",  # Explicit VR BE
    "pydicom__rtplan.dcm",  # Implicit VR LE
    "pydicom__ExplVR_LitEndNoMeta.dcm",  # raw Explicit VR LE dataset, no file meta
    "pydicom__SC_rgb_rle_2frame.dcm",  # RLE
    "pylibjpeg-data__966_fixed.dcm",  # JPEG 2000 lossless, 4 MB
    "highdicom__sm_image.dcm",  # VL Whole Slide Microscopy, sequences of defined length
]


def test_send_to_storescp_is_bit_exact(
    storescp: tuple[int, Path], study_files: list[Path], tmp_path: Path
) -> None:
    port, out = storescp
    paths = [*study_files, *(sample(name) for name in BIT_EXACT_SAMPLES)]
    outcomes = send_files(paths, Destination("PACS", "127.0.0.1", port), calling_ae="REFPACS")
    assert [o.status for o in outcomes] == [0] * len(paths), outcomes
    received = {}
    for path in out.iterdir():
        blob = path.read_bytes()
        meta, offset = split_part10(blob)
        received[str(meta.MediaStorageSOPInstanceUID)] = (
            str(meta.TransferSyntaxUID),
            blob[offset:],
        )
    for outcome in outcomes:
        item = send.inspect_file(outcome.path)
        ts, data = received[item.sop_instance_uid]
        assert ts == item.transfer_syntax_uid
        assert data == outcome.path.read_bytes()[item.offset :], outcome.path.name


def test_storescp_abort_costs_only_the_file_it_refused(
    storescp: tuple[int, Path], study_files: list[Path]
) -> None:
    """dcmtk aborts on an odd-length dataset (odd PDV fragment); the rest still go."""
    port, out = storescp
    paths = [study_files[0], sample("highdicom__dx_image.dcm"), *study_files[1:]]
    outcomes = send_files(paths, Destination("PACS", "127.0.0.1", port), calling_ae="REFPACS")
    assert [o.status for o in outcomes] == [0, None, 0, 0, 0, 0]
    assert "odd length" in outcomes[1].comment
    assert len(list(out.iterdir())) == 5
