"""Immutable poll results and the thread-safe store the renderer reads them from.

The poller replaces one (account, endpoint) ``EndpointState`` whole, with that poll's request and error
counts, in one write (``record_poll``). A scrape takes a ``Snapshot`` and so never sees half a poll. The
counters live beside the billing data: a request counted never makes the billing data look changed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, int] = MappingProxyType({})


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


@dataclass(frozen=True, slots=True)
class Counts:
    """One account's API counters (replaced whole when a poll ends)."""

    requests: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # code -> count
    errors: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # reason -> count
    invalid: int = 0  # malformed items skipped

    def plus(self, requests: Counter[str], errors: Counter[str], skipped: int) -> Counts:
        return Counts(MappingProxyType(dict(sorted((Counter(self.requests) + requests).items()))),
                      MappingProxyType(dict(sorted((Counter(self.errors) + errors).items()))),
                      self.invalid + skipped)


@dataclass(frozen=True)
class Snapshot:
    version: int
    accounts: Mapping[str, AccountState]
    counts: Mapping[str, Counts] = field(default_factory=dict)  # account_id ("" for discovery) -> counters

    @property
    def ready(self) -> bool:
        return bool(self.accounts) and all(a.polled for a in self.accounts.values())


class SnapshotStore:
    """The single place poll results and API counters live; writers replace, readers copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, AccountState] = {}
        self._counts: dict[str, Counts] = {}
        self._version = 0
        self._snapshot: Snapshot | None = None

    def set_accounts(self, accounts: Iterable[tuple[str, str]], endpoints: Sequence[str]) -> None:
        """Make the polled set exactly these (id, name) pairs with these endpoints, keeping what stays."""
        with self._lock:
            kept: dict[str, AccountState] = {}
            for account_id, name in dict(accounts).items():
                old = self._accounts.get(account_id)
                states = {e: old.endpoints.get(e, EndpointState()) if old else EndpointState() for e in endpoints}
                if old is not None and old.name == name and set(old.endpoints) == set(states):
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

    def record_poll(self, account_id: str, endpoint: str, state: EndpointState | None,
                    requests: Counter[str], errors: Counter[str], skipped: int = 0) -> None:
        """One poll's outcome in one write: the endpoint's new state (None: counters only, e.g. discovery)
        and its request/error counts. An account removed by a reload mid-poll stays removed."""
        with self._lock:
            account = self._accounts.get(account_id)
            if state is not None and account is not None and endpoint in account.endpoints:
                self._accounts[account_id] = replace(
                    account, endpoints=MappingProxyType({**account.endpoints, endpoint: state}))
            elif account is None and account_id != "":
                return
            if requests or errors or skipped:
                self._counts[account_id] = self._counts.get(account_id, Counts()).plus(requests, errors, skipped)
            self._changed()

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = Snapshot(self._version, MappingProxyType(dict(self._accounts)),
                                          MappingProxyType(dict(self._counts)))
            return self._snapshot
