"""OAuth2 settings (DISPATCH_SMTP_AUTH=oauth2): the providers' presets filled in and checked, as
one :class:`OAuthConfig` the grants (:mod:`dispatch.send.oauth`) and logins use."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dispatch.errors import ConfigError
from dispatch.settings.values import checked_parts, is_loopback

if TYPE_CHECKING:
    from dispatch.settings.model import Settings

PROVIDERS = ("microsoft", "google", "custom")
_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"
_SHARED_TENANTS = ("organizations", "common", "consumers")  # no app-only tokens from these
_TENANT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


@dataclass(frozen=True)
class Preset:
    """What a provider fills in: its relay, endpoints and scopes (``{tenant}`` for Microsoft)."""

    host: str = ""
    device_url: str = ""
    token_url: str = ""
    authorize_url: str = ""
    revoke_url: str = ""
    scope: str = ""
    app_scope: str = ""  # the client-credentials grant's scope


PRESETS = {
    "microsoft": Preset(
        host="smtp.office365.com",
        device_url=_MICROSOFT + "devicecode",
        token_url=_MICROSOFT + "token",
        scope="https://outlook.office.com/SMTP.Send offline_access",
        app_scope="https://outlook.office365.com/.default",
    ),
    # Google's device grant does not allow the mail scope: a person logs in through the browser.
    "google": Preset(
        host="smtp.gmail.com",
        token_url="https://oauth2.googleapis.com/token",  # noqa: S106 - an address, not a secret
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        revoke_url="https://oauth2.googleapis.com/revoke",
        scope="https://mail.google.com/",
    ),
    "custom": Preset(),
}


@dataclass(frozen=True)
class OAuthConfig:
    """Everything a grant needs, with the provider's presets filled in and checked."""

    provider: str
    mailbox: str
    client_id: str
    client_secret: str = field(repr=False)
    device_url: str
    token_url: str
    authorize_url: str
    revoke_url: str
    scope: str
    timeout: float = 30.0

    @property
    def app_only(self) -> bool:
        """The client-credentials grant: a client secret, on a provider that has that grant
        (Google's desktop clients carry a secret too, but sign in a person)."""
        return bool(self.client_secret) and self.provider != "google"

    @property
    def grant(self) -> str:
        return "client credentials" if self.app_only else "refresh token"

    def session(self, **extra: Any) -> Any:
        """An authlib OAuth2 client (requests) for these endpoints; imported only when used."""
        from authlib.integrations.requests_client import OAuth2Session  # noqa: PLC0415

        return OAuth2Session(
            client_id=self.client_id,
            client_secret=self.client_secret or None,
            default_timeout=self.timeout,
            **extra,
        )


def check_url(name: str, url: str) -> None:
    """https, or plain http only to this machine (a test server, a local proxy)."""
    parts = checked_parts(url, f"DISPATCH_{name}")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ConfigError(f"DISPATCH_{name}: {url!r} must be an https:// address (plain http only to 127.0.0.1)")


def _require_mailbox(settings: Settings) -> str:
    mailbox = settings.smtp_user
    local, at, domain = mailbox.rpartition("@")
    if not (local and at and domain) or not mailbox.isascii() or any(c in mailbox for c in " \x01"):
        raise ConfigError(
            "DISPATCH_SMTP_AUTH=oauth2 needs DISPATCH_SMTP_USER set to the mailbox to send as, "
            f"like news@example.org (got {mailbox!r})"
        )
    return mailbox


def _tenant(settings: Settings, app_only: bool) -> str:
    tenant = settings.oauth_tenant or "organizations"
    if not set(tenant) <= _TENANT:
        raise ConfigError(
            f"DISPATCH_OAUTH_TENANT: {tenant!r} is not a tenant ID or domain (like contoso.onmicrosoft.com)"
        )
    if app_only and tenant.lower() in _SHARED_TENANTS:
        raise ConfigError(
            "DISPATCH_OAUTH_TENANT: the client-credentials grant needs your own tenant (its ID or "
            "domain, like contoso.onmicrosoft.com), not " + repr(tenant)
        )
    return tenant


def oauth_config(settings: Settings) -> OAuthConfig:
    """The OAuth settings with the provider's presets filled in; ConfigError naming the setting
    that is missing or wrong."""
    provider = settings.oauth_provider
    if provider not in PROVIDERS:
        shown = f"{provider!r} is not one of" if provider else "set it to"
        raise ConfigError(f"DISPATCH_OAUTH_PROVIDER: {shown} {', '.join(PROVIDERS)} (for DISPATCH_SMTP_AUTH)")
    mailbox = _require_mailbox(settings)
    if not settings.oauth_client_id:
        raise ConfigError(
            "DISPATCH_OAUTH_CLIENT_ID is not set: give the client (application) ID of your app registration"
        )
    preset = PRESETS[provider]
    app_only = bool(settings.oauth_client_secret) and provider != "google"
    tenant = _tenant(settings, app_only) if provider == "microsoft" else ""
    urls = {
        "OAUTH_DEVICE_URL": settings.oauth_device_url or preset.device_url,
        "OAUTH_TOKEN_URL": settings.oauth_token_url or preset.token_url,
        "OAUTH_AUTHORIZE_URL": settings.oauth_authorize_url or preset.authorize_url,
        "OAUTH_REVOKE_URL": settings.oauth_revoke_url or preset.revoke_url,
    }
    urls = {name: url.replace("{tenant}", tenant) for name, url in urls.items()}
    if not urls["OAUTH_TOKEN_URL"]:
        raise ConfigError("DISPATCH_OAUTH_TOKEN_URL is not set: DISPATCH_OAUTH_PROVIDER=custom needs it")
    for name, url in urls.items():
        if url:
            check_url(name, url)
    scope = settings.oauth_scope or (preset.app_scope if app_only else preset.scope)
    return OAuthConfig(
        provider=provider, mailbox=mailbox, client_id=settings.oauth_client_id,
        client_secret=settings.oauth_client_secret, device_url=urls["OAUTH_DEVICE_URL"],
        token_url=urls["OAUTH_TOKEN_URL"], authorize_url=urls["OAUTH_AUTHORIZE_URL"],
        revoke_url=urls["OAUTH_REVOKE_URL"], scope=scope, timeout=settings.smtp_timeout,
    )  # fmt: skip


def with_preset(settings: Settings, *, host_given: bool) -> Settings:
    """Settings with the provider's relay filled in (unless DISPATCH_SMTP_HOST is given), once
    the OAuth settings are known to be complete."""
    oauth_config(settings)
    host = PRESETS[settings.oauth_provider].host
    return settings if host_given or not host else replace(settings, smtp_host=host)
