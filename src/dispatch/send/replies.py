"""What an SMTP reply means for a campaign: sent, deferred, failed or unknown, and whom it is
about (email-standards.md, section E2). Pure functions of the code and the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from dispatch.untrusted import shown

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
# Free text is read only to refine a transient reply (RFC 3463 codes come first): Postfix's
# "too much mail from", Exchange's "submission rate … exceeded", SES's "Throttling failure",
# Gmail's "unusual rate" (email-standards.md, section E2).
_RATE_WORDS = re.compile(r"too (?:many|much)|\brate\b|throttl|quota|exceeded|slow down|\blimit", re.I)
_PER_CONNECTION = re.compile(r"\b(per|this|the) (connection|session)\b", re.I)
_LIMIT_WORDS = re.compile(r"too many|limit|maximum|exceeded|reached", re.I)
_TOO_MANY = re.compile(r"too many (?:messages|mails?|transactions|recipients)\b(?!\s+from\b)", re.I)
_QUOTA_WORDS = re.compile(r"quota ?exceeded|sending (?:limit|quota)", re.I)
_MESSAGE_WORDS = re.compile(
    r"line too long|message (?:file )?(?:is )?too (?:big|large)|message size|size limit|exceeds (?:the )?"
    r"(?:maximum|fixed|size)",
    re.I,
)
_SENDER_POLICY = {515, 23, 25, 26, 27, 57}  # x.7.x about the sender's authentication (SPF/DKIM/DMARC, PTR)


class Status(StrEnum):
    """What became of one message."""

    SENT = "sent"
    DEFERRED = "deferred"  # transient: try again later
    FAILED = "failed"  # permanent for this recipient
    UNKNOWN = "unknown"  # the server may or may not have accepted it


class Scope(StrEnum):
    """Whom a reply is about, which decides who pays for it (email-standards.md, E2)."""

    RECIPIENT = "recipient"  # that address fails or waits; the run goes on
    MESSAGE = "message"  # the message or the sender: every recipient would get the same answer
    RATE = "rate"  # the rate, a quota or too many connections: stop now, retry later


def _enhanced_parts(text: str) -> tuple[int, int] | None:
    found = _ENHANCED.match(text)
    if not found or (found[2], found[3]) == ("0", "0"):
        return None  # x.0.0 says "undefined": the words are all there is to go on
    return int(found[2]), int(found[3])


def reply_scope(code: int, text: str) -> Scope:
    """Classify by reply code and enhanced status code first; read words only to refine."""
    parts = _enhanced_parts(text)
    subject, detail = parts if parts else (None, None)
    if _PER_CONNECTION.search(text):
        return Scope.RECIPIENT  # "too many messages on this connection": reconnecting is the answer
    if code < 500:
        if (subject, detail) == (7, 28) or (code == 421 and subject == 7) or subject == 5:
            return Scope.RATE
        if subject in (1, 2):
            return Scope.RECIPIENT  # that mailbox (Gmail's 450 4.2.1 "receiving mail at a rate")
        return Scope.RATE if _RATE_WORDS.search(text) else Scope.RECIPIENT
    if (subject, detail) == (4, 5) or (subject == 2 and detail == 0 and _QUOTA_WORDS.search(text)):
        return Scope.RATE  # a daily sending limit: stop for the day
    if subject == 2 and detail is not None and 251 <= detail <= 255:
        return Scope.MESSAGE  # Exchange: sender throttled, a person must fix the mailbox
    if (subject, detail) == (3, 4) or subject in (5, 6) or (subject == 7 and detail in _SENDER_POLICY):
        return Scope.MESSAGE  # too big, protocol or syntax, content encoding, sender authentication
    if subject is None and (code in (500, 501, 502, 503, 504) or _MESSAGE_WORDS.search(text)):
        return Scope.MESSAGE
    return Scope.RECIPIENT


def session_limit(code: int, text: str) -> bool:
    """A relay's limit on one session ("452 4.5.3 too many recipients", "421 too many messages
    in this session", "451 … per connection"): a new session takes more. A transient reply (or
    the 552 that RFC 5321 §4.5.3.1.10 says to read as 452); never a policy (x.7.x) reply about
    this client, such as Postfix's "too many recipients from <ip>", which no new session lifts."""
    parts = _enhanced_parts(text)
    if not (400 <= code < 500 or (code == 552 and parts == (5, 3))):
        return False
    if _PER_CONNECTION.search(text) and _LIMIT_WORDS.search(text):
        return True
    if parts == (5, 3):  # RFC 3463: too many recipients (one per message: too many this session)
        return True
    return (parts is None or parts[0] != 7) and bool(_TOO_MANY.search(text))


@dataclass(frozen=True)
class Result:
    """One message's outcome with the server's last reply."""

    status: Status
    code: int | None
    text: str
    data_started: bool = False  # the message data was (at least partly) sent
    scope: Scope = Scope.RECIPIENT

    @property
    def enhanced(self) -> str:
        """The RFC 3463 enhanced status code at the start of the reply text, if any."""
        found = _ENHANCED.match(self.text)
        return found[0] if found else ""

    @property
    def hard_bounce(self) -> bool:
        """A permanent "no such mailbox / bad address" reply (x.1.1, x.1.2, x.1.3)."""
        return (
            self.status is Status.FAILED
            and self.scope is Scope.RECIPIENT
            and self.enhanced[2:] in {"1.1", "1.2", "1.3"}
        )

    @property
    def stops_campaign(self) -> bool:
        """A reply about the message, the sender or the rate: every further message would meet
        the same fate, so the run stops and this recipient is not blamed (left deferred)."""
        return self.scope is not Scope.RECIPIENT

    def line(self) -> str:
        """The reply as one short line."""
        return f"{self.code} {self.text}".strip() if self.code else self.text


def classify(code: int, text: str, *, data_started: bool = False) -> Result:
    """2xx sent; 4xx deferred; 5xx failed (RFC 5321 §4.2.1), with whom the reply is about. The
    text is kept as one line, every control character in it escaped (:func:`shown`)."""
    text = shown(" ".join(text.split()))
    status = Status.SENT if 200 <= code < 300 else Status.DEFERRED if code < 500 else Status.FAILED
    scope = Scope.RECIPIENT if status is Status.SENT else reply_scope(code, text)
    return Result(status, code, text, data_started, scope)
