"""The waitress server behind ``dispatch serve``, with limits that keep one-click unsubscribes
answered whatever other clients do.

waitress reads each request whole in its event loop before a worker thread sees it, so a slow
client never holds a thread; what it can hold is a connection, and at its connection limit
waitress stops accepting, leaving every new client waiting. Here:

* a connection that sends nothing for ``channel_timeout`` seconds is closed (checked every
  second), and so is one whose request is not complete ``request_timeout`` seconds after its
  first byte (a slow loris sending a byte a second is never silent), or one that stopped
  reading its answer for ``channel_timeout`` seconds;
* at the connection limit, the connections that have waited longest without a complete
  request are closed to make room, and new ones are still accepted; a connection whose
  request is being answered is never cut;
* the event loop uses poll(), not select(), which cannot watch more than 1,024 sockets;
* the limit stays under the process's limit of open files (raised to its hard limit first).
"""

from __future__ import annotations

import heapq
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.wasyncore import close_all

log = logging.getLogger("dispatch.unsubscribe.serve")
_SPARE_FILES = 64  # open files kept for the store, the log and the listening sockets
_REPORT_EVERY = 60.0  # seconds between two warnings that connections were closed to make room
_STUCK = 1.0  # seconds an answer may stay unsent before its connection may make room


@dataclass(frozen=True)
class Limits:
    """How long a connection may wait, and how many there may be (see the module's docstring)."""

    channel_timeout: int = 30  # seconds without a byte either way (waitress counts whole seconds)
    request_timeout: float = 10.0  # seconds from a request's first byte to its last
    connection_limit: int = 1000
    threads: int = 8
    max_header: int = 16 * 1024
    max_body: int = 64 * 1024


class _Channel(HTTPChannel):  # type: ignore[misc]  # waitress has no type hints
    """A connection that remembers when the request it is reading began."""

    started: float | None = None  # None between requests
    cut = False  # closed by the server's limits

    def readable(self) -> bool:
        return not self.cut and bool(super().readable())

    def writable(self) -> bool:
        return not self.cut and bool(super().writable())

    def cut_off(self) -> None:
        """Close the connection now, from the event loop, even if its peer reads nothing. The
        loop then no longer watches its descriptor, which the next accept may reuse."""
        self.handle_close()
        self.cut = True

    def received(self, data: bytes) -> bool:
        before = self.request
        done: bool = super().received(data)
        if self.request is not before:  # a request began (or the one being read is complete)
            self.started = time.time() if self.request is not None else None
        return done

    def waiting_since(self) -> float:
        """Since when this connection has waited without a complete request."""
        return self.started if self.started is not None else float(self.last_activity)


class _Server(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server with the timeouts and the room-making of the module's docstring."""

    channel_class = _Channel
    limits = Limits()
    _reported = 0.0

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self._make_room()
        return bool(super().readable())

    def maintenance(self, now: float) -> None:
        """Close the connections that waited too long (waitress only closes silent ones)."""
        for channel in list(self.active_channels.values()):
            if channel.requests:  # being answered by a worker
                continue
            slow = channel.started is not None and now - channel.started > self.limits.request_timeout
            silent = now - channel.last_activity > self.limits.channel_timeout
            if slow or silent:
                channel.cut_off()  # directly: a peer that reads nothing never makes it writable

    def _make_room(self) -> None:
        """Close the connections that have waited longest without a complete request (one whose
        answer is still leaving only when it has stopped moving)."""
        excess = len(self._map) - self.adj.connection_limit + max(1, self.adj.connection_limit // 20)
        now = time.time()
        idle = [
            c
            for c in self.active_channels.values()
            if not c.requests and (not c.total_outbufs_len or now - c.last_activity > _STUCK)
        ]
        for channel in heapq.nsmallest(excess, idle, key=lambda c: c.waiting_since()):
            channel.cut_off()
        if now - self._reported > _REPORT_EVERY:
            self._reported = now
            log.warning(
                "dispatch serve: %d connections open; closed the %d that waited longest to accept new ones",
                self.adj.connection_limit, min(excess, len(idle)),
            )  # fmt: skip


def _connection_limit(wanted: int) -> int:
    """``wanted``, or less when the process may not open that many files (after raising its
    soft limit to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + _SPARE_FILES:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, wanted + _SPARE_FILES)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - _SPARE_FILES))


def create_server(application: Any, host: str, port: int, limits: Limits | None = None) -> Any:
    """A waitress server for ``application`` on ``host:port`` (every address the name has),
    bound and accepting but not yet running; OSError when it cannot bind."""
    limits = limits or Limits()
    adj = Adjustments(
        host=host, port=port, threads=limits.threads, ident="dispatch",
        channel_timeout=limits.channel_timeout, cleanup_interval=1,
        connection_limit=_connection_limit(limits.connection_limit), asyncore_use_poll=True,
        max_request_header_size=limits.max_header, max_request_body_size=limits.max_body,
    )  # fmt: skip
    served: dict[int, Any] = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    servers = []
    try:
        for sockinfo in adj.listen:
            server = _Server(application, served, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
            server.limits = limits
            servers.append(server)
    except OSError:
        close_all(served)  # the sockets already made, the one that failed to bind included
        dispatcher.shutdown()
        raise
    if len(servers) == 1:
        return servers[0]
    listen = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(served, adj, listen, dispatcher, servers[-1].log_info)
