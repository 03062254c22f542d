"""Unsubscribe tokens: who unsubscribes from which list, sealed so that nobody can forge,
alter or read them without ``DISPATCH_UNSUBSCRIBE_SECRET``, and checked without a database.

A token is URL-safe base64 (no padding) of::

    version (1 byte) || AES-SIV(key, packed "list-id@address", associated data = version)

AES-SIV (RFC 5297, from ``cryptography``) is deterministic authenticated encryption: the same
list and address always give the same token, so a dry run and a send write identical bytes,
and any change to a token fails its 16-byte tag. The 512-bit key is derived from the secret
with HKDF-SHA256. The address is the subscriber key (the wire address, lower-cased) and the
list id is lower-cased too; both are packed at 6 bits a character before sealing (the
characters of addresses and list ids need no more), which keeps tokens a quarter shorter
while the full list id stays inside: a token still works after ``DISPATCH_LIST_ID`` changes.

Length: 17 bytes of overhead plus 3/4 byte per character. For ``ann.example@gmail.com`` on
``news.example.org`` a token is 62 characters; a 30-character address on a 25-character list
id gives 79 (the longest possible, 1,388).

Rotating the secret: new tokens are always sealed with the current secret; :func:`read_token`
also opens tokens sealed with earlier ones (``DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS``), so the
links in every issue sent before a rotation keep working.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Sequence
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dispatch.addresses import address_key
from dispatch.errors import ConfigError, DispatchError

VERSION = 1
QUERY_PARAMETER = "t"  # where the token goes when the URL has no {token}
MIN_SECRET_LENGTH = 32  # what `dispatch check` asks of DISPATCH_UNSUBSCRIBE_SECRET
MAX_LIST_ID = 200  # as DISPATCH_LIST_ID allows
MAX_ADDRESS = 254  # RFC 5321 path limit
_INFO = b"dispatch unsubscribe token v1"
_TAG = 16  # AES-SIV's synthetic IV
# 6-bit symbols: 0 pads the last byte, 63 escapes any other ASCII character (as two symbols).
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-@_+!#$%&'*/=?^`{|}~"
_CODES = {c: i for i, c in enumerate(_ALPHABET, start=1)}
_ESCAPE = 63
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


# The longest token any list id and address can make (every character escaped), in base64.
_MOST_BYTES = 1 + _TAG + ((MAX_LIST_ID + 1 + MAX_ADDRESS) * 3 * 6 + 7) // 8
MAX_TOKEN_LENGTH = (_MOST_BYTES * 4 + 2) // 3


class BadToken(DispatchError):
    """An unsubscribe token that is truncated, altered, made with another secret, or not a token."""


@functools.lru_cache(maxsize=32)  # the current secret and a few earlier ones
def _cipher(secret: str) -> AESSIV:
    if not secret:
        raise ConfigError(
            "DISPATCH_UNSUBSCRIBE_SECRET is not set: unsubscribe tokens need it; set a long random "
            "value in .env (for example the output of: openssl rand -base64 36)"
        )
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_INFO).derive(secret.encode())
    return AESSIV(key)


_B64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Each ASCII character as its 6-bit symbol(s), spelled as base64 digits: packing is then a
# translate and a base64 decode, at C speed (tokens are made once per message).
_AS_DIGITS = {
    i: _B64_DIGITS[_CODES[chr(i)]]
    if chr(i) in _CODES
    else _B64_DIGITS[_ESCAPE] + _B64_DIGITS[i >> 6] + _B64_DIGITS[i & 63]
    for i in range(128)
}


def _pack(text: str) -> bytes:
    """ASCII text as 6-bit symbols, big-endian, zero-padded to whole bytes."""
    if not text.isascii():
        raise ConfigError(f"{text!r} is not ASCII; an unsubscribe token holds ASCII only")
    digits = text.translate(_AS_DIGITS)
    count = len(digits)
    return base64.b64decode(digits + "A" * (-count % 4))[: (count * 6 + 7) // 8]


def _unpack(data: bytes) -> str:
    count = len(data) * 8 // 6
    value = int.from_bytes(data, "big") >> (len(data) * 8 - count * 6)
    symbols = [(value >> (6 * (count - 1 - i))) & 63 for i in range(count)]
    chars: list[str] = []
    i = 0
    while i < len(symbols):
        symbol = symbols[i]
        if symbol == 0:  # padding: only ever the last symbol
            if i != len(symbols) - 1:
                raise BadToken("the unsubscribe token is damaged")
            break
        if symbol == _ESCAPE:
            if i + 2 >= len(symbols):
                raise BadToken("the unsubscribe token is damaged")
            chars.append(chr(symbols[i + 1] << 6 | symbols[i + 2]))
            i += 3
        else:
            chars.append(_ALPHABET[symbol - 1])
            i += 1
    return "".join(chars)


@functools.lru_cache(maxsize=16)
def _list_id(list_id: str) -> str:
    value = list_id.strip().strip("<>").lower()
    if not value or len(value) > MAX_LIST_ID or "@" in value or not all(33 <= ord(c) < 127 for c in value):
        raise ConfigError(
            f"DISPATCH_LIST_ID: {list_id!r} is not a list identity; write it like news.example.org"
        )
    return value


def make_token(secret: str, list_id: str, email: str) -> str:
    """The unsubscribe token for this address on this list (the same inputs, the same token)."""
    return seal(secret, list_id, address_key(email))


def seal(secret: str, list_id: str, key: str) -> str:
    """:func:`make_token` for an address already in its key form (``Subscriber.key``)."""
    plain = f"{_list_id(list_id)}@{key}"
    head = bytes([VERSION])
    sealed = _cipher(secret).encrypt(_pack(plain), [head])
    return base64.urlsafe_b64encode(head + sealed).rstrip(b"=").decode("ascii")


def read_token(secret: str, token: str, previous: Sequence[str] = ()) -> tuple[str, str]:
    """``(list_id, address key)`` from a token sealed with ``secret`` or, after a rotation, with
    one of the ``previous`` secrets (tried in turn); BadToken for anything that is not one we made."""
    data = _token_bytes(token)
    for key in dict.fromkeys(k for k in (secret, *previous) if k):
        try:
            plain = _unpack(_cipher(key).decrypt(data[1:], [data[:1]]))
        except InvalidTag:
            continue
        list_id, at, address = plain.partition("@")
        if not (list_id and at and "@" in address):
            raise BadToken("the unsubscribe token is damaged")
        return list_id, address
    if not secret:
        _cipher(secret)  # the ConfigError that names the setting
    raise BadToken("the unsubscribe token was altered, or made with another secret")


def _token_bytes(token: str) -> bytes:
    """The bytes of a well-formed token of our version (BadToken otherwise), before opening it."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise BadToken("the unsubscribe token is too long")
    if not _B64URL.fullmatch(token):
        raise BadToken("the unsubscribe token is missing or holds characters a token never has")
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as err:
        raise BadToken("the unsubscribe token is cut short") from err
    # Only the canonical spelling is accepted: no two tokens read as the same one.
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != token or len(data) <= 1 + _TAG:
        raise BadToken("the unsubscribe token is cut short or altered")
    if data[0] != VERSION:
        raise BadToken(f"the unsubscribe token has version {data[0]}; this dispatch reads version {VERSION}")
    return data


def unsubscribe_link(url_template: str, email: str, token: str) -> str:
    """The unsubscribe URL for one recipient: ``{token}`` replaced by the token (appended as
    ``?t=``/``&t=`` when the URL has no ``{token}``); a legacy ``{email}`` becomes the
    percent-encoded address (callers warn about it: it shows the address in the URL)."""
    link = url_template.replace("{email}", quote(email, safe="@"))
    if "{token}" in link:
        return link.replace("{token}", token)
    base, hash_, fragment = link.partition("#")
    joiner = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return f"{base}{joiner}{QUERY_PARAMETER}={token}{hash_}{fragment}"


@functools.lru_cache(maxsize=16)
def _pattern(template: str, stop: str) -> re.Pattern[str]:
    """A template piece as a regex: the first ``{token}`` captured (any other must repeat it),
    ``{email}`` any text up to ``stop``, the rest literally (percent-decoded, as servers see it)."""
    regex = ""
    for part in re.split(r"(\{token\}|\{email\})", template):
        if part == "{token}":
            regex += "(?P=token)" if "(?P<token>" in regex else f"(?P<token>[^{stop}]*)"
        else:
            regex += f"[^{stop}]*" if part == "{email}" else re.escape(unquote(part))
    return re.compile(regex)


def token_from_request(url_template: str, path: str, query: str) -> str | None:
    """Where ``dispatch serve`` finds the token for this URL shape: None when the request is
    not for the unsubscribe URL at all, else the token as sent ("" when missing)."""
    parts = urlsplit(url_template)
    if "{token}" in parts.path:
        match = _pattern(parts.path or "/", "/").fullmatch(path)
        return match["token"] if match else None
    if not _pattern(parts.path or "/", "/").fullmatch(path):
        return None
    sent = parse_qs(query, keep_blank_values=True)
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if "{token}" in values[0]:
            match = _pattern(values[0], "&").fullmatch(sent.get(name, [""])[0])
            return match["token"] if match else ""
    return sent.get(QUERY_PARAMETER, [""])[0]
