"""``dispatch serve``: the one-click unsubscribe endpoint, a WSGI application served by waitress
behind the operator's HTTPS reverse proxy.

It answers at the path of ``DISPATCH_UNSUBSCRIBE_URL`` (the token in a ``{token}`` path
segment or query value, else in the ``t`` query parameter) and at ``/healthz``:

* ``POST`` with ``List-Unsubscribe=One-Click`` (RFC 8058; form-urlencoded or multipart)
  records an unsubscribe from that token's list, committed before the answer: 200, no
  redirect, no cookie, no login; repeating it changes nothing.
* ``GET`` never unsubscribes (link scanners follow every link): it shows a page with one
  button that POSTs. After the POST the page offers to undo, with the same token; undoing
  lifts only that list's unsubscribe, never a bounce, complaint or manual entry.
* A bad token is a 400 that changes nothing; long URLs 414, large bodies 413, other paths
  404, other methods 405. Pages need no script, load nothing, set no cookie, and show the
  address masked (``a•••@example.org``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

import waitress

from dispatch.errors import ConfigError, InputError
from dispatch.state.db import StateError
from dispatch.state.suppression import ALL_LISTS, UNSUBSCRIBED, SuppressionStore
from dispatch.tokens import BadToken, read_token, token_from_request

MAX_BODY = 16 * 1024  # a one-click POST is 26 bytes; a browser's multipart form a few hundred
MAX_URL = 4096  # path and query; the longest token is under 1,400 characters
HEALTH_PATH = "/healthz"
log = logging.getLogger("dispatch.serve")

_STYLE = (
    "body{margin:0;background:#fff;color:#1b1b1b;font:1.125rem/1.5 system-ui,-apple-system,'Segoe UI',"
    "Roboto,sans-serif}main{max-width:34rem;margin:0 auto;padding:3rem 1.25rem}"
    "h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}p,form{margin:0 0 1.25rem}"
    "button{font:inherit;font-weight:600;padding:.7rem 1.4rem;border-radius:.4rem;cursor:pointer;"
    "border:2px solid #0b57d0;background:#0b57d0;color:#fff}button.quiet{background:#fff;color:#0b57d0}"
    "button:focus-visible{outline:3px solid #1b1b1b;outline-offset:3px}.small{font-size:1rem;color:#444}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
]


@dataclass(frozen=True)
class ServeConfig:
    """What the endpoint needs: the public unsubscribe URL (``DISPATCH_UNSUBSCRIBE_URL``), the
    token secret, who sends the newsletters, the state folder, and list ids with their names."""

    url_template: str
    secret: str = field(repr=False)
    organization: str
    state_dir: Path
    lists: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url_template:
            raise ConfigError("DISPATCH_UNSUBSCRIBE_URL is not set: dispatch serve answers at its path")
        if not self.secret:
            raise ConfigError(
                "DISPATCH_UNSUBSCRIBE_SECRET is not set: dispatch serve needs it to read tokens"
            )


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class _Refused(Exception):
    """A request the endpoint answers with an error page."""

    def __init__(self, status: int, title: str, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(title)
        self.response = _page(status, title, text, headers=headers)


def mask(address: str) -> str:
    """An address as the page shows it: first character, dots, the domain (IDN decoded)."""
    local, _, domain = address.rpartition("@")
    try:
        shown = domain.encode("ascii").decode("idna")
    except UnicodeError:
        shown = domain
    return f"{local[:1]}\u2022\u2022\u2022@{shown}"


def _page(
    status: int, title: str, text: str, *, button: tuple[str, str, str] | None = None,
    note: str = "", headers: tuple[tuple[str, str], ...] = (),
) -> _Response:  # fmt: skip
    """A small page: a heading, a paragraph, a note, at most one form button (name, value, label)."""
    form = ""
    if button is not None:
        name, value, label = (html.escape(part) for part in button)
        css = ' class="quiet"' if name == "action" else ""
        button_html = f'<button type="submit" name="{name}" value="{value}"{css}>{label}</button>'
        form = f'<form method="post">{button_html}</form>'
    small = f'<p class="small">{html.escape(note)}</p>' if note else ""
    body = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{small}{form}</main></body></html>\n"
    )
    return _Response(status, body.encode("utf-8"), headers=headers)


def _bad_link() -> _Refused:
    return _Refused(
        400, "This link does not work",
        "The unsubscribe link is incomplete or was changed. Open the newsletter again and use its "
        "unsubscribe link as it is, or reply to the newsletter and ask to be removed.",
    )  # fmt: skip


class UnsubscribeApp:
    """The WSGI application (see the module's docstring)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.store = SuppressionStore(config.state_dir)
        self.lists = {key.lower(): name for key, name in config.lists.items()}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self._route(environ)
        except _Refused as refused:
            response = refused.response
        except StateError as err:  # names the file, never a token or a secret
            log.error("%s", err)
            response = _page(503, "Please try again", "Your request could not be recorded just now.")
        except InputError:  # a sealed address the store refuses: treated as a bad link
            response = _bad_link().response
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body)))]
        start_response(
            f"{response.status} {HTTPStatus(response.status).phrase}",
            headers + _HEADERS + list(response.headers),
        )
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [response.body]

    def close(self) -> None:
        """Close the suppression store."""
        self.store.close()

    def _route(self, environ: WSGIEnvironment) -> _Response:
        method = environ["REQUEST_METHOD"]
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if len(path) + len(query) > MAX_URL:
            raise _Refused(414, "Address too long", "This address is longer than any unsubscribe link.")
        if path == HEALTH_PATH:
            _allow(method, "GET, HEAD")
            self.store.lookup("", ALL_LISTS)  # the store answers
            return _Response(200, b"ok\n", "text/plain; charset=utf-8")
        token = token_from_request(self.config.url_template, path, query)
        if token is None:
            raise _Refused(404, "Page not found", "There is nothing at this address.")
        _allow(method, "GET, HEAD, POST")
        form = _read_form(environ) if method == "POST" else {}
        try:
            list_id, key = read_token(self.config.secret, token)
        except BadToken:
            raise _bad_link() from None
        if method == "POST":
            return self._post(form, list_id, key)
        entry = self.store.lookup(key, list_id)
        if entry is not None and entry.reason == UNSUBSCRIBED:
            return self._done(list_id, key)
        name, org = self._names(list_id)
        return _page(
            200, f"Unsubscribe from {name}?",
            f"Press the button, and {mask(key)} will no longer receive {name}{org}.",
            button=("List-Unsubscribe", "One-Click", "Unsubscribe"),
        )  # fmt: skip

    def _post(self, form: dict[str, str], list_id: str, key: str) -> _Response:
        if form.get("List-Unsubscribe") == "One-Click":
            if self.store.add(key, UNSUBSCRIBED, scope=list_id, source="serve"):
                log.info("unsubscribe recorded for list %s", list_id)
            return self._done(list_id, key)
        if form.get("action") == "resubscribe":
            self.store.remove(key, scope=list_id, reason=UNSUBSCRIBED)
            name, org = self._names(list_id)
            still = self.store.lookup(key, list_id) is not None  # a bounce or complaint stays
            sender = self.config.organization or "the sender"
            return _page(
                200, "You are subscribed again", f"{mask(key)} will receive {name}{org} again.",
                button=("List-Unsubscribe", "One-Click", "Unsubscribe"),
                note=f"This address is still blocked for another reason; contact {sender}." if still else "",
            )  # fmt: skip
        raise _Refused(400, "Nothing to do", "This request asks neither to unsubscribe nor to undo it.")

    def _done(self, list_id: str, key: str) -> _Response:
        name, org = self._names(list_id)
        return _page(
            200, "You are unsubscribed", f"{mask(key)} will no longer receive {name}{org}.",
            button=("action", "resubscribe", "Undo: subscribe again"),
            note="Clicked by mistake? You can undo it.",
        )  # fmt: skip

    def _names(self, list_id: str) -> tuple[str, str]:
        """The list's display name, and " from <organisation>" (or "")."""
        org = self.config.organization
        return self.lists.get(list_id, list_id), f" from {org}" if org else ""


def _allow(method: str, allowed: str) -> None:
    if method not in allowed.split(", "):
        raise _Refused(405, "Not allowed", f"This address answers {allowed} only.", (("Allow", allowed),))


def _read_form(environ: WSGIEnvironment) -> dict[str, str]:
    """The POST body's fields (first value of each); 413, 415 or 400 when it cannot be one."""
    raw_length = environ.get("CONTENT_LENGTH") or ""
    if raw_length and not raw_length.isdigit():
        raise _Refused(400, "Bad request", "The request's length is not a number.")
    length = int(raw_length) if raw_length else MAX_BODY + 1
    if raw_length and length > MAX_BODY:
        raise _Refused(413, "Request too large", "An unsubscribe request is a few bytes long.")
    body = environ["wsgi.input"].read(min(length, MAX_BODY + 1)) if length else b""
    if len(body) > MAX_BODY:
        raise _Refused(413, "Request too large", "An unsubscribe request is a few bytes long.")
    content_type = environ.get("CONTENT_TYPE", "")
    mime = content_type.partition(";")[0].strip().lower()
    if mime in ("", "application/x-www-form-urlencoded"):
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}
    if mime == "multipart/form-data":
        return _multipart(content_type, body)
    raise _Refused(415, "Unsupported request", "Send the form as application/x-www-form-urlencoded.")


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


def create_app(config: ServeConfig) -> UnsubscribeApp:
    """The WSGI application for this configuration (it opens the suppression store now)."""
    return UnsubscribeApp(config)


def make_server(app: UnsubscribeApp, host: str, port: int) -> Any:
    """A waitress server for the app, bound but not yet running (``port`` 0 takes a free port:
    see :func:`listening`). ConfigError when the address cannot be bound."""
    try:
        return waitress.create_server(
            app, host=host, port=port, threads=8, ident="dispatch", channel_timeout=30,
            max_request_header_size=MAX_URL * 4, max_request_body_size=MAX_BODY * 4,
        )  # fmt: skip
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
    config: ServeConfig, host: str, port: int, *, announce: Callable[[str], None] | None = None
) -> None:
    """Serve the endpoint on ``host:port`` until SIGINT or SIGTERM (requests being answered
    are finished first). ``announce`` is told each address once the port is bound."""
    app = create_app(config)
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
