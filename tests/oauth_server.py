"""An OAuth2 authorization server of the tests' own, on 127.0.0.1 over real HTTP.

It speaks the parts dispatch uses, by the RFCs: device authorization (RFC 8628, with
``authorization_pending``, ``slow_down``, ``expired_token`` and ``access_denied``), the token
endpoint (RFC 6749: device code, refresh token with rotation, client credentials, authorization
code with PKCE S256, RFC 7636), an authorization endpoint that a test's "browser" visits, and
revocation (RFC 7009). Access tokens live as long as a test says (3 seconds, say). The XOAUTH2
relay (tests/xoauth2_relay.py) asks :meth:`AuthServer.subject_of` whether a bearer token is good.

Nothing here is a mock of dispatch: dispatch reaches it with authlib over HTTP, as it would
reach Microsoft or Google.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

PUBLIC_CLIENT = "dispatch-test-public"
APP_CLIENT = "dispatch-test-app"
APP_SECRET = "app-secret-Zq8x!3"  # a test credential; tests assert it never shows up in output
MAILBOX = "news@example.org"
SCOPE = "smtp.send offline_access"


@dataclass
class DeviceGrant:
    """One pending device authorization."""

    device_code: str
    user_code: str
    client_id: str
    expires_at: float
    interval: float
    state: str = "pending"  # pending, approved, denied
    subject: str = ""
    last_poll: float = 0.0


@dataclass
class AuthServer:
    """The server's state, and the switches a test turns."""

    access_lifetime: float = 3600.0
    rotate: bool = True  # each refresh returns a new refresh token and retires the old one
    interval: float = 1.0  # the device grant's polling interval
    device_lifetime: float = 600.0
    enforce_interval: bool = True  # answer slow_down to a poll sooner than the interval
    script: list[str] = field(default_factory=list)  # device-grant errors to answer first, in order
    auto_approve: str = ""  # approve every device code for this mailbox at its first poll
    app_mailboxes: tuple[str, ...] = (MAILBOX,)  # the mailboxes the app (client credentials) may use
    lock: threading.Lock = field(default_factory=threading.Lock)
    grants: Counter[str] = field(default_factory=Counter)  # successful token responses by grant type
    polls: list[float] = field(default_factory=list)  # when each device-code poll arrived
    issued: list[str] = field(default_factory=list)  # every token and code handed out: never in output
    revocations: list[str] = field(default_factory=list)
    devices: dict[str, DeviceGrant] = field(default_factory=dict)
    access: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (subject, expires at)
    refresh: dict[str, str] = field(default_factory=dict)  # live refresh token -> subject
    codes: dict[str, dict[str, str]] = field(default_factory=dict)  # authorization code -> its request
    deny_browser: bool = False
    token_length: int = 0  # pad access tokens to this length (Microsoft's JWTs run to 1,500-2,500)
    html_errors: bool = False  # refuse refresh tokens with an HTML page, not RFC 6749 JSON
    form_secrets_only: bool = False  # read a client secret from the form body only, never Basic
    expires_in_text: str = ""  # answer this (out of shape) as the access token's expires_in
    port: int = 0
    _http: ThreadingHTTPServer | None = None

    # --- what a test does -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """Settings that point dispatch's custom provider at this server."""
        return {
            "DISPATCH_SMTP_AUTH": "oauth2",
            "DISPATCH_OAUTH_PROVIDER": "custom",
            "DISPATCH_OAUTH_CLIENT_ID": PUBLIC_CLIENT,
            "DISPATCH_OAUTH_DEVICE_URL": f"{self.url}/device",
            "DISPATCH_OAUTH_TOKEN_URL": f"{self.url}/token",
            "DISPATCH_OAUTH_REVOKE_URL": f"{self.url}/revoke",
            "DISPATCH_OAUTH_SCOPE": SCOPE,
            "DISPATCH_SMTP_USER": MAILBOX,
            **extra,
        }

    def approve(self, user_code: str, subject: str = MAILBOX) -> None:
        with self.lock:
            grant = next(g for g in self.devices.values() if g.user_code == user_code)
            grant.state, grant.subject = "approved", subject

    def deny(self, user_code: str) -> None:
        with self.lock:
            next(g for g in self.devices.values() if g.user_code == user_code).state = "denied"

    def revoke_everything(self) -> None:
        """An administrator ends every session (consent withdrawn, password reset)."""
        with self.lock:
            self.refresh.clear()
            self.access.clear()

    def expire_access_tokens(self) -> None:
        """Every access token stops working now (refresh tokens still do)."""
        with self.lock:
            self.access.clear()

    def subject_of(self, token: str) -> str | None:
        """The mailbox a live access token was issued for (what the relay asks)."""
        with self.lock:
            subject, expires = self.access.get(token, ("", 0.0))
        return subject if subject and time.time() < expires else None

    @property
    def live_refresh_tokens(self) -> list[str]:
        with self.lock:
            return list(self.refresh)

    # --- the endpoints ----------------------------------------------------------------------

    def _new(self, prefix: str) -> str:
        token = f"{prefix}-{secrets.token_urlsafe(24)}"
        self.issued.append(token)
        return token

    def _tokens(self, grant_type: str, subject: str, *, refresh: bool) -> dict[str, Any]:
        access = self._new("at")
        if self.token_length > len(access):
            access += "." + secrets.token_urlsafe(self.token_length)[: self.token_length - len(access) - 1]
            self.issued.append(access)
        self.access[access] = (subject, time.time() + self.access_lifetime)
        answer: dict[str, Any] = {
            "access_token": access, "token_type": "Bearer",
            "expires_in": self.expires_in_text or int(self.access_lifetime),
            "scope": SCOPE,
        }  # fmt: skip
        if refresh:
            token = self._new("rt")
            self.refresh[token] = subject
            answer["refresh_token"] = token
        self.grants[grant_type] += 1
        return answer

    def device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != PUBLIC_CLIENT:
            return 401, {"error": "invalid_client"}
        with self.lock:
            grant = DeviceGrant(
                self._new("dc"), f"{secrets.randbelow(10**8):08d}", PUBLIC_CLIENT,
                time.time() + self.device_lifetime, self.interval,
            )  # fmt: skip
            self.devices[grant.device_code] = grant
        return 200, {
            "device_code": grant.device_code, "user_code": grant.user_code,
            "verification_uri": f"{self.url}/activate",
            "verification_uri_complete": f"{self.url}/activate?user_code={grant.user_code}",
            "expires_in": int(self.device_lifetime), "interval": int(self.interval),
        }  # fmt: skip

    def token(self, form: dict[str, str], client: tuple[str, str]) -> tuple[int, dict[str, Any]]:
        client_id, secret = client
        grant_type = form.get("grant_type", "")
        with self.lock:
            if grant_type == "client_credentials":
                if (client_id, secret) != (APP_CLIENT, APP_SECRET):
                    return 401, {"error": "invalid_client"}
                return 200, self._tokens(grant_type, "app", refresh=False)
            if client_id != PUBLIC_CLIENT or secret:
                return 401, {"error": "invalid_client"}
            if grant_type == "urn:ietf:params:oauth:grant-type:device_code":
                return self._device_token(form)
            if grant_type == "refresh_token":
                subject = self.refresh.get(form.get("refresh_token", ""))
                if subject is None and self.html_errors:
                    return 400, {"html": "<h1>Bad Request</h1>"}
                if subject is None:
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "refresh token revoked or expired",
                    }
                if self.rotate:
                    del self.refresh[form["refresh_token"]]
                return 200, self._tokens(grant_type, subject, refresh=self.rotate)
            if grant_type == "authorization_code":
                return self._code_token(form)
        return 400, {"error": "unsupported_grant_type"}

    def _device_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        now = time.time()
        self.polls.append(now)
        grant = self.devices.get(form.get("device_code", ""))
        if grant is None:
            return 400, {"error": "invalid_grant"}
        too_soon = self.enforce_interval and grant.last_poll and now - grant.last_poll < grant.interval - 0.05
        grant.last_poll = now
        if self.script:
            return 400, {"error": self.script.pop(0)}
        if too_soon:
            grant.interval += 5
            return 400, {"error": "slow_down"}
        if now > grant.expires_at:
            return 400, {"error": "expired_token"}
        if self.auto_approve and grant.state == "pending":
            grant.state, grant.subject = "approved", self.auto_approve
        if grant.state == "denied":
            return 400, {"error": "access_denied"}
        if grant.state == "pending":
            return 400, {"error": "authorization_pending"}
        del self.devices[grant.device_code]  # a device code is good for one token response
        return 200, self._tokens("device_code", grant.subject, refresh=True)

    def authorize(self, query: dict[str, str]) -> str:
        """The browser visit: approve (or deny) at once, and send the browser back."""
        redirect = query["redirect_uri"]
        if self.deny_browser:
            return f"{redirect}?{urlencode({'error': 'access_denied', 'state': query.get('state', '')})}"
        with self.lock:
            code = self._new("code")
            self.codes[code] = query
        return f"{redirect}?{urlencode({'code': code, 'state': query.get('state', '')})}"

    def _code_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = self.codes.pop(form.get("code", ""), None)
        if request is None or request.get("redirect_uri") != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if request.get("code_challenge_method") != "S256" or request.get("code_challenge") != challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        return 200, self._tokens("authorization_code", MAILBOX, refresh=True)

    def revoke(self, form: dict[str, str]) -> None:
        token = form.get("token", "")
        with self.lock:
            self.revocations.append(token)
            self.refresh.pop(token, None)
            self.access.pop(token, None)

    # --- running ----------------------------------------------------------------------------

    def start(self) -> AuthServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                pairs = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                if any(len(v) > 1 for v in pairs.values()):  # RFC 6749 §3.2: never twice
                    raise ValueError("a parameter was sent twice")
                return {k: v[0] for k, v in pairs.items()}

            def _client(self, form: dict[str, str]) -> tuple[str, str]:
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic ") and not server.form_secrets_only:
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    return unquote(user), unquote(password)
                return form.get("client_id", ""), form.get("client_secret", "")

            def _json(self, status: int, body: dict[str, Any]) -> None:
                html = body.get("html")
                data = html.encode() if isinstance(html, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(html, str) else "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                try:
                    form = self._form()
                except ValueError:
                    self._json(400, {"error": "invalid_request"})
                    return
                path = urlsplit(self.path).path
                if path == "/device":
                    self._json(*server.device(form))
                elif path == "/token":
                    self._json(*server.token(form, self._client(form)))
                elif path == "/revoke":
                    server.revoke(form)
                    self._json(200, {})
                else:
                    self._json(404, {"error": "not_found"})

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/authorize":
                    self._json(404, {"error": "not_found"})
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                self.send_response(302)
                self.send_header("Location", server.authorize(query))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._http.server_address[1])
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
