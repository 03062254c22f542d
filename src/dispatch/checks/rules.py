"""Pre-send checks (``dispatch check``, and the start of every send and dry run).

Plain functions over plain inputs, each returning :class:`Problem` lines: a *blocking*
problem stops a real send before the first message; a *warning* is shown and counted.
Every code and its message is in :data:`MESSAGES`. The DNS checks are in
:mod:`dispatch.checks.dns`, the spam score in :mod:`dispatch.checks.spam`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal

from dispatch.compose.dkim import aligned
from dispatch.compose.issue import human_size
from dispatch.errors import DispatchError
from dispatch.settings import PREFIX, Settings
from dispatch.settings.table import PLACEHOLDERS
from dispatch.state.location import unusable_state

Level = Literal["blocking", "refused", "warning"]
GMAIL_CLIP_BYTES = 100_000  # Gmail clips at about 102 KB of HTML (HTML-03)
MAX_SUBJECT = 100
MIN_SECRET = 32
_MAKE_ONE = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
_SHOW = "the template must show {what}; keep the built-in footer (or add it to yours)"

# code -> message; codes in BLOCKING stop a send (and fail a dry run), codes in REFUSED stop a real
# send and `dispatch check` but leave a dry run a clean demo (example values), the others warn.
MESSAGES = {
    "no-from": "DISPATCH_FROM is not set; set it like DISPATCH_FROM='News <news@example.org>'",
    "no-unsubscribe": "no unsubscribe link or header: set DISPATCH_UNSUBSCRIBE_URL (https) and/or _MAILTO",
    "unsubscribe-not-https": "DISPATCH_UNSUBSCRIBE_URL {url!r} must start with https:// (RFC 8058 one-click)",
    "state-unusable": "the state folder {path} cannot be used: {why}; set DISPATCH_STATE_DIR to a folder "
    "this user can write",
    "no-postal-address": "set DISPATCH_POSTAL_ADDRESS: bulk mail must show a postal address (CAN-SPAM)",
    "no-unsubscribe-secret": "DISPATCH_UNSUBSCRIBE_SECRET is not set; " + _MAKE_ONE,
    "short-unsubscribe-secret": "DISPATCH_UNSUBSCRIBE_SECRET is under 32 characters; " + _MAKE_ONE,
    "example-unsubscribe-secret": "DISPATCH_UNSUBSCRIBE_SECRET is the published example from .env.example "
    "(anyone could forge unsubscribe links); " + _MAKE_ONE,
    "example-value": "{key} is still the example {value!r} (from dispatch init or .env.example); "
    "replace it with your own",
    "dkim-not-aligned": "DISPATCH_DKIM_DOMAIN {dkim} does not align with the From domain {domain}, so DMARC "
    "fails; sign with {domain} (or a domain it is under)",
    "free-mail-from": "DISPATCH_FROM is at {domain}, whose DMARC policy fails its mail sent from other "
    "servers; send from an address at your own domain",
    "address-in-unsubscribe-url": "DISPATCH_UNSUBSCRIBE_URL shows the reader's address ({{email}}); use "
    "{{token}} instead",
    "rate-above-relay": "DISPATCH_RATE {rate} is above what {relay} allows ({advice})",
    "no-rate-for-relay": "set DISPATCH_RATE for {host}: {relay} allows {advice}",
    "daily-limit-above-relay": "DISPATCH_DAILY_LIMIT {limit} is above what {relay} allows ({advice})",
    "no-daily-limit-for-relay": "set DISPATCH_DAILY_LIMIT for {host}: {relay} allows {advice}",
    "connections-above-relay": "DISPATCH_CONNECTIONS {n} is above what {relay} allows ({advice})",
    "html-clipped": "the HTML is {size} per message; Gmail clips it after about 100 KB and hides the "
    "footer (and its unsubscribe link): shorten the issue",
    "img-no-alt": "{n} image(s) have no alt text (first: {first}); give every <img> an alt",
    "insecure-link": "{n} link(s) use http: (first: {first}); use https:",
    "relative-link": "{n} link(s) are relative (first: {first!r}); use absolute https: URLs",
    "empty-subject": "the subject is empty; give the article a title or pass --subject",
    "long-subject": "the subject has {n} characters; inboxes cut it near 100: shorten it",
    "no-text-part": "the plain-text part is empty; the text template must show the article",
    "no-unsubscribe-link-html": _SHOW.format(what="a visible unsubscribe link in the HTML part"),
    "no-unsubscribe-link-text": _SHOW.format(what="the unsubscribe link in the text part"),
    "no-postal-address-html": _SHOW.format(what="the postal address in the HTML part"),
    "no-postal-address-text": _SHOW.format(what="the postal address in the text part"),
    "no-spf": "{domain} publishes no SPF record; publish {domain} TXT \"v=spf1 include:<your relay's SPF "
    'domain> ~all"',
    "multiple-spf": "{domain} has {n} SPF records, which makes SPF fail; merge them into one",
    "no-dmarc": '{domain} publishes no DMARC record; publish _dmarc.{domain} TXT "v=DMARC1; p=none; '
    'rua=mailto:dmarc-reports@{domain}"',
    "dmarc-invalid": "the DMARC record of {domain} is not valid ({why}); publish one with p=none to start",
    "no-dkim-record": "{name} publishes no DKIM key, so receivers cannot check dispatch's signature and "
    "every message fails DKIM (and DMARC unless SPF aligns); publish the record dkim keygen printed",
    "dkim-revoked": "{name} publishes an empty p= (a revoked key); publish the key file's record",
    "dkim-mismatch": "the key published at {name} is not the one in {setting}, so every message would "
    "fail DKIM; publish this key's record or use the matching key file",
    "dns-error": "{reason}; check DISPATCH_DNS_SERVER or try again",
    "dkim-lookup-failed": "{reason}, so the published DKIM key cannot be checked; check DISPATCH_DNS_SERVER "
    "or try again",
}
BLOCKING = frozenset(
    {"no-from", "no-unsubscribe", "unsubscribe-not-https", "no-postal-address", "no-unsubscribe-secret"}
    | {"short-unsubscribe-secret", "dkim-not-aligned", "no-dkim-record", "dkim-revoked", "dkim-mismatch"}
    | {"no-unsubscribe-link-html", "no-unsubscribe-link-text", "no-postal-address-html"}
    | {"no-postal-address-text", "dkim-lookup-failed", "state-unusable"}
)
REFUSED = frozenset({"example-value", "example-unsubscribe-secret"})


class CheckError(DispatchError):
    """A check could not run (SpamAssassin failed or timed out)."""


@dataclass(frozen=True)
class Problem:
    """One finding: ``level``, a short stable ``code`` and a one-line ``message`` saying what to do."""

    level: Level
    code: str
    message: str

    @property
    def blocking(self) -> bool:
        """It stops a dry run too (exit 2)."""
        return self.level == "blocking"

    @property
    def refuses_send(self) -> bool:
        """A real send (and ``dispatch check``) refuses to start."""
        return self.level != "warning"


def problem(code: str, **values: object) -> Problem:
    """The problem ``code`` with its message filled in."""
    level: Level = "blocking" if code in BLOCKING else "refused" if code in REFUSED else "warning"
    return Problem(level, code, MESSAGES[code].format(**values))


# --- settings -------------------------------------------------------------------------------

FREE_MAIL = frozenset((
    "gmail.com", "googlemail.com", "yahoo.com", "ymail.com", "rocketmail.com", "outlook.com", "hotmail.com",
    "live.com", "msn.com", "aol.com", "aim.com", "icloud.com", "me.com", "mac.com", "gmx.com", "gmx.de",
    "gmx.net", "web.de", "yandex.com", "yandex.ru", "ya.ru", "mail.ru", "bk.ru", "inbox.ru", "list.ru",
    "protonmail.com", "protonmail.ch", "proton.me", "pm.me", "zoho.com", "tutanota.com", "tuta.io",
    "fastmail.com", "laposte.net", "orange.fr", "free.fr", "libero.it", "qq.com", "163.com", "naver.com",
))  # fmt: skip
_FREE_BRANDS = frozenset({"yahoo", "hotmail", "outlook", "live", "gmx", "yandex", "aol"})  # yahoo.co.uk...


def free_mail_domain(domain: str) -> bool:
    """Whether ``domain`` is a free-mail provider's (whose DMARC policy rejects mail from elsewhere)."""
    labels = domain.lower().rstrip(".").split(".")
    if ".".join(labels) in FREE_MAIL:
        return True
    return labels[0] in _FREE_BRANDS and len(labels) in (2, 3) and all(len(x) <= 3 for x in labels[1:])


@dataclass(frozen=True)
class RelayLimits:
    """What a well-known relay allows (email-standards.md section E); None where it varies."""

    name: str
    per_second: float | None
    daily: int | None
    connections: int | None
    advice: str


KNOWN_RELAYS = {
    "smtp.gmail.com": RelayLimits(
        "Gmail", None, 2000, None, "2000 a day with Workspace, 500 for consumer Gmail"
    ),
    "smtp.office365.com": RelayLimits(
        "Microsoft 365", 0.5, 10_000, 3, "30 messages a minute, 10,000 recipients a day, 3 connections"
    ),
}
_SES = RelayLimits("Amazon SES", None, None, None, "your account's quota (sandbox: 1/s and 200 a day)")
_SES_HOST = re.compile(r"email-smtp(-fips)?\.[a-z0-9-]+\.amazonaws\.com")


def relay_limits(host: str) -> RelayLimits | None:
    """The known limits of the relay ``host``, or None when dispatch knows nothing about it."""
    host = host.lower().rstrip(".")
    return _SES if _SES_HOST.fullmatch(host) else KNOWN_RELAYS.get(host)


def _relay_problems(settings: Settings) -> list[Problem]:
    relay = relay_limits(settings.smtp_host)
    if relay is None:
        return []
    about = {"relay": relay.name, "advice": relay.advice, "host": settings.smtp_host}
    rate = settings.rate.count / settings.rate.per_seconds if settings.rate else None
    found = []
    if rate is None and (relay.per_second is not None or relay.daily is None):
        found.append(problem("no-rate-for-relay", **about))
    elif rate is not None and relay.per_second is not None and rate > relay.per_second * 1.000001:
        found.append(problem("rate-above-relay", rate=settings.rate, **about))
    if not settings.daily_limit:
        found.append(problem("no-daily-limit-for-relay", **about))
    elif relay.daily is not None and settings.daily_limit > relay.daily:
        found.append(problem("daily-limit-above-relay", limit=settings.daily_limit, **about))
    if relay.connections is not None and settings.connections > relay.connections:
        found.append(problem("connections-above-relay", n=settings.connections, **about))
    return found


def settings_problems(settings: Settings) -> list[Problem]:
    """Problems in the settings alone (no network; the state folder is looked at, see
    :func:`dispatch.state.location.unusable_state`)."""
    sender, url, secret = settings.sender, settings.unsubscribe_url, settings.unsubscribe_secret
    domain, dkim = (sender.domain if sender is not None else ""), settings.dkim_domain
    where = {"dkim": dkim, "domain": domain}
    checks = [
        ("no-from", sender is None, {}),
        ("no-unsubscribe", not url and not settings.unsubscribe_mailto, {}),
        ("unsubscribe-not-https", bool(url) and not url.lower().startswith("https://"), {"url": url}),
        ("address-in-unsubscribe-url", "{email}" in url, {}),
        ("no-postal-address", not settings.postal_address.strip(), {}),
        ("no-unsubscribe-secret", not secret, {}),
        ("short-unsubscribe-secret", 0 < len(secret) < MIN_SECRET, {}),
        ("dkim-not-aligned", bool(dkim and domain and not aligned(domain, dkim)), where),
        ("free-mail-from", bool(domain) and free_mail_domain(domain), where),
    ]
    found = [problem(code, **values) for code, failed, values in checks if failed]
    unusable = unusable_state(settings.state)
    if unusable is not None:
        found.append(problem("state-unusable", path=settings.state.path, why=unusable))
    relays = [p for relay in settings.relays for p in _relay_problems(relay)]  # each relay's own limits
    return found + _example_problems(settings) + relays


def _example_problems(settings: Settings) -> list[Problem]:
    """Each setting still holding the example value ``dispatch init`` or ``.env.example`` wrote."""
    found = []
    for key in settings.placeholders():
        if key == PREFIX + "UNSUBSCRIBE_SECRET":
            found.append(problem("example-unsubscribe-secret"))
        else:
            found.append(problem("example-value", key=key, value=PLACEHOLDERS[key]))
    return found


# --- content --------------------------------------------------------------------------------

_VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                   "track", "wbr"))  # fmt: skip
# Styles that leave an element's text unseen: not shown, transparent, no height, no size, or
# pushed far off the screen.
_HIDDEN_STYLE = re.compile(
    r"(?:^|;)(?:display:none|visibility:hidden|max-height:0(?:px)?(?:;|$)|font-size:0(?:\.0+)?(?:px|pt|em|rem|%)?"
    r"(?:;|$|!)|opacity:0?(?:\.0+)?(?:;|$|!)|(?:left|top|text-indent|margin-left|margin-top):-\d{3,})"
)


@dataclass
class _Link:
    href: str
    unhidden: bool  # in no hidden element
    shown: bool = False  # it showed text, or a picture's alt


class _Scan(HTMLParser):
    """The links, images and visible text of an HTML part (text in hidden elements left out);
    a link is visible when it shows text (or a picture with its alt) in no hidden element."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, hidden)
        self._found: list[_Link] = []
        self._open: _Link | None = None  # the link being read
        self.images: list[tuple[str, str | None]] = []  # (src, alt)
        self.text: list[str] = []
        self.feed(html)
        self.close()
        self.links = [(link.href, link.unhidden and link.shown) for link in self._found]

    @property
    def hidden(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        style = re.sub(r"\s+", "", (values.get("style") or "").lower())
        hidden = self.hidden or "hidden" in values or bool(_HIDDEN_STYLE.search(style))
        if tag == "a" and values.get("href") is not None:
            self._open = _Link((values["href"] or "").strip(), not hidden)
            self._found.append(self._open)
        elif tag == "img":
            self.images.append(((values.get("src") or "").strip(), values.get("alt")))
            self._saw(hidden, values.get("alt") or "")
        if tag not in _VOID:
            self.stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        self._open = None if tag == "a" else self._open
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:  # closes it and anything left open inside it
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.text.append(data)
        self._saw(self.hidden, data)

    def _saw(self, hidden: bool, text: str) -> None:
        """Something shown inside the open link (text, or a picture's alt)."""
        if self._open is not None and not hidden and text.strip():
            self._open.shown = True


def _words(text: str) -> str:
    """Words only: ``1 Main St.,<br>Springfield`` and ``1 Main St, Springfield`` compare equal."""
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


@dataclass(frozen=True)
class Footer:
    """Whether a message's body shows what providers and the law require (BULK-08, LEGAL-01)."""

    unsubscribe_in_html: bool
    unsubscribe_in_text: bool
    postal_address_in_html: bool
    postal_address_in_text: bool


def footer_presence(html: str, text: str, *, unsubscribe_link: str, postal_address: str) -> Footer:
    """Look, in one rendered message, for a visible ``<a href>`` to ``unsubscribe_link`` and
    for the postal address (whatever its punctuation and line breaks) in both parts. An empty
    ``postal_address`` counts as shown (settings_problems reports the missing setting)."""
    scan, address = _Scan(html), _words(postal_address)
    return Footer(
        unsubscribe_in_html=any(href == unsubscribe_link and visible for href, visible in scan.links),
        unsubscribe_in_text=unsubscribe_link in text,
        postal_address_in_html=not address.strip() or address in _words(" ".join(scan.text)),
        postal_address_in_text=not address.strip() or address in _words(text),
    )


def content_problems(
    html: str, text: str, subject: str, *, footer: Footer | None = None, size: int | None = None
) -> list[Problem]:
    """Problems in one rendered issue: size (``size``: the figure the summary shows, by default
    this HTML's), images, links, subject, text part and, given a :class:`Footer` (from
    :func:`footer_presence` or the renderer), the footer."""
    scan = _Scan(html)
    no_alt = [src for src, alt in scan.images if alt is None]
    urls = [href for href, _ in scan.links] + [src for src, _ in scan.images]
    insecure = [u for u in urls if u.lower().startswith("http:")]
    relative = [u for u in urls if not re.match(r"[a-z][a-z0-9+.-]*:|#", u, re.I)]
    size = len(html.encode("utf-8")) if size is None else size
    checks: list[tuple[str, object, dict[str, object]]] = [
        ("html-clipped", size > GMAIL_CLIP_BYTES, {"size": human_size(size)}),
        ("img-no-alt", no_alt, {"n": len(no_alt), "first": no_alt[:1] and no_alt[0][:80]}),
        ("insecure-link", insecure, {"n": len(insecure), "first": insecure[:1] and insecure[0][:80]}),
        ("relative-link", relative, {"n": len(relative), "first": relative[:1] and relative[0][:80]}),
        ("empty-subject", not subject.strip(), {}),
        ("long-subject", len(subject.strip()) > MAX_SUBJECT, {"n": len(subject.strip())}),
        ("no-text-part", not text.strip(), {}),
    ]
    if footer is not None:
        checks += [
            ("no-unsubscribe-link-html", not footer.unsubscribe_in_html, {}),
            ("no-unsubscribe-link-text", not footer.unsubscribe_in_text, {}),
            ("no-postal-address-html", not footer.postal_address_in_html, {}),
            ("no-postal-address-text", not footer.postal_address_in_text, {}),
        ]
    return [problem(code, **values) for code, failed, values in checks if failed]
