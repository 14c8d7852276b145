"""``usage-history``: spend so far in the current UTC day and month.

One request per poll: ``value_grouping_window=day`` from the first day of the current UTC month (00:00) to the
next UTC midnight, in milliseconds. Day buckets start where the request starts (a UTC midnight), as Stripe's
meter event summaries group (an assumption, docs/billing.md), so the month-to-date sum and today's bucket
(spend so far today) are exact, to the API's own aggregation delay. An empty history in a
successful answer is the API saying "no spend": usage 0, not absent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.client import MAX_ITEMS_PER_PAGE
from exporter.collectors._wire import Malformed, number, optional_result, timestamp
from exporter.collectors.base import ACC, NS, AccountApi, Family, Fetched, Sink, money
from exporter.config import UsageHistorySettings

HOUR = 3600.0
DAY = 86400.0
PATH = "usage-history"

USAGE_AMOUNT = Family(f"{NS}_usage_amount", "AI Gateway spend so far in the current UTC day or month (window), "
                      "in major currency units (usage-history / amount_divisor).", (*ACC, "window"))


# --- UTC calendar helpers (Unix seconds in, Unix seconds out) ---


def floor_to(t: float, step: float) -> float:
    return math.floor(t / step) * step


def utc_day_start(t: float) -> float:
    return floor_to(t, DAY)


def utc_week_start(t: float) -> float:
    """00:00 UTC of the Monday of t's week."""
    day = utc_day_start(t)
    return day - datetime.fromtimestamp(day, UTC).weekday() * DAY


def utc_month_start(t: float) -> float:
    return datetime.fromtimestamp(t, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


# --- the wire format, shared with spending_limit ---


@dataclass(frozen=True, slots=True)
class Bucket:
    """One usage-history entry: spend (API units) aggregated over [start, end), times in Unix seconds."""

    start: float
    end: float | None
    value: float


def parse_history(body: Any) -> tuple[Bucket, ...]:
    """``result.history`` as buckets. A null result or history is an empty history. Any malformed entry refuses
    the whole answer: a sum with a bucket left out would be a wrong number, not a smaller one."""
    result = optional_result(body, PATH)
    if result is None:
        return ()
    for info in (result.get("pagination"), body.get("result_info")):
        if isinstance(info, dict) and info.get("has_more") is True:
            raise Malformed(f"{PATH}: the answer says has_more: the history would be incomplete", "pagination")
    history = result.get("history")
    if history is None:
        return ()
    if not isinstance(history, list):
        raise Malformed(f"{PATH}: result.history is not a list (got {type(history).__name__})")
    if len(history) > MAX_ITEMS_PER_PAGE:  # a month of days has 31 entries, 30 days of hours 721
        raise Malformed(f"{PATH}: result.history has {len(history):,} entries, more than the limit of "
                        f"{MAX_ITEMS_PER_PAGE:,} per page")
    buckets = []
    for index, entry in enumerate(history):
        where = f"{PATH}: result.history[{index}]"
        if not isinstance(entry, dict):
            raise Malformed(f"{where} is not an object")
        value = number(entry, "aggregated_value", where, required=True)
        start = timestamp(entry, "start_time", where, required=True)
        assert value is not None and start is not None
        buckets.append(Bucket(start, timestamp(entry, "end_time", where), value))
    return tuple(buckets)


async def fetch_usage(api: AccountApi, grouping: str, start: float, end: float) -> tuple[Bucket, ...] | None:
    """One usage-history request for [start, end) (Unix seconds, sent as milliseconds); None when the account
    is not enrolled (404, or a non-auth 403/error answer). Raises Malformed for an unusable answer."""
    params = {"value_grouping_window": grouping, "start_time": round(start * 1000), "end_time": round(end * 1000)}
    body = await api.get(PATH, params, accept_not_enrolled=True)
    return None if body is None else parse_history(body)


def spend_between(buckets: Iterable[Bucket], start: float, end: float) -> float:
    """Spend of the buckets that begin in [start, end). A bucket that begins before ``start`` is left out
    whole, one that begins inside is counted whole (it cannot end after ``end`` when ``end`` is a boundary)."""
    return math.fsum(b.value for b in buckets if start <= b.start < end)


# --- the collector ---


@dataclass(frozen=True)
class UsageAmounts:
    """Spend in API units; ``as_of`` is the poll time the windows were computed for."""

    day: float
    month: float
    day_start: float
    month_start: float
    as_of: float
    buckets: int


class UsageHistoryCollector:
    endpoint: str = "usage_history"
    families: tuple[Family, ...] = (USAGE_AMOUNT,)

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now

    def requests_per_poll(self) -> int:
        return 1

    async def fetch(self, api: AccountApi) -> Fetched:
        now = self._now()
        day, month = utc_day_start(now), utc_month_start(now)
        end = day + DAY
        try:
            buckets = await fetch_usage(api, "day", month, end)
        except Malformed as err:
            raise api.fail(err.reason, str(err)) from None
        if buckets is None:
            return Fetched(data=None, enrolled=False)
        return Fetched(data=UsageAmounts(
            day=spend_between(buckets, day, end), month=spend_between(buckets, month, end),
            day_start=day, month_start=month, as_of=now, buckets=len(buckets),
        ))

    def render(self, acc: tuple[str, str], data: UsageAmounts | None, settings: UsageHistorySettings,
               out: Sink) -> None:
        if data is None:
            return
        divisor = settings.amount_divisor
        out.add(USAGE_AMOUNT, (*acc, "day"), money(data.day, divisor))
        out.add(USAGE_AMOUNT, (*acc, "month"), money(data.month, divisor))
