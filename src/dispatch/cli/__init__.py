"""The ``dispatch`` command: a thin Typer layer over the library.

Only this package knows about the terminal, Typer and ``.env`` files. Each module holds one
group of commands; each command builds settings, calls the library, prints a summary, and
maps any failure to one line on stderr and an exit code in one place
(:func:`dispatch.cli.common.reporting`). Commands import the library only when they run, so
``dispatch --help`` starts fast.
"""

from __future__ import annotations

from dispatch.cli import (  # noqa: F401 - each registers its commands
    auth,
    checking,
    inbound,
    keys,
    previewing,
    reconciling,
    sending,
    state,
    unsubscribing,
)
from dispatch.cli.common import app, main

# The order --help lists them in: the way a newsletter is made, then the inbox tools.
ORDER = ("init", "send", "preview", "status", "reconcile", "check", "serve", "inbound", "login", "logout")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name) if c.name in ORDER else len(ORDER))

__all__ = ["app", "main"]
