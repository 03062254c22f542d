"""Real sends through real aiosmtpd servers on 127.0.0.1 (issue 2 "Sending", acceptance 4 and 7;
email-standards.md section D).

Most tests drive the library (``plan_issue`` + ``run_send`` with a journal in ``tmp_path``); a few go
through the CLI to check exit codes and the one-line errors a user sees. A ``Recording`` handler is
swapped into the shared servers to count connections, MAIL commands sent before TLS, and AUTH attempts.
"""

from __future__ import annotations

import json
import math
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from dispatch.compose.issue import Issue, plan_issue
from dispatch.errors import AbortError, ExitCode
from dispatch.proof.dryrun import run_dry
from dispatch.send.delivery import SendOptions, run_send
from dispatch.send.summary import RunSummary
from dispatch.settings import Settings
from dispatch.state.journal import FAILED, SENT, Journal
from tests.smtp_servers import PASSWORD, FaultPlan, Handler, Server, free_port

SENDER = "news@example.org"  # the address in conftest's DISPATCH_FROM
THREE = ["ann@example.org", "bob@example.com", "cy@example.org"]


class Recording(Handler):
    """The shared handler plus counters: connections, the connection each MAIL came on, MAIL
    commands seen before TLS, and AUTH attempts (with whether TLS was on)."""

    def __init__(self, faults: FaultPlan | None = None) -> None:
        super().__init__(faults)
        self.mail_on: list[int] = []  # for every MAIL command: the number of its connection
        self.plain_mail = 0  # MAIL commands on a connection without TLS
        self.auth_tls: list[bool] = []  # one entry per AUTH attempt: was TLS active?

    def _connection(self, server: Any) -> int:
        number: int | None = getattr(server, "dispatch_connection", None)
        if number is None:  # the protocol object lives as long as its TCP connection
            with self.lock:
                self.connections += 1
                number = self.connections
            server.dispatch_connection = number
        return number

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self._connection(server)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        number = self._connection(server)
        with self.lock:
            self.mail_on.append(number)
            self.plain_mail += session.ssl is None
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    @property
    def mail_connections(self) -> Counter[int]:
        """MAIL commands per connection (only connections that carried a transaction)."""
        return Counter(self.mail_on)


def record(server: Server) -> Recording:
    """Swap a Recording handler (same faults) into a started server, before any client connects."""
    handler = Recording(server.handler.faults)
    server.controller.handler = handler
    server.handler = handler
    check = server.controller.SMTP_kwargs.get("authenticator")
    if check is not None:

        def counting(smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            handler.auth_tls.append(session.ssl is not None)
            return check(smtp, session, envelope, mechanism, data)

        server.controller.SMTP_kwargs["authenticator"] = counting
    return handler


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    state = Journal(tmp_path / "state")
    yield state
    state.close()


@pytest.fixture
def make_list(write_file: Callable[..., Path]) -> Callable[[int], tuple[Path, list[str]]]:
    """A clean list of ``n`` subscribers; returns its path and the addresses."""

    def make(n: int) -> tuple[Path, list[str]]:
        emails = [f"reader{i:02d}@example.{'org' if i % 2 else 'com'}" for i in range(n)]
        rows = "".join(f"{e},Reader {i}\n" for i, e in enumerate(emails))
        return write_file(f"list-{n}.csv", "email,name\n" + rows), emails

    return make


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


ServerKind = str
KINDS: tuple[ServerKind, ...] = ("plain", "starttls", "starttls+auth")


@pytest.fixture
def start(
    smtp_server: Callable[..., Server], server_tls: ssl.SSLContext, ca_file: str
) -> Callable[..., Server]:
    """Start a server of a kind: plain (security none), STARTTLS with the trustme CA, or STARTTLS + AUTH."""

    def run(kind: ServerKind, faults: FaultPlan | None = None) -> Server:
        if kind == "plain":
            return smtp_server(faults=faults)
        return smtp_server(tls=server_tls, ca_file=ca_file, auth=kind.endswith("+auth"), faults=faults)

    return run


def settings_for(env: dict[str, str], server: Server | None = None, **extra: str) -> Settings:
    values = {**env, **(server.env() if server else {})}
    values.update({f"DISPATCH_{k.upper()}": v for k, v in extra.items()})
    return Settings.from_mapping(values)


def send(issue: Issue, journal: Journal) -> RunSummary:
    return run_send(issue, journal, SendOptions(sleep=lambda _s: None))


def recipients(server: Server) -> list[str]:
    return sorted(address for r in server.received for address in r.rcpt_tos)


def without_headers(data: bytes, names: tuple[bytes, ...] = (b"date", b"message-id")) -> bytes:
    """The message with the named header fields (and their folded continuation lines) removed."""
    head, sep, body = data.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if not line.startswith((b" ", b"\t")):
            dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def to_address(data: bytes) -> str:
    message = message_from_bytes(data, policy=policy.default)
    return str(message["To"].addresses[0].addr_spec)


def one_line_error(stderr: str) -> str:
    """The CLI's single error line (and check that it is single, without a traceback)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("dispatch: error: ")
    return lines[0]


# --- delivery: one message per subscriber, one recipient per envelope -------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_subscriber_receives_exactly_one_message(
    kind: ServerKind,
    start: Callable[..., Server],
    article: Path,
    subscribers: Path,
    env: dict[str, str],
    journal: Journal,
) -> None:
    server = start(kind)
    handler = record(server)
    issue = plan_issue(article, subscribers, settings_for(env, server))

    summary = send(issue, journal)

    assert summary.exit_code is ExitCode.OK
    assert (summary.sent, summary.sent_now, summary.failed) == (3, 3, 0)
    assert recipients(server) == THREE
    for received in server.received:
        assert len(received.rcpt_tos) == 1  # one recipient per envelope (SMTP-05, SMTP-11)
        assert received.mail_from == SENDER  # the envelope sender is DISPATCH_FROM's address
        assert to_address(received.data) == received.rcpt_tos[0]  # only their own address in To
    assert journal.counts(issue.campaign)[SENT] == 3
    if kind != "plain":  # STARTTLS: no transaction and no login ever in clear text (SMTP-08)
        assert handler.plain_mail == 0
    if kind.endswith("+auth"):  # it logged in (the server requires it), only ever over TLS
        assert handler.auth_tls
        assert all(handler.auth_tls)
    else:
        assert handler.auth_tls == []


@pytest.mark.parametrize("kind", ["plain", "starttls+auth"])
def test_cli_send_delivers_once_and_json_matches_the_server(
    kind: ServerKind,
    start: Callable[..., Server],
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
) -> None:
    server = start(kind)
    settings = env_file(**server.env())

    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["sent"], report["failed"], report["deferred"], report["unknown"]) == (3, 0, 0, 0)
    assert report["sent"] == len(server.received)
    assert recipients(server) == THREE
    assert all(r.rcpt_tos == [to_address(r.data)] and r.mail_from == SENDER for r in server.received)
    assert PASSWORD not in result.output


# --- a real send delivers the bytes the dry run writes (acceptance 4) ---------------------------


@pytest.mark.parametrize("kind", ["plain", "starttls+auth"])
def test_send_delivers_the_bytes_the_dry_run_wrote(
    kind: ServerKind,
    start: Callable[..., Server],
    article: Path,
    subscribers: Path,
    env: dict[str, str],
    journal: Journal,
    tmp_path: Path,
) -> None:
    server = start(kind)
    issue = plan_issue(article, subscribers, settings_for(env, server))
    dry = run_dry(issue, tmp_path / "out", write_all=True)
    written = {to_address(p.read_bytes()): p.read_bytes() for p in (tmp_path / "out").glob("*.eml")}

    send(issue, journal)

    assert dry.written == len(written) == 3
    received = {r.rcpt_tos[0]: r.data for r in server.received}
    assert sorted(received) == sorted(written) == THREE
    for email, data in received.items():
        assert without_headers(data) == without_headers(written[email]), email
        assert data != without_headers(data)  # the Date header really was there to remove


def test_cli_send_delivers_the_bytes_of_an_earlier_dry_run(
    plain_server: Server,
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
    tmp_path: Path,
) -> None:
    settings = env_file(**plain_server.env())
    out = tmp_path / "preview"
    dry = invoke("send", article, "-s", subscribers, "--env-file", settings, "--dry-run", "--out", out)
    assert dry.exit_code == 0, dry.output
    assert plain_server.received == []  # the dry run opened no connection
    written = {to_address(p.read_bytes()): p.read_bytes() for p in out.glob("*.eml")}

    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")

    assert result.exit_code == 0, result.output
    received = {r.rcpt_tos[0]: r.data for r in plain_server.received}
    assert sorted(received) == sorted(written) == THREE
    for email, data in received.items():
        assert without_headers(data) == without_headers(written[email]), email


# --- TLS: no downgrade, verified certificates --------------------------------------------------


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
def test_starttls_not_offered_aborts_before_any_message(
    auth: bool,
    smtp_server: Callable[..., Server],
    article: Path,
    subscribers: Path,
    env: dict[str, str],
    journal: Journal,
) -> None:
    server = smtp_server(auth=auth)  # plain text only, no STARTTLS (AUTH allowed in clear text)
    handler = record(server)
    settings = settings_for(env, server, smtp_security="starttls")
    issue = plan_issue(article, subscribers, settings)

    with pytest.raises(AbortError) as caught:
        send(issue, journal)

    message = str(caught.value)
    assert "\n" not in message
    assert "STARTTLS" in message
    assert f"127.0.0.1:{server.port}" in message
    assert PASSWORD not in message
    assert server.received == []
    assert handler.mail_on == []  # never fell back to a plain-text transaction
    assert handler.auth_tls == []  # and never sent the password in clear text
    assert journal.counts(issue.campaign)[SENT] == 0


def test_cli_starttls_not_offered_is_one_line_exit_3(
    smtp_server: Callable[..., Server],
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
) -> None:
    server = smtp_server()
    settings = env_file(**{**server.env(), "DISPATCH_SMTP_SECURITY": "starttls"})

    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")

    assert result.exit_code == ExitCode.ABORTED
    assert "STARTTLS" in one_line_error(result.stderr)
    assert server.received == []


def test_untrusted_certificate_is_one_line_error_and_nothing_sent(
    smtp_server: Callable[..., Server],
    server_tls: ssl.SSLContext,
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server = smtp_server(tls=server_tls, auth=True)  # no ca_file: dispatch has no reason to trust it
    handler = record(server)
    settings = env_file(**server.env())

    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")

    assert result.exit_code == ExitCode.ABORTED
    line = one_line_error(result.stderr)
    assert "certificate" in line
    assert "DISPATCH_SMTP_CA_FILE" in line  # says how to fix it
    assert PASSWORD not in result.output
    assert server.received == []
    assert handler.mail_on == []  # nothing went over the untrusted link
    assert handler.auth_tls == []


def test_ssl_cert_file_trusts_the_private_ca(
    smtp_server: Callable[..., Server],
    server_tls: ssl.SSLContext,
    ca_file: str,
    article: Path,
    subscribers: Path,
    env: dict[str, str],
    journal: Journal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # the system trust store, as OpenSSL reads it
    server = smtp_server(tls=server_tls, auth=True)
    assert "DISPATCH_SMTP_CA_FILE" not in server.env()
    issue = plan_issue(article, subscribers, settings_for(env, server))

    summary = send(issue, journal)

    assert summary.exit_code is ExitCode.OK
    assert recipients(server) == THREE


# --- failures found before the first message ----------------------------------------------------


def test_wrong_password_aborts_with_exit_3_and_sends_nothing(
    starttls_server: Server,
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
) -> None:
    handler = record(starttls_server)
    wrong = "Wr0ng-Pa55-xyz"
    settings = env_file(**{**starttls_server.env(), "DISPATCH_SMTP_PASSWORD": wrong})

    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")

    assert result.exit_code == ExitCode.ABORTED
    line = one_line_error(result.stderr)
    assert "login" in line or "auth" in line.lower()
    assert "DISPATCH_SMTP_PASSWORD" in line  # says what to check
    for secret in (wrong, PASSWORD):
        assert secret not in result.output
    assert starttls_server.received == []
    assert handler.mail_on == []
    assert handler.auth_tls  # it tried to log in...
    assert all(handler.auth_tls)  # ...only over TLS
    assert handler.connections == 1  # found up front: no reconnect-and-retry loop


def test_wrong_password_costs_exactly_one_auth_attempt(
    starttls_server: Server, article: Path, subscribers: Path, env: dict[str, str], journal: Journal
) -> None:
    handler = record(starttls_server)
    issue = plan_issue(article, subscribers, settings_for(env, starttls_server, smtp_password="nope"))

    with pytest.raises(AbortError):
        send(issue, journal)

    assert handler.auth_tls == [True]  # one AUTH command in all: lockout counters see one failure


def test_unreachable_server_is_one_line_exit_3(
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    settings = env_file(
        DISPATCH_SMTP_HOST="127.0.0.1", DISPATCH_SMTP_PORT=str(port), DISPATCH_SMTP_SECURITY="none"
    )

    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")

    assert result.exit_code == ExitCode.ABORTED
    assert f"127.0.0.1:{port}" in one_line_error(result.stderr)
    state = Journal(tmp_path / "state")
    try:  # found before the first message: no recipient was even put in flight
        assert sum(sum(c.counts.values()) for c in state.campaigns()) == 0
    finally:
        state.close()


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_server_that_never_answers_times_out(
    security: str,
    silent_port: int,
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
) -> None:
    timeout = 1.0
    settings = env_file(
        DISPATCH_SMTP_HOST="127.0.0.1",
        DISPATCH_SMTP_PORT=str(silent_port),
        DISPATCH_SMTP_SECURITY=security,
        DISPATCH_SMTP_TIMEOUT=str(timeout),
    )

    began = time.monotonic()
    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")
    elapsed = time.monotonic() - began

    assert result.exit_code == ExitCode.ABORTED
    line = one_line_error(result.stderr)
    assert f"127.0.0.1:{silent_port}" in line
    assert "timed out" in line
    assert elapsed < timeout + 3  # ends within the configured timeout, not the 30 s default


# --- refusals and drops during the run ----------------------------------------------------------


def test_refused_recipient_is_reported_and_the_run_goes_on(
    smtp_server: Callable[..., Server],
    article: Path,
    subscribers: Path,
    env: dict[str, str],
    journal: Journal,
) -> None:
    reply = "550 5.1.1 <bob@example.com>: mailbox unavailable"
    server = smtp_server(faults=FaultPlan(reject={"bob@example.com": reply}))
    issue = plan_issue(article, subscribers, settings_for(env, server))

    summary = send(issue, journal)

    assert summary.exit_code is ExitCode.INCOMPLETE
    assert (summary.sent, summary.failed, summary.deferred, summary.unknown) == (2, 1, 0, 0)
    assert recipients(server) == ["ann@example.org", "cy@example.org"]  # the one after bob too
    [failure] = summary.failures
    assert (failure.email, failure.code, failure.state) == ("bob@example.com", 550, FAILED)
    assert "5.1.1" in failure.message
    [row] = journal.records(issue.campaign, (FAILED,))
    assert (row.email, row.code, row.enhanced, row.hard_bounce) == ("bob@example.com", 550, "5.1.1", True)


def test_cli_refused_recipient_exit_1_with_failures_in_json(
    smtp_server: Callable[..., Server],
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
) -> None:
    server = smtp_server(faults=FaultPlan(reject={"ann@example.org": "550 5.1.1 no such user"}))
    settings = env_file(**server.env())

    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes", "--json")

    assert result.exit_code == ExitCode.INCOMPLETE
    report = json.loads(result.stdout)
    assert (report["sent"], report["failed"], report["exit_code"]) == (2, 1, 1)
    assert report["failures"] == [
        {"email": "ann@example.org", "code": 550, "message": "5.1.1 no such user", "state": "failed"}
    ]
    assert recipients(server) == ["bob@example.com", "cy@example.org"]


def test_drop_at_rcpt_is_survived_by_reconnecting(
    smtp_server: Callable[..., Server],
    make_list: Callable[[int], tuple[Path, list[str]]],
    article: Path,
    env: dict[str, str],
    journal: Journal,
) -> None:
    path, emails = make_list(8)
    server = smtp_server(faults=FaultPlan(drop_rcpt=0.4, seed=3))
    handler = record(server)
    issue = plan_issue(article, path, settings_for(env, server, retries="10"))

    summary = send(issue, journal)

    assert summary.exit_code is ExitCode.OK
    assert recipients(server) == sorted(emails)  # everyone exactly once
    assert len(handler.mail_connections) > 1  # the drops happened and it reconnected
    assert journal.counts(issue.campaign)[SENT] == 8


@pytest.mark.parametrize("per_connection", [1, 2, 3])
def test_max_per_connection_reopens_the_connection(
    per_connection: int,
    smtp_server: Callable[..., Server],
    make_list: Callable[[int], tuple[Path, list[str]]],
    article: Path,
    env: dict[str, str],
    journal: Journal,
) -> None:
    path, emails = make_list(5)
    server = smtp_server()
    handler = record(server)
    issue = plan_issue(article, path, settings_for(env, server, max_per_connection=str(per_connection)))

    summary = send(issue, journal)

    assert summary.exit_code is ExitCode.OK
    assert recipients(server) == sorted(emails)
    per = handler.mail_connections
    assert len(per) == math.ceil(5 / per_connection)
    assert max(per.values()) <= per_connection


@pytest.mark.parametrize("kind", ["plain", "starttls+auth"])
def test_one_connection_carries_every_message(
    kind: ServerKind,
    start: Callable[..., Server],
    make_list: Callable[[int], tuple[Path, list[str]]],
    article: Path,
    env: dict[str, str],
    journal: Journal,
) -> None:
    path, emails = make_list(6)
    server = start(kind)
    handler = record(server)
    issue = plan_issue(article, path, settings_for(env, server))

    summary = send(issue, journal)

    assert summary.exit_code is ExitCode.OK
    assert recipients(server) == sorted(emails)
    assert handler.mail_connections == Counter({max(handler.mail_on): 6})  # all six on one connection
    assert handler.connections <= 2  # that one, plus at most the up-front credentials check
