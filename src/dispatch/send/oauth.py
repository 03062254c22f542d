"""OAuth2 for SMTP (SASL XOAUTH2): provider presets, the stored login, and one token source
shared by every connection of a run.

Microsoft 365 and Google Workspace take a bearer token instead of a password. A person logs in
once (``dispatch login``: :mod:`dispatch.send.oauth_login`) and the refresh token is kept in the state
folder, private; a run trades it for short-lived access tokens, and keeps the replacement when
the server rotates it. With a client secret (Microsoft's app-only SMTP) a run asks for its
own token with the client-credentials grant instead, and needs no login. The grants themselves
are authlib's (RFC 6749, over requests); all dispatch writes by hand is the SASL string.

Nothing here prints, logs or returns a token except :meth:`TokenSource.current` to the
transport; error messages have every secret they might echo taken out.
"""

from __future__ import annotations

import base64
import binascii
import smtplib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatch.errors import AbortError
from dispatch.settings import StateLocation
from dispatch.settings.oauth import OAuthConfig, oauth_config
from dispatch.state import backend
from dispatch.state.logins import LOGIN_HINT, LoginNeeded, LoginStore

if TYPE_CHECKING:
    from dispatch.settings import Settings

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 §3.4
BASIC, POST = "client_secret_basic", "client_secret_post"  # how a client gives its secret
MAX_LEEWAY = 60  # renew a token this many seconds before it expires (less for short-lived ones)


class TokenEndpointDown(AbortError):
    """The token endpoint could not be reached or answered with a server error."""


def login_store(where: Path | StateLocation, config: OAuthConfig) -> LoginStore:
    """Where the login of this mailbox at this server with this client is kept: the state
    (a folder, or the state's PostgreSQL database)."""
    about = {"mailbox": config.mailbox, "token_url": config.token_url, "client_id": config.client_id,
             "scope": config.scope}  # fmt: skip
    if isinstance(where, StateLocation):
        store: LoginStore = backend.login_store(where, **about)
        return store
    return LoginStore(where, **about)


def _no_login(config: OAuthConfig, others: list[dict[str, str]]) -> str:
    """No login for this mailbox, token endpoint and client: and whether one is stored for the
    mailbox under settings that have changed since (a tenant, a token URL, a client id)."""
    text = f"no OAuth2 login is stored for {config.mailbox}"
    if not others:
        return f"{text}; {LOGIN_HINT}"
    other = others[0]
    changed = [
        name for name, key, now in (
            ("DISPATCH_OAUTH_TOKEN_URL (or DISPATCH_OAUTH_TENANT)", "token_url", config.token_url),
            ("DISPATCH_OAUTH_CLIENT_ID", "client_id", config.client_id),
        ) if other[key] != now
    ]  # fmt: skip
    was = ", ".join(f"{k} {other[k]}" for k in ("token_url", "client_id") if other[k])
    return (
        f"{text} with these settings, but one is, made with {was}: {' and '.join(changed) or 'a setting'} "
        f"changed since 'dispatch login'; set it back, or {LOGIN_HINT}"
    )


def xoauth2(mailbox: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, before base64 (Google's and Microsoft's format)."""
    return f"user={mailbox}\x01auth=Bearer {token}\x01\x01"


def authenticate(smtp: smtplib.SMTP, mailbox: str, token: str) -> tuple[int, str]:
    """One SASL XOAUTH2 exchange: the relay's final code and reply line (the token taken out). A
    refusal comes as Google's ``334`` JSON challenge, answered with an empty line, then ``535``
    (or at once as ``535``, as Microsoft does). The token goes on the AUTH line when that line
    stays within 512 octets (RFC 4954 §4), else after the relay's empty ``334``."""
    calls = 0

    def respond(_challenge: bytes | None = None) -> str:
        nonlocal calls
        calls += 1
        return xoauth2(mailbox, token) if calls == 1 else ""

    encoded = base64.b64encode(xoauth2(mailbox, token).encode()).decode()
    reply: bytes | str
    try:
        code, reply = smtp.auth(
            "XOAUTH2", respond, initial_response_ok=len(f"AUTH XOAUTH2 {encoded}\r\n") <= 512
        )
    except smtplib.SMTPAuthenticationError as err:
        code, reply = err.smtp_code, err.smtp_error
    except binascii.Error as err:  # a challenge that is not base64
        return 0, f"an unreadable AUTH XOAUTH2 challenge ({err})"
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return code, redact(f"{code} {text}", token)


def redact(text: str, *secrets: str) -> str:
    """One short line with every secret in it replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return " ".join(text.split())[:300]


# --- access tokens --------------------------------------------------------------------------


def _error_text(err: Exception, *secrets: str) -> str:
    """An authlib OAuthError as ``error: description``, anything else as its text."""
    error, description = getattr(err, "error", ""), getattr(err, "description", "")
    text = f"{error}: {description}" if error and description else error or str(err) or type(err).__name__
    return redact(text, *secrets)


class TokenSource:
    """One access token shared by every connection of a run (thread-safe). It is fetched on
    first use, renewed shortly before it expires, and renewed when the relay refuses it
    (:meth:`renew`); connections refused the same token at the same time cause one renewal."""

    def __init__(self, config: OAuthConfig, folder: Path | StateLocation) -> None:
        self.config = config
        self.store = login_store(folder, config)
        self._lock = threading.Lock()
        self._token: Any = None  # authlib's OAuth2Token
        self._leeway = MAX_LEEWAY
        self._session: Any = None
        self.fetched = 0  # tokens fetched by this source

    def current(self) -> str:
        """A valid access token (fetching or renewing one if needed)."""
        with self._lock:
            if self._token is None or self._token.is_expired(leeway=self._leeway):
                self._fetch()
            return str(self._token["access_token"])

    def renew(self, refused: str) -> None:
        """The relay refused ``refused``: fetch a new token, unless another connection already has."""
        with self._lock:
            if self._token is None or self._token["access_token"] == refused:
                self._fetch()

    def _fetch(self) -> None:
        from authlib.integrations.base_client import OAuthError  # noqa: PLC0415 - only when used
        from requests import RequestException  # noqa: PLC0415

        config = self.config
        if self._session is None:
            self._session = config.session()
        secrets = [config.client_secret]
        try:
            try:
                token = self._grant(secrets)
            except OAuthError as err:
                # RFC 6749 §2.3.1: a server must take the secret in an HTTP Basic header (authlib's
                # way); some read only the form body, and say invalid_client: try that, once.
                session = self._session
                if err.error != "invalid_client" or session.token_endpoint_auth_method != BASIC:
                    raise
                session.token_endpoint_auth_method = POST
                token = self._grant(secrets)
        except ValueError as err:
            if not isinstance(err, RequestException):  # (an answer in JSON, with a field out of shape)
                raise TokenEndpointDown(
                    f"the token endpoint {config.token_url} gave an answer dispatch cannot read "
                    f"({_error_text(err, *secrets)}); check DISPATCH_OAUTH_TOKEN_URL"
                ) from err
            raise self._unreachable(err, secrets) from err
        except RequestException as err:
            raise self._unreachable(err, secrets) from err
        except OAuthError as err:  # the server said no
            if config.app_only:
                raise AbortError(
                    f"the authorization server refused the client credentials for {config.mailbox} "
                    f"({_error_text(err, *secrets)}); check DISPATCH_OAUTH_CLIENT_ID and "
                    "DISPATCH_OAUTH_CLIENT_SECRET"
                ) from err
            raise LoginNeeded(
                f"the authorization server refused the stored login for {config.mailbox} "
                f"({_error_text(err, *secrets)}: revoked, expired or consent withdrawn); {LOGIN_HINT}"
            ) from err
        if not token.get("access_token") or str(token.get("token_type", "bearer")).lower() != "bearer":
            raise AbortError(f"the token endpoint {config.token_url} gave no bearer access token")
        try:
            lifetime = int(float(token.get("expires_in") or 0))
        except (TypeError, ValueError, OverflowError):
            lifetime = 0  # (renewed a minute early, or when the relay refuses it)
        self._leeway = max(1, min(MAX_LEEWAY, lifetime // 4)) if lifetime else MAX_LEEWAY
        self._token = token
        self.fetched += 1

    def _unreachable(self, err: Exception, secrets: list[str]) -> AbortError:
        """What a failed request to the token endpoint means: a refusal (HTTP 4xx) of the stored
        login, or an endpoint that cannot be reached or failed."""
        config = self.config
        status = getattr(getattr(err, "response", None), "status_code", 0) or 0
        if 400 <= status < 500 and not config.app_only:  # refused, in words that are not JSON
            return LoginNeeded(
                f"the authorization server refused the stored login for {config.mailbox} (HTTP "
                f"{status}); {LOGIN_HINT}"
            )
        return TokenEndpointDown(
            f"cannot get an access token from {config.token_url} ({_error_text(err, *secrets)}); "
            "check the network and DISPATCH_OAUTH_TOKEN_URL"
        )

    def _grant(self, secrets: list[str]) -> Any:
        if self.config.app_only:
            return self._session.fetch_token(
                self.config.token_url, grant_type="client_credentials", scope=self.config.scope or None
            )
        return self._refresh(secrets)

    def _refresh(self, secrets: list[str]) -> Any:
        """The refresh-token grant with the stored login, keeping a rotated refresh token."""
        with self.store.locked():
            refresh_token = self.store.load()
            if refresh_token is None:
                raise LoginNeeded(_no_login(self.config, self.store.others()))
            secrets.append(refresh_token)
            token = self._session.refresh_token(
                self.config.token_url, refresh_token=refresh_token, scope=self.config.scope or None
            )
            rotated = token.get("refresh_token")
            if rotated and rotated != refresh_token:
                self.store.save(rotated)
        return token


def token_source(settings: Settings, folder: Path | StateLocation) -> TokenSource:
    """The token source of a run, for the mailbox in the settings; ``folder`` is the state folder."""
    return TokenSource(oauth_config(settings), folder)


@dataclass(frozen=True)
class TokenCheck:
    """Whether a run could get an access token now, for which mailbox and by which grant."""

    mailbox: str
    grant: str
    ok: bool
    problem: str = ""


def check_token(settings: Settings, folder: Path | StateLocation) -> TokenCheck:
    """Ask for an access token as a send would (``dispatch check``); never shows it."""
    config = oauth_config(settings)
    try:
        TokenSource(config, folder).current()
    except AbortError as err:
        return TokenCheck(config.mailbox, config.grant, ok=False, problem=str(err))
    return TokenCheck(config.mailbox, config.grant, ok=True)
