"""Where mail about a message comes back to: its envelope sender (``MAIL FROM``) and the mailto
of its ``List-Unsubscribe``, each carrying a short sealed token that names the campaign and the
reader but holds no address (:mod:`dispatch.unsubscribe.address_tokens`).

With ``DISPATCH_BOUNCE_ADDRESS=bounces@news.example.org`` a reader's message goes out with
``MAIL FROM:<bounces+TOKEN@news.example.org>`` (the relay's bounce reports come back to it), and
its mailto is ``bounces+u-TOKEN@news.example.org``. ``dispatch inbound`` reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dispatch.unsubscribe.address_tokens import BOUNCE, UNSUBSCRIBE, UNSUBSCRIBE_PREFIX, Maker, local_part


@dataclass(frozen=True)
class Returns:
    """The envelope sender and the mailto unsubscribe of one campaign's messages."""

    sender: str  # the From address: MAIL FROM without a bounce address
    campaign: str
    list_id: str
    secret: str = field(repr=False)
    bounce_address: str = ""  # DISPATCH_BOUNCE_ADDRESS
    mailto: str = ""  # DISPATCH_UNSUBSCRIBE_MAILTO, as written
    _maker: Maker = field(init=False, repr=False)
    _senders: dict[str, str] = field(init=False, repr=False)  # the latest envelope senders made

    def __post_init__(self) -> None:
        object.__setattr__(self, "_maker", Maker(self.secret, self.list_id, self.campaign))
        object.__setattr__(self, "_senders", {})

    @property
    def has_mailto(self) -> bool:
        """Whether messages carry a mailto unsubscribe."""
        return bool(self.mailto or self.bounce_address)

    def _token(self, kind: str, email: str) -> str:
        return self._maker.token(kind, email.lower())

    def envelope_sender(self, email: str) -> str:
        """``MAIL FROM`` for this recipient: ``bounces+TOKEN@domain``, or the From address. (A
        worker asks twice per message: to pipeline its commands, and to send it.)"""
        if not self.bounce_address:
            return self.sender
        made = self._senders.get(email)
        if made is None:
            if len(self._senders) > 64:
                self._senders.clear()
            local, _, domain = self.bounce_address.rpartition("@")
            made = self._senders[email] = f"{local_part(local, BOUNCE, self._token(BOUNCE, email))}@{domain}"
        return made

    def unsubscribe_mailto(self, email: str) -> str:
        """The reader's mailto URI, holding their unsubscribe token: in place of ``{token}`` in
        DISPATCH_UNSUBSCRIBE_MAILTO; else at the bounce address (``bounces+u-TOKEN@…``); else in
        the subject of the mailbox DISPATCH_UNSUBSCRIBE_MAILTO names."""
        token = UNSUBSCRIBE_PREFIX + self._token(UNSUBSCRIBE, email)
        template = self.mailto.removeprefix("mailto:").replace("{email}", email)
        if "{token}" in template:
            mailto = template.replace("{token}", token)
            return "mailto:" + (mailto if "?" in mailto else mailto + "?subject=unsubscribe")
        if self.bounce_address:
            local, _, domain = self.bounce_address.rpartition("@")
            box = local_part(local, UNSUBSCRIBE, token.removeprefix(UNSUBSCRIBE_PREFIX))
            return f"mailto:{box}@{domain}?subject=unsubscribe"
        box, _, query = template.partition("?")
        pairs = [pair for pair in query.split("&") if pair]
        if any(pair.lower().startswith("subject=") for pair in pairs):
            pairs = [f"{p}%20{token}" if p.lower().startswith("subject=") else p for p in pairs]
        else:
            pairs.insert(0, f"subject=unsubscribe%20{token}")
        return f"mailto:{box}?{'&'.join(pairs)}"
