"""Parsers of single config values: each takes the raw YAML value and returns the typed value, or raises
``Invalid`` with what is wrong (never a secret: secret keys have their own parsers in ``secrets.py``).

Every bound is written once, here, as a named value type (``INTERVAL``, ``AMOUNT_DIVISOR`` ...) that each key
and each collector setting with that meaning uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

T = TypeVar("T")
Parse = Callable[[Any], T]

ACCOUNT_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DAY = 86400.0


class Invalid(Exception):
    """One problem with one value; the loader adds the key path."""


def show(value: Any, limit: int = 60) -> str:
    """A short description of a (non-secret) value for a message: never a whole container, never long."""
    if isinstance(value, dict | list | tuple | set | frozenset):
        return f"a {type(value).__name__}"
    if isinstance(value, int) and abs(value) > 10**60:
        return "a number with more than 60 digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def seconds_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: Any, minimum: float = 0.0, maximum: float = math.inf, zero: bool = False) -> float:
    """Seconds from ``30s``, ``5m``, ``1h30m``, ``500ms`` or a plain number; finite, within bounds, and > 0
    unless ``zero`` allows 0."""
    wrong = f"expected a duration like 30s, 5m or 1h, got {show(value)}"
    if isinstance(value, bool):
        raise Invalid(wrong)
    if isinstance(value, int | float):
        seconds = float(value) if not isinstance(value, int) or abs(value) < 1e300 else math.inf
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART_RE.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise Invalid(wrong) from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise Invalid(wrong)
    if not math.isfinite(seconds):
        raise Invalid(f"must be a finite duration, got {show(value)}")
    if seconds < 0 or (seconds == 0 and not zero):
        raise Invalid(f"must be {'0 or more' if zero else 'positive'}, got {show(value)}")
    if seconds < minimum:
        raise Invalid(f"must be at least {seconds_text(minimum)}, got {show(value)}")
    if seconds > maximum:
        raise Invalid(f"must be at most {seconds_text(maximum)}, got {show(value)}")
    return seconds


def duration(minimum: float, maximum: float, zero: bool = False) -> Parse[float]:
    return lambda value: parse_duration(value, minimum, maximum, zero)


def _number(value: Any, kind: type[int] | type[float]) -> float:
    wanted = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise Invalid(f"expected {wanted}, got {show(value)}")
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise Invalid(f"expected {wanted}, got {show(value)}") from None
    if not isinstance(value, int | float):
        raise Invalid(f"expected {wanted}, got {show(value)}")
    if isinstance(value, int) and abs(value) > 10**300:
        raise Invalid(f"must be a finite number of sane size, got {show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"must be a finite number, got {show(value)}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise Invalid(f"expected an integer, got {show(value)}")
    return value


def _within(found: float, value: Any, minimum: float, maximum: float, text: Callable[[float], str]) -> None:
    if found < minimum:
        raise Invalid(f"must be at least {text(minimum)}, got {show(value)}")
    if found > maximum:
        raise Invalid(f"must be at most {text(maximum)}, got {show(value)}")


def integer(minimum: int, maximum: int) -> Parse[int]:
    def parse(value: Any) -> int:
        found = int(_number(value, int))
        _within(found, value, minimum, maximum, lambda bound: f"{bound:,.0f}")
        return found

    return parse


def number(minimum: float, maximum: float) -> Parse[float]:
    """A finite number with ``minimum < value <= maximum`` when minimum is 0, else ``minimum <= value``."""

    def parse(value: Any) -> float:
        found = float(_number(value, float))
        if minimum == 0 and found <= 0:
            raise Invalid(f"must be greater than 0, got {show(value)}")
        _within(found, value, minimum, maximum, lambda bound: f"{bound:g}")
        return found

    return parse


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Invalid(f"expected true or false, got {show(value)}")


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {type(value).__name__} {show(value)} (quote it)")
    return value


def one_of(choices: tuple[str, ...]) -> Parse[str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {show(value)}")
        return value

    return parse


def base_url(value: Any) -> str:
    text = string(value).strip().rstrip("/")
    expected = "expected an http:// or https:// URL"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise Invalid(f"{expected}, got {show(text)}") from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: the part before @ is a credential, and it would appear in every error message.
        raise Invalid("must not contain a user name or password (user:pass@): they would appear in logs")
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in text) \
            or not text.isprintable():
        raise Invalid(f"{expected}, got {show(text)}")
    if parts.query or parts.fragment:
        raise Invalid(f"must not contain a query (?...) or fragment (#...), got {show(text)}")
    try:
        httpx.URL(text).host  # noqa: B018 - what the client makes of it: a host that is not IDNA fails here
    except (httpx.InvalidURL, ValueError):
        raise Invalid(f"{expected}, got {show(text)}") from None
    return text


def account_id(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string of 32 hexadecimal characters (quote it), got {show(value)}")
    if not ACCOUNT_ID_RE.match(value):
        raise Invalid(f"{show(value)} is not an account id (32 hexadecimal characters)")
    return value


def regex_list(value: Any) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of regular expressions, got {show(value)}")
    patterns = []
    for item in value:
        try:
            patterns.append(re.compile(string(item)))
        except re.error as err:
            raise Invalid(f"{show(item)} is not a valid regular expression: {err}") from None
    return tuple(patterns)


# --- the value types, each with its bounds (docs/limits.md lists them) ---

INTERVAL = duration(1, 7 * DAY)  # poll.interval and every collector's interval
TIMEOUT = duration(0.1, 300)
REQUESTS_PER_SECOND = number(0.01, 1000)
MAX_RETRIES = integer(0, 20)
PER_PAGE = integer(1, 1000)
MAX_PAGES = integer(1, 10_000)
MAX_CONCURRENCY = integer(1, 256)
AMOUNT_DIVISOR = number(0, 1e9)  # above 0: every money value is divided by it
SHARD = integer(0, 9_999)
TOTAL_SHARDS = integer(1, 10_000)
