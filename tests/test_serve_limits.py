"""D13: the limits that keep ``dispatch serve`` answering (dispatch.unsubscribe.webserver), made short, with
the app in a real waitress server on 127.0.0.1: connections that send nothing, send a header or
a body a byte at a time, or never read their answers are closed; at the connection limit, the
connections that waited longest make room and new clients are still answered."""

from __future__ import annotations

import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dispatch.state.suppression import SuppressionStore
from dispatch.unsubscribe.webserver import Limits
from tests.serve_helpers import NEWS, running
from tests.slow_clients import Dripper, closed_by_server, how_many_closed, slow_body, slow_header, timed


def test_a_slow_loris_is_cut_after_the_request_timeout(tmp_path: Path) -> None:
    limits = Limits(channel_timeout=30, request_timeout=1.0)
    with running(tmp_path / "state", limits=limits) as endpoint, Dripper(0.2).running() as dripper:
        dripper.add(*slow_header(endpoint.port))
        dripper.add(*slow_body(endpoint.port, endpoint.target("slow@example.org")))
        began = time.monotonic()
        assert endpoint.one_click("ann@example.org", wait=5).status == 200
        deadline = began + 6
        while len(dripper.closed) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(dripper.closed) == [0, 1], "a connection that keeps sending was never cut"
        assert all(0.9 < when - began < 4 for when in dripper.closed.values())


def test_a_silent_connection_is_closed_after_the_channel_timeout(tmp_path: Path) -> None:
    with running(tmp_path / "state", limits=Limits(channel_timeout=1)) as endpoint:
        with endpoint.connect() as silent:
            assert closed_by_server(silent, within=5)
        with endpoint.connect() as talker:  # a kept-alive connection: answered, then closed when idle
            talker.sendall(b"GET /healthz HTTP/1.1\r\nHost: example.org\r\n\r\n")
            assert talker.recv(65536).startswith(b"HTTP/1.1 200 ")
            assert closed_by_server(talker, within=5)


def test_a_client_that_never_reads_its_answers_is_closed(tmp_path: Path) -> None:
    with running(tmp_path / "state", limits=Limits(channel_timeout=1)) as endpoint:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        sock.connect(("127.0.0.1", endpoint.port))
        with sock:
            sock.settimeout(5)
            request = b"GET /healthz HTTP/1.1\r\nHost: example.org\r\n\r\n"
            with contextlib.suppress(TimeoutError, ConnectionResetError, BrokenPipeError):
                for _ in range(500):  # answers pile up in the server: it stops reading
                    sock.sendall(request * 20)
            time.sleep(2.5)  # no byte moved for longer than the channel timeout
            assert closed_by_server(sock, within=5)
        assert endpoint.one_click("ann@example.org", wait=5).status == 200


def test_at_the_connection_limit_the_longest_waiting_make_room(tmp_path: Path) -> None:
    limits = Limits(connection_limit=30, channel_timeout=60, request_timeout=60)
    with running(tmp_path / "state", limits=limits) as endpoint, contextlib.ExitStack() as held:
        first = [held.enter_context(endpoint.connect()) for _ in range(10)]
        time.sleep(0.3)
        for _ in range(60):
            held.enter_context(endpoint.connect())
        status, took = timed(lambda: endpoint.one_click("ann@example.org").status)
        assert status == 200
        assert took < 2.0
        assert all(closed_by_server(sock, within=2) for sock in first)  # the oldest went first
        with endpoint.store() as store:
            assert store.lookup("ann@example.org", NEWS) is not None


def test_while_the_limit_is_held_every_new_client_is_answered(tmp_path: Path) -> None:
    """Idle connections fill the server; 30 readers then unsubscribe at once: each gets its 200
    (the idle connections make room, never a request being read or answered)."""
    limits = Limits(connection_limit=100, channel_timeout=60, request_timeout=60)
    with running(tmp_path / "state", limits=limits) as endpoint, contextlib.ExitStack() as held:
        idle = [held.enter_context(endpoint.connect()) for _ in range(98)]
        time.sleep(0.5)  # all accepted: the server is at its limit
        with ThreadPoolExecutor(max_workers=30) as pool:
            statuses = list(
                pool.map(lambda n: endpoint.one_click(f"reader{n}@example.org").status, range(30))
            )
        assert statuses == [200] * 30
        assert how_many_closed(idle) > 0  # the limit was reached: idle connections made the room
    with SuppressionStore(tmp_path / "state", readonly=True) as store:
        assert store.count() == 30
