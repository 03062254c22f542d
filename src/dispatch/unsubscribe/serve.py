"""``dispatch serve``: the one-click unsubscribe endpoint, a WSGI application served by waitress
behind the operator's HTTPS reverse proxy.

It answers at the path of ``DISPATCH_UNSUBSCRIBE_URL`` (the token in a ``{token}`` path
segment or query value, else in the ``t`` query parameter) and at ``/healthz``:

* ``POST`` with ``List-Unsubscribe=One-Click`` (RFC 8058; form-urlencoded or multipart)
  records an unsubscribe from that token's list, committed before the answer: 200, no
  redirect, no cookie, no login; repeating it changes nothing.
* ``GET`` never unsubscribes (link scanners follow every link): it shows a page with one
  button that POSTs. After the POST the page offers to undo, with the same token; undoing
  lifts only the unsubscribe this endpoint recorded for that list, never a bounce, complaint,
  manual or imported entry.
* A bad token is a 400 that changes nothing; long URLs 414, large bodies 413, other paths
  404, other methods 405. Pages need no script, load nothing, set no cookie, and show the
  address masked (``a•••@example.org``).

Tokens sealed with the current secret or one of the previous ones (after a rotation) are read.
Each request answered is one access-log line (time, method, path with ``<token>`` in place of
the token, status, duration): never an address, a token, a query string or a secret.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.types import StartResponse, WSGIEnvironment

from dispatch.errors import ConfigError, InputError
from dispatch.settings import StateLocation
from dispatch.state import backend
from dispatch.state.db import StateError
from dispatch.state.suppression import ALL_LISTS, SERVE, UNSUBSCRIBED
from dispatch.unsubscribe.pages import HEADERS, Refused, Response, bad_link, mask, page
from dispatch.unsubscribe.tokens import BadToken, read_token, token_from_request
from dispatch.unsubscribe.webserver import Limits, create_server

MAX_BODY = 16 * 1024  # a one-click POST is 26 bytes; a browser's multipart form a few hundred
MAX_URL = 4096  # path and query; the longest token is under 1,400 characters
HEALTH_PATH = "/healthz"
OTHER_PATH = "<other-path>"  # how the access log shows a path that is not ours (it may hold anything)
_METHOD = re.compile(r"[A-Z]{1,16}")
log = logging.getLogger("dispatch.unsubscribe.serve")
AccessLog = Callable[[str], None]


@dataclass(frozen=True)
class ServeConfig:
    """What the endpoint needs: the public unsubscribe URL (``DISPATCH_UNSUBSCRIBE_URL``), the
    token secret, who sends the newsletters, the state folder, list ids with their names, and
    the secrets used before the current one (``DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS``)."""

    url_template: str
    secret: str = field(repr=False)
    organization: str
    state_dir: Path
    state_url: str = field(default="", repr=False)  # DISPATCH_STATE_URL: the store in PostgreSQL
    lists: Mapping[str, str] = field(default_factory=dict)
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.url_template:
            raise ConfigError("DISPATCH_UNSUBSCRIBE_URL is not set: dispatch serve answers at its path")
        if not self.secret:
            raise ConfigError(
                "DISPATCH_UNSUBSCRIBE_SECRET is not set: dispatch serve needs it to read tokens"
            )


class UnsubscribeApp:
    """The WSGI application (see the module's docstring); ``access_log`` is given one line per
    request answered."""

    def __init__(self, config: ServeConfig, access_log: AccessLog | None = None) -> None:
        self.config = config
        self._where = StateLocation(config.state_dir, "serve", True, url=config.state_url)
        self.store = backend.open_suppressions(self._where)
        self._reopening = threading.Lock()
        self.lists = {key.lower(): name for key, name in config.lists.items()}
        self.access_log = access_log
        shape = urlsplit(config.url_template).path or "/"
        self.shown_path = shape.replace("{token}", "<token>").replace("{email}", "<email>")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        began = time.perf_counter()
        environ["wsgi.input"] = _ReadOnce(environ["wsgi.input"])  # (a second try reads the same body)
        try:
            try:
                response = self._route(environ)
            except StateError as err:
                if not self._reopen(err):
                    raise
                response = self._route(environ)  # the state is back (a database restarted): once more
        except Refused as refused:
            response = refused.response
        except StateError as err:  # names the file, never a token or a secret
            log.error("%s", err)
            response = page(503, "Please try again", "Your request could not be recorded just now.")
        except InputError:  # a sealed address the store refuses: treated as a bad link
            response = bad_link().response
        except Exception as err:  # a bug: logged here, where no token can reach the log
            where = traceback.extract_tb(err.__traceback__)[-1]
            log.error(
                "dispatch serve: %s at %s:%s", type(err).__name__, Path(where.filename).name, where.lineno
            )
            response = page(500, "Please try again", "Your request could not be answered just now.")
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body)))]
        start_response(
            f"{response.status} {HTTPStatus(response.status).phrase}",
            headers + HEADERS + list(response.headers),
        )
        if self.access_log is not None:
            self.access_log(self._log_line(environ, response.status, time.perf_counter() - began))
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [response.body]

    def _log_line(self, environ: WSGIEnvironment, status: int, seconds: float) -> str:
        """``TIME METHOD PATH STATUS DURATION``: the path as configured, ``<token>`` in place of
        the token, no query string; a path that is not ours is not shown at all."""
        method = str(environ.get("REQUEST_METHOD", ""))
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            shown = HEALTH_PATH
        elif len(path) <= MAX_URL and token_from_request(self.config.url_template, path, "") is not None:
            shown = self.shown_path
        else:
            shown = OTHER_PATH
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return (
            f"{when} {method if _METHOD.fullmatch(method) else '-'} {shown} {status} {seconds * 1000:.0f}ms"
        )

    def close(self) -> None:
        """Close the suppression store."""
        self.store.close()

    def _reopen(self, err: StateError) -> bool:
        """After the state failed (a PostgreSQL restart or fail-over drops every connection):
        open it again; whether that worked. Without this, every later request would meet the
        dead connection and be refused until serve was restarted."""
        log.error("%s; opening the state again", err)
        with self._reopening:
            stale = self.store
            try:
                self.store = backend.open_suppressions(self._where)
            except StateError:
                return False
            try:
                stale.close()
            except Exception:  # (a dead connection may fail to close: it is gone anyway)
                log.debug("closing the failed state", exc_info=True)
        return True

    def _route(self, environ: WSGIEnvironment) -> Response:
        method = environ["REQUEST_METHOD"]
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if len(path) + len(query) > MAX_URL:
            raise Refused(414, "Address too long", "This address is longer than any unsubscribe link.")
        if path == HEALTH_PATH:
            _allow(method, "GET, HEAD")
            self.store.lookup("", ALL_LISTS)  # the store answers
            return Response(200, b"ok\n", "text/plain; charset=utf-8")
        token = token_from_request(self.config.url_template, path, query)
        if token is None:
            raise Refused(404, "Page not found", "There is nothing at this address.")
        _allow(method, "GET, HEAD, POST")
        form = _read_form(environ) if method == "POST" else {}
        try:
            list_id, key = read_token(self.config.secret, token, self.config.previous_secrets)
        except BadToken:
            raise bad_link() from None
        if method == "POST":
            return self._post(form, list_id, key)
        if self.store.entry(key, list_id, UNSUBSCRIBED) is not None:
            return self._done(list_id, key)
        name, org = self._names(list_id)
        return page(
            200, f"Unsubscribe from {name}?",
            f"Press the button, and {mask(key)} will no longer receive {name}{org}.",
            button=("List-Unsubscribe", "One-Click", "Unsubscribe"),
        )  # fmt: skip

    def _post(self, form: dict[str, str], list_id: str, key: str) -> Response:
        if form.get("List-Unsubscribe") == "One-Click":
            if self.store.add(key, UNSUBSCRIBED, scope=list_id, source=SERVE):
                log.info("unsubscribe recorded for list %s", list_id)
            return self._done(list_id, key)
        if form.get("action") == "resubscribe":
            # Only what this endpoint recorded for this list: never a bounce, a complaint, or an
            # unsubscribe that was imported or added by hand.
            self.store.remove(key, scope=list_id, reason=UNSUBSCRIBED, source=SERVE)
            name, org = self._names(list_id)
            if self.store.lookup(key, list_id) is not None:
                return page(
                    200, "You are not subscribed again",
                    f"{mask(key)} is still blocked for another reason; contact {self._sender()}.",
                )  # fmt: skip
            return page(
                200, "You are subscribed again", f"{mask(key)} will receive {name}{org} again.",
                button=("List-Unsubscribe", "One-Click", "Unsubscribe"),
            )  # fmt: skip
        raise Refused(400, "Nothing to do", "This request asks neither to unsubscribe nor to undo it.")

    def _done(self, list_id: str, key: str) -> Response:
        """The confirmation; it offers to undo only what this endpoint recorded (an unsubscribe
        imported or added by hand is the sender's to lift)."""
        name, org = self._names(list_id)
        entry = self.store.entry(key, list_id, UNSUBSCRIBED)
        text = f"{mask(key)} will no longer receive {name}{org}."
        if entry is not None and entry.source != SERVE:
            return page(
                200, "You are unsubscribed", text, note=f"To receive it again, contact {self._sender()}."
            )
        return page(
            200, "You are unsubscribed", text,
            button=("action", "resubscribe", "Undo: subscribe again"),
            note="Clicked by mistake? You can undo it.",
        )  # fmt: skip

    def _names(self, list_id: str) -> tuple[str, str]:
        """The list's display name, and " from <organisation>" (or "")."""
        org = self.config.organization
        return self.lists.get(list_id, list_id), f" from {org}" if org else ""

    def _sender(self) -> str:
        return self.config.organization or "the sender"


def _allow(method: str, allowed: str) -> None:
    if method not in allowed.split(", "):
        raise Refused(405, "Not allowed", f"This address answers {allowed} only.", (("Allow", allowed),))


class _ReadOnce:
    """A request body read once from the client, then kept: a request tried again after the
    state failed reads the same bytes."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._body: bytes | None = None

    def read(self, size: int = -1) -> bytes:
        if self._body is None:
            self._body = bytes(self._stream.read(size))
        return self._body


def _read_form(environ: WSGIEnvironment) -> dict[str, str]:
    """The POST body's fields (first value of each); 413, 415 or 400 when it cannot be one."""
    raw_length = environ.get("CONTENT_LENGTH") or ""
    if raw_length and not raw_length.isdigit():
        raise Refused(400, "Bad request", "The request's length is not a number.")
    length = int(raw_length) if raw_length else MAX_BODY + 1
    if raw_length and length > MAX_BODY:
        raise Refused(413, "Request too large", "An unsubscribe request is a few bytes long.")
    body = environ["wsgi.input"].read(min(length, MAX_BODY + 1)) if length else b""
    if len(body) > MAX_BODY:
        raise Refused(413, "Request too large", "An unsubscribe request is a few bytes long.")
    content_type = environ.get("CONTENT_TYPE", "")
    mime = content_type.partition(";")[0].strip().lower()
    if mime in ("", "application/x-www-form-urlencoded"):
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}
    if mime == "multipart/form-data":
        return _multipart(content_type, body)
    raise Refused(415, "Unsupported request", "Send the form as application/x-www-form-urlencoded.")


def _multipart(content_type: str, body: bytes) -> dict[str, str]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message: Any = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    if isinstance(message, EmailMessage) and message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str) and name not in fields:
                payload = part.get_payload(decode=True)
                fields[name] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return fields


def create_app(config: ServeConfig, access_log: AccessLog | None = None) -> UnsubscribeApp:
    """The WSGI application for this configuration (it opens the suppression store now)."""
    return UnsubscribeApp(config, access_log)


def make_server(app: UnsubscribeApp, host: str, port: int, limits: Limits | None = None) -> Any:
    """A waitress server for the app (:mod:`dispatch.unsubscribe.webserver`), bound but not yet running
    (``port`` 0 takes a free port: see :func:`listening`). ConfigError when it cannot bind."""
    try:
        return create_server(app, host, port, limits or Limits(max_header=MAX_URL * 4, max_body=MAX_BODY * 4))
    except OSError as err:
        raise ConfigError(
            f"dispatch serve cannot listen on {host}:{port} ({err.strerror or err}); choose another "
            "--port or DISPATCH_SERVE_PORT, or stop what uses it"
        ) from err


def listening(server: Any) -> list[str]:
    """The ``http://host:port`` addresses a server from :func:`make_server` is bound to."""
    pairs = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://[{h}]:{p}" if ":" in str(h) else f"http://{h}:{p}" for h, p in pairs]


def serve(
    config: ServeConfig,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None] | None = None,
    access_log: AccessLog | None = None,
) -> None:
    """Serve the endpoint on ``host:port`` until SIGINT or SIGTERM (requests being answered
    are finished first). ``announce`` is told each address once the port is bound;
    ``access_log`` each request's line (by default, standard error)."""
    app = create_app(config, access_log or _to_stderr)
    previous: dict[signal.Signals, Any] = {}
    try:
        server = make_server(app, host, port)
        for url in listening(server):
            (announce or log.info)(url)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, _stop)
        try:
            server.run()  # returns on SystemExit/KeyboardInterrupt, after the running tasks
        finally:
            server.close()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        app.close()


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)


_stderr_lock = threading.Lock()


def _to_stderr(line: str) -> None:
    with _stderr_lock:  # one whole line at a time, whichever worker thread writes it
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
