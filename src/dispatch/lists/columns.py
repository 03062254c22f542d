"""What the columns of a list mean: the names an address, a name or a subscription status goes
by in exports (Mailchimp, listmonk, spreadsheets), the words that say subscribed or not, the
delimiter of a file, and a value cleaned as a message may show it. Subscriber lists and
suppression imports read headers the same way."""

from __future__ import annotations

import csv
import re
import unicodedata

from dispatch.addresses import CONTROL

EMAIL_ALIASES = {"email", "e-mail", "emailaddress", "e-mailaddress", "mail", "emailadres"}
NAME_ALIASES = {"name", "fullname", "firstname", "givenname", "subscribername", "displayname"}
LAST_NAME_ALIASES = {"lastname", "surname", "familyname"}
STATUS_ALIASES = {
    "status", "subscriptionstatus", "emailstatus", "subscriberstatus", "newsletterstatus",
    "statut", "stato",
}  # fmt: skip
# A status column is an allow-list: only these values are mailed (an unknown value such as
# "Hard Bounce", "Do Not Email" or "archived" is skipped and reported, never guessed at).
SUBSCRIBED = {
    "", "subscribed", "subscriber", "active", "confirmed", "optedin", "optin", "yes", "y", "true",
    "1", "member", "valid", "ok", "enabled", "abonné", "abonnée", "abonniert", "aktiv", "iscritto",
    "suscrito", "ingeschreven",
}  # fmt: skip
UNSUBSCRIBED = {  # the common ways of saying it, reported as "unsubscribed"
    "unsubscribed", "unsubscribe", "optedout", "optout", "bounced", "cleaned", "complained",
    "blocklisted", "blacklisted", "suppressed", "removed", "inactive", "pending", "unconfirmed",
    # and the plain refusals a hand-kept sheet uses: a column of them is a status column, so no
    # such row is ever mailed because no row in the list happens to say "subscribed"
    "no", "n", "false", "0", "off", "stop", "stopped", "unsub", "dnc", "donotcontact", "donotmail",
    "disabled", "banned", "blocked", "left", "cancelled", "canceled", "deleted", "abgemeldet",
    "désabonné", "désabonnée", "désinscrit", "disiscritto", "baja", "afgemeld", "uitgeschreven",
}  # fmt: skip
# Words that show a column really holds subscription statuses (values are compared squeezed).
STATUS_WORD = re.compile(
    r"subscri|abonn|optin|optout|optedout|bounce|spam|complain|clean|archiv|donot|inactive|active|"
    r"confirm|pending|delet|block|suppress|remov|verified|valid|unsub|stop|disabl|bann|cancel|abgemeld"
)
# Yes/no columns: "opted out = yes" or "subscribed = no" means: do not mail.
OPT_OUT_ALIASES = {
    "emailoptout", "optout", "optedout", "unsubscribed", "donotemail", "hasoptedoutofemail",
    "donotcontact", "donotmail", "dnc", "bounced", "hardbounced", "emailbounced", "complained", "blocked",
    "suppressed",
}  # fmt: skip
OPT_IN_ALIASES = {"subscribed", "issubscribed", "optin", "emailoptin", "consent", "marketingconsent"}
TRUE_WORDS = {"1", "true", "yes", "y", "x", "ja", "oui", "sí", "si"}
FALSE_WORDS = {"0", "false", "no", "n", "nein", "non"}
ADDRESS_LIKE = re.compile(r"[^\s@,;]+@[^\s@,;]+\.(?:[^\W\d_]{2,}|xn--[a-z0-9-]+)")


def column_key(name: str) -> str:
    """``First Name`` → ``first_name``: how a CSV column is reachable as an attribute."""
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


def column_fields(columns: list[str] | tuple[str, ...], reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """Each column's field: its key, or, when an earlier column already has that key (``Plan``
    and ``plan``), the key and a number (``plan#2``), so that every header still reaches its own
    value. A key among ``reserved`` (the recipient's ``email``, ``name``) is that value."""
    fields: dict[str, str] = {}
    taken: set[str] = set()
    for column in dict.fromkeys(columns):
        key = column_key(column)
        if not key:
            continue
        field, n = key, 1
        while field in taken and key not in reserved:
            n += 1
            field = f"{key}#{n}"
        taken.add(field)
        fields[column] = field
    return fields


def key_owners(columns: list[str] | tuple[str, ...]) -> dict[str, str]:
    """For each key, the column ``subscriber.<key>`` gives when several columns share it
    (``Plan`` and ``plan``): the column named exactly so, else the first."""
    owners: dict[str, str] = {}
    for column in dict.fromkeys(columns):
        key = column_key(column)
        if key and (key not in owners or column == key):
            owners[key] = column
    return owners


def template_fields(columns: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The fields of a list's columns as templates see them: ``email`` and ``name`` are the
    recipient's (whatever columns they come from), every other column its own."""
    return column_fields(["email", "name", *columns], reserved=("email", "name"))


def alias(header: str) -> str:
    """A header as a comparable name: ``E-mail Address`` → ``emailaddress``."""
    return re.sub(r"[\s_.]+", "", header.strip().lower()).replace("-", "") or header


def clean_value(value: str) -> str:
    """A CSV value as it may appear in a message: control characters become spaces, runs of
    spaces one space, and the text NFC-normalised."""
    if value.isascii() and value.isprintable():  # most values: no control or composed character
        return value if "  " not in value and value.strip() == value else " ".join(value.split())
    return " ".join(CONTROL.sub(" ", unicodedata.normalize("NFC", value)).split())


def first_line(sample: str) -> str:
    """The header line, whichever line ending the file uses (old Mac files end lines with CR)."""
    return re.split(r"\r\n|\r|\n", sample, maxsplit=1)[0]


def sniff_dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    """A CSV dialect whose delimiter is the one the header line uses most (, ; tab |)."""
    header = first_line(sample)
    delimiter = max(",;\t|", key=header.count)
    if header.count(delimiter) == 0:
        delimiter = ","

    class Detected(csv.excel):
        pass

    Detected.delimiter = delimiter
    return Detected


def header_notes(path: object, columns: list[str]) -> list[str]:
    """Notes on a header: a column named twice (templates see the first), and columns a
    template names the same way (``Plan`` and ``plan`` are both ``subscriber.plan``): which one
    that is, and how to reach the other."""
    notes: list[str] = []
    repeated = sorted({c for c in columns if c and columns.count(c) > 1})
    if repeated:
        notes.append(f"{path}: the header repeats {', '.join(map(repr, repeated))}; templates see the first")
    by_key: dict[str, list[str]] = {}
    for column in dict.fromkeys(c for c in columns if c):
        by_key.setdefault(column_key(column), []).append(column)
    owners = key_owners(columns)
    for key, named in by_key.items():
        if len(named) < 2 or key in ("", "email", "name"):
            continue
        chosen = owners[key]
        others = ", ".join(f"subscriber[{c!r}]" for c in named if c != chosen)
        notes.append(
            f"{path}: columns {', '.join(map(repr, named))} are all subscriber.{key} in a template, which "
            f"gives {chosen!r}; name the other by its header: {others}"
        )
    return notes
