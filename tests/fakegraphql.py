"""A fake of Cloudflare's GraphQL Analytics API for AI Gateway: test support, not part of the product.

It runs the exporter's real documents through graphql-core against ``cloudflare_analytics.graphql`` beside this
file, so a misspelt field, a wrong scalar or a filter key the API lacks (``datetime_geq``) fails a test as it would
fail a production poll. ``aiGatewayRequestsAdaptiveGroups`` is answered from ``AiGatewayRequest`` events, grouped
by the dimensions each alias selects, without sampling. From an HTTP handler::

    fake = AnalyticsFake(now=clock)
    fake.add(ACCOUNT, AiGatewayRequest(at=t, gateway="prod", provider="openai", model="gpt-4o", cost=0.02))
    fake.inject("quota")  # the next answer only
    status, body = fake.answer(request_body, account_ids_allowed={ACCOUNT})

Errors are ``{"message", "path"?, "extensions": {"timestamp", "code"?}}`` with the path's elements strings, as in
Cloudflare's own example (``["viewer", "accounts", "0", "w0"]``); a success has ``"errors": null``. A query that
does not validate, a refused argument and a refused account get ``data: null`` with HTTP 200 (the reading in
shared/api), or with ``documented_statuses=True`` the statuses on Cloudflare's errors page (400 for a malformed
query or a node limit, 403 for authorization), so the exporter can be tested against both.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast, get_args

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    ValueNode,
    build_schema,
    graphql_sync,
)
from graphql.language import FloatValueNode, IntValueNode, StringValueNode

__all__ = ["FAULTS", "LIMIT_MAX", "AiGatewayRequest", "AnalyticsFake", "Fault", "schema"]

SCHEMA_PATH = Path(__file__).with_name("cloudflare_analytics.graphql")
LIMIT_MAX = 10_000  # rows per dataset alias; the real API refuses more

Fault = Literal["missing_permission", "quota", "quota_minute", "unavailable", "partial", "unauthorized"]
FAULTS: tuple[Fault, ...] = get_args(Fault)
# (HTTP status, message, extensions.code) of the faults that replace the whole answer. "quota" is the 5-minute
# budget, which the errors page lists with HTTP 429; "quota_minute" is the older per-minute message, sent inside
# an HTTP 200 like other GraphQL errors.
_FAULT_REPLIES: dict[str, tuple[int, str, str | None]] = {
    "missing_permission": (200, "authorization denied", "authz"),  # token without Account Analytics Read
    "quota": (429, "rate limiter budget depleted, try again after 5 minutes", None),
    "quota_minute": (200, "quota exceeded, please repeat your request in the next minute", None),
    "unavailable": (503, "too many queries in progress, please try again later", None),
    "unauthorized": (401, "Unauthorized", None),
}
_PARTIAL_MESSAGE = "limit reached, please try reduced time period"
# The status of each kind of refusal when documented_statuses is set (always 200 otherwise).
_DOCUMENTED = {"query": 400, "authz": 403}


@dataclass(frozen=True, kw_only=True)
class AiGatewayRequest:
    """One request through AI Gateway, as the analytics API counts it."""

    at: float  # Unix seconds
    gateway: str
    provider: str
    model: str
    cached: bool = False
    error: bool = False
    rate_limited: bool = False
    wholesale: bool = False  # Unified Billing: Cloudflare paid the provider and drew credits
    status_code: int = 200
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0  # US dollars
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    ingested_at: float | None = None  # when the API starts to show it (None: at ``at``): the ingestion delay
    count: int = 1  # that many identical requests (steady sample traffic in few events)

    @property
    def visible_from(self) -> float:
        return self.at if self.ingested_at is None else self.ingested_at


# ---- scalars: each checks its input, so a wrong type is refused like Cloudflare refuses it ----------------


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


_Convert = Callable[[Any], Any]


def _checked(expected: str, ok: _Convert, convert: _Convert = lambda v: v) -> _Convert:
    def parse(value: Any) -> Any:
        if not ok(value):
            raise TypeError(f"{expected} expected; got {value!r}")
        return convert(value)

    return parse


def _uint(bits: int) -> _Convert:
    return _checked(f"uint{bits}", lambda v: type(v) is int and 0 <= v < 1 << bits)  # bool is no int here


def _text(pattern: str) -> _Convert:
    return lambda v: isinstance(v, str) and re.fullmatch(pattern, v)


_STRING = _checked("string", lambda v: isinstance(v, str))
_FLOAT64 = _checked("float64", lambda v: type(v) in (int, float) and math.isfinite(v), float)
_TIME = "Time as RFC 3339 with a zone, such as 2026-12-04T18:42:00Z"  # a zoneless time names no instant
# name -> (parse an input value, the literal node types that may hold one, serialize an answer's value)
_SCALARS: dict[str, tuple[_Convert, tuple[type[ValueNode], ...], _Convert]] = {
    "string": (_STRING, (StringValueNode,), _STRING),
    "uint8": (_uint(8), (IntValueNode,), _uint(8)),
    "uint16": (_uint(16), (IntValueNode,), _uint(16)),
    "uint64": (_uint(64), (IntValueNode,), _uint(64)),
    "float64": (_FLOAT64, (IntValueNode, FloatValueNode), _FLOAT64),
    "Date": (_checked("Date as YYYY-MM-DD", _text(r"\d{4}-\d\d-\d\d"), date.fromisoformat), (StringValueNode,),
             date.isoformat),
    "Time": (_checked(_TIME, _text(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"),
                      lambda v: datetime.fromisoformat(v).astimezone(UTC)),
             (StringValueNode,), lambda v: v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
}


def _literal(parse: _Convert, kinds: tuple[type[ValueNode], ...]) -> Callable[..., Any]:
    def parse_literal(node: ValueNode, _variables: Any = None) -> Any:
        if not isinstance(node, kinds):
            raise TypeError(f"a {type(node).__name__.removesuffix('ValueNode').lower()} literal is not allowed here")
        raw = node.value  # type: ignore[attr-defined]  # every kind in _SCALARS has .value
        return parse(raw if isinstance(node, StringValueNode) else json.loads(raw))

    return parse_literal


# ---- dimensions, sums and filter operators ------------------------------------------------------------------


def _floored(step: int) -> Callable[[AiGatewayRequest], datetime]:
    return lambda e: _utc(e.at // step * step)


_DIMENSIONS: dict[str, Callable[[AiGatewayRequest], Any]] = {
    "gateway": lambda e: e.gateway,
    "provider": lambda e: e.provider,
    "model": lambda e: e.model,
    "cached": lambda e: int(e.cached),
    "error": lambda e: int(e.error),
    "rateLimited": lambda e: int(e.rate_limited),
    "wholesale": lambda e: int(e.wholesale),
    "statusCode": lambda e: e.status_code,
    "tokensIn": lambda e: e.tokens_in,
    "tokensOut": lambda e: e.tokens_out,
    "cost": lambda e: e.cost,
    "date": lambda e: _utc(e.at).date(),
    "datetimeMinute": _floored(60),
    "datetimeFiveMinutes": _floored(300),
    "datetimeFifteenMinutes": _floored(900),
    "datetimeHour": _floored(3600),
    "metadataKeys": lambda e: tuple(e.metadata),
    "metadataValues": lambda e: tuple(e.metadata.values()),
    "metadataRaw": lambda e: json.dumps(dict(e.metadata), separators=(",", ":")),
}


def _like(value: str, pattern: str) -> bool:
    """SQL LIKE: % is any run of characters, _ any one character, case-sensitive."""
    wildcards = {"%": ".*", "_": "."}
    return re.fullmatch("".join(wildcards.get(c, re.escape(c)) for c in pattern), value, re.DOTALL) is not None


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {  # the filter key's suffix -> (event's value, filter's value)
    "": operator.eq, "neq": operator.ne, "gt": operator.gt, "geq": operator.ge, "lt": operator.lt, "leq": operator.le,
    "in": lambda v, w: v in w, "notin": lambda v, w: v not in w,
    "like": _like, "notlike": lambda v, w: not _like(v, w),
    "has": operator.contains, "nothas": lambda v, w: w not in v,
    "hasall": lambda v, w: all(x in v for x in w), "hasany": lambda v, w: any(x in v for x in w),
    "isempty": lambda v, w: (len(v) == 0) == w,
}


def _matches(event: AiGatewayRequest, where: Mapping[str, Any]) -> bool:
    """Every key holds; AND: every nested filter holds; OR: at least one does (so an empty OR matches nothing).
    A key given as null sets no condition."""
    for key, wanted in where.items():
        if wanted is None:
            continue
        if key == "AND":
            ok = all(_matches(event, nested) for nested in wanted)
        elif key == "OR":
            ok = any(_matches(event, nested) for nested in wanted)
        else:
            name, _, operator = key.partition("_")  # dimension names are camelCase: the first "_" starts the suffix
            ok = _OPERATORS[operator](_DIMENSIONS[name](event), wanted)
        if not ok:
            return False
    return True


def _sums(events: Sequence[AiGatewayRequest]) -> dict[str, Any]:
    cached = [e for e in events if e.cached]
    uncached = [e for e in events if not e.cached]
    return {
        "cost": math.fsum(e.cost * e.count for e in events),
        "cachedRequests": sum(e.count for e in cached),
        "erroredRequests": sum(e.count for e in events if e.error),
        "cachedTokensIn": sum(e.tokens_in * e.count for e in cached),
        "cachedTokensOut": sum(e.tokens_out * e.count for e in cached),
        "uncachedTokensIn": sum(e.tokens_in * e.count for e in uncached),
        "uncachedTokensOut": sum(e.tokens_out * e.count for e in uncached),
    }


# ---- execution ----------------------------------------------------------------------------------------------


class _Refusal(Exception):
    """A query the real API refuses as a whole (data null): ``kind`` picks the documented status."""

    def __init__(self, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.code = kind, code


class _Info(Protocol):
    """What the resolvers read of graphql-core's GraphQLResolveInfo (generic in 3.3, not in 3.2)."""

    @property
    def context(self) -> Any: ...
    @property
    def field_nodes(self) -> list[FieldNode]: ...
    @property
    def fragments(self) -> dict[str, FragmentDefinitionNode]: ...


@dataclass(frozen=True)
class _Context:
    events: Mapping[str, Sequence[AiGatewayRequest]]  # per account, visible ones only, oldest first
    allowed: Collection[str]


def _accounts(_viewer: object, info: _Info, filter: Mapping[str, Any]) -> list[str]:
    tags = [t for t in [filter.get("accountTag"), *(filter.get("accountTag_in") or [])] if t is not None]
    if len(tags) != 1:
        raise _Refusal("an account-scoped query must name exactly 1 account", "query")
    if tags[0] not in cast(_Context, info.context).allowed:
        raise _Refusal("not authorized for that account", "authz", "authz")
    return tags


def _selected(selections: SelectionSetNode | None, info: _Info, name: str) -> list[FieldNode]:
    """The fields called ``name`` in a selection set, looking through fragments."""
    found: list[FieldNode] = []
    for node in selections.selections if selections else ():
        if isinstance(node, FieldNode) and node.name.value == name:
            found.append(node)
        elif isinstance(node, InlineFragmentNode):
            found += _selected(node.selection_set, info, name)
        elif isinstance(node, FragmentSpreadNode):
            found += _selected(info.fragments[node.name.value].selection_set, info, name)
    return found


def _dimension_names(info: _Info) -> list[str]:
    names: list[str] = []
    for dataset in info.field_nodes:
        for dims in _selected(dataset.selection_set, info, "dimensions"):
            names += [n for n in _DIMENSIONS if n not in names and _selected(dims.selection_set, info, n)]
    return names


def _order_value(row: Mapping[str, Any], key: str) -> Any:
    if key == "count":
        return row["count"]
    return row["sum"][key.removeprefix("sum_")] if key.startswith("sum_") else row["dimensions"][key]


def _request_groups(account_id: str, info: _Info, limit: int, filter: Mapping[str, Any] | None = None,
                    orderBy: Sequence[str] | None = None) -> list[dict[str, Any]]:
    if not 0 < limit <= LIMIT_MAX:
        raise _Refusal(f"limit must be positive number and not greater than {LIMIT_MAX}", "query")
    names = _dimension_names(info)
    groups: dict[tuple[Any, ...], list[AiGatewayRequest]] = {}
    for event in cast(_Context, info.context).events.get(account_id, ()):
        if _matches(event, filter or {}):
            groups.setdefault(tuple(_DIMENSIONS[n](event) for n in names), []).append(event)
    rows = [{"count": sum(e.count for e in events), "sum": _sums(events),
             "dimensions": dict(zip(names, key, strict=True))}
            for key, events in groups.items()]  # without orderBy: in order of each group's oldest event
    for order in reversed(orderBy or ()):  # stable sorts, last key first, give a lexicographic order
        key, _, direction = order.rpartition("_")
        if key != "count" and not key.startswith("sum_") and key not in names:
            # The fake's own strictness: a dimension outside the group has no single value to sort by.
            raise _Refusal(f"cannot order by {key}: select it under dimensions", "query")
        rows.sort(key=functools.partial(_order_value, key=key), reverse=direction == "DESC")
    return rows[:limit]


@functools.cache
def schema() -> GraphQLSchema:
    """The schema in cloudflare_analytics.graphql, with the fake's scalars and resolvers."""
    built = build_schema(SCHEMA_PATH.read_text())
    for name, (parse, kinds, serialize) in _SCALARS.items():
        scalar = cast(GraphQLScalarType, built.type_map[name])
        # Re-initialising the scalar built from SDL sets whichever hooks this graphql-core version calls (3.3
        # renamed them); assigning serialize afterwards would miss 3.3's coerce_output_value.
        GraphQLScalarType.__init__(scalar, name, serialize=serialize, parse_value=parse,
                                   parse_literal=_literal(parse, kinds), description=scalar.description,
                                   ast_node=scalar.ast_node)
    cast(GraphQLObjectType, built.type_map["Query"]).fields["viewer"].resolve = lambda *_: {}
    cast(GraphQLObjectType, built.type_map["Viewer"]).fields["accounts"].resolve = _accounts
    account = cast(GraphQLObjectType, built.type_map["Account"])
    account.fields["aiGatewayRequestsAdaptiveGroups"].resolve = _request_groups
    return built


class AnalyticsFake:
    """Request events per account, a clock, queued faults; ``answer`` replies to one POST /graphql body."""

    def __init__(self, now: Callable[[], float] = time.time, *, documented_statuses: bool = False) -> None:
        self.now = now
        self.documented_statuses = documented_statuses
        self.requests: list[Any] = []  # each request body as parsed from JSON (or None if it was not JSON)
        self._events: dict[str, list[AiGatewayRequest]] = {}
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()

    def add(self, account_id: str, *events: AiGatewayRequest) -> None:
        with self._lock:
            self._events.setdefault(account_id, []).extend(events)

    def inject(self, *faults: Fault) -> None:
        """Queue faults, one per coming answer, in order."""
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        with self._lock:
            self._faults.extend(faults)

    def answer(self, body: bytes, account_ids_allowed: Collection[str]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one request body, from a credential that may read these accounts."""
        now = self.now()
        try:
            request = json.loads(body)
        except ValueError:  # also UnicodeDecodeError
            request = None
        with self._lock:
            self.requests.append(request)
            fault = self._faults.popleft() if self._faults else None
            events = {a: sorted((e for e in es if e.visible_from <= now), key=lambda e: e.at)
                      for a, es in self._events.items()}
        if fault is not None and fault != "partial":
            status, message, code = _FAULT_REPLIES[fault]
            if code == "authz" and self.documented_statuses:
                status = _DOCUMENTED["authz"]
            return status, {"data": None, "errors": [_error(message, now, code=code)]}
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            return 400, {"data": None, "errors": [_error("request body must be a JSON object with a query", now)]}
        variables, operation = request.get("variables"), request.get("operationName")
        if not isinstance(variables, dict | None) or not isinstance(operation, str | None):
            return 400, {"data": None, "errors": [_error("variables must be an object, operationName a string", now)]}
        result = graphql_sync(schema(), request["query"], variable_values=variables, operation_name=operation,
                              context_value=_Context(events, account_ids_allowed))
        errors = result.errors or []
        for error in errors:  # an exception of the fake's own is a bug to see, not an answer to give
            if error.path and error.original_error and not isinstance(error.original_error, _Refusal | GraphQLError):
                raise error.original_error
        refusal = next((e.original_error for e in errors if isinstance(e.original_error, _Refusal)), None)
        if result.data is None or refusal is not None:
            kind = refusal.kind if refusal else "query"
            status = _DOCUMENTED[kind] if self.documented_statuses else 200
            return status, {"data": None, "errors": [_graphql_error(e, now) for e in errors]}
        body_out = {"data": result.data, "errors": [_graphql_error(e, now) for e in errors] or None}
        if fault == "partial":
            _break_last_alias(body_out, now)
        return 200, body_out


def _error(message: str, now: float, path: Sequence[str | int] | None = None, code: str | None = None
           ) -> dict[str, Any]:
    extensions = {"timestamp": _utc(now).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), **({"code": code} if code else {})}
    return {"message": message, **({"path": [str(p) for p in path]} if path else {}), "extensions": extensions}


def _graphql_error(error: GraphQLError, now: float) -> dict[str, Any]:
    code = error.original_error.code if isinstance(error.original_error, _Refusal) else None
    return _error(error.message, now, error.path, code)


def _break_last_alias(body: dict[str, Any], now: float) -> None:
    """The "partial" fault: the last dataset alias of the account gets null and an error; the others keep data."""
    viewer = body["data"].get("viewer") or {}
    account = (viewer.get("accounts") or [{}])[0]
    if account:
        alias = list(account)[-1]
        account[alias] = None
        path = ["viewer", "accounts", "0", alias]
        body["errors"] = [*(body["errors"] or []), _error(_PARTIAL_MESSAGE, now, path)]
