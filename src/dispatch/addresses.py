"""Email addresses as dispatch accepts them: one validated, canonical form (the wire address),
and the limits every part of dispatch holds them to."""

from __future__ import annotations

import functools
import re

from email_validator import EmailNotValidError, validate_email

from dispatch.errors import InputError

MAX_DISPLAY_NAME = 200  # characters of a display name in a header; inboxes show a few dozen
# Characters no address or header value may hold: controls, line and paragraph separators,
# a zero-width space and a BOM (an invisible difference between two addresses).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b\ufeff]+")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def validate_address(raw: str) -> str:
    """The wire form of an address, or ValueError with a reason a person can act on.

    email-validator checks the whole address; since most of its time goes on the domain and
    lists repeat a few domains, a plain dot-atom local part is checked here and the domain's
    verdict is cached. Anything unusual goes to email-validator whole.
    """
    address = raw.strip()
    if not address:
        raise ValueError("no email address")
    if "\n" in address or "\r" in address:
        raise ValueError("the address holds a line break (an unclosed quote on this row?)")
    if CONTROL.search(address):
        raise ValueError("the address contains control characters")
    if "=?" in address:
        raise ValueError(
            "the address looks like an encoded-word (=?…?=), which mail programs decode into another one"
        )
    local, at, domain = address.rpartition("@")
    if at and len(local) <= 64 and len(address) <= 254 and _DOT_ATOM.fullmatch(local):
        return f"{local}@{_domain(domain)}"
    return _full_check(address)


def _full_check(address: str) -> str:
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as err:
        raise ValueError(str(err).rstrip(".")) from err
    return str(valid.ascii_email or valid.normalized)


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str:
    """A domain's wire form (lower case, IDNA), as email-validator judges it; cached."""
    return _full_check(f"x@{domain}").partition("@")[2]


def address_key(raw: str) -> str:
    """The key an address is known by (``Subscriber.key``, the suppression store, tokens): its
    wire form, lower-cased; InputError when it is no address."""
    try:
        return validate_address(raw).lower()
    except ValueError as err:
        raise InputError(f"{raw.strip()[:80]!r} is not an email address: {err}") from err
