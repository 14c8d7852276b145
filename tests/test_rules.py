"""Alert rules, the example Prometheus/Alertmanager configs and the demo compose stack, checked by the real
tools: promtool check/test rules, promtool check config, amtool check-config and config routes test,
docker-compose config. Plus the contract: alert names, severities, annotations, runbook sections, the
thresholds table in docs/alerting.md, and metric names that the exporter really exposes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promstack import (
    ALERTS_FILE,
    DOCS_DIR,
    PROMETHEUS_DIR,
    REPO,
    alert_rules,
    exported_metric_names,
    find_program,
    load_yaml,
    referenced_metrics,
    run_tool,
)

CONTRACT_ALERTS = {
    "CloudflareAIGatewayInvoicePaymentFailed": "critical",
    "CloudflareAIGatewayInvoiceUnpaid": "warning",
    "CloudflareAIGatewayBillingPollFailing": "warning",
    "CloudflareAIGatewayBillingDataStale": "warning",
    "CloudflareAIGatewayExporterDown": "critical",
}
JOB_RULE = "cloudflare_ai_gateway_exporter:up"
PROMETHEUS_CONFIGS = ["prometheus.example.yml", "prometheus.compose.yml"]


def _ok(done: Any) -> None:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


# ---- the real tools ---------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    done = run_tool(find_program("promtool"), "check", "rules", str(ALERTS_FILE))
    _ok(done)
    assert "SUCCESS" in done.stdout


def test_promtool_rule_unit_tests() -> None:
    """prometheus/alerts_test.yml: every alert firing and not firing, with its exact annotations."""
    done = run_tool(find_program("promtool"), "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    _ok(done)
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("name", PROMETHEUS_CONFIGS)
def test_promtool_check_config(name: str) -> None:
    done = run_tool(find_program("promtool"), "check", "config", str(PROMETHEUS_DIR / name))
    _ok(done)
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


def test_amtool_check_config() -> None:
    done = run_tool(find_program("amtool"), "check-config", str(PROMETHEUS_DIR / "alertmanager.example.yml"))
    _ok(done)


@pytest.mark.parametrize(("labels", "receiver"), [
    ({"alertname": "CloudflareAIGatewayInvoicePaymentFailed", "severity": "critical",
      "account": "research", "account_id": "6c2f8e1a3b5d7f9e0a4c6e8b1d3f5a72"}, "billing-page"),
    ({"alertname": "CloudflareAIGatewayExporterDown", "severity": "critical"}, "billing-page"),
    ({"alertname": "CloudflareAIGatewayInvoiceUnpaid", "severity": "warning", "account": "research"},
     "billing-tickets"),
    ({"alertname": "CloudflareAIGatewayBillingPollFailing", "severity": "warning"}, "billing-tickets"),
    ({"alertname": "CloudflareAIGatewayBillingDataStale", "severity": "warning"}, "billing-tickets"),
    ({"alertname": "SomethingElse", "severity": "critical"}, "default"),
])
def test_alertmanager_routes_by_severity(labels: dict[str, str], receiver: str) -> None:
    config = PROMETHEUS_DIR / "alertmanager.example.yml"
    done = run_tool(find_program("amtool"), "config", "routes", "test", f"--config.file={config}",
                    *(f"{k}={v}" for k, v in labels.items()))
    _ok(done)
    assert done.stdout.strip() == receiver


def test_docker_compose_config() -> None:
    """The demo stack parses (no container engine needed), and every file it mounts exists."""
    done = run_tool(find_program("docker-compose"), "-f", str(REPO / "docker-compose.yml"), "config")
    _ok(done)
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) >= {"exporter", "prometheus", "alertmanager", "grafana"}
    assert "--demo" in resolved["services"]["exporter"]["command"]
    for name, service in resolved["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"service {name} mounts missing {source}"


# ---- the contract ---------------------------------------------------------------------------------------


def test_the_five_contract_alerts_with_severity_and_annotations() -> None:
    rules = alert_rules()
    assert set(rules) == set(CONTRACT_ALERTS)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] == CONTRACT_ALERTS[name], name
        assert rule.get("for"), f"{name} has no for: duration"
        annotations = rule["annotations"]
        assert "{{" not in annotations["summary"], f"{name}: summary must be static"
        assert "{{" in annotations["description"], f"{name}: description must be templated"
        assert re.search(r"\$labels\.account\b|\.Labels\.account\b", annotations["description"]), (
            f"{name}: description must name the account")
        assert re.search(r"\$value|query", annotations["description"]), f"{name}: no amount or age"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_runbook_section() -> None:
    runbook = (DOCS_DIR / "runbook.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.MULTILINE)}
    bases = set()
    for name, rule in alert_rules().items():
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        bases.add(base)
        assert base.endswith("/docs/runbook.md"), url
        assert anchor == name.lower() and anchor in anchors, f"{name}: no section #{anchor} in docs/runbook.md"
        section = runbook.split(f"## {name}", 1)[1].split("\n## ", 1)[0]
        for part in ("What it means", "How to check", "How to fix"):
            assert part in section, f"runbook section {name} lacks '{part}'"
    assert len(bases) == 1, f"runbook URLs point at different documents: {bases}"


def test_alert_unit_tests_cover_firing_and_not_firing() -> None:
    doc = load_yaml(PROMETHEUS_DIR / "alerts_test.yml")
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == set(CONTRACT_ALERTS), f"never shown firing: {set(CONTRACT_ALERTS) - fired}"
    assert quiet == set(CONTRACT_ALERTS), f"never shown quiet: {set(CONTRACT_ALERTS) - quiet}"


def _thresholds_table() -> dict[str, dict[str, str]]:
    text = (DOCS_DIR / "alerting.md").read_text()
    section = text.split("## Thresholds", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `CloudflareAIGateway")]
    header = next(line for line in section.splitlines() if line.startswith("| Alert"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    table = {}
    for line in rows:
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        table[cells[0]] = dict(zip(columns, cells, strict=True))
    return table


def test_thresholds_are_documented_in_one_table_that_matches_the_rules() -> None:
    table = _thresholds_table()
    rules = alert_rules()
    assert set(table) == set(rules)
    for name, rule in rules.items():
        row = table[name]
        assert row["Severity"] == rule["labels"]["severity"], name
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
    assert len(re.findall(r"\bup\{", text)) == 1, "only the recording rule may select `up` by job"
    for name in PROMETHEUS_CONFIGS:
        jobs = [c["job_name"] for c in load_yaml(PROMETHEUS_DIR / name)["scrape_configs"]]
        assert job.group(1) in jobs, f"{name} has no scrape job {job.group(1)!r}: {jobs}"


def test_rules_only_use_metrics_the_exporter_exposes() -> None:
    exposed = exported_metric_names()
    doc = load_yaml(ALERTS_FILE)
    used: set[str] = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            used |= referenced_metrics(rule["expr"])
            for annotation in rule.get("annotations", {}).values():
                used |= referenced_metrics(annotation)
    assert "cloudflare_ai_gateway_account_failed_payment_attempts" in used
    missing = used - exposed
    assert not missing, f"alerts.yml uses metrics the exporter does not expose: {sorted(missing)}"
