"""``spending-limit``: the account's spending limit and the spend in its current window.

Per poll: one ``spending-limit`` request, and when the limit is enabled with a known duration and strategy, one
``usage-history`` request for the current window (2 requests; 1 when the limit is off). The endpoint stays
self-contained: it does not read what the usage_history collector fetched.

Windows (UTC; an assumption, Cloudflare documents only "fixed: resets on the window boundary, sliding: rolling"):
- fixed:   since 00:00 UTC today (daily), Monday 00:00 UTC (weekly), the 1st 00:00 UTC (monthly). Requested with
           day buckets from the window start to the next UTC midnight: exact.
- sliding: the last 24 hours (daily), 7 days (weekly), 30 days (monthly). Requested with hour buckets from the hour
           that contains the window start to the end of the current hour. The first bucket straddles the window
           start and is counted whole, so the value is an upper bound that overstates by at most the spend of
           that one hour before the window start (never understates).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.collectors._wire import (
    Malformed,
    boolean,
    known_label,
    number,
    optional_object,
    result_object,
    string,
)
from exporter.collectors.base import ACC, NS, AccountApi, Family, Fetched, Sink, money
from exporter.collectors.usage_history import (
    DAY,
    HOUR,
    fetch_usage,
    floor_to,
    spend_between,
    utc_day_start,
    utc_month_start,
    utc_week_start,
)
from exporter.config import SpendingLimitSettings

PATH = "spending-limit"

ENABLED = Family(f"{NS}_spending_limit_enabled", "1 if the account's AI Gateway spending limit is enabled, else 0.",
                 ACC)
AMOUNT = Family(f"{NS}_spending_limit_amount", "The spending limit per window, in major currency units "
                "(spending-limit amount / amount_divisor); duration daily|weekly|monthly, strategy fixed|sliding.",
                (*ACC, "duration", "strategy"))
WINDOW_USAGE = Family(f"{NS}_spending_limit_window_usage", "Spend in the spending limit's current window, in major "
                      "currency units, from usage-history (fixed: exact; sliding: at most one hour's spend over).",
                      ACC)

FIXED_START: dict[str, Callable[[float], float]] = {
    "daily": utc_day_start, "weekly": utc_week_start, "monthly": utc_month_start,
}
SLIDING_LENGTH = {"daily": DAY, "weekly": 7 * DAY, "monthly": 30 * DAY}
DURATIONS = frozenset(FIXED_START)
STRATEGIES = frozenset({"fixed", "sliding"})


@dataclass(frozen=True)
class UsageRequest:
    grouping: str  # day | hour
    start: float  # Unix seconds, aligned on the grouping
    end: float


def window_request(duration: str, strategy: str, now: float) -> UsageRequest | None:
    """The usage-history request that covers the limit's current window at ``now``; None for a duration or
    strategy this exporter does not know (the usage is then absent, the limit itself still exported)."""
    if strategy == "fixed" and duration in FIXED_START:
        return UsageRequest("day", FIXED_START[duration](now), utc_day_start(now) + DAY)
    if strategy == "sliding" and duration in SLIDING_LENGTH:
        return UsageRequest("hour", floor_to(now - SLIDING_LENGTH[duration], HOUR), floor_to(now, HOUR) + HOUR)
    return None


@dataclass(frozen=True)
class SpendingLimit:
    """As the API sent it (amounts in API units, cents); ``window_usage`` None when it was not computed."""

    enabled: bool
    amount: float | None = None
    duration: str | None = None
    strategy: str | None = None
    window_usage: float | None = None
    window_start: float | None = None  # the start of the summed range (the straddling hour for sliding)


def parse_spending_limit(body: Any) -> SpendingLimit:
    result = result_object(body, PATH)
    where = f"{PATH}: result"
    enabled = boolean(result, "enabled", where, required=True)
    assert enabled is not None
    config = optional_object(result, "config", where)
    if config is None:
        return SpendingLimit(enabled)
    duration = string(config, "duration", f"{where}.config", required=True)
    strategy = string(config, "strategy", f"{where}.config", required=True)
    assert duration is not None and strategy is not None
    return SpendingLimit(  # duration and strategy are label values: a value this exporter does not know is "other"
        enabled,
        amount=number(config, "amount", f"{where}.config", required=True),
        duration=known_label(duration, DURATIONS),
        strategy=known_label(strategy, STRATEGIES),
    )


class SpendingLimitCollector:
    endpoint: str = "spending_limit"
    families: tuple[Family, ...] = (ENABLED, AMOUNT, WINDOW_USAGE)

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now

    def requests_per_poll(self) -> int:
        return 2  # spending-limit + usage-history of the window (1 when the limit is off)

    async def fetch(self, api: AccountApi) -> Fetched:
        try:
            body = await api.get(PATH, {}, accept_not_enrolled=True)
            if body is None:
                return Fetched(data=None, enrolled=False)
            limit = parse_spending_limit(body)
            if not (limit.enabled and limit.duration and limit.strategy):
                return Fetched(data=limit)
            request = window_request(limit.duration, limit.strategy, self._now())
            if request is None:
                return Fetched(data=limit)
            buckets = await fetch_usage(api, request.grouping, request.start, request.end)
        except Malformed as err:
            raise api.fail(err.reason, str(err)) from None
        if buckets is None:  # usage-history says the account is not enrolled there: the usage stays absent
            return Fetched(data=limit)
        usage = spend_between(buckets, request.start, request.end)
        return Fetched(data=SpendingLimit(limit.enabled, limit.amount, limit.duration, limit.strategy,
                                          usage, request.start))

    def render(self, acc: tuple[str, str], data: SpendingLimit | None, settings: SpendingLimitSettings,
               out: Sink) -> None:
        if data is None:
            return
        out.add(ENABLED, acc, 1.0 if data.enabled else 0.0)
        if not data.enabled:
            return
        divisor = settings.amount_divisor
        if data.amount is not None and data.duration is not None and data.strategy is not None:
            out.add(AMOUNT, (*acc, data.duration, data.strategy), money(data.amount, divisor))
        if data.window_usage is not None:
            out.add(WINDOW_USAGE, acc, money(data.window_usage, divisor))
