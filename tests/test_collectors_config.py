"""The ``collectors:`` config section (issue 10): per-collector on/off, interval and amount divisor."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.config import (
    COLLECTOR_NAMES,
    CollectorsConfig,
    ConfigError,
    CreditBalanceSettings,
    InvoiceHistorySettings,
    InvoicePreviewSettings,
    SpendingLimitSettings,
    UsageHistorySettings,
    load_config,
    parse_config,
)
from tests.support import REPO

ACC = "023e105f4ecef8ad9ca31a8372d0c353"


def config(**sections: Any) -> dict[str, Any]:
    return {"cloudflare": {"api_token": "t0ken-value"}, "accounts": [ACC], **sections}


def problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "config.yaml", {})
    return err.value.problems


def test_defaults_every_collector_on_with_its_own_interval() -> None:
    collectors = parse_config(config(), "c", {}).collectors
    assert collectors == CollectorsConfig()
    assert {name: (s.enabled, s.interval, s.amount_divisor) for name, s in collectors.by_endpoint().items()} == {
        "invoice_history": (True, 300, 100), "credit_balance": (True, 60, 100), "spending_limit": (True, 300, 100),
        "usage_history": (True, 300, 100), "invoice_preview": (True, 900, 100)}
    assert collectors.credit_balance.payment_method_labels is False
    assert list(collectors.enabled()) == list(COLLECTOR_NAMES)


def test_invoice_history_follows_poll_interval_and_every_divisor_follows_metrics() -> None:
    collectors = parse_config(config(poll={"interval": "10m"}, metrics={"amount_divisor": 1000}), "c", {}).collectors
    assert collectors.invoice_history == InvoiceHistorySettings(interval=600, amount_divisor=1000)
    assert collectors.credit_balance == CreditBalanceSettings(interval=60, amount_divisor=1000)
    assert collectors.invoice_preview.interval == 900  # only invoice_history follows poll.interval


def test_each_collector_is_set_on_its_own() -> None:
    raw = config(metrics={"amount_divisor": 100}, collectors={
        "invoice_history": {"interval": "1h"},
        "credit_balance": {"interval": "30s", "amount_divisor": 1, "payment_method_labels": True},
        "spending_limit": {"enabled": False},
        "usage_history": {"amount_divisor": "1000", "enabled": "true"},
        "invoice_preview": None,
    })
    collectors = parse_config(raw, "c", {}).collectors
    assert collectors.invoice_history == InvoiceHistorySettings(interval=3600)
    assert collectors.credit_balance == CreditBalanceSettings(interval=30, amount_divisor=1, payment_method_labels=True)
    assert collectors.spending_limit == SpendingLimitSettings(enabled=False)
    assert collectors.usage_history == UsageHistorySettings(amount_divisor=1000)
    assert collectors.invoice_preview == InvoicePreviewSettings()
    assert list(collectors.enabled()) == ["invoice_history", "credit_balance", "usage_history", "invoice_preview"]


def test_every_problem_is_reported_with_its_key_path() -> None:
    found = problems(config(collectors={
        "credit_balances": {},
        "spending_limit": {"payment_method_labels": True, "interval": "soon"},
        "usage_history": {"enabled": "maybe", "amount_divisor": 0},
        "invoice_preview": {"interval": "500ms"},
        "invoice_history": ["enabled"],
    }))
    assert found == [
        "collectors.credit_balances: unknown key (allowed: invoice_history, credit_balance, spending_limit, "
        "usage_history, invoice_preview)",
        "collectors.invoice_history: expected a mapping, got list",
        "collectors.spending_limit.payment_method_labels: unknown key (allowed: enabled, interval, amount_divisor)",
        "collectors.spending_limit.interval: expected a duration like 30s, 5m or 1h, got 'soon'",
        "collectors.usage_history.enabled: expected true or false, got 'maybe'",
        "collectors.usage_history.amount_divisor: must be greater than 0, got 0",
        "collectors.invoice_preview.interval: must be at least 1s, got '500ms'",
    ]


def test_collectors_must_be_a_mapping() -> None:
    assert problems(config(collectors=["credit_balance"])) == ["collectors: expected a mapping, got list"]


def test_example_config_documents_every_collector_key() -> None:
    example = load_config(REPO / "config.example.yaml", {"CLOUDFLARE_API_TOKEN": "t0ken-value"})
    text = (REPO / "config.example.yaml").read_text()
    for key in (*COLLECTOR_NAMES, "collectors:", "enabled", "payment_method_labels"):
        assert key in text, f"config.example.yaml does not mention {key}"
    # the example spells out the defaults: loading it gives what an empty section gives
    assert example.collectors == parse_config(config(), "c", {}).collectors
