"""A real ``dispatch serve`` process (the installed command, its settings file, its stderr) on
127.0.0.1: idle and slow connections cannot stall it (D13), its access log shows neither an
address nor a token, and links sealed with a secret used before a rotation keep working (D7)."""

from __future__ import annotations

import contextlib
import functools
import http.client
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch.state.suppression import SuppressionStore
from dispatch.unsubscribe.tokens import BadToken, make_token, read_token, unsubscribe_link
from tests.inbox_helpers import (
    NEWS,
    ONE_CLICK,
    SECRET,
    SETTINGS,
    ServeProcess,
    local_target,
    make_newsletter,
    serving,
    token_of,
    write_env,
)
from tests.slow_clients import Dripper, slow_body, slow_header, timed
from tests.smtp_servers import Server

pytestmark = pytest.mark.slow  # every test runs dispatch serve as a process
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[tuple[ServeProcess, Path]]:
    state = tmp_path / "state"
    env = write_env(tmp_path / "serve.env", {**SETTINGS, "DISPATCH_STATE_DIR": str(state)})
    with serving(env, tmp_path, stderr=tmp_path / "serve.log") as process:
        yield process, state


def _post(process: ServeProcess, address: str) -> int:
    """The one-click POST of ``address``'s link, as a mail provider sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=10)
    try:
        conn.request("POST", "/mail/unsubscribe/" + make_token(SECRET, NEWS, address), ONE_CLICK, FORM)
        return conn.getresponse().status
    finally:
        conn.close()


def test_hundreds_of_idle_and_slow_connections_do_not_stall_one_click_unsubscribes(
    serve_process: tuple[ServeProcess, Path],
) -> None:
    process, state = serve_process
    port = process.port
    with contextlib.ExitStack() as held, Dripper().running() as dripper:
        for _ in range(200):  # connect and send nothing
            held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        for n in range(20):
            dripper.add(*slow_header(port))
            target = "/mail/unsubscribe/" + make_token(SECRET, NEWS, f"slow{n}@example.org")
            dripper.add(*slow_body(port, target))
        time.sleep(1.5)  # a few drips: the slow ones are mid-request
        for address in ("ann@example.org", "bob@example.com"):
            status, took = timed(functools.partial(_post, process, address))
            assert status == 200, f"no answer within 10 s for {address}"
            assert took < 2.0, f"the one-click POST took {took:.1f}s"
        assert not dripper.closed  # nobody was cut yet: they are slow, not over a limit
    with SuppressionStore(state, readonly=True) as store:
        assert store.lookup("ann@example.org", NEWS) is not None
        assert store.lookup("bob@example.com", NEWS) is not None
        assert store.lookup("slow0@example.org", NEWS) is None  # its body never arrived


# --- the access log ---------------------------------------------------------------------------

ACCESS_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (\S+) (\S+) (\d{3}) \d+ms")
ANN, BOB = "ann@example.org", "bob@example.com"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.org/mail/unsubscribe/{token}", "/mail/unsubscribe/<token>"),
        ("https://example.org/mail/unsubscribe?list=weekly", "/mail/unsubscribe"),
    ],
)
def test_one_access_log_line_per_request_with_no_address_token_or_query(
    tmp_path: Path, url: str, shown: str
) -> None:
    values = {**SETTINGS, "DISPATCH_UNSUBSCRIBE_URL": url, "DISPATCH_STATE_DIR": str(tmp_path / "state")}
    env = write_env(tmp_path / "serve.env", values)
    tokens = {address: make_token(SECRET, NEWS, address) for address in (ANN, BOB)}
    link = {a: local_target(unsubscribe_link(url, a, t)) for a, t in tokens.items()}
    forged = link[BOB].replace(tokens[BOB], tokens[BOB][:-4] + "AAAA")
    requests = [  # (method, target, body, expected status, path the log shows)
        ("GET", link[ANN], None, 200, shown),
        ("POST", link[ANN], ONE_CLICK, 200, shown),
        ("POST", link[ANN], "action=resubscribe", 200, shown),
        ("POST", forged, ONE_CLICK, 400, shown),
        ("HEAD", link[BOB], None, 200, shown),
        ("PUT", link[BOB], None, 405, shown),
        ("GET", "/healthz", None, 200, "/healthz"),
        (
            "GET",
            f"/elsewhere/{ANN}?t={tokens[ANN]}&email={BOB}",
            None,
            404,
            "<other-path>",
        ),
    ]
    log = tmp_path / "serve.log"
    with serving(env, tmp_path, stderr=log) as process:
        for method, target, body, status, _ in requests:
            assert process.request(method, target, body, FORM).status == status, (method, target)
    written = log.read_text(encoding="utf-8")
    lines = [line for line in written.splitlines() if ACCESS_LINE.fullmatch(line)]
    assert [ACCESS_LINE.fullmatch(line).groups() for line in lines] == [  # type: ignore[union-attr]
        (method, path, str(status)) for method, _, _, status, path in requests
    ]
    assert len(written.splitlines()) == len(lines) + 1  # and the "listening on" line
    for secret_or_personal in (*tokens.values(), ANN, BOB, "ann@", "bob@", SECRET, forged.rsplit("/")[-1]):
        assert secret_or_personal not in written
    assert not any("?" in line or "=" in line for line in lines)  # no query string, ever


# --- rotating DISPATCH_UNSUBSCRIBE_SECRET -------------------------------------------------------

NEW_SECRET = "rotated-secret-0123456789-abcdefghijklmnopq"
OLDER_SECRET = "first-secret-0123456789-abcdefghijklmnopqrs"


def test_links_sealed_before_a_rotation_keep_working(tmp_path: Path, plain_server: Server) -> None:
    news = make_newsletter(tmp_path / "news", plain_server)
    before = news.preview_links()  # what the issues sent before the rotation carry
    rotated = news.env_file(
        "rotated.env",
        DISPATCH_UNSUBSCRIBE_SECRET=NEW_SECRET,
        DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS=f"{OLDER_SECRET}, {SECRET}",
    )
    after = news.preview_links(rotated, folder="after")  # new messages: the current secret only
    assert read_token(NEW_SECRET, token_of(after[BOB])) == (NEWS, BOB)
    with pytest.raises(BadToken):
        read_token(SECRET, token_of(after[BOB]))
    log = tmp_path / "serve.log"
    with serving(rotated, news.root, stderr=log) as process:
        assert process.one_click(local_target(before[ANN])).status == 200  # an old link
        assert process.one_click(local_target(after[BOB])).status == 200  # a new one
        forged = make_token("never-configured-secret-0123456789-abcdefg", NEWS, "cy@example.org")
        assert process.one_click(f"/mail/unsubscribe/{forged}").status == 400
    for secret in (NEW_SECRET, OLDER_SECRET, SECRET):
        assert secret not in log.read_text(encoding="utf-8")
    done, _ = news.send(env_file=rotated)  # the next issue
    assert done.returncode == 0, done.stderr
    assert sorted(news.received_by()) == ["cy@example.org", "dee@example.net"]


def test_without_the_previous_secret_old_links_are_refused(tmp_path: Path, plain_server: Server) -> None:
    news = make_newsletter(tmp_path / "news", plain_server)
    before = news.preview_links()
    rotated = news.env_file("rotated.env", DISPATCH_UNSUBSCRIBE_SECRET=NEW_SECRET)
    with serving(rotated, news.root) as process:
        assert process.one_click(local_target(before[ANN])).status == 400
    assert news.suppressed(rotated) == []
