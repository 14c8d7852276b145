"""The validated config: immutable dataclasses, built by ``load.py`` (or in code, for the demo and tests).

Secrets live in ``Credentials`` and never appear in ``repr``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from exporter.config.values import AMOUNT_DIVISOR, INTERVAL, boolean

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"


def printable(text: str) -> str:
    """Text from a hostile file (a key with a lone surrogate) made safe for stderr and a log line."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ConfigError(Exception):
    """The config cannot be used; ``problems`` lists every reason, each naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = printable(source)
        self.problems = [printable(problem) for problem in problems]
        super().__init__(f"{self.source}: " + "; ".join(self.problems))

    def report(self) -> str:
        return "\n".join(f"{self.source}: {problem}" for problem in self.problems)


@dataclass(frozen=True)
class Credentials:
    """Either an API token or a legacy e-mail + Global API Key pair."""

    api_token: str | None = field(default=None, repr=False)
    api_email: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        if self.api_token:
            return {"Authorization": f"Bearer {self.api_token}"}
        return {"X-Auth-Email": self.api_email or "", "X-Auth-Key": self.api_key or ""}

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.api_token, self.api_key, self.api_email) if s)


@dataclass(frozen=True)
class CloudflareConfig:
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 10.0
    requests_per_second: float = 3.0
    graphql_queries_per_second: float = 1.0  # Cloudflare's GraphQL quota: 300 per 5 minutes per user
    max_retries: int = 3
    per_page: int | None = None
    max_pages: int = 100
    credentials: Credentials | None = None


@dataclass(frozen=True)
class AccountConfig:
    id: str
    name: str
    type: str
    credentials: Credentials = field(repr=False)


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = False
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    def selects(self, account_id: str, name: str) -> bool:
        def hit(patterns: tuple[re.Pattern[str], ...]) -> bool:
            return any(p.search(name) or p.search(account_id) for p in patterns)

        return (not self.include or hit(self.include)) and not hit(self.exclude)


@dataclass(frozen=True)
class MetricsConfig:
    amount_divisor: float = 100.0
    invoice_series: str = "unpaid"
    invoice_pdf_url: bool = False


@dataclass(frozen=True)
class PollConfig:
    interval: float = 300.0
    max_concurrency: int = 8


@dataclass(frozen=True)
class ShardingConfig:
    shard: int = 0
    total_shards: int = 1


# --- the settings of one collector (collectors.<name>) -------------------------------------------------------

def setting(default: Any, parse: Callable[[Any], Any], doc: str) -> Any:
    """A key of a collector's config section: its default, its parser (with its bounds) and what it does."""
    return field(default=default, metadata={"parse": parse, "doc": doc})


@dataclass(frozen=True)
class Inherited:
    """Keys of other sections that collector defaults follow: a collector section left out of the file gets
    its defaults from these (``CollectorSettings.defaults``)."""

    poll_interval: float = 300.0
    amount_divisor: float = 100.0


@dataclass(frozen=True)
class CollectorSettings:
    """What every collector has; a collector declares more keys by subclassing (each with ``setting``)."""

    enabled: bool = setting(True, boolean, "poll this endpoint")
    interval: float = setting(300.0, INTERVAL, "how often each account's endpoint is polled")

    @classmethod
    def defaults(cls, inherited: Inherited) -> Self:
        return cls()


@dataclass(frozen=True)
class MoneySettings(CollectorSettings):
    """A collector whose amounts are divided by an amount divisor (several API units are assumptions)."""

    amount_divisor: float = setting(100.0, AMOUNT_DIVISOR, "API amounts are divided by it")

    @classmethod
    def defaults(cls, inherited: Inherited) -> Self:
        return cls(amount_divisor=inherited.amount_divisor)


@dataclass(frozen=True)
class Config:
    cloudflare: CloudflareConfig = CloudflareConfig()
    poll: PollConfig = PollConfig()
    accounts: tuple[AccountConfig, ...] = ()
    discovery: DiscoveryConfig = DiscoveryConfig()
    metrics: MetricsConfig = MetricsConfig()
    sharding: ShardingConfig = ShardingConfig()
    # Collector settings by name, in registry order (the loader fills in every collector); one left out runs
    # at its defaults.
    collectors: Mapping[str, CollectorSettings] = field(default_factory=dict)
    # Accepted but worth telling the operator (e.g. an upper-case account id that was normalised): the CLI
    # logs each at warn level when the config is loaded or reloaded, and --config.check prints them.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value in this config, for log redaction."""
        found: set[str] = set()
        for creds in [self.cloudflare.credentials, *(a.credentials for a in self.accounts)]:
            if creds:
                found.update(creds.secrets())
        return tuple(sorted(found, key=len, reverse=True))
