"""The background poll loop: which accounts, when, how many at once; results go to the SnapshotStore.

Each account has a fixed phase in the interval (account i of n starts i/n of the way through), so a
thousand accounts make a steady trickle of requests instead of a herd. The first poll of every account is
immediate (paced only by the rate limiter) so that ``/-/ready`` comes soon after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from exporter import __version__
from exporter.client import ApiError, CloudflareClient
from exporter.config import AccountConfig, Config
from exporter.ratelimit import RateLimiter
from exporter.sharding import owned_by
from exporter.snapshot import AccountState, SnapshotStore

log = logging.getLogger("exporter.poller")


class Poller:
    def __init__(self, config: Config, store: SnapshotStore, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport  # the demo's in-process API; None: the network
        self._store = store
        self._limiter = RateLimiter(config.cloudflare.requests_per_second)
        self._discovered: list[AccountConfig] = []
        self._accounts: list[AccountConfig] = []
        self._due: dict[str, float] = {}
        self._phase: dict[str, float] = {}
        self._running: set[str] = set()
        self._epoch = time.monotonic()
        self._next_discovery = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._http: httpx.AsyncClient | None = None
        self._client: CloudflareClient | None = None
        self._rebuild_accounts()

    # --- lifecycle (called from other threads) ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_thread, name="poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.5) -> None:
        loop, task = self._loop, self._main_task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)

    def apply(self, config: Config) -> None:
        """Switch to a new, already validated config without losing any account's data."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._reconfigure(config)
        else:
            loop.call_soon_threadsafe(self._reconfigure, config)

    def run_once(self) -> bool:
        """Poll every account once, as fast as the rate limit allows; True if every poll succeeded."""
        return asyncio.run(self._once())

    # --- the loop ---

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._main_task = loop.create_task(self._main())
            loop.run_until_complete(self._main_task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    def _open(self) -> None:
        cf = self._config.cloudflare
        self._http = httpx.AsyncClient(
            headers={"User-Agent": f"cloudflare-ai-gateway-exporter/{__version__}", "Accept": "application/json"},
            limits=httpx.Limits(max_connections=self._config.poll.max_concurrency),
            timeout=cf.timeout,
            trust_env=self._transport is None,  # no proxy may take the demo's requests away from its transport
            transport=self._transport,
        )
        self._client = CloudflareClient(cf, self._limiter, self._store, self._http)

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._open()
        tasks: set[asyncio.Task[Any]] = set()
        semaphore = asyncio.Semaphore(self._config.poll.max_concurrency)

        def spawn(coro: Coroutine[Any, Any, Any]) -> None:
            task = asyncio.get_running_loop().create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            while True:
                now = time.monotonic()
                if self._config.discovery.enabled and now >= self._next_discovery:
                    self._next_discovery = now + self._config.poll.interval
                    spawn(self._discover())
                for account in self._accounts:
                    if account.id not in self._running and self._due.get(account.id, 0.0) <= now:
                        self._running.add(account.id)
                        spawn(self._scheduled_poll(account, semaphore))
                await self._sleep_until_next(now)
        finally:
            for task in tasks:
                task.cancel()
            if self._http is not None:
                await self._http.aclose()

    async def _sleep_until_next(self, now: float) -> None:
        assert self._wake is not None
        waiting = [self._due.get(a.id, 0.0) for a in self._accounts if a.id not in self._running]
        if self._config.discovery.enabled:
            waiting.append(self._next_discovery)
        timeout = max(0.0, min(waiting) - now) if waiting else None
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _scheduled_poll(self, account: AccountConfig, semaphore: asyncio.Semaphore) -> None:
        try:
            async with semaphore:
                await self.poll_account(account)
        finally:
            self._running.discard(account.id)
            self._due[account.id] = self._next_slot(account.id, time.monotonic())
            if self._wake is not None:
                self._wake.set()

    def _next_slot(self, account_id: str, now: float) -> float:
        interval = self._config.poll.interval
        start = self._epoch + self._phase.get(account_id, 0.0)
        cycles = math.floor((now - start) / interval) + 1
        return start + max(1, cycles) * interval

    async def _once(self) -> bool:
        self._open()
        try:
            discovered = await self._discover() if self._config.discovery.enabled else True
            semaphore = asyncio.Semaphore(self._config.poll.max_concurrency)

            async def bounded(account: AccountConfig) -> bool:
                async with semaphore:
                    return await self.poll_account(account)

            results = await asyncio.gather(*(bounded(a) for a in self._accounts))
            return discovered and all(results)
        finally:
            if self._http is not None:
                await self._http.aclose()

    # --- one account ---

    async def poll_account(self, account: AccountConfig) -> bool:
        assert self._client is not None
        started = time.monotonic()
        try:
            history = await self._client.invoice_history(account)
        except ApiError as err:
            duration = time.monotonic() - started
            reason = err.reason
            self._update(account.id, lambda s: s.after_failure(reason, time.time(), duration))
            log.warning("poll failed", extra={"account": account.name, "account_id": account.id,
                                               "reason": err.reason, "error": str(err),
                                               "duration_seconds": round(duration, 3)})
            return False
        except Exception:  # a bug of ours: keep the loop and the last good data alive, and say so loudly
            duration = time.monotonic() - started
            self._update(account.id, lambda s: s.after_failure("internal", time.time(), duration))
            log.exception("poll crashed", extra={"account": account.name, "account_id": account.id,
                                                  "reason": "internal"})
            return False
        duration = time.monotonic() - started
        self._store.count_invalid_invoices(account.id, history.skipped)
        self._update(account.id, lambda s: s.after_success(history.invoices, time.time(), duration))
        fields: dict[str, Any] = {
            "account": account.name, "account_id": account.id, "invoices": len(history.invoices),
            "unpaid": sum(1 for i in history.invoices if i.unpaid), "pages": history.pages,
            "duration_seconds": round(duration, 3),
        }
        if history.skipped:
            log.warning("poll succeeded, malformed invoices skipped", extra={**fields, "skipped": history.skipped,
                                                                              "reason": "invalid_response"})
        else:
            log.info("poll succeeded", extra=fields)
        return True

    def _update(self, account_id: str, change: Callable[[AccountState], AccountState]) -> None:
        state = self._store.get(account_id)
        if state is not None:
            self._store.put(change(state))

    # --- accounts: listed, discovered, sharded ---

    async def _discover(self) -> bool:
        """Refresh the discovered accounts; on failure keep the previous list and return False."""
        assert self._client is not None
        creds = self._config.cloudflare.credentials
        if creds is None:
            return False
        try:
            found = await self._client.list_accounts(creds)
        except ApiError as err:
            log.warning("account discovery failed", extra={"reason": err.reason, "error": str(err)})
            return False
        discovery = self._config.discovery
        self._discovered = [AccountConfig(account_id, name, "all", creds)
                            for account_id, name in found if discovery.selects(account_id, name)]
        log.info("account discovery succeeded", extra={"found": len(found), "selected": len(self._discovered)})
        self._rebuild_accounts()
        return True

    def _reconfigure(self, config: Config) -> None:
        old = self._config
        self._config = config
        if config.cloudflare.requests_per_second != old.cloudflare.requests_per_second:
            limiter = RateLimiter(config.cloudflare.requests_per_second)
            limiter.pause_until(self._limiter.paused_until)
            self._limiter = limiter
        if not config.discovery.enabled:
            self._discovered = []
        self._next_discovery = 0.0
        if self._http is not None:
            self._client = CloudflareClient(config.cloudflare, self._limiter, self._store, self._http)
        self._rebuild_accounts()
        if self._wake is not None:
            self._wake.set()

    def _rebuild_accounts(self) -> None:
        sharding = self._config.sharding
        listed = {a.id: a for a in self._config.accounts}
        merged = list(listed.values()) + [a for a in self._discovered if a.id not in listed]
        self._accounts = [a for a in merged if owned_by(a.id, sharding.shard, sharding.total_shards)]
        self._store.set_accounts((a.id, a.name) for a in self._accounts)
        count = max(1, len(self._accounts))
        interval = self._config.poll.interval
        floor = len(self._accounts) / self._config.cloudflare.requests_per_second
        if floor > interval:
            log.warning("poll.interval is shorter than one request per account at cloudflare.requests_per_second: "
                        "polls will run late", extra={"accounts": len(self._accounts),
                                                      "min_cycle_seconds": round(floor, 1),
                                                      "interval_seconds": interval})
        self._phase = {a.id: interval * i / count for i, a in enumerate(self._accounts)}
        now = time.monotonic()
        for account in self._accounts:
            state = self._store.get(account.id)
            if state is None or not state.polled:
                self._due.setdefault(account.id, 0.0)
            else:
                self._due[account.id] = min(self._due.get(account.id, now), self._next_slot(account.id, now))
        self._due = {a.id: self._due[a.id] for a in self._accounts if a.id in self._due}
