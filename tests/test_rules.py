"""Alert rules, the example Prometheus/Alertmanager configs and the demo compose stack, checked by the real
tools: promtool check/test rules, promtool check config, amtool check-config and config routes test,
docker-compose config. Plus the contract: alert names, severities, annotations, runbook sections, the
thresholds table in docs/alerting.md, and metric names that the exporter really exposes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config.load import default_collectors
from tests.promstack import (
    ALERTS_FILE,
    DOCS_DIR,
    PROMETHEUS_DIR,
    REPO,
    alert_rules,
    find_program,
    load_yaml,
    missing_metrics,
    recording_rules,
    referenced_metrics,
    run_tool,
)

# Alert name -> its severities (ExporterDown: a warning first, critical later).
CONTRACT_ALERTS = {
    "CloudflareAIGatewayInvoicePaymentFailed": {"critical"},
    "CloudflareAIGatewayInvoiceUnpaid": {"warning"},
    "CloudflareAIGatewayBillingPollFailing": {"warning"},
    "CloudflareAIGatewayBillingDataStale": {"warning"},
    "CloudflareAIGatewayExporterDown": {"warning", "critical"},
    "CloudflareAIGatewayCreditsRunningOut": {"critical"},
    "CloudflareAIGatewayAutoTopupFailing": {"critical"},
    "CloudflareAIGatewaySpendingLimitNear": {"warning"},
    "CloudflareAIGatewaySpendingLimitReached": {"critical"},
    "CloudflareAIGatewaySpendLimitRuleNear": {"warning"},
    "CloudflareAIGatewaySpendLimitRuleReached": {"critical"},
    "CloudflareAIGatewayRequestsRateLimited": {"warning"},
}
# Billing alerts: per account, and the endpoint whose polls feed them (for: must exceed two of its intervals).
BILLING_ALERT_ENDPOINT = {
    "CloudflareAIGatewayInvoicePaymentFailed": "invoice_history",
    "CloudflareAIGatewayInvoiceUnpaid": "invoice_history",
    "CloudflareAIGatewayCreditsRunningOut": "credit_balance",
    "CloudflareAIGatewayAutoTopupFailing": "credit_balance",
    "CloudflareAIGatewaySpendingLimitNear": "spending_limit",
    "CloudflareAIGatewaySpendingLimitReached": "spending_limit",
}
# Gateway alerts: per (account, gateway[, rule]), the labels they carry besides severity, and the endpoint whose
# polls feed them.
GATEWAY_ALERTS = {
    "CloudflareAIGatewaySpendLimitRuleNear": (("account_id", "account", "gateway", "rule"), "gateway_analytics"),
    "CloudflareAIGatewaySpendLimitRuleReached": (("account_id", "account", "gateway", "rule"), "gateway_analytics"),
    "CloudflareAIGatewayRequestsRateLimited": (("account_id", "account", "gateway"), "gateway_analytics"),
}
GATEWAY_GROUP = "cloudflare-ai-gateway-gateways.rules"
JOB_RULE = "cloudflare_ai_gateway_exporter:up"
RUNBOOK_RULE = "cloudflare_ai_gateway:runbook"
RUNBOOK_URL = '{{ with query "cloudflare_ai_gateway:runbook" }}{{ . | first | label "base_url" }}{{ end }}#'
PROMETHEUS_CONFIGS = ["prometheus.example.yml", "prometheus.compose.yml"]


def _ok(done: Any) -> None:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


# ---- the real tools ---------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_promtool_check_rules() -> None:
    done = run_tool(find_program("promtool"), "check", "rules", str(ALERTS_FILE))
    _ok(done)
    assert "SUCCESS" in done.stdout


@pytest.mark.e2e
def test_promtool_rule_unit_tests() -> None:
    """prometheus/alerts_test.yml: every alert firing and not firing, with its exact annotations."""
    done = run_tool(find_program("promtool"), "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    _ok(done)
    assert "SUCCESS" in done.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("name", PROMETHEUS_CONFIGS)
def test_promtool_check_config(name: str) -> None:
    done = run_tool(find_program("promtool"), "check", "config", str(PROMETHEUS_DIR / name))
    _ok(done)
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


@pytest.mark.e2e
def test_amtool_check_config() -> None:
    done = run_tool(find_program("amtool"), "check-config", str(PROMETHEUS_DIR / "alertmanager.example.yml"))
    _ok(done)


RESEARCH = {"account": "research", "account_id": "6c2f8e1a3b5d7f9e0a4c6e8b1d3f5a72"}


@pytest.mark.parametrize(("labels", "receiver"), [
    ({"alertname": "CloudflareAIGatewayInvoicePaymentFailed", "severity": "critical", **RESEARCH}, "billing-owner"),
    ({"alertname": "CloudflareAIGatewayAutoTopupFailing", "severity": "critical", **RESEARCH}, "billing-owner"),
    ({"alertname": "CloudflareAIGatewayInvoiceUnpaid", "severity": "warning", **RESEARCH}, "billing-owner"),
    ({"alertname": "CloudflareAIGatewayCreditsRunningOut", "severity": "critical", **RESEARCH}, "billing-page"),
    ({"alertname": "CloudflareAIGatewaySpendingLimitReached", "severity": "critical", **RESEARCH}, "billing-page"),
    ({"alertname": "CloudflareAIGatewaySpendingLimitNear", "severity": "warning", **RESEARCH}, "billing-tickets"),
    ({"alertname": "CloudflareAIGatewayExporterDown", "severity": "critical"}, "billing-page"),
    ({"alertname": "CloudflareAIGatewayExporterDown", "severity": "warning"}, "billing-tickets"),
    ({"alertname": "CloudflareAIGatewayBillingPollFailing", "severity": "warning"}, "billing-tickets"),
    ({"alertname": "CloudflareAIGatewayBillingDataStale", "severity": "warning"}, "billing-tickets"),
    ({"alertname": "CloudflareAIGatewaySpendLimitRuleReached", "severity": "critical", **RESEARCH,
      "gateway": "chat", "rule": "gpt-4o-daily"}, "billing-page"),
    ({"alertname": "CloudflareAIGatewaySpendLimitRuleNear", "severity": "warning", **RESEARCH,
      "gateway": "chat", "rule": "gpt-4o-daily"}, "billing-tickets"),
    ({"alertname": "CloudflareAIGatewayRequestsRateLimited", "severity": "warning", **RESEARCH,
      "gateway": "batch"}, "billing-tickets"),
    ({"alertname": "SomethingElse", "severity": "critical"}, "default"),
])
@pytest.mark.e2e
def test_alertmanager_routes(labels: dict[str, str], receiver: str) -> None:
    config = PROMETHEUS_DIR / "alertmanager.example.yml"
    done = run_tool(find_program("amtool"), "config", "routes", "test", f"--config.file={config}",
                    *(f"{k}={v}" for k, v in labels.items()))
    _ok(done)
    assert done.stdout.strip() == receiver


def test_payment_failures_reach_the_billing_owner_in_business_hours_only() -> None:
    """amtool's route test ignores time; the route's active_time_intervals must name a defined interval of
    weekdays and hours, and no paging route may take the payment alerts."""
    config = load_yaml(PROMETHEUS_DIR / "alertmanager.example.yml")
    intervals = {i["name"]: i["time_intervals"] for i in config["time_intervals"]}
    (ours,) = config["route"]["routes"]
    (owner,) = [r for r in ours["routes"] if r["receiver"] == "billing-owner"]
    assert ours["routes"][0] is owner, "the billing-owner route must come before the severity routes"
    (name,) = owner["active_time_intervals"]
    (interval,) = intervals[name]
    assert interval["weekdays"] == ["monday:friday"] and interval["times"], interval
    assert "InvoicePaymentFailed" in owner["matchers"][0] and "AutoTopupFailing" in owner["matchers"][0]


def test_spend_limit_rule_reached_holds_back_near_of_the_same_rule_only() -> None:
    """amtool cannot test inhibitions (the end-to-end test does); the example's rule must match the two alerts
    and require the same account, gateway and rule, so that a page for one rule never hides another rule's
    ticket."""
    config = load_yaml(PROMETHEUS_DIR / "alertmanager.example.yml")
    (rule,) = [r for r in config["inhibit_rules"]
               if r["target_matchers"] == ['alertname = "CloudflareAIGatewaySpendLimitRuleNear"']]
    assert rule["source_matchers"] == ['alertname = "CloudflareAIGatewaySpendLimitRuleReached"']
    assert set(rule["equal"]) == {"account_id", "gateway", "rule"}
    assert not [r for r in config["inhibit_rules"]
                if any("RequestsRateLimited" in m for m in r["target_matchers"])], (
        "a reached rule must not hide the 429s of the gateway's own rate limit or of the Unified Billing ceiling")


@pytest.mark.e2e
def test_docker_compose_config() -> None:
    """The demo stack parses (no container engine needed), and every file it mounts exists."""
    done = run_tool(find_program("docker-compose"), "-f", str(REPO / "docker-compose.yml"), "config")
    _ok(done)
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) >= {"exporter", "prometheus", "alertmanager", "grafana"}
    assert "--demo" in resolved["services"]["exporter"]["command"]
    for name, service in resolved["services"].items():
        registry = service["image"].split("/", 1)[0]
        assert "." in registry or registry == "localhost", (
            f"service {name}: image {service['image']} is not fully qualified (podman cannot resolve short names)")
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"service {name} mounts missing {source}"


# ---- the contract ---------------------------------------------------------------------------------------


def test_the_contract_alerts_with_severity_and_annotations() -> None:
    rules = alert_rules()
    severities: dict[str, set[str]] = {}
    for rule in rules:
        name = rule["alert"]
        severities.setdefault(name, set()).add(rule["labels"]["severity"])
        assert rule.get("for"), f"{name} has no for: duration"
        annotations = rule["annotations"]
        assert "{{" not in annotations["summary"], f"{name}: summary must be static"
        assert "{{" in annotations["description"], f"{name}: description must be templated"
        if name != "CloudflareAIGatewayExporterDown":
            assert re.search(r"\$labels\.account\b", annotations["description"]), f"{name}: must name the account"
        for label in GATEWAY_ALERTS.get(name, ((), ""))[0]:
            assert f"$labels.{label} " in annotations["description"], f"{name}: must name the {label}"
        assert re.search(r"\$value|query", annotations["description"]), f"{name}: no amount or age"
    assert severities == CONTRACT_ALERTS


def test_billing_alerts_are_per_account_not_per_process() -> None:
    """Every billing alert's expression aggregates to (account_id, account [, ...]) through the account:*
    recording rules, which aggregate away instance, job and pod: a restart, a rollout or an HA pair never
    changes the alert's identity (proven in alerts_test.yml: restart, rollout, HA pair)."""
    records = {r["record"]: r["expr"] for r in recording_rules()}
    for rule in alert_rules():
        if rule["alert"] not in BILLING_ALERT_ENDPOINT:
            continue
        used = set(re.findall(r"\baccount:[a-z_]+:[a-z_0-9]+", rule["expr"]))
        assert used, f"{rule['alert']} must read the account:* recording rules"
        assert not referenced_metrics(rule["expr"]) - {"cloudflare_ai_gateway_endpoint_enrolled"}, rule["alert"]
        for record in used:
            assert re.search(r"\bby \(account_id, account\b", records[record]) or record in (
                "account:cloudflare_ai_gateway_spending_limit_usage:ratio",
                "account:cloudflare_ai_gateway_credits_time_to_zero:seconds",
                "account:cloudflare_ai_gateway_auto_topup_working:bool"), record


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def _poll_intervals() -> dict[str, int]:
    return {r["labels"]["endpoint"]: int(r["expr"].removeprefix("vector(").removesuffix(")"))
            for r in recording_rules() if r["record"] == "cloudflare_ai_gateway:poll_interval:seconds"}


def test_poll_intervals_match_the_exporter_defaults_and_billing_alerts_wait_two_polls() -> None:
    """Two polls' worth of evidence before a billing or gateway alert fires: for: > 2 x the feeding endpoint's
    interval."""
    intervals = _poll_intervals()
    defaults = {name: int(settings.interval) for name, settings in default_collectors().items()}
    assert intervals == defaults, "prometheus/alerts.yml: one poll_interval record per registered collector"
    feeds = {**BILLING_ALERT_ENDPOINT, **{name: endpoint for name, (_, endpoint) in GATEWAY_ALERTS.items()}}
    for rule in alert_rules():
        endpoint = feeds.get(rule["alert"])
        if endpoint:
            assert _seconds(rule["for"]) > 2 * intervals[endpoint], f"{rule['alert']}: for {rule['for']}"


def test_gateway_alerts_are_per_gateway_not_per_process() -> None:
    """The gateway alerts read only the account_gateway_rule:* and account_gateway:* recording rules, which
    aggregate to exactly the alert's labels (no instance, job or pod): a restart, a rollout or an HA pair never
    changes the alert's identity (proven in alerts_test.yml: restart, rollout, HA pair, counter reset)."""
    records = {r["record"]: r["expr"] for r in recording_rules()}
    for rule in alert_rules():
        if rule["alert"] not in GATEWAY_ALERTS:
            continue
        labels, _ = GATEWAY_ALERTS[rule["alert"]]
        level = "account_gateway_rule" if "rule" in labels else "account_gateway"
        used = set(re.findall(r"\b[a-z_]+:[a-z_]+:[a-z_0-9]+", rule["expr"]))
        assert used and all(r.startswith(f"{level}:") for r in used), f"{rule['alert']} reads {used}"
        assert not referenced_metrics(rule["expr"]), rule["alert"]
        assert set(rule["labels"]) == {"severity"}, rule["alert"]
        for record in used:
            aggregations = re.findall(r"\bby \(([^)]*)\)", records[record])
            derived = set(re.findall(rf"\b{level}:[a-z_]+:[a-z_0-9]+", records[record]))
            assert aggregations or derived, record
            for by in aggregations:
                assert [b.strip() for b in by.split(",")][:len(labels)] == list(labels), f"{record}: by ({by})"


def test_gateway_rules_read_no_recording_rule_of_another_group() -> None:
    """Prometheus evaluates each group on its own: a rule that reads another group's recording rule sees its
    previous evaluation, so when a restart begins, one evaluation would drop the remembered values and reset
    the alerts. Annotations may query any rule (they only describe)."""
    doc = load_yaml(ALERTS_FILE)
    (gateways,) = [g for g in doc["groups"] if g["name"] == GATEWAY_GROUP]
    ours = {r["record"] for r in gateways["rules"] if "record" in r}
    for rule in gateways["rules"]:
        used = set(re.findall(r"\b[a-z_]+:[a-z_]+:[a-z_0-9]+", rule["expr"]))
        assert used <= ours, f"{rule.get('record') or rule.get('alert')} reads {used - ours}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_runbook_section_through_one_base_url() -> None:
    runbook = (DOCS_DIR / "runbook.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.MULTILINE)}
    (base,) = [r["labels"]["base_url"] for r in recording_rules() if r["record"] == RUNBOOK_RULE]
    assert base.startswith("https://") and base.endswith("/docs/runbook.md"), base
    assert ALERTS_FILE.read_text().count("https://") == 1, "the runbook base URL must be written once"
    for rule in alert_rules():
        name = rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK_URL + name.lower(), f"{name}: runbook_url {url!r}"
        assert name.lower() in anchors, f"{name}: no section #{name.lower()} in docs/runbook.md"
        section = runbook.split(f"## {name}", 1)[1].split("\n## ", 1)[0]
        for part in ("What it means", "How to check", "How to fix"):
            assert part in section, f"runbook section {name} lacks '{part}'"


SITUATIONS = ("restart", "rollout", "exporter down", "flapping", "HA pair", "paid resolves at once",
              "not enrolled", "top-up", "auto top-up", "no spending limit")
# The gateway alerts' cases, each named in alerts_test.yml.
GATEWAY_SITUATIONS = ("near from 80%", "never for a disabled rule", "more than two analytics polls",
                      "partitioned rule", "restart does not resolve or re-fire the spend-limit rule alerts",
                      "rollout keeps one spend-limit rule alert", "HA pair gives one spend-limit rule alert",
                      "summed over models", "stop 15 minutes after the last one", "counter reset",
                      "poll failing on gateway_analytics", "a new window resolves")


def test_alert_unit_tests_cover_firing_not_firing_and_the_situations() -> None:
    doc = load_yaml(PROMETHEUS_DIR / "alerts_test.yml")
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == set(CONTRACT_ALERTS), f"never shown firing: {set(CONTRACT_ALERTS) - fired}"
    assert quiet == set(CONTRACT_ALERTS), f"never shown quiet: {set(CONTRACT_ALERTS) - quiet}"
    text = PROMETHEUS_DIR.joinpath("alerts_test.yml").read_text()
    names = " | ".join(case["name"] for case in doc["tests"])
    for situation in SITUATIONS:
        assert situation.lower() in (names + text).lower(), f"no case for the situation {situation!r}"
    for situation in ("restart", "rollout", "exporter down", "flapping", "HA pair", "paid resolves at once",
                      *GATEWAY_SITUATIONS):
        assert situation.lower() in names.lower(), f"no test named for {situation!r}"


def _thresholds_table() -> list[dict[str, str]]:
    text = (DOCS_DIR / "alerting.md").read_text()
    section = text.split("## Thresholds", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `CloudflareAIGateway")]
    header = next(line for line in section.splitlines() if line.startswith("| Alert"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    table = []
    for line in rows:
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        table.append(dict(zip(columns, cells, strict=True)))
    return table


def test_thresholds_are_documented_in_one_table_that_matches_the_rules() -> None:
    table = _thresholds_table()
    rules = alert_rules()
    assert [(r["Alert"], r["Severity"]) for r in table] == [(r["alert"], r["labels"]["severity"]) for r in rules]
    for row, rule in zip(table, rules, strict=True):
        name = rule["alert"]
        assert row["for"] == rule["for"], f"{name}: docs say for {row['for']}, rule says {rule['for']}"
        condition = row["Condition in alerts.yml"]
        assert " ".join(condition.split()) in " ".join(rule["expr"].split()), (
            f"{name}: documented condition {condition!r} is not in the rule's expr {rule['expr']!r}")


def test_job_name_is_named_once_and_matches_the_example_configs() -> None:
    doc = load_yaml(ALERTS_FILE)
    text = ALERTS_FILE.read_text()
    (job_rule,) = [r for g in doc["groups"] for r in g["rules"] if r.get("record") == JOB_RULE]
    job = re.fullmatch(r'up\{job="([^"]+)"\}', job_rule["expr"].strip())
    assert job, job_rule["expr"]
    assert len(re.findall(r"\bup\{(?!\{)", text)) == 1, "only the recording rule may select `up` by job"
    for name in PROMETHEUS_CONFIGS:
        jobs = [c["job_name"] for c in load_yaml(PROMETHEUS_DIR / name)["scrape_configs"]]
        assert job.group(1) in jobs, f"{name} has no scrape job {job.group(1)!r}: {jobs}"


@pytest.mark.e2e
def test_rules_only_use_metrics_the_exporter_exposes() -> None:
    doc = load_yaml(ALERTS_FILE)
    used: set[str] = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            used |= referenced_metrics(rule["expr"])
            for annotation in rule.get("annotations", {}).values():
                used |= referenced_metrics(annotation)
    assert "cloudflare_ai_gateway_account_failed_payment_attempts" in used
    missing = missing_metrics(used)
    assert not missing, f"alerts.yml uses metrics the exporter does not expose: {sorted(missing)}"


@pytest.mark.e2e
def test_runbook_base_url_can_be_set_when_generating_the_prometheusrule(tmp_path: Path) -> None:
    """scripts/gen-prometheusrule.py --runbook-base-url sets the one label every runbook_url is built from."""
    out = tmp_path / "rule.yaml"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-prometheusrule.py"),
                           "--runbook-base-url", "https://wiki.example.com/billing/runbook", "--output", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    _ok(done)
    rule = yaml.safe_load(out.read_text())
    labels = [r["labels"]["base_url"] for g in rule["spec"]["groups"] for r in g["rules"]
              if r.get("record") == RUNBOOK_RULE]
    assert labels == ["https://wiki.example.com/billing/runbook"]
