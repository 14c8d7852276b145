"""One collector per Cloudflare billing endpoint (see ``base.py`` for the interface)."""

from __future__ import annotations

from typing import Any

from exporter.collectors.base import EndpointCollector
from exporter.collectors.invoice_history import InvoiceHistory
from exporter.config import Config


def build_collectors(config: Config) -> tuple[EndpointCollector, ...]:
    """The enabled collectors, in exposition order."""
    return (InvoiceHistory(config.metrics.invoice_pdf_url),)


def settings_for(config: Config, endpoint: str) -> Any:
    """The settings ``render`` gets for ``endpoint`` (amount divisor, series choices)."""
    return config.metrics


def interval_for(config: Config, endpoint: str) -> float:
    """How often ``endpoint`` is polled, seconds."""
    return config.poll.interval
