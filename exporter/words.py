"""Times and durations in plain words, for the status page and what collectors add to it."""

from __future__ import annotations

import time

MIN_TIME = -62135596800.0  # 0001-01-01T00:00:00Z
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


def gmtime(at: float) -> time.struct_time:
    """time.gmtime of any finite time: an API's ``created: 1e300`` (a finite number, so accepted) is shown as
    the year 9999 instead of failing the page with OverflowError."""
    return time.gmtime(min(max(at, MIN_TIME), MAX_TIME))


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        hours, rest = divmod(round(seconds / 60), 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{seconds / 86400:.0f} days"


def utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", gmtime(at))


def date(at: float) -> str:
    return time.strftime("%Y-%m-%d", gmtime(at))


def short_utc(at: float, now: float) -> str:
    """The time of day alone when it is today (UTC), else the date too."""
    same_day = gmtime(at)[:3] == gmtime(now)[:3]
    return time.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M UTC", gmtime(at))


def ago(at: float, now: float) -> str:
    return "just now" if now - at < 2 else f"{duration(now - at)} ago"


def dollars(amount: float) -> str:
    return f"{amount:,.2f} USD"
