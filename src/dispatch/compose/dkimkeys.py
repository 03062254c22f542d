"""DKIM keys: making one, reading one from its file, and checking that it can sign; the DNS
record that publishes it. Signing with a key is :mod:`dispatch.compose.dkim`.

A key is read with OpenSSL's own RSA check turned off: that check tests that the key's primes
are prime, ~120 ms at the start of every signed send. :func:`check_rsa` checks what signing
needs instead: numbers that fit together, and a signature that verifies.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from dispatch.errors import ConfigError

SigningKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

Algorithm = Literal["rsa", "ed25519"]
MIN_BITS = 2048  # RFC 8301 lets receivers ignore keys under 1024 bits; Gmail and Yahoo ask for 2048
RECOMMENDED_BITS = 2048
MAX_BITS = 4096  # the largest RFC 8301 makes every verifier check
_MAX_KEY_FILE = 64 * 1024
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


def check_names(selector: str, domain: str) -> None:
    if not _LABEL.fullmatch(selector):
        raise DkimError(
            f"DKIM selector {selector!r} is not a DNS label; use letters, digits and dashes, like s2026"
        )
    if not _LABEL.fullmatch(domain) or "." not in domain:
        raise DkimError(f"DKIM domain {domain!r} is not a domain name like example.org")


def public_b64(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
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
    check_names(selector, domain)
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
    return KeyRecord(selector, domain.lower(), algorithm, public_b64(key), bits)


def read_key_file(key_file: Path, where: str) -> bytes:
    """The key file's bytes; DkimError (one line starting with ``where``) for a missing,
    unreadable, oversized or special file."""
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


def parse_private_key(data: bytes, where: str) -> PrivateKeyTypes:
    """The private key a PEM file holds; DkimError for a public key, an encrypted key or no key."""
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise DkimError(f"{where} holds a public key; signing needs the private key that keygen wrote")
    if b"ENCRYPTED" in data:
        raise DkimError(
            f"{where} is encrypted with a passphrase; give dispatch an unencrypted key (mode 0600)"
        )
    try:
        with warnings.catch_warnings():  # cryptography warns of DSA on stderr: the error below says it
            warnings.simplefilter("ignore")
            # (OpenSSL's check of an RSA key: see check_rsa and the module's notes)
            return serialization.load_pem_private_key(
                data, password=None, unsafe_skip_rsa_key_validation=True
            )
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise DkimError(
            f"{where} is not a PEM private key; point it at the private key `dispatch dkim keygen` wrote"
        ) from err


_PROBE = b"dispatch: can this key sign?"


def check_rsa(key: rsa.RSAPrivateKey, where: str) -> None:
    """DkimError unless the key's numbers fit together (so OpenSSL is never handed a malformed
    key) and a signature it makes verifies with its public half: what a key that was loaded
    without OpenSSL's check must show before it signs anything."""
    numbers = key.private_numbers()
    p, q, d, e, n = numbers.p, numbers.q, numbers.d, numbers.public_numbers.e, numbers.public_numbers.n
    fits = (
        p > 2 and q > 2 and p % 2 == 1 and q % 2 == 1 and e > 2 and e % 2 == 1 and p * q == n
        and 0 < d < n and numbers.dmp1 == d % (p - 1) and numbers.dmq1 == d % (q - 1)
        and numbers.iqmp * q % p == 1
    )  # fmt: skip
    if fits:
        signature = key.sign(_PROBE, padding.PKCS1v15(), hashes.SHA256())
        try:
            key.public_key().verify(signature, _PROBE, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            fits = False
    if not fits:
        raise DkimError(
            f"{where} is an RSA key whose parts do not match (damaged?), so its signatures would not "
            "verify; create a new key with `dispatch dkim keygen`"
        )


def load_key(
    key_file: Path, selector: str, domain: str, where: str
) -> tuple[SigningKey, Algorithm, int, tuple[str, ...]]:
    """A private key that can sign, its algorithm, its size and notes for the caller to show;
    DkimError (one line starting with ``where``) if it cannot. RSA keys must have 2048 to 4096
    bits and pass :func:`check_rsa`."""
    check_names(selector, domain)
    key = parse_private_key(read_key_file(key_file, where), where)
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
        check_rsa(key, where)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        bits, algorithm = 256, "ed25519"
    else:
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        article = "an" if kind[:1] in "AEIOUX" else "a"  # an EC key, an X25519 key
        raise DkimError(f"{where} holds {article} {kind} key; DKIM needs an RSA (2048-bit) or Ed25519 key")
    if key_file.stat().st_mode & 0o077:
        notes.append(f"{where} can be read by other users; chmod 600 {key_file}")
    return key, algorithm, bits, tuple(notes)
