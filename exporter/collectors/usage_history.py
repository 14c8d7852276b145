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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.client import MAX_ITEMS_PER_PAGE
from exporter.collectors._wire import Malformed, number, optional_result, timestamp
from exporter.collectors.base import ACC, NS, Acc, Collector, Family, Fetched, Route, SampleRequest, Sink, money
from exporter.config.model import MoneySettings
from exporter.samples import BULK_DAILY_LIMIT, DAY, DEMO_NAMES, HOUR, STAGING_BURN_PER_SECOND, envelope, error_envelope

PATH = "billing/usage-history"
WHERE = "usage-history"

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


# --- the wire format, shared with the spending limit's collector ---


@dataclass(frozen=True, slots=True)
class Bucket:
    """One usage-history entry: spend (API units) aggregated over [start, end), times in Unix seconds."""

    start: float
    end: float | None
    value: float


def parse_history(body: Any) -> tuple[Bucket, ...]:
    """``result.history`` as buckets. A null result or history is an empty history. Any malformed entry refuses
    the whole answer: a sum with a bucket left out would be a wrong number, not a smaller one."""
    result = optional_result(body, WHERE)
    if result is None:
        return ()
    for info in (result.get("pagination"), body.get("result_info")):
        if isinstance(info, dict) and info.get("has_more") is True:
            raise Malformed(f"{WHERE}: the answer says has_more: the history would be incomplete", "pagination")
    history = result.get("history")
    if history is None:
        return ()
    if not isinstance(history, list):
        raise Malformed(f"{WHERE}: result.history is not a list (got {type(history).__name__})")
    if len(history) > MAX_ITEMS_PER_PAGE:  # a month of days has 31 entries, 30 days of hours 721
        raise Malformed(f"{WHERE}: result.history has {len(history):,} entries, more than the limit of "
                        f"{MAX_ITEMS_PER_PAGE:,} per page")
    buckets = []
    for index, entry in enumerate(history):
        where = f"{WHERE}: result.history[{index}]"
        if not isinstance(entry, dict):
            raise Malformed(f"{where} is not an object")
        value = number(entry, "aggregated_value", where, required=True)
        start = timestamp(entry, "start_time", where, required=True)
        assert value is not None and start is not None
        buckets.append(Bucket(start, timestamp(entry, "end_time", where), value))
    return tuple(buckets)


async def fetch_usage(api: AccountApi, grouping: str, start: float, end: float) -> tuple[Bucket, ...]:
    """One usage-history request for [start, end) (Unix seconds, sent as milliseconds). Raises NotEnrolled
    when the account is not enrolled (404, or a non-auth 403/error answer), Malformed for an unusable answer."""
    params = {"value_grouping_window": grouping, "start_time": round(start * 1000), "end_time": round(end * 1000)}
    return parse_history(await api.get(PATH, params, accept_not_enrolled=True))


def spend_between(buckets: Iterable[Bucket], start: float, end: float) -> float:
    """Spend of the buckets that begin in [start, end). A bucket that begins before ``start`` is left out
    whole, one that begins inside is counted whole (it cannot end after ``end`` when ``end`` is a boundary)."""
    return math.fsum(b.value for b in buckets if start <= b.start < end)


# --- the sample accounts ---


def hourly(now: float, per_hour: Callable[[float], float], days: int = 35) -> list[tuple[float, float]]:
    """One usage event per past hour (the current one prorated), ``per_hour(hour_start)`` cents each."""
    first = (now // HOUR - days * 24) * HOUR
    events = []
    for hour in range(days * 24 + 1):
        at = first + hour * HOUR
        share = min(1.0, (now - at) / HOUR)
        if share > 0:
            events.append((at, round(per_hour(at) * share, 2)))
    return events


def _bulk_usage(now: float) -> list[tuple[float, float]]:
    """Earlier days 60-80% of bulk's daily spending limit; today exactly 85% of it so far, whatever the hour."""
    midnight = now // DAY * DAY
    earlier = hourly(midnight, lambda at: BULK_DAILY_LIMIT * (0.6 + 0.1 * (at // DAY % 3)) / 24)
    today = [(midnight + h * HOUR, min(HOUR, now - midnight - h * HOUR))
             for h in range(math.ceil((now - midnight) / HOUR))]
    elapsed = sum(seconds for _, seconds in today)
    return earlier + [(at, 0.85 * BULK_DAILY_LIMIT * seconds / elapsed) for at, seconds in today]


@dataclass(frozen=True)
class UsageSample:
    usage: list[tuple[float, float]] = field(default_factory=list)  # (unix seconds, cents): one hour each


def _sample(account: str, now: float, started: float) -> UsageSample:
    per_hour: dict[str, Callable[[float], float]] = {
        "production": lambda at: 1_200 + 400 * math.sin(at / DAY * 2 * math.pi),
        "staging": lambda at: STAGING_BURN_PER_SECOND * HOUR,
        "research": lambda at: 150.0,
    }
    name = DEMO_NAMES.get(account, "")
    if name == "bulk":
        return UsageSample(_bulk_usage(now))
    return UsageSample(hourly(now, per_hour[name]) if name in per_hour else [])


def usage_query(query: dict[str, str] | Any) -> tuple[str, int | None, int | None]:
    """(window, start ms, end ms) of a usage-history query; ValueError with the API's message."""
    window = query.get("value_grouping_window")
    if window not in ("day", "hour"):
        raise ValueError(f"value_grouping_window is required and must be day or hour, got {window!r}")
    bounds = []
    for name in ("start_time", "end_time"):
        raw = query.get(name)
        if raw is not None and not raw.isdigit():
            raise ValueError(f"Invalid value for {name}: {raw!r} is not a time in milliseconds")
        bounds.append(None if raw is None else int(raw))
    if bounds[0] is not None and bounds[1] is not None and bounds[1] < bounds[0]:
        raise ValueError("end_time must not be before start_time")
    return window, bounds[0], bounds[1]


def usage_history(usage: list[tuple[float, float]], window: str, start_ms: int | None,
                  end_ms: int | None) -> dict[str, Any]:
    """Hourly usage summed per UTC hour or day; events in [start, end) only; oldest first."""
    size = HOUR if window == "hour" else DAY
    sums: dict[int, float] = {}
    for at, value in usage:
        ms = at * 1000
        if (start_ms is None or ms >= start_ms) and (end_ms is None or ms < end_ms):
            bucket = int(at // size * size)
            sums[bucket] = sums.get(bucket, 0.0) + value
    return {"history": [{"id": f"mtrusg_{window}_{b}", "aggregated_value": round(v, 4),
                         "start_time": b * 1000, "end_time": int(b + size) * 1000}
                        for b, v in sorted(sums.items())]}


def _answer(sample: UsageSample, request: SampleRequest) -> tuple[int, Any]:
    try:
        window, start, end = usage_query(request.query)
    except ValueError as exc:
        return 400, error_envelope(1001, str(exc))
    return 200, envelope(usage_history(sample.usage, window, start, end))


# --- the collector ---


@dataclass(frozen=True)
class UsageAmounts:
    """Spend in API units so far in the current UTC day and month."""

    day: float
    month: float


class UsageHistoryCollector(Collector[MoneySettings, UsageAmounts]):
    name = "usage_history"
    title = "usage"
    settings_type = MoneySettings
    routes = (Route("usage_history", PATH, _answer),)
    families = (USAGE_AMOUNT,)
    sample = staticmethod(_sample)
    now: Callable[[], float] = staticmethod(time.time)

    async def fetch(self, api: AccountApi, previous: UsageAmounts | None) -> Fetched:
        now = self.now()
        day, month = utc_day_start(now), utc_month_start(now)
        buckets = await fetch_usage(api, "day", month, day + DAY)
        return Fetched(data=UsageAmounts(day=spend_between(buckets, day, day + DAY),
                                         month=spend_between(buckets, month, day + DAY)),
                       summary={"buckets": len(buckets)})

    def render(self, acc: Acc, data: UsageAmounts, out: Sink) -> None:
        divisor = self.settings.amount_divisor
        out.add(USAGE_AMOUNT, (*acc, "day"), money(data.day, divisor))
        out.add(USAGE_AMOUNT, (*acc, "month"), money(data.month, divisor))


COLLECTOR = UsageHistoryCollector
