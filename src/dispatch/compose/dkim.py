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
import os
import re
import stat
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from dispatch.compose.dkimcanon import Canonicaliser, Covered, folded, relaxed_header
from dispatch.errors import ConfigError
from dispatch.settings import PREFIX, Settings

Algorithm = Literal["rsa", "ed25519"]
MIN_BITS = 2048  # RFC 8301 lets receivers ignore keys under 1024 bits; Gmail and Yahoo ask for 2048
RECOMMENDED_BITS = 2048
MAX_BITS = 4096  # the largest RFC 8301 makes every verifier check
_MAX_KEY_FILE = 64 * 1024
_SETTING = "DISPATCH_DKIM_KEY_FILE"
_SECOND = "DISPATCH_DKIM_ED25519_KEY_FILE"
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_LABEL = re.compile(rf"(?=.{{1,253}}$){_PART}(?:\.{_PART})*")  # a label or a dotted name


class DkimError(ConfigError):
    """A DKIM key cannot be created, read or used."""


@dataclass(frozen=True)
class KeyRecord:
    """The DNS TXT record that publishes a DKIM public key."""

    selector: str
    domain: str
    algorithm: Algorithm
    public_key_b64: str
    bits: int

    @property
    def name(self) -> str:
        """The record's name: ``selector._domainkey.domain``."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def value(self) -> str:
        """The TXT value to publish, in one piece (DNS consoles take it like this)."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key_b64}"

    @property
    def strings(self) -> tuple[str, ...]:
        """The value split into character-strings of at most 255 bytes (one TXT record)."""
        value = self.value
        return tuple(value[i : i + 255] for i in range(0, len(value), 255))

    @property
    def zone(self) -> str:
        """The record in zone-file form, for BIND-style zone files."""
        quoted = "\n\t".join(f'"{s}"' for s in self.strings)
        return f"{self.name}. IN TXT ( {quoted} )"


def _check_names(selector: str, domain: str) -> None:
    if not _LABEL.fullmatch(selector):
        raise DkimError(
            f"DKIM selector {selector!r} is not a DNS label; use letters, digits and dashes, like s2026"
        )
    if not _LABEL.fullmatch(domain) or "." not in domain:
        raise DkimError(f"DKIM domain {domain!r} is not a domain name like example.org")


def _public_b64(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(raw).decode("ascii")


def generate_key(
    path: Path, *, selector: str, domain: str, bits: int = RECOMMENDED_BITS, algorithm: Algorithm = "rsa"
) -> KeyRecord:
    """Write a new private key (PEM, PKCS#8, mode 0600) to ``path`` and return what to publish.

    The file is created exclusively: an existing file is never overwritten.
    """
    _check_names(selector, domain)
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "ed25519":
        key, bits = ed25519.Ed25519PrivateKey.generate(), 256
    elif algorithm == "rsa":
        if not MIN_BITS <= bits <= MAX_BITS:
            raise DkimError(
                f"an RSA DKIM key must have {MIN_BITS} to {MAX_BITS} bits ({RECOMMENDED_BITS} recommended), "
                f"not {bits}"
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise DkimError(f"unknown DKIM key algorithm {algorithm!r}; use rsa or ed25519")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise DkimError(
            f"{path} already exists; dispatch never overwrites a key: choose another file (and selector)"
        ) from err
    except OSError as err:
        raise DkimError(f"{path}: cannot create the key file ({err.strerror}); check the folder") from err
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        path.unlink(missing_ok=True)
        raise DkimError(f"{path}: cannot write the key file ({err.strerror})") from err
    return KeyRecord(selector, domain.lower(), algorithm, _public_b64(key), bits)


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


def _read_key_file(key_file: Path, where: str) -> bytes:
    try:
        info = key_file.stat()
        if stat.S_ISDIR(info.st_mode):
            raise DkimError(f"{where} is a folder; point it at the private key file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would hang the run
            raise DkimError(f"{where} is not a regular file; point it at the private key file")
        if info.st_size > _MAX_KEY_FILE:
            raise DkimError(f"{where} is too large to be a DKIM key; point it at the private key file")
        return key_file.read_bytes()
    except FileNotFoundError as err:
        raise DkimError(
            f"{where} does not exist; create a key with `dispatch dkim keygen` or fix the path"
        ) from err
    except PermissionError as err:
        raise DkimError(
            f"{where} cannot be read by this user; fix its owner or permissions (chmod 600)"
        ) from err
    except OSError as err:
        raise DkimError(f"{where} cannot be read ({err.strerror})") from err


def _parse_private_key(data: bytes, where: str) -> PrivateKeyTypes:
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise DkimError(f"{where} holds a public key; signing needs the private key that keygen wrote")
    if b"ENCRYPTED" in data:
        raise DkimError(
            f"{where} is encrypted with a passphrase; give dispatch an unencrypted key (mode 0600)"
        )
    try:
        with warnings.catch_warnings():  # cryptography warns of DSA on stderr: the error below says it
            warnings.simplefilter("ignore")
            return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise DkimError(
            f"{where} is not a PEM private key; point it at the private key `dispatch dkim keygen` wrote"
        ) from err


def load_signer(key_file: Path, selector: str, domain: str, *, setting: str = _SETTING) -> Signer:
    """Load and check a private key; raise DkimError (one line naming ``setting``, exit 2) if it
    cannot sign.

    RSA keys must have 2048 to 4096 bits; a key file other users can read is accepted, with a
    note in :attr:`Signer.warnings`.
    """
    _check_names(selector, domain)
    where = f"{setting}: {key_file}"
    key = _parse_private_key(_read_key_file(key_file, where), where)
    notes: list[str] = []
    algorithm: Algorithm = "rsa"
    if isinstance(key, rsa.RSAPrivateKey):
        bits = key.key_size
        if not MIN_BITS <= bits <= MAX_BITS:
            why = (
                f"RFC 8301 asks receivers to verify keys of up to {MAX_BITS} bits only"
                if bits > MAX_BITS
                else f"Gmail, Yahoo and Microsoft expect at least {MIN_BITS} bits (RFC 8301 lets receivers "
                "ignore keys under 1024)"
            )
            article = "an" if str(bits).startswith(("8", "11", "18")) else "a"  # an 8192-bit key
            raise DkimError(
                f"{where} is {article} {bits}-bit RSA key; {why}: create a {RECOMMENDED_BITS}-bit key with "
                "`dispatch dkim keygen`"
            )
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        bits, algorithm = 256, "ed25519"
    else:
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        article = "an" if kind[:1] in "AEIOUX" else "a"  # an EC key, an X25519 key
        raise DkimError(f"{where} holds {article} {kind} key; DKIM needs an RSA (2048-bit) or Ed25519 key")
    if key_file.stat().st_mode & 0o077:
        notes.append(f"{where} can be read by other users; chmod 600 {key_file}")
    return Signer(selector, domain.lower(), algorithm, bits, key_file, _public_b64(key), key, tuple(notes))


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
