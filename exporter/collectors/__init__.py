"""One collector per Cloudflare billing endpoint (see ``base.py`` for the interface).

``config.collectors`` decides which run (enabled ones only), how often (``interval_for``) and with which
settings their ``render`` gets (``settings_for``: each collector's own amount divisor).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from exporter.collectors.base import EndpointCollector
from exporter.collectors.credit_balance import CreditBalanceCollector
from exporter.collectors.invoice_history import InvoiceHistory
from exporter.collectors.invoice_preview import InvoicePreviewCollector
from exporter.collectors.spending_limit import SpendingLimitCollector
from exporter.collectors.usage_history import UsageHistoryCollector
from exporter.config import COLLECTOR_NAMES, Config


def _make(endpoint: str, config: Config) -> EndpointCollector:
    if endpoint == "invoice_history":
        return InvoiceHistory(config.metrics.invoice_pdf_url)
    if endpoint == "credit_balance":
        return CreditBalanceCollector()
    if endpoint == "spending_limit":
        return SpendingLimitCollector()
    if endpoint == "usage_history":
        return UsageHistoryCollector()
    if endpoint == "invoice_preview":
        return InvoicePreviewCollector()
    raise ValueError(f"unknown collector {endpoint!r}")


def build_collectors(config: Config) -> tuple[EndpointCollector, ...]:
    """The enabled collectors, in exposition order (COLLECTOR_NAMES)."""
    enabled = config.collectors.enabled()
    return tuple(_make(name, config) for name in COLLECTOR_NAMES if name in enabled)


def settings_for(config: Config, endpoint: str) -> Any:
    """The settings ``render`` gets for ``endpoint``: the collector's own (its amount divisor); invoice history
    gets the metrics section (series choices) with its collector's divisor."""
    settings = config.collectors.by_endpoint()[endpoint]
    if endpoint == "invoice_history":
        return dataclasses.replace(config.metrics, amount_divisor=settings.amount_divisor)
    return settings


def interval_for(config: Config, endpoint: str) -> float:
    """How often ``endpoint`` is polled, seconds (collectors.<endpoint>.interval)."""
    return config.collectors.by_endpoint()[endpoint].interval
