"""Immutable poll results and the thread-safe store the collector reads them from.

The poller replaces an account's ``AccountState`` whole; a scrape takes a ``Snapshot`` (a frozen view of
every account plus the API counters) and so never sees half a poll.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

SETTLED_STATUSES = frozenset({"paid", "void", "draft"})
_SMALL_FLOATS = {float(i): float(i) for i in range(16)}  # 0.0 amounts, attempt counts: one object each


@dataclass(frozen=True, slots=True)
class Invoice:
    """One invoice as the API sent it; amounts in the API's unit (smallest currency unit by default)."""

    id: str
    currency: str
    amount_due: float
    amount_paid: float
    amount_remaining: float
    status: str | None = None
    attempt_count: float | None = None
    attempted: bool | None = None
    created: float | None = None
    created_by: str | None = None
    origin: str | None = None
    invoice_pdf: str | None = None

    def __post_init__(self) -> None:
        # Values repeated across invoices are stored once, not once per invoice: at 20,000 invoices that is
        # about 5 MB less (strings, zero amounts, attempt counts, amount_paid equal to amount_due).
        share = object.__setattr__
        for name in ("currency", "status", "created_by", "origin"):
            value = getattr(self, name)
            if type(value) is str:
                share(self, name, sys.intern(value))
        for name in ("amount_paid", "amount_remaining", "attempt_count"):
            value = getattr(self, name)
            # -0.0 == 0.0 but is written differently, so it keeps its own object (copysign tells them apart)
            if value in _SMALL_FLOATS and type(value) is float and math.copysign(1.0, value) > 0:
                share(self, name, _SMALL_FLOATS[value])
        if self.amount_paid == self.amount_due and self.amount_due != 0:  # paid in full: the same number
            share(self, "amount_paid", self.amount_due)

    @property
    def unpaid(self) -> bool:
        return self.amount_remaining > 0 and (self.status or "").lower() not in SETTLED_STATUSES


@dataclass(frozen=True, slots=True)
class AccountState:
    """What we know of one account: the last good invoices and how the last poll went."""

    account_id: str
    name: str
    invoices: tuple[Invoice, ...] | None = None  # None until a poll succeeds
    polled: bool = False
    last_poll_success: bool = False
    last_poll_duration: float | None = None
    last_success_time: float | None = None
    last_poll_time: float | None = None
    last_error: str | None = None  # the api_errors_total reason of the last failed poll

    def after_success(self, invoices: tuple[Invoice, ...], at: float, duration: float) -> AccountState:
        return replace(self, invoices=invoices, polled=True, last_poll_success=True, last_poll_duration=duration,
                       last_success_time=at, last_poll_time=at, last_error=None)

    def after_failure(self, reason: str, at: float, duration: float) -> AccountState:
        return replace(self, polled=True, last_poll_success=False, last_poll_duration=duration,
                       last_poll_time=at, last_error=reason)


@dataclass(frozen=True)
class Snapshot:
    version: int
    accounts: Mapping[str, AccountState]
    requests: Mapping[tuple[str, str], int]  # (account_id, code) -> count
    errors: Mapping[tuple[str, str], int]  # (account_id, reason) -> count
    invalid_invoices: Mapping[str, int]  # account_id -> count

    @property
    def ready(self) -> bool:
        return bool(self.accounts) and all(a.polled for a in self.accounts.values())


class SnapshotStore:
    """The single place poll results and API counters live; writers replace, readers copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, AccountState] = {}
        self._requests: Counter[tuple[str, str]] = Counter()
        self._errors: Counter[tuple[str, str]] = Counter()
        self._invalid: Counter[str] = Counter()
        self._version = 0
        self._snapshot: Snapshot | None = None

    def _changed(self) -> None:
        self._version += 1
        self._snapshot = None

    def set_accounts(self, accounts: Iterable[tuple[str, str]]) -> None:
        """Make the polled set exactly these (id, name) pairs, keeping the state of those that stay."""
        with self._lock:
            wanted = dict(accounts)
            kept = {}
            for account_id, name in wanted.items():
                old = self._accounts.get(account_id)
                kept[account_id] = replace(old, name=name) if old else AccountState(account_id, name)
            gone = set(self._accounts) - set(wanted)
            self._accounts = kept
            for key in [k for k in self._requests if k[0] in gone]:
                del self._requests[key]
            for key in [k for k in self._errors if k[0] in gone]:
                del self._errors[key]
            for account_id in gone:
                self._invalid.pop(account_id, None)
            self._changed()

    def get(self, account_id: str) -> AccountState | None:
        with self._lock:
            return self._accounts.get(account_id)

    def put(self, state: AccountState) -> None:
        with self._lock:
            if state.account_id in self._accounts:  # an account removed by a reload mid-poll stays removed
                self._accounts[state.account_id] = state
                self._changed()

    def count_request(self, account_id: str, code: str) -> None:
        with self._lock:
            self._requests[(account_id, code)] += 1
            self._changed()

    def count_error(self, account_id: str, reason: str) -> None:
        with self._lock:
            self._errors[(account_id, reason)] += 1
            self._changed()

    def count_invalid_invoices(self, account_id: str, count: int) -> None:
        if count:
            with self._lock:
                self._invalid[account_id] += count
                self._changed()

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = Snapshot(
                    version=self._version,
                    accounts=MappingProxyType(dict(self._accounts)),
                    requests=MappingProxyType(dict(self._requests)),
                    errors=MappingProxyType(dict(self._errors)),
                    invalid_invoices=MappingProxyType(dict(self._invalid)),
                )
            return self._snapshot
