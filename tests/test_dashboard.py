"""Lint of grafana/dashboard.json and its provisioning: importable on Grafana 10+ without edits (no __inputs,
no hard-coded data source), the variables, a title/description/unit on every panel, every query filtered by
the variables, counters only inside rate()/increase(), the panels the issue asks for, and a section for each
panel in docs/dashboard.md. The queries themselves run against a real Prometheus in test_e2e_alerting.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.promstack import (
    DOCS_DIR,
    GRAFANA_DIR,
    alert_rules,
    load_yaml,
    missing_metrics,
    recording_rules,
    referenced_metrics,
)

DASHBOARD_PATH = GRAFANA_DIR / "dashboard.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
DS = {"type": "prometheus", "uid": "${datasource}"}
UID = "cf-ai-gateway-billing"
# Grafana unit ids this dashboard may use (a typo here would silently show raw numbers).
KNOWN_UNITS = {"none", "short", "s", "dtdurations", "reqps", "reqpm", "percentunit", "currencyUSD", "currencyEUR",
               "currencyGBP"}
# Billing amounts change only at a poll: their time series are drawn in steps, never as slopes.
BILLING_AMOUNTS = ("cloudflare_ai_gateway_account_amount_remaining",
                   "cloudflare_ai_gateway_account_failed_payment_attempts",
                   "cloudflare_ai_gateway_credit_balance", "cloudflare_ai_gateway_usage_amount")
RATE_FUNCTIONS = {"rate", "irate", "increase"}
# Series that carry account_id only (no `account`); the dashboard joins the name from poll_success.
ACCOUNT_ID_ONLY = {"cloudflare_ai_gateway_api_requests_total", "cloudflare_ai_gateway_api_errors_total",
                   "cloudflare_ai_gateway_api_invalid_invoices_total"}
ACCOUNTLESS = {"cloudflare_ai_gateway_exporter_build_info", "cloudflare_ai_gateway_exporter_shard_info",
               "cloudflare_ai_gateway_exporter_config_last_reload_successful"}
# The gateway collectors' series: they carry a `gateway` label, which the Gateway variable filters.
GATEWAY_SERIES = re.compile(r"cloudflare_ai_gateway_(gateway|spend_limit_rule)_")


def panels() -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows excluded."""
    out = []
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels():
        for target in panel["targets"]:
            yield panel, target


def counters_outside_rate(expr: str) -> list[str]:
    """Counter (``*_total``) selectors in ``expr`` whose innermost enclosing call is not rate/irate/increase."""
    bad = []
    stack: list[str] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char == '"':  # skip string literals (label values)
            i = expr.index('"', i + 1) + 1
            continue
        if char == "(":
            before = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", expr[:i])
            stack.append(before.group(1) if before else "")
        elif char == ")":
            stack.pop()
        else:
            word = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", expr[i:])
            if word:
                name = word.group(0)
                if name.endswith("_total") and (not stack or stack[-1] not in RATE_FUNCTIONS):
                    bad.append(name)
                i += len(name)
                continue
        i += 1
    return bad


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every key of every object in the JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


# ---- import and provisioning ------------------------------------------------------------------------------


def test_importable_on_grafana_10_without_edits() -> None:
    assert DASHBOARD["schemaVersion"] >= 38
    assert DASHBOARD["uid"] == UID, "the uid is part of every dashboard link: keep it stable"
    assert DASHBOARD["title"]
    assert DASHBOARD.get("id") is None, "an id ties the JSON to one Grafana database"
    assert "__inputs" not in DASHBOARD and "__requires" not in DASHBOARD, "export without 'share externally'"
    assert isinstance(DASHBOARD["panels"], list) and DASHBOARD["panels"]


def test_no_hard_coded_data_source() -> None:
    for path, key, value in walk(DASHBOARD):
        if key != "datasource":
            continue
        assert isinstance(value, dict), f"{path}: datasource must be an object, got {value!r}"
        if value.get("type") == "grafana":  # the built-in "Annotations & Alerts"
            continue
        assert value == DS, f"{path}: datasource {value} instead of {DS}"


def test_variables() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert list(variables)[:4] == ["datasource", "job", "instance", "account"]
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for name in ("job", "instance", "account"):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable["datasource"] == DS, name
        assert variable["multi"] is True and variable["includeAll"] is True, name
        assert variable["query"]["query"] == variable["definition"], name
        assert variable["definition"].startswith("label_values("), name
        assert variable["definition"].endswith(f", {name})"), f"{name} must list the {name} label"
        assert variable.get("current") in ({}, None), f"{name}: a saved selection would hide other accounts"
    assert variables["job"].get("allValue") in (None, ""), (
        "job: *All* must mean the listed jobs; allValue .* makes up{job=~\"$job\"} match every job in Prometheus")
    assert '$job' in variables["instance"]["definition"]
    assert '$job' in variables["account"]["definition"] and '$instance' in variables["account"]["definition"]
    assert "cloudflare_ai_gateway_poll_success" in variables["account"]["definition"]


def test_gateway_variable_lists_the_gateways_of_the_selected_accounts() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    gateway = variables["gateway"]
    assert list(variables).index("gateway") == list(variables).index("account") + 1
    assert gateway["type"] == "query" and gateway["datasource"] == DS
    assert gateway["multi"] is True and gateway["includeAll"] is True and gateway["allValue"] == ".*"
    assert gateway["query"]["query"] == gateway["definition"] == (
        'label_values(cloudflare_ai_gateway_gateway_info{job=~"$job",instance=~"$instance",account=~"$account"}, '
        'gateway)')
    assert gateway.get("current") in ({}, None)


@pytest.mark.parametrize("name", ["datasources/prometheus.yml", "dashboards/cloudflare-ai-gateway.yml"])
def test_provisioning_files(name: str) -> None:
    doc = load_yaml(GRAFANA_DIR / "provisioning" / name)
    assert doc["apiVersion"] == 1
    if name.startswith("datasources"):
        (source,) = doc["datasources"]
        assert source["type"] == "prometheus" and source["isDefault"] is True and source["url"]
    else:
        (provider,) = doc["providers"]
        assert provider["type"] == "file" and provider["options"]["path"]


def test_compose_mounts_the_dashboard_where_the_provider_looks() -> None:
    compose = load_yaml(GRAFANA_DIR.parent / "docker-compose.yml")
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "cloudflare-ai-gateway.yml")
    path = provider["providers"][0]["options"]["path"]
    volumes = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboard.json:{path}/dashboard.json:ro" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


# ---- panels -----------------------------------------------------------------------------------------------


def test_every_panel_has_title_description_unit_and_queries() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]] + [p["id"] for p in panels() if p not in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = [p["title"] for p in panels()]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    for panel in panels():
        title = panel.get("title", "")
        assert title.strip(), f"panel {panel['id']} has no title"
        assert len(panel.get("description", "").strip()) >= 40, f"{title}: describe what the panel shows"
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in KNOWN_UNITS, f"{title}: unit {unit!r}"
        for override in panel["fieldConfig"].get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in KNOWN_UNITS, f"{title}: override unit {prop['value']!r}"
        assert panel["datasource"] == DS, title
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), f"{title}: targets {refs}"
        for target in panel["targets"]:
            assert target["datasource"] == DS and target["expr"].strip(), f"{title}/{target['refId']}"


def test_layout_fits_the_grid_without_overlaps() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_counters_only_inside_rate_or_increase() -> None:
    for panel, target in targets():
        bad = counters_outside_rate(target["expr"])
        assert not bad, f"{panel['title']}/{target['refId']}: counters outside rate/increase: {bad}"


def test_counter_lint_itself() -> None:
    assert counters_outside_rate('sum(rate(x_total{a="b_total"}[5m]))') == []
    assert counters_outside_rate("sum by (code) (increase(x_total[1h]))") == []
    assert counters_outside_rate("x_total") == ["x_total"]
    assert counters_outside_rate("sum(x_total) / rate(y_total[5m])") == ["x_total"]
    assert counters_outside_rate("max_over_time(x_total[5m])") == ["x_total"]


def test_every_query_is_filtered_by_the_variables() -> None:
    selector = re.compile(r"\b(cloudflare_ai_gateway_[a-zA-Z0-9_]+|up)\b(\{[^}]*\})?")
    for panel, target in targets():
        where = f"{panel['title']}/{target['refId']}"
        for name, matchers in selector.findall(target["expr"]):
            assert matchers, f"{where}: {name} without label matchers"
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, f"{where}: {name}"
            if name not in ACCOUNT_ID_ONLY | ACCOUNTLESS | {"up"}:
                assert 'account=~"$account"' in matchers, f"{where}: {name} not filtered by $account"
            if GATEWAY_SERIES.match(name):
                assert 'gateway=~"$gateway"' in matchers, f"{where}: {name} not filtered by $gateway"
        if any(name in target["expr"] for name in ACCOUNT_ID_ONLY):
            assert "group_left (account)" in target["expr"], f"{where}: join the account name"


@pytest.mark.e2e
def test_dashboard_only_uses_metrics_the_exporter_exposes() -> None:
    used: set[str] = set()
    for _, target in targets():
        used |= referenced_metrics(target["expr"])
    for variable in DASHBOARD["templating"]["list"]:
        used |= referenced_metrics(variable.get("definition", ""))
    missing = missing_metrics(used)
    assert not missing, f"dashboard queries metrics the exporter does not expose: {sorted(missing)}"


def _panel_using(metric: str, kind: str | None = None) -> dict[str, Any]:
    found = [p for p in panels() if any(metric in t["expr"] for t in p["targets"])
             and (kind is None or p["type"] == kind)]
    assert found, f"no {kind or ''} panel shows {metric}"
    return found[0]


def test_the_panels_the_issue_asks_for() -> None:
    balance = _panel_using("cloudflare_ai_gateway_account_amount_remaining", "stat")
    assert all("account, currency" in t["expr"] for t in balance["targets"]), "balance by account and currency"
    _panel_using("cloudflare_ai_gateway_account_failed_payment_attempts")
    by_status = _panel_using("cloudflare_ai_gateway_account_invoices{")
    assert "status" in by_status["targets"][0]["expr"]
    _panel_using("cloudflare_ai_gateway_poll_success")
    _panel_using("cloudflare_ai_gateway_poll_last_success_timestamp_seconds")
    errors = _panel_using("cloudflare_ai_gateway_api_errors_total")
    assert "reason" in errors["targets"][0]["expr"]
    _panel_using("cloudflare_ai_gateway_api_requests_total")

    table = _panel_using("cloudflare_ai_gateway_invoice_amount_remaining", "table")
    assert all(t.get("instant") and t.get("format") == "table" for t in table["targets"])
    organize = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    columns = set(organize["renameByName"].values()) - set(organize["excludeByName"])
    assert {"Account", "Invoice", "Status", "Currency", "Amount remaining", "Amount due", "Age",
            "Payment attempts"} <= columns
    age = next(o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Age")
    assert {"id": "unit", "value": "dtdurations"} in age["properties"]


def test_every_panel_is_described_in_docs() -> None:
    doc = (DOCS_DIR / "dashboard.md").read_text()
    headings = re.findall(r"^### (.+)$", doc, re.MULTILINE)
    titles = [p["title"] for p in panels()]
    assert headings == titles, "docs/dashboard.md needs one '### <title>' section per panel, in dashboard order"
    for panel in panels():
        section = doc.split(f"### {panel['title']}\n", 1)[1].split("\n### ", 1)[0]
        for target in panel["targets"]:
            assert target["expr"] in section, f"docs/dashboard.md: {panel['title']} must quote its query"


def _red_threshold(panel_title: str, metric: str) -> float:
    (panel,) = [p for p in panels() if p["title"] == panel_title]
    assert any(metric in t["expr"] for t in panel["targets"]), panel_title
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    (red,) = [s["value"] for s in steps if s["color"] == "red"]
    return float(red)


def _rule_threshold(alert: str) -> float:
    (rule,) = [r for r in alert_rules() if r["alert"] == alert]
    match = re.search(r"> (\d+)$", rule["expr"].strip())
    assert match, alert
    return float(match.group(1))


def _constant(record: str) -> dict[str, float]:
    return {r.get("labels", {}).get("endpoint", ""): float(r["expr"].removeprefix("vector(").removesuffix(")"))
            for r in recording_rules() if r["record"] == record}


def test_panel_thresholds_match_the_alert_thresholds() -> None:
    """The red lines and colours are the alerts' thresholds (docs/alerting.md#thresholds), not a second opinion."""
    assert _red_threshold("Age of the oldest unpaid invoice",
                          "oldest_unpaid_invoice_created_timestamp_seconds") == _rule_threshold(
        "CloudflareAIGatewayInvoiceUnpaid")
    # DataStale fires per endpoint at 4 intervals; the per-account tile turns red at the slowest endpoint's.
    assert _red_threshold("Age of the last successful poll", "poll_last_success_timestamp_seconds") == (
        4 * max(_constant("cloudflare_ai_gateway:poll_interval:seconds").values()))
    (time_to_zero,) = [p for p in panels() if p["title"] == "Time to zero at the current rate"]
    steps = time_to_zero["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0]["color"] == "red" and steps[1]["color"] == "green", steps
    assert steps[1]["value"] == _constant("cloudflare_ai_gateway:credits_horizon:seconds")[""], (
        "time to zero is red below the CreditsRunningOut horizon")


def test_billing_amounts_are_drawn_in_steps() -> None:
    stepped = [p for p in panels() if p["type"] == "timeseries"
               and any(m in t["expr"] for t in p["targets"] for m in BILLING_AMOUNTS)]
    assert len(stepped) >= 4, [p["title"] for p in stepped]
    for panel in stepped:
        assert panel["fieldConfig"]["defaults"]["custom"]["lineInterpolation"] == "stepAfter", panel["title"]


def test_accounts_that_never_polled_successfully_keep_a_tile() -> None:
    for title in ("Outstanding balance", "Unpaid invoice count", "Failed payment attempts"):
        (panel,) = [p for p in panels() if p["title"] == title]
        (target,) = panel["targets"]
        assert "cloudflare_ai_gateway_poll_success" in target["expr"] and "* NaN" in target["expr"], title
        mappings = panel["fieldConfig"]["defaults"]["mappings"]
        assert any(m["type"] == "special" and m["options"]["match"] == "nan"
                   and "never polled" in m["options"]["result"]["text"] for m in mappings), title


def test_errors_are_per_hour_and_zero_not_blank() -> None:
    panel = _panel_using("cloudflare_ai_gateway_api_errors_total")
    assert "per hour" in panel["title"]
    assert panel["targets"][0]["expr"].startswith("3600 * ")
    assert panel["fieldConfig"]["defaults"]["noValue"] == "0"


def test_total_outstanding_per_currency_across_accounts() -> None:
    (panel,) = [p for p in panels() if p["title"] == "Total outstanding per currency"]
    assert panel["targets"][0]["expr"].startswith(
        "sum by (currency) (max by (account_id, currency) (cloudflare_ai_gateway_account_amount_remaining{")


def test_the_credits_and_spend_row() -> None:
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows == ["Billing", "Credits and spend", "Where the money goes", "Spend limits", "Poll health"]
    _panel_using("cloudflare_ai_gateway_credit_balance", "stat")
    _panel_using("cloudflare_ai_gateway_credit_balance", "timeseries")
    time_to_zero = _panel_using("deriv(cloudflare_ai_gateway_credit_balance")
    assert time_to_zero["fieldConfig"]["defaults"]["unit"] == "dtdurations"
    assert 'window="day"' in _panel_using("cloudflare_ai_gateway_usage_amount", "timeseries")["targets"][0]["expr"]
    limit = _panel_using("cloudflare_ai_gateway_spending_limit_window_usage")
    assert "cloudflare_ai_gateway_spending_limit_enabled" in limit["targets"][0]["expr"]
    assert limit["fieldConfig"]["defaults"]["unit"] == "percentunit"
    _panel_using("cloudflare_ai_gateway_auto_topup_failing")
    _panel_using("cloudflare_ai_gateway_upcoming_invoice_amount_due")


def test_annotation_honours_the_variables() -> None:
    (annotation,) = [a for a in DASHBOARD["annotations"]["list"] if a.get("expr")]
    expr = annotation["expr"]
    billing, exporter_down = expr.split(" or ", 1)
    assert 'account=~"$account"' in billing and 'job=~"$job"' in billing and 'instance=~"$instance"' in billing
    assert 'alertname="CloudflareAIGatewayExporterDown"' in exporter_down
    assert 'job=~"$job"' in exporter_down and 'instance=~"$instance"' in exporter_down


def _row(title: str) -> list[dict[str, Any]]:
    """The panels under the row ``title`` (rows are expanded: their panels follow them at the top level)."""
    top: list[dict[str, Any]] = DASHBOARD["panels"]
    start = next(i for i, p in enumerate(top) if p["type"] == "row" and p["title"] == title)
    end = next((i for i, p in enumerate(top) if i > start and p["type"] == "row"), len(top))
    return top[start + 1:end]


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel["targets"]]


GATEWAY_COUNTER = re.compile(r"cloudflare_ai_gateway_gateway_[a-z_]+_total")


def test_gateway_counters_count_once_per_ha_pair_and_across_rollouts() -> None:
    """The two exporters of an HA pair count the same requests, and a restart starts the counters again at 0:
    every query on them sums within an exporter (sum without ..., which keeps instance), then takes the largest
    of any exporter (max by ... without instance), and totals over the time range add up those rates per step
    (a subquery), so that a rollout's new pod, with another instance, is counted too."""
    for panel, target in targets():
        expr = target["expr"]
        if not GATEWAY_COUNTER.search(expr):
            continue
        where = f"{panel['title']}/{target['refId']}"
        assert "sum without (" in expr and "max by (account_id" in expr, where
        assert not re.search(r"\bby \([^)]*\binstance\b", expr), f"{where}: aggregates by instance"
        if "$__range" in expr:
            assert "[$__range:$__interval]) * $__interval_ms / 1000" in expr, where
            assert target["instant"], where


def test_the_where_the_money_goes_row() -> None:
    row = {p["title"]: p for p in _row("Where the money goes")}
    cost_totals = {title: p for title, p in row.items()
                   if any("cloudflare_ai_gateway_gateway_cost_total" in e and "$__range" in e for e in _exprs(p))}
    by = {title: re.findall(r"max by \(([^)]*)\)", _exprs(p)[0])[0] for title, p in cost_totals.items()}
    assert sorted(by.values()) == sorted(["account_id, account, gateway", "account_id, account, provider",
                                         "account_id, provider, model"]), by
    for panel in cost_totals.values():
        assert panel["fieldConfig"]["defaults"]["unit"] == "currencyUSD", panel["title"]
    (top,) = [p for p in cost_totals.values() if "topk(10, sum by (provider, model)" in _exprs(p)[0]]
    assert top["title"] == "Top models by cost"
    tokens = _panel_using("cloudflare_ai_gateway_gateway_tokens_total", "timeseries")
    assert "direction, cached" in tokens["targets"][0]["expr"]
    ratio = _panel_using("cloudflare_ai_gateway_gateway_cached_requests_total")
    assert "cloudflare_ai_gateway_gateway_requests_total" in ratio["targets"][0]["expr"]
    assert ratio["fieldConfig"]["defaults"]["unit"] == "percentunit"
    refused = _panel_using("cloudflare_ai_gateway_gateway_rate_limited_requests_total", "timeseries")
    assert any("cloudflare_ai_gateway_gateway_errored_requests_total" in e for e in _exprs(refused))
    billing = _panel_using('"wholesale", "true"', "timeseries")
    assert "Unified Billing" in billing["targets"][0]["expr"] and "BYOK" in billing["targets"][0]["expr"]
    assert all(p["type"] != "row" for p in row.values())


def _alert_threshold(alert: str) -> float:
    (rule,) = [r for r in alert_rules() if r["alert"] == alert]
    match = re.search(r">= ([0-9.]+)$", rule["expr"].strip())
    assert match, alert
    return float(match.group(1))


def test_the_spend_limits_row() -> None:
    """A bar per enabled rule of usage / limit, coloured at the alerts' thresholds, the same over time, a table of
    every rule, and the gateways' own rate limits."""
    row = {p["title"]: p for p in _row("Spend limits")}
    near, reached = (_alert_threshold("CloudflareAIGatewaySpendLimitRuleNear"),
                     _alert_threshold("CloudflareAIGatewaySpendLimitRuleReached"))
    gauge = row["Spend-limit rule usage"]
    assert gauge["type"] == "bargauge" and gauge["fieldConfig"]["defaults"]["unit"] == "percentunit"
    (expr,) = _exprs(gauge)
    assert "cloudflare_ai_gateway_spend_limit_rule_usage" in expr
    assert "cloudflare_ai_gateway_spend_limit_rule_limit" in expr
    assert expr.rstrip(")").endswith("cloudflare_ai_gateway_spend_limit_rule_enabled{"
                                     'job=~"$job",instance=~"$instance",account=~"$account",gateway=~"$gateway"}) == 1')
    for panel in (gauge, row["Spend-limit rule usage over time"]):
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [(s["color"], s["value"]) for s in steps] == [("green", None), ("orange", near), ("red", reached)]
    assert _exprs(row["Spend-limit rule usage over time"]) == [expr.removeprefix("sort_desc(").removesuffix(")")]

    table = row["Spend-limit rules"]
    assert table["type"] == "table"
    assert all(t.get("instant") and t.get("format") == "table" for t in table["targets"])
    organize = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    columns = set(organize["renameByName"].values()) - set(organize["excludeByName"])
    assert {"Account", "Gateway", "Rule", "Technique", "Scope", "Window", "Limit", "Usage", "Used",
            "Enabled"} <= columns
    units = {o["matcher"]["options"]: {p["value"] for p in o["properties"] if p["id"] == "unit"}
             for o in table["fieldConfig"]["overrides"]}
    assert units["Limit"] == units["Usage"] == {"currencyUSD"} and units["Window"] == {"dtdurations"}
    (used,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Used"]
    (steps,) = [p["value"]["steps"] for p in used["properties"] if p["id"] == "thresholds"]
    assert [s["value"] for s in steps] == [None, near, reached]

    gateways = row["Gateway settings and rate limits"]
    assert any("cloudflare_ai_gateway_gateway_rate_limit_requests" in e for e in _exprs(gateways))
    assert any("cloudflare_ai_gateway_gateway_info" in e for e in _exprs(gateways))
