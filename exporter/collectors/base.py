"""The interface of an endpoint collector: one module per Cloudflare billing endpoint.

A collector fetches its endpoint for one account (``fetch``, through ``AccountApi``) into immutable data,
and turns that data into samples (``render``, into a ``Sink``). The poller keeps the data in the store;
``exporter/render.py`` renders it once per change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter.client import AccountApi

__all__ = ["ACC", "NS", "AccountApi", "EndpointCollector", "Family", "Fetched", "Sink", "money"]

NS = "cloudflare_ai_gateway"
ACC = ("account_id", "account")


@dataclass(frozen=True)
class Family:
    name: str  # full, with the prefix
    doc: str
    labels: tuple[str, ...]
    type: str = "gauge"


class Sink(Protocol):
    def add(self, family: Family, labels: Sequence[str], value: float) -> None: ...


@dataclass(frozen=True)
class Fetched:
    data: Any
    skipped: int = 0  # malformed items left out (api_invalid_invoices_total)
    enrolled: bool = True  # False: the account does not use this feature; NOT a failed poll
    summary: Mapping[str, Any] = field(default_factory=dict)  # for the poll's log line


class EndpointCollector(Protocol):
    endpoint: str  # "invoice_history" | "credit_balance" | "spending_limit" | "usage_history" | "invoice_preview"
    families: tuple[Family, ...]  # in exposition order

    async def fetch(self, api: AccountApi) -> Fetched: ...  # raises ApiError

    def render(self, acc: tuple[str, str], data: Any, settings: Any, out: Sink) -> None: ...

    def requests_per_poll(self) -> int: ...  # for the budget check: requests one poll of one account makes


def money(value: float, divisor: float) -> float:
    """An amount in API units as major units: 862296 / 100 is 8622.96, not 8622.960000000001."""
    return round(value / divisor, 10)
