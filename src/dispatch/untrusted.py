"""Text from outside dispatch, made safe to show a person.

A relay writes what it likes in its replies: an ESC sequence that clears the screen or retitles
the terminal, a CR that sends the cursor back over the line, a NUL, a bidi override (U+202E)
that makes the rest read backwards. dispatch stores such text in the journal and shows it in
summaries, ``status``, ``--json`` and error lines, so it goes through :func:`shown` first.
"""

from __future__ import annotations

MAX_SHOWN = 1000  # characters: a reply is a line or a few, never a page


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` with every character a terminal could act on written as its escape (``\\x1b``,
    ``\\r``, ``\\x00``, ``\\u202e``): controls, format and bidi characters, line and paragraph
    separators, and anything not assigned. Cut to ``limit`` characters with an ellipsis."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
