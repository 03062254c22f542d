"""An SMTP relay that logs in with SASL XOAUTH2, as Microsoft 365 and Google do: aiosmtpd on
127.0.0.1 with an ``auth_XOAUTH2`` handler that checks the bearer token with the tests'
authorization server (tests/oauth_server.py). A refused token gets Google's flow: a ``334``
challenge holding a JSON error, the client's empty line, then ``535 5.7.8``.

It also hangs up every ``drop_every`` messages (at the next transaction's MAIL, so nothing is
lost and a client must reconnect and log in again), and can take its time per message so that
short-lived access tokens expire during a send.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from tests.oauth_server import AuthServer
from tests.smtp_servers import Handler, free_port


@dataclass
class Login:
    """One AUTH XOAUTH2 attempt as the relay saw it."""

    user: str
    accepted: bool
    initial_response: bool  # the token came on the AUTH line (else after an empty 334)


class XOAuth2Handler(Handler):
    """Stores messages (the shared Handler), logs in with XOAUTH2 only, drops connections."""

    def __init__(self, auth: AuthServer, *, drop_every: int = 0, delay: float = 0.0) -> None:
        super().__init__()
        self.auth = auth
        self.drop_every = drop_every
        self.delay = delay
        self.logins: list[Login] = []
        self.drops = 0
        self.on_message: Any = None  # called with the count of messages stored so far
        self.withdraw_at_next_login = False  # the server withdraws every access token just then

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        initial = len(args) > 1
        if initial:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False, message="501 5.5.2 cannot decode base64")
        else:
            answer = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = answer
        if self.withdraw_at_next_login:
            self.withdraw_at_next_login = False
            self.auth.expire_access_tokens()
        fields = blob.decode("utf-8", "replace").split("\x01")
        user = fields[0].removeprefix("user=") if fields and fields[0].startswith("user=") else ""
        bearer = next((f.removeprefix("auth=Bearer ") for f in fields if f.startswith("auth=Bearer ")), "")
        well_formed = len(fields) == 4 and fields[2:] == ["", ""] and user and bearer  # ...\x01\x01
        subject = self.auth.subject_of(bearer) if well_formed else None
        accepted = subject is not None and (
            subject == user or (subject == "app" and user in self.auth.app_mailboxes)
        )
        self.logins.append(Login(user, accepted, initial))
        if accepted:
            return AuthResult(success=True, auth_data=user)
        challenge = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        await server.challenge_auth(challenge)  # the client answers with an empty line
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.drop_every and getattr(session, "stored", 0) >= self.drop_every:
            self.drops += 1
            await asyncio.sleep(0.02)  # the last message's 250 reaches the client first
            server.transport.abort()  # hang up: the client must reconnect (and log in again)
            return "421 4.4.2 closing"
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = await super().handle_DATA(server, session, envelope)
        session.stored = getattr(session, "stored", 0) + 1
        if self.on_message is not None:
            self.on_message(len(self.received))
        return reply


class _SMTP(SMTP):
    line_length_limit = 12288  # RFC 4954 §4: a SASL response line may be up to 12,288 octets


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _SMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class Relay:
    """A running XOAUTH2 relay and the settings that reach it."""

    controller: Controller
    handler: XOAuth2Handler
    port: int

    def env(self) -> dict[str, str]:
        return {
            "DISPATCH_SMTP_HOST": "127.0.0.1",
            "DISPATCH_SMTP_PORT": str(self.port),
            "DISPATCH_SMTP_SECURITY": "none",
            "DISPATCH_SMTP_TIMEOUT": "10",
        }

    def count_for(self, address: str) -> int:
        return self.handler.count_for(address)


@contextmanager
def xoauth2_relay(
    auth: AuthServer, *, drop_every: int = 0, delay: float = 0.0, **kwargs: Any
) -> Iterator[Relay]:
    """Run the relay for a ``with`` block. Plain SMTP on 127.0.0.1 (dispatch sends a token in
    clear text only to a relay on this machine); AUTH is required before MAIL."""
    handler = XOAuth2Handler(auth, drop_every=drop_every, delay=delay)
    kwargs.setdefault("auth_exclude_mechanism", ["LOGIN", "PLAIN"])
    port = free_port()
    controller = _Controller(
        handler, hostname="127.0.0.1", port=port, ready_timeout=10, auth_required=True,
        auth_require_tls=False, **kwargs,
    )  # fmt: skip
    controller.start()
    try:
        yield Relay(controller, handler, port)
    finally:
        controller.stop()
