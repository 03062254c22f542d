"""Each recipient's two bodies: a real render, inlined once per distinct document.

Every message is what rendering the templates for that recipient, then inlining the HTML with
premailer, gives. The work is shared where it provably gives the same:

- **Renders.** :mod:`dispatch.compose.uses` says which values decide anything beyond what is printed
  (and whether their truthiness or their text does). Recipients who agree on those share one
  render (a segment: ``{% if subscriber.plan == "member" %}`` makes one per plan); a template
  that only prints values is rendered once. The first time a shared render is used again, the
  recipient is rendered for real and compared, and any difference ends the sharing.
- **Inlining.** A render is read into its skeleton (:mod:`dispatch.compose.values`): the document with
  each plainly printed value replaced by a slot token. premailer inlines each distinct skeleton
  once (remembered in the state folder's cache); the result, split at the tokens, is encoded
  once (:class:`dispatch.compose.message.EncodedBody`), and a recipient's body is those pieces with the
  recipient's own text in the slots. A value that premailer's result could depend on (inside
  ``<style>``, in a ``class`` or ``style``, in an attribute a selector reads, an empty text…;
  see :mod:`dispatch.compose.slots`) is written into the document first, which makes another document
  to inline: exact, and slower.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import markupsafe

from dispatch.compose import inlining
from dispatch.compose.message import Body, EncodedBody
from dispatch.compose.slots import LAYOUT_VERSION, UNSAFE, analyse, checker
from dispatch.compose.uses import Uses
from dispatch.compose.values import Fields, Skeleton, Tokens

K = TypeVar("K")
V = TypeVar("V")
SHARED_RENDERS = 256  # segments remembered
DOCUMENTS = 64  # inlined documents kept encoded in memory
WRITTEN = 16  # new documents a run adds to the state folder's cache (a few segments)
CHECK_INLINED = 32  # documents the check before sending inlines (premailer's errors show there)
MANY_DOCUMENTS = 16  # different documents that make premailer's work worth a warning
SECONDS_PER_DOCUMENT = 0.04  # premailer's time for one more document of a typical issue


class LRU(Generic[K, V]):
    """A small least-recently-used mapping."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> V:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


@dataclass(frozen=True)
class Render:
    """One recipient's render of both templates, as skeletons."""

    html: Skeleton
    text: Skeleton


@dataclass
class Shared:
    """A render shared by the recipients of one segment; ``confirmed`` once a second
    recipient's own render was found to be the same."""

    render: Render
    confirmed: bool = False


@dataclass(frozen=True)
class Inlined:
    """One skeleton, inlined and encoded: ``keys`` names the slot of each slot number of
    ``body``, ``fits`` says for each which texts may fill it (HTML only), ``unsafe`` lists the
    slots no text may fill after inlining."""

    body: EncodedBody
    keys: tuple[str, ...]
    sources: tuple[tuple[int, str, bool], ...]  # per slot: derived print n (else -1), field, escaped
    fits: tuple[Callable[[str], bool], ...] = ()
    unsafe: frozenset[str] = frozenset()

    def fills(self, skeleton: Skeleton, values: Mapping[str, str]) -> list[str]:
        """The text of each slot of ``body`` for the recipient with ``values``."""
        derived, escape = skeleton.derived, markupsafe.escape
        return [
            derived[n] if n >= 0 else str(escape(values.get(f, ""))) if e else values.get(f, "")
            for n, f, e in self.sources
        ]


class Personaliser:
    """The per-recipient bodies of one issue (see the module's docstring).

    ``render`` renders both templates for a recipient's values (TemplateError naming the
    template line when it fails); ``uses`` says which values decide more than their print."""

    def __init__(
        self,
        render: Callable[[Mapping[str, str]], Render],
        uses: Uses,
        fields: Fields,
        tokens: Tokens,
        cache: Path | None = None,
    ) -> None:
        self._renderer = render
        self.renders = 0  # renders of the templates so far
        self.uses = uses
        self.fields = fields
        self.tokens = tokens
        self.cache = cache
        self.shared = True  # renders are shared by recipients with the same key
        self._renders: LRU[tuple[object, ...], Shared] = LRU(SHARED_RENDERS)
        self._html: LRU[str, Inlined] = LRU(DOCUMENTS)
        self._text: LRU[str, Inlined] = LRU(DOCUMENTS)
        self._whole: LRU[str, Inlined] = LRU(4)
        self.inlined = 0  # documents premailer worked on in this run
        self.surveyed = 0  # recipients the pre-send check rendered
        self._documents: set[int] = set()  # their distinct HTML skeletons (hashes, the first 100,000)
        self._missing: set[str] = set()
        self._slotted: LRU[str, bool] = LRU(DOCUMENTS)  # skeletons that print the link as it is
        slot = fields.names.index("unsubscribe_url") * 2
        self._link_tokens = (tokens.token(f"f{slot}"), tokens.token(f"f{slot + 1}"))

    @property
    def renders_each(self) -> bool:
        """Whether some recipients need a render of their own (the list must be checked)."""
        return self.uses.everything or bool(self.uses.modes) or not self.shared

    def _render(self, values: Mapping[str, str]) -> Render:
        self.renders += 1
        return self._renderer(values)

    def render(self, values: Mapping[str, str]) -> Render:
        """This recipient's render: a shared one when the templates allow it."""
        key = self.uses.key(values) if self.shared else None
        if key is None:
            return self._render(values)
        found = self._renders.get(key)
        if found is None:
            return self._renders.put(key, Shared(self._render(values))).render
        if not found.confirmed:  # once per segment: is the shared render this recipient's?
            own = self._render(values)
            found.confirmed = True
            if own != found.render:
                self.shared = False
                return own
        return found.render

    def bodies(self, values: Mapping[str, str]) -> tuple[Body, Body]:
        """This recipient's (HTML, text) bodies, each with the text of its slots."""
        done = self.render(values)
        return self._html_body(done.html, values), self._text_body(done.text, values)

    def texts(self, values: Mapping[str, str]) -> tuple[str, str]:
        """This recipient's HTML and text, decoded."""
        (html, html_fills), (text, text_fills) = self.bodies(values)
        return html.text(html_fills), text.text(text_fills)

    # -- HTML: inlined once per skeleton ----------------------------------------------------

    def _html_body(self, skeleton: Skeleton, values: Mapping[str, str]) -> Body:
        document, inlined, fills = self._resolve(skeleton, values)
        if inlined is None:  # the recipient's own document, without slots
            inlined = self._whole.get(document)
            if inlined is None:
                self.inlined += 1
                inlined = Inlined(EncodedBody([inlining.inline(document)], subtype="html"), (), ())
                self._whole.put(document, inlined)
        return inlined.body, fills

    def _resolve(
        self, skeleton: Skeleton, values: Mapping[str, str], *, inline: bool = True
    ) -> tuple[str, Inlined | None, list[str]]:
        """The document premailer inlines for this recipient: the skeleton, with the values that
        may not fill a slot after inlining written in (see :mod:`dispatch.compose.slots`); then that
        document inlined (None: it has no slot left, or ``inline`` is false and it was not
        inlined before) and the text of each of its slots."""
        text = skeleton.text
        while True:
            inlined = self._html.get(text)
            if inlined is None:
                if not inline:
                    return text, None, []
                inlined = self._html.put(text, self._inline(text))
            fill = inlined.fills(skeleton, values)
            bad = [k for k, f, fits in zip(inlined.keys, fill, inlined.fits, strict=True) if not fits(f)]
            if not (bad or inlined.unsafe):
                return text, inlined, fill
            bake = {*bad, *inlined.unsafe}
            fills = {k: skeleton.fill(k, values, self.fields) for k in self.tokens.keys(text)}
            if any(self.tokens.holds(fills[k]) for k in bake):  # it would read as a slot: no slots
                return self._written(text, fills, set(fills)), None, []
            text = self._written(text, fills, bake)

    def _written(self, text: str, fills: Mapping[str, str], keys: set[str]) -> str:
        """``text`` with the slots ``keys`` replaced by their ``fills``."""

        def fill(match: re.Match[str]) -> str:
            key = match.group(1).lower()
            return fills[key] if key in keys else match.group(0)

        return self.tokens.pattern.sub(fill, text)

    def _inline(self, skeleton: str) -> Inlined:
        def work(document: str) -> str:
            self.inlined += 1
            done = inlining.inline(document)
            return json.dumps({"layout": analyse(document, done, self.tokens), "html": done})

        write = self.inlined < WRITTEN  # past a few segments, documents of a few recipients each
        payload = json.loads(
            inlining.remembered(
                skeleton, self.cache, self.tokens.nonce, work, write=write, kind=LAYOUT_VERSION
            )
        )
        layout: dict[str, list[str]] = payload["layout"]
        parts, keys = self._split(payload["html"])
        unsafe = frozenset(k for k, kinds in layout.items() if UNSAFE in kinds or k not in keys)
        fits = tuple(checker(layout.get(k, [UNSAFE])) for k in keys)
        return Inlined(EncodedBody(parts, subtype="html"), keys, self._sources(keys), fits, unsafe)

    # -- text: split once per skeleton ------------------------------------------------------

    def _text_body(self, skeleton: Skeleton, values: Mapping[str, str]) -> Body:
        found = self._text.get(skeleton.text)
        if found is None:
            parts, keys = self._split(skeleton.text)
            found = Inlined(EncodedBody(parts, subtype="plain"), keys, self._sources(keys))
            self._text.put(skeleton.text, found)
        return found.body, found.fills(skeleton, values)

    def _sources(self, keys: tuple[str, ...]) -> tuple[tuple[int, str, bool], ...]:
        """Where each slot's text comes from: a derived print, or a field (escaped or not)."""
        found = []
        for key in keys:
            n = int(key[1:])
            found.append((n, "", False) if key[0] == "d" else (-1, self.fields.names[n // 2], bool(n % 2)))
        return tuple(found)

    def _split(self, text: str) -> tuple[list[str | int], tuple[str, ...]]:
        """``text`` as literal pieces and slot numbers, and the slot key of each number."""
        pieces = self.tokens.pattern.split(text)
        numbers: dict[str, int] = {}
        parts: list[str | int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                parts.append(numbers.setdefault(piece.lower(), len(numbers)))
            elif piece:
                parts.append(piece)
        return parts, tuple(numbers)

    # -- the check before sending ---------------------------------------------------------

    def survey(self, values: Mapping[str, str], link: str) -> None:
        """Render one recipient as the send will (TemplateError naming the template line when it
        fails), inline the HTML while few documents have been, and note what the run reports:
        a part that shows no unsubscribe ``link``, how many different documents there are."""
        done = self.render(values)
        self.surveyed += 1
        document, _, _ = self._resolve(done.html, values, inline=self.inlined < CHECK_INLINED)
        if len(self._documents) < 100_000:
            self._documents.add(hash(document))
        for part, shown in zip(("HTML", "text"), self._shows(done, link), strict=True):
            if not shown:
                self._missing.add(part)

    def html_size(self, values: Mapping[str, str]) -> int:
        """Bytes of this recipient's HTML as the summary shows it: inlined, each value that
        fills a slot counted as its slot token (about the length of an address)."""
        done = self.render(values)
        document, inlined, _ = self._resolve(done.html, values)
        if inlined is None:
            return len(inlining.inline(document).encode())
        return len(inlined.body.text([self.tokens.token(k) for k in inlined.keys]).encode())

    @property
    def missing_link(self) -> tuple[str, ...]:
        """The parts ("HTML", "text") that showed no unsubscribe link for some recipient."""
        return tuple(p for p in ("HTML", "text") if p in self._missing)

    def notes(self, rows: int) -> list[str]:
        """What the person running the send should know about its speed."""
        documents = len(self._documents)
        if documents <= MANY_DOCUMENTS:
            return []
        where = self.uses.where
        why = (
            f"the templates use subscriber values for more than printing them (first at {where})"
            if where
            else "subscriber values sit where CSS inlining reads them (a class, a style attribute…)"
        )
        seconds = documents * SECONDS_PER_DOCUMENT
        return [
            f"premailer runs for each of {documents:,} different HTML documents among {rows:,} "
            f"messages (about {seconds:,.0f} s): {why}"
        ]

    def _shows(self, done: Render, link: str) -> tuple[bool, bool]:
        """Whether a render's HTML and text show ``link``: printed as it is (its slot, looked
        for once per skeleton), or in the text itself."""
        found = []
        for skeleton, shown in ((done.html, str(markupsafe.escape(link))), (done.text, link)):
            slotted = self._slotted.get(skeleton.text)
            if slotted is None:
                slotted = self._slotted.put(skeleton.text, any(t in skeleton.text for t in self._link_tokens))
            found.append(slotted or any(shown in t for t in (skeleton.text, *skeleton.derived)))
        return found[0], found[1]
