"""The --demo data answered in process (exporter/demo.py): every endpoint's shape and each account's state."""

from __future__ import annotations

import asyncio
import calendar
import re
from typing import Any

import httpx
import pytest

from exporter import cli
from exporter.collectors.credit_balance import CreditBalanceCollector
from exporter.demo import DEMO_BASE_URL, demo_config, demo_transport
from exporter.samples import (
    BULK_DAILY_LIMIT,
    DEMO_ACCOUNTS,
    DEMO_REVOKED_TOKEN,
    DEMO_TOKEN,
    STAGING_BURN_PER_SECOND,
    STAGING_START_BALANCE,
)

pytestmark = pytest.mark.timeout(20)

NOW = calendar.timegm((2026, 11, 25, 14, 30, 0))  # a Wednesday afternoon, UTC
MIDNIGHT_MS = calendar.timegm((2026, 11, 25, 0, 0, 0)) * 1000
SUFFIXES = ("invoice-history", "credit-balance", "spending-limit", "usage-history", "invoice-preview", "topup/config")


def get_all(requests: list[tuple[str, str, dict[str, str]]], *, now: float | None = NOW,
            token: str = DEMO_TOKEN) -> list[httpx.Response]:
    """Send (method, path, params) through demo_transport with a real httpx.AsyncClient."""

    async def run() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=demo_transport(now), base_url=DEMO_BASE_URL, headers=headers) as c:
            return [await c.request(method, path, params=params) for method, path, params in requests]

    return asyncio.run(run())


def get(name: str, suffix: str, *, now: float | None = NOW, token: str = DEMO_TOKEN, **params: Any) -> Any:
    """The result of one successful GET of a demo account's endpoint."""
    path = f"/accounts/{DEMO_ACCOUNTS[name]}/ai-gateway/billing/{suffix}"
    (response,) = get_all([("GET", path, {k: str(v) for k, v in params.items()})], now=now, token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    return body["result"]


def error(response: httpx.Response) -> tuple[int, int]:
    body = response.json()
    assert body["success"] is False and body["result"] is None
    return response.status_code, body["errors"][0]["code"]


def today_usage(name: str, now: float = NOW) -> float:
    history = get(name, "usage-history", now=now, value_grouping_window="day",
                  start_time=int(now // 86400 * 86400 * 1000))["history"]
    return float(sum(entry["aggregated_value"] for entry in history))


# ---- shapes ------------------------------------------------------------------------------------------------


def test_credit_balance_and_topup_config_shape() -> None:
    balance = get("production", "credit-balance")
    assert set(balance) == {"balance", "has_default_payment_method", "payment_method", "topup_config",
                            "first_topup_success"}
    assert set(balance["topup_config"]) == {"amount", "threshold", "disabledReason", "error", "lastFailedAt"}
    assert get("production", "topup/config") == balance["topup_config"]


def test_usage_history_shape_and_required_grouping_window() -> None:
    hours = get("production", "usage-history", value_grouping_window="hour")["history"]
    assert len(hours) > 24 * 30  # hourly events over the last weeks
    for entry in hours:
        assert set(entry) == {"id", "aggregated_value", "start_time", "end_time"}
        assert entry["end_time"] - entry["start_time"] == 3_600_000  # milliseconds
    assert hours[-1]["start_time"] <= NOW * 1000 < hours[-1]["end_time"]
    days = get("production", "usage-history", value_grouping_window="day")["history"]
    assert {e["end_time"] - e["start_time"] for e in days} == {86_400_000}
    assert sum(e["aggregated_value"] for e in days) == pytest.approx(sum(e["aggregated_value"] for e in hours))
    path = f"/accounts/{DEMO_ACCOUNTS['production']}/ai-gateway/billing/usage-history"
    missing, seconds = get_all([("GET", path, {}), ("GET", path, {"value_grouping_window": "day",
                                                                   "start_time": "1.5"})])
    assert error(missing) == (400, 1001) and "value_grouping_window" in missing.json()["errors"][0]["message"]
    assert error(seconds) == (400, 1001)


def test_spending_limit_and_invoice_preview_shape() -> None:
    assert get("bulk", "spending-limit") == {
        "config": {"amount": BULK_DAILY_LIMIT, "duration": "daily", "strategy": "fixed"}, "enabled": True}
    preview = get("production", "invoice-preview")
    assert {"id", "amount_due", "amount_paid", "amount_remaining", "currency", "period_start", "period_end",
            "status", "invoice_lines"} <= set(preview)
    assert preview["status"] in ("draft", "open", "paid", "uncollectible", "void")
    assert preview["period_start"] <= NOW < preview["period_end"]  # seconds, this month
    assert preview["period_start"] == calendar.timegm((2026, 11, 1, 0, 0, 0))
    assert preview["period_end"] == calendar.timegm((2026, 12, 1, 0, 0, 0))
    line = preview["invoice_lines"][0]
    assert {"amount", "currency", "description", "period", "pricing", "quantity"} <= set(line)


def test_invoice_history_pages_like_the_api() -> None:
    first = get("bulk", "invoice-history", per_page=50)
    assert first["pagination"] == {"has_more": True, "page": 1, "per_page": 50, "total_count": 120}
    last = get("bulk", "invoice-history", per_page=50, page=3)
    assert last["pagination"]["has_more"] is False and len(last["invoices"]) == 20
    ids = {i["id"] for p in (1, 2, 3) for i in get("bulk", "invoice-history", per_page=50, page=p)["invoices"]}
    assert len(ids) == 120
    manual = get("bulk", "invoice-history", type="manual", per_page=100)["invoices"]
    assert manual and all(i["invoice_origin"] == "manual" for i in manual)


def test_accounts_listing_routing_methods_and_auth() -> None:
    billing = f"/accounts/{DEMO_ACCOUNTS['production']}/ai-gateway/billing"
    listing, nowhere, topup, limit_delete, bad_page, unknown = get_all([
        ("GET", "/accounts", {}), ("GET", "/zones", {}), ("POST", billing + "/topup", {}),
        ("DELETE", billing + "/spending-limit", {}), ("GET", billing + "/invoice-history", {"page": "0"}),
        ("GET", f"/accounts/{'f' * 32}/ai-gateway/billing/credit-balance", {})])
    assert listing.status_code == 200 and listing.json()["result_info"]["total_count"] == 5
    assert [a["name"] for a in listing.json()["result"]] == ["production", "staging", "research", "bulk", "hobby"]
    assert error(nowhere) == (404, 7000)
    assert error(topup) == (405, 7001) and topup.headers["allow"] == "GET"
    assert error(limit_delete) == (405, 7001)
    assert error(bad_page) == (400, 1001)
    assert error(unknown) == (403, 9109)
    (wrong,) = get_all([("GET", billing + "/credit-balance", {})], token="not-the-demo-token")
    assert error(wrong) == (403, 10000)


# ---- each account's telling state ----------------------------------------------------------------------------


def test_production_is_healthy() -> None:
    balance = get("production", "credit-balance")
    assert balance["has_default_payment_method"] is True and balance["first_topup_success"] is True
    topup = balance["topup_config"]
    assert topup["error"] is None and topup["lastFailedAt"] is None
    assert balance["balance"] > topup["threshold"] > 0 and topup["amount"] > 0
    assert {i["status"] for i in get("production", "invoice-history")["invoices"]} == {"paid"}
    limit = get("production", "spending-limit")
    assert limit["enabled"] is True and limit["config"]["strategy"] == "sliding"
    assert today_usage("production") < 0.1 * limit["config"]["amount"]


def test_staging_credits_drain_toward_zero() -> None:
    balance = get("staging", "credit-balance")
    assert balance["balance"] == STAGING_START_BALANCE and balance["has_default_payment_method"] is False
    assert balance["topup_config"]["amount"] is None and balance["topup_config"]["threshold"] is None
    staging = DEMO_ACCOUNTS["staging"]
    balance_at = CreditBalanceCollector.sample
    assert balance_at(staging, NOW + 3600, NOW).balance == STAGING_START_BALANCE - 3600 * STAGING_BURN_PER_SECOND
    hours_to_zero = STAGING_START_BALANCE / STAGING_BURN_PER_SECOND / 3600
    assert 1 < hours_to_zero < 24  # CreditsRunningOut's default horizon
    assert balance_at(staging, NOW + hours_to_zero * 3600 + 60, NOW).balance == 0  # floored, never negative
    # Usage history agrees with the burn rate: one hour of traffic costs what the balance loses in an hour.
    hours = get("staging", "usage-history", value_grouping_window="hour")["history"]
    assert hours[-2]["aggregated_value"] == pytest.approx(3600 * STAGING_BURN_PER_SECOND)


def test_staging_balance_falls_while_time_passes() -> None:
    path = f"/accounts/{DEMO_ACCOUNTS['staging']}/ai-gateway/billing/credit-balance"

    async def two_reads() -> list[float]:
        headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
        async with httpx.AsyncClient(transport=demo_transport(), base_url=DEMO_BASE_URL, headers=headers) as c:
            first = (await c.get(path)).json()["result"]["balance"]
            await asyncio.sleep(0.2)
            return [first, (await c.get(path)).json()["result"]["balance"]]

    first, second = asyncio.run(two_reads())
    assert second < first <= STAGING_START_BALANCE


def test_research_auto_topup_is_failing() -> None:
    balance = get("research", "credit-balance")
    topup = balance["topup_config"]
    assert topup["error"] and balance["has_default_payment_method"] is True
    assert topup["lastFailedAt"] > 10**12  # milliseconds
    assert 0 < NOW - topup["lastFailedAt"] / 1000 < 6 * 3600  # recent
    assert balance["balance"] < topup["threshold"]  # the refill should have run
    unpaid = [i for i in get("research", "invoice-history")["invoices"] if i["status"] == "open"]
    assert any(i["attempt_count"] > 0 and "top-up" in i["description"] for i in unpaid)


@pytest.mark.parametrize("hour_minute", [(0, 0, 1), (0, 30, 0), (14, 30, 0), (23, 59, 59)])
def test_bulk_spends_85_percent_of_its_daily_limit_at_any_time_of_day(hour_minute: tuple[int, int, int]) -> None:
    now = calendar.timegm((2026, 11, 25, *hour_minute))
    limit = get("bulk", "spending-limit", now=now)["config"]["amount"]
    assert today_usage("bulk", now) / limit == pytest.approx(0.85)
    days = get("bulk", "usage-history", now=now, value_grouping_window="day")["history"]
    assert all(0.5 * limit < d["aggregated_value"] < limit for d in days[:-1])  # earlier days below the limit


def test_bulk_is_multi_page_and_multi_currency() -> None:
    invoices = get("bulk", "invoice-history", per_page=100)["invoices"]
    assert {i["currency"] for i in invoices} == {"usd", "eur"}
    assert get("bulk", "invoice-preview")["currency"] == "eur"


def test_legacy_fails_auth_on_every_endpoint() -> None:
    account = DEMO_ACCOUNTS["legacy"]
    requests = [("GET", f"/accounts/{account}/ai-gateway/billing/{s}", {"value_grouping_window": "day"})
                for s in SUFFIXES]
    for token in (DEMO_REVOKED_TOKEN, DEMO_TOKEN):
        assert {error(r) for r in get_all(requests, token=token)} == {(403, 1000)}
    (listing,) = get_all([("GET", "/accounts", {})], token=DEMO_REVOKED_TOKEN)
    assert error(listing) == (403, 1000)


def test_hobby_has_no_unified_billing() -> None:
    balance = get("hobby", "credit-balance")
    assert balance == {"balance": 0.0, "has_default_payment_method": False, "payment_method": None,
                       "topup_config": None, "first_topup_success": False}
    assert get("hobby", "spending-limit") == {"config": None, "enabled": False}
    assert get("hobby", "usage-history", value_grouping_window="day") == {"history": []}
    assert get("hobby", "invoice-history")["invoices"] == []
    (preview,) = get_all([("GET", f"/accounts/{DEMO_ACCOUNTS['hobby']}/ai-gateway/billing/invoice-preview", {})])
    assert error(preview)[0] == 404


# ---- config and wiring ---------------------------------------------------------------------------------------


def test_demo_config() -> None:
    config = demo_config()
    assert config.cloudflare.base_url == DEMO_BASE_URL
    assert [(a.name, a.id) for a in config.accounts] == list(DEMO_ACCOUNTS.items())
    tokens = {a.name: a.credentials.api_token for a in config.accounts if a.credentials is not None}
    assert tokens["legacy"] == DEMO_REVOKED_TOKEN and tokens["production"] == DEMO_TOKEN
    assert all(re.fullmatch(r"[0-9a-f]{32}", a.id) for a in config.accounts)


def test_demo_once_polls_in_process(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """--demo --once reads every account through demo_transport: no socket, legacy fails by design."""
    assert cli.main(["--demo", "--once", "--log.level", "error"]) == 0  # only legacy fails, by design
    out = capsysbinary.readouterr().out.decode()
    success = dict(re.findall(r'^cloudflare_ai_gateway_poll_success\{account="(\w+)",[^}]*\} (\S+)$', out, re.M))
    assert success == {"production": "1.0", "staging": "1.0", "research": "1.0", "bulk": "1.0", "legacy": "0.0",
                       "hobby": "1.0"}
