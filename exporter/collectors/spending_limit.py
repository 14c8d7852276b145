"""``spending-limit``: the account's spending limit and the spend in its current window.

Cloudflare retired the account-level spending limit in June 2026: it can no longer be created or changed
(``POST`` always answers 403), budgets are now spend-limit rules on each gateway (read by the gateway
collectors). A limit set before still applies until it is deleted, so it is still read.

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

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.errors import NotEnrolled
from exporter.collectors._wire import Malformed, boolean, known_label, number, optional_object, result_object, string
from exporter.collectors.base import ACC, NS, Acc, Collector, Family, Fetched, Route, SampleRequest, Sink, money
from exporter.collectors.usage_history import (
    fetch_usage,
    floor_to,
    spend_between,
    utc_day_start,
    utc_month_start,
    utc_week_start,
)
from exporter.config.model import MoneySettings
from exporter.samples import BULK_DAILY_LIMIT, DAY, DEMO_NAMES, HOUR, envelope

PATH = "billing/spending-limit"
WHERE = "spending-limit: result"
UNKNOWN = "unknown"

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
    """As the API sent it (amount in API units, cents); ``window_usage`` None when it was not computed. A
    duration or strategy the answer leaves out (or sends malformed) is "unknown": the amount is still
    exported, the window usage is not (its window is not known)."""

    enabled: bool
    amount: float | None = None
    duration: str = UNKNOWN
    strategy: str = UNKNOWN
    window_usage: float | None = None


def _lenient(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Malformed:
        return None


def parse_spending_limit(body: Any) -> SpendingLimit:
    """Only ``enabled`` is required; each part of ``config`` stands on its own."""
    result = result_object(body, "spending-limit")
    enabled = boolean(result, "enabled", WHERE, required=True)
    assert enabled is not None
    config = _lenient(lambda: optional_object(result, "config", WHERE))
    if config is None:
        return SpendingLimit(enabled)
    where = f"{WHERE}.config"
    duration = _lenient(lambda: string(config, "duration", where))
    strategy = _lenient(lambda: string(config, "strategy", where))
    # duration and strategy are label values: a value this exporter does not know is "other"
    return SpendingLimit(enabled, amount=_lenient(lambda: number(config, "amount", where)),
                         duration=UNKNOWN if duration is None else known_label(duration, DURATIONS),
                         strategy=UNKNOWN if strategy is None else known_label(strategy, STRATEGIES))


@dataclass(frozen=True)
class SpendingLimitSample:
    spending_limit: dict[str, Any] | None = None  # {amount, duration, strategy}
    spending_limit_enabled: bool = False


def _sample(account: str, now: float, started: float) -> SpendingLimitSample:
    """production: a monthly sliding limit far away; bulk: a daily fixed limit, its usage today at 85 %."""
    name = DEMO_NAMES.get(account)
    if name == "production":
        return SpendingLimitSample({"amount": 2_000_000, "duration": "monthly", "strategy": "sliding"}, True)
    if name == "bulk":
        return SpendingLimitSample({"amount": BULK_DAILY_LIMIT, "duration": "daily", "strategy": "fixed"}, True)
    return SpendingLimitSample()


def _answer(sample: SpendingLimitSample, _: SampleRequest) -> tuple[int, Any]:
    return 200, envelope({"config": sample.spending_limit, "enabled": sample.spending_limit_enabled})


class SpendingLimitCollector(Collector[MoneySettings, SpendingLimit]):
    name = "spending_limit"
    title = "spending limit"
    settings_type = MoneySettings
    routes = (Route("spending_limit", PATH, _answer),)
    families = (ENABLED, AMOUNT, WINDOW_USAGE)
    sample = staticmethod(_sample)
    now: Callable[[], float] = staticmethod(time.time)

    def requests_per_poll(self) -> int:
        return 2  # spending-limit + usage-history of the window (1 when the limit is off)

    async def fetch(self, api: AccountApi, previous: SpendingLimit | None) -> Fetched:
        limit = parse_spending_limit(await api.get(PATH, {}, accept_not_enrolled=True))
        request = window_request(limit.duration, limit.strategy, self.now()) if limit.enabled else None
        if request is None:
            return Fetched(data=limit)
        try:
            buckets = await fetch_usage(api, request.grouping, request.start, request.end)
        except NotEnrolled:  # usage-history says the account is not enrolled there: the usage stays absent
            return Fetched(data=limit)
        usage = spend_between(buckets, request.start, request.end)
        return Fetched(data=SpendingLimit(limit.enabled, limit.amount, limit.duration, limit.strategy, usage))

    def render(self, acc: Acc, data: SpendingLimit, out: Sink) -> None:
        out.add(ENABLED, acc, 1.0 if data.enabled else 0.0)
        if not data.enabled:
            return
        divisor = self.settings.amount_divisor
        if data.amount is not None:
            out.add(AMOUNT, (*acc, data.duration, data.strategy), money(data.amount, divisor))
        if data.window_usage is not None:
            out.add(WINDOW_USAGE, acc, money(data.window_usage, divisor))


COLLECTOR = SpendingLimitCollector
