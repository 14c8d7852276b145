"""The one GraphQL query of a gateway analytics poll: its aliases (``plan``), reading the answer (``read``), and
the sample answer of ``--demo`` (``sample_request``, ``sample_rows``).

Filters go in variables, never into the document's text, so no value from the API is ever parsed as GraphQL.
Time is filtered through ``datetimeMinute`` (the dataset has no plain ``datetime``).
"""

from __future__ import annotations

import calendar
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from exporter.collectors._wire import Malformed, is_finite

DATASET = "aiGatewayRequestsAdaptiveGroups"
FILTER = "AccountAiGatewayRequestsAdaptiveGroupsFilter_InputObject"
LIMIT = 10_000  # groups per alias: the API's maximum
MAX_ALIASES = 40  # window and metadata aliases per query; rules past them have no usage that poll
MAX_LABEL_CHARS = 200  # a gateway, provider or model name longer than this is malformed
COUNTED, WINDOW, METADATA = "counted", "w", "m"
COUNT_SUMS = ("cost", "cachedRequests", "erroredRequests", "cachedTokensIn", "cachedTokensOut", "uncachedTokensIn",
              "uncachedTokensOut")
COUNT_DIMS = ("gateway", "provider", "model", "wholesale", "rateLimited")
WINDOW_DIMS = ("gateway", "provider", "model")
METADATA_DIMS = ("metadataKeys", "metadataValues")
FIELDS = {COUNTED: ("count", COUNT_SUMS, COUNT_DIMS), WINDOW: ("", ("cost",), WINDOW_DIMS),
          METADATA: ("", ("cost",), METADATA_DIMS)}


def minute(at: float) -> str:
    """The RFC 3339 time of the minute holding ``at``."""
    return time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(math.floor(at / 60) * 60))


def _kind(alias: str) -> str:
    return COUNTED if alias == COUNTED else alias[0]


@dataclass(frozen=True)
class Row:
    """One group of an alias: its request count, sums and dimensions."""

    count: float
    sums: Mapping[str, float]
    dims: Mapping[str, Any]


@dataclass(frozen=True)
class Scope:
    """What a spend-limit rule counts: since when, on which gateway, which models, providers, metadata keys."""

    gateway: str
    rule: str
    since: float  # Unix seconds: the start of its current window
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    metadata_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    document: str
    variables: dict[str, Any]
    aliases: Mapping[tuple[str, str], str]  # (gateway, rule id) -> the alias its usage is read from

    @staticmethod
    def truncated(answer: Mapping[str, list[Row]]) -> set[str]:
        """The aliases whose answer may be cut short (as many groups as the limit)."""
        return {alias for alias, rows in answer.items() if len(rows) >= LIMIT}


def _selection(alias: str) -> str:
    count, sums, dims = FIELDS[_kind(alias)]
    return (f"{alias}: {DATASET}(limit: {LIMIT}, filter: ${alias}, orderBy: [sum_cost_DESC]) "
            f"{{ {count} sum {{ {' '.join(sums)} }} dimensions {{ {' '.join(dims)} }} }}")


def plan(counted: tuple[float, float] | None, scopes: Iterable[Scope]) -> Plan:
    """The query: ``counted`` minutes [start, end) if any, a window alias per distinct window start (the
    minute of each rule's start), a metadata alias per rule scoped by metadata."""
    filters: dict[str, Any] = {}
    if counted is not None:
        filters[COUNTED] = {"datetimeMinute_geq": minute(counted[0]), "datetimeMinute_lt": minute(counted[1])}
    aliases: dict[tuple[str, str], str] = {}
    windows: dict[str, str] = {}  # the start minute -> its alias
    for scope in scopes:
        since = minute(scope.since)
        alias = None if scope.metadata_keys else windows.get(since)
        if alias is not None:
            if scope.gateway not in filters[alias]["gateway_in"]:
                filters[alias]["gateway_in"].append(scope.gateway)
        elif len(filters) - (COUNTED in filters) >= MAX_ALIASES:
            continue
        elif scope.metadata_keys:
            alias = f"{METADATA}{len(filters)}"
            filters[alias] = {"AND": [
                {"datetimeMinute_geq": since}, {"gateway": scope.gateway},
                *([{"model_in": list(scope.models)}] if scope.models else []),
                *([{"provider_in": list(scope.providers)}] if scope.providers else []),
                *({"metadataKeys_has": key} for key in scope.metadata_keys)]}
        else:
            alias = windows[since] = f"{WINDOW}{len(filters)}"
            filters[alias] = {"datetimeMinute_geq": since, "gateway_in": [scope.gateway]}
        aliases[(scope.gateway, scope.rule)] = alias
    parameters = ", ".join(["$accountTag: string!", *(f"${alias}: {FILTER}!" for alias in filters)])
    body = " ".join(_selection(alias) for alias in filters)
    document = (f"query GatewayAnalytics({parameters}) {{ viewer {{ accounts(filter: {{accountTag: $accountTag}}) "
                f"{{ {body} }} }} }}")
    return Plan(document, filters, aliases)


def _number(value: Any, where: str) -> float:
    if not is_finite(value) or value < 0:
        raise Malformed(f"graphql: {where} is not a count or a cost (got {str(value)[:40]})")
    return float(value)


def _label(value: Any, where: str) -> str:
    if value is None or value == "":
        return "unknown"
    if not isinstance(value, str) or len(value) > MAX_LABEL_CHARS:
        raise Malformed(f"graphql: {where} is not a name of at most {MAX_LABEL_CHARS} characters")
    return value


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed(f"graphql: {where} is not a list of strings")
    return tuple(value)


def _row(raw: Any, alias: str, index: int) -> Row:
    where = f"{alias}[{index}]"
    count_field, sums, dims = FIELDS[_kind(alias)]
    sum_obj, dim_obj = (raw.get("sum"), raw.get("dimensions")) if isinstance(raw, dict) else (None, None)
    if not isinstance(sum_obj, dict) or not isinstance(dim_obj, dict):
        raise Malformed(f"graphql: {where} has no sum or dimensions object")
    count = _number(raw.get("count"), f"{where}.count") if count_field else 0.0
    found: dict[str, Any] = {}
    for name in dims:
        value = dim_obj.get(name)
        if name in ("wholesale", "rateLimited"):
            found[name] = 1 if value == 1 else 0
        elif name in METADATA_DIMS:
            found[name] = _texts(value, f"{where}.dimensions.{name}")
        else:
            found[name] = _label(value, f"{where}.dimensions.{name}")
    if len(found.get("metadataKeys", ())) != len(found.get("metadataValues", ())):
        raise Malformed(f"graphql: {where} has not as many metadata values as keys")
    return Row(count, {name: _number(sum_obj.get(name), f"{where}.sum.{name}") for name in sums}, found)


def read(data: Mapping[str, Any], asked: Plan) -> dict[str, list[Row]]:
    """Every alias's groups. An answer without the account, or with a malformed group, is refused whole: a
    sum with a group left out would be a wrong number, not a smaller one."""
    viewer = data.get("viewer")
    accounts = viewer.get("accounts") if isinstance(viewer, dict) else None
    if not isinstance(accounts, list) or len(accounts) != 1 or not isinstance(accounts[0], dict):
        raise Malformed("graphql: the answer does not hold the account: the API token may not read its analytics "
                        "(Account Analytics Read)", "auth")
    out: dict[str, list[Row]] = {}
    for alias in asked.variables:
        groups = accounts[0].get(alias)
        if not isinstance(groups, list):
            raise Malformed(f"graphql: {alias} is not a list of groups")
        if len(groups) > LIMIT:
            raise Malformed(f"graphql: {alias} has {len(groups):,} groups, more than the limit of {LIMIT:,}")
        out[alias] = [_row(raw, alias, n) for n, raw in enumerate(groups)]
    return out


# --- the sample answer ---


class SampleFlow(Protocol):
    """Steady sample traffic (the analytics collector's ``Flow``)."""

    @property
    def gateway(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def per_minute(self) -> float: ...
    @property
    def cost(self) -> float: ...
    @property
    def tokens_in(self) -> int: ...
    @property
    def tokens_out(self) -> int: ...
    @property
    def cached(self) -> float: ...
    @property
    def errored(self) -> float: ...
    @property
    def wholesale(self) -> bool: ...
    @property
    def rate_limited(self) -> bool: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...


def sample_request(body: bytes) -> tuple[str, dict[str, Any]] | None:
    """(account id, filters by alias) of a query ``plan`` made; None for anything else."""
    try:
        asked = json.loads(body)
        variables = dict(asked["variables"])
        account_id = variables.pop("accountTag")
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(account_id, str) or not all(a == COUNTED or a[:1] in (WINDOW, METADATA) for a in variables):
        return None
    return account_id, variables


def _passes(flow: SampleFlow, where: Mapping[str, Any]) -> bool:
    """The filter conditions ``plan`` writes, besides time."""
    names = {"gateway": flow.gateway, "model": flow.model, "provider": flow.provider}
    for key, wanted in where.items():
        field_name, _, operator = key.partition("_")
        if key == "AND":
            passed = all(_passes(flow, part) for part in wanted)
        elif key == "metadataKeys_has":
            passed = wanted in flow.metadata
        elif field_name in names:
            passed = names[field_name] in wanted if operator == "in" else names[field_name] == wanted
        else:
            passed = True  # time: see _since
        if not passed:
            return False
    return True


def _since(where: Mapping[str, Any]) -> tuple[float, float]:
    def parse(text: str) -> float:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))

    bounds = [where, *where.get("AND", ())]
    start = next((parse(b["datetimeMinute_geq"]) for b in bounds if "datetimeMinute_geq" in b), -math.inf)
    end = next((parse(b["datetimeMinute_lt"]) for b in bounds if "datetimeMinute_lt" in b), math.inf)
    return start, end


def sample_rows(alias: str, where: Mapping[str, Any], flows: Sequence[SampleFlow], since: float,
                now: float) -> list[dict[str, Any]]:
    """The groups of one alias over steady flows that began at ``since``, as the API would send them."""
    start, end = _since(where)
    minutes = max(0.0, min(end, now) - max(start, since)) / 60
    _, sums, dims = FIELDS[_kind(alias)]
    groups: dict[tuple[Any, ...], dict[str, float]] = {}
    for flow in flows:
        if not minutes or not _passes(flow, where):
            continue
        n = flow.per_minute * minutes
        cached = n * flow.cached
        dim_values = {"gateway": flow.gateway, "provider": flow.provider, "model": flow.model,
                      "wholesale": int(flow.wholesale), "rateLimited": int(flow.rate_limited),
                      "metadataKeys": tuple(flow.metadata), "metadataValues": tuple(flow.metadata.values())}
        values = {"count": n, "cost": n * flow.cost, "cachedRequests": cached, "erroredRequests": n * flow.errored,
                  "cachedTokensIn": cached * flow.tokens_in, "uncachedTokensIn": (n - cached) * flow.tokens_in,
                  "cachedTokensOut": cached * flow.tokens_out, "uncachedTokensOut": (n - cached) * flow.tokens_out}
        group = groups.setdefault(tuple(dim_values[d] for d in dims), dict.fromkeys(values, 0.0))
        for name, value in values.items():
            group[name] += value
    rows = [{"count": round(g["count"]), "sum": {s: g[s] if s == "cost" else round(g[s]) for s in sums},
             "dimensions": {d: list(v) if isinstance(v, tuple) else v for d, v in zip(dims, key, strict=True)}}
            for key, g in groups.items()]
    return sorted(rows, key=lambda r: -r["sum"]["cost"])
