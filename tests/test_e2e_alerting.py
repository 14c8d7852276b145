"""End to end, with real programs on loopback: the fake Cloudflare API, the real exporter (one on a test
account, one in --demo mode), the real Prometheus and the real Alertmanager posting to a webhook receiver
inside this test.

A restart of the exporter in the middle of a firing payment alert must not reach the webhook as "resolved".
The demo's gateways raise the spend-limit rule and rate-limited alerts per account, gateway and rule.

The rules are prometheus/alerts.yml with one change: every alert's ``for:`` is 1s instead of 3m..1h (a test
copy, see promstack.rules_with_short_for), so "two polls of evidence" does not make the test wait for two
polls; the thresholds, windows and expressions are the shipped ones. Prometheus
runs prometheus.example.yml with a 1s scrape and evaluation interval, Alertmanager alertmanager.example.yml
with 1s group timers, no business-hours restriction and its webhooks pointed at the receiver below; routing
and inhibition are as shipped. Prometheus also scrapes Alertmanager as an unrelated job, which no panel may
show.

The dashboard half runs every query of grafana/dashboard.json (panels, variables, annotations), with the
variables substituted the way Grafana does, against that Prometheus through its HTTP API.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakeapi import DEMO_ACCOUNTS, FakeCloudflareAPI, invoice
from tests.promstack import (
    ALERTMANAGER_NAMES,
    GRAFANA_DIR,
    Alertmanager,
    Prometheus,
    WebhookReceiver,
    alertmanager_test_config,
    find_program,
    prometheus_test_config,
    rules_with_short_for,
)
from tests.support import ExporterProcess, start_exporter, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "fake-api-token"
E2E_ACCOUNT_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
E2E_ACCOUNT = "e2e-billing"
E2E_INVOICE = "in_e2e_declined"
PAYMENT_FAILED = "CloudflareAIGatewayInvoicePaymentFailed"
UNRELATED_JOB = "alertmanager"
# Generous for a loaded 2-core machine; each wait returns as soon as its condition holds.
ALERT_TIMEOUT = 40.0
# The rate-limited alert needs the demo's refused-request counters to grow: they start at 0 at the first poll
# and count a minute once it has ended (and the demo's analytics delay has passed), so about a minute or two.
GATEWAY_TIMEOUT = 180.0
NEAR = "CloudflareAIGatewaySpendLimitRuleNear"
REACHED = "CloudflareAIGatewaySpendLimitRuleReached"
RATE_LIMITED = "CloudflareAIGatewayRequestsRateLimited"


@dataclass
class Stack:
    api: FakeCloudflareAPI
    exporter: ExporterProcess
    demo: ExporterProcess
    receiver: WebhookReceiver
    alertmanager: Alertmanager
    prometheus: Prometheus
    started: list[Any]
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    find_program("prometheus")  # skip (or, in CI, fail) before starting anything
    find_program(*ALERTMANAGER_NAMES)
    tmp = tmp_path_factory.mktemp("promstack")
    started: list[Any] = []
    try:
        api = FakeCloudflareAPI(token=TOKEN)
        api.add_account(E2E_ACCOUNT_ID, E2E_ACCOUNT, [
            invoice(id=E2E_INVOICE, amount_due=4200, status="open", attempted=True, attempt_count=2,
                    created=int(time.time()) - 86400),
            invoice(id="in_e2e_paid", amount_due=1500, amount_paid=1500, status="paid", attempt_count=1,
                    attempted=True, created=int(time.time()) - 40 * 86400),
        ])
        # The e2e account has also spent 120 USD of a 100 USD daily fixed spending limit today.
        api.set_billing(E2E_ACCOUNT_ID, spending_limit={"amount": 10_000, "duration": "daily", "strategy": "fixed"},
                        spending_limit_enabled=True, usage=[(time.time() - 60, 12_000.0)])
        api.start()
        started.append(api)
        config = {"cloudflare": {"base_url": api.base_url, "api_token": TOKEN, "requests_per_second": 50},
                  "poll": {"interval": "1s"},
                  "accounts": [{"id": E2E_ACCOUNT_ID, "name": E2E_ACCOUNT}]}
        (tmp / "exporter").mkdir()
        exporter = start_exporter(config, workdir=tmp / "exporter")
        started.append(exporter)
        (tmp / "demo").mkdir()
        demo = start_exporter(None, "--demo", workdir=tmp / "demo")
        started.append(demo)
        receiver = WebhookReceiver()
        started.append(receiver)
        alertmanager = Alertmanager(alertmanager_test_config(receiver.url), tmp / "alertmanager")
        started.append(alertmanager)
        rules = tmp / "alerts.test.yml"
        rules.write_text(yaml.safe_dump(rules_with_short_for("1s"), sort_keys=False))
        prom_config = prometheus_test_config([exporter.address, demo.address], f"127.0.0.1:{alertmanager.port}",
                                             rules)
        prom_config["scrape_configs"].append({"job_name": UNRELATED_JOB, "scrape_interval": "1s",
                                              "static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]})
        prometheus = Prometheus(prom_config, tmp / "prometheus")
        started.append(prometheus)
        yield Stack(api, exporter, demo, receiver, alertmanager, prometheus, started, tmp)
    finally:
        for thing in reversed(started):
            thing.stop()


def _logs(stack: Stack) -> str:
    return (f"--- prometheus\n{stack.prometheus.output()[-3000:]}\n--- alertmanager\n"
            f"{stack.alertmanager.output()[-3000:]}\n--- notifications\n{stack.receiver.notifications!r}")


def _is(alert: dict[str, Any], alertname: str, status: str, **labels: str) -> bool:
    got = alert["labels"]
    return (got.get("alertname") == alertname and alert["status"] == status
            and all(got.get(k) == v for k, v in labels.items()))


# ---- alerting ---------------------------------------------------------------------------------------------


def _await_alert(stack: Stack, predicate: Callable[[str, dict[str, Any]], bool], timeout: float,
                 what: str) -> tuple[str, dict[str, Any]]:
    """The first webhook delivery that matches; on a time-out the failure carries every process's log."""
    try:
        return stack.receiver.wait_for_alert(predicate, timeout, what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{_logs(stack)}") from None


def _prometheus_alert(stack: Stack, alertname: str, account_id: str) -> dict[str, Any] | None:
    alerts = stack.prometheus.api("alerts")["alerts"]
    return next((a for a in alerts if a["labels"].get("alertname") == alertname
                 and a["labels"].get("account_id") == account_id), None)


def test_failed_payment_reaches_the_billing_owner_survives_a_restart_and_resolves_once_paid(stack: Stack) -> None:
    path, alert = _await_alert(
        stack, lambda p, a: _is(a, PAYMENT_FAILED, "firing", account_id=E2E_ACCOUNT_ID), ALERT_TIMEOUT,
        f"{PAYMENT_FAILED} for {E2E_ACCOUNT} at the webhook receiver")
    assert path == "/billing-owner", "payment failures go to the account's billing owner"
    assert alert["labels"] == {
        "alertname": PAYMENT_FAILED, "severity": "critical", "account": E2E_ACCOUNT, "account_id": E2E_ACCOUNT_ID,
    }, "billing alerts are per account: no instance, job or pod that a restart or rollout would change"
    annotations = alert["annotations"]
    assert annotations["description"] == (
        f"Account {E2E_ACCOUNT} ({E2E_ACCOUNT_ID}) has 2 failed payment attempt(s) on unpaid AI Gateway "
        "invoices. Outstanding: 42.00 usd. The account's billing owner must fix the payment method and pay the "
        "open invoices in the Cloudflare dashboard.")
    assert annotations["runbook_url"].startswith("https://")
    assert annotations["runbook_url"].endswith("/docs/runbook.md#cloudflareaigatewayinvoicepaymentfailed")
    before = _prometheus_alert(stack, PAYMENT_FAILED, E2E_ACCOUNT_ID)
    assert before is not None and before["state"] == "firing"

    # Restart the exporter on the same address: its scrapes fail (Prometheus marks every series stale), the
    # new process has no account data until its first poll.
    old = stack.exporter
    config = yaml.safe_load(old.config_path.read_text())
    old.stop()
    prom = stack.prometheus
    wait_for(lambda: prom.query(f'up{{instance="{old.address}"}} == 0'), ALERT_TIMEOUT, interval=0.2,
             what="Prometheus sees the stopped exporter down")
    down_at = time.time()
    workdir = stack.workdir / "exporter-restarted"
    workdir.mkdir()
    new = ExporterProcess(config, (), None, workdir, port=old.port)
    stack.started.append(new)
    new.wait_ready()
    stack.exporter = new
    wait_for(lambda: prom.query(
        f'cloudflare_ai_gateway_account_failed_payment_attempts{{account_id="{E2E_ACCOUNT_ID}"}} > 0'),
        ALERT_TIMEOUT, interval=0.2, what="the restarted exporter's data scraped")
    time.sleep(5)  # five rule evaluations and Alertmanager group intervals after the new data arrived
    resolved = [a for _, a in stack.receiver.alerts()
                if _is(a, PAYMENT_FAILED, "resolved", account_id=E2E_ACCOUNT_ID)]
    assert not resolved, (
        f"the restart {time.time() - down_at:.0f}s ago reached the webhook as resolved:\n{_logs(stack)}")
    after = _prometheus_alert(stack, PAYMENT_FAILED, E2E_ACCOUNT_ID)
    assert after is not None and after["state"] == "firing" and after["activeAt"] == before["activeAt"], (
        f"the alert was reset by the restart: {before} -> {after}")

    stack.api.pay_invoice(E2E_ACCOUNT_ID, E2E_INVOICE)
    path, _ = _await_alert(
        stack, lambda p, a: _is(a, PAYMENT_FAILED, "resolved", account_id=E2E_ACCOUNT_ID), ALERT_TIMEOUT,
        f"{PAYMENT_FAILED} for {E2E_ACCOUNT} resolved at the webhook receiver")
    assert path == "/billing-owner"


def test_credit_and_spending_limit_alerts_for_the_demo_accounts(stack: Stack) -> None:
    """The demo's research account (auto top-up failing), bulk (85% of a daily limit) and staging (credits
    draining without auto top-up) raise the new alerts on the shipped routes; hobby (no Unified Billing) none."""
    research, bulk, staging = DEMO_ACCOUNTS["research"], DEMO_ACCOUNTS["bulk"], DEMO_ACCOUNTS["staging"]
    path, alert = _await_alert(
        stack, lambda p, a: _is(a, "CloudflareAIGatewayAutoTopupFailing", "firing", account_id=research),
        ALERT_TIMEOUT, "AutoTopupFailing for the demo's research account")
    assert path == "/billing-owner" and alert["labels"]["severity"] == "critical"
    path, alert = _await_alert(
        stack, lambda p, a: _is(a, "CloudflareAIGatewaySpendingLimitNear", "firing", account_id=bulk),
        ALERT_TIMEOUT, "SpendingLimitNear for the demo's bulk account")
    assert path == "/ticket" and "85%" in alert["annotations"]["description"]
    path, alert = _await_alert(
        stack, lambda p, a: _is(a, "CloudflareAIGatewayCreditsRunningOut", "firing", account_id=staging),
        ALERT_TIMEOUT, "CreditsRunningOut for the demo's staging account")
    assert path == "/page"
    assert not [a for _, a in stack.receiver.alerts() if a["labels"].get("account") == "hobby"], (
        "an account without Unified Billing raised an alert")


def test_spending_limit_reached_pages_and_holds_back_near(stack: Stack) -> None:
    """The fake's e2e account spent 120% of its daily limit: SpendingLimitReached goes to the pager, and
    Alertmanager holds SpendingLimitNear of the same account back behind it."""
    path, alert = _await_alert(
        stack, lambda p, a: _is(a, "CloudflareAIGatewaySpendingLimitReached", "firing", account_id=E2E_ACCOUNT_ID),
        ALERT_TIMEOUT, "SpendingLimitReached for the e2e account")
    assert path == "/page" and alert["labels"]["severity"] == "critical"
    assert alert["labels"]["duration"] == "daily" and alert["labels"]["strategy"] == "fixed"
    assert "used 120% of its daily fixed spending limit: 120.00 of 100.00 USD" in alert["annotations"]["description"]

    def near_inhibited() -> bool:
        alerts = stack.alertmanager.alerts(alertname="CloudflareAIGatewaySpendingLimitNear", account_id=E2E_ACCOUNT_ID)
        return any(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in alerts)

    wait_for(near_inhibited, ALERT_TIMEOUT, interval=0.2, what="SpendingLimitNear of the e2e account inhibited")


def test_gateway_alerts_for_the_demo_reach_the_right_receivers_per_account_gateway_and_rule(stack: Stack) -> None:
    """The demo's gateways raise the three gateway alerts on the shipped routes, labelled with the account,
    the gateway and the rule only: production's chat gateway has its gpt-4o-daily rule at about 85% (Near:
    a ticket), bulk's ingest gateway its hourly-cap rule at about 125% (Reached: a page, and Alertmanager holds
    Near of that rule back; Near never reaches the pager), production's batch gateway refuses requests with its
    rate limit (RequestsRateLimited: a ticket). The rules below 80% (chat's daily-budget, ingest's per-team at
    about 60%) and the staging gateway, whose spend limits are off, raise nothing."""
    production, bulk = DEMO_ACCOUNTS["production"], DEMO_ACCOUNTS["bulk"]

    path, alert = _await_alert(
        stack, lambda p, a: _is(a, NEAR, "firing", account_id=production, gateway="chat", rule="gpt-4o-daily"),
        GATEWAY_TIMEOUT, f"{NEAR} for production's chat gateway, rule gpt-4o-daily")
    assert path == "/ticket"
    assert alert["labels"] == {"alertname": NEAR, "severity": "warning", "account_id": production,
                               "account": "production", "gateway": "chat", "rule": "gpt-4o-daily"}, (
        "gateway alerts are per account, gateway and rule: no instance, job or pod")
    description = alert["annotations"]["description"]
    assert re.search(r"has used 8\d(\.\d+)?% of its budget: \d+\.\d\d of 300\.00 USD", description), description
    assert "scope model=gpt-4o" in description, description
    assert alert["annotations"]["runbook_url"].endswith("/docs/runbook.md#cloudflareaigatewayspendlimitrulenear")

    path, alert = _await_alert(
        stack, lambda p, a: _is(a, REACHED, "firing", account_id=bulk, gateway="ingest", rule="hourly-cap"),
        GATEWAY_TIMEOUT, f"{REACHED} for bulk's ingest gateway, rule hourly-cap")
    assert path == "/page", "a spend-limit rule over budget stops traffic: it pages"
    assert alert["labels"] == {"alertname": REACHED, "severity": "critical", "account_id": bulk,
                               "account": "bulk", "gateway": "ingest", "rule": "hourly-cap"}
    assert re.search(r"has used 1[2-3]\d(\.\d+)?% of its budget: \d+\.\d\d of 40\.00 USD",
                     alert["annotations"]["description"]), alert["annotations"]["description"]

    def near_of_hourly_cap_inhibited() -> bool:
        alerts = stack.alertmanager.alerts(alertname=NEAR, account_id=bulk, gateway="ingest", rule="hourly-cap")
        return any(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in alerts)

    wait_for(near_of_hourly_cap_inhibited, ALERT_TIMEOUT, interval=0.2,
             what=f"{NEAR} of bulk's hourly-cap held back behind {REACHED}")

    path, alert = _await_alert(
        stack, lambda p, a: _is(a, RATE_LIMITED, "firing", account_id=production, gateway="batch"),
        GATEWAY_TIMEOUT, f"{RATE_LIMITED} for production's batch gateway")
    assert path == "/ticket"
    assert alert["labels"] == {"alertname": RATE_LIMITED, "severity": "warning", "account_id": production,
                               "account": "production", "gateway": "batch"}
    description = alert["annotations"]["description"]
    assert "Its own rate limit: 60 requests per 1m 0s (sliding)" in description, description
    assert "BYOK only" in description, description

    paged = [a for _, a in stack.receiver.alerts("/page") if a["labels"].get("alertname") == NEAR]
    assert not paged, f"{NEAR} reached the pager: {paged}"
    quiet = [a for _, a in stack.receiver.alerts()
             if a["labels"].get("alertname") in (NEAR, REACHED)
             and (a["labels"].get("rule") in ("daily-budget", "per-team") or a["labels"].get("account") == "staging")]
    assert not quiet, f"a rule below 80% or a disabled one raised an alert: {quiet}"


def test_warnings_open_tickets_and_a_failed_payment_inhibits_unpaid(stack: Stack) -> None:
    """The demo's legacy account (revoked token) raises BillingPollFailing on the ticket receiver; the demo's
    research account (declined card on a 40-day-old invoice) has InvoiceUnpaid firing in Prometheus, but
    Alertmanager holds it back behind InvoicePaymentFailed of the same account."""
    legacy, research = DEMO_ACCOUNTS["legacy"], DEMO_ACCOUNTS["research"]
    path, alert = _await_alert(
        stack, lambda p, a: _is(a, "CloudflareAIGatewayBillingPollFailing", "firing", account_id=legacy),
        ALERT_TIMEOUT, "BillingPollFailing for the demo's legacy account")
    assert path == "/ticket"
    assert alert["labels"]["account"] == "legacy"
    assert "auth" in alert["annotations"]["description"]

    def unpaid_inhibited() -> bool:
        alerts = stack.alertmanager.alerts(alertname="CloudflareAIGatewayInvoiceUnpaid", account_id=research)
        return any(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in alerts)

    wait_for(unpaid_inhibited, ALERT_TIMEOUT, interval=0.2, what="InvoiceUnpaid of research inhibited")
    assert not any(_is(a, "CloudflareAIGatewayInvoiceUnpaid", "firing", account_id=research)
                   for _, a in stack.receiver.alerts())


# ---- dashboard --------------------------------------------------------------------------------------------

DASHBOARD = json.loads((GRAFANA_DIR / "dashboard.json").read_text())
RATE_INTERVAL = "15s"  # Grafana: max(4 x scrape interval, $__interval + scrape interval)
RANGE_STEP = "5s"


def interpolate(expr: str, values: dict[str, list[str]]) -> str:
    """Grafana's interpolation of the dashboard's variables in a Prometheus query: "All" is the variable's
    allValue (.*), several values become a regex alternation (a|b), and the built-in intervals."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "__rate_interval":
            return RATE_INTERVAL
        if name in ("__interval", "__interval_ms", "__range"):
            return {"__interval": RANGE_STEP, "__interval_ms": str(int(RANGE_STEP.removesuffix("s")) * 1000),
                    "__range": "5m"}[name]
        chosen = values[name]
        return chosen[0] if len(chosen) == 1 else "(" + "|".join(re.escape(v) for v in chosen) + ")"

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


# "All": the instance, account and gateway variables use allValue .*; the job variable has none, so Grafana
# sends the listed jobs (see _all()).
ALL_BUT_JOB = {"instance": [".*"], "account": [".*"], "gateway": [".*"]}


def _all(prom: Prometheus) -> dict[str, list[str]]:
    return {**ALL_BUT_JOB, "job": prom.label_values("job", "cloudflare_ai_gateway_exporter_build_info")}


def _panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p['title']} / {t['refId']}", t) for p in _panels() for t in p["targets"]]


def _run(prom: Prometheus, target: dict[str, Any], values: dict[str, list[str]]) -> list[dict[str, Any]]:
    expr = interpolate(target["expr"], values)
    if target.get("instant"):
        return prom.query(expr)
    end = time.time()
    return prom.query_range(expr, end - 300, end, RANGE_STEP)


def _wait_for_data(stack: Stack) -> None:
    """Rates need two scrapes of a counter, and the demo must have polled once; wait for both."""
    wait_for(lambda: stack.prometheus.query(
        'count(count_over_time(cloudflare_ai_gateway_api_requests_total[30s]) >= 3) >= 5'),
        ALERT_TIMEOUT, interval=0.5, what="three scrapes of the demo's request counters")


def test_dashboard_variables_list_the_demo(stack: Stack) -> None:
    _wait_for_data(stack)
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    found: dict[str, list[str]] = {}
    values = _all(stack.prometheus)
    for name in ("job", "instance", "account"):
        definition = interpolate(variables[name]["query"]["query"], values)
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
        assert match, definition
        found[name] = stack.prometheus.label_values(match.group(2), match.group(1))
    assert found["job"] == ["cloudflare-ai-gateway"]
    assert set(found["instance"]) == {stack.exporter.address, stack.demo.address}
    assert set(found["account"]) == {*DEMO_ACCOUNTS, E2E_ACCOUNT}


def test_dashboard_gateway_variable_lists_the_demo_gateways_and_filters_the_gateway_panels(stack: Stack) -> None:
    """The Gateway variable lists the demo's gateways of the selected accounts, and a gateway panel with one
    gateway selected returns that gateway only."""
    _wait_for_data(stack)
    prom = stack.prometheus
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}

    def gateways(accounts: list[str]) -> set[str]:
        definition = interpolate(variables["gateway"]["query"]["query"], {**_all(prom), "account": accounts})
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
        assert match, definition
        return set(prom.label_values(match.group(2), match.group(1)))

    assert gateways([".*"]) >= {"chat", "batch", "ingest", "staging"}
    assert gateways(["bulk"]) == {"ingest"}
    (panel,) = [p for p in _panels() if p["title"] == "Spend-limit rule usage"]
    result = _run(prom, panel["targets"][0], {**_all(prom), "gateway": ["chat"]})
    assert result and {s["metric"]["gateway"] for s in result} == {"chat"}, result


def test_every_panel_query_returns_data_for_the_demo(stack: Stack) -> None:
    _wait_for_data(stack)
    prom = stack.prometheus
    values = _all(prom)
    assert UNRELATED_JOB not in values["job"]
    for where, target in _targets():
        result = _run(prom, target, values)
        assert result, f"{where}: no data with every variable on All: {interpolate(target['expr'], values)}"
        accounts = {s["metric"].get("account") for s in result} - {None}
        assert accounts <= {*DEMO_ACCOUNTS, E2E_ACCOUNT}, f"{where}: unexpected accounts {accounts}"
        jobs = {s["metric"].get("job") for s in result} - {None}
        assert UNRELATED_JOB not in jobs, f"{where}: shows the unrelated job {UNRELATED_JOB}"


def test_never_polled_account_keeps_a_tile(stack: Stack) -> None:
    """The demo's legacy account (revoked token: no poll ever succeeded) shows in the billing tiles as NaN,
    which the panels map to "never polled successfully", instead of vanishing."""
    _wait_for_data(stack)
    prom = stack.prometheus
    (panel,) = [p for p in _panels() if p["title"] == "Outstanding balance"]
    result = _run(prom, panel["targets"][0], {**_all(prom), "account": ["legacy"]})
    assert [s["value"][1] for s in result] == ["NaN"], result


def test_every_panel_query_runs_with_one_or_several_values_selected(stack: Stack) -> None:
    """The queries stay valid PromQL with each demo account alone, with two at once, with one instance and
    with two gateways, and they then return only the selected accounts and gateways."""
    _wait_for_data(stack)
    prom = stack.prometheus
    selections = [{"job": ["cloudflare-ai-gateway"], "instance": [stack.demo.address], "account": [name],
                   "gateway": [".*"]} for name in DEMO_ACCOUNTS]
    selections.append({"job": ["cloudflare-ai-gateway"], "instance": [".*"], "account": ["research", "bulk"],
                       "gateway": [".*"]})
    selections.append({"job": ["cloudflare-ai-gateway"], "instance": [".*"], "account": ["production", "bulk"],
                       "gateway": ["chat", "ingest"]})
    seen_per_panel: dict[str, set[str]] = {}
    for values in selections:
        for where, target in _targets():
            result = _run(prom, target, values)
            accounts = {s["metric"].get("account") for s in result} - {None}
            assert accounts <= set(values["account"]), f"{where} with {values}: returned {accounts}"
            gateways = {s["metric"].get("gateway") for s in result} - {None}
            assert values["gateway"] == [".*"] or gateways <= set(values["gateway"]), (
                f"{where} with {values}: returned {gateways}")
            seen_per_panel.setdefault(where, set()).update(accounts)
    # Every account-level panel shows at least one demo account when the demo accounts are picked one by one.
    for where, target in _targets():
        if re.search(r"by \([^)]*\baccount\b", target["expr"]):
            assert seen_per_panel[where], f"{where}: no data for any demo account alone"


def test_dashboard_annotation_query_shows_the_firing_alerts(stack: Stack) -> None:
    prom = stack.prometheus
    (annotation,) = [a for a in DASHBOARD["annotations"]["list"] if a.get("expr")]
    expr = interpolate(annotation["expr"], _all(prom))
    result = wait_for(lambda: prom.query(expr), ALERT_TIMEOUT, interval=0.5, what=f"data for {expr}")
    assert {s["metric"]["alertname"] for s in result} >= {PAYMENT_FAILED}
    # Only the selected account's alerts.
    only = interpolate(annotation["expr"], {**_all(prom), "account": ["legacy"]})
    assert {s["metric"].get("account") for s in prom.query(only)} <= {"legacy"}
