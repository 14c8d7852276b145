"""The collector registry: one line per collector, in exposition order.

A collector is the module ``exporter/collectors/<name>.py`` holding ``COLLECTOR``, a ``base.Collector``
subclass whose ``name`` is the module's. The config's ``collectors:`` section, the poller, the renderer, the
status page and the demo are all derived from ``REGISTRY``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from exporter.collectors.base import Collector

NAMES = (
    "invoice_history",
    "credit_balance",
    "spending_limit",
    "usage_history",
    "invoice_preview",
    "gateways",
    "gateway_analytics",
)


def _load(name: str) -> type[Collector[Any, Any]]:
    found = import_module(f"{__name__}.{name}").COLLECTOR
    if not (isinstance(found, type) and issubclass(found, Collector) and found.name == name):
        raise TypeError(f"{__name__}.{name}.COLLECTOR is not a Collector named {name!r}")
    return found


REGISTRY: tuple[type[Collector[Any, Any]], ...] = tuple(_load(name) for name in NAMES)
BY_NAME = {collector.name: collector for collector in REGISTRY}
