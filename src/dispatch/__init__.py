"""dispatch: a command-line newsletter mailer.

The library comes first; ``dispatch.cli`` is a thin Typer layer over it. The names below are
imported on first use, so that ``dispatch --help`` does not load the whole library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_PUBLIC = {
    "Article": "dispatch.content.article",
    "load_article": "dispatch.content.article",
    "RunSummary": "dispatch.send.summary",
    "plan_issue": "dispatch.compose.issue",
    "SendOptions": "dispatch.send.delivery",
    "run_send": "dispatch.send.delivery",
    "DispatchError": "dispatch.errors",
    "ExitCode": "dispatch.errors",
    "run_dry": "dispatch.proof.dryrun",
    "RenderedIssue": "dispatch.compose.render",
    "render_issue": "dispatch.compose.render",
    "Settings": "dispatch.settings",
    "Subscriber": "dispatch.lists.subscribers",
    "SubscriberList": "dispatch.lists.subscribers",
}

__all__ = [
    "Article",
    "DispatchError",
    "ExitCode",
    "RenderedIssue",
    "RunSummary",
    "SendOptions",
    "Settings",
    "Subscriber",
    "SubscriberList",
    "__version__",
    "load_article",
    "plan_issue",
    "render_issue",
    "run_dry",
    "run_send",
]

if TYPE_CHECKING:
    from dispatch.compose.issue import plan_issue
    from dispatch.compose.render import RenderedIssue, render_issue
    from dispatch.content.article import Article, load_article
    from dispatch.errors import DispatchError, ExitCode
    from dispatch.lists.subscribers import Subscriber, SubscriberList
    from dispatch.proof.dryrun import run_dry
    from dispatch.send.delivery import SendOptions, run_send
    from dispatch.send.summary import RunSummary
    from dispatch.settings import Settings


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dispatch' has no attribute {name!r}")
