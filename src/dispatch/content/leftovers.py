"""The web page around a plain-text article: share bars, "Subscribe to our newsletter", related
headlines, copyright lines. A copy of a web page ends with them and can carry some between two
paragraphs; none of it is the author's, and none of it is sent.
"""

from __future__ import annotations

import re

CLOSE_QUOTES = "”\"»“’'›」』‘"
SHORT_LINE = 90
URL = re.compile(r"(https?://[^\s<>\"]+[^\s<>\".,;:!?)\]'’”])")
_LEFTOVER = re.compile(
    r"^(share( (on|this|via|article|this (article|story|post)))?( \w+)?|"
    r"subscribe( (to|for))?( (our|the))?( \w+)?( newsletter| updates| list)?|"
    r"sign up( for)?( our)?( newsletter)?|follow us( on)?( \w+)?|tweet|print|e-?mail|"
    r"facebook|twitter|x|linkedin|whatsapp|telegram|reddit|pinterest|instagram|youtube|"
    r"copy link|read more|related( articles| posts| stories)?|tags?:.*|back to top|"
    r"like this:?|loading\.*|comments?|leave a (reply|comment))[\s:.!…]*$",
    re.IGNORECASE,
)
# Markers that end the article: after the first of them, in a tail of short lines, all goes.
_END_MARKER = re.compile(
    r"^(share( (on|this|via|article|this (article|story|post)))?|(share (on|via) \w+\s*)+|"
    r"subscribe( (to|for))?( (our|the))?( \w+)?( newsletter| updates| list| mailing list)?"
    r"( (for|to get) (more|updates|the latest)( \w+)?)?|"
    r"sign up( (for|to))?( (our|the))?( newsletter| updates)?|follow us( on \w+)?|"
    r"related( articles| posts| stories| content| reading)?|read (more|next)|you (may|might) also like|"
    r"tags?:.*|©.*|\(c\) \d{4}.*|copyright\b.*|all rights reserved.*|"
    r"privacy (policy|notice)( \|.*)?|cookies? (settings|policy|preferences)( \|.*)?|"
    r"terms (of|and) (use|service|conditions).*|advertisement|back to top|leave a (reply|comment)|"
    r"поделиться|подписаться.*|partager( sur)?|teilen|compartir( en)?|condividi( su)?|"
    r"abonnieren|s'abonner.*|suscr[ií]bete.*|iscriviti.*|#{3}|-+ ?ends? ?-+|"
    r"unsubscribe( \|.*)?|update (your )?preferences.*|view (this )?(email )?in (your )?browser.*|"
    r"you (are )?receiv(e|ing) this\b.*|this (e-?mail|message) was sent\b.*)[\s:.!…|]*$",
    re.IGNORECASE,
)
# Markers that may end like a sentence and still be page furniture.
_FOOTER_SENTENCE = re.compile(
    r"^(©|\(c\)|copyright|all rights reserved|you (are )?receiv|this (e-?mail|message) was sent)", re.I
)
# Lines that are web-page furniture wherever they stand.
_FURNITURE = re.compile(
    r"^(share (on|this|via)( \w+)?|subscribe to (our|the) newsletter|sign up (for|to) (our|the) "
    r"newsletter|follow us on \w+|advertisement|read more|related articles)[\s:.!…]*$",
    re.IGNORECASE,
)
# A label whose headlines under it are the web page's links to other articles, not the author's.
_RELATED = re.compile(
    r"^(related( articles| posts| stories| content| reading| coverage)?|read (more|next|also)|"
    r"you (may|might) also (like|enjoy)|recommended( for you| reading)?|more stories|"
    r"(lire|à lire) aussi|auch interessant|mehr zum thema|leer (más|también)|leggi anche|"
    r"читайте также)[\s:.!…]*$",
    re.IGNORECASE,
)
MAX_HEADLINES = 6  # under a "Related articles" label in the middle of the article


def strip_leftovers(lines: list[str]) -> list[str]:
    """Drop the web page around the article: a trailing run of share/subscribe/related/
    copyright lines (with the short lines among them), and furniture lines anywhere."""
    end = len(lines)
    while end and (not lines[end - 1].strip() or _LEFTOVER.match(lines[end - 1].strip())):
        end -= 1
    cut = end
    for i in range(end - 1, -1, -1):
        line = lines[i].strip()
        if _is_end_marker(line):
            cut = i
        elif len(line) > SHORT_LINE or ends_sentence(line):
            break  # the author's own text: the tail ends here
    while cut and (not lines[cut - 1].strip() or set(lines[cut - 1].strip()) <= set("-—–_=*~ ")):
        cut -= 1  # a rule or a "--" signature line left above the cut
    kept: list[str] = []
    after_furniture = False  # the share buttons listed under a "Share on" line go with it
    headlines = 0  # how many more headlines under a "Related articles" line go with it
    for line in lines[:cut]:
        text = line.strip()
        if _FURNITURE.match(text) or _RELATED.match(text):
            after_furniture = True
            headlines = MAX_HEADLINES if _RELATED.match(text) else 0
        elif after_furniture and headlines and text and _headline(text):
            headlines -= 1
        elif not (after_furniture and (not text or _LEFTOVER.match(text))):
            after_furniture, headlines = False, 0
            kept.append(line)
        elif not text:
            kept.append(line)
    return kept


def _headline(line: str) -> bool:
    """A line that reads as a link to another article: short, not a sentence (or a bare URL)."""
    return bool(URL.fullmatch(line)) or (len(line) <= SHORT_LINE and not ends_sentence(line))


def _is_end_marker(line: str) -> bool:
    """A label such as "Share on" or "© 2024 …", not a sentence that starts the same way."""
    if not _END_MARKER.match(line) or len(line) > 70:
        return False
    return bool(_FOOTER_SENTENCE.match(line)) or (", " not in line and not ends_sentence(line))


def ends_sentence(line: str) -> bool:
    return line.rstrip().rstrip(CLOSE_QUOTES + ")]*_").endswith((".", "?", "!", "…", "。", "！", "？"))
