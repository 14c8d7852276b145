"""Tests of the fake GraphQL Analytics API (tests/fakegraphql.py): schema checks, grouping, filters, faults."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLObjectType

from tests import fakegraphql
from tests.fakegraphql import FAULTS, AiGatewayRequest, AnalyticsFake, Fault, schema

pytestmark = pytest.mark.timeout(20)

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 12, 4, 18, 0, tzinfo=UTC).timestamp()  # 2026-12-04T18:00:00Z
FILTER = "AccountAiGatewayRequestsAdaptiveGroupsFilter_InputObject"

# A document of the kind the exporter sends: one per account per poll, one alias per question.
DOCUMENT = f"""
query GatewayAnalytics($accountTag: string!, $counted: {FILTER}!, $w0: {FILTER}!) {{
  viewer {{ accounts(filter: {{accountTag: $accountTag}}) {{
    counted: aiGatewayRequestsAdaptiveGroups(limit: 10000, filter: $counted, orderBy: [sum_cost_DESC]) {{
      count
      sum {{ cost cachedRequests erroredRequests cachedTokensIn cachedTokensOut uncachedTokensIn uncachedTokensOut }}
      dimensions {{ gateway provider model wholesale rateLimited }}
    }}
    w0: aiGatewayRequestsAdaptiveGroups(limit: 10000, filter: $w0, orderBy: [sum_cost_DESC]) {{
      sum {{ cost }} dimensions {{ gateway provider model }}
    }}
  }} }}
}}
"""
WINDOW = {"datetimeMinute_geq": "2026-12-04T18:00:00Z", "datetimeMinute_lt": "2026-12-04T18:05:00Z"}

# One query of one alias, for the tests of single features.
ORDER = "AccountAiGatewayRequestsAdaptiveGroupsOrderBy"
GROUPS = f"""
query Groups($account: string!, $filter: {FILTER}, $limit: uint64!, $orderBy: [{ORDER}!]) {{
  viewer {{ accounts(filter: {{accountTag: $account}}) {{
    groups: aiGatewayRequestsAdaptiveGroups(limit: $limit, filter: $filter, orderBy: $orderBy) {{
      count sum {{ cost }} dimensions {{ DIMENSIONS }}
    }}
  }} }}
}}
"""


def request(at: float, model: str = "gpt-4o", **fields: Any) -> AiGatewayRequest:
    defaults: dict[str, Any] = {"gateway": "prod", "provider": "openai"}
    return AiGatewayRequest(at=at, model=model, **{**defaults, **fields})


def post(fake: AnalyticsFake, query: str, variables: dict[str, Any] | None = None,
         allowed: tuple[str, ...] = (ACCOUNT,), **extra: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"query": query, "variables": variables, **extra}).encode()
    status, answer = fake.answer(body, allowed)
    json.dumps(answer, allow_nan=False)  # what an HTTP handler will do with it: must not raise
    return status, answer


def groups(fake: AnalyticsFake, where: dict[str, Any] | None = None, *, dimensions: str = "model",
           limit: int = 10000, order_by: list[str] | None = None) -> list[dict[str, Any]]:
    variables = {"account": ACCOUNT, "filter": where, "limit": limit, "orderBy": order_by}
    status, answer = post(fake, GROUPS.replace("DIMENSIONS", dimensions), variables)
    assert (status, answer["errors"]) == (200, None), answer
    return cast(list[dict[str, Any]], answer["data"]["viewer"]["accounts"][0]["groups"])


def models(fake: AnalyticsFake, where: dict[str, Any]) -> set[str]:
    return {row["dimensions"]["model"] for row in groups(fake, where)}


def refusal(status_and_answer: tuple[int, dict[str, Any]]) -> str:
    """The one error message of a refused query (data null, HTTP 200)."""
    status, answer = status_and_answer
    assert status == 200 and answer["data"] is None, answer
    [error] = answer["errors"]
    assert set(error) <= {"message", "path", "extensions"} and "timestamp" in error["extensions"]
    return cast(str, error["message"])


@pytest.fixture
def fake() -> AnalyticsFake:
    return AnalyticsFake(now=lambda: T0 + 3600)


# ---- the realistic document -------------------------------------------------------------------------------


def test_document_groups_and_sums(fake: AnalyticsFake) -> None:
    fake.add(
        ACCOUNT,
        request(T0 + 1, cost=0.5, tokens_in=100, tokens_out=10, wholesale=True, metadata={"team": "ml"}),
        request(T0 + 61, cost=0.25, tokens_in=40, tokens_out=4, wholesale=True, cached=True),
        request(T0 + 62, cost=0.0, tokens_in=7, tokens_out=0, wholesale=True, error=True, status_code=500),
        request(T0 + 120, model="claude", provider="anthropic", cost=2.0, tokens_in=1000, tokens_out=300),
        request(T0 + 130, gateway="dev", cost=0.125, rate_limited=True, status_code=429, metadata={"team": "ml"}),
        request(T0 + 300, cost=9.0),  # 18:05:00: outside the window
    )
    fake.add(OTHER, request(T0 + 1, cost=100.0))  # another account's traffic never shows
    variables = {"accountTag": ACCOUNT, "counted": WINDOW,
                 "w0": {"AND": [WINDOW, {"gateway_in": ["prod"]}, {"metadataKeys_has": "team"}]}}
    status, answer = post(fake, DOCUMENT, variables, operationName="GatewayAnalytics")
    assert status == 200 and answer["errors"] is None
    account = answer["data"]["viewer"]["accounts"][0]
    assert account["counted"] == [
        {"count": 1, "sum": {"cost": 2.0, "cachedRequests": 0, "erroredRequests": 0, "cachedTokensIn": 0,
                             "cachedTokensOut": 0, "uncachedTokensIn": 1000, "uncachedTokensOut": 300},
         "dimensions": {"gateway": "prod", "provider": "anthropic", "model": "claude", "wholesale": 0,
                        "rateLimited": 0}},
        {"count": 3, "sum": {"cost": 0.75, "cachedRequests": 1, "erroredRequests": 1, "cachedTokensIn": 40,
                             "cachedTokensOut": 4, "uncachedTokensIn": 107, "uncachedTokensOut": 10},
         "dimensions": {"gateway": "prod", "provider": "openai", "model": "gpt-4o", "wholesale": 1,
                        "rateLimited": 0}},
        {"count": 1, "sum": {"cost": 0.125, "cachedRequests": 0, "erroredRequests": 0, "cachedTokensIn": 0,
                             "cachedTokensOut": 0, "uncachedTokensIn": 0, "uncachedTokensOut": 0},
         "dimensions": {"gateway": "dev", "provider": "openai", "model": "gpt-4o", "wholesale": 0,
                        "rateLimited": 1}},
    ]
    assert account["w0"] == [{"sum": {"cost": 0.5}, "dimensions": {"gateway": "prod", "provider": "openai",
                                                                    "model": "gpt-4o"}}]
    assert fake.requests[-1]["operationName"] == "GatewayAnalytics"  # what the exporter sent, for its tests


def test_groups_only_by_the_selected_dimensions(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0, gateway="a"), request(T0, gateway="b"), request(T0, model="claude"))
    assert [row["count"] for row in groups(fake, dimensions="model")] == [2, 1]
    assert [row["count"] for row in groups(fake, dimensions="gateway model")] == [1, 1, 1]
    assert [row["count"] for row in groups(fake, dimensions="__typename")] == [3]


def test_dimension_values_are_formatted_like_cloudflare(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0 + 17 * 60 + 42.5, cached=True, error=True, status_code=502, tokens_in=5,
                              tokens_out=6, cost=0.01, metadata={"team": "ml", "user": "u1"}))
    dimensions = ("cached error statusCode tokensIn tokensOut cost date datetimeMinute datetimeFiveMinutes "
                  "datetimeFifteenMinutes datetimeHour metadataKeys metadataValues metadataRaw")
    [row] = groups(fake, dimensions=dimensions)
    assert row["dimensions"] == {
        "cached": 1, "error": 1, "statusCode": 502, "tokensIn": 5, "tokensOut": 6, "cost": 0.01,
        "date": "2026-12-04", "datetimeMinute": "2026-12-04T18:17:00Z", "datetimeFiveMinutes": "2026-12-04T18:15:00Z",
        "datetimeFifteenMinutes": "2026-12-04T18:15:00Z", "datetimeHour": "2026-12-04T18:00:00Z",
        "metadataKeys": ["team", "user"], "metadataValues": ["ml", "u1"], "metadataRaw": '{"team":"ml","user":"u1"}',
    }


def test_dimensions_selected_through_fragments(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0, gateway="a"), request(T0, gateway="b"))
    query = f"""
    query {{ viewer {{ accounts(filter: {{accountTag: "{ACCOUNT}"}}) {{
      g: aiGatewayRequestsAdaptiveGroups(limit: 10) {{ count dimensions {{ ...Where ... on
        AccountAiGatewayRequestsAdaptiveGroupsDimensions {{ model }} }} }}
    }} }} }}
    fragment Where on AccountAiGatewayRequestsAdaptiveGroupsDimensions {{ gateway }}
    """
    status, answer = post(fake, query)
    assert status == 200, answer
    assert [r["dimensions"] for r in answer["data"]["viewer"]["accounts"][0]["g"]] == [
        {"gateway": "a", "model": "gpt-4o"}, {"gateway": "b", "model": "gpt-4o"}]


# ---- filters ------------------------------------------------------------------------------------------------


@pytest.fixture
def varied(fake: AnalyticsFake) -> AnalyticsFake:
    """Four requests, told apart by model: m1 .. m4."""
    fake.add(
        ACCOUNT,
        request(T0, "m1", gateway="prod", cost=0.5, tokens_in=10, status_code=200, metadata={"team": "ml"}),
        request(T0 + 60, "m2", gateway="prod-eu", cached=True, cost=1.0, tokens_in=20, status_code=200,
                metadata={"team": "web", "user": "u1"}),
        request(T0 + 3600, "m3", gateway="dev", error=True, cost=2.0, tokens_in=30, status_code=500),
        request(T0 + 86400, "m4", gateway="dev_1", wholesale=True, cost=4.0, tokens_in=40, status_code=429,
                rate_limited=True, metadata={"user": "u2"}),
    )
    fake.now = lambda: T0 + 2 * 86400
    return fake


@pytest.mark.parametrize(("where", "expected"), [
    ({"gateway": "prod"}, {"m1"}),
    ({"gateway_neq": "prod"}, {"m2", "m3", "m4"}),
    ({"gateway_in": ["dev", "prod"]}, {"m1", "m3"}),
    ({"gateway_notin": ["dev", "prod"]}, {"m2", "m4"}),
    ({"gateway_like": "prod%"}, {"m1", "m2"}),
    ({"gateway_like": "dev_1"}, {"m4"}),  # _ is any one character
    ({"gateway_like": "dev%"}, {"m3", "m4"}),
    ({"gateway_notlike": "%d%"}, set()),
    ({"gateway_notlike": "%-%"}, {"m1", "m3", "m4"}),
    ({"gateway_gt": "dev_1"}, {"m1", "m2"}),
    ({"gateway_leq": "dev_1"}, {"m3", "m4"}),
    ({"cached": 1}, {"m2"}),
    ({"error_neq": 0}, {"m3"}),
    ({"wholesale_in": [1]}, {"m4"}),
    ({"rateLimited_notin": [1]}, {"m1", "m2", "m3"}),
    ({"statusCode_geq": 429}, {"m3", "m4"}),
    ({"tokensIn_gt": 20}, {"m3", "m4"}),
    ({"tokensIn_lt": 20}, {"m1"}),
    ({"tokensIn_leq": 20}, {"m1", "m2"}),
    ({"cost_geq": 1}, {"m2", "m3", "m4"}),
    ({"cost": 0.5}, {"m1"}),
    ({"date": "2026-12-05"}, {"m4"}),
    ({"date_lt": "2026-12-05"}, {"m1", "m2", "m3"}),
    ({"datetimeHour": "2026-12-04T19:00:00Z"}, {"m3"}),
    ({"datetimeHour_in": ["2026-12-04T18:00:00Z"]}, {"m1", "m2"}),
    ({"datetimeFifteenMinutes_neq": "2026-12-04T18:00:00Z"}, {"m3", "m4"}),
    ({"datetimeMinute_geq": "2026-12-04T19:00:00+01:00"}, {"m1", "m2", "m3", "m4"}),  # an instant, any zone
    ({"metadataKeys_has": "team"}, {"m1", "m2"}),
    ({"metadataKeys_nothas": "team"}, {"m3", "m4"}),
    ({"metadataKeys_hasall": ["team", "user"]}, {"m2"}),
    ({"metadataValues_hasany": ["u1", "u2"]}, {"m2", "m4"}),
    ({"metadataKeys_isempty": True}, {"m3"}),
    ({"metadataKeys_isempty": False}, {"m1", "m2", "m4"}),
    ({"metadataRaw_like": '%"user":"u_"%'}, {"m2", "m4"}),
    ({"gateway": None}, {"m1", "m2", "m3", "m4"}),  # null sets no condition
    ({"gateway_like": "prod%", "cached": 0}, {"m1"}),  # keys of one object: all hold
    ({"AND": [{"gateway_like": "dev%"}, {"tokensIn_geq": 35}]}, {"m4"}),
    ({"OR": [{"gateway": "prod"}, {"error": 1}]}, {"m1", "m3"}),
    ({"OR": [{"AND": [{"cached": 1}, {"cost_gt": 0.5}]}, {"wholesale": 1}], "tokensIn_leq": 30}, {"m2"}),
    ({"OR": []}, set()),
    ({"AND": []}, {"m1", "m2", "m3", "m4"}),
])
def test_filter(varied: AnalyticsFake, where: dict[str, Any], expected: set[str]) -> None:
    assert models(varied, where) == expected


def test_every_filter_key_of_the_schema_is_implemented() -> None:
    """The schema and the fake's operator table agree, so a key the schema admits never crashes the fake."""
    keys = cast(GraphQLInputObjectType, schema().type_map[FILTER]).fields
    assert not [k for k in keys if k.startswith("datetime_") or k == "datetime"]
    for key in set(keys) - {"AND", "OR"}:
        name, _, operator = key.partition("_")
        assert name in fakegraphql._DIMENSIONS and operator in fakegraphql._OPERATORS, key
    dimensions = cast(GraphQLObjectType, schema().type_map["AccountAiGatewayRequestsAdaptiveGroupsDimensions"])
    assert set(dimensions.fields) == set(fakegraphql._DIMENSIONS)
    order = cast(GraphQLEnumType, schema().type_map[ORDER])
    sums = cast(GraphQLObjectType, schema().type_map["AccountAiGatewayRequestsAdaptiveGroupsSum"]).fields
    orderable = set(dimensions.fields) - {"metadataKeys", "metadataValues"}
    assert {v.rpartition("_")[0] for v in order.values} == {"count", *(f"sum_{s}" for s in sums), *orderable}


def test_minute_boundaries_geq_inclusive_lt_exclusive(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0 - 0.001, "before"), request(T0, "first"), request(T0 + 299.999, "last"),
             request(T0 + 300, "after"))
    assert models(fake, WINDOW) == {"first", "last"}
    assert models(fake, {"datetimeMinute_gt": "2026-12-04T18:00:00Z", "datetimeMinute_leq": "2026-12-04T18:05:00Z"}) \
        == {"last", "after"}  # 18:04:59.999 is in minute 18:04, after 18:00
    assert models(fake, {"datetimeFiveMinutes": "2026-12-04T18:00:00Z"}) == {"first", "last"}
    # Minutes compare as instants: 18:00 is before 18:00:30.
    assert models(fake, {"datetimeMinute_geq": "2026-12-04T18:00:30Z"}) == {"last", "after"}


def test_ingestion_delay_hides_late_events() -> None:
    clock = [T0 + 60]
    fake = AnalyticsFake(now=lambda: clock[0])
    fake.add(ACCOUNT, request(T0, "prompt"), request(T0, "late", ingested_at=T0 + 180), request(T0 + 120, "future"))
    assert models(fake, WINDOW) == {"prompt"}
    clock[0] = T0 + 179.9
    assert models(fake, WINDOW) == {"prompt", "future"}
    clock[0] = T0 + 180
    assert models(fake, WINDOW) == {"prompt", "late", "future"}


# ---- orderBy, limit, aliases --------------------------------------------------------------------------------


def test_order_by_keys_in_turn_and_limit(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0, "a", cost=1.0), request(T0, "b", cost=3.0), request(T0, "c", cost=0.5),
             request(T0, "c", cost=0.5), request(T0, "d", cost=2.0))

    def order(order_by: list[str] | None, limit: int = 10000) -> list[str]:
        return [row["dimensions"]["model"] for row in groups(fake, order_by=order_by, limit=limit)]

    assert order(None) == ["a", "b", "c", "d"]  # without orderBy: by each group's oldest event, then as added
    assert order(["sum_cost_DESC"]) == ["b", "d", "a", "c"]  # a tie keeps the order without orderBy
    assert order(["sum_cost_DESC", "model_DESC"]) == ["b", "d", "c", "a"]
    assert order(["count_DESC", "model_ASC"]) == ["c", "a", "b", "d"]
    assert order(["sum_cost_DESC"], limit=2) == ["b", "d"]


def test_order_by_a_dimension_not_selected_is_refused(fake: AnalyticsFake) -> None:
    message = refusal(post(fake, GROUPS.replace("DIMENSIONS", "model"),
                           {"account": ACCOUNT, "limit": 5, "orderBy": ["gateway_ASC"]}))
    assert "gateway" in message


@pytest.mark.parametrize("limit", [0, 10001])
def test_limit_out_of_range_is_refused(fake: AnalyticsFake, limit: int) -> None:
    status, answer = post(fake, GROUPS.replace("DIMENSIONS", "model"), {"account": ACCOUNT, "limit": limit})
    assert refusal((status, answer)) == "limit must be positive number and not greater than 10000"
    assert answer["errors"][0]["path"] == ["viewer", "accounts", "0", "groups"]


def test_each_alias_has_its_own_filter_limit_and_order(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0, "a", gateway="g1", cost=1.0), request(T0, "b", gateway="g2", cost=2.0),
             request(T0, "c", gateway="g1", cost=3.0))
    query = f"""{{ viewer {{ accounts(filter: {{accountTag: "{ACCOUNT}"}}) {{
      cheap: aiGatewayRequestsAdaptiveGroups(limit: 1, orderBy: [sum_cost_ASC]) {{ dimensions {{ model }} }}
      g1: aiGatewayRequestsAdaptiveGroups(limit: 10, filter: {{gateway: "g1"}}, orderBy: [model_DESC]) {{
        dimensions {{ model }} }}
      byGateway: aiGatewayRequestsAdaptiveGroups(limit: 10, orderBy: [gateway_ASC]) {{ count dimensions {{ gateway }} }}
      total: aiGatewayRequestsAdaptiveGroups(limit: 10) {{ count sum {{ cost }} }}
    }} }} }}"""
    status, answer = post(fake, query)
    assert status == 200 and answer["errors"] is None
    assert answer["data"]["viewer"]["accounts"][0] == {
        "cheap": [{"dimensions": {"model": "a"}}],
        "g1": [{"dimensions": {"model": "c"}}, {"dimensions": {"model": "a"}}],
        "byGateway": [{"count": 2, "dimensions": {"gateway": "g1"}}, {"count": 1, "dimensions": {"gateway": "g2"}}],
        "total": [{"count": 3, "sum": {"cost": 6.0}}],
    }


# ---- what the schema refuses ---------------------------------------------------------------------------------


def test_misspelt_field_is_refused(fake: AnalyticsFake) -> None:
    query = DOCUMENT.replace("dimensions { gateway provider model wholesale", "dimensions { gatway provider model")
    message = refusal(post(fake, query, {"accountTag": ACCOUNT, "counted": WINDOW, "w0": WINDOW}))
    assert "gatway" in message and "AccountAiGatewayRequestsAdaptiveGroupsDimensions" in message


def test_datetime_filter_is_refused_inline(fake: AnalyticsFake) -> None:
    query = GROUPS.replace("filter: $filter", 'filter: {datetime_geq: "2026-12-04T18:00:00Z"}')
    query = query.replace(f", $filter: {FILTER}", "").replace("DIMENSIONS", "model")
    assert "datetime_geq" in refusal(post(fake, query, {"account": ACCOUNT, "limit": 5}))


def test_datetime_filter_is_refused_in_a_variable(fake: AnalyticsFake) -> None:
    variables = {"accountTag": ACCOUNT, "counted": WINDOW, "w0": {"AND": [{"datetime_geq": "2026-12-04T18:00:00Z"}]}}
    message = refusal(post(fake, DOCUMENT, variables))
    assert "datetime_geq" in message and "$w0" in message


@pytest.mark.parametrize(("inline", "variables", "named"), [
    ('"10"', {}, '"10"'),  # a string literal where uint64 is due
    ("", {"limit": "10"}, "'10'"),  # the same in a variable
    ("", {"limit": 10.5}, "10.5"),
    ("", {"limit": -1}, "uint64"),
    ("", {"limit": True}, "True"),
    ("", {"limit": 5, "filter": {"cached": 2.0}}, "uint8"),
    ("", {"limit": 5, "filter": {"statusCode": 70000}}, "uint16"),
    ("", {"limit": 5, "filter": {"datetimeHour_geq": "2026-12-04 18:00:00"}}, "RFC 3339"),
    ("", {"limit": 5, "filter": {"date": "2026-12-04T00:00:00Z"}}, "YYYY-MM-DD"),
    ("", {"limit": 5, "filter": {"gateway": 7}}, "string"),
])
def test_wrong_scalar_is_refused(fake: AnalyticsFake, inline: str, variables: dict[str, Any], named: str) -> None:
    query = GROUPS.replace("DIMENSIONS", "model")
    if inline:
        query = query.replace("$limit: uint64!, ", "").replace("limit: $limit", f"limit: {inline}")
    assert named in refusal(post(fake, query, {"account": ACCOUNT, **variables}))


def test_operation_name_picks_the_operation(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0))
    query = GROUPS.replace("DIMENSIONS", "model") + "query Other { viewer { __typename } }"
    status, answer = post(fake, query, {}, operationName="Other")
    assert (status, answer) == (200, {"data": {"viewer": {"__typename": "Viewer"}}, "errors": None})
    assert "operation name" in refusal(post(fake, query, {}))


@pytest.mark.parametrize("body", [b"not json", b'["query"]', b'{"variables": {}}', b'{"query": 1}',
                                  b'{"query": "{ viewer { __typename } }", "variables": []}', b"\xff"])
def test_malformed_body_is_a_400(fake: AnalyticsFake, body: bytes) -> None:
    status, answer = fake.answer(body, [ACCOUNT])
    assert status == 400 and answer["data"] is None and answer["errors"][0]["message"]


# ---- accounts ----------------------------------------------------------------------------------------------------


def test_account_the_credential_may_not_read(fake: AnalyticsFake) -> None:
    fake.add(OTHER, request(T0))
    status, answer = post(fake, DOCUMENT, {"accountTag": OTHER, "counted": WINDOW, "w0": WINDOW})
    assert status == 200
    [error] = answer["errors"]
    assert answer["data"] is None
    assert error["message"] == "not authorized for that account"
    assert error["path"] == ["viewer", "accounts"]
    assert error["extensions"]["code"] == "authz"
    assert datetime.strptime(error["extensions"]["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=UTC).timestamp() == T0 + 3600


def count_query(account_filter: str) -> str:
    dataset = "g: aiGatewayRequestsAdaptiveGroups(limit: 1) { count }"
    return "{ viewer { accounts(filter: " + account_filter + ") { " + dataset + " } } }"


@pytest.mark.parametrize("account_filter", [f'{{accountTag_in: ["{ACCOUNT}", "{OTHER}"]}}', "{}"])
def test_a_query_names_exactly_one_account(fake: AnalyticsFake, account_filter: str) -> None:
    assert "1 account" in refusal(post(fake, count_query(account_filter), allowed=(ACCOUNT, OTHER)))


def test_account_without_events_answers_empty_groups(fake: AnalyticsFake) -> None:
    answer = post(fake, count_query(f'{{accountTag_in: ["{OTHER}"]}}'), allowed=(OTHER,))
    assert answer == (200, {"data": {"viewer": {"accounts": [{"g": []}]}}, "errors": None})


# ---- faults and statuses ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status", "message", "code"), [
    ("missing_permission", 200, "authorization denied", "authz"),
    ("quota", 429, "rate limiter budget depleted, try again after 5 minutes", None),
    ("quota_minute", 200, "quota exceeded, please repeat your request in the next minute", None),
    ("unavailable", 503, "too many queries in progress, please try again later", None),
    ("unauthorized", 401, "Unauthorized", None),
])
def test_fault_replaces_one_answer(fake: AnalyticsFake, fault: Fault, status: int, message: str,
                                   code: str | None) -> None:
    fake.inject(fault)
    variables = {"accountTag": ACCOUNT, "counted": WINDOW, "w0": WINDOW}
    got_status, answer = post(fake, DOCUMENT, variables)
    [error] = answer["errors"]
    assert (got_status, answer["data"], error["message"], error["extensions"].get("code")) == (
        status, None, message, code)
    assert post(fake, DOCUMENT, variables)[1]["errors"] is None  # one-shot


def test_partial_fault_fails_the_last_alias_only(fake: AnalyticsFake) -> None:
    fake.add(ACCOUNT, request(T0, cost=1.0))
    fake.inject("partial")
    status, answer = post(fake, DOCUMENT, {"accountTag": ACCOUNT, "counted": WINDOW, "w0": WINDOW})
    assert status == 200
    account = answer["data"]["viewer"]["accounts"][0]
    assert account["counted"][0]["sum"]["cost"] == 1.0 and account["w0"] is None
    [error] = answer["errors"]
    assert error["path"] == ["viewer", "accounts", "0", "w0"] and error["message"]


def test_faults_queue_in_order_and_unknown_ones_are_refused(fake: AnalyticsFake) -> None:
    fake.inject("unavailable", "quota")
    assert [fake.answer(b"{}", [ACCOUNT])[0] for _ in range(3)] == [503, 429, 400]
    assert set(FAULTS) == {"missing_permission", "quota", "quota_minute", "unavailable", "partial", "unauthorized"}
    with pytest.raises(ValueError, match="unknown faults"):
        fake.inject(cast(Fault, "teapot"))


def test_documented_statuses() -> None:
    fake = AnalyticsFake(now=lambda: T0, documented_statuses=True)
    variables = {"accountTag": ACCOUNT, "counted": WINDOW, "w0": {"datetime_geq": "2026-12-04T18:00:00Z"}}
    assert post(fake, DOCUMENT, variables)[0] == 400
    assert post(fake, DOCUMENT, {**variables, "w0": WINDOW}, allowed=(OTHER,))[0] == 403
    assert post(fake, GROUPS.replace("DIMENSIONS", "model"), {"account": ACCOUNT, "limit": 10001})[0] == 400
    fake.inject("missing_permission")
    assert post(fake, DOCUMENT, {**variables, "w0": WINDOW})[0] == 403
    assert post(fake, DOCUMENT, {**variables, "w0": WINDOW})[0] == 200
