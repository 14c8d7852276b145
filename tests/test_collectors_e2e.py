"""The collectors through the real exporter process and the fake Cloudflare API on loopback: each turned
on or off and polled at its own interval, failures per endpoint, accounts without a feature, divisors, reload,
never a write request. The start-up budget warning (counted for every enabled collector) in process."""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from exporter.collectors.credit_balance import topup_config
from exporter.config.load import parse_config
from exporter.poller import Poller
from exporter.snapshot import Setup, SnapshotStore
from tests.conftest import TOKEN
from tests.fakeapi import FakeCloudflareAPI, Fault, invoice
from tests.support import COLLECTORS, ExporterProcess, samples, status_of, value

pytestmark = pytest.mark.e2e

ACC = "023e105f4ecef8ad9ca31a8372d0c353"
ACC2 = "3a5c7e9b1d2f4a6c8e0b2d4f6a8c0e1b"
ACC3 = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
Factory = Callable[..., ExporterProcess]


def config_for(api: FakeCloudflareAPI, collectors: dict[str, Any], *accounts: dict[str, Any],
               interval: str = "1s") -> dict[str, Any]:
    return {"cloudflare": {"base_url": api.base_url, "api_token": TOKEN, "requests_per_second": 50,
                           "max_retries": 0, "timeout": "2s"},
            "poll": {"interval": interval},
            "accounts": list(accounts) or [{"id": ACC, "name": "production"}],
            "collectors": collectors}


def enrolled(api: FakeCloudflareAPI, account_id: str = ACC, balance: float = 123_456, **changes: Any) -> None:
    """An account that uses Unified Billing: a balance, a card, an auto top-up, a daily fixed spending limit of
    100 USD with 42 USD spent today, an upcoming invoice of 19.99 USD."""
    now = time.time()
    api.add_account(account_id, "production" if account_id == ACC else "other", [
        invoice(id="in_open", amount_due=4200, status="open", created=int(now) - 86400)])
    billing: dict[str, Any] = dict(
        balance=balance, has_default_payment_method=True, payment_method={"brand": "visa", "last4": "4242"},
        topup_config=topup_config(50_000, 10_000), first_topup_success=True,
        spending_limit={"amount": 10_000, "duration": "daily", "strategy": "fixed"}, spending_limit_enabled=True,
        usage=[(now // 86400 * 86400, 4_200.0)],
        invoice_preview={"id": "upcoming", "amount_due": 1999, "amount_paid": 0, "amount_remaining": 1999,
                         "currency": "USD", "period_start": int(now) - 86400, "period_end": int(now) + 86400,
                         "status": "draft", "invoice_lines": []})
    api.set_billing(account_id, **{**billing, **changes})


def per_endpoint(api: FakeCloudflareAPI, account_id: str = ACC) -> Counter[str | None]:
    return Counter(r.endpoint for r in api.requests_for(account_id))


def test_each_collector_polls_at_its_own_interval_and_a_disabled_one_never(fake_api: FakeCloudflareAPI,
                                                                          exporter_factory: Factory) -> None:
    enrolled(fake_api, spending_limit=None, spending_limit_enabled=False)  # spending_limit: 1 request a poll
    collectors = {"invoice_history": {"interval": "2s"}, "credit_balance": {"interval": "1s"},
                  "spending_limit": {"interval": "3s"}, "usage_history": {"enabled": False},
                  "invoice_preview": {"interval": "6s"}, "gateways": {"interval": "3s"},
                  "gateway_analytics": {"interval": "2s"}}
    exporter = exporter_factory(config_for(fake_api, collectors, interval="10s"))
    first = min(r.time for r in fake_api.requests_for(ACC))
    time.sleep(6.5)
    elapsed = time.monotonic() - first
    counts = per_endpoint(fake_api)

    def expected(interval: float) -> range:
        polls = int(elapsed / interval) + 1  # the first poll is immediate
        return range(polls - 1, polls + 2)

    # collectors.invoice_history.interval (2s) wins over poll.interval (10s)
    assert counts["invoice_history"] in expected(2), (counts, elapsed)
    assert counts["credit_balance"] in expected(1), (counts, elapsed)
    assert counts["spending_limit"] in expected(3), (counts, elapsed)
    assert counts["invoice_preview"] in expected(6), (counts, elapsed)
    assert counts["gateway_analytics"] in expected(2), (counts, elapsed)  # one GraphQL query a poll
    # the gateways collector's polls, and the analytics collector's one read of the rules (every 5 minutes)
    assert counts["gateways"] - 1 in expected(3), (counts, elapsed)
    assert counts["usage_history"] == 0, "a disabled collector is never polled"
    text = exporter.metrics()
    assert not samples(text, "cloudflare_ai_gateway_usage_amount")
    assert not samples(text, "cloudflare_ai_gateway_poll_success", endpoint="usage_history")
    assert {labels["endpoint"] for labels, _ in samples(text, "cloudflare_ai_gateway_poll_success")} == {
        "invoice_history", "credit_balance", "spending_limit", "invoice_preview", "gateways", "gateway_analytics"}
    assert fake_api.writes() == []


def test_a_failing_balance_poll_keeps_the_last_good_balance_and_fails_only_that_endpoint(
        fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    enrolled(fake_api)
    collectors = {"credit_balance": {"interval": "1s"}, "invoice_history": {"interval": "1s"}}
    exporter = exporter_factory(config_for(fake_api, collectors))
    exporter.wait_metrics(lambda t: value(t, "cloudflare_ai_gateway_credit_balance") == 1234.56,
                          what="the first balance")
    fake_api.set_billing(ACC, balance=99_900)
    fake_api.inject(ACC, *[Fault.server_error()] * 3, endpoint="credit_balance")  # three polls fail
    text = exporter.wait_metrics(
        lambda t: value(t, "cloudflare_ai_gateway_poll_success", endpoint="credit_balance") == 0,
        what="poll_success{endpoint=credit_balance} 0")
    assert value(text, "cloudflare_ai_gateway_credit_balance") == 1234.56, "the last good balance stays"
    assert value(text, "cloudflare_ai_gateway_auto_topup_failing") == 0
    assert value(text, "cloudflare_ai_gateway_poll_success", endpoint="invoice_history") == 1
    assert value(text, "cloudflare_ai_gateway_api_errors_total", reason="server_error") is not None
    assert value(text, "cloudflare_ai_gateway_account_unpaid_invoices") == 1
    exporter.wait_metrics(lambda t: value(t, "cloudflare_ai_gateway_credit_balance") == 999,
                          what="the new balance once the API answers again")
    assert fake_api.writes() == []


def test_an_account_without_unified_billing_is_polled_fine_and_a_revoked_token_still_fails(
        fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    enrolled(fake_api)
    fake_api.add_account(ACC2, "hobby", [])  # the fake's default Billing: not enrolled, preview 404
    fake_api.add_account(ACC3, "revoked", [], token="revoked-token-0123456789")
    fake_api.revoke_token("revoked-token-0123456789")
    config = config_for(fake_api, {}, {"id": ACC, "name": "production"}, {"id": ACC2, "name": "hobby"},
                        {"id": ACC3, "name": "revoked", "api_token": "revoked-token-0123456789"})
    exporter = exporter_factory(config)
    text = exporter.wait_metrics(
        lambda t: len(samples(t, "cloudflare_ai_gateway_poll_success", account="revoked")) == len(COLLECTORS),
        what="every endpoint of every account polled")
    for endpoint in COLLECTORS:
        assert value(text, "cloudflare_ai_gateway_poll_success", account="hobby", endpoint=endpoint) == 1
        assert value(text, "cloudflare_ai_gateway_poll_success", account="revoked", endpoint=endpoint) == 0
        assert value(text, "cloudflare_ai_gateway_poll_success", account="production", endpoint=endpoint) == 1
        assert value(text, "cloudflare_ai_gateway_endpoint_enrolled", account="production", endpoint=endpoint) == 1
        assert value(text, "cloudflare_ai_gateway_endpoint_enrolled", account="revoked", endpoint=endpoint) is None
    hobby = {labels["endpoint"]: v for labels, v in
             samples(text, "cloudflare_ai_gateway_endpoint_enrolled", account="hobby")}
    assert hobby == {"invoice_history": 1, "credit_balance": 0, "spending_limit": 1, "usage_history": 1,
                     "invoice_preview": 0, "gateways": 1, "gateway_analytics": 1}  # no gateways is an answer
    for name in ("credit_balance", "payment_method_present", "auto_topup_failing", "upcoming_invoice_amount_due",
                 "spending_limit_amount", "spending_limit_window_usage"):
        assert not samples(text, f"cloudflare_ai_gateway_{name}", account="hobby"), name
    # a spending limit that is off and an empty usage history are answers, not gaps
    assert value(text, "cloudflare_ai_gateway_spending_limit_enabled", account="hobby") == 0
    assert value(text, "cloudflare_ai_gateway_usage_amount", account="hobby", window="day") == 0
    # the not-enrolled answers (404 and a non-auth 403) are requests, never errors; the revoked token's are auth
    assert value(text, "cloudflare_ai_gateway_api_requests_total", account_id=ACC2, code="404") is not None
    assert not samples(text, "cloudflare_ai_gateway_api_errors_total", account_id=ACC2)
    assert value(text, "cloudflare_ai_gateway_api_errors_total", account_id=ACC3, reason="auth") == len(COLLECTORS)
    # production: the values of every collector
    assert value(text, "cloudflare_ai_gateway_credit_balance", account="production") == 1234.56
    assert value(text, "cloudflare_ai_gateway_spending_limit_window_usage", account="production") == 42
    assert value(text, "cloudflare_ai_gateway_spending_limit_amount", account="production", duration="daily",
                 strategy="fixed") == 100
    assert value(text, "cloudflare_ai_gateway_upcoming_invoice_amount_due", account="production",
                 currency="usd") == 19.99
    assert fake_api.writes() == []


def test_every_collector_divides_by_its_own_divisor(fake_api: FakeCloudflareAPI,
                                                    exporter_factory: Factory) -> None:
    enrolled(fake_api)
    collectors = {"credit_balance": {"amount_divisor": 1}, "usage_history": {"amount_divisor": 1000},
                  "spending_limit": {"amount_divisor": 10}}
    config = config_for(fake_api, collectors)
    config["metrics"] = {"amount_divisor": 50}  # the default of the collectors that set none
    exporter = exporter_factory(config)
    text = exporter.wait_metrics(
        lambda t: len(samples(t, "cloudflare_ai_gateway_endpoint_enrolled")) == len(COLLECTORS),
        what="every collector polled")
    assert value(text, "cloudflare_ai_gateway_credit_balance") == 123_456
    assert value(text, "cloudflare_ai_gateway_auto_topup_threshold") == 10_000
    assert value(text, "cloudflare_ai_gateway_usage_amount", window="day") == 4.2
    assert value(text, "cloudflare_ai_gateway_spending_limit_window_usage") == 420
    assert value(text, "cloudflare_ai_gateway_spending_limit_amount", duration="daily", strategy="fixed") == 1000
    assert value(text, "cloudflare_ai_gateway_upcoming_invoice_amount_due", currency="usd") == 39.98
    assert value(text, "cloudflare_ai_gateway_account_amount_due", currency="usd") == 84
    assert fake_api.writes() == []


def test_a_collector_turned_off_by_reload_loses_its_series_and_its_polls(fake_api: FakeCloudflareAPI,
                                                                         exporter_factory: Factory) -> None:
    enrolled(fake_api)
    config = config_for(fake_api, {"credit_balance": {"interval": "1s"}})
    exporter = exporter_factory(config)
    exporter.wait_metrics(lambda t: value(t, "cloudflare_ai_gateway_credit_balance") is not None,
                          what="the balance")
    config["collectors"] = {"credit_balance": {"enabled": False}}
    exporter.write_config(config)
    exporter.signal(signal.SIGHUP)
    text = exporter.wait_metrics(
        lambda t: not samples(t, "cloudflare_ai_gateway_poll_success", endpoint="credit_balance"),
        what="the credit_balance series gone after the reload")
    assert value(text, "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 1
    assert not samples(text, "cloudflare_ai_gateway_credit_balance")
    assert not samples(text, "cloudflare_ai_gateway_endpoint_enrolled", endpoint="credit_balance")
    assert value(text, "cloudflare_ai_gateway_poll_success", endpoint="invoice_history") == 1
    assert value(text, "cloudflare_ai_gateway_usage_amount", window="day") == 42
    polled = per_endpoint(fake_api)["credit_balance"]
    time.sleep(2.5)
    assert per_endpoint(fake_api)["credit_balance"] <= polled + 1  # at most one poll that was in flight
    assert fake_api.writes() == []


# ---- the start-up budget warning (in process: no poll is made) --------------------------------------------


def _poller(caplog: pytest.LogCaptureFixture, accounts: int, collectors: dict[str, Any],
            rate: float = 3) -> list[logging.LogRecord]:
    ids = [f"{i:032x}" for i in range(1, accounts + 1)]
    config = parse_config({"cloudflare": {"api_token": "t0ken-value", "requests_per_second": rate},
                           "accounts": ids, "collectors": collectors}, "c", {})
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        Poller(Setup.of(config), SnapshotStore(status_of(config)))
    return [r for r in caplog.records if r.name == "exporter.poller"]


def test_the_budget_warning_counts_every_enabled_collector_with_the_numbers(
        caplog: pytest.LogCaptureFixture) -> None:
    # defaults per account per 5 minutes: invoice history 1, balance 5, spending limit 2, usage 1, preview 1/3,
    # gateways 1, analytics 1 (its gateways list): 11.33 requests; and 5 GraphQL queries
    assert not _poller(caplog, 60, {})  # 680 requests <= 900 (3 requests/s); 300 queries <= 300
    caplog.clear()
    [graphql] = _poller(caplog, 61, {})
    assert graphql.__dict__["graphql_per_5m_needed"] == 305 and graphql.__dict__["graphql_per_5m_budget"] == 300
    assert "lengthen collectors.gateway_analytics.interval" in graphql.getMessage()
    caplog.clear()
    analytics_every_5m = {"gateway_analytics": {"interval": "5m"}}  # 1 query and 1 request per 5 minutes
    assert not _poller(caplog, 79, analytics_every_5m)  # 79 x 11.33 = 895.3
    caplog.clear()
    records = _poller(caplog, 100, analytics_every_5m)  # 1133.3 > 900, under Cloudflare's 1,200
    assert len(records) == 1
    fields = records[0].__dict__
    assert fields["requests_per_5m_needed"] == 1133.3 and fields["requests_per_5m_budget"] == 900
    assert fields["per_collector"] == ("invoice_history=100,credit_balance=500,spending_limit=200,"
                                       "usage_history=100,invoice_preview=33.3333,gateways=100,gateway_analytics=100")
    caplog.clear()
    # the same accounts with the balance every 5 minutes fit; more accounts and a higher rate pass 1,200
    assert not _poller(caplog, 100, {"credit_balance": {"interval": "5m"}, **analytics_every_5m}, rate=3.2)
    caplog.clear()
    records = _poller(caplog, 200, analytics_every_5m, rate=10)
    assert [r.getMessage().split(":")[0] for r in records] == [
        "the enabled collectors need more than Cloudflare's 1,200 requests per 5 minutes per user "
        "(shared by all of that user's tokens and the dashboard)"]
    assert records[0].__dict__["requests_per_5m_needed"] == 2266.7
    caplog.clear()
    off = {name: {"enabled": False} for name in ("credit_balance", "spending_limit", "usage_history",
                                                  "invoice_preview", "gateways", "gateway_analytics")}
    assert not _poller(caplog, 800, off)  # invoice history alone: 800 per 5 minutes
