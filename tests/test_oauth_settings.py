"""OAuth2 settings, provider presets, the SASL string, the stored login and the shared token
source (against the tests' own authorization server on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch.errors import ConfigError
from dispatch.send.oauth import LoginNeeded, TokenSource, xoauth2
from dispatch.settings import Settings
from dispatch.settings.oauth import oauth_config
from tests.oauth_server import MAILBOX, AuthServer

MICROSOFT = {
    "DISPATCH_SMTP_AUTH": "oauth2", "DISPATCH_OAUTH_PROVIDER": "microsoft",
    "DISPATCH_OAUTH_CLIENT_ID": "11111111-2222-3333-4444-555555555555", "DISPATCH_SMTP_USER": MAILBOX,
}  # fmt: skip


def settings(**values: str) -> Settings:
    return Settings.from_mapping(values)


def test_microsoft_preset_fills_the_relay_endpoints_and_delegated_scope() -> None:
    s = settings(**MICROSOFT, DISPATCH_OAUTH_TENANT="contoso.onmicrosoft.com")
    config = oauth_config(s)
    assert (s.smtp_host, s.smtp_port, s.smtp_security) == ("smtp.office365.com", 587, "starttls")
    base = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/"
    assert (config.device_url, config.token_url) == (base + "devicecode", base + "token")
    assert config.scope == "https://outlook.office.com/SMTP.Send offline_access"
    assert not config.app_only


def test_microsoft_app_only_uses_the_default_scope_and_needs_a_tenant() -> None:
    with pytest.raises(
        ConfigError, match="DISPATCH_OAUTH_TENANT: the client-credentials grant needs your own"
    ):
        settings(**MICROSOFT, DISPATCH_OAUTH_CLIENT_SECRET="s3cret-value")
    s = settings(
        **MICROSOFT, DISPATCH_OAUTH_CLIENT_SECRET="s3cret-value", DISPATCH_OAUTH_TENANT="contoso.com"
    )
    config = oauth_config(s)
    assert config.app_only
    assert config.scope == "https://outlook.office365.com/.default"
    assert "s3cret-value" not in repr(s) + repr(config)


def test_google_preset_logs_in_through_the_browser_and_keeps_a_given_host() -> None:
    values = {
        **MICROSOFT,
        "DISPATCH_OAUTH_PROVIDER": "google",
        "DISPATCH_OAUTH_CLIENT_SECRET": "desktop-secret",
    }
    config = oauth_config(settings(**values))
    assert settings(**values).smtp_host == "smtp.gmail.com"
    assert config.device_url == ""
    assert config.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert config.scope == "https://mail.google.com/"
    assert not config.app_only  # Google has no client-credentials grant: the secret is the desktop app's
    assert settings(**values, DISPATCH_SMTP_HOST="smtp-relay.gmail.com").smtp_host == "smtp-relay.gmail.com"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"DISPATCH_OAUTH_PROVIDER": ""}, "DISPATCH_OAUTH_PROVIDER: set it to microsoft, google, custom"),
        ({"DISPATCH_OAUTH_PROVIDER": "yahoo"}, "DISPATCH_OAUTH_PROVIDER: 'yahoo' is not one of"),
        ({"DISPATCH_OAUTH_CLIENT_ID": ""}, "DISPATCH_OAUTH_CLIENT_ID is not set"),
        ({"DISPATCH_SMTP_USER": ""}, "needs DISPATCH_SMTP_USER set to the mailbox"),
        ({"DISPATCH_SMTP_USER": "not-an-address"}, "needs DISPATCH_SMTP_USER set to the mailbox"),
        ({"DISPATCH_OAUTH_TENANT": "contoso/../x"}, "DISPATCH_OAUTH_TENANT: 'contoso/../x' is not a tenant"),
        (
            {"DISPATCH_OAUTH_TOKEN_URL": "http://login.example.org/token"},
            "DISPATCH_OAUTH_TOKEN_URL: .* https://",
        ),
        ({"DISPATCH_OAUTH_DEVICE_URL": "ftp://127.0.0.1/device"}, "DISPATCH_OAUTH_DEVICE_URL: .* https://"),
        ({"DISPATCH_SMTP_AUTH": "kerberos"}, "DISPATCH_SMTP_AUTH: 'kerberos' is not one of password, oauth2"),
        ({"DISPATCH_OAUTH_CLIENT_SECRET": "a\nb"}, "DISPATCH_OAUTH_CLIENT_SECRET: holds a control character"),
    ],
)
def test_bad_oauth_settings_name_the_setting(change: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        settings(**{**MICROSOFT, **change})


def test_custom_needs_a_token_endpoint_and_takes_plain_http_only_to_this_machine() -> None:
    custom = {**MICROSOFT, "DISPATCH_OAUTH_PROVIDER": "custom"}
    with pytest.raises(ConfigError, match="DISPATCH_OAUTH_TOKEN_URL is not set"):
        settings(**custom)
    for url in ("http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]/token"):
        assert oauth_config(settings(**custom, DISPATCH_OAUTH_TOKEN_URL=url)).token_url == url
    assert settings(**custom, DISPATCH_OAUTH_TOKEN_URL="https://id.example.org/t").smtp_host == "localhost"


def test_the_password_login_stays_the_default() -> None:
    s = settings(DISPATCH_SMTP_USER="mailer")
    assert s.smtp_auth == "password"


def test_the_sasl_string_is_the_xoauth2_format() -> None:
    raw = xoauth2("news@example.org", "ya29.token")
    assert raw == "user=news@example.org\x01auth=Bearer ya29.token\x01\x01"
    assert (
        base64.b64encode(raw.encode()) == b"dXNlcj1uZXdzQGV4YW1wbGUub3JnAWF1dGg9QmVhcmVyIHlhMjkudG9rZW4BAQ=="
    )


# --- the stored login and the token source ----------------------------------------------------


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    server = AuthServer().start()
    yield server
    server.stop()


def _logged_in(auth: AuthServer, folder: Path) -> TokenSource:
    config = oauth_config(Settings.from_mapping(auth.env()))
    with auth.lock:
        token = auth._new("rt")
        auth.refresh[token] = MAILBOX
    source = TokenSource(config, folder)
    source.store.save(token)
    return source


def test_the_store_is_private_and_never_written_through_a_symlink(auth: AuthServer, tmp_path: Path) -> None:
    source = _logged_in(auth, tmp_path)
    store = source.store
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    store.path.unlink()
    store.path.symlink_to(target)
    with pytest.raises(LoginNeeded, match="cannot read the stored login"):
        store.load()
    store.save("rt-new")
    assert target.read_text() == "{}"  # the link was replaced, not followed
    assert not store.path.is_symlink()
    assert json.loads(store.path.read_text())["refresh_token"] == "rt-new"


def test_a_damaged_store_says_to_log_in_again(auth: AuthServer, tmp_path: Path) -> None:
    store = _logged_in(auth, tmp_path).store
    store.path.write_text("not json")
    with pytest.raises(LoginNeeded, match="damaged; run 'dispatch login'"):
        store.load()


def test_connections_refused_the_same_token_cause_one_renewal(auth: AuthServer, tmp_path: Path) -> None:
    source = _logged_in(auth, tmp_path)
    stale = source.current()
    assert auth.grants["refresh_token"] == 1
    barrier = threading.Barrier(8)

    def refused() -> None:
        barrier.wait()
        source.renew(stale)

    threads = [threading.Thread(target=refused) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert auth.grants["refresh_token"] == 2
    assert source.current() != stale
    assert auth.subject_of(source.current()) == MAILBOX


def test_a_refusal_that_is_not_json_still_says_to_log_in(auth: AuthServer, tmp_path: Path) -> None:
    auth.html_errors = True
    source = _logged_in(auth, tmp_path)
    auth.revoke_everything()
    with pytest.raises(
        LoginNeeded, match=r"refused the stored login for news@example.org \(HTTP 400\); run 'dispatch login'"
    ):
        source.current()


def test_a_token_is_renewed_before_it_expires(auth: AuthServer, tmp_path: Path) -> None:
    auth.access_lifetime = 2
    source = _logged_in(auth, tmp_path)
    first = source.current()
    assert source.current() == first  # still fresh: no new grant
    time.sleep(2.1)
    second = source.current()
    assert second != first
    assert auth.subject_of(second) == MAILBOX
    assert auth.grants["refresh_token"] == 2


def test_the_lock_file_and_store_stay_private_under_a_loose_umask(auth: AuthServer, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        source = _logged_in(auth, tmp_path / "state")
        source.current()  # rotates and saves again
    finally:
        os.umask(old)
    for path in source.store.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
