"""dispatch: a command-line newsletter mailer.

The library comes first; ``dispatch.cli`` is a thin Typer layer over it.
"""

__version__ = "0.1.0"

from dispatch.article import Article, load_article
from dispatch.campaign import RunSummary, plan_issue
from dispatch.delivery import SendOptions, run_send
from dispatch.errors import DispatchError, ExitCode
from dispatch.preview import run_dry
from dispatch.render import RenderedIssue, render_issue
from dispatch.settings import Settings
from dispatch.subscribers import Subscriber, SubscriberList

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
