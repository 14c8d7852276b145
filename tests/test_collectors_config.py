"""The ``collectors:`` config section, derived from the collector registry: per-collector on/off, interval,
amount divisor and each collector's own keys, with their defaults and bounds."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import pytest

from exporter.collectors import REGISTRY
from exporter.collectors.base import Collector
from exporter.collectors.credit_balance import CreditBalanceSettings
from exporter.collectors.invoice_history import InvoiceHistorySettings
from exporter.collectors.invoice_preview import InvoicePreviewSettings
from exporter.config.load import default_collectors, load_config, parse_config
from exporter.config.model import ConfigError, MoneySettings
from exporter.snapshot import Setup
from tests.support import COLLECTORS, REPO

ACC = "023e105f4ecef8ad9ca31a8372d0c353"


def config(**sections: Any) -> dict[str, Any]:
    return {"cloudflare": {"api_token": "t0ken-value"}, "accounts": [ACC], **sections}


def problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "config.yaml", {})
    return err.value.problems


def test_defaults_every_collector_on_with_its_own_interval() -> None:
    loaded = parse_config(config(), "c", {})
    assert loaded.collectors == default_collectors()
    assert list(loaded.collectors) == list(COLLECTORS) == list(Setup.of(loaded).collectors)
    assert {name: (s.enabled, s.interval) for name, s in loaded.collectors.items()} == {
        "invoice_history": (True, 300), "credit_balance": (True, 60), "spending_limit": (True, 300),
        "usage_history": (True, 300), "invoice_preview": (True, 900), "gateways": (True, 300),
        "gateway_analytics": (True, 60)}
    assert all(getattr(s, "amount_divisor", 100) == 100 for s in loaded.collectors.values())
    assert loaded.collectors["credit_balance"] == CreditBalanceSettings(payment_method_labels=False)


def test_invoice_history_follows_poll_interval_and_every_divisor_follows_metrics() -> None:
    collectors = parse_config(config(poll={"interval": "10m"}, metrics={"amount_divisor": 1000}), "c", {}).collectors
    assert collectors["invoice_history"] == InvoiceHistorySettings(interval=600, amount_divisor=1000)
    assert collectors["credit_balance"] == CreditBalanceSettings(interval=60, amount_divisor=1000)
    assert collectors["invoice_preview"].interval == 900  # only invoice_history follows poll.interval


def test_each_collector_is_set_on_its_own() -> None:
    raw = config(metrics={"amount_divisor": 100}, collectors={
        "invoice_history": {"interval": "1h"},
        "credit_balance": {"interval": "30s", "amount_divisor": 1, "payment_method_labels": True},
        "spending_limit": {"enabled": False},
        "usage_history": {"amount_divisor": "1000", "enabled": "true"},
        "invoice_preview": None,
    })
    loaded = parse_config(raw, "c", {})
    collectors = loaded.collectors
    assert collectors["invoice_history"] == InvoiceHistorySettings(interval=3600)
    assert collectors["credit_balance"] == CreditBalanceSettings(interval=30, amount_divisor=1,
                                                                 payment_method_labels=True)
    assert collectors["spending_limit"] == MoneySettings(enabled=False)
    assert collectors["usage_history"] == MoneySettings(amount_divisor=1000)
    assert collectors["invoice_preview"] == InvoicePreviewSettings()
    assert "spending_limit" not in Setup.of(loaded).collectors


def test_every_problem_is_reported_with_its_key_path() -> None:
    found = problems(config(collectors={
        "credit_balances": {},
        "spending_limit": {"payment_method_labels": True, "interval": "soon"},
        "usage_history": {"enabled": "maybe", "amount_divisor": 0},
        "invoice_preview": {"interval": "500ms"},
        "invoice_history": ["enabled"],
    }))
    assert found == [
        f"collectors.credit_balances: unknown key (allowed: {', '.join(COLLECTORS)})",
        "collectors.invoice_history: expected a mapping, got list",
        "collectors.spending_limit.payment_method_labels: unknown key (allowed: enabled, interval, amount_divisor)",
        "collectors.spending_limit.interval: expected a duration like 30s, 5m or 1h, got 'soon'",
        "collectors.usage_history.enabled: expected true or false, got 'maybe'",
        "collectors.usage_history.amount_divisor: must be greater than 0, got 0",
        "collectors.invoice_preview.interval: must be at least 1s, got '500ms'",
    ]


def test_analytics_delay_may_be_zero_and_at_most_an_hour() -> None:
    def analytics(**keys: Any) -> Any:
        return parse_config(config(collectors={"gateway_analytics": keys}), "c", {}).collectors["gateway_analytics"]

    assert (analytics().delay, analytics().max_series) == (300, 1000)
    assert analytics(delay="0s").delay == 0 and analytics(delay="1h").delay == 3600
    assert problems(config(collectors={"gateway_analytics": {"delay": "61m", "max_series": 0}})) == [
        "collectors.gateway_analytics.delay: must be at most 1h, got '61m'",
        "collectors.gateway_analytics.max_series: must be at least 1, got 0"]


def test_collectors_must_be_a_mapping() -> None:
    assert problems(config(collectors=["credit_balance"])) == ["collectors: expected a mapping, got list"]


@pytest.fixture(params=REGISTRY, ids=lambda c: c.name)
def collector(request: pytest.FixtureRequest) -> type[Collector[Any, Any]]:
    """Each registered collector."""
    found: type[Collector[Any, Any]] = request.param
    return found


def test_each_key_of_each_collector_is_documented_and_refuses_a_wrong_value(
        collector: type[Collector[Any, Any]]) -> None:
    text = (REPO / "config.example.yaml").read_text()
    section = re.search(rf"^  {collector.name}:.*\n((?:    .*\n)*)", text, re.M)
    assert section, f"config.example.yaml has no collectors.{collector.name} section"
    for key in fields(collector.settings_type):
        assert re.search(rf"^    (# )?{key.name}:", section.group(1), re.M), \
            f"config.example.yaml does not show collectors.{collector.name}.{key.name}"
        assert key.metadata.get("doc"), f"{collector.name}.{key.name} has no description"
        found = problems(config(collectors={collector.name: {key.name: {"a": "mapping"}}}))
        assert found and found[0].startswith(f"collectors.{collector.name}.{key.name}: "), found


def test_example_config_spells_out_the_defaults() -> None:
    example = load_config(REPO / "config.example.yaml", {"CLOUDFLARE_API_TOKEN": "t0ken-value"})
    # loading it gives what an empty section gives
    assert example.collectors == parse_config(config(), "c", {}).collectors
