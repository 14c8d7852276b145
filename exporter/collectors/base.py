"""The endpoint collector interface (ARCH.md). Minimal stand-in: the lead replaces it with the real one at merge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter.client import ApiError
from exporter.config import AccountConfig


@dataclass(frozen=True)
class Family:
    name: str  # full, with the cloudflare_ai_gateway_ prefix
    doc: str
    labels: tuple[str, ...]
    type: str = "gauge"


class Sink(Protocol):
    def add(self, family: Family, labels: Sequence[str], value: float) -> None: ...


@dataclass(frozen=True)
class Fetched:
    data: Any
    skipped: int = 0
    enrolled: bool = True  # False: the account does not use this feature; NOT a failed poll
    summary: Mapping[str, Any] = field(default_factory=dict)


class AccountApi(Protocol):
    account: AccountConfig

    async def get(self, path_suffix: str, params: dict[str, Any],
                  accept_not_enrolled: bool = False) -> dict[str, Any] | None: ...

    async def get_pages(self, path_suffix: str, params: dict[str, Any], items_key: str) -> tuple[list[Any], int]: ...

    def fail(self, reason: str, message: str) -> ApiError: ...


class EndpointCollector(Protocol):
    endpoint: str
    families: tuple[Family, ...]

    async def fetch(self, api: AccountApi) -> Fetched: ...

    def render(self, acc: tuple[str, str], data: Any, settings: Any, out: Sink) -> None: ...
