"""Idle connections must not lock real senders out; receivers scale across processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from consult.access import directory
from consult.catalog.tables import instance_versions
from consult.dicom.synthetic import demo_study, write_part10
from consult.receiver import Receiver
from consult.receiver.limits import ConnectionGuard
from consult.services import Services
from consult.settings import Settings
from tests.support import free_port, referring_services, require_tool, storescu, wait_until


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    with referring_services(settings.model_copy(update={"max_connections_per_peer": 8})) as svc:
        yield svc


def _file(tmp_path: Path, index: int = 0) -> Path:
    ds, ts = demo_study()[index]
    path = tmp_path / f"f{index}.dcm"
    write_part10(ds, ts, path)
    return path


def test_twenty_idle_sockets_do_not_stop_a_real_sender(services: Services, tmp_path: Path) -> None:
    receiver = Receiver(services)
    port = receiver.start()
    idle = []
    try:
        for _ in range(20):  # connect and say nothing, from the sender's own address
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        wait_until(lambda: receiver.guard.open_connections("127.0.0.1") >= 8, timeout=5)
        path = _file(tmp_path)
        began = time.monotonic()
        result = storescu(port, path)
        elapsed = time.monotonic() - began
        assert result.returncode == 0, result.stderr
        assert elapsed < 1.0, f"a real sender waited {elapsed:.2f} s behind idle sockets"
        with services.catalog.read() as conn:
            assert conn.execute(select(func.count()).select_from(instance_versions)).scalar() == 1
        # The connections beyond the per-peer bound were closed by the receiver.
        assert sum(1 for s in idle if _closed_by_peer(s)) >= 12
    finally:
        for s in idle:
            s.close()
        receiver.stop()


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # still open, nothing to read
    except ConnectionResetError:
        return True


def test_guard_refuses_when_every_connection_is_a_real_association() -> None:
    guard = ConnectionGuard(per_peer=2)
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        assert guard.admit(pairs[0][0], ("10.0.0.1", 1))
        assert guard.admit(pairs[1][0], ("10.0.0.1", 2))
        guard.associated("10.0.0.1", 1)
        guard.associated("10.0.0.1", 2)
        assert not guard.admit(pairs[2][0], ("10.0.0.1", 3))  # both busy: refuse the new one
        assert guard.admit(pairs[2][0], ("10.0.0.2", 3))  # another peer is not affected
        pairs[0][0].close()  # an association ended: room again
        assert guard.admit(pairs[2][1], ("10.0.0.1", 4))
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_receiver_processes_share_one_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        **os.environ,
        "CONSULT_DATA_DIR": str(data),
        "CONSULT_DICOM_PORT": str(free_port()),
        "CONSULT_DICOM_HOST": "127.0.0.1",
        "CONSULT_RECEIVER_PROCESSES": "2",
    }
    for name in ("CONSULT_DATABASE_URL", "CONSULT_S3_ENDPOINT"):
        env.pop(name, None)
    svc = Services.open(Settings(data_dir=data))
    with svc.catalog.write() as conn:
        hospital = directory.add_hospital(conn, "Referring")
        directory.add_peer(conn, hospital, "REFPACS", "127.0.0.1")
    svc.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consult", "receive"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "(2 processes)" in line, line
        port = int(env["CONSULT_DICOM_PORT"])
        files = [_file(tmp_path, i) for i in range(4)]  # the uncompressed CT slices

        def children() -> list[str]:
            out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
            return out.stdout.split()

        wait_until(lambda: len(children()) == 2, timeout=20)

        def listening() -> bool:
            return storescu(port, files[0]).returncode == 0

        wait_until(listening, timeout=30, interval=0.2)
        # Parallel associations are spread over both processes and all get stored.
        senders = [
            subprocess.Popen(
                [
                    require_tool("storescu", "dcmtk"),
                    "-aet",
                    "REFPACS",
                    "-aec",
                    "CONSULT",
                    "127.0.0.1",
                    str(port),
                    str(f),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={"TCP_NODELAY": "1"},
            )
            for f in files
        ]
        results = [(s.wait(timeout=30), s.stderr.read() if s.stderr else b"") for s in senders]
        assert all(rc == 0 for rc, _ in results), results
        svc = Services.open(Settings(data_dir=data), migrate=False)
        with svc.catalog.read() as conn:
            count = conn.execute(select(func.count()).select_from(instance_versions)).scalar()
        svc.close()
        assert count == 4
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_receivers_sharing_a_socket_balance_associations(services: Services) -> None:
    """Receivers accepting from one listening socket (as `consult receive` processes do):
    the one serving fewer associations takes the next, so four associations held open
    end up two and two (SO_REUSEPORT's hashing put all four on one of two processes in
    one run out of eight)."""
    import socket as socket_module

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    listener = socket_module.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # One descriptor each, as each process has its own.
    receivers = [Receiver(services, listen_socket=listener.dup()) for _ in range(2)]
    for rx in receivers:
        assert rx.start() == port
    ae = AE(ae_title="REFPACS")
    ae.add_requested_context(Verification)
    held = []
    try:
        for _ in range(4):
            assoc = ae.associate("127.0.0.1", port, ae_title="CONSULT")
            assert assoc.is_established
            held.append(assoc)
        counts = sorted(len(rx._server.active_associations) for rx in receivers)
        assert counts == [2, 2]
        for assoc in held:
            assoc.release()
        held.clear()
        # One receiver stopping leaves the socket to the other.
        receivers[0].stop()
        assoc = ae.associate("127.0.0.1", port, ae_title="CONSULT")
        assert assoc.is_established
        held.append(assoc)
    finally:
        for assoc in held:
            assoc.release()
        for rx in receivers:
            rx.stop()
        listener.close()
