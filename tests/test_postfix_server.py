"""The private Postfix fixture itself (tests/postfix_server.py), which reconcile's tests and the
bounce-report tests share: it relays to a next hop, keeps its own domain's mail in a Maildir,
logs to its own file, and leaves nothing behind."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from tests.postfix_server import POSTFIX_MISSING, postfix_relay
from tests.smtp_servers import Server

pytestmark = pytest.mark.skipif(bool(POSTFIX_MISSING), reason=POSTFIX_MISSING)


def test_it_relays_keeps_its_own_domain_logs_and_cleans_up(smtp_server: Callable[..., Server]) -> None:
    hop = smtp_server()
    with postfix_relay(next_hop=hop.port, mailbox_domain="news.example.org") as relay:
        with smtplib.SMTP("127.0.0.1", relay.port) as client:
            client.sendmail(
                "ann@example.org", ["bob@example.com"], b"Message-ID: <one@example.org>\r\n\r\nhi\r\n"
            )
            client.sendmail(
                "ann@example.org", ["box@news.example.org"], b"Message-ID: <two@example.org>\r\n\r\n."
            )
        relay.wait_for_log(r"status=sent", count=2)
        kept = list((relay.maildir / "new").iterdir())
        folder = relay.folder

    assert [m.rcpt_tos for m in hop.received] == [["bob@example.com"]]
    assert len(kept) == 1
    assert not folder.exists(), "the instance's folder is removed when it stops"
