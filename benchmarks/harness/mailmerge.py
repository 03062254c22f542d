"""The real mailmerge 2.3.0 as the peer: a template holding the same text and HTML bodies that
dispatch sends, a database with the same recipients, and a config pointing at the sink.

The bodies come from a dispatch dry run for one sentinel subscriber (so they are exactly what
dispatch renders and inlines, whatever the lead changes inside dispatch); the sentinel's address,
name and unsubscribe URL are then turned into mailmerge's ``{{email}}``, ``{{name}}`` and
``{{unsubscribe_url}}``. mailmerge has no CSS inliner, so it gets the already-inlined HTML."""

from __future__ import annotations

import csv
import email
import email.policy
import html
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from harness.fixtures import LOOPBACK, SETTINGS, token_url

SENTINEL_EMAIL = "qx.sentinel@example.org"
SENTINEL_NAME = "Qxsentinel Qxname"


@dataclass(frozen=True)
class Sample:
    """One dispatch message for the sentinel subscriber, taken apart."""

    subject: str
    text: str
    html: str
    unsubscribe_url: str


def sentinel_list(path: Path, columns: list[str]) -> None:
    """A one-row list with the send list's columns, for the sentinel subscriber."""
    row = {"email": SENTINEL_EMAIL, "name": SENTINEL_NAME, "city": "Paris", "signup_date": "2020-01-01"}
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow([row.get(column, "x") for column in columns])


def parse_sample(eml: bytes) -> Sample:
    msg = email.message_from_bytes(eml, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    text_part, html_part = msg.get_body(("plain",)), msg.get_body(("html",))
    if text_part is None or html_part is None:
        raise RuntimeError("dispatch's sample message has no text/plain or no text/html part")
    links = re.findall(r"<(https://[^>]+)>", str(msg.get("List-Unsubscribe", "")))
    return Sample(
        subject=str(msg["Subject"]),
        text=text_part.get_content(),
        html=html_part.get_content(),
        unsubscribe_url=links[0] if links else "",
    )


def _templatize(body: str, sample: Sample) -> str:
    """The body as a Jinja template: the sentinel values become placeholders, everything else
    is kept verbatim inside ``{% raw %}`` blocks."""
    swaps: dict[str, str] = {}
    if sample.unsubscribe_url:
        swaps[sample.unsubscribe_url] = "{{unsubscribe_url}}"
        swaps[html.escape(sample.unsubscribe_url)] = "{{unsubscribe_url}}"
    swaps[SENTINEL_EMAIL] = "{{email}}"
    swaps[SENTINEL_NAME] = "{{name}}"
    pattern = re.compile("|".join(re.escape(k) for k in sorted(swaps, key=len, reverse=True)))
    out: list[str] = []
    last = 0
    for found in pattern.finditer(body):
        out.append("{% raw %}" + body[last : found.start()] + "{% endraw %}")
        out.append(swaps[found.group()])
        last = found.end()
    out.append("{% raw %}" + body[last:] + "{% endraw %}")
    return "".join(out)


def write_template(path: Path, sample: Sample) -> None:
    """An HTML mailmerge template, as performance-anchors.md describes the peer: the headers a
    reader sees from dispatch (To with the name, From, Reply-To, Subject, List-Unsubscribe) and
    dispatch's inlined HTML body. No text part: a multipart template would also make mailmerge
    parse the HTML with html5lib for every message (``_transform_attachment_references``), about
    five times slower here, and the point is to compare against mailmerge at its best."""
    mailto = SETTINGS["DISPATCH_UNSUBSCRIBE_MAILTO"]
    lines = [
        'TO: "{{name}}" <{{email}}>',
        f"SUBJECT: {sample.subject}",
        f"FROM: {SETTINGS['DISPATCH_FROM']}",
        f"REPLY-TO: {SETTINGS['DISPATCH_REPLY_TO']}",
        f"LIST-UNSUBSCRIBE: <{{{{unsubscribe_url}}}}>, <mailto:{mailto}?subject=unsubscribe>",
        "MIME-Version: 1.0",
        "Content-Type: text/html",
        "",
        _templatize(sample.html, sample),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_database(path: Path, subscribers: Path, *, limit: int | None = None) -> int:
    """mailmerge's CSV: the dispatch list's rows with a precomputed ``unsubscribe_url``."""
    count = 0
    with (
        subscribers.open(encoding="utf-8", newline="") as src,
        path.open("w", encoding="utf-8", newline="") as dst,
    ):
        reader = csv.DictReader(src)
        writer = csv.writer(dst)
        writer.writerow(["email", "name", "unsubscribe_url", "city", "plan"])
        for row in reader:
            if limit is not None and count >= limit:
                break
            writer.writerow([row["email"], row["name"], token_url(row["email"]), row["city"], row["plan"]])
            count += 1
    return count


def write_config(path: Path, port: int) -> None:
    """``ratelimit = 0`` turns mailmerge's rate limit off; no ``security`` means plain SMTP."""
    path.write_text(f"[smtp_server]\nhost = {LOOPBACK}\nport = {port}\nratelimit = 0\n", encoding="utf-8")


def command(exe: Path, template: Path, database: Path, config: Path) -> list[str]:
    return [
        str(exe), "--no-dry-run", "--no-limit", "--template", str(template),
        "--database", str(database), "--config", str(config),
    ]  # fmt: skip
