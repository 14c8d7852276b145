"""The four billing endpoints besides invoice history, attacked through the real exporter process and the fake
API: non-finite and huge numbers, wrong shapes, oversized lists, hostile label text, success:false on 200.
A failing endpoint fails alone (poll_success{endpoint} 0, counted), keeps its last good data, and neither
/metrics (promtool check metrics) nor the status page ever breaks."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import require_binary
from tests.fakeapi import FakeCloudflareAPI, Fault, invoice
from tests.support import ExporterProcess, samples, value
from tests.test_collectors_e2e import ACC, config_for, enrolled

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

EVERY_SECOND = {name: {"interval": "1s"} for name in ("credit_balance", "spending_limit", "usage_history",
                                                       "invoice_preview")}
GOOD = {  # (family, labels) -> value the enrolled() account serves
    "credit_balance": ("cloudflare_ai_gateway_credit_balance", {}, 1234.56),
    "spending_limit": ("cloudflare_ai_gateway_spending_limit_amount", {"duration": "daily"}, 100.0),
    "usage_history": ("cloudflare_ai_gateway_usage_amount", {"window": "day"}, 42.0),
    "invoice_preview": ("cloudflare_ai_gateway_upcoming_invoice_amount_due", {"currency": "usd"}, 19.99),
}


def raw(result: str) -> Fault:
    return Fault.raw(b'{"success": true, "errors": [], "messages": [], "result": ' + result.encode() + b"}")


def history(entries: int) -> Fault:
    entry = {"aggregated_value": 1, "start_time": int(time.time()) * 1000}
    return raw(json.dumps({"history": [entry] * entries}))


# Every answer here must fail the endpoint's poll with reason invalid_response.
POISON: dict[str, list[Fault]] = {
    "credit_balance": [raw('{"balance": NaN}'), raw('{"balance": 1e400}'), raw('{"balance": ' + "9" * 5000 + "}"),
                       raw('{"balance": 5, "topup_config": {"amount": 1, "threshold": -Infinity}}'),
                       Fault.wrong_shape()],
    "spending_limit": [raw('{"enabled": NaN, "config": {"amount": 1, "duration": "daily", "strategy": "fixed"}}'),
                       Fault.wrong_shape()],
    "usage_history": [history(50_000), raw('{"history": [{"aggregated_value": NaN, "start_time": 1}]}'),
                      Fault.wrong_shape()],
    "invoice_preview": [raw(json.dumps({"amount_due": 5, "currency": "u" * 100_000})),
                        raw('{"amount_due": -Infinity, "currency": "usd"}'), Fault.wrong_shape()],
}


def promtool_check(text: str) -> None:
    check = subprocess.run([require_binary("promtool"), "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30, check=False)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr


def good_values(text: str) -> dict[str, float | None]:
    return {endpoint: value(text, name, account_id=ACC, **labels) for endpoint, (name, labels, _) in GOOD.items()}


def test_each_poisoned_endpoint_fails_alone_counted_with_its_last_good_data_kept(
        fake_api: FakeCloudflareAPI, exporter_factory: Callable[..., ExporterProcess]) -> None:
    enrolled(fake_api)
    exporter = exporter_factory(config_for(fake_api, EVERY_SECOND))
    first = exporter.wait_metrics(lambda t: None not in good_values(t).values(), what="every endpoint polled")
    assert good_values(first) == {e: v for e, (_, _, v) in GOOD.items()}
    for endpoint, faults in POISON.items():
        fake_api.inject(ACC, *faults, endpoint=endpoint)

    served = {e: len(fake_api.requests_for(ACC, e)) for e in POISON}
    seen_failing: set[str] = set()

    def drained(text: str) -> bool:
        seen_failing.update(e for e in POISON if value(text, "cloudflare_ai_gateway_poll_success", account_id=ACC,
                                                     endpoint=e) == 0)
        # every fault consumed, and one good answer after it
        return all(len(fake_api.requests_for(ACC, e)) > served[e] + len(f) for e, f in POISON.items())

    while True:
        text = exporter.wait_metrics(lambda t: True)
        assert exporter.get("/").status_code == 200
        promtool_check(text)
        assert good_values(text) == {e: v for e, (_, _, v) in GOOD.items()}  # kept while failing, and after
        assert value(text, "cloudflare_ai_gateway_poll_success", account_id=ACC, endpoint="invoice_history") == 1
        if drained(text):
            break
        time.sleep(0.3)
    assert seen_failing == set(POISON)
    errors = value(text, "cloudflare_ai_gateway_api_errors_total", account_id=ACC, reason="invalid_response")
    assert errors is not None and errors >= sum(map(len, POISON.values()))
    assert value(text, "cloudflare_ai_gateway_api_errors_total", reason="internal") is None
    log = exporter.output()
    assert "Traceback" not in log and max(len(line) for line in log.splitlines()) < 4000


def test_hostile_label_text_is_bounded_and_the_exposition_stays_valid(
        fake_api: FakeCloudflareAPI, exporter_factory: Callable[..., ExporterProcess]) -> None:
    """Text that becomes a label value takes a few short values, whatever the API sends; a created time of -1e300
    neither breaks /metrics nor the status page."""
    enrolled(fake_api, payment_method={"brand": "\ud800" + "v" * 100_000, "last4": '42"\n<b>'},
             spending_limit={"amount": 10_000, "duration": "d" * 100_000 + "\n", "strategy": "Fixed\\"},
             invoice_preview={"amount_due": 1999, "currency": " U\ud800D ", "period_end": int(time.time())})
    fake_api.accounts[ACC].invoices.append(  # a finite time no platform can show as a date
        {**invoice(id="in_far", amount_due=100, status="open", created=0), "created": -1e300})
    collectors: dict[str, Any] = {**EVERY_SECOND, "credit_balance": {"payment_method_labels": True}}
    exporter = exporter_factory(config_for(fake_api, collectors))
    text = exporter.wait_metrics(lambda t: value(t, "cloudflare_ai_gateway_upcoming_invoice_amount_due") is not None
                                 and value(t, "cloudflare_ai_gateway_payment_method_info") is not None,
                                 what="credit balance and invoice preview polled")
    promtool_check(text)
    assert max(map(len, text.splitlines())) < 1000
    [(card, _)] = samples(text, "cloudflare_ai_gateway_payment_method_info")
    assert (card["brand"], card["last4"]) == ("other", "other")
    [(limit, amount)] = samples(text, "cloudflare_ai_gateway_spending_limit_amount")
    assert (limit["duration"], limit["strategy"], amount) == ("other", "other", 100.0)
    [(upcoming, _)] = samples(text, "cloudflare_ai_gateway_upcoming_invoice_amount_due")
    assert upcoming["currency"] == "u\ufffdd"
    page = exporter.get("/")
    assert page.status_code == 200 and "oldest" in page.text


def test_success_false_on_200_is_not_enrolled_unless_the_code_says_auth(
        fake_api: FakeCloudflareAPI, exporter_factory: Callable[..., ExporterProcess]) -> None:
    """A 200 with success:false and a non-auth code: the account does not use the feature (poll_success 1,
    endpoint_enrolled 0). An auth code on 200 or 403, or a firewall's HTML 403, is a failure: the last good
    balance stays."""
    enrolled(fake_api)
    exporter = exporter_factory(config_for(fake_api, EVERY_SECOND))
    exporter.wait_metrics(lambda t: value(t, "cloudflare_ai_gateway_credit_balance") == 1234.56, what="balance")
    waf = Fault.raw(b"<html><body>Access denied</body></html>", status=403, **{"Content-Type": "text/html"})
    fake_api.inject(ACC, *[Fault.api_error(10000, "Authentication error", status=200)] * 2,
                    *[Fault.api_error(1000, "Invalid API Token", status=403)] * 2, waf, waf,
                    endpoint="credit_balance")

    def failing(text: str) -> bool:
        return value(text, "cloudflare_ai_gateway_poll_success", account_id=ACC, endpoint="credit_balance") == 0

    text = exporter.wait_metrics(failing, what="credit balance failing on auth")
    assert value(text, "cloudflare_ai_gateway_credit_balance") == 1234.56
    assert value(text, "cloudflare_ai_gateway_endpoint_enrolled", endpoint="credit_balance") == 1
    text = exporter.wait_metrics(lambda t: (value(t, "cloudflare_ai_gateway_api_errors_total", account_id=ACC,
                                                  reason="auth") or 0) >= 6, what="six auth failures counted")
    assert value(text, "cloudflare_ai_gateway_credit_balance") == 1234.56  # an HTML 403 is not "not enrolled"
    fake_api.inject(ACC, *[Fault.api_error(1004, "Not found", status=200)] * 50, endpoint="credit_balance")
    text = exporter.wait_metrics(
        lambda t: value(t, "cloudflare_ai_gateway_endpoint_enrolled", endpoint="credit_balance") == 0,
        what="success:false 1004 on 200 read as not enrolled")
    assert value(text, "cloudflare_ai_gateway_poll_success", account_id=ACC, endpoint="credit_balance") == 1
    assert value(text, "cloudflare_ai_gateway_credit_balance") is None
    assert value(text, "cloudflare_ai_gateway_api_errors_total", account_id=ACC, reason="api_error") is None
    assert value(text, "cloudflare_ai_gateway_poll_success", account_id=ACC, endpoint="spending_limit") == 1
