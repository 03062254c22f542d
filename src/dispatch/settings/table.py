"""Every setting dispatch reads, declared once.

Each :class:`Setting` row says how the value is parsed, its default, what it means (the
README's settings table), how the settings files show it (``.env.example`` and the ``.env``
that ``dispatch init`` writes, with their comments), and whether the value they show is a
placeholder that a real send refuses while it is unchanged. The parser
(:meth:`dispatch.settings.Settings.from_mapping`), the check for names dispatch does not read,
both settings files and the README's table are produced from, or checked against, this table.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from dispatch.settings import inbound
from dispatch.settings import parsers as p
from dispatch.settings import values as v
from dispatch.settings.parsers import Parser

PREFIX = "DISPATCH_"
SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_MAX_MESSAGE_SIZE = 10_000_000  # Amazon SES v1's limit; most relays take more
MAX_TIMEOUT = 3600.0  # seconds: an hour for one reply is already no relay at all
MAX_GIVE_UP_DAYS = 365.0  # a year of retrying one reader
STATE_FOLDER = "dispatch-state"  # the state folder's name next to the settings file, by default
# The unsubscribe secret published in .env.example: anyone could forge links with it.
EXAMPLE_SECRET = "example-only-replace-me-0123456789abcdefghij"  # noqa: S105 - public on purpose

PATH = None  # the parser of a file or folder (relative to the settings file's folder)


@dataclass(frozen=True)
class Setting:
    """One setting (see the module's docstring)."""

    name: str  # without the prefix: SMTP_HOST
    parse: Parser | None  # text -> value; PATH (None) for a file or folder
    default: Any  # the value when unset or empty
    help: str  # what it is for (the README's table, Markdown)
    shown_default: str  # the README's default column
    section: str  # the heading it is listed under in settings files
    comment: str = ""  # the lines above it in settings files (without "# ")
    example: str | None = None  # written set in settings files; None: written as "# NAME=sample"
    sample: str = ""  # the commented-out value when ``example`` is None
    placeholder: bool = False  # ``example`` must be replaced: a real send refuses it unchanged
    secret: bool = False  # never printed, logged or shown (repr=False too)
    per_relay: str = ""  # with several relays: what separates one value per relay ("": one for all)

    @property
    def key(self) -> str:
        """The full name: DISPATCH_SMTP_HOST."""
        return PREFIX + self.name

    @property
    def field(self) -> str:
        """The attribute of :class:`dispatch.settings.Settings` that holds it."""
        return _FIELDS.get(self.name, self.name.lower())


_FIELDS = {"FROM": "sender", "LIST_ID": "list_id_setting"}

RELAY, SENDER, LIST = (
    "The relay: the SMTP server that delivers the mail",
    "The sender",
    "The list and unsubscribing",
)
DKIM, SERVE, STATE = "DKIM signing (all three, or none)", "The unsubscribe endpoint (dispatch serve)", "State"
SPEED, LOOKS = "Throughput", "Looks"
OAUTH = "OAuth2 login for Microsoft 365 and Google Workspace"

# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "SMTP_HOST", p.text, "localhost",
        "SMTP relay host, or `host:port`; several relays separated by commas "
        '(`relay-a.example.org:587,relay-b.example.org:2525`: see "Several relays")', "`localhost`", RELAY,
        "EDIT: 127.0.0.1 with no security is a stand-in that lets a dry run work (a dry run opens\n"
        "no connection). For a real send, your provider's relay, for example:\n"
        "  DISPATCH_SMTP_HOST=smtp.example.com\n  DISPATCH_SMTP_PORT=587\n  DISPATCH_SMTP_SECURITY=starttls\n"
        "Security: starttls (port 587), ssl (port 465), or none (port 25, only for a relay on this\n"
        "machine: dispatch never sends a password in clear text over the network).\n"
        "Several relays share a send: list them, like relay-a.example.org:587,relay-b.example.org:2525;\n"
        "the relay settings then take one value for all, or one per relay in that order (see the README).",
        example="127.0.0.1", per_relay=",",
    ),
    Setting(
        "SMTP_PORT", p.whole(1, 65535), None, "port (per relay; a port after the host wins)",
        "587 / 465 / 25 by security", RELAY, example="25", per_relay=",",
    ),
    Setting(
        "SMTP_SECURITY", p.choice(SECURITY_MODES), "starttls", "`starttls`, `ssl` or `none` (per relay)",
        "`starttls`", RELAY, example="none", per_relay=",",
    ),
    Setting(
        "SMTP_USER", p.text, "", "login (the mailbox, for OAuth2; per relay)", "none", RELAY,
        "EDIT: the login your provider gave you (empty: no login).", example="", per_relay=",",
    ),
    Setting(
        "SMTP_PASSWORD", p.raw, "",
        "password (never printed or logged; per relay: one per line, as a password may hold a comma)", "none",
        RELAY, example="", secret=True, per_relay="\n",
    ),
    Setting(
        "SMTP_CA_FILE", PATH, None, "extra CA certificate for an internal relay (per relay)", "none", RELAY,
        "A private CA certificate (PEM) for an internal relay; the system's trust store and\n"
        "SSL_CERT_FILE apply anyway. Certificates are always verified.", sample="relay-ca.pem",
        per_relay=",",
    ),
    Setting(
        "SMTP_TIMEOUT", p.number(MAX_TIMEOUT), 30.0, "seconds, for every connection and reply (per relay)",
        "30", RELAY,
        "Seconds to wait for a connection and for each reply.", sample="30", per_relay=",",
    ),
    Setting(
        "EHLO_NAME", v.ehlo_name, "",
        "the name dispatch gives in EHLO/HELO (relays may check it against DNS)", "this machine's name",
        RELAY,
        "The name given in EHLO (default: this machine's name), and the largest message dispatch\nwill send.",
        sample="mail.example.org",
    ),
    Setting(
        "MAX_MESSAGE_SIZE", v.size, DEFAULT_MAX_MESSAGE_SIZE,
        "refuse to start a send whose messages are larger (also capped by the relay's advertised `SIZE`)",
        "`10MB`", RELAY, sample="10MB",
    ),
    Setting(
        "SMTP_AUTH", p.choice(("password", "oauth2")), "password",
        '`password`, or `oauth2` for SASL XOAUTH2 (Microsoft 365, Google Workspace; see "OAuth2")',
        "`password`", OAUTH,
        "password (DISPATCH_SMTP_USER and _PASSWORD), or oauth2: log in to Microsoft 365 or Google\n"
        'Workspace with `dispatch login` (see the README, "OAuth2"); DISPATCH_SMTP_USER is the mailbox.',
        sample="oauth2",
    ),
    Setting(
        "OAUTH_PROVIDER", p.lower, "",
        "`microsoft`, `google` or `custom`: fills in the relay, endpoints and scope",
        "none (required with `oauth2`)", OAUTH,
        "microsoft (with DISPATCH_OAUTH_TENANT), google, or custom (give every endpoint below).",
        sample="microsoft",
    ),
    Setting(
        "OAUTH_TENANT", p.text, "", "the Microsoft 365 tenant: its ID or domain", "`organizations`", OAUTH,
        sample="contoso.onmicrosoft.com",
    ),
    Setting(
        "OAUTH_CLIENT_ID", p.text, "", "the app registration's client (application) ID",
        "none (required with `oauth2`)", OAUTH,
        "The app registration's client ID, and a client secret for\n"
        "cron without a login (Microsoft's app-only SMTP; Google desktop apps have one too).",
        sample="00000000-0000-0000-0000-000000000000",
    ),
    Setting(
        "OAUTH_CLIENT_SECRET", p.raw, "",
        "a client secret: Microsoft's app-only client-credentials grant (no login), or a Google desktop "
        "app's secret (never printed)", "none", OAUTH, secret=True,
    ),
    Setting(
        "OAUTH_DEVICE_URL", p.text, "", "the device authorization endpoint (RFC 8628)", "the provider's",
        OAUTH, "Endpoints and scopes: the provider's by default; all of them for custom.",
        sample="https://login.example.com/device",
    ),
    Setting(
        "OAUTH_TOKEN_URL", p.text, "", "the token endpoint", "the provider's", OAUTH,
        sample="https://login.example.com/token",
    ),
    Setting(
        "OAUTH_AUTHORIZE_URL", p.text, "", "the browser login's authorization endpoint", "the provider's",
        OAUTH, sample="https://login.example.com/authorize",
    ),
    Setting(
        "OAUTH_REVOKE_URL", p.text, "", "the revocation endpoint (RFC 7009)", "the provider's", OAUTH,
        sample="https://login.example.com/revoke",
    ),
    Setting(
        "OAUTH_SCOPE", p.text, "", "the scopes asked for", "the provider's", OAUTH,
        sample="https://outlook.office.com/SMTP.Send offline_access",
    ),
    Setting(
        "FROM", p.mailbox, None, "`Name <address>` of the sender (required)", "", SENDER,
        "EDIT: who the newsletter is from (an address at your own domain, which your relay may send\n"
        "for), and where replies go.", example="The Example Society <newsletter@example.org>",
        placeholder=True,
    ),
    Setting(
        "REPLY_TO", p.mailbox, None, "Reply-To address", "none", SENDER, example="replies@example.org",
        placeholder=True,
    ),
    Setting(
        "ORGANIZATION", p.text, "", "who sends the newsletter (the footer, the masthead)", "empty", SENDER,
        "EDIT: who sends it, and a postal address: both shown in every footer (CAN-SPAM and other\n"
        "laws ask for the address). The values below are examples.", example="The Example Society",
        placeholder=True,
    ),
    Setting(
        "POSTAL_ADDRESS", p.text, "", "the sender's postal address, in every footer", "empty", SENDER,
        example="1 Example Street, 00000 Example Town (an example address: replace it)", placeholder=True,
    ),
    Setting(
        "SUBSCRIBERS", PATH, None, "default subscriber list", "none", LIST,
        "The default subscriber list, relative to this file (-s FILE overrides it).",
        example="subscribers.csv",
    ),
    Setting(
        "LIST_ID", p.text, "",
        "the newsletter's identity, sent as `List-Id` (RFC 2919); an unsubscribe applies to this list "
        "(and to the list ids this state folder used before)",
        "a slug of the organisation on the From domain", LIST,
        "EDIT: the newsletter's identity (List-Id), a name under your domain. An unsubscribe applies\n"
        "to this list (changing it later is announced, and earlier unsubscribes still apply).",
        example="newsletter.example.org", placeholder=True,
    ),
    Setting(
        "UNSUBSCRIBE_URL", p.text, "",
        "the https address of `dispatch serve`; `{token}` marks where the reader's token goes, in the "
        "path or the query (else `?t=` is appended)", "one of the two is required", LIST,
        "EDIT: the public https address of `dispatch serve` (behind your HTTPS reverse proxy). Each\n"
        "message's link carries a sealed token in place of {token}, naming the reader and the list.",
        example="https://example.org/unsubscribe/{token}", placeholder=True,
    ),
    Setting(
        "UNSUBSCRIBE_MAILTO", p.text, "", "unsubscribe mailbox (may hold `{token}` too)", "", LIST,
        "A mailbox for unsubscribe requests by email, too; set it only if someone acts on each one.",
        sample="unsubscribe@example.org",
    ),
    Setting(
        "UNSUBSCRIBE_SECRET", p.raw, "",
        "the key that seals unsubscribe tokens (AES-SIV, key derived with HKDF-SHA256); at least 32 "
        "characters; never printed", "none (a send refuses; a preview uses a marked sample)", LIST,
        "The key that seals unsubscribe tokens, at least 32 random characters. Keep it secret, and\n"
        "keep it: to rotate it, move the old one to DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS.\n"
        "Make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        example=EXAMPLE_SECRET, placeholder=True, secret=True,
    ),
    Setting(
        "UNSUBSCRIBE_PREVIOUS_SECRETS", p.secrets, (),
        "secrets used before the current one, separated by commas or spaces: `dispatch serve` still "
        "accepts links sealed with them, new messages never use them; never printed", "none", LIST,
        "Earlier secrets (comma-separated), so that links in issues sent before a rotation still\n"
        "work: new links always use DISPATCH_UNSUBSCRIBE_SECRET.", sample="", secret=True,
    ),
    Setting(
        "DKIM_KEY_FILE", PATH, None, "DKIM signing (all three, or none)", "no signing", DKIM,
        "Signs each message so receivers can tell it is yours. Make a key and its DNS record with:\n"
        "  dispatch dkim keygen --selector s2026 --domain example.org", sample="dkim-s2026.pem",
    ),
    Setting("DKIM_SELECTOR", p.text, "", "the DKIM selector", "", DKIM, sample="s2026"),
    Setting("DKIM_DOMAIN", p.lower, "", "the DKIM signing domain", "", DKIM, sample="example.org"),
    Setting(
        "DKIM_ED25519_KEY_FILE", PATH, None,
        "an Ed25519 key for a second signature (ed25519-sha256, RFC 8463) after the RSA one, at "
        "`DISPATCH_DKIM_DOMAIN`; with its selector, below. Off by default: some receivers fail it, and "
        "Amazon SES refuses a message with two signatures", "no second signature", DKIM,
        "Optional: a second signature with an Ed25519 key, beside the RSA one (both settings, or\n"
        "neither). Some receivers still fail it, and Amazon SES refuses two signatures. Make one with:\n"
        "  dispatch dkim keygen --algorithm ed25519 --selector e2026 --domain example.org",
        sample="dkim-e2026.pem",
    ),
    Setting("DKIM_ED25519_SELECTOR", p.text, "", "the Ed25519 key's selector", "", DKIM, sample="e2026"),
    Setting(
        "DNS_SERVER", partial(v.host_port, default_port=53), "",
        "`host:port` of the resolver `dispatch check --dns` asks", "the system's", DKIM,
        "The resolver `dispatch check --dns` asks about SPF, DMARC and DKIM (default: the system's).",
        sample="127.0.0.1:53",
    ),
    Setting(
        "SERVE_HOST", p.text, "127.0.0.1", "where `dispatch serve` listens", "`127.0.0.1`", SERVE,
        "Where it listens; put your HTTPS reverse proxy in front.", sample="127.0.0.1",
    ),
    Setting("SERVE_PORT", p.whole(1, 65535), 8025, "its port", "8025", SERVE, sample="8025"),
    Setting(
        "STATE_DIR", PATH, None,
        "journal, suppression store, locks, the inlined-CSS cache and the OAuth2 login; relative to the "
        "settings file's folder", f"`{STATE_FOLDER}` next to the settings file", STATE,
        "The journal (who was sent what, so each reader gets an issue once), the suppression list\n"
        "and locks: every run that uses this file (cron, serve, a terminal) finds the same state.\n"
        "Relative to this file's folder.", example=STATE_FOLDER,
    ),
    Setting(
        "STATE_URL", v.state_url, "",
        "a `postgresql://` URL: the whole state (journal, suppression store, daily budget, locks and "
        "claims, list ids, the OAuth2 login) in PostgreSQL, shared by several hosts and senders "
        "(needs `dispatch[postgresql]`; shown without its password)", "none: the state folder", STATE,
        "Instead of the folder: the whole state in PostgreSQL, for several hosts and senders\n"
        "(pip install 'dispatch[postgresql]'; keep a password in ~/.pgpass).",
        sample="postgresql://dispatch@db.example.org/newsletter",
    ),
    Setting(
        "STATE_LEASE", partial(v.number, minimum=1.0, maximum=3600.0), 30.0,
        "with `DISPATCH_STATE_URL`: seconds a sender's claims outlive its last sign of life before "
        "another sender takes them over", "30", STATE,
        "Seconds a silent sender keeps its claims on recipients (PostgreSQL state only).", sample="30",
    ),
    Setting(
        "JOURNAL_SYNC", p.choice(("normal", "full")), "normal",
        "`normal`: journal writes survive a killed process at once and a power cut within a second; "
        "`full`: every write is synced before the next step (slower)", "`normal`", STATE,
        "normal, or full to sync every journal write to disk at once (slower).", sample="normal",
    ),
    Setting(
        "CONNECTIONS", p.whole(1, 64), 1, "parallel connections (`--connections`; per relay)", "1", SPEED,
        "Parallel connections, a rate limit (also 600/min or 5000/h), and at most this many\n"
        "messages in any 24 hours across runs. Your provider's limits come first: `dispatch check`\n"
        "knows some.", sample="1", per_relay=",",
    ),
    Setting("RATE", v.parse_rate, None, "rate limit (`--rate`)", "none", SPEED, sample="20/s"),
    Setting(
        "DAILY_LIMIT", p.whole(), 0, "messages per rolling 24 h (`--daily-limit`; 0: no limit)", "none",
        SPEED, sample="2000",
    ),
    Setting(
        "MAX_PER_CONNECTION", p.whole(), 0,
        "re-open the connection after N messages (per relay)", "unlimited",
        SPEED, "Messages per connection before it is re-opened (0: no limit).", sample="100", per_relay=",",
    ),
    Setting(
        "RETRIES", p.whole(0, 20), 3, "in-run retries of 4xx replies and drops", "3", SPEED,
        "Retries within a run of a temporary failure, and the first one's delay in seconds (it\n"
        "doubles each time).", sample="3",
    ),
    Setting("RETRY_DELAY", p.number(3600), 1.0, "the first retry's delay (s)", "1", SPEED, sample="1"),
    Setting(
        "MAX_FAILURE_RATIO", p.number(1.0), 0.5, "abort when more than this share is refused", "0.5", SPEED,
        "Stop the run when more than this share of at least 20 recipients is refused.", sample="0.5",
    ),
    Setting(
        "GIVE_UP_DAYS", p.number(MAX_GIVE_UP_DAYS), 5.0,
        "a recipient still deferred this long after its first attempt becomes failed (0: never)", "5",
        SPEED, "Days after the first attempt when a deferred reader counts as failed.", sample="5",
    ),
    Setting(
        "LANGUAGE", p.text, "", "the newsletter's language (`lang`), unless the article says", "detected",
        LOOKS, "The language, when the article's front matter has no lang:.", sample="en",
    ),
    Setting(
        "LOGO", p.text, "",
        "a masthead logo: an https URL (its size as `#WIDTHxHEIGHT` after it; else 200x60) or a local "
        "image file (embedded)", "none", LOOKS,
        "A masthead logo: an https URL, or an image file here (embedded in each message).",
        sample="logo.png",
    ),
    Setting(
        "WEB_URL", v.web_url, "",
        'the web version of each issue ("View in browser"): a URL with `{campaign}`, or a folder', "none",
        LOOKS, 'The web version of each issue; adds a "View in browser" link.',
        sample="https://example.org/newsletter/",
    ),
    Setting(
        "CHROMIUM", p.text, "", "the Chromium used for `--png`/`--pdf` proofs", "`chromium` on the PATH",
        LOOKS, "The Chromium for --png and --pdf proofs.", sample="/usr/bin/chromium",
    ),
    *(Setting(**row) for row in inbound.ROWS),
)
# fmt: on
BY_KEY = {s.key: s for s in SETTINGS}
PATHS = frozenset(s.key for s in SETTINGS if s.parse is PATH)
PLACEHOLDERS = {s.key: s.example for s in SETTINGS if s.placeholder and s.example is not None}


def unknown_settings(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, closest known name or "")`` for each name dispatch does not read but that is
    meant for it: DISPATCH_* names, and names a slip of the keyboard away from one
    (``dispatch_smtp_host``, ``DISPATH_FROM``, ``DISPATCHSMTP_PASSWORD``)."""
    known = list(BY_KEY)
    found = []
    for name in names:
        if name in BY_KEY:
            continue
        upper = name.upper()
        if upper.startswith(PREFIX):
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        elif upper.startswith(PREFIX[:4]):
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.8)
            if not close:
                continue
        else:
            continue
        found.append((name, close[0] if close else ""))
    return found
