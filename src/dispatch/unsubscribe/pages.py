"""The pages ``dispatch serve`` answers with: small, self-contained (no script, nothing loaded,
one inline style allowed by its hash), the same security headers on every answer, and the
address masked."""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass

_STYLE = (
    "body{margin:0;background:#fff;color:#1b1b1b;font:1.125rem/1.5 system-ui,-apple-system,'Segoe UI',"
    "Roboto,sans-serif}main{max-width:34rem;margin:0 auto;padding:3rem 1.25rem}"
    "h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}p,form{margin:0 0 1.25rem}"
    "button{font:inherit;font-weight:600;padding:.7rem 1.4rem;border-radius:.4rem;cursor:pointer;"
    "border:2px solid #0b57d0;background:#0b57d0;color:#fff}button.quiet{background:#fff;color:#0b57d0}"
    "button:focus-visible{outline:3px solid #1b1b1b;outline-offset:3px}.small{font-size:1rem;color:#444}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
HEADERS = [
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class Refused(Exception):
    """A request the endpoint answers with an error page."""

    def __init__(self, status: int, title: str, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(title)
        self.response = page(status, title, text, headers=headers)


def mask(address: str) -> str:
    """An address as the page shows it: first character, dots, the domain (IDN decoded)."""
    local, _, domain = address.rpartition("@")
    try:
        shown = domain.encode("ascii").decode("idna")
    except UnicodeError:
        shown = domain
    return f"{local[:1]}\u2022\u2022\u2022@{shown}"


def page(
    status: int, title: str, text: str, *, button: tuple[str, str, str] | None = None,
    note: str = "", headers: tuple[tuple[str, str], ...] = (),
) -> Response:  # fmt: skip
    """A small page: a heading, a paragraph, a note, at most one form button (name, value, label)."""
    form = ""
    if button is not None:
        name, value, label = (html.escape(part) for part in button)
        css = ' class="quiet"' if name == "action" else ""
        button_html = f'<button type="submit" name="{name}" value="{value}"{css}>{label}</button>'
        form = f'<form method="post">{button_html}</form>'
    small = f'<p class="small">{html.escape(note)}</p>' if note else ""
    body = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{small}{form}</main></body></html>\n"
    )
    return Response(status, body.encode("utf-8"), headers=headers)


def bad_link() -> Refused:
    return Refused(
        400, "This link does not work",
        "The unsubscribe link is incomplete or was changed. Open the newsletter again and use its "
        "unsubscribe link as it is, or reply to the newsletter and ask to be removed.",
    )  # fmt: skip
