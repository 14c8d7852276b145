"""``POST /graphql``: where the credits go (per gateway, provider and model) and the spend in each spend-limit
rule's current window. Token permissions: Account Analytics Read (and AI Gateway Read for the rules).

Per poll of one account: ONE GraphQL query, whose aliases of ``aiGatewayRequestsAdaptiveGroups`` read everything
the poll needs (``_analytics_query.py`` builds it), and, at most every ``RULES_MAX_AGE``, the gateways list for
the rules (one request per page):

- ``counted``: the completed minutes not counted yet, up to ``delay`` before now (the analytics API shows a
  request minutes after it ends). Each minute is counted once, into counters that start at 0 at the collector's
  first poll (that poll learns which gateway, provider and model series exist from the last hour, and counts
  nothing). A restart starts them again; data the API shows later than ``delay`` after its minute, and the minutes
  while the exporter is down, are never counted (docs/billing.md).
- ``w<N>``: the spend since each distinct window start of the rules (sliding: the last ``window`` seconds; fixed:
  since the last multiple of ``window`` seconds since the Unix epoch, an assumption), per gateway, provider and
  model; each rule's usage is the part within its scope. From the start of the minute holding the window start,
  so at most one minute's spend over.
- ``m<N>``: one per rule scoped by metadata, grouped by the metadata keys and values: a rule partitioned by a key
  has one budget per value, and its usage is the spend of the value that spent most.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from exporter.cloudflare.account import AccountApi
from exporter.collectors import _analytics_query as query
from exporter.collectors._wire import OTHER
from exporter.collectors.base import ACC, NS, Acc, Collector, Family, Fetched, Route, SampleRequest, Sink
from exporter.collectors.cells import StatusCell, StatusLine
from exporter.collectors.gateways import Gateway, Rule, fetch_gateways
from exporter.config.model import CollectorSettings, setting
from exporter.config.values import INTERVAL, duration, integer
from exporter.samples import DEMO_NAMES
from exporter.words import dollars

log = logging.getLogger("exporter.collectors")
Triple = tuple[str, str, str]  # (gateway, provider, model); past max_series, provider and model are OTHER
LEARN_SERIES = 3600.0  # the first poll reads the last hour for the series that exist, to start them at 0
MAX_CATCH_UP = 86400.0  # after a long outage, at most the last day is counted; older minutes are lost
MAX_RULE_WINDOW = 31 * 86400.0  # a rule with a longer window gets no usage: analytics are not kept that long
RULES_MAX_AGE = 300.0  # the rules are read again when older: a new rule's usage shows within 5 minutes
MAX_SHOWN = 4  # gateways on the status page

GW = (*ACC, "gateway")
SERIES = (*GW, "provider", "model")
REQUESTS = Family(f"{NS}_gateway_requests", "Requests through the gateway, by provider and model.", SERIES, "counter")
CACHED = Family(f"{NS}_gateway_cached_requests", "Requests answered from the gateway's cache.", SERIES, "counter")
ERRORED = Family(f"{NS}_gateway_errored_requests", "Requests that ended in an error.", SERIES, "counter")
RATE_LIMITED = Family(f"{NS}_gateway_rate_limited_requests", "Requests refused with HTTP 429 by a rate limit "
                      "(the gateway's own, a spend-limit rule or the Unified Billing ceiling).", SERIES, "counter")
TOKENS = Family(f"{NS}_gateway_tokens", "Tokens in (prompt) and out (completion), cached or not.",
                (*SERIES, "direction", "cached"), "counter")
COST = Family(f"{NS}_gateway_cost", "Cost in US dollars, Cloudflare's estimate from token counts and model prices; "
              "wholesale true: Unified Billing (drawn from credits), false: your own provider key (BYOK).",
              (*SERIES, "wholesale"), "counter")
RULE_USAGE = Family(f"{NS}_spend_limit_rule_usage", "US dollars spent in the spend-limit rule's current window "
                    "within its scope (a rule partitioned by metadata: the value that spent most).", (*GW, "rule"))
FOLDED = Family(f"{NS}_gateway_analytics_folded_groups", "Analytics groups counted under provider and model "
                "\"other\" of their gateway: the account reached collectors.gateway_analytics.max_series.", ACC,
                "counter")
SKIPPED = Family(f"{NS}_gateway_analytics_skipped_seconds", "Analytics time never counted, whole minutes: after an "
                 "outage longer than a day, only the last day is counted.", ACC, "counter")


@dataclass(frozen=True, slots=True)
class Totals:
    """One (gateway, provider, model) series' counts since counting started."""

    requests: float = 0.0
    cached: float = 0.0
    errored: float = 0.0
    rate_limited: float = 0.0
    tokens_in_cached: float = 0.0
    tokens_in_uncached: float = 0.0
    tokens_out_cached: float = 0.0
    tokens_out_uncached: float = 0.0
    cost_wholesale: float = 0.0
    cost_byok: float = 0.0

    def plus(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)


@dataclass(frozen=True)
class RuleUsage:
    gateway: str
    rule: Rule
    usage: float | None  # None: not known this poll (see ``why``)
    why: str = ""


@dataclass(frozen=True)
class Analytics:
    counted_until: float  # Unix seconds: the minutes before it are counted
    series: Mapping[Triple, Totals]  # as exported
    held: Mapping[Triple, Totals] = field(default_factory=dict)  # counted, exported from the next poll on
    folded: int = 0
    skipped_seconds: float = 0.0
    rules: tuple[RuleUsage, ...] = ()
    refused: Mapping[str, float] = field(default_factory=dict)  # gateway -> rate-limited requests, this poll
    gateways: tuple[Gateway, ...] = ()  # with their rules, as read at ``gateways_read_at``
    gateways_read_at: float = -math.inf
    gateways_left_out: str | None = None  # what that read left out, said again until the next read


def _counts(row: query.Row) -> Totals:
    """What one group of the ``counted`` alias adds to its series."""
    rate_limited = row.count if row.dims.get("rateLimited") == 1 else 0.0
    wholesale = row.dims.get("wholesale") == 1
    return Totals(row.count, row.sums["cachedRequests"], row.sums["erroredRequests"], rate_limited,
                  row.sums["cachedTokensIn"], row.sums["uncachedTokensIn"], row.sums["cachedTokensOut"],
                  row.sums["uncachedTokensOut"], row.sums["cost"] if wholesale else 0.0,
                  0.0 if wholesale else row.sums["cost"])


def add_counts(old: Analytics | None, rows: Iterable[query.Row], max_series: int
               ) -> tuple[dict[Triple, Totals], dict[Triple, Totals], int]:
    """The series with the rows added, the counts held back, and how many rows were folded into their gateway's
    OTHER series because the account already has ``max_series`` series. A series the rows name for the first
    time is exported at 0 and its counts are held for the next poll, so that ``increase()`` sees all of them;
    the first poll (``old`` None) only learns the series."""
    series = {} if old is None else {t: v.plus(old.held.get(t, Totals())) for t, v in old.series.items()}
    held: dict[Triple, Totals] = {}
    folded = 0
    for row in rows:
        triple = (row.dims["gateway"], row.dims["provider"], row.dims["model"])
        if triple not in series and triple not in held and len(series) + len(held) >= max_series:
            triple, folded = (triple[0], OTHER, OTHER), folded + 1
        if old is None:
            series.setdefault(triple, Totals())
        elif triple in series:
            series[triple] = series[triple].plus(_counts(row))
        else:
            held[triple] = held.get(triple, Totals()).plus(_counts(row))
    for triple in held:
        series[triple] = Totals()
    return series, held, folded if old is not None else 0


def _matches(wanted: tuple[str, ...], value: str) -> bool:
    return not wanted or value in wanted


def scoped_spend(gateway: str, rule: Rule, rows: Iterable[query.Row]) -> float:
    """The spend of a window alias's rows within the rule's gateway, models and providers."""
    return math.fsum(r.sums["cost"] for r in rows if r.dims["gateway"] == gateway
                     and _matches(rule.models, r.dims["model"]) and _matches(rule.providers, r.dims["provider"]))


def metadata_spend(rule: Rule, rows: Iterable[query.Row]) -> float:
    """The spend of a metadata alias's rows (already filtered to the rule's gateway, models and providers): the
    requests whose metadata passes the rule's filters; partitioned, the spend of the value that spent most."""
    budgets: dict[tuple[str, ...], float] = {}
    for row in rows:
        keys, values = row.dims["metadataKeys"], row.dims["metadataValues"]
        metadata = dict(zip(keys, values, strict=True))  # the two lists name key and value in the same order
        if any(k not in metadata or (wanted is not None and metadata[k] not in wanted)
               for k, wanted in rule.metadata.items()):
            continue
        partition = tuple(metadata[k] for k, wanted in rule.metadata.items() if wanted is None)
        budgets[partition] = budgets.get(partition, 0.0) + row.sums["cost"]
    return max(budgets.values(), default=0.0)


def window_start(rule: Rule, now: float) -> float:
    """Sliding: ``window`` seconds ago. Fixed: the last multiple of ``window`` since the epoch (an assumption:
    Cloudflare does not say where a fixed window starts; a 86,400 s window is the UTC day). Never older than the
    analytics kept, whole minutes included."""
    start = math.floor(now / rule.window) * rule.window if rule.technique == "fixed" else now - rule.window
    return max(start, math.ceil((now - MAX_RULE_WINDOW) / 60) * 60)


def rule_usages(gateways: Iterable[Gateway], plan: query.Plan, answer: Mapping[str, list[query.Row]]
                ) -> tuple[RuleUsage, ...]:
    found = []
    for gw in gateways:
        for rule in gw.rules:
            alias = plan.aliases.get((gw.id, rule.id))
            if rule.window > MAX_RULE_WINDOW:
                found.append(RuleUsage(gw.id, rule, None, "its window is longer than 31 days, the analytics kept"))
            elif alias is None:
                found.append(RuleUsage(gw.id, rule, None, "past the query's alias limit"))
            elif alias in plan.truncated(answer):
                found.append(RuleUsage(gw.id, rule, None, f"more than {query.LIMIT:,} groups in its window"))
            elif alias.startswith(query.METADATA):
                found.append(RuleUsage(gw.id, rule, metadata_spend(rule, answer[alias])))
            else:
                found.append(RuleUsage(gw.id, rule, scoped_spend(gw.id, rule, answer[alias])))
    return tuple(found)


# --- the sample accounts ---


@dataclass(frozen=True)
class Flow:
    """Steady sample traffic: ``per_minute`` requests alike, every minute."""

    gateway: str
    provider: str
    model: str
    per_minute: float
    cost: float  # US dollars per request
    tokens_in: int = 0
    tokens_out: int = 0
    cached: float = 0.0  # the share served from cache, errored, likewise
    errored: float = 0.0
    wholesale: bool = True
    rate_limited: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)


DAY_COST = 1 / 1440  # one dollar a day, per minute
SAMPLE_TRAFFIC: dict[str, tuple[Flow, ...]] = {
    "production": (  # chat's gpt-4o-daily rule ($300 a day) at 85 %; batch refuses 5 requests a minute
        Flow("chat", "openai", "gpt-4o", 5, 255 * DAY_COST / 5, 1200, 350, cached=0.2),
        Flow("chat", "anthropic", "claude-3-5-sonnet", 3, 0.02, 900, 400),
        Flow("batch", "workers-ai", "@cf/meta/llama-3.1-8b-instruct", 50, 0.0001, 300, 80, wholesale=False),
        Flow("batch", "workers-ai", "@cf/meta/llama-3.1-8b-instruct", 5, 0.0, 300, 0, wholesale=False,
             rate_limited=True)),
    "bulk": (  # ingest's hourly-cap ($40 an hour of workers-ai) at 125 %; per-team's busiest team at 60 %
        Flow("ingest", "workers-ai", "@cf/baai/bge-base-en-v1.5", 20, 50 / 60 / 20, 500, 0),
        Flow("ingest", "anthropic", "claude-3-haiku", 1, 60 * DAY_COST, 800, 200, metadata={"team": "search"}),
        Flow("ingest", "anthropic", "claude-3-haiku", 1, 25 * DAY_COST, 800, 200, metadata={"team": "support"})),
    "research": (
        Flow("lab", "openai", "gpt-4o-mini", 4, 0.0006, 700, 300, wholesale=False),
        Flow("lab", "anthropic", "claude-3-5-haiku", 2, 0.003, 600, 250, wholesale=False),
        Flow("lab", "workers-ai", "@cf/meta/llama-3.1-8b-instruct", 6, 0.0001, 400, 100, errored=0.05),
        Flow("lab", "google-ai-studio", "gemini-1.5-flash", 3, 0.0004, 500, 200, cached=0.1, errored=0.02)),
    "staging": (Flow("staging", "openai", "gpt-4o-mini", 2, 0.0006, 700, 300),),
}


@dataclass(frozen=True)
class AnalyticsSample:
    flows: tuple[Flow, ...] = ()
    since: float = 0.0  # traffic flows from this time on (the sample's history begins)


def _sample(account: str, now: float, started: float) -> AnalyticsSample:
    return AnalyticsSample(SAMPLE_TRAFFIC.get(DEMO_NAMES.get(account, ""), ()), started - 2 * 86400)


def _answer(_: Any, request: SampleRequest) -> tuple[int, Any]:
    """Answers this collector's own query (not any GraphQL: the test fake executes queries against a schema)."""
    asked = query.sample_request(request.body)
    if asked is None:
        return 400, {"data": None, "errors": [{"message": "error parsing args: not a query this sample knows"}]}
    account_id, filters = asked
    sample = request.sample(account_id)
    if sample is None:
        return 200, {"data": None, "errors": [{"message": "not authorized for that account",
                                               "extensions": {"code": "authz"}}]}
    rows = {alias: query.sample_rows(alias, where, sample.flows, sample.since, request.now)
            for alias, where in filters.items()}
    return 200, {"data": {"viewer": {"accounts": [rows]}}, "errors": None}


# --- the collector ---


@dataclass(frozen=True)
class GatewayAnalyticsSettings(CollectorSettings):
    interval: float = setting(60.0, INTERVAL, "how often each account's analytics are read (one GraphQL query)")
    delay: float = setting(300.0, duration(0, 3600, zero=True), "how long after a minute ends before it is counted")
    max_series: int = setting(1000, integer(1, 100_000), "(gateway, provider, model) series per account")


class GatewayAnalyticsCollector(Collector[GatewayAnalyticsSettings, Analytics]):
    name = "gateway_analytics"
    title = "gateway analytics"
    settings_type = GatewayAnalyticsSettings
    columns = ("Gateways",)
    graphql_per_poll = 1
    routes = (Route("gateway_analytics", "/graphql", _answer, "POST"),)
    families = (REQUESTS, CACHED, ERRORED, RATE_LIMITED, TOKENS, COST, RULE_USAGE, FOLDED, SKIPPED)
    sample = staticmethod(_sample)
    now: Callable[[], float] = staticmethod(time.time)

    def requests_per_poll(self) -> float:
        return min(1.0, self.settings.interval / RULES_MAX_AGE)  # the gateways list, at most every RULES_MAX_AGE

    async def fetch(self, api: AccountApi, previous: Analytics | None) -> Fetched:
        now = self.now()
        if previous is not None and now - previous.gateways_read_at < RULES_MAX_AGE:
            gateways, left_out, read_at = previous.gateways, previous.gateways_left_out, previous.gateways_read_at
        else:
            (gateways, left_out), read_at = await fetch_gateways(api), now
        end = math.floor((now - self.settings.delay) / 60) * 60
        start = end - LEARN_SERIES if previous is None else max(previous.counted_until, end - MAX_CATCH_UP)
        skipped = 0.0 if previous is None else max(0.0, start - previous.counted_until)
        rules = sorted(((gw, rule) for gw in gateways for rule in gw.rules if rule.window <= MAX_RULE_WINDOW),
                       key=lambda pair: not pair[1].enabled)  # enabled first: past the alias limit, they keep usage
        scopes = [query.Scope(gw.id, rule.id, window_start(rule, now), rule.models, rule.providers,
                              tuple(rule.metadata)) for gw, rule in rules]
        plan = query.plan((start, end) if start < end else None, scopes)
        answer = query.read(await api.graphql(plan.document, plan.variables), plan)
        warnings = [w for w in (left_out,) if w]
        if skipped:
            warnings.append(f"{skipped / 60:,.0f} minutes were never counted: only the last day is read after an "
                            "outage")
        rows = answer.get(query.COUNTED, [])
        if query.COUNTED in plan.truncated(answer):
            warnings.append(str(api.fail("pagination", f"more than {query.LIMIT:,} groups in the counted minutes: "
                                         "the least costly were not counted; shorten the interval")))
        series, held, folded = add_counts(previous, rows, self.settings.max_series)
        usages = rule_usages(gateways, plan, answer)
        warnings += sorted({f"no usage for a rule: {u.why}" for u in usages if u.why})
        refused: dict[str, float] = {}
        for row in rows if previous is not None else ():
            if row.dims.get("rateLimited") == 1:
                refused[row.dims["gateway"]] = refused.get(row.dims["gateway"], 0.0) + row.count
        before = previous or Analytics(start, {})
        data = Analytics(max(end, start), MappingProxyType(series), MappingProxyType(held), before.folded + folded,
                         before.skipped_seconds + skipped, usages, MappingProxyType(refused), gateways, read_at,
                         left_out)
        return Fetched(data, summary={"series": len(series), "rules": len(usages), "minutes": max(0, end - start) / 60},
                       warning="; ".join(warnings) or None)

    def render(self, acc: Acc, data: Analytics, out: Sink) -> None:
        for (gateway, provider, model), t in data.series.items():
            labels = (*acc, gateway, provider, model)
            out.add(REQUESTS, labels, t.requests)
            out.add(CACHED, labels, t.cached)
            out.add(ERRORED, labels, t.errored)
            out.add(RATE_LIMITED, labels, t.rate_limited)
            for direction, cached, value in (("in", "true", t.tokens_in_cached), ("in", "false", t.tokens_in_uncached),
                                             ("out", "true", t.tokens_out_cached),
                                             ("out", "false", t.tokens_out_uncached)):
                out.add(TOKENS, (*labels, direction, cached), value)
            out.add(COST, (*labels, "true"), round(t.cost_wholesale, 10))
            out.add(COST, (*labels, "false"), round(t.cost_byok, 10))
        for usage in data.rules:
            if usage.usage is not None:
                out.add(RULE_USAGE, (*acc, usage.gateway, usage.rule.id), round(usage.usage, 10))
        out.add(FOLDED, acc, data.folded)
        out.add(SKIPPED, acc, data.skipped_seconds)

    def status(self, data: Analytics, now: float) -> tuple[StatusCell, ...]:
        """Per gateway, the enabled rule closest to its limit, and the requests a rate limit refused."""
        closest: dict[str, RuleUsage] = {}
        for usage in data.rules:
            if usage.usage is not None and usage.rule.enabled:
                best = closest.get(usage.gateway)
                if best is None or usage.usage / usage.rule.limit > (best.usage or 0.0) / best.rule.limit:
                    closest[usage.gateway] = usage
        lines: list[StatusLine] = []
        attention = False
        for gateway in sorted({*closest, *data.refused})[:MAX_SHOWN]:
            top = closest.get(gateway)
            if top is not None and top.usage is not None:
                share = top.usage / top.rule.limit
                text = f"{gateway} · {top.rule.id}: {share:.0%} of {dollars(top.rule.limit)}"
                near = share >= 0.8
                attention = attention or near
                lines.append(StatusLine(text + (" (reached: traffic refused)" if share >= 1 else ""),
                                        "warn" if near else ""))
            if data.refused.get(gateway):
                attention = True
                lines.append(StatusLine(f"{gateway}: {data.refused[gateway]:,.0f} requests refused by a rate limit",
                                        "warn"))
        return (StatusCell(tuple(lines), attention),)


COLLECTOR = GatewayAnalyticsCollector
