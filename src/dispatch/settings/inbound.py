"""The settings of bounces, complaints and mailto unsubscribes (``dispatch inbound``), as rows
of the one settings table (:mod:`dispatch.settings.table` makes a ``Setting`` of each)."""

from __future__ import annotations

from functools import partial
from typing import Any

from dispatch.errors import ConfigError
from dispatch.settings import parsers as p
from dispatch.settings import values as v

SECTION = "Bounces, complaints and mailto unsubscribes (dispatch inbound)"
IMAP_SECURITY = ("ssl", "starttls", "none")
IMAP_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
# The longest local part that leaves room for "+u-" and a 32-character token in 64 octets
# (dispatch.unsubscribe.address_tokens.MAX_BOUNCE_LOCAL; settings sit below that layer).
MAX_BOUNCE_LOCAL = 64 - 3 - 32


def bounce_address(text: str, name: str) -> str:
    """A plain address whose local part leaves room for ``+TOKEN``."""
    box = v.parse_mailbox(v.one_line(text, name), name)
    local = box.username
    if box.display_name:
        raise ConfigError(f"{name}: give the address alone, like bounces@news.example.org (no name)")
    if "+" in local or '"' in local:
        raise ConfigError(
            f"{name}: {box.addr_spec!r}: dispatch adds '+TOKEN' to the local part itself; "
            "give the address without a '+' (like bounces@news.example.org)"
        )
    if len(local) > MAX_BOUNCE_LOCAL:
        raise ConfigError(
            f"{name}: the part before '@' is {len(local)} characters; with '+u-' and a 32-character "
            f"token it must fit 64, so use at most {MAX_BOUNCE_LOCAL} (like bounces@news.example.org)"
        )
    return box.addr_spec


_SECURITY = p.choice(IMAP_SECURITY)


def _row(name: str, parse: Any, default: Any, help_: str, shown: str, **more: Any) -> dict[str, Any]:
    """The arguments of one ``Setting`` (``more``: comment, sample, secret)."""
    return {"name": name, "parse": parse, "default": default, "help": help_, "shown_default": shown,
            "section": SECTION, **more}  # fmt: skip


_PORT = partial(v.whole, minimum=1, maximum=65535)
# fmt: off
ROWS: tuple[dict[str, Any], ...] = (
    _row(
        "BOUNCE_ADDRESS", bounce_address, "",
        "the envelope sender: each message's `MAIL FROM` becomes `LOCAL+TOKEN@DOMAIN` (a sealed token naming "
        "campaign and reader, no address), and the `List-Unsubscribe` mailto `LOCAL+u-TOKEN@DOMAIN`; route "
        "that domain's mail to `dispatch inbound`", "none (`MAIL FROM` is the From address)",
        comment="Where bounces, complaints and mailto unsubscribes come back: each message's envelope\n"
        "sender becomes bounces+TOKEN@… (no address in it), and its List-Unsubscribe mailto\n"
        "bounces+u-TOKEN@…. Deliver that domain's mail to `dispatch inbound` (see the README).",
        sample="bounces@news.example.org",
    ),
    _row(
        "SOFT_BOUNCE_LIMIT", partial(v.whole, minimum=1, maximum=100), 3,
        "a reader whose last N issues in a row bounced softly (4.x.x, delayed) is suppressed", "3",
        comment="Soft bounces (mailbox full, delayed) in a row, one per issue, before a reader is\n"
        "suppressed.",
        sample="3",
    ),
    _row(
        "IMAP_HOST", p.text, "", "`dispatch inbound --imap`: the IMAP server", "none",
        comment="`dispatch inbound --imap` reads the bounce mailbox over IMAP: the server, its port,\n"
        "ssl (993), starttls (143) or none (only to this machine), the login, and the folder.\n"
        "Processed messages move to the folder 'processed', unreadable ones to 'unreadable'.",
        sample="imap.example.org",
    ),
    _row("IMAP_PORT", _PORT, 0, "its port", "993 / 143 by security", sample="993"),
    _row("IMAP_SECURITY", _SECURITY, "ssl", "`ssl`, `starttls` or `none`", "`ssl`", sample="ssl"),
    _row("IMAP_USER", p.text, "", "the IMAP login", "none", sample="bounces@news.example.org"),
    _row("IMAP_PASSWORD", p.raw, "", "its password (never printed or logged)", "none", secret=True),
    _row("IMAP_FOLDER", p.text, "INBOX", "the folder `dispatch inbound --imap` reads", "`INBOX`",
         sample="INBOX"),
)
# fmt: on
