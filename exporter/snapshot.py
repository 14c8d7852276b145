"""Immutable poll results and the thread-safe store the renderer and the status page read them from.

The store is the one path from the running parts to what is shown: the poller replaces one (account, endpoint)
``EndpointState`` whole, with that poll's request, error and pause counts, in one write (``record_poll``); the
app replaces the ``ExporterStatus`` on a reload. A scrape takes a ``Snapshot`` and so never sees half a poll.
The counters live beside the billing data: a request counted never makes the billing data look changed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from exporter.cloudflare.errors import PollCounts
from exporter.collectors import REGISTRY
from exporter.collectors.base import Collector
from exporter.config.load import default_collectors
from exporter.config.model import Config, Inherited

_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class Setup:
    """What one config load builds, once, for everyone: the config and its enabled collectors (registry
    order)."""

    config: Config
    collectors: Mapping[str, Collector[Any, Any]]

    @classmethod
    def of(cls, config: Config) -> Setup:
        """A collector the config leaves out runs at its defaults, as for a file without that section."""
        settings = {**default_collectors(Inherited(config.poll.interval, config.metrics.amount_divisor)),
                    **config.collectors}
        return cls(config, MappingProxyType({c.name: c(settings[c.name], config) for c in REGISTRY
                                             if settings[c.name].enabled}))


@dataclass(frozen=True)
class ExporterStatus:
    """The exporter's own state that metrics report; replaced whole on every reload (``generation`` + 1)."""

    setup: Setup
    generation: int = 0
    reload_successful: bool = True
    reload_timestamp: float = 0.0


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What we know of one endpoint of one account: the last good data and how the last poll went."""

    data: Any = None  # the collector's data from the last successful poll; None until then or if not enrolled
    polled: bool = False
    success: bool = False
    enrolled: bool = True
    duration: float | None = None
    last_success_time: float | None = None
    last_poll_time: float | None = None
    last_error_reason: str | None = None  # the api_errors_total reason of the last failed poll
    last_error_message: str | None = None

    def after_success(self, data: Any, enrolled: bool, at: float, duration: float) -> EndpointState:
        return EndpointState(data, True, True, enrolled, duration, at, at, None, None)

    def after_failure(self, reason: str, message: str, at: float, duration: float) -> EndpointState:
        return replace(self, polled=True, success=False, duration=duration, last_poll_time=at,
                       last_error_reason=reason, last_error_message=message)


@dataclass(frozen=True, slots=True)
class AccountState:
    account_id: str
    name: str
    endpoints: Mapping[str, EndpointState]

    @property
    def polled(self) -> bool:
        return all(e.polled for e in self.endpoints.values())


def _frozen(counter: Counter[str]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted(counter.items())))


@dataclass(frozen=True, slots=True)
class Counts:
    """One account's API counters (replaced whole when a poll ends)."""

    requests: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # code -> count
    errors: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # reason -> count
    invalid: int = 0  # malformed items skipped

    def plus(self, requests: Counter[str], errors: Counter[str], skipped: int) -> Counts:
        return Counts(_frozen(Counter(self.requests) + requests), _frozen(Counter(self.errors) + errors),
                      self.invalid + skipped)


@dataclass(frozen=True)
class Snapshot:
    version: int
    accounts: Mapping[str, AccountState]
    status: ExporterStatus
    counts: Mapping[str, Counts] = field(default_factory=dict)  # account_id ("" for discovery) -> counters
    pauses: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # header -> count, process-wide

    @property
    def ready(self) -> bool:
        return bool(self.accounts) and all(a.polled for a in self.accounts.values())


StateChange = Callable[[EndpointState], EndpointState]


class SnapshotStore:
    """The single place poll results, API counters and the exporter's status live; writers replace, readers
    copy."""

    def __init__(self, status: ExporterStatus) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, AccountState] = {}
        self._counts: dict[str, Counts] = {}
        self._pauses: Counter[str] = Counter()
        self._status = status
        self._version = 0
        self._snapshot: Snapshot | None = None

    def set_status(self, status: ExporterStatus) -> None:
        with self._lock:
            self._status = status
            self._changed()

    def set_accounts(self, accounts: Iterable[tuple[str, str]], endpoints: Sequence[str]) -> None:
        """Make the polled set exactly these (id, name) pairs with these endpoints, keeping what stays."""
        with self._lock:
            kept: dict[str, AccountState] = {}
            for account_id, name in dict(accounts).items():
                old = self._accounts.get(account_id)
                states = {e: old.endpoints.get(e, EndpointState()) if old else EndpointState() for e in endpoints}
                if old is not None and old.name == name and list(old.endpoints) == list(states):
                    kept[account_id] = old
                else:
                    kept[account_id] = AccountState(account_id, name, MappingProxyType(states))
            self._accounts = kept
            self._counts = {k: v for k, v in self._counts.items() if k in kept or k == ""}
            self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._snapshot = None

    def get(self, account_id: str) -> AccountState | None:
        with self._lock:
            return self._accounts.get(account_id)

    def record_poll(self, account_id: str, endpoint: str, change: EndpointState | StateChange | None,
                    counts: PollCounts, skipped: int = 0) -> None:
        """One poll's result in one write: the endpoint's new state, or a function of its current one (None:
        counters only, e.g. discovery), and what the poll adds to the counters (``skipped``: malformed items).
        An account removed by a reload mid-poll stays removed."""
        with self._lock:
            account = self._accounts.get(account_id)
            if change is not None and account is not None and endpoint in account.endpoints:
                state = change(account.endpoints[endpoint]) if callable(change) else change
                self._accounts[account_id] = replace(
                    account, endpoints=MappingProxyType({**account.endpoints, endpoint: state}))
            elif account is None and account_id != "":
                return
            if counts.requests or counts.errors or skipped:
                self._counts[account_id] = self._counts.get(account_id, Counts()).plus(
                    counts.requests, counts.errors, skipped)
            self._pauses.update(counts.pauses)
            self._changed()

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = Snapshot(self._version, MappingProxyType(dict(self._accounts)), self._status,
                                          MappingProxyType(dict(self._counts)), _frozen(self._pauses))
            return self._snapshot
