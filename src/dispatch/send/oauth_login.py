"""``dispatch login`` and ``dispatch logout``: how a person lets dispatch send as their mailbox.

With a device authorization endpoint (Microsoft, or ``DISPATCH_OAUTH_DEVICE_URL``) the login
is the device authorization grant (RFC 8628): dispatch shows an address and a code, the person
approves on any device, and dispatch polls the token endpoint at the pace the server asks for.
Google does not allow the mail scope in that grant, so there the person approves in a browser
on this machine and the answer comes back to a one-shot listener on 127.0.0.1 (the
authorization-code grant with PKCE, RFC 6749 §4.1, RFC 7636, RFC 8252). Either way only the
refresh token is kept (:class:`dispatch.state.logins.LoginStore`), and nothing here shows a token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from dispatch.errors import AbortError, ConfigError
from dispatch.send.oauth import DEVICE_GRANT, TokenEndpointDown, redact
from dispatch.settings.oauth import OAuthConfig, check_url
from dispatch.state.logins import LoginStore

Show = Callable[[str], None]
BROWSER_WAIT = 300.0  # seconds a browser login may take
EXPIRED = "the code expired before it was approved; run 'dispatch login' again"
SLOW_DOWN = 5  # RFC 8628 §3.5: seconds added to the polling interval on each slow_down


class LoginFailed(AbortError):
    """The login did not complete: declined, expired, or refused by the server."""


def _describe(err: Exception, *secrets: str) -> str:
    error, description = getattr(err, "error", ""), getattr(err, "description", "")
    text = f"{error}: {description}" if error and description else error or str(err) or type(err).__name__
    return redact(text, *secrets)


def _errors() -> tuple[type[Exception], type[Exception]]:
    from authlib.integrations.base_client import OAuthError  # noqa: PLC0415 - only when used
    from requests import RequestException  # noqa: PLC0415

    return OAuthError, RequestException


def _keep(store: LoginStore, token: Any, config: OAuthConfig) -> None:
    refresh = token.get("refresh_token")
    if not refresh:
        hint = " (add offline_access to DISPATCH_OAUTH_SCOPE)" if config.provider != "google" else ""
        raise LoginFailed(f"the server gave no refresh token, so later runs could not log in{hint}")
    with store.locked():
        store.save(refresh)


@dataclass(frozen=True)
class DeviceCode:
    """The device authorization response (RFC 8628 §3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: float
    interval: float


def _device_code(session: Any, config: OAuthConfig) -> DeviceCode:
    _, request_error = _errors()
    # RFC 8628 §3.1: the client_id, unless the client authenticates (RFC 6749 §2.3.1)
    data = {"scope": config.scope}
    auth = session.client_auth(session.token_endpoint_auth_method) if config.client_secret else None
    if auth is None:
        data["client_id"] = config.client_id
    try:
        response = session.post(
            config.device_url, data={k: v for k, v in data.items() if v}, withhold_token=True, auth=auth
        )
        answer = response.json()
    except (request_error, ValueError) as err:
        raise TokenEndpointDown(
            f"cannot reach the device authorization endpoint {config.device_url} ({_describe(err)}); "
            "check the network and DISPATCH_OAUTH_DEVICE_URL"
        ) from err
    if not isinstance(answer, dict) or "error" in answer or response.status_code != 200:
        what = redact(str(answer.get("error", "")) if isinstance(answer, dict) else "", config.client_secret)
        raise LoginFailed(
            f"the device authorization endpoint {config.device_url} refused the login "
            f"({what or f'HTTP {response.status_code}'}); check DISPATCH_OAUTH_CLIENT_ID and "
            "DISPATCH_OAUTH_SCOPE"
        )
    # Google names the address verification_url; RFC 8628 verification_uri
    uri = answer.get("verification_uri") or answer.get("verification_url") or ""
    if not (answer.get("device_code") and answer.get("user_code") and uri):
        raise LoginFailed(f"the device authorization endpoint {config.device_url} gave no code and address")
    try:
        expires_in, interval = float(answer.get("expires_in") or 600), float(answer.get("interval") or 5)
    except (TypeError, ValueError) as err:
        raise LoginFailed(f"the device authorization endpoint {config.device_url} gave a bad expiry") from err
    return DeviceCode(
        str(answer["device_code"]), str(answer["user_code"]), str(uri),
        str(answer.get("verification_uri_complete") or ""), expires_in, max(interval, 0.0),
    )  # fmt: skip


def device_login(
    config: OAuthConfig,
    store: LoginStore,
    show: Show,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """RFC 8628: show the address and code, poll until approved, keep the refresh token."""
    oauth_error, request_error = _errors()
    session = config.session()
    code = _device_code(session, config)
    show(f"To let dispatch send as {config.mailbox}, open {code.verification_uri}")
    show(f"and enter the code {code.user_code}")
    if code.verification_uri_complete:
        show(f"(or open {code.verification_uri_complete})")
    show("Waiting for the approval (Ctrl-C stops).")
    deadline, interval = clock() + code.expires_in, code.interval
    while True:
        sleep(interval)
        if clock() >= deadline:
            raise LoginFailed(EXPIRED)
        try:
            token = session.fetch_token(
                config.token_url, grant_type=DEVICE_GRANT, device_code=code.device_code
            )
        except oauth_error as err:
            error = getattr(err, "error", "")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += SLOW_DOWN
                continue
            if error == "expired_token":
                raise LoginFailed(EXPIRED) from err
            if error == "access_denied":
                raise LoginFailed(f"the login for {config.mailbox} was declined; nothing was stored") from err
            what = _describe(err, config.client_secret, code.device_code)
            raise LoginFailed(f"the token endpoint refused the login ({what})") from err
        except (request_error, ValueError) as err:
            raise TokenEndpointDown(
                f"cannot reach the token endpoint {config.token_url} ({_describe(err)}); check the network"
            ) from err
        _keep(store, token, config)
        return


class _Listener(HTTPServer):
    """A one-shot HTTP server on 127.0.0.1 (a free port) for the browser's redirect."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Catch)
        self.found: list[str] = []


class _Catch(BaseHTTPRequestHandler):
    """The one request the browser makes to 127.0.0.1 after the person approves (or declines)."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if "code" in query or "error" in query:
            cast("_Listener", self.server).found.append(self.path)
            text = "dispatch: done; you can close this tab and go back to the terminal."
        else:
            text = "dispatch is waiting for the login's answer here."
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the query holds the authorization code."""


def browser_login(config: OAuthConfig, store: LoginStore, show: Show, *, wait: float = BROWSER_WAIT) -> None:
    """The authorization-code grant with PKCE and a loopback redirect (RFC 8252)."""
    from authlib.common.security import generate_token  # noqa: PLC0415 - only when used

    oauth_error, request_error = _errors()
    check_url("OAUTH_AUTHORIZE_URL", config.authorize_url)
    server = _Listener()
    redirect = f"http://127.0.0.1:{server.server_address[1]}/"
    session = config.session(redirect_uri=redirect, code_challenge_method="S256")
    verifier = generate_token(64)
    url, state = session.create_authorization_url(
        config.authorize_url, code_verifier=verifier, scope=config.scope,
        access_type="offline", prompt="consent", login_hint=config.mailbox,
    )  # fmt: skip
    show(f"To let dispatch send as {config.mailbox}, open this address in a browser on this machine:")
    show(url)
    show("Waiting for the approval (Ctrl-C stops).")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + wait
        while not server.found and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.shutdown()
        server.server_close()
    if not server.found:
        raise LoginFailed(f"no answer from the browser within {wait:.0f} s; run 'dispatch login' again")
    answer = parse_qs(urlsplit(server.found[0]).query)
    if "error" in answer:
        error = redact(answer["error"][0])
        raise LoginFailed(f"the login for {config.mailbox} was not approved ({error}); nothing was stored")
    try:
        token = session.fetch_token(
            config.token_url, authorization_response=redirect + server.found[0].lstrip("/"),
            code_verifier=verifier, state=state,
        )  # fmt: skip
    except oauth_error as err:
        what = _describe(err, config.client_secret)
        raise LoginFailed(f"the token endpoint refused the login ({what})") from err
    except (request_error, ValueError) as err:
        what = _describe(err)
        raise TokenEndpointDown(f"cannot reach the token endpoint {config.token_url} ({what})") from err
    _keep(store, token, config)


def login(config: OAuthConfig, store: LoginStore, show: Show) -> str:
    """Log a person in with the grant the provider allows; returns which one."""
    if config.app_only:
        raise ConfigError(
            "DISPATCH_OAUTH_CLIENT_SECRET is set, so dispatch signs in as the application (client "
            "credentials) and needs no login; unset it to log in as a person"
        )
    if config.device_url:
        device_login(config, store, show)
        return "device code"
    if config.authorize_url:
        browser_login(config, store, show)
        return "browser"
    raise ConfigError("set DISPATCH_OAUTH_DEVICE_URL (or DISPATCH_OAUTH_AUTHORIZE_URL) to log in")


def logout(config: OAuthConfig, store: LoginStore) -> tuple[bool, str]:
    """Forget the stored login, revoking it first where the server offers RFC 7009.
    Returns (whether one was stored, what became of it at the server)."""
    with store.locked():
        try:
            refresh = store.load()
        except AbortError:  # damaged: forget it all the same
            refresh = None
        found = store.forget() or refresh is not None
    if refresh is None or not config.revoke_url:
        return found, "" if refresh is None else "not revoked at the server (it has no revocation endpoint)"
    oauth_error, request_error = _errors()
    try:
        response = config.session().revoke_token(
            config.revoke_url,
            token=refresh,
            token_type_hint="refresh_token",  # noqa: S106 - a kind of token
        )
    except (oauth_error, request_error) as err:
        return found, f"not revoked at the server ({_describe(err, refresh, config.client_secret)})"
    if response.status_code == 200:
        return found, "revoked at the server"
    return found, f"not revoked at the server (HTTP {response.status_code})"
