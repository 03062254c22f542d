"""``dispatch check --dns``: what the From domain publishes (SPF, DMARC, the DKIM selector),
asked of the system resolver or of ``DISPATCH_DNS_SERVER`` with dnspython."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization as ser

from dispatch.checks import Problem, problem


@dataclass(frozen=True)
class DnsReport:
    """What DNS publishes for the From domain (None: nothing found, or the lookup failed)."""

    domain: str
    spf: str | None = None
    dmarc: str | None = None
    dmarc_policy: str | None = None  # p= of the DMARC record: none, quarantine or reject
    dkim_name: str | None = None
    dkim: str | None = None
    dkim_matches: bool | None = None  # None: no record, or no key file to compare with

    def lines(self) -> list[str]:
        """A short summary, one line per record."""
        policy = "p=none (monitoring only)" if self.dmarc_policy == "none" else f"p={self.dmarc_policy}"
        lines = [
            f"SPF:   {self.spf or 'none published'}",
            f"DMARC: {policy if self.dmarc else 'none published'}",
        ]
        if self.dkim_name:
            match = {True: " (matches the key file)", False: " (NOT the key file's key)", None: ""}
            found = f"published{match[self.dkim_matches]}" if self.dkim else "none published"
            lines.append(f"DKIM:  {self.dkim_name}: {found}")
        return lines


class _DnsFailure(Exception):
    """A lookup that got no usable answer (timeout, SERVFAIL, no resolver); a one-line reason."""


class _Lookup:
    def __init__(self, server: str, timeout: float) -> None:
        import dns.resolver  # noqa: PLC0415 - only `check --dns` needs dnspython

        self.where = server or "the system resolver"
        try:
            self.resolver = dns.resolver.Resolver(configure=not server)
        except dns.resolver.NoResolverConfiguration as err:
            raise _DnsFailure("this machine has no resolver configured") from err
        if server:  # host:port or [v6]:port, as Settings writes it; the port may be left out
            match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?", server.strip())
            bad = f"DISPATCH_DNS_SERVER {server!r} is not an IP address and port like 127.0.0.1:53"
            if match is None:
                raise _DnsFailure(bad)
            try:
                self.resolver.nameservers = [match[1] or match[3]]
                self.resolver.port = int(match[2] or match[4] or 53)
            except ValueError as err:
                raise _DnsFailure(bad) from err
        self.resolver.timeout = self.resolver.lifetime = timeout

    def txt(self, name: str) -> list[str]:
        """The TXT records at ``name``, each one's strings joined; [] when there is none."""
        import dns.exception  # noqa: PLC0415
        import dns.resolver  # noqa: PLC0415

        try:
            answer = self.resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as err:
            raise _DnsFailure(
                f"no answer from {self.where} for {name} in {self.resolver.lifetime:g}s"
            ) from err
        except dns.resolver.NoNameservers as err:
            raise _DnsFailure(f"{self.where} could not look up {name} (SERVFAIL or refused)") from err
        except dns.exception.DNSException as err:
            raise _DnsFailure(f"looking up {name} at {self.where} failed ({type(err).__name__})") from err
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


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
    organisational domain, which takes a public-suffix list: here every parent is tried)."""
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        records = lookup.txt("_dmarc." + ".".join(labels[i:]))
        if found := [r for r in records if re.match(r"v\s*=\s*DMARC1\s*(;|$)", r.strip(), re.I)]:
            return found
    return []


def dns_problems(
    from_domain: str,
    *,
    dkim_selector: str | None = None,
    dkim_domain: str | None = None,
    dkim_public_key: str | None = None,
    server: str = "",
    timeout: float = 5.0,
) -> tuple[list[Problem], DnsReport]:
    """Look up the From domain's SPF and DMARC records and the DKIM selector's key (dnspython).

    ``server`` is DISPATCH_DNS_SERVER (``host:port``); empty asks the system resolver.
    ``dkim_public_key`` (:attr:`dispatch.dkim.Signer.public_key_b64`) is compared with DNS.
    A lookup that times out or fails is one ``dns-error`` warning, and ends the lookups.
    """
    domain = from_domain.strip().rstrip(".").lower()
    found: list[Problem] = []
    report: dict[str, str | None] = {}
    matches: bool | None = None
    try:
        lookup = _Lookup(server, timeout)
        spf = [r for r in lookup.txt(domain) if re.match(r"v=spf1(\s|$)", r.strip(), re.I)]
        report["spf"] = spf[0] if spf else None
        if len(spf) != 1:
            found.append(problem("multiple-spf" if spf else "no-spf", domain=domain, n=len(spf)))
        dmarc = _dmarc(lookup, domain)
        policy = _tags(dmarc[0]).get("p", "").lower() if dmarc else None
        report.update(dmarc=dmarc[0] if dmarc else None, dmarc_policy=policy or None)
        if not dmarc:
            found.append(problem("no-dmarc", domain=domain))
        elif len(dmarc) > 1 or policy not in ("none", "quarantine", "reject"):
            why = f"{len(dmarc)} records" if len(dmarc) > 1 else f"p={policy or ''!r}"
            found.append(problem("dmarc-invalid", domain=domain, why=why))
        if dkim_selector and dkim_domain:
            name = report["dkim_name"] = f"{dkim_selector}._domainkey.{dkim_domain.lower()}"
            records = [r for r in lookup.txt(name) if "p" in _tags(r)]
            report["dkim"] = records[0] if records else None
            if not records:
                found.append(problem("no-dkim-record", name=name))
            elif not _tags(records[0])["p"]:
                found.append(problem("dkim-revoked", name=name))
            elif dkim_public_key is not None:
                matches = _same_key(_tags(records[0])["p"], dkim_public_key)
                found += [] if matches else [problem("dkim-mismatch", name=name)]
    except _DnsFailure as err:
        found.append(problem("dns-error", reason=str(err)))
    return found, DnsReport(domain, dkim_matches=matches, **report)
