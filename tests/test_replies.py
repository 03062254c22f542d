"""What a reply says about the session (D9), and relay text made safe to show (D11)."""

from __future__ import annotations

import pytest

from dispatch.send.replies import classify, session_limit
from dispatch.untrusted import shown


@pytest.mark.parametrize(
    ("code", "text", "limit"),
    [
        (452, "4.5.3 Too many messages in this session", True),
        (452, "4.5.3 Error: too many recipients", True),
        (452, "4.5.3 Your message has too many recipients", True),  # Gmail: one per message here
        (552, "5.5.3 Too many recipients", True),  # RFC 5321 §4.5.3.1.10: read as 452
        (421, "4.7.0 Error: too many messages in this session", True),
        (421, "4.7.0 Too many messages on this connection", True),
        (451, "Too many messages, closing the session", True),
        (451, "4.3.2 Maximum number of messages per connection reached", True),
        (452, "Too many recipients", True),
        # about this client over time, or connections, or something else: no new session lifts it
        (450, "4.7.1 Error: too many recipients from 127.0.0.1", False),
        (450, "4.7.1 Error: too much mail from 127.0.0.1", False),
        (421, "4.7.0 Error: too many connections from 127.0.0.1", False),
        (432, "4.3.2 Concurrent connections limit exceeded", False),
        (421, "4.3.2 Service shutting down", False),
        (421, "4.4.2 closing the connection", False),
        (451, "Too many messages from your IP address, slow down", False),
        (550, "5.5.3 Too many recipients", False),
        (250, "2.0.0 Ok, too many messages in this session", False),
    ],
)
def test_a_session_limit_is_told_from_other_limits(code: int, text: str, limit: bool) -> None:
    assert session_limit(code, text) is limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 No such user", "5.1.1 No such user"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("a\x00b\x7fc\x9bd", "a\\x00b\\x7fc\\x9bd"),
        ("user \u202eresu\u2066 \u200b", "user \\u202eresu\\u2066 \\u200b"),
        ("line\u2028break\rreturn", "line\\u2028break\\rreturn"),
        ("Grüße, 日本語 ✓", "Grüße, 日本語 ✓"),
    ],
)
def test_text_from_a_relay_is_shown_with_every_control_escaped(text: str, expected: str) -> None:
    assert shown(text) == expected


def test_shown_text_is_cut_to_a_few_lines() -> None:
    assert shown("x" * 5000) == "x" * 999 + "…"
    assert len(shown("\x1b" * 5000)) == 1000


def test_a_classified_reply_is_one_inert_line() -> None:
    result = classify(550, "5.1.1 no\r\nsuch \x1b[31muser\u202e\n")
    assert result.text == "5.1.1 no such \\x1b[31muser\\u202e"
    assert result.hard_bounce
