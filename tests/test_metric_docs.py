"""What `--demo --once` serves against what users rely on: the public contract's families (name, type, label set)
and the README's metric tables (every family served is documented there with its type and labels)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collectors import REGISTRY
from exporter.config.load import default_collectors
from exporter.config.model import Config
from tests.support import COLLECTORS, REPO

ACC = ("account_id", "account")
INV = (*ACC, "invoice_id")
POLL = (*ACC, "endpoint")
GW = (*ACC, "gateway")
SERIES = (*GW, "provider", "model")

# The public contract's metric names (its tables "Metrics", "The rest of AI Gateway billing" and "Gateways"), as served:
# name -> (type, labels). Changing a row here is changing the contract: dashboards and alerts depend on it.
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "invoice_amount_due": ("gauge", (*INV, "currency")),
    "invoice_amount_paid": ("gauge", (*INV, "currency")),
    "invoice_amount_remaining": ("gauge", (*INV, "currency")),
    "invoice_payment_attempts": ("gauge", INV),
    "invoice_created_timestamp_seconds": ("gauge", INV),
    "invoice_info": ("gauge", (*INV, "status", "origin", "created_by", "currency")),
    "account_invoices": ("gauge", (*ACC, "status")),
    "account_unpaid_invoices": ("gauge", ACC),
    "account_amount_due": ("gauge", (*ACC, "currency")),
    "account_amount_remaining": ("gauge", (*ACC, "currency")),
    "account_failed_payment_attempts": ("gauge", ACC),
    "account_oldest_unpaid_invoice_created_timestamp_seconds": ("gauge", ACC),
    "poll_success": ("gauge", POLL),  # ACC, + endpoint since the billing collectors
    "poll_last_success_timestamp_seconds": ("gauge", POLL),
    "poll_duration_seconds": ("gauge", POLL),
    "api_requests_total": ("counter", ("account_id", "code")),
    "api_errors_total": ("counter", ("account_id", "reason")),
    "exporter_build_info": ("gauge", ("version", "python_version")),
    "exporter_config_last_reload_successful": ("gauge", ()),
    "credit_balance": ("gauge", ACC),
    "payment_method_present": ("gauge", ACC),
    "auto_topup_threshold": ("gauge", ACC),
    "auto_topup_amount": ("gauge", ACC),
    "auto_topup_last_failure_timestamp_seconds": ("gauge", ACC),
    "auto_topup_failing": ("gauge", ACC),
    "spending_limit_enabled": ("gauge", ACC),
    "spending_limit_amount": ("gauge", (*ACC, "duration", "strategy")),
    "spending_limit_window_usage": ("gauge", ACC),
    "usage_amount": ("gauge", (*ACC, "window")),
    "upcoming_invoice_amount_due": ("gauge", (*ACC, "currency")),
    "upcoming_invoice_period_end_timestamp_seconds": ("gauge", ACC),
    "gateway_info": ("gauge", (*GW, "workers_ai_billing_mode", "byok_only", "authentication", "collect_logs")),
    "gateway_rate_limit_requests": ("gauge", (*GW, "technique")),
    "gateway_rate_limit_interval_seconds": ("gauge", GW),
    "spend_limit_rule_limit": ("gauge", (*GW, "rule")),
    "spend_limit_rule_window_seconds": ("gauge", (*GW, "rule")),
    "spend_limit_rule_enabled": ("gauge", (*GW, "rule")),
    "spend_limit_rule_info": ("gauge", (*GW, "rule", "technique", "scope")),
    "spend_limit_rule_usage": ("gauge", (*GW, "rule")),
    "gateway_requests_total": ("counter", SERIES),
    "gateway_cached_requests_total": ("counter", SERIES),
    "gateway_errored_requests_total": ("counter", SERIES),
    "gateway_rate_limited_requests_total": ("counter", SERIES),
    "gateway_tokens_total": ("counter", (*SERIES, "direction", "cached")),
    "gateway_cost_total": ("counter", (*SERIES, "wholesale")),
}
API_REASONS = {"auth", "rate_limited", "server_error", "timeout", "connection", "invalid_response", "api_error",
               "pagination"}
ENDPOINTS = set(COLLECTORS)


@pytest.fixture(scope="module")
def demo_once() -> str:
    done = subprocess.run([sys.executable, "-m", "exporter", "--demo", "--once", "--log.level", "error"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def served(text: str) -> Iterator[tuple[str, str, set[frozenset[str]]]]:
    """(full name, type, the label sets of its samples) of every family in the exposition."""
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        yield name, family.type, {frozenset(s.labels) for s in family.samples}


def readme_table() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, labels) of every row of the README's metric tables."""
    row = re.compile(r"^\| `(cloudflare_ai_gateway_[a-z_]+)` \| (gauge|counter) \| ([^|]*)\|", re.M)
    table = {}
    for name, kind, cell in row.findall((REPO / "README.md").read_text()):
        labels: list[str] = []
        for label in filter(None, (part.strip() for part in cell.split(","))):
            labels.extend({"ACC": ACC, "INV": INV, "GW": GW}.get(label, (label,)))
        table[name] = (kind, frozenset(labels))
    return table


@pytest.mark.e2e
def test_every_contract_family_is_served_with_its_type_and_labels(demo_once: str) -> None:
    families = {name: (kind, label_sets) for name, kind, label_sets in served(demo_once)}
    for short, (kind, labels) in CONTRACT.items():
        name = f"cloudflare_ai_gateway_{short}"
        assert name in families, f"{name} is not served by --demo --once"
        assert families[name][0] == kind, f"{name}: {families[name][0]}, the contract says {kind}"
        assert families[name][1] == {frozenset(labels)}, f"{name}: labels {families[name][1]}, contract {labels}"
    values = {(s.name, k): v for f in text_string_to_metric_families(demo_once) for s in f.samples
              for k, v in s.labels.items()}
    assert {v for (n, k), v in values.items() if k == "window"} <= {"day", "month"}
    assert {v for (n, k), v in values.items() if k == "endpoint"} <= ENDPOINTS
    assert {v for (n, k), v in values.items() if n.endswith("api_errors_total") and k == "reason"} <= API_REASONS
    assert all(s.timestamp is None for f in text_string_to_metric_families(demo_once) for s in f.samples)


@pytest.mark.e2e
def test_every_served_family_is_in_the_readme_table_with_its_type_and_labels(demo_once: str) -> None:
    table = readme_table()
    families = list(served(demo_once))
    assert set(table) == {name for name, _, _ in families}, "the README documents a family the exporter lacks"
    for name, kind, label_sets in families:
        assert name in table, f"{name} is served but not in the README's metric table"
        assert table[name][0] == kind, f"{name}: served as {kind}, the README says {table[name][0]}"
        for labels in label_sets:
            assert labels == table[name][1], f"{name}: served with {sorted(labels)}, README {sorted(table[name][1])}"


def test_every_family_of_every_registered_collector_is_in_the_readme_table() -> None:
    """From the registry, not from one exposition: a family the demo does not happen to serve is documented too."""
    table = readme_table()
    config = Config(collectors=default_collectors())
    for collector in REGISTRY:
        for family in collector(config.collectors[collector.name], config).families:
            name = family.name + ("_total" if family.type == "counter" else "")
            assert name in table, f"{collector.name}: {name} is not in the README's metric tables"
            assert table[name] == (family.type, frozenset(family.labels)), name
