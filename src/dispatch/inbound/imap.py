"""An IMAP mailbox as a source of reports (``dispatch inbound --imap``): every message of
``DISPATCH_IMAP_FOLDER`` once; read ones move to the folder ``processed``, unreadable ones to
``unreadable`` (created when missing; ``MOVE`` where the server has it, else copy, flag deleted
and expunge). TLS certificates are always verified (the system's trust store, or
``SSL_CERT_FILE``); a password goes in clear text only to a server on this machine.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from dispatch.errors import AbortError, ConfigError
from dispatch.inbound.reports import MAX_SIZE
from dispatch.inbound.sources import PROCESSED, UNREADABLE, Item
from dispatch.settings.inbound import IMAP_PORTS
from dispatch.settings.values import is_loopback
from dispatch.untrusted import shown

if TYPE_CHECKING:
    from dispatch.settings import Settings

TIMEOUT = 60.0
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailboxError(AbortError):
    """The IMAP server cannot be reached, refuses the login, or has no such folder (exit 3)."""


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _answer(name: str, data: Sequence[object]) -> str:
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
    return f"{name}: {' '.join(text.split())[:200]}"


class ImapSource:
    """One IMAP folder, logged in (use as a context manager)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.imap_host:
            raise ConfigError(
                "--imap needs DISPATCH_IMAP_HOST (and _USER, _PASSWORD); set them in the settings file"
            )
        self.settings = settings
        self.where = f"{settings.imap_host}:{settings.imap_port or IMAP_PORTS[settings.imap_security]}"
        self.conn = self._connect()

    def _connect(self) -> imaplib.IMAP4:
        settings = self.settings
        host, port = settings.imap_host, settings.imap_port or IMAP_PORTS[settings.imap_security]
        if settings.imap_security == "none" and not is_loopback(host):
            raise ConfigError(
                f"DISPATCH_IMAP_SECURITY=none would send the password in clear text to {host}; use ssl or "
                "starttls (none is only for a server on this machine)"
            )
        context = ssl.create_default_context()
        try:
            if settings.imap_security == "ssl":
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=TIMEOUT)
            else:
                conn = imaplib.IMAP4(host, port, timeout=TIMEOUT)
                if settings.imap_security == "starttls":
                    conn.starttls(ssl_context=context)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as err:
            raise MailboxError(
                f"cannot reach the IMAP server {self.where}: {err}; check DISPATCH_IMAP_HOST"
            ) from err
        try:
            conn.login(settings.imap_user, settings.imap_password)
            kind, data = conn.select(_quoted(settings.imap_folder))
        except (imaplib.IMAP4.error, OSError, UnicodeError) as err:
            conn.shutdown()
            said = err.args[0] if err.args else err  # imaplib gives the server's words as bytes
            said = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
            raise MailboxError(
                f"the IMAP server {self.where} refused the login of {settings.imap_user!r} ({shown(said)}); "
                "check DISPATCH_IMAP_USER and DISPATCH_IMAP_PASSWORD"
            ) from err
        if kind != "OK":
            conn.logout()
            raise MailboxError(
                f"{_answer(self.where, data)}; check DISPATCH_IMAP_FOLDER ({settings.imap_folder!r})"
            )
        return conn

    def __enter__(self) -> ImapSource:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.logout()
        except (imaplib.IMAP4.error, OSError):
            self.conn.shutdown()

    def _uid(self, *args: str) -> list[object]:
        try:
            kind, data = self.conn.uid(*args)
        except (imaplib.IMAP4.error, OSError) as err:
            raise MailboxError(
                f"the IMAP server {self.where} failed during {args[0]} ({err}); run again"
            ) from err
        if kind != "OK":
            raise MailboxError(f"{_answer(self.where, data)} (during {args[0]}); run again")
        return list(data)

    def items(self) -> Iterator[Item]:
        found = self._uid("SEARCH", "UNDELETED")
        uids = b" ".join(d for d in found if isinstance(d, bytes)).split()
        for uid in (u.decode("ascii") for u in uids):
            size = _SIZE.search(
                b" ".join(
                    p if isinstance(p, bytes) else b"" for p in self._uid("FETCH", uid, "(RFC822.SIZE)")
                )
            )
            name = f"{self.settings.imap_folder} UID {uid}"
            if size is not None and int(size[1]) > MAX_SIZE:
                yield Item(name, too_big=True, handle=uid)
                continue
            fetched = self._uid("FETCH", uid, "(BODY.PEEK[])")
            data = next((p[1] for p in fetched if isinstance(p, tuple) and len(p) > 1), None)
            if not isinstance(data, bytes):
                yield Item(name, problem="the server sent no message for it", handle=uid)
                continue
            yield Item(name, data, handle=uid)

    def done(self, item: Item, *, kept: bool) -> str:
        uid, folder = str(item.handle), UNREADABLE if kept else PROCESSED
        self.conn.create(_quoted(folder))  # "already exists" is a NO: fine
        if b"MOVE" in b" ".join(c.encode() if isinstance(c, str) else c for c in self.conn.capabilities):
            self._uid("MOVE", uid, _quoted(folder))
        else:
            self._uid("COPY", uid, _quoted(folder))
            self._uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
            self.conn.expunge()
        return f"the IMAP folder {folder!r}"
