"""A small TCP proxy that a test can cut and restore, to simulate a network outage.

Restarting moto's server loses its data, and stopping PostgreSQL would hit every other
test; so the endpoint under test is reached through this proxy instead, and the test cuts
the line:

- ``cut("refuse")`` closes every open connection and stops listening: new connections are
  refused (the kernel answers RST), as when the server's host is up but the service down;
- ``cut("blackhole")`` closes every open connection and accepts new ones without ever
  forwarding a byte, as when packets vanish somewhere on the way: the client only notices
  through its own timeouts;
- ``restore()`` listens again on the same port and forwards as before.

Bounded: at most ``max_connections`` open at once (more are closed at once), one thread
per connection plus one accept thread, every thread a daemon that polls a stop flag; and
the proxy stops itself after ``lifetime`` seconds if a test forgets to.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal

CutMode = Literal["refuse", "blackhole"]

_POLL = 0.1  # seconds between checks of the stop/cut flags
_CHUNK = 256 * 1024
_SEND_TIMEOUT = 30.0


def _hard_close(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: the peer sees the connection reset at once.

    ``shutdown`` first, so that a thread blocked on the socket wakes up.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target``; ``cut()`` and ``restore()`` the line."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 64,
        lifetime: float = 300.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._deadline = time.monotonic() + lifetime
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._mode: CutMode | None = None
        self._generation = 0  # bumped by every cut: connections of older generations end
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()
        self._start(self._accept_loop, "tcpproxy-accept")

    # -- control --------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def cut(self, mode: CutMode = "refuse") -> None:
        """Close every open connection; then refuse or blackhole new ones."""
        with self._lock:
            self._mode = mode
            self._generation += 1
            doomed = list(self._open)
            self._open.clear()
            listener = None
            if mode == "refuse":
                listener, self._listener = self._listener, None
        for sock in doomed:
            _hard_close(sock)
        if listener is not None:
            listener.close()

    def restore(self) -> None:
        """Forward again (on the same port); blackholed connections are closed."""
        with self._lock:
            mode, self._mode = self._mode, None
            self._generation += 1
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            _hard_close(sock)
        if mode == "refuse":
            self._listen()

    def stop(self) -> None:
        """Close everything and end every thread (bounded wait)."""
        self._stopped.set()
        self._close_all()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------

    def _running(self) -> bool:
        if time.monotonic() > self._deadline:
            self._stopped.set()
        return not self._stopped.is_set()

    def _start(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.settimeout(_POLL)
        self.port = int(sock.getsockname()[1])
        with self._lock:
            self._listener = sock

    def _accept_loop(self) -> None:
        while self._running():
            with self._lock:
                listener = self._listener
            if listener is None:  # refusing: nothing listens until restore()
                time.sleep(_POLL)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                full = len(self._open) >= self.max_connections
                mode, generation = self._mode, self._generation
                if not full:
                    self._open.add(client)
            if full:
                _hard_close(client)
            elif mode == "blackhole":
                pass  # held open, never answered; closed by restore() or stop()
            else:
                self._start(self._pump, "tcpproxy-pump", client, generation)
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            doomed = list(self._open)
            self._open.clear()
            listener, self._listener = self._listener, None
        for sock in doomed:
            _hard_close(sock)
        if listener is not None:
            listener.close()

    def _pump(self, client: socket.socket, generation: int) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
            # select() says when to read; the timeout only bounds a sendall to a stuck peer.
            upstream.settimeout(_SEND_TIMEOUT)
            client.settimeout(_SEND_TIMEOUT)
        except OSError:
            with self._lock:
                self._open.discard(client)
            _hard_close(client)
            return
        with self._lock:
            if generation != self._generation:  # cut while we connected
                _hard_close(upstream)
                return
            self._open.add(upstream)
        peers = {client: upstream, upstream: client}
        try:
            while self._running():
                with self._lock:
                    if generation != self._generation:
                        return
                try:
                    readable, _, _ = select.select(list(peers), [], [], _POLL)
                except (OSError, ValueError):
                    return
                for sock in readable:
                    data = sock.recv(_CHUNK)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._open.discard(client)
                self._open.discard(upstream)
            _hard_close(client)
            _hard_close(upstream)
