"""Deterministic inputs: the long Markdown issue, subscriber lists, suppression lists, a DKIM key."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import os
import random
import unicodedata
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
SENDER = "news@example.org"
UNSUBSCRIBE_SECRET = "benchmark-only-secret-0123456789abcdefghij"  # not a real secret: fixtures only

# Every setting a send needs; the sections add the port, the state folder and DKIM.
SETTINGS = {
    "DISPATCH_FROM": f"Newsroom <{SENDER}>",
    "DISPATCH_REPLY_TO": "editors@example.org",
    "DISPATCH_UNSUBSCRIBE_URL": "https://example.org/unsubscribe?t={token}",
    "DISPATCH_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
    "DISPATCH_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
    "DISPATCH_ORGANIZATION": "Example Foundation",
    "DISPATCH_POSTAL_ADDRESS": "1 Example Street, Springfield",
    "DISPATCH_SMTP_HOST": LOOPBACK,
    "DISPATCH_SMTP_SECURITY": "none",
    "DISPATCH_SMTP_TIMEOUT": "30",
    "DISPATCH_RETRY_DELAY": "0.01",
    "DISPATCH_EHLO_NAME": "bench.example.org",
}

VOCABULARY = """the a of and to in policy region security forces government agreement election militia
coalition pressure strategy withdrawal presence advisory training minister parliament border economy
oil trade reform stability alliance talks envoy sanctions ceasefire capital province analysts observers
report budget reconstruction water energy drought migration youth protest court tribunal mandate"""


def _words(text: str) -> list[str]:
    return text.split()


WORDS = _words(VOCABULARY)

# Names as a real list has them: mostly Latin script, many with accents, a few in other scripts.
FIRST = _words(
    """James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard
Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy Anthony Betty Mark
Sandra Olivia Noah Emma Liam Amelia Oliver Sophia Lucas Mia Hugo Léa Chloé Zoë José María Sofía
Jürgen Björn Søren Åsa Łukasz Małgorzata Ondřej Dvořák Ayşe Oğuz Nguyễn Thảo François Agnès
Renée Ólafur Þóra Ines Mateo Aarav Saanvi Kenji Yuki Amara Kwame Fatima Omar Leila Priya Siobhán
Eoghan"""
)
LAST = _words(
    """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris
Clark Lewis Müller Schäfer Weiß Lefèvre Dubois Fernández Muñoz Peña Nowak Wójcik Kowalczyk Novák
Černý Yılmaz Öztürk Ångström Sørensen Jóhannsdóttir O'Brien Tanaka Sato Okafor Mensah Haddad
Khan Patel Rossi Bianchi Esposito Costa Silva Santos Ferreira Papadopoulos"""
)
OTHER_SCRIPTS = [
    "Дмитрий Иванов",
    "Αλέξης Παπαδόπουλος",
    "王芳",
    "李雷",
    "佐藤 花子",
    "محمد علي",
    "김민준",
]
CITIES = ["Paris", "London", "Vienna", "Tehran", "Hampton", "Arlington", "São Paulo", "Kraków", "Zürich"]
DOMAINS = ["example.org", "example.com"]
PLANS = ["free", "free", "free", "pro", "team"]


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def write_article(path: Path, paragraphs: int) -> None:
    """A deterministic long Markdown issue: ``paragraphs`` paragraphs of ~95 words (each with a
    link, bold and italic), a subhead every 8, a block quote, a list; front matter with a motto,
    author and date. 36 paragraphs make a message of about 75 KB with the built-in templates."""
    rng = random.Random(2026)
    out = [
        "---",
        "title: As elections approach, a thin line between old wars and new rivals",
        "subtitle: What the end of combat missions means for the region",
        "author: Alessandro Minuto-Rizzo",
        "date: 2026-11-25",
        "motto: The spirit of our endeavour is, to strive, to seek, to find and not to yield",
        "motto_attribution: Alfred Tennyson",
        "---",
        "",
    ]
    for i in range(paragraphs):
        if i % 8 == 4:
            out += [f"## {_sentence(rng, 5)[:-1]}", ""]
        if i == 12:
            out += [f"> {_sentence(rng, 24)}", ""]
        if i == 20:
            out += [f"- {_sentence(rng, 8)}" for _ in range(4)] + [""]
        parts = [_sentence(rng, rng.randint(9, 16)) for _ in range(7)]
        parts[1] = f"It is **{parts[1][:-1]}**, and *{_sentence(rng, 4)[:-1]}*."
        parts[4] = f"[{parts[4][:-1]}](https://example.org/analysis/{i}?src=newsletter)."
        out += [" ".join(parts), ""]
    path.write_text("\n".join(out), encoding="utf-8")


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def people(count: int, *, seed: int, start: int = 0) -> Iterator[tuple[str, str]]:
    """``count`` unique (email, name) pairs. About half the names have a non-ASCII letter, 1 in
    40 is written in a non-Latin script, and 1 in 25 is empty; every address is unique and ASCII."""
    rng = random.Random(seed)
    for i in range(start, start + count):
        pick = rng.random()
        if pick < 0.04:
            name, local = "", f"reader{i}"
        elif pick < 0.065:
            name, local = rng.choice(OTHER_SCRIPTS), f"subscriber{i}"
        else:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            name, local = f"{first} {last}", f"{_ascii(first)}.{_ascii(last)}{i}"
        yield f"{local}@{DOMAINS[i % 2]}", name


def write_subscribers(path: Path, rows: int, *, seed: int = 7) -> None:
    """A dispatch subscriber CSV: email, name, city, signup_date, plan."""
    rng = random.Random(seed + 1)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "city", "signup_date", "plan"])
        for email, name in people(rows, seed=seed):
            date = f"20{rng.randint(15, 26)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            writer.writerow([email, name, rng.choice(CITIES), date, rng.choice(PLANS)])


def cached_subscribers(folder: Path, rows: int, *, seed: int = 7) -> Path:
    """The list of ``rows`` rows, generated once into ``folder`` and reused by later runs."""
    path = folder / f"subscribers-{rows}-s{seed}-v1.csv"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        write_subscribers(partial, rows, seed=seed)
        partial.replace(path)
    return path


def token_url(email: str) -> str:
    """An unsubscribe URL of the same shape and length as dispatch's, for the mailmerge CSV."""
    digest = hmac.new(UNSUBSCRIBE_SECRET.encode(), email.lower().encode(), hashlib.sha256).digest()
    return "https://example.org/unsubscribe?t=" + base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def write_suppressions(path: Path, rows: int, also: list[str]) -> None:
    """A do-not-mail export (Mailchimp's address column): ``rows`` addresses, ``also`` among them."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email Address"])
        for email in also:
            writer.writerow([email])
        for email, _name in people(rows - len(also), seed=99, start=10_000_000):
            writer.writerow([email.replace("@", ".gone@", 1)])


def list_addresses(path: Path, count: int) -> list[str]:
    """The first ``count`` addresses of a subscriber CSV."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return [row["email"] for row, _ in zip(reader, range(count), strict=False)]


def write_dkim_key(path: Path, *, algorithm: str = "rsa") -> None:
    """A fresh 2048-bit RSA key (PKCS#1 PEM) or Ed25519 key (PKCS#8 PEM), mode 0600, made with
    ``cryptography``."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - only for section 6
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: PLC0415

    if algorithm == "ed25519":
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


# A template with a two-segment ``if`` on a column (the list's ``plan``), beside the built-in one:
# the built-in templates with a greeting that differs for supporters ("pro") and everyone else.
SEGMENT_HTML = """{% extends "builtin/email.html" %}
{% block heading %}
{% if subscriber.plan == "pro" %}
<p class="kicker">Thank you for supporting us, {{ name or "reader" }}</p>
{% else %}
<p class="kicker">Become a supporter, {{ name or "reader" }}</p>
{% endif %}
{{ super() }}
{% endblock %}
"""
SEGMENT_TEXT = """{% extends "builtin/email.txt" %}
{% block heading %}
{% if subscriber.plan == "pro" %}
Thank you for supporting us, {{ name or "reader" }}
{% else %}
Become a supporter, {{ name or "reader" }}
{% endif %}

{{ super() }}
{% endblock %}
"""


def write_segment_templates(folder: Path) -> Path:
    """The two-segment template (``--template`` folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "email.html").write_text(SEGMENT_HTML, encoding="utf-8")
    (folder / "email.txt").write_text(SEGMENT_TEXT, encoding="utf-8")
    return folder


def write_env_file(path: Path, settings: dict[str, str]) -> None:
    lines = [f"{key}={value!r}" if " " in value else f"{key}={value}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
