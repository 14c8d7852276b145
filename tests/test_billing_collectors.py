"""The four billing endpoint collectors (credit_balance, spending_limit, usage_history, invoice_preview): each
fetch() driven by a fake AccountApi serving wire-format bodies (billing-family.md), each render() into a
recording Sink."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

import pytest

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.errors import ApiError, NotEnrolled
from exporter.collectors import REGISTRY, base
from exporter.collectors.base import Collector, Family, Fetched
from exporter.collectors.credit_balance import CreditBalanceCollector, CreditBalanceSettings
from exporter.collectors.invoice_preview import InvoicePreviewCollector, InvoicePreviewSettings
from exporter.collectors.spending_limit import SpendingLimitCollector
from exporter.collectors.usage_history import UsageHistoryCollector
from exporter.config.model import AccountConfig, Config, Credentials, MoneySettings
from exporter.samples import DAY, HOUR

ACCOUNT = AccountConfig(id="0" * 32, name="acme", type="all", credentials=Credentials(api_token="t"))
ACC = (ACCOUNT.id, ACCOUNT.name)
NOT_ENROLLED = object()  # the fake's stand-in for a 404 / non-auth 403 answer


def at(text: str) -> float:
    """'2026-11-25T10:30' (UTC) -> Unix seconds."""
    return datetime.fromisoformat(text + "+00:00").timestamp()


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def envelope(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def wire(text: str) -> dict[str, Any]:
    """A body as the client's JSON decoder hands it over (NaN and Infinity included)."""
    body: dict[str, Any] = json.loads(text)
    return body


Answer = Any  # a body, NOT_ENROLLED, or a function of the query parameters returning one of those


class FakeApi:
    """A test double of AccountApi: answers by path (without its ``billing/``), records every call and failure."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.account = ACCOUNT
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[str] = []

    async def get(self, path_suffix: str, params: dict[str, Any], accept_not_enrolled: bool = False) -> dict[str, Any]:
        name = path_suffix.removeprefix("billing/")
        self.calls.append((name, dict(params)))
        answer = self.answers[name]
        if callable(answer):
            answer = answer(params)
        if answer is NOT_ENROLLED:
            if not accept_not_enrolled:
                raise self.fail("api_error", "HTTP 404")
            raise NotEnrolled("HTTP 404")
        assert isinstance(answer, dict)
        return answer

    async def get_pages(self, path_suffix: str, params: dict[str, Any], items_key: str) -> tuple[list[Any], int]:
        raise AssertionError("no billing collector besides invoice_history pages")

    def fail(self, reason: str, message: str) -> ApiError:
        self.failures.append(reason)
        return ApiError(reason, message)

def usage_server(events: Sequence[tuple[float, float]], seconds: bool = False) -> Callable[[dict[str, Any]], Any]:
    """usage-history as Stripe-backed meter summaries: buckets of the requested grouping over [start_time,
    end_time) (which must be aligned on the grouping), each the sum of the spend events inside it."""

    def answer(params: dict[str, Any]) -> dict[str, Any]:
        step = HOUR if params["value_grouping_window"] == "hour" else DAY
        start, end = params["start_time"] / 1000, params["end_time"] / 1000
        assert start % step == 0 and end % step == 0, "start_time/end_time not aligned on the grouping"
        history = []
        t = start
        while t < end:
            value = sum(amount for when, amount in events if t <= when < t + step)
            if value:
                history.append({"id": f"u{int(t)}", "aggregated_value": value,
                                "start_time": int(t) if seconds else ms(t),
                                "end_time": int(t + step) if seconds else ms(t + step)})
            t += step
        return envelope({"history": history})

    return answer


class Recorder:
    """A Sink that keeps every sample and refuses families the collector did not declare, wrong label counts
    and duplicate series."""

    def __init__(self, declared: Sequence[Family]) -> None:
        self.declared = set(declared)
        self.samples: dict[tuple[str, tuple[str, ...]], float] = {}

    def add(self, family: Family, labels: Sequence[str], value: float) -> None:
        assert family in self.declared, f"{family.name} is not in the collector's families"
        assert len(labels) == len(family.labels), family.name
        assert family.name.startswith("cloudflare_ai_gateway_")
        key = (family.name.removeprefix("cloudflare_ai_gateway_"), tuple(labels))
        assert key not in self.samples, f"duplicate series {key}"
        assert math.isfinite(value)
        self.samples[key] = value

    def get(self, name: str, *extra: str) -> float | None:
        return self.samples.get((name, (*ACC, *extra)))

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def make(kind: type[Collector[Any, Any]], settings: Any, now: float | None = None) -> Collector[Any, Any]:
    collector = kind(settings, Config())
    if now is not None:
        collector.now = lambda: now  # type: ignore[attr-defined]
    return collector


def poll(kind: type[Collector[Any, Any]], answers: dict[str, Answer], settings: Any, now: float | None = None
         ) -> tuple[Fetched, Recorder, FakeApi]:
    api = FakeApi(answers)
    collector = make(kind, settings, now)
    fetched = asyncio.run(base.fetch(collector, cast(AccountApi, api), None))
    out = Recorder(collector.families)
    if fetched.data is not None:
        collector.render(ACC, fetched.data, out)
    assert len(api.calls) <= collector.requests_per_poll()
    return fetched, out, api


def refused(kind: type[Collector[Any, Any]], answers: dict[str, Answer], reason: str = "invalid_response") -> str:
    api = FakeApi(answers)
    with pytest.raises(ApiError) as caught:
        asyncio.run(base.fetch(make(kind, kind.settings_type()), cast(AccountApi, api), None))
    assert caught.value.reason == reason
    assert api.failures == [reason]  # counted once, through api.fail
    return str(caught.value)


# --- credit_balance ---

CB = CreditBalanceSettings()


def credit(**result: Any) -> dict[str, Answer]:
    return {"credit-balance": envelope(result)}


def test_a_draining_balance_is_exported_in_dollars_poll_after_poll() -> None:
    seen = []
    for balance in (1250, 830, 95.5):
        fetched, out, _ = poll(CreditBalanceCollector, credit(
            balance=balance, has_default_payment_method=False, payment_method=None, topup_config=None,
            first_topup_success=True), CB)
        assert fetched.enrolled
        seen.append(out.get("credit_balance"))
        assert out.get("payment_method_present") == 0
        assert out.get("auto_topup_enabled") == 0
        # no auto top-up configured: nothing can fail, so no failing / threshold / amount series at all
        assert {"auto_topup_failing", "auto_topup_threshold", "auto_topup_amount"}.isdisjoint(out.names())
    assert seen == [12.5, 8.3, 0.955]


def test_a_healthy_auto_topup_is_enabled_and_not_failing() -> None:
    _, out, _ = poll(CreditBalanceCollector, credit(
        balance=48210, has_default_payment_method=True, payment_method={"brand": "visa", "last4": "4242"},
        topup_config={"amount": 5000, "threshold": 1000, "disabledReason": None, "error": None,
                      "lastFailedAt": None}, first_topup_success=True), CB)
    assert out.get("credit_balance") == 482.1
    assert out.get("payment_method_present") == 1
    assert out.get("auto_topup_enabled") == 1
    assert out.get("auto_topup_threshold") == 10.0
    assert out.get("auto_topup_amount") == 50.0
    assert out.get("auto_topup_failing") == 0
    assert out.get("auto_topup_last_failure_timestamp_seconds") is None
    assert "payment_method_info" not in out.names()  # card details stay out unless turned on


def test_an_auto_topup_error_is_failing_with_its_failure_time() -> None:
    failed_at = at("2026-11-25T09:12")
    _, out, _ = poll(CreditBalanceCollector, credit(
        balance=310, has_default_payment_method=True, payment_method={"brand": "mastercard", "last4": "0005"},
        topup_config={"amount": 2000, "threshold": 1000, "disabledReason": None,
                      "error": "Your card was declined.", "lastFailedAt": ms(failed_at)}), CB)
    assert out.get("auto_topup_failing") == 1
    assert out.get("auto_topup_last_failure_timestamp_seconds") == failed_at


@pytest.mark.parametrize(("balance", "failing"), [(400, 1), (999.99, 1), (1000, 0), (6400, 0)])
def test_a_recorded_failure_counts_while_the_balance_stays_below_the_threshold(balance: float, failing: int) -> None:
    # error cleared by the API, but the last failure is on record: failing until a refill lifts the balance
    _, out, _ = poll(CreditBalanceCollector, credit(
        balance=balance, has_default_payment_method=True,
        topup_config={"amount": 5000, "threshold": 1000, "error": None, "lastFailedAt": 1764061920}), CB)
    assert out.get("auto_topup_failing") == failing


@pytest.mark.parametrize("last_failed_at", [1764061920, 1764061920000, 1764061920.0, 1764061920000.0])
def test_last_failure_time_is_read_as_seconds_or_milliseconds(last_failed_at: float) -> None:
    _, out, _ = poll(CreditBalanceCollector, credit(
        balance=100, topup_config={"amount": 1000, "threshold": 500, "lastFailedAt": last_failed_at}), CB)
    assert out.get("auto_topup_last_failure_timestamp_seconds") == 1764061920.0


def test_a_zero_last_failure_time_means_never_failed() -> None:
    _, out, _ = poll(CreditBalanceCollector, credit(
        balance=100, topup_config={"amount": 1000, "threshold": 500, "lastFailedAt": 0, "error": None}), CB)
    assert out.get("auto_topup_last_failure_timestamp_seconds") is None
    assert out.get("auto_topup_failing") == 0


def test_a_disabled_auto_topup_is_not_enabled() -> None:
    _, out, _ = poll(CreditBalanceCollector, credit(
        balance=100, topup_config={"amount": 1000, "threshold": 500, "disabledReason": "payment_failed"}), CB)
    assert out.get("auto_topup_enabled") == 0
    assert out.get("auto_topup_threshold") == 5.0


@pytest.mark.parametrize("answers", [
    credit(balance=0, has_default_payment_method=False, payment_method=None,
           topup_config={"amount": None, "threshold": None, "disabledReason": None, "error": None,
                         "lastFailedAt": None}, first_topup_success=False),
    credit(balance=0, has_default_payment_method=False, payment_method=None, topup_config=None),
    {"credit-balance": NOT_ENROLLED},
])
def test_an_account_without_unified_billing_is_not_enrolled_not_failed(answers: dict[str, Answer]) -> None:
    fetched, out, api = poll(CreditBalanceCollector, answers, CB)
    assert fetched == Fetched(data=None, enrolled=False)
    assert api.failures == []
    assert out.samples == {}


@pytest.mark.parametrize("result", [
    {"balance": 0, "has_default_payment_method": True},            # drained, but a card is on file
    {"balance": 0, "first_topup_success": True},                    # drained after a top-up
    {"balance": 0, "topup_config": {"amount": 1000, "threshold": 500}},
])
def test_a_drained_enrolled_account_shows_a_zero_balance(result: dict[str, Any]) -> None:
    fetched, out, _ = poll(CreditBalanceCollector, credit(**result), CB)
    assert fetched.enrolled
    assert out.get("credit_balance") == 0


def test_card_brand_and_last4_only_when_turned_on() -> None:
    answers = credit(balance=100, has_default_payment_method=True, payment_method={"brand": "visa", "last4": "4242"})
    _, out, _ = poll(CreditBalanceCollector, answers, CreditBalanceSettings(payment_method_labels=True))
    assert out.get("payment_method_info", "visa", "4242") == 1
    _, out, _ = poll(CreditBalanceCollector, answers, CB)
    assert "payment_method_info" not in out.names()


def test_missing_optional_fields_are_absent_not_zero() -> None:
    _, out, _ = poll(CreditBalanceCollector, credit(balance=700, some_new_field={"x": 1}), CB)
    assert out.samples == {("credit_balance", ACC): 7.0, ("auto_topup_enabled", ACC): 0.0}
    _, out, _ = poll(CreditBalanceCollector, credit(balance=700, topup_config={"threshold": 500}), CB)
    assert out.get("auto_topup_threshold") == 5.0
    assert out.get("auto_topup_amount") is None
    assert out.get("auto_topup_last_failure_timestamp_seconds") is None


def test_the_divisor_is_applied_to_every_amount() -> None:
    _, out, _ = poll(CreditBalanceCollector, credit(
        balance=1234, topup_config={"amount": 5000, "threshold": 1000, "lastFailedAt": 1764061920}),
        CreditBalanceSettings(amount_divisor=1))
    assert (out.get("credit_balance"), out.get("auto_topup_amount"), out.get("auto_topup_threshold")) == (
        1234, 5000, 1000)
    assert out.get("auto_topup_last_failure_timestamp_seconds") == 1764061920  # a time, never divided


@pytest.mark.parametrize("text", [
    '{"success": true, "result": null}',
    '{"success": true, "result": []}',
    '{"success": true, "result": {}}',
    '{"success": true, "result": {"balance": "12"}}',
    '{"success": true, "result": {"balance": true}}',
    '{"success": true, "result": {"balance": NaN}}',
    '{"success": true, "result": {"balance": Infinity}}',
    '{"success": true, "result": {"balance": 1e400}}',
    '{"success": true, "result": {"balance": 1' + "0" * 400 + '}}',
    '{"success": true, "result": {"balance": 1, "topup_config": [1]}}',
    '{"success": true, "result": {"balance": 1, "topup_config": {"threshold": -Infinity}}}',
    '{"success": true, "result": {"balance": 1, "topup_config": {"lastFailedAt": "yesterday"}}}',
    '{"success": true, "result": {"balance": 1, "has_default_payment_method": "yes"}}',
    '{"success": true, "result": {"balance": 1, "payment_method": {"brand": 4}}}',
])
def test_a_malformed_credit_balance_is_an_invalid_response(text: str) -> None:
    message = refused(CreditBalanceCollector, {"credit-balance": wire(text)})
    assert message.startswith("credit-balance: ")


# --- spending_limit ---

SL = MoneySettings()


def limit(amount: float, duration: str, strategy: str, events: Sequence[tuple[float, float]] = (),
          enabled: bool = True) -> dict[str, Answer]:
    return {"spending-limit": envelope({"config": {"amount": amount, "duration": duration, "strategy": strategy},
                                        "enabled": enabled}),
            "usage-history": usage_server(events)}


@pytest.mark.parametrize("result", [{"config": None, "enabled": False},
                                    {"config": {"amount": 5000, "duration": "daily", "strategy": "fixed"},
                                     "enabled": False}])
def test_no_spending_limit_is_enabled_zero_without_amount_or_usage(result: dict[str, Any]) -> None:
    fetched, out, api = poll(SpendingLimitCollector, {"spending-limit": envelope(result)}, SL)
    assert fetched.enrolled  # a real answer, not "not enrolled"
    assert out.samples == {("spending_limit_enabled", ACC): 0.0}
    assert [path for path, _ in api.calls] == ["spending-limit"]  # no usage request for a limit that is off


def test_spend_at_85_percent_of_a_fixed_daily_limit() -> None:
    now = at("2026-11-25T16:20")
    events = [(at("2026-11-24T23:59"), 9000),  # yesterday: another window
              (at("2026-11-25T00:00"), 2500), (at("2026-11-25T09:30"), 4000), (at("2026-11-25T16:05"), 2000)]
    _, out, api = poll(SpendingLimitCollector, limit(10000, "daily", "fixed", events), SL, now=now)
    assert out.get("spending_limit_enabled") == 1
    assert out.get("spending_limit_amount", "daily", "fixed") == 100.0
    assert out.get("spending_limit_window_usage") == 85.0
    assert api.calls[1] == ("usage-history", {"value_grouping_window": "day", "start_time": ms(at("2026-11-25T00:00")),
                                              "end_time": ms(at("2026-11-26T00:00"))})


def test_a_fixed_weekly_window_starts_on_monday_utc() -> None:
    now = at("2026-11-23T10:00")  # a Monday
    events = [(at("2026-11-22T23:30"), 700), (at("2026-11-23T00:30"), 300), (at("2026-11-23T09:59"), 200)]
    _, out, _ = poll(SpendingLimitCollector, limit(100000, "weekly", "fixed", events), SL, now=now)
    assert out.get("spending_limit_window_usage") == 5.0
    later = at("2026-11-29T23:59")  # the Sunday after: still the same week
    _, out, _ = poll(SpendingLimitCollector, limit(100000, "weekly", "fixed",
                                                                      [*events, (later - 60, 1000)]), SL, now=later)
    assert out.get("spending_limit_window_usage") == 15.0


def test_a_fixed_monthly_window_resets_on_the_first() -> None:
    events = [(at("2026-11-30T22:00"), 4000), (at("2026-12-01T01:00"), 600)]
    now = at("2026-12-01T05:00")
    _, out, _ = poll(SpendingLimitCollector, limit(50000, "monthly", "fixed", events), SL, now=now)
    assert out.get("spending_limit_window_usage") == 6.0


def test_sliding_windows_reach_back_over_day_and_month_boundaries() -> None:
    now = at("2026-12-01T05:30")
    events = [(at("2026-11-01T04:50"), 100000),  # before the 30-day window and its straddling first hour
              (at("2026-11-01T06:10"), 30000),   # inside 30 days
              (at("2026-11-30T04:50"), 8000),    # more than 24h ago: only in week and month
              (at("2026-11-30T05:40"), 2000),    # inside the last 24h
              (at("2026-12-01T00:10"), 500)]     # today
    expect = {"daily": 25.0, "weekly": 105.0, "monthly": 405.0}
    for duration, usage in expect.items():
        _, out, api = poll(SpendingLimitCollector, limit(100000, duration, "sliding", events), SL, now=now)
        assert out.get("spending_limit_window_usage") == usage, duration
        assert api.calls[1][1]["value_grouping_window"] == "hour"
        assert api.calls[1][1]["end_time"] == ms(at("2026-12-01T06:00"))
    # the fixed month would have started this morning: the sliding one is not the fixed one
    _, out, _ = poll(SpendingLimitCollector, limit(100000, "monthly", "fixed", events), SL, now=now)
    assert out.get("spending_limit_window_usage") == 5.0


def test_a_sliding_window_counts_the_straddling_hour_whole_an_upper_bound() -> None:
    now = at("2026-11-25T10:30")  # window: since 2026-11-24T10:30
    events = [(at("2026-11-24T09:50"), 1000),  # the hour before: out
              (at("2026-11-24T10:10"), 300),   # before the window start, in its hour: counted (over by 3.00)
              (at("2026-11-24T10:45"), 200)]
    _, out, api = poll(SpendingLimitCollector, limit(10000, "daily", "sliding", events), SL, now=now)
    assert api.calls[1][1]["start_time"] == ms(at("2026-11-24T10:00"))
    assert out.get("spending_limit_window_usage") == 5.0


def test_an_unknown_duration_keeps_the_limit_without_usage_labelled_other() -> None:
    """duration and strategy are label values: a known one lowercased, any other ``other`` (bounded)."""
    _, out, api = poll(SpendingLimitCollector, limit(9900, "quarterly", "Fixed"), SL, now=at("2026-11-25T10:00"))
    assert out.get("spending_limit_amount", "other", "fixed") == 99.0
    assert out.get("spending_limit_window_usage") is None
    assert len(api.calls) == 1


def test_usage_history_not_enrolled_leaves_the_window_usage_absent() -> None:
    answers = limit(10000, "daily", "fixed")
    answers["usage-history"] = NOT_ENROLLED
    fetched, out, api = poll(SpendingLimitCollector, answers, SL)
    assert fetched.enrolled and api.failures == []
    assert out.get("spending_limit_amount", "daily", "fixed") == 100.0
    assert out.get("spending_limit_window_usage") is None


def test_an_empty_usage_history_is_zero_spend_in_the_window() -> None:
    _, out, _ = poll(SpendingLimitCollector, limit(10000, "weekly", "sliding"), SL)
    assert out.get("spending_limit_window_usage") == 0


def test_spending_limit_divisor() -> None:
    now = at("2026-11-25T16:20")
    _, out, _ = poll(SpendingLimitCollector,
                     limit(10000, "daily", "fixed", [(now - 60, 8500)]), MoneySettings(amount_divisor=1), now=now)
    assert out.get("spending_limit_amount", "daily", "fixed") == 10000
    assert out.get("spending_limit_window_usage") == 8500


@pytest.mark.parametrize(("answers", "reason"), [
    ({"spending-limit": envelope({"config": None})}, "invalid_response"),
    ({"spending-limit": envelope({"config": None, "enabled": "false"})}, "invalid_response"),
    ({**limit(100, "daily", "fixed"), "usage-history": envelope({"history": [{"start_time": 1764028800000}]})},
     "invalid_response"),
    ({**limit(100, "daily", "fixed"), "usage-history": {
        "success": True, "result": {"history": []}, "result_info": {"has_more": True}}}, "pagination"),
])
def test_a_malformed_spending_limit_answer_is_refused(answers: dict[str, Answer], reason: str) -> None:
    refused(SpendingLimitCollector, answers, reason)


@pytest.mark.parametrize(("config", "amount", "labels", "usage"), [
    ({"amount": "100", "duration": "daily", "strategy": "fixed"}, None, None, 85.0),  # amount of the wrong type
    ({"amount": math.nan, "duration": "daily", "strategy": "fixed"}, None, None, 85.0),
    ({"amount": 10000, "strategy": "fixed"}, 100.0, ("unknown", "fixed"), None),  # no duration: no window
    ({"amount": 10000, "duration": 7, "strategy": "fixed"}, 100.0, ("unknown", "fixed"), None),
    ({"amount": 10000, "duration": "daily"}, 100.0, ("daily", "unknown"), None),
    ("unlimited", None, None, None),  # config itself malformed: the limit is still enabled
])
def test_each_part_of_the_limit_stands_on_its_own(config: Any, amount: float | None,
                                                   labels: tuple[str, str] | None, usage: float | None) -> None:
    """Only ``enabled`` is required: a limit whose amount, duration or strategy is missing or malformed still
    reports what is known (the SDKs mark all three optional), and never fails the poll."""
    now = at("2026-11-25T16:20")
    answers = {"spending-limit": {"success": True, "result": {"config": config, "enabled": True}},
               "usage-history": usage_server([(now - 60, 8500)])}
    _, out, api = poll(SpendingLimitCollector, answers, SL, now=now)
    assert api.failures == [] and out.get("spending_limit_enabled") == 1
    amounts = {k[1][2:]: v for k, v in out.samples.items() if k[0] == "spending_limit_amount"}
    assert amounts == ({} if amount is None else {labels: amount})
    assert out.get("spending_limit_window_usage") == usage


# --- usage_history ---

UH = MoneySettings()


def test_usage_so_far_today_and_this_month() -> None:
    now = at("2026-11-25T16:20")
    events = [(at("2026-10-31T23:00"), 99999), (at("2026-11-01T00:00"), 1000), (at("2026-11-24T23:59"), 250),
              (at("2026-11-25T00:01"), 125), (at("2026-11-25T16:00"), 75)]
    _, out, api = poll(UsageHistoryCollector, {"usage-history": usage_server(events)}, UH, now=now)
    assert out.get("usage_amount", "day") == 2.0
    assert out.get("usage_amount", "month") == 14.5
    assert api.calls == [("usage-history", {"value_grouping_window": "day", "start_time": ms(at("2026-11-01T00:00")),
                                            "end_time": ms(at("2026-11-26T00:00"))})]


def test_on_the_first_of_the_month_day_and_month_restart() -> None:
    now = at("2026-12-01T00:30")
    events = [(at("2026-11-30T23:50"), 5000), (at("2026-12-01T00:10"), 40)]
    _, out, _ = poll(UsageHistoryCollector, {"usage-history": usage_server(events)}, UH, now=now)
    assert (out.get("usage_amount", "day"), out.get("usage_amount", "month")) == (0.4, 0.4)


def test_bucket_times_in_seconds_give_the_same_sums() -> None:
    now = at("2026-11-25T16:20")
    events = [(at("2026-11-03T10:00"), 300), (at("2026-11-25T10:00"), 100)]
    _, out, _ = poll(UsageHistoryCollector, {"usage-history": usage_server(events, seconds=True)},
                     UH, now=now)
    assert (out.get("usage_amount", "day"), out.get("usage_amount", "month")) == (1.0, 4.0)


@pytest.mark.parametrize("body", [envelope({"history": []}), envelope({"history": None}), envelope(None)])
def test_an_empty_usage_history_is_zero_spend(body: dict[str, Any]) -> None:
    fetched, out, _ = poll(UsageHistoryCollector, {"usage-history": body}, UH)
    assert fetched.enrolled
    assert (out.get("usage_amount", "day"), out.get("usage_amount", "month")) == (0, 0)


def test_usage_history_not_enrolled() -> None:
    fetched, out, api = poll(UsageHistoryCollector, {"usage-history": NOT_ENROLLED}, UH)
    assert fetched == Fetched(data=None, enrolled=False) and api.failures == [] and out.samples == {}


def test_usage_divisor() -> None:
    now = at("2026-11-25T16:20")
    _, out, _ = poll(UsageHistoryCollector, {"usage-history": usage_server([(now, 1234)])},
                     MoneySettings(amount_divisor=1000), now=now)
    assert out.get("usage_amount", "day") == 1.234


@pytest.mark.parametrize("text", [
    '{"success": true, "result": []}',
    '{"success": true, "result": {"history": {}}}',
    '{"success": true, "result": {"history": [1]}}',
    '{"success": true, "result": {"history": [{"aggregated_value": 5}]}}',
    '{"success": true, "result": {"history": [{"aggregated_value": NaN, "start_time": 1764028800000}]}}',
    '{"success": true, "result": {"history": [{"aggregated_value": true, "start_time": 1764028800000}]}}',
    '{"success": true, "result": {"history": [{"aggregated_value": 1, "start_time": "1764028800000"}]}}',
    '{"success": true, "result": {"history": [{"aggregated_value": 1, "start_time": 1, "end_time": Infinity}]}}',
])
def test_a_malformed_usage_history_is_an_invalid_response(text: str) -> None:
    message = refused(UsageHistoryCollector, {"usage-history": wire(text)})
    assert message.startswith("usage-history: ")


# --- invoice_preview ---

IP = InvoicePreviewSettings()


def preview(**result: Any) -> dict[str, Answer]:
    return {"invoice-preview": envelope(result)}


@pytest.mark.parametrize("period_end", [1767225600, 1767225600000])
def test_the_upcoming_invoice(period_end: int) -> None:
    _, out, _ = poll(InvoicePreviewCollector, preview(
        id="in_1", amount_due=1234, amount_paid=0, amount_remaining=1234, currency="USD",
        period_start=1764547200, period_end=period_end, status="draft",
        invoice_lines=[{"amount": 1234, "currency": "usd", "description": "AI Gateway", "period": {}}]), IP)
    assert out.samples == {("upcoming_invoice_amount_due", (*ACC, "usd")): 12.34,
                           ("upcoming_invoice_period_end_timestamp_seconds", ACC): 1767225600.0}


def test_an_upcoming_invoice_without_period_end_has_no_period_series() -> None:
    _, out, _ = poll(InvoicePreviewCollector, preview(amount_due=0, currency="eur"),
                     InvoicePreviewSettings(amount_divisor=1))
    assert out.samples == {("upcoming_invoice_amount_due", (*ACC, "eur")): 0.0}


@pytest.mark.parametrize("answer", [NOT_ENROLLED, envelope({}), envelope(None)])
def test_nothing_upcoming_is_not_enrolled_not_failed(answer: Answer) -> None:
    fetched, out, api = poll(InvoicePreviewCollector, {"invoice-preview": answer}, IP)
    assert fetched == Fetched(data=None, enrolled=False) and api.failures == [] and out.samples == {}


@pytest.mark.parametrize("text", [
    '{"success": true, "result": [1]}',
    '{"success": true, "result": {"currency": "usd"}}',
    '{"success": true, "result": {"amount_due": 5}}',
    '{"success": true, "result": {"amount_due": 5, "currency": 840}}',
    '{"success": true, "result": {"amount_due": 5, "currency": " "}}',
    '{"success": true, "result": {"amount_due": Infinity, "currency": "usd"}}',
])
def test_a_malformed_invoice_preview_is_an_invalid_response(text: str) -> None:
    message = refused(InvoicePreviewCollector, {"invoice-preview": wire(text)})
    assert message.startswith("invoice-preview: ")


@pytest.mark.parametrize("extra", [{"status": 7}, {"id": 12}, {"amount_paid": "x"}, {"amount_remaining": None},
                                   {"period_start": "soon"}, {"period_end": False}, {"period_end": "2026-12-01"}])
def test_fields_the_metrics_do_not_need_never_fail_the_poll(extra: dict[str, Any]) -> None:
    """The upcoming amount is exported whatever the rest of the answer holds; a malformed period end only
    loses the period series."""
    fetched, out, api = poll(InvoicePreviewCollector, preview(amount_due=1234, currency="usd", **extra), IP)
    assert api.failures == [] and fetched.enrolled
    assert out.get("upcoming_invoice_amount_due", "usd") == 12.34
    assert out.get("upcoming_invoice_period_end_timestamp_seconds") is None


# --- every billing collector ---

def test_names_families_and_request_counts() -> None:
    collectors = {c.name: c(c.settings_type(), Config()) for c in REGISTRY}
    billing = ["credit_balance", "spending_limit", "usage_history", "invoice_preview"]
    assert [collectors[name].requests_per_poll() for name in billing] == [1, 2, 1, 1]
    names = [f.name for c in collectors.values() for f in c.families]
    assert len(names) == len(set(names))
    for family in (f for name in billing for f in collectors[name].families):
        assert family.labels[:2] == ("account_id", "account") and family.type == "gauge"
