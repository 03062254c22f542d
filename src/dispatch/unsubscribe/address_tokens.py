"""Tokens short enough for an address's local part: the envelope sender that names a message
(``bounces+TOKEN@news.example.org``, VERP without personal data) and the mailto unsubscribe
(``bounces+u-TOKEN@news.example.org``).

The unsubscribe link's token (:mod:`dispatch.unsubscribe.tokens`) seals the whole address and
is 60 characters and more: too long for a local part, which RFC 5321 caps at 64 octets. These
tokens hold keyed digests instead, which only the journal can turn back into a reader::

    campaign ref (4 bytes) || reader ref (8 bytes) || tag (8 bytes)

Each part is HMAC-SHA256 under a key derived from ``DISPATCH_UNSUBSCRIBE_SECRET`` with HKDF
(its own ``info``, so it is independent of the link tokens' key): the campaign ref of the
campaign id, the reader ref of the reader's address key, and the tag of both refs with the
token's kind (bounce or unsubscribe) and the list id. Nobody without the secret can read an
address in it, make one, turn a bounce token into an unsubscribe token, or move one to another
list. The 20 bytes are written in lower-case base32: 32 characters of ``a-z2-7``, which a relay
that lower-cases local parts does not change.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dispatch.errors import ConfigError
from dispatch.unsubscribe.tokens import BadToken

BOUNCE, UNSUBSCRIBE = "b", "u"  # what a token is for (sealed into its tag)
UNSUBSCRIBE_PREFIX = "u-"  # written before an unsubscribe token, so people and dispatch tell them apart
LENGTH = 32  # characters of a token
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
# The longest bounce-address local part that still leaves room for "+u-" and a token.
MAX_BOUNCE_LOCAL = MAX_LOCAL_PART - 1 - len(UNSUBSCRIBE_PREFIX) - LENGTH
_INFO = b"dispatch address token v1"
_CAMPAIGN, _READER, _TAG = 4, 8, 8
# A token where it can stand in text: 32 base32 characters not glued to more of them.
FOUND = re.compile(r"(?<![a-z2-7])(u-)?([a-z2-7]{32})(?![a-z2-7])", re.IGNORECASE)


@functools.lru_cache(maxsize=32)
def _key(secret: str) -> bytes:
    if not secret:
        raise ConfigError(
            "DISPATCH_UNSUBSCRIBE_SECRET is not set: bounce and mailto tokens need it; set a long random "
            "value in .env (for example the output of: openssl rand -base64 36)"
        )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.digest(key, b"\0".join(parts), hashlib.sha256)


@functools.lru_cache(maxsize=256)
def campaign_ref(secret: str, campaign: str) -> bytes:
    """The campaign's 4-byte ref under this secret."""
    return _mac(_key(secret), b"c", campaign.encode())[:_CAMPAIGN]


def reader_ref(secret: str, key: str) -> bytes:
    """The reader's 8-byte ref (``key``: the address, lower-cased) under this secret."""
    return _mac(_key(secret), b"r", key.encode())[:_READER]


def _tag(secret: str, kind: str, list_id: str, refs: bytes) -> bytes:
    return _mac(_key(secret), b"t", kind.encode(), list_id.strip("<>").lower().encode(), refs)[:_TAG]


def make(secret: str, kind: str, list_id: str, campaign: str, key: str) -> str:
    """The token of this kind for a reader (``key``) of a campaign on a list (32 characters)."""
    refs = campaign_ref(secret, campaign) + reader_ref(secret, key)
    data = refs + _tag(secret, kind, list_id, refs)
    return base64.b32encode(data).decode("ascii").lower()


class Maker:
    """:func:`make` for one campaign on one list, with what is the same for every reader worked
    out once (a send makes two tokens per message)."""

    def __init__(self, secret: str, list_id: str, campaign: str) -> None:
        # HMAC keyed once and copied per use: a fresh hmac.digest sets the key up each time,
        # which costs more than the two digests a token needs
        self._keyed = hmac.new(_key(secret), digestmod=hashlib.sha256)
        self._campaign = campaign_ref(secret, campaign)
        lists = list_id.strip("<>").lower().encode()
        self._heads = {
            kind: b"\0".join((b"t", kind.encode(), lists, b"")) + self._campaign
            for kind in (BOUNCE, UNSUBSCRIBE)
        }

    def token(self, kind: str, key: str) -> str:
        """The token of this kind for the reader whose address key is ``key``."""
        reader = self._mac(b"r\0" + key.encode())[:_READER]
        tag = self._mac(self._heads[kind] + reader)[:_TAG]
        return base64.b32encode(self._campaign + reader + tag).decode("ascii").lower()

    def _mac(self, message: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.digest()


def local_part(bounce_local: str, kind: str, token: str) -> str:
    """``bounces+TOKEN`` or ``bounces+u-TOKEN``: the local part of an address that carries it."""
    return f"{bounce_local}+{UNSUBSCRIBE_PREFIX if kind == UNSUBSCRIBE else ''}{token}"


@dataclass(frozen=True)
class Opened:
    """What a token proved: its kind, the list and the secret it was made for, and its refs."""

    kind: str
    list_id: str
    secret: str
    campaign_ref: bytes
    reader_ref: bytes


def read(token: str, kind: str, secrets: Iterable[str], list_ids: Iterable[str]) -> Opened:
    """Check a token of ``kind`` against every secret and list id given (the current ones and
    the earlier ones still accepted); BadToken when it is not one we made for any of them."""
    try:
        data = base64.b32decode(token.upper())
    except (binascii.Error, ValueError) as err:
        raise BadToken("the token is not base32") from err
    if len(data) != _CAMPAIGN + _READER + _TAG:
        raise BadToken("the token has the wrong length")
    refs, tag = data[: _CAMPAIGN + _READER], data[_CAMPAIGN + _READER :]
    lists = list(dict.fromkeys(i.strip("<>").lower() for i in list_ids if i))
    for secret in dict.fromkeys(s for s in secrets if s):
        for list_id in lists:
            if hmac.compare_digest(_tag(secret, kind, list_id, refs), tag):
                return Opened(kind, list_id, secret, refs[:_CAMPAIGN], refs[_CAMPAIGN:])
    raise BadToken("the token was not made with this secret for this list (forged, or another newsletter's)")


def found_in(text: str) -> list[tuple[str, str]]:
    """``(kind, token)`` for every token-shaped word in ``text`` (an unsubscribe one after
    ``u-``), in order, each once: candidates, until :func:`read` proves them."""
    seen: dict[tuple[str, str], None] = {}
    for match in FOUND.finditer(text[:100_000]):
        kind = UNSUBSCRIBE if match[1] else BOUNCE
        seen.setdefault((kind, match[2].lower()), None)
    return list(seen)
