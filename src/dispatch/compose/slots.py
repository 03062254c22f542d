"""Where a skeleton's slots sit, as premailer sees the document, and which values may fill them.

premailer parses the HTML with lxml (libxml2), applies the CSS of its ``<style>`` elements to
the elements the selectors match, and writes the tree out again. Inlining a skeleton once and
putting each recipient's values into the result gives exactly what inlining that recipient's
own document gives, provided nothing premailer does depends on the values:

- a slot in element text or a comment, filled with escaped text that is not blank (an empty
  text node changes how libxml2 lays the tree out and indents it). No inlined selector reads
  text: premailer leaves rules with a pseudo-class (``:contains``, ``:empty``…) in ``<style>``,
  but for ``:first-child``, ``:last-child`` and ``:nth-child``;
- a slot in a quoted attribute value that no inlined selector, ``style``, ``class`` or ``id``
  reads, filled with escaped text; in ``href``, ``src`` and ``action``, which libxml2
  percent-encodes on the way out, only with characters it leaves alone;
- never a slot inside ``<style>`` or ``<script>``, in a tag or attribute name, at either end
  of the document, or one that premailer drops or copies.

:func:`analyse` classifies each slot of a skeleton; :func:`fits` says whether a recipient's
text may fill it. Any other value is written into the document before premailer sees it
("baked"), which is always exact, and only slower.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from dispatch.compose.values import Tokens

LAYOUT_VERSION = "layout 1"  # change it when the analysis changes: remembered layouts are then redone
TEXT, ATTRIBUTE, URI, COMMENT, UNSAFE = "text", "attribute", "uri", "comment", "unsafe"
_RAW_TEXT = frozenset({"style", "script"})  # libxml2 reads their content as it is
# percent-encoded by libxml2 on output (and <a name>); the others in case another version does
_URI_ATTRIBUTES = frozenset({"href", "src", "action", "background", "cite", "longdesc", "usemap", "poster"})
_READ_ATTRIBUTES = frozenset({"style", "class", "id", "lang", "xml:lang", "type", "data-premailer"})
_INLINED_PSEUDO = (":first-child", ":last-child", ":nth-child")  # premailer inlines no other
# text as markupsafe escapes it: no markup character, only its entities, no control character
_PLAIN = r"[^<>\"'&\x00-\x08\x0b-\x1f\x7f\r\ufffe\uffff\ud800-\udfff]*"
_ESCAPED = re.compile(rf"{_PLAIN}(?:&(?:amp|lt|gt|#34|#39);{_PLAIN})*")
_FLAT = _PLAIN.replace("\\x08", "\\x08\\t\\n")  # and neither tab nor line break (in an attribute)
_ATTRIBUTE_SAFE = re.compile(rf"{_FLAT}(?:&(?:amp|lt|gt|#34|#39);{_FLAT})*")
# what libxml2 writes out of href, src and action as it is (it percent-encodes the rest)
_URL = r"[A-Za-z0-9\-_.!~*()@/:=?;#%,+]*"
_URI_SAFE = re.compile(rf"{_URL}(?:(?:&amp;(?=[A-Za-z0-9_-]*=)|&(?:lt|gt|#39);){_URL})*")


def css_sensitivity(sheets: Iterable[str]) -> frozenset[str]:
    """The attributes that the selectors premailer inlines can read (besides ``class``, ``id``
    and ``style``). premailer inlines no rule whose selector has a pseudo-class other than
    ``:first-child``, ``:last-child`` or ``:nth-child`` (it leaves them in ``<style>``), and no
    ``*`` selector; every other selector is read, ``@media`` blocks included (conservatively)."""
    css = " ".join(sheets)
    css = re.sub(r"/\*.*?\*/", " ", css, flags=re.DOTALL)
    css = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', css)
    names: set[str] = set()
    for prelude in re.findall(r"([^{};]*)\{", css):
        for part in prelude.split(","):
            selector = part.strip()
            if not selector or selector.startswith("@") or "*" in selector:
                continue
            if ":" in selector and ":" + selector.split(":", 1)[1] not in _INLINED_PSEUDO:
                continue
            found = re.findall(r"\[\s*([^\s~|^$*!=\]]+(?:\|[^\s~|^$*!=\]]+)?)", selector)
            names.update(n.split("|")[-1].lower() for n in found)
    return frozenset(names)


def _premailer_sheets(root: Any) -> list[str]:
    """The CSS premailer inlines: ``<style>`` elements for all media, not marked ignore."""
    sheets = []
    for style in root.iter("style"):
        media = style.get("media")
        if (media and media not in ("all", "screen")) or style.get("data-premailer") == "ignore":
            continue
        sheets.append(style.text or "")
    return sheets


def _text_class(tag: Any) -> str:
    if not isinstance(tag, str) or tag.lower() in _RAW_TEXT:
        return UNSAFE
    return TEXT


def _attribute_class(tag: str, name: str, read: frozenset[str]) -> str:
    tag, name = tag.lower(), name.lower()
    if tag in ("style", "link") or name in _READ_ATTRIBUTES or name in read:
        return UNSAFE
    if name in _URI_ATTRIBUTES or (name == "name" and tag == "a"):
        return URI
    return ATTRIBUTE


def analyse(skeleton: str, inlined: str, tokens: Tokens) -> dict[str, list[str]]:
    """Each slot key of ``skeleton`` with the kinds of place it takes (``unsafe`` when it may
    not be filled after inlining); ``inlined`` is premailer's output for it."""
    from lxml import etree  # noqa: PLC0415 - heavy: only when a new skeleton is inlined

    parser = etree.HTMLParser()
    root = etree.fromstring(skeleton.strip(), parser)
    css = css_sensitivity(_premailer_sheets(root))
    kinds: dict[str, set[str]] = defaultdict(set)
    found: Counter[str] = Counter()
    in_attributes: Counter[str] = Counter()

    def note(text: str | None, kind: str, counter: Counter[str] | None = None) -> None:
        for key in tokens.keys(text or ""):
            found[key] += 1
            kinds[key].add(kind)
            if counter is not None:
                counter[key] += 1

    for element in root.iter():
        tag = element.tag
        if isinstance(tag, str):
            note(tag, UNSAFE)
            for name, value in element.attrib.items():
                note(name, UNSAFE)
                note(value, _attribute_class(tag, name, css), in_attributes)
            note(element.text, _text_class(tag))
        else:
            note(element.text, COMMENT if tag is etree.Comment else UNSAFE)
        if element.tail:
            parent = element.getparent()
            note(element.tail, _text_class(parent.tag if parent is not None else None))
    quoted = _quoted(skeleton, tokens, etree, parser)
    stripped = skeleton.strip()
    ends = {k for k in tokens.keys(stripped) if stripped.lower().startswith(tokens.token(k)) or
            stripped.lower().endswith(tokens.token(k))}  # fmt: skip
    given, written = Counter(tokens.keys(skeleton)), Counter(tokens.keys(inlined))
    for key, count in given.items():
        if found[key] != count or written[key] != count or quoted[key] != in_attributes[key] or key in ends:
            kinds[key].add(UNSAFE)
    return {key: sorted(kinds[key]) for key in given}


def _quoted(skeleton: str, tokens: Tokens, etree: Any, parser: Any) -> Counter[str]:
    """Per slot, the attribute values that hold it inside quotes: with each token doubled
    around a space, an unquoted one splits into two attributes."""
    doubled = tokens.pattern.sub(lambda m: f"{m.group(0)} {m.group(0)}", skeleton)
    pair = re.compile(rf"({tokens.pattern.pattern}) \1", re.IGNORECASE)
    counted: Counter[str] = Counter()
    for element in etree.fromstring(doubled.strip(), parser).iter():
        if isinstance(element.tag, str):
            for value in element.attrib.values():
                counted.update(m.group(2).lower() for m in pair.finditer(value))
    return counted


def _text_fits(fill: str) -> bool:
    return bool(fill.strip()) and _ESCAPED.fullmatch(fill) is not None


def _comment_fits(fill: str) -> bool:
    return _text_fits(fill) and "-" not in fill and "!" not in fill


def _attribute_fits(fill: str) -> bool:
    return _ATTRIBUTE_SAFE.fullmatch(fill) is not None


def _uri_fits(fill: str) -> bool:
    return _URI_SAFE.fullmatch(fill) is not None


def _never(fill: str) -> bool:
    return False


_CHECKS: dict[str, Callable[[str], bool]] = {
    TEXT: _text_fits, COMMENT: _comment_fits, ATTRIBUTE: _attribute_fits, URI: _uri_fits, UNSAFE: _never,
}  # fmt: skip


def checker(kinds: Iterable[str]) -> Callable[[str], bool]:
    """Whether a recipient's text (as the document shows it) may fill a slot of these kinds
    after inlining."""
    checks = [_CHECKS[k] for k in sorted(set(kinds))]
    if len(checks) == 1:
        return checks[0]
    return lambda fill: all(check(fill) for check in checks)


def fits(fill: str, kinds: Iterable[str]) -> bool:
    """Whether ``fill`` may go into a slot of these kinds after inlining."""
    return checker(kinds)(fill)
