"""Pictures and files that travel with an issue: images beside the article embedded as inline
parts (``cid:``), every image given a numeric width, ``--attach`` files, and the masthead logo.

Each part is encoded once per issue (the stdlib writes its headers: content type, RFC 2231
file names, base64 body) and then joined into every message unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import html as entities
import io
import mimetypes
import os
import re
import unicodedata
from dataclasses import dataclass
from email import policy
from email.message import MIMEPart
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from dispatch.compose.message import Attachment
from dispatch.errors import ConfigError, InputError
from dispatch.files import open_regular, read_regular

CONTENT_WIDTH = 536  # the built-in template's text column: 600 px less 32 px padding each side
IMAGE_BUDGET = 1_000_000  # embedded images past this make every message heavy: a warning
MAX_IMAGE_BYTES = 10_000_000
IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r"""\s([a-zA-Z-]+)=("[^"]*"|'[^']*'|[^\s>]+)""")
_SIZE_FRAGMENT = re.compile(r"#(\d{1,4})x(\d{1,4})$")
# ![alt](my chart.png): no picture in CommonMark, so it reaches the HTML as text (outside code).
_SPACED_IMAGE = re.compile(r"!\[[^\]\n<>]*\]\([^()<>\n]*?\S\s+\S[^()<>\n]*\)")
_CODE = re.compile(r"<(pre|code)\b.*?</\1>", re.DOTALL | re.IGNORECASE)
_NOT_IN_CID = re.compile(r"[^A-Za-z0-9]+")
# Characters that reorder or hide text: in a file name they can make "fdp.exe" read "exe.pdf".
_BIDI = dict.fromkeys(map(ord, "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


@dataclass(frozen=True)
class Image:
    """A picture read from a file: its bytes, type and size in pixels."""

    path: Path
    data: bytes
    content_type: str
    width: int
    height: int


def read_image(path: Path, what: str) -> Image:
    """An image file (PNG, JPEG, GIF or WebP, checked by decoding it), or InputError."""
    from PIL import Image as Pillow  # noqa: PLC0415 - only issues with images need Pillow
    from PIL import UnidentifiedImageError  # noqa: PLC0415

    data = read_regular(path, what, limit=MAX_IMAGE_BYTES)
    try:
        with Pillow.open(io.BytesIO(data)) as picture:
            kind, (width, height) = (picture.format or "").lower(), picture.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(
            f"{path}: the {what} is not a picture dispatch can embed (PNG, JPEG, GIF, WebP)"
        ) from err
    if kind not in IMAGE_TYPES:
        raise InputError(f"{path}: the {what} is {kind.upper() or 'unknown'}; use PNG, JPEG, GIF or WebP")
    return Image(path, data, IMAGE_TYPES[kind], width, height)


def file_name(name: str) -> str:
    """A file's name as a MIME part may carry it: control characters (CR, LF, NUL, tab…) become
    spaces, characters that reorder text are dropped, the rest is kept (non-ASCII is encoded per
    RFC 2231 by the stdlib)."""
    cleaned = "".join(
        " " if unicodedata.category(c) in {"Cc", "Zl", "Zp"} else c for c in name.translate(_BIDI)
    )
    return " ".join(unicodedata.normalize("NFC", cleaned).split()) or "attachment"


def _part(data: bytes, content_type: str, filename: str, disposition: str, cid: str = "") -> Attachment:
    part = MIMEPart(policy=policy.SMTP)
    maintype, _, subtype = content_type.partition("/")
    name = file_name(filename)
    part.set_content(data, maintype, subtype, disposition=disposition, filename=name, cid=cid or None)
    return Attachment(part.as_bytes())


def _cid(data: bytes, name: str, domain: str) -> str:
    """A Content-ID safe in a header and in a ``cid:`` URL, one per picture and name: a hash of
    both, and the name in ASCII letters and digits (``图表.png`` gives ``png``)."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape") + b"\0" + data, digest_size=8)
    readable = _NOT_IN_CID.sub("-", name).strip("-")[:40] or "image"
    return f"<{digest.hexdigest()}.{readable}@{domain}>"


def _attributes(tag: str) -> dict[str, str]:
    return {k.lower(): v.strip("\"'") for k, v in _ATTR.findall(tag)}


def _tag(attributes: dict[str, str]) -> str:
    return "<img " + " ".join(f'{k}="{v}"' for k, v in attributes.items()) + ">"


def _fit(width: int, height: int) -> tuple[int, int]:
    """A size no wider than the text column, keeping the picture's proportions."""
    if width <= CONTENT_WIDTH:
        return width, height
    return CONTENT_WIDTH, max(1, round(height * CONTENT_WIDTH / width))


@dataclass
class Embedder:
    """Rewrites an article's images: files in the article's folder become inline parts (each
    once, however often it is shown), and every image gets numeric ``width`` (and ``height``
    when known). A picture is never taken from outside that folder."""

    article: Path
    base: Path
    domain: str
    related: list[Attachment]
    warnings: list[str]
    _seen: dict[Path, tuple[str, Image]]
    previews: dict[str, str]  # cid: reference -> data: URI, so previews show the pictures

    @classmethod
    def for_article(cls, article: Path, domain: str) -> Embedder:
        return cls(article, article.resolve().parent, domain, [], [], {}, {})

    def embed(self, html: str) -> str:
        """``html`` with local images as ``cid:`` references and sizes on every image."""
        rewritten = _IMG.sub(self._one, html)
        for shown in _SPACED_IMAGE.findall(_CODE.sub("", html))[:3]:
            written = entities.unescape(shown)
            self.warnings.append(
                f"the article shows {written!r} as text: in Markdown a picture's name with spaces goes in "
                "<…> or takes %20 for each space: ![Chart](<my chart.png>) or ![Chart](my%20chart.png)"
            )
        total = sum(len(image.data) for _, image in self._seen.values())
        if total > IMAGE_BUDGET:
            self.warnings.append(
                f"the embedded images add {total / 1e6:.1f} MB to every message; link large pictures "
                "from https:// instead, or make them smaller"
            )
        return rewritten

    def _one(self, match: re.Match[str]) -> str:
        attrs = _attributes(match[0])
        src = attrs.get("src", "")
        given = (_number(attrs.get("width")), _number(attrs.get("height")))
        if src.lower().startswith(("https://", "http://")):
            width = min(given[0] or CONTENT_WIDTH, CONTENT_WIDTH)
            attrs["width"] = str(width)
            if given[0] and given[1]:
                attrs["height"] = str(round(given[1] * width / given[0]))
            else:
                attrs.pop("height", None)
            return _tag(attrs)
        cid, image = self.local(src)
        width, height = _fit(*(given if given[0] and given[1] else (image.width, image.height)))
        attrs |= {"src": f"cid:{cid.strip('<>')}", "width": str(width), "height": str(height)}
        return _tag(attrs)

    def local(self, src: str) -> tuple[str, Image]:
        """The Content-ID and picture of a file named relative to the article (embedded once)."""
        path = self.find(src)
        if path in self._seen:
            return self._seen[path]
        if not path.exists():
            raise InputError(f"{self.article}: the picture {src!r} does not exist ({path}); check its name")
        image = read_image(path, "image")
        cid = self.add(image)
        self._seen[path] = (cid, image)
        return cid, image

    def find(self, src: str) -> Path:
        """The file an image's ``src`` names: a URL path, so ``%20`` is a space and ``%C3%BC``
        a ``ü`` (as Markdown writes ``<my chart.png>`` and ``grafik-übersicht.png``); a name
        written in the other Unicode form (macOS) or with a literal ``%`` is found too."""
        written = entities.unescape(src)
        decoded = unquote(written, errors="surrogateescape")  # undecodable bytes: as the OS names them
        forms = (
            decoded,
            unicodedata.normalize("NFC", decoded),
            unicodedata.normalize("NFD", decoded),
            written,
        )
        paths = [self.inside(src, name) for name in dict.fromkeys(forms)]
        return next((path for path in paths if path.exists()), paths[0])

    def inside(self, src: str, name: str) -> Path:
        """``name`` (from ``src``) in the article's folder: never an absolute path, a ``..`` out
        of it or a symlink leading out of it (InputError naming the article and the picture)."""
        refuse = f"{self.article}: the picture {src!r}"
        if any(unicodedata.category(c) == "Cc" for c in name):
            raise InputError(f"{refuse} has control characters in its name; rename the file")
        if name.startswith(("/", "\\")) or os.path.isabs(name):
            raise InputError(
                f"{refuse} is an absolute path; pictures are named relative to the article: copy it "
                f"into {self.base} and name it from there"
            )
        try:
            path = (self.base / name).resolve()
        except (OSError, RuntimeError) as err:  # a symlink loop
            raise InputError(f"{refuse} cannot be followed (a symlink loop?); name the file itself") from err
        if not path.is_relative_to(self.base):
            how = "through a symlink " if _lexically_inside(self.base, name) else ""
            raise InputError(
                f"{refuse} leads {how}outside the article's folder ({self.base}); pictures must be in "
                "that folder or a folder in it: copy it there"
            )
        return path

    def add(self, image: Image) -> str:
        """Embed a picture (an article's, or the logo); returns its Content-ID."""
        cid = _cid(image.data, image.path.name, self.domain)
        if f"cid:{cid.strip('<>')}" in self.previews:
            return cid  # the same picture under the same name (the logo shown in the article too)
        self.related.append(_part(image.data, image.content_type, image.path.name, "inline", cid))
        self.previews[f"cid:{cid.strip('<>')}"] = data_uri(image)
        return cid


def _lexically_inside(base: Path, name: str) -> bool:
    """Whether ``name`` stays in ``base`` on paper (``..`` counted, symlinks not followed)."""
    return Path(os.path.normpath(base / name)).is_relative_to(base)


def _number(value: str | None) -> int:
    return int(value) if value and value.isdigit() and 0 < int(value) < 10_000 else 0


def attachments(paths: list[Path], limit: int) -> list[Attachment]:
    """``--attach`` files as attachment parts (type from the name, RFC 2231 names), together at
    most ``limit`` bytes (DISPATCH_MAX_MESSAGE_SIZE): a file too large is refused by its size,
    before any of it is read."""
    parts, total = [], 0
    for path in paths:
        with open_regular(path, "attachment") as handle:
            size = os.fstat(handle.fileno()).st_size
            total += size
            if size > limit or total > limit:
                what = f"is {_size(size)}" if size > limit else f"makes the attachments {_size(total)}"
                raise InputError(
                    f"{path}: the attachment {what}; messages are limited to {_size(limit)} "
                    "(DISPATCH_MAX_MESSAGE_SIZE): link to it instead"
                )
            try:
                data = handle.read(limit - total + size + 1)
            except OSError as err:
                raise InputError(f"{path}: cannot read the attachment: {err.strerror}") from err
        if len(data) > size:  # it grew while being read
            raise InputError(f"{path}: the attachment changed while it was read; try again")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts.append(_part(data, content_type, path.name, "attachment"))
    return parts


def _size(n: int) -> str:
    """A size as a person reads it (decimal units, as DISPATCH_MAX_MESSAGE_SIZE is written)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def logo(setting: str, organization: str, base: Path, embedder: Embedder) -> dict[str, Any] | None:
    """``DISPATCH_LOGO`` as the template's ``logo`` data; a local file is embedded.

    An https URL is used as it is, at the size given as ``#WIDTHxHEIGHT`` after it (default:
    200x60, the masthead's box); a local file is measured and embedded."""
    if not setting:
        return None
    alt = organization or "Logo"
    if setting.startswith("https://"):
        found = _SIZE_FRAGMENT.search(setting)
        width, height = (int(found[1]), int(found[2])) if found else (200, 60)
        url = setting[: found.start()] if found else setting
        return {"src": url, "alt": alt, "width": width, "height": height}
    if "://" in setting:
        raise ConfigError(f"DISPATCH_LOGO: {setting!r} must be an https:// URL or a local image file")
    path = Path(setting) if Path(setting).is_absolute() else base / setting
    image = read_image(path, "logo (DISPATCH_LOGO)")
    cid = embedder.add(image)
    return {"src": f"cid:{cid.strip('<>')}", "alt": alt, "width": image.width, "height": image.height}


def data_uri(image: Image) -> str:
    """The picture inline in a URI (for preview files, where cid: points nowhere)."""
    return f"data:{image.content_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def previewable(html: str, previews: dict[str, str]) -> str:
    """``html`` with its cid: pictures shown from data: URIs (for files a person opens)."""
    for cid, uri in previews.items():
        html = html.replace(cid, uri)
    return html
