"""A real DNS server for the tests: dnslib on 127.0.0.1, UDP and TCP, answering TXT records.

Like a real server, it truncates UDP answers over 512 bytes (the TC flag), so a long record
(a 2048-bit DKIM key) reaches dnspython over TCP, as it would from a real resolver.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

# A name's TXT records: each record one string, or a tuple of the strings it is split into.
Records = Mapping[str, Sequence[str | tuple[str, ...]]]


class _Handler(DNSHandler):
    """Classic DNS over UDP: an answer over 512 bytes is replaced by an empty one with the TC
    flag (and the question, which dnslib's own truncation drops), so the client asks over TCP."""

    def get_reply(self, data: bytes) -> bytes:
        reply: bytes = super().get_reply(data)
        if self.protocol == "udp" and len(reply) > 512:
            truncated = DNSRecord.parse(data).reply()
            truncated.header.tc = 1
            reply = truncated.pack()
        return reply


class _Quiet(DNSLogger):
    def __init__(self) -> None:
        super().__init__(log="-request,-reply,-truncated,-error", logf=lambda *_: None)


@dataclass
class TxtResolver(BaseResolver):
    """Answers TXT queries from ``records``; names in ``failing`` get SERVFAIL, names in
    ``rcodes`` that error code (REFUSED…), unknown names NXDOMAIN."""

    records: Records
    failing: frozenset[str] = frozenset()
    rcodes: Mapping[str, int] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)  # (name, "udp" or "tcp")

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        self.asked.append((name, handler.protocol))
        reply = request.reply()
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
        elif name in self.rcodes:
            reply.header.rcode = self.rcodes[name]
        elif name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for record in self.records[name]:
                strings = [record] if isinstance(record, str) else list(record)
                reply.add_answer(
                    RR(request.q.qname, QTYPE.TXT, rdata=TXT([s.encode() for s in strings]), ttl=60)
                )
        return reply


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


@dataclass
class RunningDns:
    """A started server: ``address`` is what DISPATCH_DNS_SERVER takes."""

    resolver: TxtResolver
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _start(resolver: TxtResolver, protocols: Sequence[bool]) -> tuple[int, list[DNSServer]]:
    for _ in range(20):
        port, started = _free_port(), []
        try:
            for tcp in protocols:
                started.append(
                    DNSServer(
                        resolver, port=port, address="127.0.0.1", tcp=tcp, logger=_Quiet(), handler=_Handler
                    )
                )
        except OSError:  # taken between the probe and the bind (tests running side by side)
            for server in started:
                server.server.server_close()
            continue
        return port, started
    raise RuntimeError("found no free port on 127.0.0.1 for the test DNS server")


@contextmanager
def dns_server(
    records: Records,
    *,
    failing: Sequence[str] = (),
    rcodes: Mapping[str, int] | None = None,
    tcp: bool = True,
) -> Iterator[RunningDns]:
    """Serve ``records`` over UDP and TCP (or UDP only: a long answer is then truncated and
    cannot be had at all) on a free 127.0.0.1 port until the block ends."""
    resolver = TxtResolver({k.lower(): v for k, v in records.items()}, frozenset(failing), dict(rcodes or {}))
    port, servers = _start(resolver, (False, True) if tcp else (False,))
    for server in servers:  # polling every 20 ms (not 0.5 s) so that stopping is quick
        threading.Thread(
            target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
    try:
        yield RunningDns(resolver, port)
    finally:
        for server in servers:
            server.server.shutdown()
            server.server.server_close()


@contextmanager
def silent_server() -> Iterator[str]:
    """A UDP port on 127.0.0.1 that receives queries and never answers (a resolver timing out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def garbling_server() -> Iterator[str]:
    """A UDP port on 127.0.0.1 that answers every query with bytes that are not a DNS message
    (the query's id, then junk)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        stop = threading.Event()

        def answer() -> None:
            while not stop.is_set():
                try:
                    query, client = sock.recvfrom(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                sock.sendto(query[:2] + b"\x81\x80\xff", client)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{sock.getsockname()[1]}"
        finally:
            stop.set()
            thread.join(timeout=5)


def closed_port() -> str:
    """A 127.0.0.1 UDP port where nothing listens (it was bound a moment ago, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"
