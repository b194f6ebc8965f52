"""The ``consult`` command line: run the processes, manage hospitals, peers and users."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consult.access import directory
from consult.errors import ConsultError
from consult.services import Services
from consult.settings import Settings, load_settings

log = logging.getLogger("consult")

# Modules that add their own subcommands: each has ``register(sub)``, which adds parsers
# with ``set_defaults(handler=fn)``; ``fn(services, args) -> int`` runs with open services.
EXTENSIONS: tuple[str, ...] = (
    "consult.cli.archive",
    "consult.cli.frame_png",
    "consult.cli.imaging",
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="consult", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="web app + DICOM receiver + workers in one go")
    receive = sub.add_parser("receive", help="the DICOM receiver only")
    receive.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    sub.add_parser("web", help="the web app only")
    worker = sub.add_parser("worker", help="one background worker (previews, deliveries)")
    worker.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("demo", help="create the demo hospitals, users and sample study")
    sub.add_parser("migrate", help="bring the catalog schema up to date")

    hospitals = sub.add_parser("hospitals", help="manage hospitals").add_subparsers(
        dest="action", required=True
    )
    h_add = hospitals.add_parser("add", help="add a hospital")
    h_add.add_argument("name")
    hospitals.add_parser("list", help="list hospitals")

    peers = sub.add_parser("peers", help="manage DICOM peers").add_subparsers(
        dest="action", required=True
    )
    p_add = peers.add_parser("add", help="register a DICOM peer of a hospital")
    p_add.add_argument("--hospital", required=True, help="hospital name")
    p_add.add_argument("--ae", required=True, help="the peer's AE title")
    p_add.add_argument("--host", required=True, help="the peer's host name or address")
    p_add.add_argument("--port", type=int, help="where the peer receives (opinions go there)")

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    u_add = users.add_parser("add", help="add a user")
    u_add.add_argument("username")
    u_add.add_argument("--hospital", required=True)
    u_add.add_argument("--role", required=True, choices=[r.value for r in directory.Role])
    u_add.add_argument("--name", default="", help="display name")
    u_add.add_argument(
        "--password-stdin", action="store_true", required=True, help="read the password from stdin"
    )
    for action in ("disable", "enable"):
        u = users.add_parser(action, help=f"{action} a user (takes effect at once)")
        u.add_argument("username")

    export = sub.add_parser("export", help="write a study's stored instances as Part 10 files")
    export.add_argument("study_uid")
    export.add_argument("--out", required=True, type=Path)
    export.add_argument(
        "--all-versions", action="store_true", help="every version, not just current"
    )
    for name in EXTENSIONS:
        importlib.import_module(name).register(sub)
    return p


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _run_web(services: Services, *, ready: str = "") -> None:
    import uvicorn

    from consult.web.app import create_app

    settings = services.settings
    config = uvicorn.Config(
        create_app(services),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    if ready:
        url = f"http://{settings.http_host}:{settings.http_port}/"
        print(f"{ready}\n  web:   {url}", flush=True)
    server.run()


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()


def cmd_serve(settings: Settings) -> int:
    from consult.receiver import Receiver

    services = Services.open(settings)
    receiver = Receiver(services)
    port = receiver.start()
    children = [
        subprocess.Popen([sys.executable, "-m", "consult", "worker", "--exit-with-parent"])
        for _ in range(settings.workers)
    ]
    # uvicorn re-raises the signal that stopped it once it has restored the previous
    # handlers; with these no-op handlers in place that lands here and the cleanup below
    # runs (with the default ones the process would die and orphan its workers).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        _run_web(
            services,
            ready=(
                f"consult is running (data in {settings.data_dir.resolve()})\n"
                f"  DICOM: AE title {settings.ae_title} on port {port}"
            ),
        )
    finally:
        receiver.stop()
        _stop(children)
        services.close()
    return 0


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """Terminate child processes, and kill those that do not stop within 10 s."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def cmd_receive(settings: Settings, *, listen_fd: int | None = None) -> int:
    import socket

    from consult.receiver import Receiver

    child = listen_fd is not None  # one of _receive_in_processes' receivers
    if settings.receiver_processes > 1 and not child:
        return _receive_in_processes(settings)
    services = Services.open(settings, migrate=not child)
    listener = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    receiver = Receiver(services, listen_socket=listener)
    port = receiver.start()
    if child:  # tell the parent we accept connections
        print(f"ready {port}", flush=True)
    else:
        print(f"DICOM receiver {settings.ae_title} listening on port {port}", flush=True)
    try:
        _wait_for_signal()
    finally:
        receiver.stop()
        services.close()
    return 0


def _receive_in_processes(settings: Settings) -> int:
    """Run ``receiver_processes`` receivers accepting from one listening socket; restart
    any that dies."""
    import socket
    import time

    Services.open(settings).close()  # migrate once, before the children start
    # One listening socket, inherited by every child: the least busy accepts each
    # connection (scp.py). With SO_REUSEPORT the kernel would hash connections to
    # processes whatever their load: 4 associations on 4 processes share one in ten runs.
    listener = socket.create_server((settings.dicom_host, settings.dicom_port), backlog=128)
    listener.set_inheritable(True)
    port = int(listener.getsockname()[1])
    command = [sys.executable, "-m", "consult", "receive", "--listen-fd", str(listener.fileno())]

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdout=subprocess.PIPE, pass_fds=(listener.fileno(),))

    def ready(child: subprocess.Popen[bytes]) -> bool:
        """Wait for a child's "ready" line (its only output) or its end."""
        assert child.stdout is not None
        with child.stdout:
            return child.stdout.readline().startswith(b"ready")

    children = [spawn() for _ in range(settings.receiver_processes)]
    if not all([ready(child) for child in children]):
        _stop(children)
        listener.close()
        print("error: a receiver process did not start (see its log above)", file=sys.stderr)
        return 1
    print(
        f"DICOM receiver {settings.ae_title} listening on port {port} "
        f"({settings.receiver_processes} processes)",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            for i, child in enumerate(children):
                if child.poll() is not None:
                    log.error(
                        "receiver process %d exited (%s); restarting", child.pid, child.returncode
                    )
                    time.sleep(0.5)
                    children[i] = spawn()
                    threading.Thread(target=ready, args=(children[i],), daemon=True).start()
    finally:
        _stop(children)
        listener.close()
    return 0


def cmd_worker(settings: Settings, *, exit_with_parent: bool = False) -> int:
    import os

    from consult.cli.tasks import job_handlers
    from consult.jobs.worker import Worker

    services = Services.open(settings, migrate=False)
    worker = Worker(services, job_handlers())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop())
    if exit_with_parent:  # started by `serve`: never outlive it, even if it was SIGKILLed
        parent = os.getppid()

        def watch() -> None:
            while not worker.stopping.wait(1.0):
                if os.getppid() != parent:
                    worker.stop()

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    try:
        worker.run()
    finally:
        services.close()
    return 0


def cmd_export(services: Services, args: Any) -> int:
    from consult.studies.export import export_study

    written = export_study(services, args.study_uid, args.out, all_versions=args.all_versions)
    for path in written:
        print(path)
    print(f"{len(written)} file(s) written to {args.out}", file=sys.stderr)
    return 0


def _admin(services: Services, args: Any) -> int:
    with services.catalog.write() as conn:
        if args.command == "hospitals" and args.action == "add":
            h = directory.add_hospital(conn, args.name)
            print(f"hospital {h.name!r} added (id {h.id})")
        elif args.command == "hospitals":
            for h in directory.list_hospitals(conn):
                print(f"{h.id}\t{h.name}")
        elif args.command == "peers":
            hospital = directory.get_hospital(conn, args.hospital)
            peer = directory.add_peer(conn, hospital, args.ae, args.host, args.port)
            where = f", receives on port {peer.port}" if peer.port else ""
            print(f"peer {peer.ae_title}@{peer.host} added to {hospital.name!r}{where}")
            if peer.port:
                from consult.consultations import opinions

                queued = opinions.queue_undelivered(conn, hospital.id, peer.id)
                if queued:
                    print(
                        f"{len(queued)} signed opinion(s) never delivered (the hospital had no "
                        f"peer to send to) queued for delivery"
                    )
        elif args.command == "users" and args.action == "add":
            password = sys.stdin.readline().rstrip("\r\n")
            hospital = directory.get_hospital(conn, args.hospital)
            user = directory.add_user(
                conn,
                args.username,
                hospital=hospital,
                role=directory.Role(args.role),
                password=password,
                display_name=args.name,
            )
            print(f"user {user.username!r} ({user.role.value}) added to {hospital.name!r}")
        elif args.command == "users":
            directory.set_disabled(conn, args.username, args.action == "disable")
            print(f"user {args.username!r} {args.action}d")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        settings = load_settings()
        if args.command == "serve":
            return cmd_serve(settings)
        if args.command == "receive":
            return cmd_receive(settings, listen_fd=args.listen_fd)
        if args.command == "worker":
            return cmd_worker(settings, exit_with_parent=args.exit_with_parent)
        if getattr(args, "settings_only", False):
            return int(args.handler(settings, args))
        services = Services.open(settings)
        try:
            if args.command == "web":
                _run_web(services, ready="consult web app is running")
                return 0
            if args.command == "migrate":
                print("catalog schema is up to date")
                return 0
            if args.command == "demo":
                from consult.cli.demo import create_demo

                create_demo(services)
                return 0
            if args.command == "export":
                return cmd_export(services, args)
            if hasattr(args, "handler"):
                return int(args.handler(services, args))
            return _admin(services, args)
        finally:
            services.close()
    except ConsultError as exc:
        print(f"consult: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
