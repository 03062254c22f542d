"""Text files in the encoding a user names (``--encoding``): the name checked before the file
is opened, a UTF-16 or UTF-32 file recognised with or without its byte-order mark, and the
line of the first byte the encoding refuses. Every failure is one InputError line naming the
file or the option and what to do."""

from __future__ import annotations

import codecs
import contextlib
import io
from pathlib import Path
from typing import TextIO

from dispatch.errors import InputError
from dispatch.files import open_regular

DEFAULT = "utf-8-sig"  # UTF-8, with or without the byte-order mark Excel writes
# Codecs Python keeps for other jobs than reading a file's text: domain names, Python string
# literals, and one that refuses everything.
_NOT_FOR_FILES = {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}
_BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SNIFF = 4096  # bytes read to recognise UTF-16/32 without a mark
_EXAMPLES = "utf-8, cp1252, latin-1 or utf-16"


def _shown(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "…")


def check_encoding(name: str, option: str = "--encoding") -> str:
    """``name`` if it names a text encoding a file can be read in; InputError otherwise
    (unknown names, and codecs that are not text encodings: rot13, base64, hex, idna…)."""
    try:
        canonical = codecs.lookup(name).name
        io.TextIOWrapper(io.BytesIO(), encoding=canonical)  # LookupError for rot13, base64, hex…
    except (LookupError, ValueError, TypeError):
        raise InputError(
            f"{option} {_shown(name)} is not a known text encoding; use one like {_EXAMPLES}"
        ) from None
    if canonical in _NOT_FOR_FILES:
        raise InputError(
            f"{option} {_shown(name)} is not an encoding files are saved in; use one like {_EXAMPLES}"
        )
    return name


def _unmarked(head: bytes) -> str | None:
    """UTF-16 or UTF-32 (with its byte order) recognised by the NUL bytes of mostly-ASCII text
    that has no byte-order mark, or None. A CSV's header line is ASCII in practice; what the
    guess decodes to must be text (no control characters), or it is no guess."""
    for width, family in ((4, "utf-32"), (2, "utf-16")):
        usable = len(head) // width * width
        if usable < 8 * width:
            continue
        share = [head[i:usable:width].count(0) * width / usable for i in range(width)]
        high, low = share[1:], share[:-1]  # for little endian, then for big endian
        found = None
        if share[0] < 0.05 and all(s > 0.3 for s in high) and (width == 2 or share[3] > 0.95):
            found = f"{family}-le"
        elif share[-1] < 0.05 and all(s > 0.3 for s in low) and (width == 2 or share[0] > 0.95):
            found = f"{family}-be"
        if found and _is_text(head[:usable].decode(found, "replace")):
            return found
    return None


def _is_text(text: str) -> bool:
    return not any(c == "\ufffd" or (c < " " and c not in "\t\r\n") for c in text[:-1])


def detect(path: Path, what: str, encoding: str) -> str:
    """The encoding to read ``path`` with. For UTF-8 (the default), a UTF-16/32 byte-order
    mark, or UTF-16/32 text without one, is recognised and used; for ``utf-16``/``utf-32``
    without a mark the byte order is read from the text, and InputError when it cannot be."""
    check_encoding(encoding)
    canonical = codecs.lookup(encoding).name
    if canonical not in {"utf-8", "utf-8-sig", "utf-16", "utf-32"}:
        return encoding
    with open_regular(path, what) as handle:
        try:
            head = handle.read(_SNIFF)
        except OSError as err:
            raise InputError(f"{path}: cannot read the {what}: {err.strerror}") from err
    marked = next((family for bom, family in _BOMS if head.startswith(bom)), None)
    if canonical.startswith("utf-8"):
        return marked or _unmarked(head) or encoding
    if marked == canonical:
        return encoding
    found = _unmarked(head)
    if found and found.startswith(canonical):
        return found
    raise InputError(
        f"{path}: is not {canonical.upper()} with a byte-order mark; pass --encoding "
        f"{canonical}-le or {canonical}-be (Windows writes -le), or re-save the file as UTF-8"
    )


def open_text(path: Path, what: str, encoding: str) -> TextIO:
    """The file as text in ``encoding`` (as :func:`detect` returned it), newlines untouched."""
    return io.TextIOWrapper(open_regular(path, what), encoding=encoding, newline="")


def first_undecodable(path: Path, what: str, encoding: str) -> tuple[int, int | None]:
    """(line, byte) of the first byte ``encoding`` refuses, lines counted in the decoded text
    (so a UTF-16 file's lines are right too); read again in chunks, on error only."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open_regular(path, what) as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            state = decoder.getstate()
            try:
                line += decoder.decode(chunk).count("\n")
            except UnicodeDecodeError as err:
                start = err.start - (len(err.object) - len(chunk))  # where in this chunk
                if start <= 0:
                    return line, chunk[0] if start == 0 else None
                decoder.setstate(state)
                with contextlib.suppress(UnicodeError):
                    line += decoder.decode(chunk[:start]).count("\n")
                return line, chunk[start]
            except UnicodeError:
                return line, None
    return line, None


def decode_error(path: Path, what: str, encoding: str, hint: str) -> InputError:
    """The one-line error for a file that is not in ``encoding``: its line and byte, and ``hint``."""
    line, byte = first_undecodable(path, what, encoding)
    name = codecs.lookup(encoding).name.removesuffix("-sig").upper()
    where = f" (byte 0x{byte:02x})" if byte is not None else ""
    return InputError(f"{path}: line {line} is not {name} text{where}; {hint}")
