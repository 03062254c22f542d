"""``dispatch init``: a newsletter folder to start from — a private ``.env`` naming every
setting, an example list and an example issue (and, if asked, the built-in templates to edit).

A dry run works in the new folder at once. Nothing is ever overwritten: if any file it would
write is already there, it refuses before writing anything.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from dispatch.errors import InputError
from dispatch.files import read_regular
from dispatch.render import HTML_TEMPLATE, TEXT_TEMPLATE, builtin_template_dir

ENV_FILE, ARTICLE_FILE, TEMPLATE_FOLDER = ".env", "article.md", "templates"
SUBSCRIBERS_FILE = "subscribers.csv"
TEMPLATE_FILES = (HTML_TEMPLATE, TEXT_TEMPLATE, "style.css")
PRIVATE, PUBLIC = 0o600, 0o644  # .env and the list hold secrets and addresses; the rest does not

ENV_TEXT = """\
# dispatch settings for this newsletter, written by `dispatch init` on {today}.
# Readable by you only (0600): it holds the unsubscribe secret, and later the SMTP password.
# Real environment variables beat this file; command-line options beat both.
#
# As written, a dry run works at once:  dispatch send article.md --dry-run
# Before a real send, change every value marked EDIT (they are examples at example.org).
# A line that starts with # is off: remove the # to set it. An empty value means the default.

# --- The relay: the SMTP server that delivers the mail ------------------------------------
# EDIT: 127.0.0.1 with no security is a stand-in that lets a dry run work (a dry run opens
# no connection). For a real send, your provider's relay, for example:
#   DISPATCH_SMTP_HOST=smtp.example.com
#   DISPATCH_SMTP_PORT=587
#   DISPATCH_SMTP_SECURITY=starttls
# Security: starttls (port 587), ssl (port 465), or none (port 25, only for a relay on this
# machine: dispatch never sends a password in clear text over the network).
DISPATCH_SMTP_HOST=127.0.0.1
DISPATCH_SMTP_PORT=25
DISPATCH_SMTP_SECURITY=none
# EDIT: the login your provider gave you (empty: no login).
DISPATCH_SMTP_USER=
DISPATCH_SMTP_PASSWORD=
# A private CA certificate (PEM) for an internal relay; the system's trust store and
# SSL_CERT_FILE apply anyway. Certificates are always verified.
# DISPATCH_SMTP_CA_FILE=relay-ca.pem
# Seconds to wait for a connection and for each reply (default 30).
# DISPATCH_SMTP_TIMEOUT=30
# The name given in EHLO (default: this machine's name), and the largest message dispatch
# will send (default 10MB).
# DISPATCH_EHLO_NAME=mail.example.org
# DISPATCH_MAX_MESSAGE_SIZE=10MB
# Microsoft 365 or Google Workspace log in with OAuth2 instead of a password: set
# DISPATCH_SMTP_USER to the mailbox, the three lines below, then run `dispatch login` once.
# The presets fill in the relay, endpoints and scope; a client secret is only for sending
# from cron without a login (Microsoft's app-only SMTP) or for a Google desktop client.
# DISPATCH_SMTP_AUTH=oauth2
# DISPATCH_OAUTH_PROVIDER=microsoft
# DISPATCH_OAUTH_CLIENT_ID=00000000-0000-0000-0000-000000000000
# DISPATCH_OAUTH_TENANT=example.onmicrosoft.com
# DISPATCH_OAUTH_CLIENT_SECRET=
# For DISPATCH_OAUTH_PROVIDER=custom (or to override a preset):
# DISPATCH_OAUTH_DEVICE_URL=https://login.example.org/oauth2/devicecode
# DISPATCH_OAUTH_TOKEN_URL=https://login.example.org/oauth2/token
# DISPATCH_OAUTH_AUTHORIZE_URL=https://login.example.org/oauth2/authorize
# DISPATCH_OAUTH_REVOKE_URL=https://login.example.org/oauth2/revoke
# DISPATCH_OAUTH_SCOPE="https://outlook.office.com/SMTP.Send offline_access"

# --- The sender ---------------------------------------------------------------------------
# EDIT: who the newsletter is from (an address at your own domain, which your relay may send
# for), and where replies go.
DISPATCH_FROM="Example Society <newsletter@example.org>"
DISPATCH_REPLY_TO=editors@example.org
# EDIT: who sends it, and a postal address: both shown in every footer (CAN-SPAM and other
# laws ask for the address). The address below is a fake example.
DISPATCH_ORGANIZATION="The Example Society"
DISPATCH_POSTAL_ADDRESS="{postal}"

# --- The list and unsubscribing -----------------------------------------------------------
# The default subscriber list, relative to this file (-s FILE overrides it).
DISPATCH_SUBSCRIBERS={subscribers}
# EDIT: the newsletter's identity (List-Id), a name under your domain. An unsubscribe applies
# to this list only, so choose it once and keep it.
DISPATCH_LIST_ID=news.example.org
# EDIT: the public https address of `dispatch serve` (behind your HTTPS reverse proxy). Each
# message's link carries a sealed token in place of {{token}}, naming the reader and the list.
DISPATCH_UNSUBSCRIBE_URL=https://example.org/unsubscribe/{{token}}
# A mailbox for unsubscribe requests by email, too; set it only if someone acts on each one.
# DISPATCH_UNSUBSCRIBE_MAILTO=unsubscribe@example.org
# The key that seals unsubscribe tokens: generated for this newsletter, at random. Keep it
# secret, and keep it: links in issues already sent stop working if it changes.
DISPATCH_UNSUBSCRIBE_SECRET={secret}

# --- DKIM signing (all three, or none) ----------------------------------------------------
# Signs each message so receivers can tell it is yours. Make a key and its DNS record with:
#   dispatch dkim keygen --selector s2026 --domain example.org
# DISPATCH_DKIM_KEY_FILE=dkim-s2026.pem
# DISPATCH_DKIM_SELECTOR=s2026
# DISPATCH_DKIM_DOMAIN=example.org

# --- DNS ----------------------------------------------------------------------------------
# The resolver `dispatch check --dns` asks about SPF, DMARC and DKIM (default: the system's).
# DISPATCH_DNS_SERVER=127.0.0.1:53

# --- The unsubscribe endpoint (dispatch serve) --------------------------------------------
# Where it listens; put your HTTPS reverse proxy in front (defaults 127.0.0.1 and 8025).
# DISPATCH_SERVE_HOST=127.0.0.1
# DISPATCH_SERVE_PORT=8025

# --- State --------------------------------------------------------------------------------
# The journal (who was sent what, so each reader gets an issue once), the suppression list
# and locks. Default: $XDG_STATE_HOME/dispatch, usually ~/.local/state/dispatch.
# DISPATCH_STATE_DIR=~/.local/state/dispatch
# normal (default), or full to sync every journal write to disk at once (slower).
# DISPATCH_JOURNAL_SYNC=normal

# --- Throughput ---------------------------------------------------------------------------
# Parallel connections (default 1), a rate limit (default none; also 600/min or 5000/h), and
# at most this many messages in any 24 hours across runs (default 0: no limit). Your
# provider's limits come first: `dispatch check` knows some.
# DISPATCH_CONNECTIONS=1
# DISPATCH_RATE=20/s
# DISPATCH_DAILY_LIMIT=2000
# Messages per connection before it is re-opened (default 0: no limit).
# DISPATCH_MAX_PER_CONNECTION=100
# Retries within a run of a temporary failure (default 3), and the first one's delay in
# seconds (default 1; it doubles each time).
# DISPATCH_RETRIES=3
# DISPATCH_RETRY_DELAY=1
# Stop the run when more than this share of at least 20 recipients is refused (default 0.5).
# DISPATCH_MAX_FAILURE_RATIO=0.5
# Days after the first attempt when a deferred reader counts as failed (default 5).
# DISPATCH_GIVE_UP_DAYS=5

# --- Looks --------------------------------------------------------------------------------
# The language, when the article's front matter has no lang: (default: detected from the text).
# DISPATCH_LANGUAGE=en
# A masthead logo: an https URL, or an image file here (embedded in each message).
# DISPATCH_LOGO=logo.png
# The web version of each issue; adds a "View in browser" link.
# DISPATCH_WEB_URL=https://example.org/newsletter/
# The Chromium for --png and --pdf proofs (default: the system's chromium, if found).
# DISPATCH_CHROMIUM=/usr/bin/chromium
"""
POSTAL = "1 Example Street, 00000 Example Town (an example address: replace it)"

SUBSCRIBERS_TEXT = """\
email,name,status
ada@example.org,Ada Lovelace,subscribed
grace@example.com,Grace Hopper,subscribed
katherine@example.com,"Johnson, Katherine",subscribed
alan@example.org,Alan Turing,unsubscribed
hedy@example.org,Hedy Lamarr,
"""

ARTICLE_TEXT = """\
---
title: A new home for the Example Society
subject: "A new meeting place, a river walk and the book vote"
preheader: From next month we meet at the library, the walks are back, and the book vote is open.
date: {today}
issue: 1
lang: en
motto: A town is only as good as the evenings its people spend together.
motto_attribution: Margaret Hale, founding member
---

Thank you for reading the first issue of our newsletter. Once a month it brings you what the
society has been up to, what is coming next, and one thing worth reading. It is short on
purpose: five minutes with a coffee.

## A new home

From next month we meet in the reading room of the town library, on the first Tuesday of
each month at 19:00. The room has step-free access, and the café downstairs stays open for us.

## Coming up

- **Book evening**, the first Tuesday: *Middlemarch*, chapters 1 to 20.
- **River walk**, the Saturday after, 10:00 from the old bridge, about two hours.
- **Garden visit**, at the end of the month, with tea afterwards.

Everything is free, and guests are welcome. The full programme is on
[our events page](https://example.org/events).

## Your vote

Three books are on the shortlist for next season. Tell us your favourite by replying to this
email before the end of the month.

> "I came for the books and stayed for the people. Best Tuesday of the month."
> — Tom, a member since last autumn

See you at the library,

The Example Society committee
"""


@dataclass(frozen=True)
class Scaffold:
    """What :func:`scaffold` wrote, and what to do next."""

    folder: Path
    written: tuple[Path, ...]
    commands: tuple[str, ...]  # the next commands to run, in order
    then: str = (
        "Then edit .env (the values marked EDIT: your relay, sender, unsubscribe address and postal "
        "address), article.md and subscribers.csv, and send for real without --dry-run."
    )

    def report(self) -> str:
        """A few lines for the terminal: what was written, and the next commands."""
        names = ", ".join(str(p.relative_to(self.folder)) for p in self.written)
        steps = "".join(f"\n  {command}" for command in self.commands)
        return f"Wrote {names} in {self.folder}\nNext:{steps}\n{self.then}"


def scaffold(folder: Path, *, templates: bool = False) -> Scaffold:
    """Create a newsletter folder in ``folder`` (created if need be). InputError, with nothing
    written, if a file it would write is there already (even as a symlink)."""
    day, secret = datetime.date.today().isoformat(), secrets.token_urlsafe(32)
    env = ENV_TEXT.format(today=day, postal=POSTAL, subscribers=SUBSCRIBERS_FILE, secret=secret)
    files = [
        (ENV_FILE, env.encode(), PRIVATE),
        (SUBSCRIBERS_FILE, SUBSCRIBERS_TEXT.encode(), PRIVATE),
        (ARTICLE_FILE, ARTICLE_TEXT.format(today=day).encode(), PUBLIC),
    ]
    folders = [folder, folder / TEMPLATE_FOLDER] if templates else [folder]
    for name in TEMPLATE_FILES if templates else ():
        data = read_regular(builtin_template_dir() / name, "template")
        files.append((f"{TEMPLATE_FOLDER}/{name}", data, PUBLIC))
    for path in [*folders, *(folder / name for name, _, _ in files)]:
        is_folder = path in folders  # DIR may be a symlink to a folder; templates/ may not
        if os.path.lexists(path) and (
            not is_folder or not path.is_dir() or (path != folder and path.is_symlink())
        ):
            what = "is a file or a symlink, not a folder" if is_folder else "already exists"
            raise InputError(
                f"{path}: {what}; dispatch init never overwrites: move it or choose another folder"
            )
    written = _write_all(folders, [(folder / name, data, mode) for name, data, mode in files])
    return Scaffold(folder, written, _next_commands(folder, templates=templates))


def _write_all(folders: list[Path], files: list[tuple[Path, bytes, int]]) -> tuple[Path, ...]:
    """Create every file with its mode from the start (O_EXCL: never replaces, never follows a
    symlink); if one fails, remove what this call created and raise InputError."""
    made: list[Path] = []
    try:
        for directory in folders:
            if not directory.is_dir():
                directory.mkdir(parents=True)
                made.append(directory)
        for path, data, mode in files:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            made.append(path)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    except OSError as err:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                if path in folders:
                    path.rmdir()
                else:
                    path.unlink()
        why = "already exists; dispatch init never overwrites" if isinstance(err, FileExistsError) else ""
        raise InputError(
            f"{err.filename or folders[0]}: {why or f'cannot write it: {err.strerror}'}"
        ) from err
    return tuple(path for path, _, _ in files)


def _next_commands(folder: Path, *, templates: bool) -> tuple[str, ...]:
    """``cd DIR`` (unless it is the current folder), then a check and a dry run of the example."""
    template = f" --template {TEMPLATE_FOLDER}" if templates else ""
    commands = (
        f"dispatch check {ARTICLE_FILE}{template}",
        f"dispatch send {ARTICLE_FILE} --dry-run{template}",
    )
    with contextlib.suppress(OSError):
        if folder.resolve() == Path.cwd().resolve():
            return commands
    return (f"cd {shlex.quote(str(folder))}", *commands)
