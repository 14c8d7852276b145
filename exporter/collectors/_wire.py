"""Strict readers for the billing endpoints' JSON: unknown keys are ignored, a present value of the wrong
type (or a non-finite number) is refused, an optional value that is missing or null is ``None`` (absent)."""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Any, cast

from exporter.cloudflare.body import REFUSED, is_number

MS_THRESHOLD = 1e11  # a Unix time below this is seconds (1e11 s is the year 5138), at or above it milliseconds


class Malformed(Exception):
    """The answer cannot be used; the collector raises ``api.fail(reason, message)`` with it."""

    def __init__(self, message: str, reason: str = "invalid_response") -> None:
        super().__init__(message)
        self.reason = reason


def optional_result(body: Any, endpoint: str) -> dict[str, Any] | None:
    """The envelope's ``result`` object; ``None`` for a null or missing result."""
    result = body.get("result") if isinstance(body, dict) else None
    if result is not None and not isinstance(result, dict):
        raise Malformed(f"{endpoint}: result is not an object (got {type(result).__name__})")
    return result


def result_object(body: Any, endpoint: str) -> dict[str, Any]:
    """The envelope's ``result`` object; a null or missing result is refused."""
    result = optional_result(body, endpoint)
    if result is None:
        raise Malformed(f"{endpoint}: result is not an object (got NoneType)")
    return result


def _present(obj: dict[str, Any], key: str, where: str, required: bool) -> Any:
    """``obj[key]``; None when missing or null, which is refused when ``required``."""
    value = obj.get(key)
    if value is None and required:
        raise Malformed(f"{where}.{key} is missing")
    return value


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a JSON number (not a boolean) that is a finite float: the one test of every reader."""
    try:
        return is_number(value) and math.isfinite(float(value))
    except OverflowError:
        return False


def finite(value: Any, where: str) -> float:
    """A JSON number as a finite float. ``true``/``false`` are not numbers; NaN, infinities and numbers too
    large for a float are refused."""
    if value is REFUSED:
        raise Malformed(f"{where} is not a finite number (NaN, an infinity, or too large for a float)")
    if not is_number(value):
        raise Malformed(f"{where} is not a number (got {type(value).__name__})")
    if not is_finite(value):
        raise Malformed(f"{where} is not a finite number or too large for a float")
    return float(value)


def number(obj: dict[str, Any], key: str, where: str, required: bool = False) -> float | None:
    value = _present(obj, key, where, required)
    return None if value is None else finite(value, f"{where}.{key}")


def timestamp(obj: dict[str, Any], key: str, where: str, required: bool = False) -> float | None:
    """A Unix time in seconds, sent as seconds or milliseconds (a value below 1e11 is seconds)."""
    value = number(obj, key, where, required)
    if value is None:
        return None
    return value if abs(value) < MS_THRESHOLD else value / 1000.0


def _typed(obj: dict[str, Any], key: str, where: str, required: bool, kind: type, what: str) -> Any:
    value = _present(obj, key, where, required)
    if value is not None and not isinstance(value, kind):
        raise Malformed(f"{where}.{key} is not {what} (got {type(value).__name__})")
    return value


def string(obj: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    return cast(str | None, _typed(obj, key, where, required, str, "a string"))


def boolean(obj: dict[str, Any], key: str, where: str, required: bool = False) -> bool | None:
    return cast(bool | None, _typed(obj, key, where, required, bool, "a boolean"))


def optional_object(obj: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    return cast(dict[str, Any] | None, _typed(obj, key, where, False, dict, "an object"))


# A label value from the API must be short and take few distinct values: it repeats on every sample of its
# series, and every new value is a new series in Prometheus (a hostile or broken answer must not flood it).
OTHER = "other"
MAX_CURRENCY_CHARS = 16  # an ISO 4217 code has 3; the invoices' reader refuses a longer one too


def known_label(value: str, known: Collection[str]) -> str:
    """``value`` lowercased when it is one of ``known``, else ``"other"``."""
    folded = value.strip().lower()
    return folded if folded in known else OTHER


def bounded_label(value: str, pattern: re.Pattern[str]) -> str:
    """``value`` lowercased when it matches ``pattern`` whole, else ``"other"``."""
    folded = value.strip().lower()
    return folded if pattern.fullmatch(folded) else OTHER


def currency(value: str, where: str) -> str:
    """A currency code as a label value: stripped, lowercased; empty or implausibly long is refused."""
    code = value.strip().lower()
    if not code:
        raise Malformed(f"{where} is empty")
    if len(code) > MAX_CURRENCY_CHARS:
        raise Malformed(f"{where} is {len(code):,} characters long, more than a currency code can be "
                        f"({MAX_CURRENCY_CHARS})")
    return code
