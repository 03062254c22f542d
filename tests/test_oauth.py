"""OAuth2 (SASL XOAUTH2) end to end: the real ``dispatch`` (a subprocess, no terminal) against
the tests' own authorization server (tests/oauth_server.py) and XOAUTH2 relay
(tests/xoauth2_relay.py), both on 127.0.0.1. Nothing reaches Microsoft or Google.

Each test checks that no token, code or secret the server handed out shows up in anything
dispatch printed (stdout, stderr, --json).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.attack_helpers import clean_environ, run_dispatch
from tests.conftest import BASE_ENV, EXAMPLE_ARTICLE
from tests.oauth_server import APP_CLIENT, APP_SECRET, MAILBOX, AuthServer
from tests.xoauth2_relay import Relay, xoauth2_relay

pytestmark = pytest.mark.slow


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    server = AuthServer().start()
    yield server
    server.stop()


class Newsletter:
    """A folder with settings, a list and a state folder, pointed at the server and a relay."""

    def __init__(self, root: Path, auth: AuthServer) -> None:
        self.root, self.auth = root, auth
        self.state = root / "state"
        self.env_file = root / "oauth.env"
        self.article = root / "issue.txt"
        self.article.write_bytes(EXAMPLE_ARTICLE.read_bytes())

    def settings(self, relay: Relay | None, **extra: str) -> Path:
        values = {**BASE_ENV, "DISPATCH_STATE_DIR": str(self.state), **self.auth.env(), **extra}
        if relay is not None:
            values |= relay.env()
        self.env_file.write_text("".join(f"{k}='{v}'\n" for k, v in values.items()), encoding="utf-8")
        self.env_file.chmod(0o600)
        return self.env_file

    def subscribers(self, count: int) -> Path:
        path = self.root / "subscribers.csv"
        path.write_text("email,name\n" + "".join(f"r{n:04d}@example.com,Reader {n}\n" for n in range(count)))
        return path

    def run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = run_dispatch(*args, "--env-file", self.env_file, cwd=self.root, timeout=timeout)
        self.assert_no_secret(done.stdout + done.stderr)
        return done

    def send(self, *extra: str, count: int = 3, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("send", self.article, "-s", self.subscribers(count), "--yes", "--json", *extra,
                        timeout=timeout)  # fmt: skip

    def login(self) -> subprocess.CompletedProcess[str]:
        """``dispatch login``, approved by the server at the first poll."""
        self.auth.auto_approve = MAILBOX
        try:
            done = self.run("login")
        finally:
            self.auth.auto_approve = ""
        assert done.returncode == 0, done.stderr
        return done

    def assert_no_secret(self, output: str) -> None:
        for token in [*self.auth.issued, APP_SECRET]:
            assert token not in output

    def stored_logins(self) -> list[Path]:
        folder = self.state / "oauth"
        return sorted(folder.glob("*.json")) if folder.exists() else []

    def snapshot(self) -> dict[str, str]:
        """Every file in the state folder but the stored login, with its hash."""
        return {
            str(p.relative_to(self.state)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.state.rglob("*"))
            if p.is_file() and "oauth" not in p.parts
        }


@pytest.fixture
def letter(tmp_path: Path, auth: AuthServer) -> Newsletter:
    return Newsletter(tmp_path, auth)


def summary(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON (exit {done.returncode}): {done.stdout}\n{done.stderr}") from None


# --- dispatch login -----------------------------------------------------------------------


def _start_login(letter: Newsletter) -> tuple[subprocess.Popen[str], list[str]]:
    """``dispatch login`` running, with the lines it printed collected as they come."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatch", "login", "--env-file", str(letter.env_file)],
        cwd=letter.root, env=clean_environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert process.stdout is not None
    threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True).start()
    return process, lines


def _wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_login_completes_once_the_code_is_approved(letter: Newsletter, auth: AuthServer) -> None:
    """The address and code are shown at once (while dispatch polls), the login ends when the
    person approves, and the refresh token is kept 0600 in the state, not in .env."""
    settings = letter.settings(None)
    before = settings.read_text()
    process, lines = _start_login(letter)
    _wait_for(lambda: any("enter the code" in line for line in lines))
    code = re.search(r"enter the code (\d+)", "".join(lines))
    assert code is not None
    assert f"{auth.url}/activate" in "".join(lines)
    _wait_for(lambda: len(auth.polls) >= 2)  # still waiting: authorization_pending
    assert process.poll() is None
    auth.approve(code[1])
    out, err = process.communicate(timeout=30)
    output = "".join(lines) + out + err
    assert process.returncode == 0, output
    assert "Logged in" in output
    letter.assert_no_secret(output)
    gaps = [b - a for a, b in zip(auth.polls, auth.polls[1:], strict=False)]
    assert all(gap >= auth.interval - 0.05 for gap in gaps), gaps  # never faster than asked
    [stored] = letter.stored_logins()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    [live] = auth.live_refresh_tokens
    assert json.loads(stored.read_text())["refresh_token"] == live
    assert settings.read_text() == before
    assert live not in settings.read_text()


@pytest.mark.parametrize(
    ("error", "says"),
    [("access_denied", "was declined"), ("expired_token", "expired before it was approved")],
)
def test_login_declined_or_expired_stores_nothing(
    letter: Newsletter, auth: AuthServer, error: str, says: str
) -> None:
    letter.settings(None)
    auth.script = ["authorization_pending", error]
    done = letter.run("login")
    assert done.returncode == 3, done.stderr
    assert says in done.stderr
    assert letter.stored_logins() == []


def test_login_honours_slow_down(letter: Newsletter, auth: AuthServer) -> None:
    """RFC 8628 §3.5: after slow_down the polling interval grows by 5 seconds, for good."""
    letter.settings(None)
    auth.script = ["slow_down", "authorization_pending"]
    auth.auto_approve = MAILBOX
    done = letter.run("login")
    assert done.returncode == 0, done.stderr
    gaps = [b - a for a, b in zip(auth.polls, auth.polls[1:], strict=False)]
    assert len(gaps) == 2
    assert all(gap >= auth.interval + 5 - 0.1 for gap in gaps), gaps
    assert letter.stored_logins()


def test_browser_login_with_pkce_when_there_is_no_device_endpoint(
    letter: Newsletter, auth: AuthServer
) -> None:
    """Google allows no device grant for mail: dispatch shows an address to open in a browser
    on this machine, and takes the answer on 127.0.0.1 (authorization code + PKCE)."""
    letter.settings(None, DISPATCH_OAUTH_DEVICE_URL="", DISPATCH_OAUTH_AUTHORIZE_URL=f"{auth.url}/authorize")
    process, lines = _start_login(letter)
    _wait_for(lambda: any("/authorize?" in line for line in lines))
    address = next(line.strip() for line in lines if "/authorize?" in line)
    assert "code_challenge_method=S256" in address
    with urllib.request.urlopen(address, timeout=10) as page:  # noqa: S310 - the browser, following the redirect
        assert b"you can close this tab" in page.read()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    letter.assert_no_secret("".join(lines) + out + err)
    assert auth.grants["authorization_code"] == 1
    assert len(letter.stored_logins()) == 1


# --- sending --------------------------------------------------------------------------------


@pytest.mark.parametrize("connections", [1, 3])
def test_300_recipients_with_3_second_tokens_through_a_relay_that_hangs_up(
    letter: Newsletter, auth: AuthServer, connections: int
) -> None:
    """Every recipient exactly once, exit 0, tokens renewed before they expire and when the relay
    refuses one (all access tokens withdrawn mid-send), and no token in any output."""
    auth.access_lifetime = 3
    with xoauth2_relay(auth, drop_every=50, delay=0.02) as relay:
        letter.settings(relay, DISPATCH_CONNECTIONS=str(connections))
        letter.login()
        refreshes_before = auth.grants["refresh_token"]

        def withdraw(stored: int) -> None:
            if stored == 120:
                relay.handler.withdraw_at_next_login = True

        relay.handler.on_message = withdraw
        done = letter.send(count=300)
        assert done.returncode == 0, done.stderr
        result = summary(done)
        assert (result["sent_now"], result["unknown"], result["deferred"]) == (300, 0, 0)
        assert all(relay.count_for(f"r{n:04d}@example.com") == 1 for n in range(300))
        assert len(relay.handler.received) == 300
        assert relay.handler.drops >= 3  # each connection hangs up after its 50th message
        assert auth.grants["refresh_token"] - refreshes_before >= 2
        # Renewed before expiry: the only tokens refused are the ones withdrawn at message 120
        # (one per connection logging in with it), each renewed at once.
        refused = [login for login in relay.handler.logins if not login.accepted]
        assert 1 <= len(refused) <= connections
        assert relay.handler.logins[-1].accepted


def test_a_rotated_refresh_token_is_kept_and_a_later_send_works(letter: Newsletter, auth: AuthServer) -> None:
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        letter.login()
        [stored] = letter.stored_logins()
        first = json.loads(stored.read_text())["refresh_token"]
        assert letter.send().returncode == 0
        assert relay.handler.logins[-1].initial_response  # a short token goes on the AUTH line
        second = json.loads(stored.read_text())["refresh_token"]
        assert second != first  # rotated by the server, replaced in the store
        assert auth.live_refresh_tokens == [second]  # the first one is dead at the server
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        letter.article.write_text(letter.article.read_text().replace("Iraq", "Syria"))  # a new campaign
        later = letter.send()
        assert later.returncode == 0, later.stderr
        assert len(relay.handler.received) == 6


def test_a_long_token_goes_after_the_servers_empty_challenge(letter: Newsletter, auth: AuthServer) -> None:
    """RFC 4954 §4: an AUTH line over 512 octets is not sent; the token follows a 334 instead
    (the form Microsoft documents), and a relay with the usual line limit takes it."""
    auth.token_length = 2000
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        letter.login()
        done = letter.send()
        assert done.returncode == 0, done.stderr
        assert relay.handler.logins
        assert not any(login.initial_response for login in relay.handler.logins)
        assert len(relay.handler.received) == 3


def test_after_revocation_a_cron_send_stops_before_anything(letter: Newsletter, auth: AuthServer) -> None:
    """Revoked at the server (RFC 7009): exit 3 quickly, one line naming 'dispatch login', no
    message, the journal untouched."""
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        letter.login()
        assert letter.send().returncode == 0  # a journal exists, with one campaign in it
        [live] = auth.live_refresh_tokens
        revoke = urllib.request.Request(f"{auth.url}/revoke", data=f"token={live}".encode(), method="POST")  # noqa: S310
        urllib.request.urlopen(revoke, timeout=10).close()  # noqa: S310 - http to 127.0.0.1
        before = letter.snapshot()
        received = len(relay.handler.received)
        letter.article.write_text(letter.article.read_text().replace("Iraq", "Syria"))
        started = time.monotonic()
        done = letter.send()
        assert time.monotonic() - started < 60
        assert done.returncode == 3, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert "dispatch login" in line
        assert "invalid_grant" in line
        assert summary(done)["exit_code"] == 3
        assert len(relay.handler.received) == received
        assert letter.snapshot() == before


def test_no_login_at_all_says_to_log_in(letter: Newsletter, auth: AuthServer) -> None:
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        done = letter.send()
        assert done.returncode == 3
        assert "no OAuth2 login is stored for news@example.org; run 'dispatch login'" in done.stderr
        assert relay.handler.received == []
        assert not any(letter.state.glob("journal*"))
        dry = letter.run(
            "send", letter.article, "-s", letter.subscribers(3), "--dry-run", "--out", letter.root / "p"
        )
        assert dry.returncode == 0, dry.stderr  # a dry run opens no connection, so needs no token


def test_a_login_made_before_the_token_endpoint_changed_is_named(
    letter: Newsletter, auth: AuthServer
) -> None:
    """A login is kept per mailbox, token endpoint and client: after the tenant or token URL
    changed, the error says that one exists and which setting moved, not just 'no login'."""
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        letter.login()
        letter.settings(relay, DISPATCH_OAUTH_TOKEN_URL="http://127.0.0.1:9/tenant-b/token")
        done = letter.send()
        assert done.returncode == 3, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert "no OAuth2 login is stored for news@example.org with these settings, but one is" in line
        assert f"{auth.url}/token" in line
        assert "DISPATCH_OAUTH_TOKEN_URL (or DISPATCH_OAUTH_TENANT) changed since 'dispatch login'" in line
        assert relay.handler.received == []


@pytest.mark.parametrize("expires_in", ["soon", "nan", "1e999"])
def test_a_token_answer_with_an_expiry_out_of_shape_is_named_or_read(
    letter: Newsletter, auth: AuthServer, expires_in: str
) -> None:
    """``expires_in`` that is no number is the endpoint's mistake, not the network's: either the
    token is used (renewed early) or one line says the answer cannot be read; never a traceback."""
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        letter.login()
        auth.expires_in_text = expires_in
        done = letter.send()
        assert "Traceback" not in done.stderr
        assert "internal error" not in done.stderr
        assert "check the network" not in done.stderr
        if done.returncode != 0:
            assert done.returncode == 3, done.stderr
            [line] = done.stderr.strip().splitlines()
            assert "gave an answer dispatch cannot read" in line
            assert relay.handler.received == []
        else:
            assert len(relay.handler.received) == 3


@pytest.mark.parametrize("form_secrets_only", [False, True], ids=["basic", "form-body-only"])
def test_client_credentials_send_needs_no_login(
    letter: Newsletter, auth: AuthServer, form_secrets_only: bool
) -> None:
    """The secret goes in HTTP Basic (RFC 6749 §2.3.1); a server that reads only the form body
    says invalid_client, and gets it there on a second try."""
    auth.form_secrets_only = form_secrets_only
    with xoauth2_relay(auth) as relay:
        letter.settings(
            relay, DISPATCH_OAUTH_CLIENT_ID=APP_CLIENT, DISPATCH_OAUTH_CLIENT_SECRET=APP_SECRET,
            DISPATCH_OAUTH_DEVICE_URL="",
        )  # fmt: skip
        done = letter.send(count=5)
        assert done.returncode == 0, done.stderr
        assert summary(done)["sent_now"] == 5
        assert auth.grants["client_credentials"] >= 1
        assert auth.grants["refresh_token"] == 0
        assert letter.stored_logins() == []
        refused = letter.run("login")
        assert refused.returncode == 2
        assert "needs no login" in refused.stderr


def test_a_wrong_client_secret_stops_before_anything(letter: Newsletter, auth: AuthServer) -> None:
    with xoauth2_relay(auth) as relay:
        letter.settings(relay, DISPATCH_OAUTH_CLIENT_ID=APP_CLIENT, DISPATCH_OAUTH_CLIENT_SECRET="not-it-0")
        done = letter.send()
        assert done.returncode == 3
        assert "refused the client credentials" in done.stderr
        assert "not-it-0" not in done.stdout + done.stderr
        assert relay.handler.received == []


def test_a_relay_that_refuses_even_a_fresh_token_stops_the_run(letter: Newsletter, auth: AuthServer) -> None:
    """The token is good but not for this mailbox: one renewal cannot help; exit 3, nothing sent."""
    with xoauth2_relay(auth) as relay:
        letter.settings(
            relay, DISPATCH_OAUTH_CLIENT_ID=APP_CLIENT, DISPATCH_OAUTH_CLIENT_SECRET=APP_SECRET,
            DISPATCH_SMTP_USER="other@example.org",
        )  # fmt: skip
        done = letter.send()
        assert done.returncode == 3
        assert "refused the OAuth2 login for 'other@example.org', also with a renewed token" in done.stderr
        assert "535 5.7.8" in done.stderr
        assert [login.accepted for login in relay.handler.logins] == [False, False]
        assert auth.grants["client_credentials"] == 2
        assert relay.handler.received == []


def test_token_endpoint_down_stops_before_anything(letter: Newsletter, auth: AuthServer) -> None:
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        letter.login()
        auth.stop()
        done = letter.send()
        assert done.returncode == 3
        assert "cannot get an access token" in done.stderr
        assert relay.handler.received == []


def test_a_relay_without_xoauth2_is_named(letter: Newsletter, auth: AuthServer) -> None:
    with xoauth2_relay(auth, auth_exclude_mechanism=["XOAUTH2", "LOGIN", "PLAIN"]) as relay:
        letter.settings(relay)
        letter.login()
        done = letter.send()
        assert done.returncode == 3
        assert "does not offer AUTH XOAUTH2" in done.stderr


# --- check and logout -------------------------------------------------------------------------


def test_check_says_whether_a_token_can_be_had(letter: Newsletter, auth: AuthServer) -> None:
    letter.settings(None)
    subscribers = letter.subscribers(2)
    missing = letter.run("check", letter.article, "-s", subscribers)
    assert missing.returncode == 2
    assert "OAuth2:        no token for news@example.org" in missing.stdout
    assert "dispatch login" in missing.stdout
    letter.login()
    done = letter.run("check", letter.article, "-s", subscribers, "--json")
    assert done.returncode == 0, done.stdout
    assert summary(done)["oauth"] == {
        "mailbox": MAILBOX, "grant": "refresh token", "token": True, "problem": "",
    }  # fmt: skip


def test_logout_forgets_and_revokes(letter: Newsletter, auth: AuthServer) -> None:
    with xoauth2_relay(auth) as relay:
        letter.settings(relay)
        letter.login()
        [live] = auth.live_refresh_tokens
        done = letter.run("logout")
        assert done.returncode == 0, done.stderr
        assert "revoked at the server" in done.stdout
        assert auth.revocations == [live]
        assert auth.live_refresh_tokens == []
        assert letter.stored_logins() == []
        again = letter.run("logout")
        assert "No login was stored" in again.stdout
        assert letter.send().returncode == 3


def test_login_without_oauth2_settings_is_a_clear_error(letter: Newsletter) -> None:
    letter.settings(None, DISPATCH_SMTP_AUTH="password")
    done = letter.run("login")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "DISPATCH_SMTP_AUTH is not oauth2" in done.stderr
    assert not os.path.exists(letter.state)
