"""The long-running processes: ``serve`` (all in one), ``receive``, ``web``, ``worker``; and
``migrate``, which brings the catalog schema up to date as they do at start.

Each prints a line when it is ready, with the ports it got: with ``CONSULT_DICOM_PORT=0`` or
``CONSULT_HTTP_PORT=0`` the system picks a free port, and this line is where to find it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from consult.cli.command import Commands, with_services
from consult.jobs.worker import Handler
from consult.services import Services
from consult.settings import Settings

log = logging.getLogger(__name__)


def register(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="web app + DICOM receiver + workers in one go")
    serve.set_defaults(run=cmd_serve)
    receive = commands.add_parser("receive", help="the DICOM receiver only")
    receive.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    receive.set_defaults(run=cmd_receive)
    web = commands.add_parser("web", help="the web app only")
    web.set_defaults(run=with_services(cmd_web))
    worker = commands.add_parser("worker", help="one background worker (previews, deliveries)")
    worker.add_argument("--parent", type=int, metavar="PID", help=argparse.SUPPRESS)
    worker.set_defaults(run=cmd_worker)
    migrate = commands.add_parser("migrate", help="bring the catalog schema up to date")
    migrate.set_defaults(run=with_services(cmd_migrate))


def job_handlers() -> dict[str, Handler]:
    """What a worker runs for each kind of queued job (kind -> handler)."""
    from consult.consultations.delivery import KIND as DELIVER_OPINION
    from consult.consultations.delivery import handle_deliver_opinion
    from consult.previews.builds import KIND as PREVIEW
    from consult.previews.builds import handle_preview

    return {PREVIEW: handle_preview, DELIVER_OPINION: handle_deliver_opinion}


def cmd_migrate(services: Services, args: argparse.Namespace) -> int:
    print("catalog schema is up to date")  # with_services migrated it
    return 0


def cmd_web(services: Services, args: argparse.Namespace) -> int:
    _run_web(services, ready="consult web app is running")
    return 0


def _run_web(services: Services, *, ready: str) -> None:
    """Serve the web app until a signal stops it; print ``ready`` and the URL first.

    We bind the socket ourselves and hand it to uvicorn, so that the URL printed has the
    port we really got (``CONSULT_HTTP_PORT=0``: one the system picked). The socket listens
    from here on; requests wait in its backlog until uvicorn has started.
    """
    import uvicorn

    from consult.web.app import create_app

    host = services.settings.http_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, services.settings.http_port), family=family) as sock:
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(create_app(services), log_level="warning", access_log=False)
        server = uvicorn.Server(config)

        # Until uvicorn has its own handlers, a signal asks it to stop once started. It
        # re-raises the signal that stopped it after restoring these: that lands here too,
        # and the callers' cleanup runs (the default handlers would kill the process there,
        # orphaning serve's workers).
        def stop(*_: object) -> None:
            server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        print(f"{ready}\n  web:   http://{shown}:{port}/", flush=True)
        server.run(sockets=[sock])


def _stop_on_signal() -> threading.Event:
    """An event that SIGINT or SIGTERM sets (from now on)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from consult.receiver import Receiver

    services = Services.open(settings)
    receiver = Receiver(services)
    port = receiver.start()
    worker_command = [sys.executable, "-m", "consult", "worker", "--parent", str(os.getpid())]
    children = [subprocess.Popen(worker_command) for _ in range(settings.workers)]
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


def cmd_receive(settings: Settings, args: argparse.Namespace) -> int:
    from consult.receiver import Receiver

    listen_fd: int | None = args.listen_fd
    child = listen_fd is not None  # one of _receive_in_processes' receivers
    if settings.receiver_processes > 1 and not child:
        return _receive_in_processes(settings)
    stop = _stop_on_signal()  # before the ready line: a signal right after it counts
    services = Services.open(settings, migrate=not child)
    listener = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    receiver = Receiver(services, listen_socket=listener)
    port = receiver.start()
    if child:  # tell the parent we accept connections
        print(f"ready {port}", flush=True)
    else:
        print(f"DICOM receiver {settings.ae_title} listening on port {port}", flush=True)
    try:
        stop.wait()
    finally:
        receiver.stop()
        services.close()
    return 0


def _receive_in_processes(settings: Settings) -> int:
    """Run ``receiver_processes`` receivers accepting from one listening socket; restart
    any that dies."""
    stop = _stop_on_signal()
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


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from consult.jobs.worker import Worker

    services = Services.open(settings, migrate=False)
    worker = Worker(services, job_handlers())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop())
    if args.parent is not None:  # started by `serve`: never outlive it, even if SIGKILLed
        # Its pid comes on the command line: serve may have died before this process could
        # ask for its parent (which would then be init already).
        def watch() -> None:
            while os.getppid() == args.parent and not worker.stopping.wait(1.0):
                pass
            worker.stop()

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    print(
        f"consult worker {worker.name} is running (jobs: {', '.join(worker.handlers)})", flush=True
    )
    try:
        worker.run()
    finally:
        services.close()
    return 0
