"""DKIM: key generation, a signer for the exact wire bytes, verification and alignment.

Signing follows RFC 6376 (relaxed/relaxed; rsa-sha256, or ed25519-sha256 after RFC 8463) and
does the key's part with OpenSSL through ``cryptography``: ~0.25 ms for RSA-2048, where dkimpy's
pure-Python RSA took ~11 ms. The canonicalisation is :mod:`dispatch.compose.dkimcanon`.
A message can carry a second signature, Ed25519 beside RSA (:func:`load_signatures`); the
header block is read and the body hashed once for both.

The signature covers the bytes it is given: prepend :meth:`Signer.sign`'s header to those
very bytes and send them as they are (the transport's dot-stuffing is undone by the server
before any verifier sees them). Never parse and re-serialize a message after signing
(Python's ``email`` package re-folds and re-encodes headers, which breaks the signature).
dkimpy verifies (:func:`verify`, and the tests).

The private key never appears in a message, a repr or an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from dispatch.compose.dkimcanon import Canonicaliser, Covered, folded, relaxed_header
from dispatch.compose.dkimkeys import Algorithm, DkimError, KeyRecord, load_key, public_b64
from dispatch.settings import PREFIX, Settings

_SETTING = "DISPATCH_DKIM_KEY_FILE"
_SECOND = "DISPATCH_DKIM_ED25519_KEY_FILE"

# --- signing ---------------------------------------------------------------------------------

_B64_LINE = 72  # signature characters per line: " b=" and 72 make 75


def sign_message(
    message: bytes,
    signers: Sequence[Signer],
    pieces: Sequence[bytes] = (),
    canon: Canonicaliser | None = None,
) -> bytes:
    """The DKIM-Signature fields (one per signer, in that order, folded, CRLF-terminated) to put
    in front of ``message``, its exact wire bytes (CRLF line ends, before dot-stuffing). What
    they cover is worked out once for all (see :meth:`Canonicaliser.covered`)."""
    try:
        covered = (canon or Canonicaliser()).covered(message, pieces)
    except ValueError as err:
        raise DkimError(f"cannot DKIM-sign a message {err}") from err
    now = int(time.time())
    return b"".join(signer.signature(covered, now) for signer in signers)


@dataclass(frozen=True)
class Signer:
    """Signs messages for one selector and domain with one private key (OpenSSL, through
    ``cryptography``). Its repr never shows the key."""

    selector: str
    domain: str
    algorithm: Algorithm
    bits: int
    key_file: Path
    public_key_b64: str = field(repr=False)
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()  # one-line notes for the caller to show (loose mode)
    _starts: dict[tuple[bytes, ...], bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dns_record(self) -> KeyRecord:
        """The TXT record this key needs in DNS."""
        return KeyRecord(self.selector, self.domain, self.algorithm, self.public_key_b64, self.bits)

    def sign(self, message: bytes) -> bytes:
        """The ``DKIM-Signature:`` field (folded, CRLF-terminated) to prepend to ``message``.

        ``message`` must be the exact wire bytes, CRLF line ends; nothing may re-fold them later.
        """
        return sign_message(message, (self,))

    def signed(self, message: bytes) -> bytes:
        """``message`` with its DKIM-Signature header in front."""
        return self.sign(message) + message

    def _start(self, names: tuple[bytes, ...]) -> bytes:
        """The field up to h= (the same for every message with these fields), folded."""
        start = self._starts.get(names)
        if start is None:
            kind = b"ed25519-sha256" if self.algorithm == "ed25519" else b"rsa-sha256"
            tags = [b"v=1;", b"a=" + kind + b";", b"c=relaxed/relaxed;", b"d=" + self.domain.encode() + b";"]
            words = [(b" ", tag) for tag in [*tags, b"s=" + self.selector.encode() + b";"]]
            listed = [b"h=" + names[0], *names[1:]]
            words += [
                (b"" if i else b" ", name + (b":" if i < len(names) - 1 else b";"))
                for i, name in enumerate(listed)
            ]
            start = self._starts[names] = folded(b"DKIM-Signature:", words)
        return start

    def signature(self, covered: Covered, now: int) -> bytes:
        """This key's DKIM-Signature field over what ``covered`` says; b= alone on the last lines."""
        words = [(b" ", b"t=%d;" % now), (b" ", b"bh=" + covered.body_hash + b";")]
        unsigned = folded(self._start(covered.names), words) + b"\r\n b="
        name, value = unsigned.split(b":", 1)
        data = covered.headers + relaxed_header(name, value)
        if isinstance(self.key, ed25519.Ed25519PrivateKey):  # RFC 8463: Ed25519 over the SHA-256
            raw = self.key.sign(hashlib.sha256(data).digest())
        else:
            raw = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        b64 = base64.b64encode(raw)
        return (
            unsigned + b"\r\n ".join(b64[i : i + _B64_LINE] for i in range(0, len(b64), _B64_LINE)) + b"\r\n"
        )


@dataclass(frozen=True)
class Signatures:
    """The DKIM signatures each message of an issue gets: the main key's, then the optional
    second one; what recurs from message to message is canonicalised once."""

    signers: tuple[Signer, ...]
    canon: Canonicaliser = field(default_factory=Canonicaliser, repr=False, compare=False)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every key's notes."""
        return tuple(note for signer in self.signers for note in signer.warnings)

    def signed(self, message: bytes, pieces: Sequence[bytes] = ()) -> bytes:
        """``message`` with its DKIM-Signature fields in front; ``pieces``: ``message`` in the
        parts it was joined from (see :func:`sign_message`)."""
        return sign_message(message, self.signers, pieces, self.canon) + message


def load_signer(key_file: Path, selector: str, domain: str, *, setting: str = _SETTING) -> Signer:
    """Load and check a private key (:func:`~dispatch.compose.dkimkeys.load_key`); raise
    DkimError (one line naming ``setting``, exit 2) if it cannot sign. A key file other users
    can read is accepted, with a note in :attr:`Signer.warnings`."""
    key, algorithm, bits, notes = load_key(key_file, selector, domain, f"{setting}: {key_file}")
    return Signer(selector, domain.lower(), algorithm, bits, key_file, public_b64(key), key, notes)


def load_signatures(settings: Settings) -> Signatures | None:
    """The signatures the settings ask for, keys loaded and checked (None: DKIM is off).

    ``DISPATCH_DKIM_ED25519_KEY_FILE`` adds an Ed25519 signature after the main key's, which
    must then be RSA: receivers that cannot check Ed25519 (RFC 8463) still find one they can.
    """
    if settings.dkim_key_file is None:
        return None
    main = load_signer(settings.dkim_key_file, settings.dkim_selector, settings.dkim_domain)
    if settings.dkim_ed25519_key_file is None:
        return Signatures((main,))
    second = load_signer(
        settings.dkim_ed25519_key_file, settings.dkim_ed25519_selector, settings.dkim_domain, setting=_SECOND
    )
    if second.algorithm != "ed25519":
        raise DkimError(
            f"{_SECOND}: {second.key_file} is an RSA key; the second signature takes an Ed25519 key: make "
            "one with `dispatch dkim keygen --algorithm ed25519`"
        )
    if main.algorithm != "rsa":
        raise DkimError(
            f"{_SETTING}: {main.key_file} is an Ed25519 key too; the second signature goes beside an RSA "
            f"key, which every receiver checks: set {_SETTING} to one (`dispatch dkim keygen`), or unset "
            f"{PREFIX}DKIM_ED25519_KEY_FILE and {PREFIX}DKIM_ED25519_SELECTOR"
        )
    return Signatures((main, second))


def verify(message: bytes, public_key_b64: str) -> bool:
    """Whether the message's first DKIM signature verifies with this public key (no DNS).

    ``public_key_b64`` is the ``p=`` value of the TXT record; a 32-byte key is Ed25519.
    """
    import dkim as dkimpy  # noqa: PLC0415 - dkimpy brings dnspython: only when verifying

    key = "".join(public_key_b64.split())
    try:
        kind = "ed25519" if len(base64.b64decode(key, validate=True)) == 32 else "rsa"
    except (binascii.Error, ValueError):
        return False
    record = f"v=DKIM1; k={kind}; p={key}".encode("ascii")

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return record

    return bool(dkimpy.verify(message, dnsfunc=dnsfunc))


def aligned(from_domain: str, dkim_domain: str) -> bool:
    """Relaxed DMARC alignment of the From domain and the DKIM ``d=`` domain.

    DMARC compares organisational domains, which takes the Public Suffix List. Without it,
    this treats the two as aligned when they are equal or one is a subdomain of the other
    (``news.example.org`` and ``example.org``). That misses two sibling subdomains of one
    organisation (``a.example.org``, ``b.example.org``: aligned for DMARC, not here), and it
    would call a public suffix (``co.uk``) aligned with a domain under it; sign with the
    From domain itself to be safe.
    """
    a = from_domain.strip().rstrip(".").lower()
    b = dkim_domain.strip().rstrip(".").lower()
    if not a or not b:
        return False
    return a == b or a.endswith("." + b) or b.endswith("." + a)
