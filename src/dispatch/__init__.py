"""dispatch: a command-line newsletter mailer.

The library comes first; ``dispatch.cli`` is a thin Typer layer over it. The names below are
imported on first use, so that ``dispatch --help`` does not load the whole library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_PUBLIC = {
    "Article": "dispatch.article",
    "load_article": "dispatch.article",
    "RunSummary": "dispatch.campaign",
    "plan_issue": "dispatch.campaign",
    "SendOptions": "dispatch.delivery",
    "run_send": "dispatch.delivery",
    "DispatchError": "dispatch.errors",
    "ExitCode": "dispatch.errors",
    "run_dry": "dispatch.preview",
    "RenderedIssue": "dispatch.render",
    "render_issue": "dispatch.render",
    "Settings": "dispatch.settings",
    "Subscriber": "dispatch.subscribers",
    "SubscriberList": "dispatch.subscribers",
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
    from dispatch.article import Article, load_article
    from dispatch.campaign import RunSummary, plan_issue
    from dispatch.delivery import SendOptions, run_send
    from dispatch.errors import DispatchError, ExitCode
    from dispatch.preview import run_dry
    from dispatch.render import RenderedIssue, render_issue
    from dispatch.settings import Settings
    from dispatch.subscribers import Subscriber, SubscriberList


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'dispatch' has no attribute {name!r}")
