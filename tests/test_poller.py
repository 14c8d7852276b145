"""The poll loop in-process, against an httpx MockTransport: writes, failures, schedule, reload."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from exporter.collectors.invoice_history import InvoiceHistoryCollector
from exporter.config.model import AccountConfig, CloudflareConfig, Config, Credentials, PollConfig
from exporter.poller import Poller
from exporter.snapshot import Setup, SnapshotStore
from tests.support import config_with, status_of, store_for, wait_for

IDS = [f"{i:032x}" for i in range(1, 7)]


def config(accounts: int = 3, interval: float = 300.0, concurrency: int = 8, rate: float = 50.0) -> Config:
    """Invoice history alone, polled every ``interval``."""
    return config_with("invoice_history", interval=interval,
                       cloudflare=CloudflareConfig(base_url="https://api.test/client/v4", requests_per_second=rate,
                                                   max_retries=0),
                       poll=PollConfig(interval=interval, max_concurrency=concurrency),
                       accounts=tuple(AccountConfig(i, f"acc{n}", "all", Credentials(api_token="t"))
                                      for n, i in enumerate(IDS[:accounts])))


def poller(cfg: Config, handler: Any, store: SnapshotStore | None = None) -> Poller:
    return Poller(Setup.of(cfg), store or store_for(cfg), httpx.MockTransport(handler))


def invoices_page(request: httpx.Request, pages: int = 1) -> httpx.Response:
    page = int(request.url.params.get("page", "1"))
    invoice = {"id": f"in_{page}", "currency": "usd", "amount_due": 100, "amount_paid": 0, "amount_remaining": 100,
               "status": "open"}
    return httpx.Response(200, json={"success": True, "result": {
        "invoices": [invoice], "pagination": {"page": page, "has_more": page < pages}}})


class CountingStore(SnapshotStore):
    def __init__(self) -> None:
        super().__init__(status_of(config()))
        self.writes: list[tuple[str, str]] = []

    def record_poll(self, account_id: str, endpoint: str, *args: Any, **kwargs: Any) -> None:
        self.writes.append((account_id, endpoint))
        super().record_poll(account_id, endpoint, *args, **kwargs)


def test_one_store_write_per_poll_however_many_pages() -> None:
    store = CountingStore()
    assert poller(config(), lambda r: invoices_page(r, pages=3), store).run_once()
    assert sorted(store.writes) == sorted((i, "invoice_history") for i in IDS[:3])
    snapshot = store.snapshot()
    assert snapshot.ready and snapshot.counts[IDS[0]].requests == {"200": 3}
    state = snapshot.accounts[IDS[0]].endpoints["invoice_history"]
    assert state.success and len(state.data.invoices) == 3


def test_a_bug_in_one_poll_fails_that_endpoint_with_reason_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    original = InvoiceHistoryCollector.fetch

    async def buggy(self: InvoiceHistoryCollector, api: Any, previous: Any) -> Any:
        if api.account.id == IDS[1]:
            raise KeyError("oops")
        return await original(self, api, previous)

    monkeypatch.setattr(InvoiceHistoryCollector, "fetch", buggy)
    store = store_for(config())
    assert not poller(config(), invoices_page, store).run_once()
    endpoints = {a: s.endpoints["invoice_history"] for a, s in store.snapshot().accounts.items()}
    assert endpoints[IDS[1]].polled and not endpoints[IDS[1]].success
    assert endpoints[IDS[1]].last_error_reason == "internal"
    assert endpoints[IDS[0]].success and endpoints[IDS[2]].success
    assert store.snapshot().counts[IDS[1]].errors == {"internal": 1}  # counted in api_errors_total too


def run_poller(poller: Poller) -> Callable[[], None]:
    poller.start()
    return lambda: poller.stop(timeout=3)


def test_first_polls_are_immediate_and_later_ones_spread_over_the_interval() -> None:
    starts: dict[str, list[float]] = {}
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            starts.setdefault(request.url.path.split("/")[4], []).append(time.monotonic())
        return invoices_page(request)

    began = time.monotonic()
    stop = run_poller(poller(config(accounts=3, interval=1.5), handler))
    try:
        wait_for(lambda: all(len(starts.get(i, [])) >= 2 for i in IDS[:3]), timeout=10, what="two polls each")
    finally:
        stop()
    assert all(starts[i][0] - began < 1.0 for i in IDS[:3])  # the first poll does not wait for its phase
    second = sorted(starts[i][1] for i in IDS[:3])
    gaps = [b - a for a, b in itertools.pairwise(second)]
    assert all(0.25 < gap < 0.75 for gap in gaps), gaps  # 1.5 s / 3 accounts apart


def test_reload_resizes_concurrency_and_rate_for_polls_in_flight() -> None:
    active = 0
    peak: list[int] = []
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active
        active += 1
        peak.append(active)
        try:
            await asyncio.wait_for(release.wait(), 0.3)
        except TimeoutError:
            pass
        finally:
            active -= 1
        return invoices_page(request)

    polls = poller(config(accounts=6, interval=0.5, concurrency=1, rate=50), handler)
    limiter = polls._limiter
    stop = run_poller(polls)
    try:
        wait_for(lambda: len(peak) >= 3, timeout=10, what="three requests")
        assert max(peak) == 1
        assert polls.http_limits is not None and polls.http_limits.max_connections == 1
        polls.apply(Setup.of(config(accounts=6, interval=0.5, concurrency=3, rate=20)))
        wait_for(lambda: max(peak) == 3, timeout=10, what="three polls at once after the reload")
        # one budget, resized: never two side by side
        assert polls._limiter is limiter and limiter._interval == 1 / 20
        assert polls.http_limits.max_connections == 3
        assert polls._client is not None
        http = polls._client.http
        budget_only = config(accounts=6, interval=0.5, concurrency=3, rate=10)
        polls.apply(Setup.of(dataclasses.replace(budget_only, cloudflare=dataclasses.replace(
            budget_only.cloudflare, timeout=7.0))))
        wait_for(lambda: limiter._interval == 1 / 10, timeout=10, what="the new budget")
        assert polls._client.http is http  # its TLS context and open connections kept
    finally:
        stop()


def test_a_warning_that_stays_the_same_is_said_once_and_again_when_it_changes(
        caplog: pytest.LogCaptureFixture) -> None:
    rules = [{"id": "a", "limit": 1, "window": 60}, {"id": "a", "limit": 2, "window": 60}]

    def gateways(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "result": [{"id": "chat", "spend_limits": {"rules": rules}}],
                                         "result_info": {"page": 1, "per_page": 20, "total_count": 1}})

    cfg = dataclasses.replace(config(accounts=1), collectors=config_with("gateways").collectors)
    polls = poller(cfg, gateways)
    with caplog.at_level("INFO", logger="exporter.poller"):
        assert polls.run_once() and polls.run_once()
        rules.append({"id": "b", "limit": 0, "window": 60})
        assert polls.run_once()
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said == ["poll succeeded, but 1 malformed or repeated gateways or spend-limit rules were left out "
                    "(at most 20 rules per gateway are read)",
                    "poll succeeded, but 2 malformed or repeated gateways or spend-limit rules were left out "
                    "(at most 20 rules per gateway are read)"]
    assert sum(1 for r in caplog.records if r.levelname == "INFO" and getattr(r, "warning", None)) == 1
