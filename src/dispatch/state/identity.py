"""A newsletter's identity across the changes a sender makes over the years.

An unsubscribe is recorded for the list id its token names. When the list id changes (a new
``DISPATCH_LIST_ID``, or a renamed organisation or From domain that the default list id is made
from), unsubscribes from every issue sent before must still be honoured. Each send records the
list id it used, with the settings file it came from and a digest of its unsubscribe secret.
List ids sent from the same settings file are one newsletter (a rename), and so are sends under
one list id; a send skips whoever unsubscribed from any list id of its newsletter, so it
suppresses more widely after a change, never less. Another newsletter kept in the same state
folder (its own settings file and list id) stays apart: its readers' choices are its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_KEY = b"dispatch list identity v1"


def secret_digest(secret: str) -> str:
    """A one-way, keyed digest of an unsubscribe secret: names it in the state, never reveals it."""
    return hashlib.blake2b(secret.encode(), key=_KEY, digest_size=12).hexdigest()


@dataclass(frozen=True)
class Use:
    """One (list id, settings file, secret digest) a send of the state folder used."""

    list_id: str
    settings_file: str  # "" when the settings came from the environment alone
    secret: str


@dataclass(frozen=True)
class ListIdentity:
    """The list ids an unsubscribe may name for this newsletter, and what changed."""

    list_ids: tuple[str, ...]  # the current one first
    notes: tuple[str, ...] = ()  # a changed list id or secret, for the person running it


def _groups(uses: Iterable[Use]) -> dict[str, str]:
    """Union-find over list ids ("L:") and settings files ("F:"): each node's root."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for use in uses:
        mine = root("L:" + use.list_id)
        if use.settings_file:
            other = root("F:" + use.settings_file)
            if other != mine:
                parent[other] = mine
    return {node: root(node) for node in list(parent)}


def identify(current: Use, accepted: Sequence[str], known: Iterable[Use]) -> ListIdentity:
    """This send's list ids (``current.list_id`` and its earlier ids) given the uses ``known`` to
    the state; ``accepted``: digests of the current secret and the earlier ones still accepted."""
    known = list(known)
    roots = _groups([*known, current])
    mine = roots["L:" + current.list_id]
    earlier = sorted(
        node[2:] for node, top in roots.items()
        if top == mine and node.startswith("L:") and node[2:] != current.list_id
    )  # fmt: skip
    notes: list[str] = []
    seen_lists = {use.list_id for use in known}
    if known and current.list_id not in seen_lists:
        if earlier:
            notes.append(
                f"the list id is now {current.list_id} (before: {', '.join(earlier)}); readers who "
                "unsubscribed from the earlier list ids stay unsubscribed"
            )
        else:
            notes.append(
                f"list {current.list_id} is new to this state folder: unsubscribes recorded here for "
                f"{', '.join(sorted(seen_lists)[:5])} do not apply to it (another newsletter). If it is the "
                "same newsletter, send it with the settings file it was sent with before"
            )
    ours = {current.list_id, *earlier}  # (a secret changed with the list id loses those links too)
    lost = {use.secret for use in known if use.list_id in ours and use.secret} - set(accepted)
    if lost:
        notes.append(
            "the unsubscribe secret changed: links in issues sent before stop working unless the "
            "earlier secret is kept in DISPATCH_UNSUBSCRIBE_PREVIOUS_SECRETS (unsubscribes recorded so "
            "far still apply)"
        )
    return ListIdentity((current.list_id, *earlier), tuple(notes))
