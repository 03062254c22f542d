"""Header lines as RFC 5322 and RFC 2047 want them: one line of text with no control character,
folded within 78 octets (never over 998), encoded-words of at most 75 characters for what is
not plain ASCII or cannot fold, and a display name and address written so that no value can
ever make a header of its own."""

from __future__ import annotations

import base64
import re
from email import policy

from dispatch.addresses import MAX_DISPLAY_NAME

_FOLD = policy.SMTP


MAX_HEADER_LINE = 78  # RFC 5322's recommendation; 998 is the hard limit no line may pass
MAX_LINE = 998
ENCODED_WORD_BYTES = 42  # base64 of 42 bytes is 56 characters: a 68-character encoded-word
FOLD_SEPARATOR = "\r\n "
# Control characters, line breaks, and lone surrogates: bytes that were not UTF-8 in a
# command-line argument (--subject $'\xff') can be neither encoded nor shown.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")


def header_text(value: str) -> str:
    """A header value with every control character and line break turned into a space."""
    return " ".join(_CONTROL.sub(" ", value).split())


def _plain(text: str) -> bool:
    """Printable ASCII with nothing an RFC 2047 decoder would read as an encoded-word."""
    return text.isascii() and "=?" not in text


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 "B" encoded-words of 68 characters at most (the limit is 75), each
    holding whole characters, decoding back to exactly ``text``."""
    whole = text.encode()
    if len(whole) <= ENCODED_WORD_BYTES:
        return [f"=?utf-8?b?{base64.b64encode(whole).decode('ascii')}?="]
    words: list[bytes] = []
    chunk = b""
    for char in text:
        data = char.encode()
        if chunk and len(chunk) + len(data) > ENCODED_WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words]


def _fits(folded: str) -> bool:
    """Folded by the stdlib within 78 octets a line, and with no encoded-word of its own (the
    stdlib makes over-long ones for words it cannot fold)."""
    return "=?" not in folded and max(map(len, folded.split("\r\n"))) <= MAX_HEADER_LINE


def fold(name: str, value: str) -> bytes:
    """An unstructured header (Subject) as wire bytes, folded; never more than one header.

    Plain ASCII is folded by the stdlib; anything else (non-ASCII text, a word too long to fold,
    text that merely looks like an encoded-word such as ``=?UTF-8?Q?=0A?=``) is encoded here, so
    it stays literal text and no line passes 78 octets.
    """
    text = header_text(value)
    if _plain(text):
        folded: str = _FOLD.fold(name, _FOLD.header_factory(name, text))
        if _fits(folded):
            return folded.encode("ascii")
    return f"{name}: {FOLD_SEPARATOR.join(_encoded_words(text))}\r\n".encode("ascii")


_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_QUOTABLE = re.compile(r"[ -~]*")  # printable ASCII: a quoted-string can hold it


def _simple_mailbox(name: str, display: str, addr_spec: str) -> bytes | None:
    """``Name <address>`` written directly when the display name is ASCII atoms (or printable
    ASCII, quoted) and the line fits in 78 octets; None for anything else."""
    if not display:
        line = f"{name}: {addr_spec}"
    elif _PHRASE.fullmatch(display) and "=?" not in display:
        line = f"{name}: {display} <{addr_spec}>"
    elif _QUOTABLE.fullmatch(display) and "=?" not in display:
        quoted = display.replace("\\", "\\\\").replace('"', '\\"')
        line = f'{name}: "{quoted}" <{addr_spec}>'
    else:
        return None
    return (line + "\r\n").encode("ascii") if len(line) <= MAX_HEADER_LINE else None


def _packed(name: str, tokens: list[str]) -> str:
    """``tokens`` after ``name:``, a space between each, a new folded line whenever the next
    token would push the line past 78 octets (a token longer than that gets a line of its own)."""
    lines = [f"{name}: {tokens[0]}"]
    for token in tokens[1:]:
        if len(lines[-1]) + 1 + len(token) <= MAX_HEADER_LINE:
            lines[-1] += " " + token
        else:
            lines.append(" " + token)
    return "\r\n".join(lines) + "\r\n"


def phrase_header(name: str, phrase: str, angle: str) -> bytes:
    """A header holding a display phrase and one ``<angle>`` part (a mailbox, a List-Id).

    Never handed to a general folder: a phrase of atoms is folded between its words, a phrase
    with specials (commas, angle brackets, quotes, semicolons) is one quoted-string when it
    fits a line, and anything else becomes RFC 2047 encoded-words. So no reader can take part of
    a name for a second address, whatever the name holds.
    """
    tail = f"<{angle}>"
    if not phrase:
        return _packed(name, [tail]).encode("ascii")
    if _plain(phrase):
        words = phrase.split(" ")
        if _PHRASE.fullmatch(phrase) and max(map(len, words)) < MAX_HEADER_LINE:
            return _packed(name, [*words, tail]).encode("ascii")
        if _QUOTABLE.fullmatch(phrase):
            quoted = '"' + phrase.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if len(name) + 2 + len(quoted) <= MAX_HEADER_LINE:
                return _packed(name, [quoted, tail]).encode("ascii")
    return _packed(name, [*_encoded_words(phrase), tail]).encode("ascii")


def fold_mailbox(name: str, display_name: str, addr_spec: str) -> bytes:
    """An address header with one mailbox, its display name quoted or encoded as needed (and
    cut to MAX_DISPLAY_NAME characters: the list reports longer names as it reads them)."""
    display = header_text(display_name)[:MAX_DISPLAY_NAME].rstrip()
    simple = _simple_mailbox(name, display, addr_spec)  # the common case, in one line
    if simple is not None:
        return simple
    return phrase_header(name, display, addr_spec)


# --- bodies: encoded once, personalised by splicing --------------------------------------
