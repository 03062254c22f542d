"""``dispatch check --dns``: what the From domain publishes (SPF, DMARC, the DKIM selector),
asked of the system's resolvers or of ``DISPATCH_DNS_SERVER`` with dnspython.

A lookup that fails is never taken for "none published": no answer in time, SERVFAIL, REFUSED
or another error code, a server that cannot be reached, an answer that is truncated (and cannot
be had over TCP) or cannot be read are "could not look up NAME (why)". For SPF and DMARC that
is a warning; for the DKIM key, which must be published, it blocks. Only NXDOMAIN and an
answer without TXT records mean none published. Record text is shown with control characters,
escape sequences and bidi overrides made visible (``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations

import base64
import re
import socket
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization as ser

from dispatch.checks.rules import Problem, problem
from dispatch.untrusted import shown

_NONE = "none published"


@dataclass(frozen=True)
class DnsReport:
    """What DNS publishes for the From domain: a record (None: none published, or the lookup
    failed), and why its lookup failed (None: it answered). Record text is :func:`shown`."""

    domain: str
    spf: str | None = None
    dmarc: str | None = None
    dmarc_policy: str | None = None  # p= of the DMARC record: none, quarantine or reject
    dkim_name: str | None = None
    dkim: str | None = None
    dkim_matches: bool | None = None  # None: no record, or no key file to compare with
    spf_error: str | None = None
    dmarc_error: str | None = None
    dkim_error: str | None = None
    dkim_ed25519_name: str | None = None  # the second signature's key (DISPATCH_DKIM_ED25519_*)
    dkim_ed25519: str | None = None
    dkim_ed25519_matches: bool | None = None
    dkim_ed25519_error: str | None = None

    def lines(self) -> list[str]:
        """A short summary, one line per record."""
        policy = "p=none (monitoring only)" if self.dmarc_policy == "none" else f"p={self.dmarc_policy}"
        lines = [
            f"SPF:   {self.spf_error or self.spf or _NONE}",
            f"DMARC: {self.dmarc_error or (policy if self.dmarc else _NONE)}",
        ]
        match = {True: " (matches the key file)", False: " (NOT the key file's key)", None: ""}
        for name, record, matches, error in (
            (self.dkim_name, self.dkim, self.dkim_matches, self.dkim_error),
            (self.dkim_ed25519_name, self.dkim_ed25519, self.dkim_ed25519_matches, self.dkim_ed25519_error),
        ):
            if name:
                lines.append(f"DKIM:  {name}: {error or (f'published{match[matches]}' if record else _NONE)}")
        return lines


class LookupFailed(Exception):
    """A lookup that got no usable answer; its message is "could not look up NAME (why)"."""


class _Unusable(Exception):
    """One server's failure to answer one question (``server_wide``: it will fail every other)."""

    def __init__(self, why: str, *, server_wide: bool = False) -> None:
        super().__init__(why)
        self.server_wide = server_wide


_SERVER = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?")


class _Lookup:
    """TXT lookups, asked of each server in turn with dnspython's query functions (its
    resolver would report a closed port or a garbled answer as a timeout)."""

    def __init__(self, server: str, timeout: float) -> None:
        self.timeout = timeout
        self.broken: str | None = None  # why no lookup can be made (or no longer: server down)
        self.servers: list[tuple[str, int]] = []
        if server:  # host:port or [v6]:port, as Settings writes it; the port may be left out
            match = _SERVER.fullmatch(server.strip())
            try:
                host = (match[1] or match[3]) if match else ""
                socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
                self.servers = [(host, int((match and (match[2] or match[4])) or 53))]
            except (OSError, ValueError):
                self.broken = (
                    f"DISPATCH_DNS_SERVER {server!r} is not an IP address and port like 127.0.0.1:53"
                )
            return
        import dns.resolver  # noqa: PLC0415 - only `check --dns` needs dnspython

        try:
            system = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            self.broken = "this machine has no resolver configured"
            return
        self.servers = [(str(ns), system.port) for ns in system.nameservers]

    def txt(self, name: str) -> list[str]:
        """The TXT records at ``name``, each one's strings joined; [] when none is published.
        LookupFailed when no server gave a usable answer."""
        reasons: list[str] = []
        for host, port in [] if self.broken else self.servers:
            try:
                return _ask(name, host, port, self.timeout)
            except _Unusable as err:
                reasons.append(str(err))
                if err.server_wide and len(self.servers) == 1:
                    self.broken = str(err)  # the next lookups would wait for nothing
        raise LookupFailed(f"could not look up {name} ({'; '.join(reasons) or self.broken})")


def _ask(name: str, host: str, port: int, timeout: float) -> list[str]:
    """One question to one server: UDP on a connected socket (so that an ICMP "port
    unreachable" is seen at once), then TCP when the answer was truncated."""
    import dns.exception  # noqa: PLC0415
    import dns.message  # noqa: PLC0415
    import dns.query  # noqa: PLC0415
    import dns.rcode  # noqa: PLC0415
    import dns.rdatatype  # noqa: PLC0415

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    over = "UDP"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((host, port))
            try:
                answer = dns.query.udp(query, host, timeout, port, sock=sock, raise_on_truncation=True)
            except dns.message.Truncated:
                over = "TCP, after a truncated answer over UDP"
                answer = dns.query.tcp(query, host, timeout, port)
    except (dns.exception.Timeout, OSError, EOFError) as err:
        raise _Unusable(_unreachable(err, where, over, timeout), server_wide=over == "UDP") from err
    except (dns.exception.DNSException, ValueError) as err:  # FormError, BadResponse, a short packet…
        raise _Unusable(f"{where} sent an answer that cannot be read ({type(err).__name__})") from err
    code = answer.rcode()
    if code == dns.rcode.NXDOMAIN:
        return []
    if code != dns.rcode.NOERROR:
        raise _Unusable(f"{where} answered {dns.rcode.to_text(code)}")
    return [
        b"".join(record.strings).decode("utf-8", "replace")
        for rrset in answer.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for record in rrset
    ]


def _unreachable(err: Exception, where: str, over: str, timeout: float) -> str:
    """Why ``where`` gave no answer at all, in a few words."""
    if isinstance(err, ConnectionRefusedError):
        return f"nothing answers at {where} over {over}: connection refused"
    if isinstance(err, EOFError | ConnectionError):
        return f"{where} closed the connection over {over} before answering"
    if isinstance(err, OSError) and not isinstance(err, TimeoutError):
        return f"{where} cannot be reached over {over}: {err.strerror or err}"
    return f"no answer from {where} over {over} in {timeout:g}s"


def _tags(record: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in record.split(";") if "=" in part)
    return {k.strip().lower(): "".join(v.split()) for k, v in pairs}


def _same_key(published: str, expected: str) -> bool:
    """Whether two base64 public keys (SubjectPublicKeyInfo or PKCS#1 RSA, raw Ed25519) match."""
    if published == "".join(expected.split()):
        return True
    try:
        keys = [ser.load_der_public_key(base64.b64decode(k)) for k in (published, expected)]
    except ValueError:
        return False
    der = ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo
    return keys[0].public_bytes(*der) == keys[1].public_bytes(*der)


def _dmarc(lookup: _Lookup, domain: str) -> list[str]:
    """The DMARC records for ``domain``, else for each parent domain in turn (RFC 7489 asks the
    organisational domain, which takes a public-suffix list: here every parent is tried). A
    failed lookup ends the search: what a parent publishes does not count then."""
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        records = lookup.txt("_dmarc." + ".".join(labels[i:]))
        if found := [r for r in records if re.match(r"v\s*=\s*DMARC1\s*(;|$)", r.strip(), re.I)]:
            return found
    return []


def _spf_problems(lookup: _Lookup, domain: str, report: dict[str, str | None]) -> list[Problem]:
    try:
        spf = [r for r in lookup.txt(domain) if re.match(r"v=spf1(\s|$)", r.strip(), re.I)]
    except LookupFailed as err:
        report["spf_error"] = str(err)
        return [problem("dns-error", reason=str(err))]
    report["spf"] = shown(spf[0]) if spf else None
    return [] if len(spf) == 1 else [problem("multiple-spf" if spf else "no-spf", domain=domain, n=len(spf))]


def _dmarc_problems(lookup: _Lookup, domain: str, report: dict[str, str | None]) -> list[Problem]:
    try:
        dmarc = _dmarc(lookup, domain)
    except LookupFailed as err:
        report["dmarc_error"] = str(err)
        return [problem("dns-error", reason=str(err))]
    policy = shown(_tags(dmarc[0]).get("p", "").lower()) if dmarc else None
    report.update(dmarc=shown(dmarc[0]) if dmarc else None, dmarc_policy=policy or None)
    if not dmarc:
        return [problem("no-dmarc", domain=domain)]
    if len(dmarc) > 1 or policy not in ("none", "quarantine", "reject"):
        why = f"{len(dmarc)} records" if len(dmarc) > 1 else f"p='{policy or ''}'"
        return [problem("dmarc-invalid", domain=domain, why=why)]
    return []


def _dkim_problems(
    lookup: _Lookup, name: str, public_key: str | None, report: dict[str, str | None], *, key: str = "dkim"
) -> tuple[list[Problem], bool | None]:
    """The key at ``name``, compared with ``public_key``; ``key`` names the report's fields
    (``dkim`` for DISPATCH_DKIM_KEY_FILE's, ``dkim_ed25519`` for the second signature's)."""
    setting = "DISPATCH_DKIM_ED25519_KEY_FILE" if key == "dkim_ed25519" else "DISPATCH_DKIM_KEY_FILE"
    report[f"{key}_name"] = name
    try:
        records = [r for r in lookup.txt(name) if "p" in _tags(r)]
    except LookupFailed as err:
        report[f"{key}_error"] = str(err)
        return [problem("dkim-lookup-failed", reason=str(err))], None
    report[key] = shown(records[0]) if records else None
    if not records:
        return [problem("no-dkim-record", name=name)], None
    if not _tags(records[0])["p"]:
        return [problem("dkim-revoked", name=name)], None
    if public_key is None:
        return [], None
    matches = _same_key(_tags(records[0])["p"], public_key)
    return ([] if matches else [problem("dkim-mismatch", name=name, setting=setting)]), matches


def dns_problems(
    from_domain: str,
    *,
    dkim_selector: str | None = None,
    dkim_domain: str | None = None,
    dkim_public_key: str | None = None,
    server: str = "",
    timeout: float = 5.0,
    ed25519_selector: str | None = None,
    ed25519_public_key: str | None = None,
) -> tuple[list[Problem], DnsReport]:
    """Look up the From domain's SPF and DMARC records and the DKIM selector's key (dnspython),
    and the second signature's (``ed25519_selector`` at ``dkim_domain``) when there is one.

    ``server`` is DISPATCH_DNS_SERVER (``host:port``); empty asks the system's resolvers.
    ``dkim_public_key`` (:attr:`dispatch.compose.dkim.Signer.public_key_b64`) is compared with DNS.
    A failed lookup is a ``dns-error`` warning for SPF or DMARC, and the blocking
    ``dkim-lookup-failed`` for a DKIM key; once the server stops answering, it is not asked again.
    """
    domain = from_domain.strip().rstrip(".").lower()
    lookup = _Lookup(server, timeout)
    report: dict[str, str | None] = {}
    found = _spf_problems(lookup, domain, report) + _dmarc_problems(lookup, domain, report)
    matches: dict[str, bool | None] = {}
    keys = [("dkim", dkim_selector, dkim_public_key), ("dkim_ed25519", ed25519_selector, ed25519_public_key)]
    for key, selector, public_key in keys:
        if selector and dkim_domain:
            name = f"{selector}._domainkey.{dkim_domain.lower()}"
            more, matches[key] = _dkim_problems(lookup, name, public_key, report, key=key)
            found += more
    matched = matches.get("dkim"), matches.get("dkim_ed25519")
    return found, DnsReport(domain, dkim_matches=matched[0], dkim_ed25519_matches=matched[1], **report)
