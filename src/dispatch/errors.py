"""The one exception family and the exit codes it maps to.

Library code raises a ``DispatchError`` subclass with a one-line message that names the
file, row or setting at fault and says what to do; ``dispatch.cli`` turns it into a line on
stderr and the subclass's exit code, in one place.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; documented in the README and in ``dispatch --help``."""

    OK = 0
    INCOMPLETE = 1  # a failure while sending: some recipients failed, were deferred or left pending
    BAD_INPUT = 2  # bad usage, bad input or bad settings: nothing was sent
    ABORTED = 3  # the campaign was stopped early (authentication, quota, server down, failures)
    LOCKED = 4  # another run of the same campaign holds the lock
    INTERRUPTED = 130  # SIGINT/SIGTERM: messages in flight were finished and recorded


class DispatchError(Exception):
    """Base of every error dispatch reports to a user."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class InputError(DispatchError):
    """An article, subscriber list or other input file cannot be used."""


class ConfigError(DispatchError):
    """A setting is missing or malformed."""


class TemplateError(DispatchError):
    """A template failed to load or render."""


class SendError(DispatchError):
    """Something went wrong while talking to the SMTP server."""

    exit_code = ExitCode.INCOMPLETE


class AbortError(SendError):
    """The campaign must stop now: continuing would only burn through the list."""

    exit_code = ExitCode.ABORTED


class LockedError(DispatchError):
    """Another process is running the same campaign."""

    exit_code = ExitCode.LOCKED
