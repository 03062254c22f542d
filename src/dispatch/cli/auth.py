"""``dispatch login`` and ``dispatch logout``: OAuth2 for Microsoft 365 and Google Workspace
mailboxes (DISPATCH_SMTP_AUTH=oauth2). The flows are in :mod:`dispatch.send.oauth_login`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from dispatch.cli.common import (
    DebugOpt,
    EnvFileOpt,
    app,
    command,
    load_settings,
    reporting,
    state_to_write,
)
from dispatch.errors import ConfigError

if TYPE_CHECKING:
    from dispatch.settings.oauth import OAuthConfig
    from dispatch.state.logins import LoginStore


def _login_store(env_file: EnvFileOpt, *, writing: bool = False) -> tuple[OAuthConfig, LoginStore]:
    from dispatch.send.oauth import login_store
    from dispatch.settings.oauth import oauth_config

    settings = load_settings(env_file)
    if settings.smtp_auth != "oauth2":
        raise ConfigError(
            "DISPATCH_SMTP_AUTH is not oauth2: set it (with DISPATCH_OAUTH_PROVIDER, "
            "DISPATCH_OAUTH_CLIENT_ID and DISPATCH_SMTP_USER, the mailbox) to log in with OAuth2"
        )
    config = oauth_config(settings)
    if writing:
        state_to_write(settings, ask=True)
    return config, login_store(settings.state, config)


@command(app, "login", "Let dispatch send as your mailbox (OAuth2).")
def login(env_file: EnvFileOpt = None, debug: DebugOpt = False) -> None:
    """Log in to the mailbox in DISPATCH_SMTP_USER with OAuth2: open the address shown, enter
    the code (or approve in the browser) and dispatch keeps a refresh token, privately, in the
    state folder. Sends, including cron's, then never ask again until it is revoked."""
    from dispatch.send.oauth_login import login as log_in

    with reporting(debug):
        config, store = _login_store(env_file, writing=True)
        log_in(config, store, typer.echo)
        typer.echo(
            f"Logged in: dispatch can now send as {config.mailbox}. The login is kept in {store.path} "
            "(private); 'dispatch logout' forgets it."
        )


@command(app, "logout", "Forget the OAuth2 login.")
def logout(env_file: EnvFileOpt = None, debug: DebugOpt = False) -> None:
    """Forget the stored OAuth2 login of the mailbox in DISPATCH_SMTP_USER, revoking it at the
    server where it offers that (RFC 7009)."""
    from dispatch.send.oauth_login import logout as log_out

    with reporting(debug):
        config, store = _login_store(env_file)
        found, fate = log_out(config, store)
        if not found:
            typer.echo(f"No login was stored for {config.mailbox}.")
            return
        typer.echo(f"Forgot the login for {config.mailbox}" + (f"; {fate}." if fate else "."))
