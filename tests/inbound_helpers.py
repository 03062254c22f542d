"""A campaign sent through an aiosmtpd relay, and the CLI on its state: the scene the tests of
``dispatch inbound`` start from (standard input, Maildir, IMAP), on a state folder or, when a
test or module asks for it, PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatch.cli import app
from dispatch.settings import StateLocation
from tests.smtp_servers import Server

SECRET = "inbound-test-secret-0123456789-abcdefghij"
READERS = ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com"]


@dataclass
class Sent:
    """Campaigns sent to READERS through an aiosmtpd relay, and the CLI on their state."""

    server: Server
    env: Path
    tmp: Path
    runner: CliRunner
    state: dict[str, str] = field(default_factory=dict)  # the settings that chose the backend

    def dispatch(self, *args: str | Path, stdin: bytes | None = None) -> Any:
        return self.runner.invoke(app, [*map(str, args), "--env-file", str(self.env)], input=stdin)

    def send(self, campaign: str) -> None:
        issue = self.tmp / f"{campaign}.md"
        issue.write_text(
            f"---\ntitle: News {campaign}\ncampaign: {campaign}\n---\n\nHello.\n", encoding="utf-8"
        )
        result = self.dispatch("send", issue, "-s", self.tmp / "list.csv", "--yes")
        assert result.exit_code == 0, result.stderr

    def copy_of(self, reader: str, campaign: str = "spring") -> tuple[bytes, str]:
        """The reader's message of a campaign and its envelope sender."""
        got = [
            r
            for r in self.server.received
            if r.rcpt_tos == [reader] and f"News {campaign}".encode() in r.data
        ]
        return got[-1].data, got[-1].mail_from

    def inbound(self, data: bytes, *args: str) -> Any:
        result = self.dispatch("inbound", *args, stdin=data)
        assert result.exit_code == 0, result.stderr
        return result

    def suppressed(self) -> dict[str, tuple[str, str]]:
        result = self.dispatch("suppress", "list", "--json")
        return {e["email"]: (e["reason"], e["list"]) for e in json.loads(result.stdout)}

    def status(self, campaign: str = "spring") -> dict[str, Any]:
        return dict(json.loads(self.dispatch("status", campaign, "--json").stdout))

    def location(self) -> StateLocation:
        """Where the sends and ``dispatch inbound`` keep the state."""
        return StateLocation(self.tmp / "state", "test", True, url=self.state.get("DISPATCH_STATE_URL", ""))


def settings_file(tmp: Path, server: Server, **extra: str) -> Path:
    values = {
        "DISPATCH_FROM": "Example News <news@example.org>",
        "DISPATCH_ORGANIZATION": "Example News",
        "DISPATCH_POSTAL_ADDRESS": "1 Example Street, Springfield",
        "DISPATCH_LIST_ID": "news.example.org",
        "DISPATCH_UNSUBSCRIBE_URL": "https://news.example.org/unsubscribe/{token}",
        "DISPATCH_UNSUBSCRIBE_SECRET": SECRET,
        "DISPATCH_BOUNCE_ADDRESS": "bounces@news.example.org",
        "DISPATCH_STATE_DIR": str(tmp / "state"),
        **server.env(),
        **extra,
    }
    path = tmp / "news.env"
    path.write_text("".join(f"{k}='{v}'\n" for k, v in values.items() if v), encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture(name="inbound_state")
def inbound_state_fixture(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that choose the state: a state folder; a fresh PostgreSQL database for a
    test parametrized with ``("inbound_state", ["postgresql"], indirect=True)``. A module may
    override it (tests/test_inbound.py runs every test on both)."""
    return state_settings(request, getattr(request, "param", "sqlite"))


def state_settings(request: pytest.FixtureRequest, backend: str) -> dict[str, str]:
    if backend == "sqlite":
        return {}
    return {"DISPATCH_STATE_URL": request.getfixturevalue("pg_url")}


@pytest.fixture(name="make_sent")
def make_sent_fixture(
    tmp_path: Path, runner: CliRunner, plain_server: Server, inbound_state: dict[str, str]
) -> Callable[..., Sent]:
    def make_it(**extra: str) -> Sent:
        (tmp_path / "list.csv").write_text(
            "email,name\n" + "".join(f"{r},R\n" for r in READERS), encoding="utf-8"
        )
        env = settings_file(tmp_path, plain_server, **{**inbound_state, **extra})
        sent = Sent(plain_server, env, tmp_path, runner, inbound_state)
        sent.send("spring")
        return sent

    return make_it


@pytest.fixture(name="sent")
def sent_fixture(make_sent: Callable[..., Sent]) -> Sent:
    return make_sent()
