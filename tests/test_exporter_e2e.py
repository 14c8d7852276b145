"""The real exporter process against the fake Cloudflare API on loopback: values, failures, lifecycle."""

from __future__ import annotations

import gzip
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN, require_binary
from tests.fakeapi import FakeCloudflareAPI, Fault, invoice
from tests.support import INVOICE_HISTORY_ONLY, ExporterProcess, run_once, samples, value, wait_for

pytestmark = pytest.mark.e2e

ACC = "023e105f4ecef8ad9ca31a8372d0c353"
ACC2 = "1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40"
ACC3 = "6c2f8e1a3b5d7f9e0a4c6e8b1d3f5a72"
NOW = int(time.time())
DAY = 86400

Factory = Callable[..., ExporterProcess]


def config_for(api: FakeCloudflareAPI, *accounts: dict[str, Any], **cloudflare: Any) -> dict[str, Any]:
    return {
        "cloudflare": {"base_url": api.base_url, "api_token": TOKEN, "requests_per_second": 50,
                       "max_retries": 1, "timeout": "1s", **cloudflare},
        "poll": {"interval": "1s"},
        "accounts": list(accounts) or [{"id": ACC, "name": "production"}],
        "collectors": INVOICE_HISTORY_ONLY,
    }


def mixed_invoices() -> list[dict[str, Any]]:
    """Many pages, two currencies, every kind of status, fractional amounts."""
    invoices = []
    for i in range(57):
        invoices.append(invoice(id=f"in_paid_{i}", amount_due=1000 + i + 0.25, amount_paid=1000 + i + 0.25,
                                status="paid", created=NOW - (i + 30) * DAY, currency="usd" if i % 2 else "EUR"))
    invoices += [
        invoice(id="in_open_usd", amount_due=640.19, status="open", created=NOW - 3 * DAY),
        invoice(id="in_failed_usd", amount_due=12000, amount_paid=2000, status="open", attempted=True,
                attempt_count=3, created=NOW - 40 * DAY),
        invoice(id="in_failed_eur", amount_due=5050.5, status="uncollectible", attempted=True, attempt_count=2,
                created=NOW - 10 * DAY, currency="eur"),
        invoice(id="in_void", amount_due=999, status="void", created=NOW - 5 * DAY),
        invoice(id="in_draft", amount_due=777, status="draft", created=NOW - DAY),
        invoice(id="in_null", amount_due=300, status=None, created=NOW - 2 * DAY, origin="manual"),
    ]
    return invoices


def expected_from(raw_invoices: list[dict[str, Any]], divisor: float = 100) -> dict[str, Any]:
    """What the contract says the account metrics must be, computed straight from the wire data."""
    def unpaid(inv: dict[str, Any]) -> bool:
        return inv["amount_remaining"] > 0 and (inv.get("status") or "") not in ("paid", "void", "draft")

    due: dict[str, float] = defaultdict(float)
    remaining: dict[str, float] = defaultdict(float)
    for inv in raw_invoices:
        currency = inv["currency"].lower()
        due[currency] += inv["amount_due"] / divisor if unpaid(inv) else 0
        remaining[currency] += inv["amount_remaining"] / divisor if unpaid(inv) else 0
    unpaid_invoices = [inv for inv in raw_invoices if unpaid(inv)]
    return {
        "by_status": Counter(inv.get("status") or "unknown" for inv in raw_invoices),
        "unpaid": unpaid_invoices,
        "due": dict(due),
        "remaining": dict(remaining),
        "failed_attempts": sum(inv["attempt_count"] for inv in unpaid_invoices if inv.get("attempted")),
        "oldest": min(inv["created"] for inv in unpaid_invoices),
    }


def test_every_contract_metric_matches_the_api_data(fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    raw = mixed_invoices()
    fake_api.add_account(ACC, "production", raw)
    exporter = exporter_factory(config_for(fake_api, {"id": ACC, "name": "production"}, per_page=20))
    text = exporter.metrics()
    want = expected_from(raw)
    acc = {"account_id": ACC, "account": "production"}

    assert len(fake_api.requests_for(ACC)) >= 4  # 63 invoices at 20 a page
    for status, count in want["by_status"].items():
        assert value(text, "cloudflare_ai_gateway_account_invoices", **acc, status=status) == count
    assert value(text, "cloudflare_ai_gateway_account_unpaid_invoices", **acc) == len(want["unpaid"]) == 4
    for currency in ("usd", "eur"):
        assert value(text, "cloudflare_ai_gateway_account_amount_due", **acc, currency=currency) == pytest.approx(
            want["due"][currency])
        assert value(text, "cloudflare_ai_gateway_account_amount_remaining", **acc,
                     currency=currency) == pytest.approx(want["remaining"][currency])
    assert value(text, "cloudflare_ai_gateway_account_amount_due", **acc, currency="usd") == pytest.approx(
        129.4019)
    assert value(text, "cloudflare_ai_gateway_account_failed_payment_attempts", **acc) == want["failed_attempts"] == 5
    assert value(text, "cloudflare_ai_gateway_account_oldest_unpaid_invoice_created_timestamp_seconds",
                 **acc) == want["oldest"]

    # Per-invoice series: the unpaid ones only (the default), with their own values.
    due_series = samples(text, "cloudflare_ai_gateway_invoice_amount_due", **acc)
    assert sorted(labels["invoice_id"] for labels, _ in due_series) == sorted(i["id"] for i in want["unpaid"])
    inv = {**acc, "invoice_id": "in_failed_usd"}
    assert value(text, "cloudflare_ai_gateway_invoice_amount_due", **inv, currency="usd") == 120.0
    assert value(text, "cloudflare_ai_gateway_invoice_amount_paid", **inv, currency="usd") == 20.0
    assert value(text, "cloudflare_ai_gateway_invoice_amount_remaining", **inv, currency="usd") == 100.0
    assert value(text, "cloudflare_ai_gateway_invoice_payment_attempts", **inv) == 3
    assert value(text, "cloudflare_ai_gateway_invoice_created_timestamp_seconds", **inv) == NOW - 40 * DAY
    assert value(text, "cloudflare_ai_gateway_invoice_info", **inv, status="open", origin="subscription_cycle",
                 created_by="system", currency="usd") == 1
    assert value(text, "cloudflare_ai_gateway_invoice_info", **acc, invoice_id="in_null", status="unknown") == 1
    assert "invoice_pdf_url" not in text  # opt-in only

    assert value(text, "cloudflare_ai_gateway_poll_success", **acc) == 1
    assert value(text, "cloudflare_ai_gateway_poll_last_success_timestamp_seconds", **acc) == pytest.approx(
        time.time(), abs=30)
    assert 0 < (value(text, "cloudflare_ai_gateway_poll_duration_seconds", **acc) or 0) < 10
    assert (value(text, "cloudflare_ai_gateway_api_requests_total", account_id=ACC, code="200") or 0) >= 4
    assert value(text, "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 1
    assert samples(text, "cloudflare_ai_gateway_exporter_build_info")[0][0]["version"]
    assert " # " not in text and not any(len(line.split()) > 2 for line in text.splitlines()
                                         if line and not line.startswith("#") and "}" not in line)


def test_invoice_series_all_and_amount_divisor(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    raw = mixed_invoices()
    fake_api.add_account(ACC, "production", raw)
    config = config_for(fake_api, {"id": ACC, "name": "production"})
    config["metrics"] = {"invoice_series": "all", "amount_divisor": 1, "invoice_pdf_url": True}
    result = run_once(config, workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(samples(result.stdout, "cloudflare_ai_gateway_invoice_amount_due")) == len(raw)
    assert value(result.stdout, "cloudflare_ai_gateway_invoice_amount_due", invoice_id="in_open_usd") == 640.19
    assert samples(result.stdout, "cloudflare_ai_gateway_invoice_info", invoice_id="in_open_usd")[0][0][
        "invoice_pdf_url"] == ""

    config["metrics"] = {"invoice_series": "none"}
    result = run_once(config, workdir=tmp_path)
    assert not samples(result.stdout, "cloudflare_ai_gateway_invoice_amount_due")
    assert value(result.stdout, "cloudflare_ai_gateway_account_unpaid_invoices", account_id=ACC) == 4


def _invoice_series(text: str) -> list[tuple[dict[str, str], float]]:
    return samples(text, "cloudflare_ai_gateway_invoice_amount_remaining", account_id=ACC)


def _keep_failing(fault: Fault) -> Callable[[FakeCloudflareAPI], None]:
    """Queue the same fault for every request of the next polls, so the failure state lasts long enough
    to be scraped even on a loaded machine."""
    return lambda api: api.inject(ACC, *[fault] * 40)


# (name, how to break the API after a first good poll, expected reason, does the poll still succeed)
FAILURES: list[tuple[str, Callable[[FakeCloudflareAPI], None], str, bool]] = [
    ("revoked token", lambda api: api.revoke_token(TOKEN), "auth", False),
    ("429 then success", lambda api: api.inject(ACC, Fault.rate_limited(retry_after=1)), "rate_limited", True),
    ("5xx with HTML", _keep_failing(Fault.server_error(502)), "server_error", False),
    ("success false on 200", _keep_failing(Fault.api_error(code=8000, message="Internal error", status=200)),
     "api_error", False),
    ("timeouts", _keep_failing(Fault.delay(3)), "timeout", False),
    ("not JSON", _keep_failing(Fault.invalid_json()), "invalid_response", False),
    ("wrong shape", _keep_failing(Fault.wrong_shape()), "invalid_response", False),
    # counted, but read in one page of total_count: the poll succeeds with the whole history
    ("server ignores page", lambda api: setattr(api.accounts[ACC], "ignore_page", True), "pagination", True),
    ("endless has_more", lambda api: setattr(api.accounts[ACC], "endless_has_more", True), "pagination", False),
]


@pytest.mark.parametrize(("breakage", "reason", "poll_ok"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_api_failures_are_counted_and_the_old_data_stays(
        fake_api: FakeCloudflareAPI, exporter_factory: Factory,
        breakage: Callable[[FakeCloudflareAPI], None], reason: str, poll_ok: bool) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices())
    exporter = exporter_factory(config_for(fake_api, per_page=25))
    before = exporter.metrics()
    assert value(before, "cloudflare_ai_gateway_poll_success", account_id=ACC) == 1
    requests_before = len(fake_api.requests_for(ACC))

    breakage(fake_api)

    def failure_seen() -> str | None:
        text = exporter.metrics()
        errors = value(text, "cloudflare_ai_gateway_api_errors_total", account_id=ACC, reason=reason) or 0
        success = value(text, "cloudflare_ai_gateway_poll_success", account_id=ACC)
        return text if errors >= 1 and success == (1 if poll_ok else 0) else None

    after = wait_for(failure_seen, timeout=20, what=f"api_errors_total{{reason={reason!r}}}")
    assert exporter.proc.poll() is None, "the exporter died"
    assert exporter.get("/-/healthy").status_code == 200
    assert _invoice_series(after) == _invoice_series(before), "the last good data must stay exported"
    assert value(after, "cloudflare_ai_gateway_account_unpaid_invoices", account_id=ACC) == 4
    if not poll_ok:
        assert f"reason={reason}" in exporter.output()
    if reason == "auth":  # never retried: one request per poll
        time.sleep(1.5)
        failed = [r for r in fake_api.requests_for(ACC)[requests_before:] if r.status == 403]
        assert failed and len(failed) <= 3
        assert all(r.status == 403 for r in fake_api.requests_for(ACC)[requests_before:])


def test_poll_recovers_after_a_failure(fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices())
    exporter = exporter_factory(config_for(fake_api, max_retries=0))
    fake_api.inject(ACC, Fault.server_error())
    wait_for(lambda: value(exporter.metrics(), "cloudflare_ai_gateway_poll_success", account_id=ACC) == 0,
             what="a failed poll")
    fake_api.pay_invoice(ACC, "in_open_usd")
    text = exporter.wait_metrics(
        lambda t: value(t, "cloudflare_ai_gateway_account_unpaid_invoices", account_id=ACC) == 3, what="recovery")
    assert value(text, "cloudflare_ai_gateway_poll_success", account_id=ACC) == 1


def test_malformed_invoices_are_skipped_and_counted(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    good = [invoice(id="in_ok", amount_due=500, status="open", created=NOW)]
    bad: list[Any] = [
        {"id": "in_bad", "amount_due": "lots", "amount_paid": 0, "amount_remaining": 0, "currency": "usd"},
        {"id": "in_nocur", "amount_due": 1, "amount_paid": 0, "amount_remaining": 1},
        "not an object",
    ]
    fake_api.add_account(ACC, "production", good + bad)
    result = run_once(config_for(fake_api), workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert value(result.stdout, "cloudflare_ai_gateway_api_invalid_invoices_total", account_id=ACC) == 3
    assert value(result.stdout, "cloudflare_ai_gateway_account_unpaid_invoices", account_id=ACC) == 1
    assert "skipped=3" in result.stderr


def test_scrapes_never_wait_for_a_slow_api(fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices())
    exporter = exporter_factory(config_for(fake_api, timeout="10s"))
    fake_api.accounts[ACC].latency = 5.0
    wait_for(lambda: any(r.status == 0 for r in fake_api.requests_for(ACC)), what="a poll hanging on the API")
    started = time.monotonic()
    results: list[int] = []

    def scrape() -> None:
        results.append(exporter.get("/metrics").status_code)

    threads = [threading.Thread(target=scrape) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 16
    assert time.monotonic() - started < 2.0


def test_readiness_waits_for_the_first_poll(fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices(), latency=2.0)
    exporter = exporter_factory(config_for(fake_api, timeout="5s"), wait_ready=False)
    assert exporter.get("/-/ready").status_code == 503
    assert exporter.get("/-/healthy").status_code == 200
    assert "cloudflare_ai_gateway_poll_success{" not in exporter.metrics()
    exporter.wait_ready(15)
    assert "cloudflare_ai_gateway_poll_success{" in exporter.metrics()


def test_http_endpoints_formats_and_listen_addresses(fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    from tests.support import free_port

    fake_api.add_account(ACC, "production", mixed_invoices())
    second = free_port()
    exporter = exporter_factory(config_for(fake_api), "--web.listen-address", f"127.0.0.1:{second}",
                                "--web.telemetry-path", "/custom-metrics")
    page = exporter.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "production" in page.text and ACC in page.text and "/custom-metrics" in page.text and "ok" in page.text
    assert exporter.get("/metrics").status_code == 404
    plain = exporter.get("/custom-metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    zipped = httpx.get(exporter.url + "/custom-metrics", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert zipped.headers["content-encoding"] == "gzip" and zipped.text == plain.text
    with httpx.stream("GET", exporter.url + "/custom-metrics", headers={"Accept-Encoding": "gzip"},
                      timeout=10) as raw:
        assert gzip.decompress(b"".join(raw.iter_raw())) == plain.content
    om = exporter.get("/custom-metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert "cloudflare_ai_gateway_api_requests_total{" in om.text
    other = httpx.get(f"http://127.0.0.1:{second}/custom-metrics", timeout=10)
    assert other.status_code == 200 and "cloudflare_ai_gateway_poll_success" in other.text
    assert exporter.get("/-/reload").status_code == 405
    wrong_method = httpx.post(exporter.url + "/custom-metrics", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, HEAD"
    assert httpx.post(exporter.url + "/nope", timeout=10).status_code == 404
    assert exporter.get("/nope").status_code == 404
    assert "process_cpu_seconds_total" not in plain.text and "python_gc" not in plain.text


def test_process_metrics_only_on_request(fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices())
    exporter = exporter_factory(config_for(fake_api), "--collector.process")
    text = exporter.metrics()
    assert "process_resident_memory_bytes" in text and "cloudflare_ai_gateway_poll_success" in text


def test_reload_good_and_bad(fake_api: FakeCloudflareAPI, exporter_factory: Factory) -> None:
    for account_id, name in ((ACC, "production"), (ACC2, "staging"), (ACC3, "research")):
        fake_api.add_account(account_id, name, mixed_invoices())
    config = config_for(fake_api, {"id": ACC, "name": "production"}, {"id": ACC2, "name": "staging"})
    exporter = exporter_factory(config, "--web.enable-lifecycle")
    assert value(exporter.metrics(), "cloudflare_ai_gateway_poll_success", account_id=ACC2) == 1

    # Good reload by HTTP: one account leaves (its series go), one arrives.
    config["accounts"] = [{"id": ACC, "name": "production"}, {"id": ACC3, "name": "research"}]
    exporter.write_config(config)
    response = httpx.post(exporter.url + "/-/reload", timeout=10)
    assert response.status_code == 200
    text = exporter.wait_metrics(
        lambda t: value(t, "cloudflare_ai_gateway_poll_success", account_id=ACC3) == 1, what="new account polled")
    assert f'account_id="{ACC2}"' not in text
    assert value(text, "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 1

    # Bad reload by HTTP: refused with the reason, the old config keeps running.
    exporter.config_path.write_text("accounts: [nonsense\n")
    response = httpx.post(exporter.url + "/-/reload", timeout=10)
    assert response.status_code == 500 and "invalid YAML" in response.text
    text = exporter.metrics()
    assert value(text, "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 0
    polls = len(fake_api.requests_for(ACC3))
    wait_for(lambda: len(fake_api.requests_for(ACC3)) > polls, what="polling goes on with the old config")

    # Bad reload by SIGHUP: logged, still running; then a good SIGHUP reload recovers.
    config["accounts"] = [{"id": "not-an-id"}]
    exporter.write_config(config)
    exporter.signal(signal.SIGHUP)
    wait_for(lambda: "config reload failed" in exporter.output() and "not-an-id" in exporter.output(),
             what="bad SIGHUP reload logged")
    assert exporter.proc.poll() is None
    config["accounts"] = [{"id": ACC2, "name": "staging-renamed"}]
    exporter.write_config(config)
    exporter.signal(signal.SIGHUP)
    exporter.wait_metrics(lambda t: value(t, "cloudflare_ai_gateway_exporter_config_last_reload_successful") == 1
                          and f'account_id="{ACC}"' not in t, what="good SIGHUP reload")
    wait_for(lambda: value(exporter.metrics(), "cloudflare_ai_gateway_poll_success", account="staging-renamed") == 1,
             what="renamed account polled")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stops_within_two_seconds_even_mid_poll(fake_api: FakeCloudflareAPI, exporter_factory: Factory,
                                                signum: int) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices())
    exporter = exporter_factory(config_for(fake_api, timeout="30s"))
    fake_api.accounts[ACC].latency = 20.0
    wait_for(lambda: any(r.status == 0 for r in fake_api.requests_for(ACC)), what="a poll waiting on the slow API")
    started = time.monotonic()
    exporter.signal(signum)
    exporter.proc.wait(5)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
    assert exporter.proc.returncode == 0
    assert "shutting down" in exporter.output()


def test_once_prints_the_exposition_and_reports_failures(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices())
    fake_api.add_account(ACC2, "staging", mixed_invoices(), token="another-token")
    config = config_for(fake_api, {"id": ACC, "name": "production"})
    ok = run_once(config, workdir=tmp_path)
    assert ok.returncode == 0
    assert value(ok.stdout, "cloudflare_ai_gateway_account_unpaid_invoices", account_id=ACC) == 4
    config["accounts"].append({"id": ACC2, "name": "staging"})  # the global token cannot read it
    failed = run_once(config, workdir=tmp_path)
    assert failed.returncode == 1
    assert value(failed.stdout, "cloudflare_ai_gateway_poll_success", account_id=ACC2) == 0
    assert value(failed.stdout, "cloudflare_ai_gateway_poll_success", account_id=ACC) == 1


def test_rate_limiter_never_exceeds_its_budget(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    rate = 8
    accounts = [f"{i:032x}" for i in range(1, 25)]
    for account_id in accounts:
        fake_api.add_account(account_id, f"acc{account_id[-2:]}", mixed_invoices()[:3])
    config = config_for(fake_api, *({"id": a} for a in accounts), requests_per_second=rate)
    config["poll"]["max_concurrency"] = 16
    started = time.monotonic()
    result = run_once(config, workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    times = sorted(r.time for r in fake_api.requests if "invoice-history" in r.path)
    assert len(times) == len(accounts)
    # The limiter grants sends at least 1/rate apart; arrival at the fake adds some jitter on a loaded machine.
    worst = max(sum(1 for t in times if start <= t < start + 1.0 - 0.05) for start in times)
    assert worst <= rate, f"{worst} requests in one second, budget {rate}"
    span = times[-1] - times[0]
    assert span >= (len(times) - 1) / rate * 0.95
    assert time.monotonic() - started < 30


def test_discovery_adds_accounts_filtered_by_regex(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    for account_id, name in ((ACC, "production"), (ACC2, "staging"), (ACC3, "research-lab")):
        fake_api.add_account(account_id, name, mixed_invoices()[:2])
    config = config_for(fake_api, {"id": ACC, "name": "prod-listed"})
    config["discovery"] = {"enabled": True, "include": ["^(staging|research)"], "exclude": ["lab$"]}
    result = run_once(config, workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    polled = {labels["account_id"]: labels["account"]
              for labels, _ in samples(result.stdout, "cloudflare_ai_gateway_poll_success")}
    assert polled == {ACC: "prod-listed", ACC2: "staging"}


def test_exposition_passes_promtool_check_metrics(demo_fake: FakeCloudflareAPI, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    from tests.fakeapi import DEMO_ACCOUNTS, DEMO_TOKEN

    config = {"cloudflare": {"base_url": demo_fake.base_url, "api_token": DEMO_TOKEN, "requests_per_second": 50},
              "accounts": [{"id": i, "name": n} for n, i in DEMO_ACCOUNTS.items() if n != "legacy"],
              "metrics": {"invoice_series": "all", "invoice_pdf_url": True}}
    result = run_once(config, workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    check = subprocess.run([promtool, "check", "metrics"], input=result.stdout, capture_output=True, text=True,
                           timeout=30, check=False)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr


def test_api_rate_limit_is_respected_not_hammered(tmp_path: Path) -> None:
    """The API allows 6 requests per 3 s; the exporter's own budget is far higher. The Ratelimit header and
    Retry-After must hold it back: every poll succeeds and the API refuses almost nothing."""
    accounts = [f"{i:032x}" for i in range(1, 13)]
    with FakeCloudflareAPI(token=TOKEN, rate_limit=(6, 3.0)) as api:
        for account_id in accounts:
            api.add_account(account_id, f"acc{account_id[-2:]}", mixed_invoices()[:2])
        config = config_for(api, *({"id": a} for a in accounts), requests_per_second=50, max_retries=3,
                            timeout="5s")
        result = run_once(config, workdir=tmp_path)
        statuses = Counter(r.status for r in api.requests)
    assert result.returncode == 0, result.stderr
    assert statuses[200] == len(accounts)
    assert statuses[429] <= 2, statuses


def test_retry_after_is_honoured(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices()[:2])
    fake_api.inject(ACC, Fault.rate_limited(retry_after=2))
    result = run_once(config_for(fake_api), workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = fake_api.requests_for(ACC)
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.9
    assert value(result.stdout, "cloudflare_ai_gateway_api_errors_total", account_id=ACC, reason="rate_limited") == 1
    assert value(result.stdout, "cloudflare_ai_gateway_api_requests_total", account_id=ACC, code="429") == 1


def test_once_fails_when_discovery_fails(fake_api: FakeCloudflareAPI, tmp_path: Path) -> None:
    fake_api.add_account(ACC, "production", mixed_invoices()[:2], token="own-token")
    config = config_for(fake_api, {"id": ACC, "name": "production", "api_token": "own-token"},
                        api_token="not-a-valid-token")
    config["discovery"] = {"enabled": True}
    result = run_once(config, workdir=tmp_path)
    assert result.returncode == 1  # the listed account polled fine, but accounts may be missing
    assert value(result.stdout, "cloudflare_ai_gateway_poll_success", account_id=ACC) == 1
    assert "account discovery failed" in result.stderr and "reason=auth" in result.stderr
    assert value(result.stdout, "cloudflare_ai_gateway_api_errors_total", account_id="", reason="auth") == 1
