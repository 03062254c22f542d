"""Opening an SMTP session: connect, verified TLS (implicit or STARTTLS, never a fall-back to
plain text), one AUTH attempt, and what the relay advertises (SIZE, PIPELINING). Every word a
relay says here reaches the user only through :func:`relay_text`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib
import socket
import ssl
from dataclasses import dataclass

from dispatch.errors import AbortError
from dispatch.send.oauth import TokenEndpointDown, TokenSource, authenticate
from dispatch.settings import Settings
from dispatch.settings.values import is_loopback
from dispatch.untrusted import shown


class Unreachable(AbortError):
    """The server could not be reached (worth a few retries before giving up)."""


def relay_text(reply: bytes | str | BaseException) -> str:
    """A relay's words (or an error carrying them) as dispatch may show them."""
    if isinstance(reply, BaseException):
        reply = str(reply)
    return shown(reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A verifying context: system trust store, SSL_CERT_FILE, plus DISPATCH_SMTP_CA_FILE."""
    context = ssl.create_default_context()
    if settings.smtp_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.smtp_ca_file))
    return context


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _login_once(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """One AUTH attempt with the best advertised mechanism, credentials as UTF-8 (RFC 4616).

    ``smtplib.SMTP.login`` would try the next mechanism after a 535, so one wrong password would
    count as two failures towards the server's lockout; it also fails on a non-ASCII password.
    """
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = smtp.esmtp_features["auth"].upper().split()
    mechanism = next((m for m in ("PLAIN", "LOGIN", "CRAM-MD5") if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPException(f"no supported AUTH mechanism (server offers {' '.join(offered)})")
    name, secret = user.encode(), password.encode()
    if mechanism == "PLAIN":
        code, reply = smtp.docmd("AUTH", "PLAIN " + _b64(b"\0" + name + b"\0" + secret))
    elif mechanism == "LOGIN":
        code, reply = smtp.docmd("AUTH", "LOGIN " + _b64(name))
        if code == 334:
            code, reply = smtp.docmd(_b64(secret))
    else:
        code, reply = smtp.docmd("AUTH", "CRAM-MD5")
        if code == 334:
            digest = hmac.new(secret, base64.b64decode(reply), hashlib.md5).hexdigest()
            code, reply = smtp.docmd(_b64(name + b" " + digest.encode()))
    if code not in (235, 503):
        raise smtplib.SMTPAuthenticationError(code, reply)


@dataclass(frozen=True)
class RelayInfo:
    """What the relay advertised in its EHLO reply (after STARTTLS)."""

    size_limit: int = 0  # RFC 1870 SIZE: the largest message it takes (0: not stated)
    pipelining: bool = False  # RFC 2920: MAIL, RCPT and DATA may go in one round trip


class TokenRefused(AbortError):
    """The relay refused the OAuth2 access token (535): worth one renewal."""

    def __init__(self, token: str, reply: str) -> None:
        super().__init__(reply)
        self.token = token
        self.reply = reply


def failure(settings: Settings, what: str, hint: str = "") -> AbortError:
    """One line about the relay: what went wrong, and what to do."""
    return AbortError(f"SMTP server {settings.endpoint}: {what}" + (f"; {hint}" if hint else ""))


def _untrusted(settings: Settings, err: ssl.SSLCertVerificationError) -> AbortError:
    if settings.smtp_ca_file is None:
        hint = "set DISPATCH_SMTP_CA_FILE to the relay's CA certificate"
    else:
        hint = "check that DISPATCH_SMTP_HOST is the name in the certificate and the CA file is right"
    return failure(settings, f"TLS certificate not trusted ({err.verify_message})", hint)


def connect(s: Settings, tokens: TokenSource | None = None) -> tuple[smtplib.SMTP, RelayInfo]:
    """Connect, secure and log in (with a password, or the OAuth2 access token ``tokens`` holds);
    what the relay advertises. AbortError with one line if that cannot work (:class:`Unreachable`
    when it may work a little later, :class:`TokenRefused` when a renewed token may)."""
    if s.smtp_user and s.smtp_security == "none" and not is_loopback(s.smtp_host):
        raise AbortError(
            "DISPATCH_SMTP_SECURITY=none would send the password in clear text; "
            "use starttls or ssl, or a relay on this machine"
        )
    name = s.ehlo_name or None
    try:
        if s.smtp_security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.smtp_host,
                s.smtp_port,
                local_hostname=name,
                timeout=s.smtp_timeout,
                context=tls_context(s),
            )
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, local_hostname=name, timeout=s.smtp_timeout)
    except ssl.SSLCertVerificationError as err:
        raise _untrusted(s, err) from err
    except smtplib.SMTPConnectError as err:
        detail = f"{err.smtp_code} {relay_text(err.smtp_error)}"
        raise Unreachable(f"SMTP server {s.endpoint}: refused the connection ({detail})") from err
    except (OSError, smtplib.SMTPException, UnicodeError) as err:
        raise Unreachable(
            f"SMTP server {s.endpoint}: cannot connect ({relay_text(err)}); "
            "check DISPATCH_SMTP_HOST and DISPATCH_SMTP_PORT"
        ) from err
    try:
        info = _start(s, smtp, tokens)
    except ssl.SSLCertVerificationError as err:
        smtp.close()
        raise _untrusted(s, err) from err
    except AbortError:
        smtp.close()
        raise
    except (OSError, smtplib.SMTPException, UnicodeError) as err:
        smtp.close()
        raise Unreachable(
            f"SMTP server {s.endpoint}: the session failed while starting ({relay_text(err)})"
        ) from err
    if smtp.sock is not None:  # the final dot goes alone, at once: never held back by Nagle
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return smtp, info


def _start(s: Settings, smtp: smtplib.SMTP, tokens: TokenSource | None) -> RelayInfo:
    """EHLO, STARTTLS (never falling back to plain text), EHLO again, AUTH; then what the relay
    advertises."""
    code, reply = smtp.ehlo()
    if code != 250:
        code, reply = smtp.helo()
        if code != 250:
            raise failure(
                s, f"refused EHLO and HELO ({code} {relay_text(reply)})", "check DISPATCH_EHLO_NAME"
            )
    if s.smtp_security == "starttls":
        try:
            smtp.starttls(context=tls_context(s))
        except smtplib.SMTPNotSupportedError as err:
            raise failure(
                s,
                "does not offer STARTTLS, and dispatch never falls back to plain text",
                "use DISPATCH_SMTP_SECURITY=ssl, or none for a relay on this machine",
            ) from err
        smtp.ehlo()
    if s.smtp_auth == "oauth2":
        _login_xoauth2(s, smtp, tokens)
    elif s.smtp_user:
        try:
            _login_once(smtp, s.smtp_user, s.smtp_password)
        except smtplib.SMTPAuthenticationError as err:
            raise failure(
                s,
                f"refused the login for user {s.smtp_user!r} ({err.smtp_code} {relay_text(err.smtp_error)})",
                "check DISPATCH_SMTP_USER and DISPATCH_SMTP_PASSWORD",
            ) from err
        except smtplib.SMTPNotSupportedError as err:
            raise failure(s, "does not offer AUTH", "unset DISPATCH_SMTP_USER") from err
    size = smtp.esmtp_features.get("size", "").strip()
    readable = size.isascii() and size.isdigit() and len(size) <= 18  # more: no limit worth the name
    return RelayInfo(size_limit=int(size) if readable else 0, pipelining=smtp.has_extn("pipelining"))


def _login_xoauth2(s: Settings, smtp: smtplib.SMTP, tokens: TokenSource | None) -> None:
    """SASL XOAUTH2 with the run's shared access token. A refusal (535, after the JSON challenge
    Google sends first) raises :class:`TokenRefused`, so the caller can renew and retry once."""
    if tokens is None:
        raise failure(s, "DISPATCH_SMTP_AUTH=oauth2 needs an access token, and none was provided")
    if "XOAUTH2" not in smtp.esmtp_features.get("auth", "").upper().split():
        raise failure(s, "does not offer AUTH XOAUTH2", "check DISPATCH_SMTP_HOST and DISPATCH_SMTP_PORT")
    try:
        token = tokens.current()
    except TokenEndpointDown as err:
        raise Unreachable(str(err)) from err
    code, reply = authenticate(smtp, s.smtp_user, token)
    if code == 535:
        raise TokenRefused(token, relay_text(reply))
    if code not in (235, 503):
        raise failure(s, f"refused the OAuth2 login for {s.smtp_user!r} ({relay_text(reply)})")
