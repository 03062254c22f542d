"""Times in the state folder: read from what an imported file holds, and shown back whatever a
store holds, so that no value written once makes a later command fail.

Stored times are whole seconds since 1970-01-01 UTC. An imported time is kept when it is a
real moment between 1970 and the import itself; anything else (year 0 or 99999, a negative or
enormous number, NaN, an offset that pushes a date past the calendar's ends) is recorded as
the time of the import. A stored time outside what a date can show (a store written by another
program) is shown as the nearest date that can be shown.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_SHOWN = -62_135_596_800  # 0001-01-01T00:00:00Z, the first second a datetime can show
LAST_SHOWN = 253_402_300_799  # 9999-12-31T23:59:59Z, the last one


def _seconds_of(text: str) -> float | None:
    """Seconds since the epoch that ``text`` states (ISO 8601, naive read as UTC, or a plain
    number), or None when it states none."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return (parsed - EPOCH).total_seconds()  # exact for any year and offset, unlike timegm
    except (OverflowError, ValueError):
        return None


def imported_time(text: str, now: int) -> int:
    """The time an imported row gives (``time``, ``UNSUB_TIME``…), in whole seconds; ``now``
    when the cell is empty, unreadable, before 1970 or later than ``now``."""
    value = _seconds_of(text.strip()) if text.strip() else None
    if value is None or not 0 <= value <= now:
        return now
    return int(value)


def iso_utc(seconds: object) -> str:
    """A stored time in ISO 8601, UTC (``2024-05-01T09:30:00Z``), whatever the store holds."""
    value: float | int
    if isinstance(seconds, int):
        value = seconds  # compared exactly, however large
    else:
        try:
            value = float(seconds)  # type: ignore[arg-type]  # a store written elsewhere may hold text
        except (TypeError, ValueError):
            value = 0
        if math.isnan(value):
            value = 0
    clamped = int(min(max(value, FIRST_SHOWN), LAST_SHOWN))
    return (EPOCH + timedelta(seconds=clamped)).isoformat(timespec="seconds").replace("+00:00", "Z")
