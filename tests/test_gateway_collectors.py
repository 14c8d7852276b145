"""The gateways and gateway_analytics collectors, in process: the real client and collectors against the gateways
list and the GraphQL fake (tests/fakegraphql.py), which executes every query against the schema, so a misspelt
field or a filter the API lacks fails here."""

from __future__ import annotations

import asyncio
import calendar
import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.client import CloudflareClient
from exporter.cloudflare.errors import ApiError, PollCounts
from exporter.collectors import base
from exporter.collectors._analytics_query import LIMIT, MAX_ALIASES, Scope, plan, read, sample_rows
from exporter.collectors._wire import Malformed
from exporter.collectors.base import Family
from exporter.collectors.gateway_analytics import (
    SAMPLE_TRAFFIC,
    Analytics,
    GatewayAnalyticsCollector,
    GatewayAnalyticsSettings,
    Totals,
)
from exporter.collectors.gateways import GatewaysCollector, GatewaysSettings, parse_gateway
from exporter.config.model import AccountConfig, CloudflareConfig, Config, Credentials
from exporter.ratelimit import RateLimiter
from tests.fakeapi import sample_events
from tests.fakegraphql import AiGatewayRequest, AnalyticsFake

ACCOUNT = AccountConfig("a" * 32, "acme", "all", Credentials(api_token="t0k3n-value"))
ACC = (ACCOUNT.id, ACCOUNT.name)
NOW = float(calendar.timegm((2026, 12, 4, 10, 30, 20)))  # 10:30:20 UTC
MINUTE = 60.0


def at(hhmm: str, seconds: float = 0.0) -> float:
    hours, minutes = map(int, hhmm.split(":"))
    return calendar.timegm((2026, 12, 4, hours, minutes, 0)) + seconds


def rule(rule_id: str | None, limit: float, window: float, technique: str = "sliding", **extra: Any) -> dict[str, Any]:
    found = {"limit": limit, "limitType": "cost", "window": window, "technique": technique, **extra}
    return found if rule_id is None else {"id": rule_id, **found}


def gateway(gateway_id: str, *rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": gateway_id, "collect_logs": True, "authentication": False, "byok_only": False,
            "workers_ai_billing_mode": "unified", "rate_limiting_limit": None, "rate_limiting_interval": None,
            "spend_limits": {"enabled": True, "rules": list(rules)} if rules else None, **fields}


def request(hhmm: str, gw: str = "chat", provider: str = "openai", model: str = "gpt-4o", **fields: Any
            ) -> AiGatewayRequest:
    return AiGatewayRequest(at=at(hhmm, fields.pop("second", 0.0)), gateway=gw, provider=provider, model=model,
                            **fields)


class World:
    """The API one account sees: its gateways (paginated like V4 lists) and its analytics events."""

    def __init__(self, gateways: Sequence[dict[str, Any]] = (), per_page: int = 20) -> None:
        self.gateways = list(gateways)
        self.per_page = per_page
        self.clock = NOW
        self.analytics = AnalyticsFake(now=lambda: self.clock)
        self.pages: list[int] = []

    def handle(self, req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/graphql"):
            status, body = self.analytics.answer(req.content, {ACCOUNT.id})
            return httpx.Response(status, json=body)
        page = int(req.url.params.get("page", "1"))
        self.pages.append(page)
        chunk = self.gateways[(page - 1) * self.per_page:page * self.per_page]
        info = {"page": page, "per_page": self.per_page, "count": len(chunk), "total_count": len(self.gateways)}
        return httpx.Response(200, json={"success": True, "errors": [], "messages": [], "result": chunk,
                                         "result_info": info})

    def poll(self, collector: base.Collector[Any, Any], previous: Any = None) -> tuple[Any, PollCounts]:
        """One poll at the world's clock: (Fetched or the ApiError, the poll's counts)."""
        counts = PollCounts()
        collector.now = lambda: self.clock  # type: ignore[attr-defined]

        async def go() -> Any:
            async with httpx.AsyncClient(transport=httpx.MockTransport(self.handle)) as http:
                client = CloudflareClient(CloudflareConfig(base_url="https://api.test/client/v4", max_retries=0),
                                          RateLimiter(1000), http, graphql_limiter=RateLimiter(1000))
                try:
                    return await base.fetch(collector, AccountApi(client, ACCOUNT, counts), previous)
                except ApiError as err:
                    return err

        return asyncio.run(go()), counts


def analytics(**settings: Any) -> GatewayAnalyticsCollector:
    return GatewayAnalyticsCollector(GatewayAnalyticsSettings(**settings), Config())


class Recorder:
    """A Sink keeping (family name without the prefix, label values in the family's order) -> value."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, tuple[str, ...]], float] = {}

    def add(self, family: Family, labels: Sequence[str], value: float) -> None:
        key = (family.name.removeprefix("cloudflare_ai_gateway_"), tuple(labels))
        assert key not in self.found and len(labels) == len(family.labels)
        self.found[key] = value


def samples(collector: base.Collector[Any, Any], data: Any) -> dict[tuple[str, tuple[str, ...]], float]:
    out = Recorder()
    collector.render(ACC, data, out)
    return out.found


# --- gateways ---


def test_each_gateway_its_rate_limit_and_its_rules() -> None:
    world = World([
        gateway("chat", rule("daily", 50, 86400, "fixed"), rule(None, 300, 3600, model={"mode": "filter",
                                                                                     "values": ["gpt-4o"]}),
                rate_limiting_limit=100, rate_limiting_interval=60, rate_limiting_technique="sliding"),
        gateway("batch", rule("off", 10, 60, enabled=False), byok_only=True, workers_ai_billing_mode="postpaid",
                authentication=None),
        gateway("muted", rule("r", 10, 60), spend_limits={"enabled": False, "rules": [rule("r", 10, 60)]}),
    ])
    fetched, counts = world.poll(GatewaysCollector(GatewaysSettings(), Config()))
    out = samples(GatewaysCollector(GatewaysSettings(), Config()), fetched.data)
    assert out[("gateway_info", (*ACC, "chat", "unified", "false", "false", "true"))] == 1
    assert out[("gateway_info", (*ACC, "batch", "postpaid", "true", "unknown", "true"))] == 1
    assert out[("gateway_rate_limit_requests", (*ACC, "chat", "sliding"))] == 100
    assert out[("gateway_rate_limit_interval_seconds", (*ACC, "chat"))] == 60
    assert not any(name.startswith("gateway_rate_limit") and labels[2] == "batch" for name, labels in out)
    assert out[("spend_limit_rule_limit", (*ACC, "chat", "daily"))] == 50
    assert out[("spend_limit_rule_window_seconds", (*ACC, "chat", "#2"))] == 3600  # no id: its position
    assert out[("spend_limit_rule_info", (*ACC, "chat", "#2", "sliding", "model=gpt-4o"))] == 1
    assert out[("spend_limit_rule_info", (*ACC, "chat", "daily", "fixed", "all"))] == 1
    enabled = {labels[2:]: v for (name, labels), v in out.items() if name == "spend_limit_rule_enabled"}
    assert enabled == {("chat", "daily"): 1, ("chat", "#2"): 1, ("batch", "off"): 0, ("muted", "r"): 0}
    assert counts.requests == {"200": 1} and not counts.errors


def test_gateways_are_read_over_every_page() -> None:
    world = World([gateway(f"gw-{n}") for n in range(45)], per_page=20)
    fetched, counts = world.poll(GatewaysCollector(GatewaysSettings(), Config()))
    assert [g.id for g in fetched.data] == [f"gw-{n}" for n in range(45)]
    assert world.pages == [1, 2, 3] and counts.requests == {"200": 3}


def test_malformed_gateways_and_rules_are_left_out_counted_and_said() -> None:
    rules = [rule("ok", 10, 60), rule("neg", -5, 60), rule("nowin", 5, 0), rule("meta", 5, 60, metadata=[1]),
             *(rule(f"r{n}", 1, 60) for n in range(25))]
    world = World([gateway("chat", *rules), {"id": "../etc"}, {"name": "no id"}])
    fetched, counts = world.poll(GatewaysCollector(GatewaysSettings(), Config()))
    [chat] = fetched.data
    assert [r.id for r in chat.rules] == ["ok", *(f"r{n}" for n in range(16))]  # at most 20 rules read
    assert counts.errors == {"invalid_response": 1}
    assert fetched.warning and "14 malformed or repeated gateways or spend-limit rules were left out" in fetched.warning


def test_a_scope_label_stays_short_whatever_the_filters() -> None:
    many = {"mode": "filter", "values": [f"model-{n:03}" for n in range(40)]}
    parsed = parse_gateway(gateway("chat", rule("wide", 10, 60, model=many)))
    assert parsed is not None and len(parsed.rules[0].scope) == 200 and parsed.rules[0].scope.endswith("…")


# --- gateway_analytics: counting ---


def traffic() -> list[AiGatewayRequest]:
    return [request("10:10"), request("10:20", count=3, cost=0.5, tokens_in=100, tokens_out=40, wholesale=True),
            request("10:24", second=59, cached=True, tokens_in=10, tokens_out=4),
            request("10:25", error=True), request("10:25", rate_limited=True, gw="batch", provider="workers-ai",
                                                  model="llama"),
            request("10:26", count=7)]


def test_the_first_poll_starts_the_series_at_zero_and_counts_nothing() -> None:
    world = World([gateway("chat"), gateway("batch")])
    world.analytics.add(ACCOUNT.id, *traffic(), request("09:10", model="old"))  # more than an hour ago
    fetched, counts = world.poll(analytics())
    data: Analytics = fetched.data
    assert data.counted_until == at("10:25")  # 10:30:20 - 5 min, floored to the minute
    assert set(data.series) == {("chat", "openai", "gpt-4o")}  # what the hour before 10:25 holds
    assert all(sum(t.values()) == 0 for t in data.series.values())
    assert counts.requests == {"200": 2} and len(world.analytics.requests) == 1  # gateways + one GraphQL query


def test_each_completed_minute_is_counted_once_after_the_delay() -> None:
    world = World([gateway("chat"), gateway("batch")])
    world.analytics.add(ACCOUNT.id, *traffic())
    first, _ = world.poll(analytics())
    world.clock = NOW + 2 * MINUTE  # 10:32:20: counts [10:25, 10:27)
    second, _ = world.poll(analytics(), first.data)
    series = second.data.series
    chat, batch = series[("chat", "openai", "gpt-4o")], series[("batch", "workers-ai", "llama")]
    assert (chat.requests, chat.errored, chat.rate_limited) == (8, 1, 0)  # 10:25 (1 errored) and 10:26 (7)
    assert batch.requests == 0  # new: exported at 0 first, so that increase() sees its first requests
    world.clock = NOW + 2 * MINUTE + 30  # the same minute: nothing new is complete
    third, _ = world.poll(analytics(), second.data)
    batch = third.data.series[("batch", "workers-ai", "llama")]
    assert (batch.requests, batch.rate_limited) == (1, 1) and third.data.counted_until == at("10:27")
    assert third.data.series[("chat", "openai", "gpt-4o")] == chat
    assert len(world.analytics.requests) == 3  # one query per poll, also when nothing is counted


def test_a_restart_counts_from_zero_again_and_late_data_is_lost() -> None:
    world = World([gateway("chat")])
    world.analytics.add(ACCOUNT.id, *traffic())
    first, _ = world.poll(analytics())
    # a request of 10:25 that the API shows only at 10:33, after the minute was counted at 10:32
    world.analytics.add(ACCOUNT.id, request("10:25", count=100, ingested_at=at("10:33")))
    world.clock = NOW + 2 * MINUTE
    second, _ = world.poll(analytics(), first.data)
    world.clock = NOW + 5 * MINUTE
    third, _ = world.poll(analytics(), second.data)
    assert third.data.series[("chat", "openai", "gpt-4o")].requests == 8  # the late 100 never count
    restarted, _ = world.poll(analytics(), None)  # a new process: previous data is gone
    assert restarted.data.series[("chat", "openai", "gpt-4o")].requests == 0


def test_tokens_and_cost_by_cache_and_billing() -> None:
    world = World([gateway("chat")])
    world.analytics.add(ACCOUNT.id, *traffic())
    world.clock = at("10:20", 10)
    first, _ = world.poll(analytics(delay=0))
    world.clock = at("10:26", 10)
    second, _ = world.poll(analytics(delay=0), first.data)  # counts [10:20, 10:26)
    out = samples(analytics(), second.data)
    labels = (*ACC, "chat", "openai", "gpt-4o")
    assert out[("gateway_cost", (*labels, "true"))] == 1.5 and out[("gateway_cost", (*labels, "false"))] == 0
    assert out[("gateway_tokens", (*labels, "in", "false"))] == 300
    assert out[("gateway_tokens", (*labels, "in", "true"))] == 10
    assert out[("gateway_tokens", (*labels, "out", "true"))] == 4 and out[("gateway_cached_requests", labels)] == 1


def test_series_past_the_cap_are_folded_into_their_gateways_other_and_counted() -> None:
    world = World([gateway("chat")])
    learned, _ = world.poll(analytics(max_series=2))
    assert samples(analytics(), learned.data)[("gateway_analytics_folded_groups", ACC)] == 0  # there from the start
    world.analytics.add(ACCOUNT.id, *(request("10:25", model=f"m{n}", cost=1.0) for n in range(5)))
    world.clock = NOW + MINUTE
    first, _ = world.poll(analytics(max_series=2), learned.data)
    assert len(first.data.series) == 3 and first.data.folded == 3  # two series, then "other" for the rest
    world.clock = NOW + 2 * MINUTE
    world.analytics.add(ACCOUNT.id, *(request("10:26", model=f"m{n}", cost=1.0) for n in range(5)))
    second, _ = world.poll(analytics(max_series=2), first.data)
    assert second.data.series[("chat", "other", "other")].requests == 6 and second.data.folded == 6
    assert samples(analytics(), second.data)[("gateway_analytics_folded_groups", ACC)] == 6


def test_after_a_long_outage_at_most_a_day_is_counted_and_the_rest_said_lost() -> None:
    world = World([gateway("chat")])
    world.analytics.add(ACCOUNT.id, request("10:00", count=5), AiGatewayRequest(
        at=NOW - 3 * 86400, gateway="chat", provider="openai", model="gpt-4o", count=50))
    chat = ("chat", "openai", "gpt-4o")
    fetched, _ = world.poll(analytics(), Analytics(at("10:25") - 5 * 86400, {chat: Totals()}))
    assert fetched.data.series[chat].requests == 5
    assert fetched.warning and "5,760 minutes were never counted" in fetched.warning
    assert samples(analytics(), fetched.data)[("gateway_analytics_skipped_seconds", ACC)] == 4 * 86400


# --- gateway_analytics: spend in each rule's window ---


def usage(fetched: Any) -> dict[str, float | None]:
    return {u.rule.id: u.usage for u in fetched.data.rules}


def test_sliding_and_fixed_windows_at_their_boundaries() -> None:
    world = World([gateway("chat", rule("last-hour", 100, 3600), rule("this-hour", 100, 3600, "fixed"))])
    world.analytics.add(ACCOUNT.id, request("09:29", cost=1), request("09:30", cost=2), request("09:59", cost=4),
                        request("10:00", cost=8), request("10:30", cost=16))
    fetched, _ = world.poll(analytics())
    # sliding: since 09:30:20, from the start of its minute (at most a minute's spend over); fixed: since 10:00
    assert usage(fetched) == {"last-hour": 30.0, "this-hour": 24.0}


def test_a_fixed_day_is_the_utc_day() -> None:
    world = World([gateway("chat", rule("today", 100, 86400, "fixed"))])
    world.analytics.add(ACCOUNT.id, AiGatewayRequest(at=at("00:00") - 1, gateway="chat", provider="p", model="m",
                                                      cost=5), request("00:00", cost=1))
    assert usage(world.poll(analytics())[0]) == {"today": 1.0}


def test_a_rule_counts_only_its_gateway_models_and_providers() -> None:
    world = World([gateway("chat", rule("gpt", 100, 3600, model={"mode": "filter", "values": ["gpt-4o", "o1"]}),
                           rule("oa", 100, 3600, provider={"mode": "filter", "values": ["openai"]}),
                           rule("all", 100, 3600)), gateway("other")])
    world.analytics.add(ACCOUNT.id, request("10:10", cost=1), request("10:11", model="o1", cost=2),
                        request("10:12", model="GPT-4O", cost=4), request("10:13", provider="anthropic", cost=8),
                        request("10:14", gw="other", cost=16))
    # 10:13 is gpt-4o through anthropic: in "gpt", not in "oa"; model names match exactly
    assert usage(world.poll(analytics())[0]) == {"gpt": 11.0, "oa": 7.0, "all": 15.0}


def test_a_partitioned_rule_reports_the_value_that_spent_most_never_the_sum() -> None:
    per_team = rule("per-team", 100, 3600, metadata={"team": {"mode": "partition"}})
    search_only = rule("search", 100, 3600, metadata={"team": {"mode": "filter", "values": ["search"]}})
    world = World([gateway("chat", per_team, search_only)])
    world.analytics.add(ACCOUNT.id, request("10:10", cost=30, metadata={"team": "search", "user": "a"}),
                        request("10:11", cost=20, metadata={"user": "b", "team": "search"}),
                        request("10:12", cost=40, metadata={"team": "support"}),
                        request("10:13", cost=99))  # no team: in no team's budget
    assert usage(world.poll(analytics())[0]) == {"per-team": 50.0, "search": 50.0}


def test_rules_past_the_alias_limit_have_no_usage_and_say_why() -> None:
    rules = [rule(f"r{n}", 10, 3600, metadata={"team": {"mode": "partition"}}) for n in range(20)]  # one alias each
    world = World([gateway(f"gw{g}", *rules) for g in range(3)])
    fetched, _ = world.poll(analytics())
    known = [u for u in fetched.data.rules if u.usage is not None]
    assert len(known) == MAX_ALIASES and len(fetched.data.rules) == 60
    assert fetched.warning and "past the query's alias limit" in fetched.warning
    assert len(world.analytics.requests) == 1


def test_more_window_starts_than_aliases_leave_the_later_rules_without_usage() -> None:
    scopes = [Scope("chat", f"r{n}", at("10:00") - n * MINUTE) for n in range(MAX_ALIASES + 1)]
    asked = plan(None, [*scopes, Scope("batch", "same-start", at("10:00") - MAX_ALIASES * MINUTE)])
    assert len(asked.variables) == MAX_ALIASES and ("batch", "same-start") not in asked.aliases


def test_disabled_rules_yield_their_aliases_to_enabled_ones() -> None:
    off = [rule(f"off{n}", 10, 3600 + n * 60, enabled=False) for n in range(20)]
    on = [rule(f"on{n}", 10, 7200 + n * 60) for n in range(20)]
    world = World([gateway("a", *off), gateway("b", *on), gateway("c", rule("last", 10, 99_999))])
    fetched, _ = world.poll(analytics())
    known = {u.rule.id for u in fetched.data.rules if u.usage is not None}
    assert {f"on{n}" for n in range(20)} | {"last"} <= known and len(known) == MAX_ALIASES


def test_a_rule_with_a_window_past_the_analytics_kept_has_no_usage_and_the_rest_do() -> None:
    world = World([gateway("chat", rule("huge", 10, 1e20), rule("year", 10, 365 * 86400, "fixed"),
                           rule("hour", 10, 3600))])
    world.analytics.add(ACCOUNT.id, request("10:10", cost=2))
    fetched, _ = world.poll(analytics())
    assert usage(fetched) == {"huge": None, "year": None, "hour": 2.0}
    assert fetched.warning and "longer than 31 days" in fetched.warning


def test_repeated_rule_and_gateway_ids_are_kept_once_and_counted() -> None:
    world = World([gateway("chat", rule("a", 10, 60), rule("a", 20, 60), rule(None, 5, 60), rule("#3", 1, 60)),
                   gateway("chat", rule("b", 1, 60))], per_page=1)
    fetched, counts = world.poll(GatewaysCollector(GatewaysSettings(), Config()))
    [chat] = fetched.data
    assert [(r.id, r.limit) for r in chat.rules] == [("a", 10), ("#3", 5)]
    assert counts.errors == {"invalid_response": 1} and "3 malformed or repeated" in fetched.warning
    first, _ = world.poll(analytics())
    world.clock = NOW + MINUTE
    # the rules as read a minute ago carry the same warning, so that the poller logs it once, not at every read;
    # it is counted once per read
    second, counts = world.poll(analytics(), first.data)
    assert second.warning == first.warning and "3 malformed" in second.warning
    assert not counts.errors and world.pages == [1, 2, 1, 2]


def test_metadata_keys_without_as_many_values_refuse_the_answer() -> None:
    asked = plan(None, [Scope("chat", "team", NOW - 3600, metadata_keys=("team",))])
    row = {"sum": {"cost": 1.0}, "dimensions": {"metadataKeys": ["team", "user"], "metadataValues": ["search"]}}
    with pytest.raises(Malformed, match="not as many metadata values as keys"):
        read({"viewer": {"accounts": [{"m0": [row]}]}}, asked)


def test_windows_share_one_alias_per_start() -> None:
    asked = plan(None, [Scope(f"gw{n}", "day", at("00:00")) for n in range(5)])
    assert list(asked.variables) == ["w0"] and asked.variables["w0"]["gateway_in"] == [f"gw{n}" for n in range(5)]
    assert "datetime_" not in json.dumps(asked.variables) and f"limit: {LIMIT}" in asked.document


# --- GraphQL errors: each fails the poll with a reason, and the counting resumes where it stopped ---


@pytest.mark.parametrize(("fault", "reason", "words"), [
    ("missing_permission", "auth", "Account Analytics Read"),
    ("unauthorized", "auth", "Account Analytics Read"),
    ("quota", "rate_limited", "quota"),
    ("quota_minute", "rate_limited", "quota"),
    ("unavailable", "server_error", "too many queries"),
    ("partial", "api_error", "limit reached"),
])
def test_graphql_errors_fail_the_poll_with_an_actionable_reason(fault: Any, reason: str, words: str) -> None:
    world = World([gateway("chat")])
    world.analytics.add(ACCOUNT.id, *traffic())
    first, _ = world.poll(analytics())
    world.analytics.inject(fault)
    world.clock = NOW + 2 * MINUTE
    err, counts = world.poll(analytics(), first.data)
    assert isinstance(err, ApiError) and err.reason == reason and words in str(err)
    assert counts.errors == {reason: 1}
    if reason == "rate_limited":
        assert counts.pauses == {"graphql": 1}
    world.clock = NOW + 3 * MINUTE
    resumed, _ = world.poll(analytics(), first.data)  # the failed poll kept the last good data
    assert resumed.data.series[("chat", "openai", "gpt-4o")].requests == 8


def test_a_token_without_analytics_access_to_the_account_says_so() -> None:
    world = World([gateway("chat")])
    world.analytics = AnalyticsFake(now=lambda: world.clock, documented_statuses=True)
    rest = world.handle

    def refuse_the_account(req: httpx.Request) -> httpx.Response:
        if not req.url.path.endswith("/graphql"):
            return rest(req)
        status, body = world.analytics.answer(req.content, set())  # the token may read no account's analytics
        return httpx.Response(status, json=body)

    world.handle = refuse_the_account  # type: ignore[method-assign]
    err, counts = world.poll(analytics())
    assert isinstance(err, ApiError) and err.reason == "auth" and "Account Analytics Read" in str(err)
    assert counts.requests == {"200": 1, "403": 1}


# --- the --demo sample answer is what the schema's executor answers ---


def test_the_demo_answer_matches_the_schema_fake_for_the_sample_traffic() -> None:
    flows = SAMPLE_TRAFFIC["bulk"] + SAMPLE_TRAFFIC["production"]
    asked = plan((at("10:00"), at("10:25")), [Scope("ingest", "hourly", NOW - 3600),
                                               Scope("ingest", "team", NOW - 86400, metadata_keys=("team",))])
    fake = AnalyticsFake(now=lambda: NOW)
    fake.add(ACCOUNT.id, *sample_events(flows, NOW - 2 * 86400, NOW))
    status, body = fake.answer(json.dumps({"query": asked.document,
                                           "variables": {"accountTag": ACCOUNT.id, **asked.variables}}).encode(),
                               {ACCOUNT.id})
    assert status == 200 and body["errors"] is None
    executed = body["data"]["viewer"]["accounts"][0]
    for alias, where in asked.variables.items():
        demo = sample_rows(alias, where, flows, NOW - 2 * 86400, NOW)
        assert _by_dims(demo) == pytest.approx(_by_dims(executed[alias]), rel=0.02, abs=1), alias


def _by_dims(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {json.dumps(r["dimensions"], sort_keys=True): r["sum"]["cost"] for r in rows}





def test_the_rules_are_read_again_every_five_minutes_not_every_poll() -> None:
    world = World([gateway("chat", rule("hourly", 10, 3600))])
    data = None
    seen = []
    for minutes in range(7):
        world.clock = NOW + minutes * MINUTE
        fetched, _ = world.poll(analytics(), data)
        data = fetched.data
        seen.append([u.rule.id for u in data.rules])
        if minutes == 2:
            world.gateways = [gateway("chat", rule("hourly", 10, 3600), rule("new", 5, 60))]
    assert world.pages == [1, 1]  # at 10:30:20 and at 10:35:20
    assert seen == [["hourly"]] * 5 + [["hourly", "new"]] * 2
    assert len(world.analytics.requests) == 7  # a query every poll
    assert analytics().requests_per_poll() == 0.2  # for the budget: 1 request per 5 minutes at the 1m default
