"""Clients that are slow on purpose, for the tests of ``dispatch serve``'s limits: connections
that send a byte at a time, and ways to see whether the server closed a connection."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator


class Dripper:
    """Slow clients: each connection gets one more byte every ``interval`` seconds, from a
    thread, until the block ends (a byte refused means the server closed it: it is dropped)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.sockets: list[tuple[socket.socket, bytes]] = []
        self.closed: dict[int, float] = {}  # index -> when the server was found to have closed it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, sock: socket.socket, head: bytes, drip: bytes) -> None:
        sock.sendall(head)
        self.sockets.append((sock, drip))

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            for index, (sock, drip) in enumerate(self.sockets):
                if index in self.closed:
                    continue
                try:
                    sock.sendall(drip[n % len(drip) : n % len(drip) + 1])
                except OSError:
                    self.closed[index] = time.monotonic()
            n += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[Dripper]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)
            for sock, _ in self.sockets:
                sock.close()


def slow_header(port: int) -> tuple[socket.socket, bytes, bytes]:
    """A request whose header never ends: a byte of a new header line every tick."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock, b"GET /healthz HTTP/1.1\r\nHost: example.org\r\n", b"X-Slow: 1\r\n"


def slow_body(port: int, target: str) -> tuple[socket.socket, bytes, bytes]:
    """A one-click POST that announces 1,000 bytes of body and sends one a tick."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        f"POST {target} HTTP/1.1\r\nHost: example.org\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    return sock, head, b"x"


def timed(post: Callable[[], int]) -> tuple[int | None, float]:
    """(the status a POST got, or None when the client gave up after 10 s; seconds it took)."""
    began = time.monotonic()
    try:
        status: int | None = post()
    except TimeoutError:
        status = None
    return status, time.monotonic() - began


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def how_many_closed(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (each is looked at once, without waiting)."""
    readable, _, _ = select.select(socks, [], [], 0.5)
    return sum(closed_by_server(sock, within=0.01) for sock in readable)
