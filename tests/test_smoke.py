"""A first end-to-end check through a real server (the detailed suites live beside it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.smtp_servers import Server


def test_send_reaches_each_subscriber_once(
    invoke: Callable[..., Any],
    article: Path,
    subscribers: Path,
    env_file: Callable[..., Path],
    starttls_server: Server,
) -> None:
    settings = env_file(**starttls_server.env())
    result = invoke("send", article, "-s", subscribers, "--env-file", settings, "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(r.rcpt_tos[0] for r in starttls_server.received) == [
        "ann@example.org",
        "bob@example.com",
        "cy@example.org",
    ]
    assert all(len(r.rcpt_tos) == 1 for r in starttls_server.received)
    assert "s3cret" not in result.output
