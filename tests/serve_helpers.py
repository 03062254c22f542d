"""Helpers for the tests of ``dispatch serve`` in-process: the app in a real waitress server on a
free port of 127.0.0.1 (with the limits a test chooses), spoken to over HTTP and raw sockets."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dispatch.state.suppression import SuppressionStore
from dispatch.unsubscribe.serve import ServeConfig, create_app, make_server
from dispatch.unsubscribe.tokens import make_token, unsubscribe_link
from dispatch.unsubscribe.webserver import Limits

SECRET = "serve-tests-secret-0123456789-abcdefghijk"
NEWS, OTHER = "news.example.org", "other.example.org"
PATH_URL = "https://example.org/u/{token}"
QUERY_URL = "https://example.org/unsubscribe?list=weekly"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str


@dataclass
class Endpoint:
    port: int
    state: Path
    url_template: str

    def target(self, email: str, list_id: str = NEWS, secret: str = SECRET) -> str:
        """The path and query of this address's unsubscribe link."""
        link = unsubscribe_link(self.url_template, email, make_token(secret, list_id, email))
        return link.removeprefix("https://example.org")

    def request(
        self, method: str, target: str, body: str | bytes | None = None, *, wait: float = 10, **headers: str
    ) -> Reply:
        """One request on a new connection; ``wait``: seconds before the client gives up."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=wait)
        try:
            conn.request(
                method, target, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
            )
            response = conn.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read().decode("utf-8"),
            )
        finally:
            conn.close()

    def one_click(self, email: str, list_id: str = NEWS, secret: str = SECRET, wait: float = 10) -> Reply:
        target = self.target(email, list_id, secret)
        return self.request("POST", target, ONE_CLICK, wait=wait, Content_Type=FORM["Content-Type"])

    def undo(self, email: str, list_id: str = NEWS) -> Reply:
        target = self.target(email, list_id)
        return self.request("POST", target, "action=resubscribe", Content_Type=FORM["Content-Type"])

    def store(self) -> SuppressionStore:
        return SuppressionStore(self.state, readonly=True)

    def connect(self) -> socket.socket:
        """A raw connection to the server."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@contextlib.contextmanager
def running(
    state: Path,
    url_template: str = PATH_URL,
    *,
    limits: Limits | None = None,
    previous_secrets: tuple[str, ...] = (),
    access_log: Callable[[str], None] | None = None,
) -> Iterator[Endpoint]:
    """The app in a real waitress server on a free port of 127.0.0.1 until the block ends."""
    config = ServeConfig(
        url_template=url_template,
        secret=SECRET,
        organization="Example Foundation",
        state_dir=state,
        lists={NEWS: "The Weekly"},
        previous_secrets=previous_secrets,
    )
    app = create_app(config, access_log)
    server = make_server(app, "127.0.0.1", 0, limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Endpoint(int(server.effective_port), config.state_dir, url_template)
    finally:
        # The loop closes the server itself and then ends. It may run the thunk before the
        # wake-up byte is written, which then finds the pipe closed: that is fine.
        with contextlib.suppress(OSError):
            server.trigger.pull_trigger(server.close)
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()
        app.close()
        assert not thread.is_alive()
