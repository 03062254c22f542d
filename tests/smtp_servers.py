"""Real SMTP servers for the tests: aiosmtpd on 127.0.0.1, with TLS, AUTH and faults.

Nothing here is a mock: dispatch talks SMTP over TCP to these servers exactly as it would to
a relay. ``FaultPlan`` makes a handler answer 4xx/5xx or drop the connection on purpose.
"""

from __future__ import annotations

import random
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = "mailer"
PASSWORD = "s3cret-Pa55"  # a test credential; tests assert it never shows up in output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    """One message as the server stored it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class FaultPlan:
    """Deliberate misbehaviour. Probabilities are per command; addresses are exact matches.

    ``drop_after_data`` stores the message and then drops the connection before the 250:
    the ambiguous case, where the client cannot know the message arrived.
    """

    rcpt_4xx: float = 0.0
    data_4xx: float = 0.0
    drop_rcpt: float = 0.0
    drop_after_data: float = 0.0
    reject: dict[str, str] = field(default_factory=dict)  # address -> "550 5.1.1 ..."
    refuse_sender: str = ""  # the reply to every MAIL command, e.g. "550 5.7.1 ..." (empty: 250)
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self, p: float) -> bool:
        return p > 0 and self.rng.random() < p


class Handler:
    """Stores every accepted message; applies a FaultPlan."""

    def __init__(self, faults: FaultPlan | None = None, *, pipelining: bool = True) -> None:
        self.faults = faults or FaultPlan()
        self.pipelining = pipelining  # advertise RFC 2920 PIPELINING, as Postfix and Exim do
        self.received: list[Received] = []
        self.connections = 0
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # aiosmtpd reads commands in order, so pipelined ones just work
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.faults.refuse_sender:
            return self.faults.refuse_sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        plan = self.faults
        if address in plan.reject:
            return plan.reject[address]
        if plan.roll(plan.drop_rcpt):
            server.transport.abort()
            return "421 4.4.2 dropping"
        if plan.roll(plan.rcpt_4xx):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        plan = self.faults
        if plan.roll(plan.data_4xx):
            return "451 4.3.0 temporary failure, try again"
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        if plan.roll(plan.drop_after_data):
            server.transport.abort()
        return "250 2.0.0 OK queued"

    def count_for(self, address: str) -> int:
        return sum(address in r.rcpt_tos for r in self.received)


@dataclass
class Server:
    """A running server and what to put in settings to reach it."""

    controller: Controller
    handler: Handler
    port: int
    security: str
    ca_file: str = ""
    user: str = ""
    password: str = ""

    def env(self) -> dict[str, str]:
        env = {
            "DISPATCH_SMTP_HOST": "127.0.0.1",
            "DISPATCH_SMTP_PORT": str(self.port),
            "DISPATCH_SMTP_SECURITY": self.security,
            "DISPATCH_SMTP_TIMEOUT": "10",
        }
        if self.ca_file:
            env["DISPATCH_SMTP_CA_FILE"] = self.ca_file
        if self.user:
            env["DISPATCH_SMTP_USER"] = self.user
            env["DISPATCH_SMTP_PASSWORD"] = self.password
        return env

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def stop(self) -> None:
        self.controller.stop()


def authenticator(user: str, password: str) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator accepting exactly ``user``/``password`` (UTF-8)."""

    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return check


def start_server(
    *,
    tls: ssl.SSLContext | None = None,
    ca_file: str = "",
    auth: bool = False,
    faults: FaultPlan | None = None,
    offer_starttls: bool = True,
    implicit_tls: bool = False,
    handler: Handler | None = None,
    pipelining: bool = True,
) -> Server:
    """Start aiosmtpd on a free 127.0.0.1 port. With ``tls`` it offers (and requires) STARTTLS,
    or with ``implicit_tls`` speaks TLS from the first byte (port-465 style). ``handler`` replaces
    the default storing :class:`Handler` (``faults`` is then the handler's own business).
    ``pipelining=False`` makes the default handler leave PIPELINING out of its EHLO reply."""
    handler = handler or Handler(faults, pipelining=pipelining)
    port = free_port()
    kwargs: dict[str, Any] = {}
    if tls is not None and implicit_tls:
        kwargs.update(ssl_context=tls)
    elif tls is not None and offer_starttls:
        kwargs.update(tls_context=tls, require_starttls=True)
    if auth:
        kwargs.update(
            authenticator=authenticator(USER, PASSWORD),
            auth_required=True,
            auth_require_tls=tls is not None and not implicit_tls,  # aiosmtpd counts only STARTTLS as TLS
        )
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10, **kwargs)
    controller.start()
    security = "ssl" if implicit_tls else "starttls" if tls is not None and offer_starttls else "none"
    return Server(
        controller, handler, port, security, ca_file, USER if auth else "", PASSWORD if auth else ""
    )
