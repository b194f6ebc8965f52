"""The ``consult`` command line: the commands run in this process through ``main`` (as a
shell would call them: settings from the environment, stdin, stdout, stderr, exit status);
then each entry point and each long-running process once as the real thing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import func, select

from consult.access import directory
from consult.catalog.tables import instance_versions, jobs, peers
from consult.dicom.part10 import split_part10
from consult.dicom.sender import Destination, send_files
from consult.dicom.synthetic import dataset_bytes, demo_study, write_part10
from consult.ingest.pipeline import Origin, ingest
from consult.previews import PreviewStatus
from consult.previews.maintenance import preview_status
from consult.services import Services
from consult.settings import Settings
from tests.support import (
    ConsultCli,
    consult_env,
    consult_process,
    referring_services,
    wait_until,
)


@pytest.fixture
def cli(tmp_path: Path) -> ConsultCli:
    return ConsultCli(tmp_path / "data")


def _services(cli: ConsultCli) -> Services:
    return Services.open(Settings(data_dir=cli.data_dir), migrate=False)


# ------------------------------------------------------------------ in this process


def test_admin_commands(cli: ConsultCli) -> None:
    added = cli("hospitals", "add", "St. Elsewhere")
    assert added.status == 0, added.err
    assert "hospital 'St. Elsewhere' added" in added.out
    peer = cli(
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
    assert peer.status == 0, peer.err
    assert peer.out == "peer ELSEPACS@10.1.2.3 added to 'St. Elsewhere', receives on port 104\n"
    user = cli(
        "users",
        "add",
        "alice",
        "--hospital",
        "St. Elsewhere",
        "--role",
        "referring",
        "--name",
        "Dr. Alice",
        "--password-stdin",
        stdin="correct horse battery\nsecond line ignored\n",
    )
    assert user.status == 0, user.err
    assert user.out == "user 'alice' (referring) added to 'St. Elsewhere'\n"
    listing = cli("hospitals", "list")
    assert listing.status == 0 and listing.out.endswith("\tSt. Elsewhere\n")

    services = _services(cli)
    try:
        with services.catalog.read() as conn:
            [row] = conn.execute(select(peers.c.ae_title, peers.c.host, peers.c.port)).all()
            assert tuple(row) == ("ELSEPACS", "10.1.2.3", 104)
            alice = directory.authenticate(conn, "alice", "correct horse battery")
            assert alice is not None and alice.display_name == "Dr. Alice"
            assert alice.role is directory.Role.REFERRING

        assert cli("users", "disable", "alice").out == "user 'alice' disabled\n"
        with services.catalog.read() as conn:
            assert directory.authenticate(conn, "alice", "correct horse battery") is None
        assert cli("users", "enable", "alice").out == "user 'alice' enabled\n"
        with services.catalog.read() as conn:
            assert directory.authenticate(conn, "alice", "correct horse battery") is not None
    finally:
        services.close()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["users", "add", "alice", "--hospital", "H", "--role", "referring", "--password-stdin"],
         "correct horse battery\n", "exists already"),
        (["peers", "add", "--hospital", "Nowhere", "--ae", "X", "--host", "h"], "", "Nowhere"),
        (["users", "add", "bob", "--hospital", "H", "--role", "specialist", "--password-stdin"],
         "short\n", "at least 8"),
        (["users", "disable", "nobody"], "", "no user named 'nobody'"),
        (["hospitals", "add", "H"], "", "exists"),
    ],
)  # fmt: skip
def test_admin_errors_exit_2_with_the_reason(
    cli: ConsultCli, args: list[str], stdin: str, message: str
) -> None:
    assert cli("hospitals", "add", "H").status == 0
    first = ["users", "add", "alice", "--hospital", "H", "--role", "referring", "--password-stdin"]
    assert cli(*first, stdin="correct horse battery\n").status == 0
    result = cli(*args, stdin=stdin)
    assert result.status == 2 and result.out == ""
    assert result.err.startswith("consult: error: ") and message in result.err


def test_arguments_argparse_refuses_exit_2(cli: ConsultCli) -> None:
    no_stdin = cli("users", "add", "carol", "--hospital", "H", "--role", "referring")
    assert no_stdin.status == 2 and "--password-stdin" in no_stdin.err
    bad_role = cli("users", "add", "carol", "--hospital", "H", "--role", "boss", "--password-stdin")
    assert bad_role.status == 2 and "invalid choice: 'boss'" in bad_role.err
    assert cli().status == 2
    assert not cli.data_dir.exists()  # refused before any settings or catalog


def test_bad_setting_names_the_variable(cli: ConsultCli) -> None:
    result = cli("hospitals", "list", env={"CONSULT_DICOM_PORT": "eleven"})
    assert result.status == 2
    assert "CONSULT_DICOM_PORT" in result.err


def test_migrate_creates_the_catalog(cli: ConsultCli) -> None:
    result = cli("migrate")
    assert result.status == 0 and result.out == "catalog schema is up to date\n"
    assert (cli.data_dir / "catalog.sqlite3").is_file()
    assert cli("hospitals", "list").out == ""  # the tables are there, empty


@pytest.mark.parametrize("all_versions", [False, True])
def test_demo_then_export_gives_the_bytes_as_received(
    cli: ConsultCli, tmp_path: Path, all_versions: bool
) -> None:
    demo = cli("demo")
    assert demo.status == 0, demo.err
    assert "login referrer / " in demo.out and "login specialist / " in demo.out
    assert cli("demo").out == demo.out  # idempotent, same credentials
    assert (cli.data_dir / "demo-credentials.txt").stat().st_mode & 0o777 == 0o600

    study = demo_study()
    out = tmp_path / "export"
    args = ["export", str(study[0][0].StudyInstanceUID), "--out", str(out)]
    result = cli(*args, *(["--all-versions"] if all_versions else []))
    assert result.status == 0, result.err
    assert f"{len(study)} file(s) written to {out}" in result.err
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == len(study)
    assert sorted(result.out.split()) == [str(f) for f in files]
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

    missing = cli("export", "1.2.3.4", "--out", str(out))
    assert missing.status == 2 and "no study" in missing.err


# ------------------------------------------------------------------ as real processes


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "consult"
    assert script.is_file(), "pip install -e . installs the console script beside python"
    done = subprocess.run(
        [str(script), "hospitals", "add", "St. Elsewhere"],
        env=consult_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "hospital 'St. Elsewhere' added" in done.stdout
    services = Services.open(Settings(data_dir=tmp_path / "data"), migrate=False)
    try:
        with services.catalog.read() as conn:
            assert [h.name for h in directory.list_hospitals(conn)] == ["St. Elsewhere"]
    finally:
        services.close()


def test_python_m_consult_exits_with_the_status(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "consult", "hospitals", "list"],
        env=consult_env(tmp_path / "data", CONSULT_HTTP_PORT="-1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("consult: error: invalid setting: CONSULT_HTTP_PORT")


@pytest.fixture
def referring(tmp_path: Path) -> Iterator[Services]:
    """Services on tmp_path/data with the peer REFPACS@127.0.0.1 registered."""
    with referring_services(Settings(data_dir=tmp_path / "data")) as services:
        yield services


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    ds, ts = demo_study()[0]
    path = tmp_path / "ct.dcm"
    write_part10(ds, ts, path)
    return path


def _send(port: int, path: Path) -> None:
    [outcome] = send_files([path], Destination("CONSULT", "127.0.0.1", port), calling_ae="REFPACS")
    assert outcome.status == 0, outcome


def _stored(services: Services) -> int:
    with services.catalog.read() as conn:
        return int(conn.execute(select(func.count()).select_from(instance_versions)).scalar_one())


def test_serve_process(referring: Services, ct_file: Path) -> None:
    env = consult_env(referring.settings.data_dir, CONSULT_WORKERS="1")
    with consult_process("serve", env=env) as serve:
        dicom = serve.wait_for(r"^  DICOM: AE title CONSULT on port (\d+)$")
        web = serve.wait_for(r"^  web:   (http://127\.0\.0\.1:(\d+)/)$")
        assert int(dicom.group(1)) != 0 and int(web.group(2)) != 0
        assert httpx.get(web.group(1) + "login", timeout=10).status_code == 200
        _send(int(dicom.group(1)), ct_file)
        assert _stored(referring) == 1

        def previewed() -> bool:  # by the worker process serve started
            with referring.catalog.read() as conn:
                return preview_status(conn).frames.get(PreviewStatus.READY, 0) == 1

        wait_until(previewed, timeout=60, interval=0.1)
        assert serve.stop() == 0, serve.output


def test_receive_process(referring: Services, ct_file: Path) -> None:
    with consult_process("receive", env=consult_env(referring.settings.data_dir)) as receive:
        port = int(receive.wait_for(r"^DICOM receiver CONSULT listening on port (\d+)$").group(1))
        _send(port, ct_file)
        assert _stored(referring) == 1
        assert receive.stop() == 0, receive.output


def test_web_process(tmp_path: Path) -> None:
    with consult_process("web", env=consult_env(tmp_path / "data")) as web:
        url = web.wait_for(r"^  web:   (http://127\.0\.0\.1:\d+/)$").group(1)
        page = httpx.get(url + "login", timeout=10)
        assert page.status_code == 200 and 'name="password"' in page.text
        assert web.stop() == 0, web.output


def test_worker_process(referring: Services) -> None:
    with referring.catalog.read() as conn:
        hospital_id = directory.get_hospital(conn, "Referring").id
    origin = Origin(hospital_id, "REFPACS", "127.0.0.1", 104)
    for ds, ts in demo_study():
        ingest(referring, dataset_bytes(ds), transfer_syntax_uid=ts, origin=origin)

    def statuses() -> list[str]:
        with referring.catalog.read() as conn:
            return [str(s) for s in conn.execute(select(jobs.c.status)).scalars()]

    assert statuses() == ["queued"] * 5
    with consult_process("worker", env=consult_env(referring.settings.data_dir)) as worker:
        worker.wait_for(r"^consult worker \S+ is running \(jobs: preview, ")
        wait_until(lambda: statuses() == ["done"] * 5, timeout=60, interval=0.1)
        assert worker.stop() == 0, worker.output
    with referring.catalog.read() as conn:
        assert preview_status(conn).frames == {"ready": 5}
