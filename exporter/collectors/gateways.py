"""``GET /accounts/{id}/ai-gateway/gateways``: each gateway's settings, its rate limit and its spend-limit rules.

Paginated the V4 way (``page``, ``per_page``; ``result_info.total_count``); one request per page. Token permission:
AI Gateway Read. A gateway or rule the exporter cannot read is left out, counted in ``api_errors_total`` (reason
invalid_response) and logged; the others are exported. What each rule measures is in docs/billing.md; the spend in
a rule's current window comes from the analytics collector, which reads the rules with ``parse_gateway``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from exporter.cloudflare.account import AccountApi
from exporter.collectors._wire import is_finite, known_label
from exporter.collectors.base import ACC, NS, Acc, Collector, Family, Fetched, Route, SampleRequest, Sink
from exporter.collectors.cells import StatusCell, StatusLine
from exporter.config.model import CollectorSettings, setting
from exporter.config.values import INTERVAL
from exporter.samples import DEMO_NAMES, envelope, error_envelope, query_int

PATH = "gateways"
GW = (*ACC, "gateway")
RULE = (*GW, "rule")
UNKNOWN = "unknown"
MAX_RULES_PER_GATEWAY = 20  # Cloudflare's own maximum; more in an answer are left out and counted
MAX_SCOPE_CHARS = 200  # the scope label: a summary of the rule's filters, cut to this length
MAX_SHOWN = 4  # gateways named on the status page; the rest are counted
_GATEWAY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # what Cloudflare allows in a gateway id
_TEXT_LIMIT = 200  # a rule id, model, provider or metadata key or value longer than this is malformed

INFO = Family(f"{NS}_gateway_info", "An AI gateway of the account; always 1. Booleans are true/false, a setting "
              "the API leaves out is unknown.", (*GW, "workers_ai_billing_mode", "byok_only", "authentication",
                                                 "collect_logs"))
RATE_LIMIT = Family(f"{NS}_gateway_rate_limit_requests", "Requests the gateway's rate limit allows per interval; "
                    "absent when it has none.", (*GW, "technique"))
RATE_INTERVAL = Family(f"{NS}_gateway_rate_limit_interval_seconds", "The interval of the gateway's rate limit.",
                       GW)
RULE_LIMIT = Family(f"{NS}_spend_limit_rule_limit", "The spend-limit rule's budget per window, US dollars.", RULE)
RULE_WINDOW = Family(f"{NS}_spend_limit_rule_window_seconds", "The spend-limit rule's window.", RULE)
RULE_ENABLED = Family(f"{NS}_spend_limit_rule_enabled", "1 when the rule and the gateway's spend limits are on "
                      "(over budget, requests in its scope get HTTP 429), else 0.", RULE)
RULE_INFO = Family(f"{NS}_spend_limit_rule_info", "The spend-limit rule's technique (fixed or sliding window) and "
                   "scope (which models, providers or metadata it counts); always 1.", (*RULE, "technique", "scope"))


@dataclass(frozen=True)
class Rule:
    """One spend-limit rule. ``models``/``providers`` empty: no filter. ``metadata`` maps a key to the values
    that count (filter) or to None (a budget per value of that key: partition)."""

    id: str  # the API's id, or "#N", its 1-based position
    limit: float  # US dollars
    window: float  # seconds
    enabled: bool  # the rule and its gateway's spend limits
    technique: str  # fixed | sliding | other | unknown
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    metadata: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)

    @property
    def partitioned(self) -> bool:
        return any(values is None for values in self.metadata.values())

    @property
    def scope(self) -> str:
        parts = [f"model={','.join(self.models)}"] if self.models else []
        parts += [f"provider={','.join(self.providers)}"] if self.providers else []
        parts += [f"metadata:{key}={'partition' if values is None else ','.join(values)}"
                  for key, values in self.metadata.items()]
        text = ";".join(parts) or "all"
        return text if len(text) <= MAX_SCOPE_CHARS else text[:MAX_SCOPE_CHARS - 1] + "…"


@dataclass(frozen=True)
class Gateway:
    id: str
    billing_mode: str  # workers_ai_billing_mode: postpaid | unified | other | unknown
    byok_only: str  # true | false | unknown, and likewise:
    authentication: str
    collect_logs: str
    rate_limit: float | None = None  # requests per interval; None: no rate limit
    rate_interval: float | None = None
    rate_technique: str = UNKNOWN
    rules: tuple[Rule, ...] = ()
    skipped: int = 0  # rules left out: malformed, repeated, or past MAX_RULES_PER_GATEWAY


_Item = TypeVar("_Item", Rule, Gateway)


def _flag(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else UNKNOWN


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _TEXT_LIMIT else None


def _positive(value: Any) -> float | None:
    return float(value) if is_finite(value) and value > 0 else None


def _technique(value: Any) -> str:
    return known_label(value, ("fixed", "sliding")) if isinstance(value, str) else UNKNOWN


def _filter(value: Any) -> tuple[str, ...] | None:
    """The values of ``{mode: filter, values: [...]}``; () when absent; None when malformed."""
    if value is None:
        return ()
    if not isinstance(value, dict) or value.get("mode") != "filter" or not isinstance(value.get("values"), list):
        return None
    values = tuple(_text(v) for v in value["values"])
    return None if not values or None in values else tuple(v for v in values if v is not None)


def _metadata(value: Any) -> dict[str, tuple[str, ...] | None] | None:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_RULES_PER_GATEWAY:
        return None
    found: dict[str, tuple[str, ...] | None] = {}
    for key, spec in value.items():
        if _text(key) is None or not isinstance(spec, dict):
            return None
        if spec.get("mode") == "partition":
            found[key] = None
        elif (values := _filter(spec)) is not None and values:
            found[key] = values
        else:
            return None
    return found


def parse_rule(raw: Any, position: int, limits_on: bool) -> Rule | None:
    """One wire rule, or None when it is malformed (its limit, window or scope cannot be read)."""
    if not isinstance(raw, dict):
        return None
    limit, window = _positive(raw.get("limit")), _positive(raw.get("window"))
    models, providers = _filter(raw.get("model")), _filter(raw.get("provider"))
    metadata = _metadata(raw.get("metadata"))
    rule_id = raw.get("id")
    if rule_id is not None and _text(rule_id) is None:
        return None
    if limit is None or window is None or models is None or providers is None or metadata is None:
        return None
    enabled = raw.get("enabled") is not False and limits_on  # left out: on, as the API applies rules by default
    return Rule(rule_id or f"#{position}", limit, window, enabled, _technique(raw.get("technique")), models,
                providers, metadata)


def _first_of_each_id(items: Iterable[_Item]) -> list[_Item]:
    """The items without a repeated id (one id must be one series), the first of each kept."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            kept.append(item)
    return kept


def parse_gateway(raw: Any) -> Gateway | None:
    """One wire gateway, or None when it has no usable id. Settings it leaves out are unknown."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not _GATEWAY_ID_RE.fullmatch(raw["id"]):
        return None
    mode = raw.get("workers_ai_billing_mode")
    rate = _positive(raw.get("rate_limiting_limit"))
    interval = _positive(raw.get("rate_limiting_interval"))
    spend = raw.get("spend_limits")
    spend = spend if isinstance(spend, dict) else {}
    raw_rules: list[Any] = spend["rules"] if isinstance(spend.get("rules"), list) else []
    limits_on = spend.get("enabled") is not False
    parsed = (parse_rule(r, n, limits_on) for n, r in enumerate(raw_rules[:MAX_RULES_PER_GATEWAY], 1))
    kept = tuple(_first_of_each_id(r for r in parsed if r is not None))
    return Gateway(
        id=raw["id"],
        billing_mode=known_label(mode, ("postpaid", "unified")) if isinstance(mode, str) else UNKNOWN,
        byok_only=_flag(raw.get("byok_only")), authentication=_flag(raw.get("authentication")),
        collect_logs=_flag(raw.get("collect_logs")),
        rate_limit=rate if rate is not None and interval is not None else None, rate_interval=interval,
        rate_technique=_technique(raw.get("rate_limiting_technique")),
        rules=kept, skipped=len(raw_rules) - len(kept))


async def fetch_gateways(api: AccountApi) -> tuple[tuple[Gateway, ...], str | None]:
    """Every gateway of the account (all pages), and what was left out: malformed gateways and rules are
    counted (api_errors_total, reason invalid_response), the rest is kept."""
    read = await api.get_pages(PATH, {}, None, parse_gateway)
    gateways = tuple(_first_of_each_id(g for g in read.items if g is not None))
    left_out = len(read.items) - len(gateways) + sum(g.skipped for g in gateways)
    if not read.complete:
        return gateways, "the gateways list is incomplete: the API ignores the page parameter"
    if not left_out:
        return gateways, None
    return gateways, str(api.fail("invalid_response", f"{left_out} malformed or repeated gateways or spend-limit "
                                  f"rules were left out (at most {MAX_RULES_PER_GATEWAY} rules per gateway are read)"))


# --- the sample accounts ---


def _rule(rule_id: str, limit: float, window: float, technique: str = "sliding", **scope: Any) -> dict[str, Any]:
    return {"id": rule_id, "limit": limit, "limitType": "cost", "window": window, "enabled": True,
            "technique": technique, **scope}


def _gateway(gateway_id: str, *rules: dict[str, Any], mode: str = "unified", byok_only: bool = False,
             rate: tuple[int, int, str] | None = None, limits_on: bool = True) -> dict[str, Any]:
    limit, interval, technique = rate or (None, None, None)
    return {"id": gateway_id, "collect_logs": True, "authentication": True, "byok_only": byok_only,
            "workers_ai_billing_mode": mode, "rate_limiting_limit": limit, "rate_limiting_interval": interval,
            "rate_limiting_technique": technique, "cache_ttl": 0, "created_at": "2026-06-05T10:00:00Z",
            "spend_limits": {"enabled": limits_on, "rules": list(rules)} if rules else None}


# The sample accounts' gateways; the analytics samples send traffic through them that puts gpt-4o-daily near
# (85 %), hourly-cap over (125 %) and per-team's busiest team at 60 % of its budget.
SAMPLE_GATEWAYS: dict[str, list[dict[str, Any]]] = {
    "production": [
        _gateway("chat", _rule("daily-budget", 5000, 86400, "fixed"),
                 _rule("gpt-4o-daily", 300, 86400, model={"mode": "filter", "values": ["gpt-4o"]})),
        _gateway("batch", mode="postpaid", byok_only=True, rate=(60, 60, "sliding"))],
    "bulk": [_gateway("ingest", _rule("hourly-cap", 40, 3600, provider={"mode": "filter", "values": ["workers-ai"]}),
                      _rule("per-team", 100, 86400, provider={"mode": "filter", "values": ["anthropic"]},
                            metadata={"team": {"mode": "partition"}}))],
    "research": [_gateway("lab", mode="postpaid")],
    "staging": [_gateway("staging", _rule("staging-cap", 25, 86400, "fixed"), limits_on=False)],
}


@dataclass(frozen=True)
class GatewaysSample:
    gateways: list[Any] = field(default_factory=list)  # wire-format gateways


def _sample(account: str, now: float, started: float) -> GatewaysSample:
    return GatewaysSample(SAMPLE_GATEWAYS.get(DEMO_NAMES.get(account, ""), []))


def _answer(sample: GatewaysSample, request: SampleRequest) -> tuple[int, Any]:
    try:
        page, per_page = query_int(request.query, "page", 1, 10**9), query_int(request.query, "per_page", 20, 50)
    except ValueError:
        return 400, error_envelope(1001, "Invalid page or per_page")
    chunk = sample.gateways[(page - 1) * per_page:page * per_page]
    return 200, envelope(chunk, {"page": page, "per_page": per_page, "count": len(chunk),
                                 "total_count": len(sample.gateways)})


# --- the collector ---


@dataclass(frozen=True)
class GatewaysSettings(CollectorSettings):
    interval: float = setting(300.0, INTERVAL, "how often each account's gateways and their rules are read")


class GatewaysCollector(Collector[GatewaysSettings, tuple[Gateway, ...]]):
    name = "gateways"
    title = "gateways"
    settings_type = GatewaysSettings
    columns = ("Gateways",)
    routes = (Route("gateways", PATH, _answer),)
    families = (INFO, RATE_LIMIT, RATE_INTERVAL, RULE_LIMIT, RULE_WINDOW, RULE_ENABLED, RULE_INFO)
    sample = staticmethod(_sample)

    async def fetch(self, api: AccountApi, previous: tuple[Gateway, ...] | None) -> Fetched:
        gateways, left_out = await fetch_gateways(api)
        return Fetched(gateways, summary={"gateways": len(gateways), "rules": sum(len(g.rules) for g in gateways)},
                       warning=left_out)

    def render(self, acc: Acc, data: tuple[Gateway, ...], out: Sink) -> None:
        for gw in data:
            labels = (*acc, gw.id)
            out.add(INFO, (*labels, gw.billing_mode, gw.byok_only, gw.authentication, gw.collect_logs), 1.0)
            if gw.rate_limit is not None and gw.rate_interval is not None:
                out.add(RATE_LIMIT, (*labels, gw.rate_technique), gw.rate_limit)
                out.add(RATE_INTERVAL, labels, gw.rate_interval)
            for rule in gw.rules:
                rule_labels = (*labels, rule.id)
                out.add(RULE_LIMIT, rule_labels, rule.limit)
                out.add(RULE_WINDOW, rule_labels, rule.window)
                out.add(RULE_ENABLED, rule_labels, 1.0 if rule.enabled else 0.0)
                out.add(RULE_INFO, (*rule_labels, rule.technique, rule.scope), 1.0)

    def status(self, data: tuple[Gateway, ...], now: float) -> tuple[StatusCell, ...]:
        if not data:
            return (StatusCell((StatusLine("no gateways"),)),)
        lines = []
        for gw in data[:MAX_SHOWN]:
            limits = []
            if gw.rules:
                off = "" if any(r.enabled for r in gw.rules) else " (off)"
                limits.append(f"{len(gw.rules)} spend-limit rule{'' if len(gw.rules) == 1 else 's'}{off}")
            if gw.rate_limit:
                limits.append(f"rate limit {gw.rate_limit:g} per {gw.rate_interval:g} s")
            lines.append(StatusLine(f"{gw.id}: {', '.join(limits) or 'no limits'}"))
        if len(data) > MAX_SHOWN:
            lines.append(StatusLine(f"and {len(data) - MAX_SHOWN} more", "note"))
        return (StatusCell(tuple(lines)),)


COLLECTOR = GatewaysCollector
