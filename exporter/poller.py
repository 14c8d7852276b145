"""The background poll loop: which (account, endpoint) pairs, when, how many at once.

Each endpoint has its own interval; pair i of n of an endpoint starts i/n of the way through it, so a
thousand accounts make a steady trickle of requests instead of a herd. The first poll of every pair is
immediate (paced only by the rate limiter) so that ``/-/ready`` comes soon after start. One concurrency
gate, one rate limiter and one HTTP client serve every pair; a reload resizes them in place, so polls in
flight follow the new budget. Each poll ends in one store write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import httpx

from exporter import __version__
from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.client import CloudflareClient
from exporter.cloudflare.errors import ApiError, PollCounts
from exporter.collectors import base
from exporter.collectors.base import Collector
from exporter.config.model import AccountConfig
from exporter.ratelimit import RateLimiter
from exporter.sharding import shard_of
from exporter.snapshot import Setup, SnapshotStore

log = logging.getLogger("exporter.poller")
BUDGET_WINDOW = 300.0  # Cloudflare counts requests per 5 minutes
CLOUDFLARE_LIMIT_PER_5M = 1200  # per user, across all of that user's tokens
GRAPHQL_LIMIT_PER_5M = 300
Key = tuple[str, str]  # (account_id, endpoint)
Pair = tuple[AccountConfig, Collector[Any, Any]]


def request_budget(collectors: Iterable[Collector[Any, Any]], accounts: int, graphql: bool = False
                   ) -> dict[str, float]:
    """Requests (or GraphQL queries) per 5 minutes each collector needs for ``accounts`` accounts at its
    interval (per poll x accounts x 300 s / interval; a multi-page invoice history needs more)."""
    return {c.name: (c.graphql_per_poll if graphql else c.requests_per_poll()) * accounts * BUDGET_WINDOW
            / c.settings.interval for c in collectors}


class Gate:
    """A semaphore whose size can change: a reload's poll.max_concurrency applies to waiting polls too."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def __aexit__(self, *_: object) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()

    async def resize(self, limit: int) -> None:
        async with self._cond:
            self.limit = limit
            self._cond.notify_all()


class Poller:
    def __init__(self, setup: Setup, store: SnapshotStore,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._setup = setup
        self._config = setup.config
        self._store = store
        self._transport = transport  # the demo's in-process API; None: the network
        self._limiter = RateLimiter(self._config.cloudflare.requests_per_second)
        self._graphql_limiter = RateLimiter(self._config.cloudflare.graphql_queries_per_second)
        self._discovered: list[AccountConfig] = []
        self._accounts: list[AccountConfig] = []
        self._due: dict[Key, float] = {}
        self._phase: dict[Key, float] = {}
        self._running: set[Key] = set()
        self._warned: dict[Key, str] = {}  # the last warning said for each poll; said again only when it changes
        self._epoch = time.monotonic()
        self._next_discovery = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._gate: Gate | None = None
        self._client: CloudflareClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.http_limits: httpx.Limits | None = None
        self._budget_warned: tuple[float, ...] | None = None
        self.discovered_ok = True  # the last discovery (if enabled) succeeded
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

    def apply(self, setup: Setup) -> None:
        """Switch to a new, already validated config without losing any account's data."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._reconfigure(setup)
        else:
            loop.call_soon_threadsafe(self._reconfigure, setup)

    def next_polls(self) -> dict[Key, float | None]:
        """When each (account, endpoint) pair polls next, Unix time (None: its poll is running now).

        A read-only copy of the loop's own schedule, for the status page; empty while the loop is not running
        (``--once``). Copying a dict or set is atomic under the GIL, so another thread may call this."""
        if self._loop is None or self._loop.is_closed():
            return {}
        running = set(self._running)
        due = dict(self._due)
        offset = time.time() - time.monotonic()
        return {key: None if key in running else at + offset for key, at in due.items()}

    def run_once(self) -> bool:
        """Poll every pair once, as fast as the rate limit allows; True if every poll succeeded."""
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

    def _new_http(self) -> httpx.AsyncClient:
        self.http_limits = httpx.Limits(max_connections=self._config.poll.max_concurrency)
        return httpx.AsyncClient(
            headers={"User-Agent": f"cloudflare-ai-gateway-exporter/{__version__}", "Accept": "application/json"},
            limits=self.http_limits, timeout=self._config.cloudflare.timeout,
            trust_env=self._transport is None,  # no proxy may take the demo's requests away from its transport
            transport=self._transport)

    def _open(self) -> None:
        self._gate = Gate(self._config.poll.max_concurrency)
        self._client = CloudflareClient(self._config.cloudflare, self._limiter, self._new_http(),
                                        graphql_limiter=self._graphql_limiter)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self._open()
        try:
            while True:
                now = time.monotonic()
                if self._config.discovery.enabled and now >= self._next_discovery:
                    self._next_discovery = now + self._config.poll.interval
                    self._spawn(self._discover())
                for account, collector in self._pairs():
                    key = (account.id, collector.name)
                    if key not in self._running and self._due.get(key, 0.0) <= now:
                        self._running.add(key)
                        self._spawn(self._scheduled_poll(account, collector))
                await self._sleep_until_next(now)
        finally:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=0.5)
            if self._client is not None:
                await self._client.http.aclose()

    def _pairs(self) -> list[Pair]:
        return [(a, c) for c in self._setup.collectors.values() for a in self._accounts]

    async def _sleep_until_next(self, now: float) -> None:
        assert self._wake is not None
        waiting = [self._due.get((a.id, c.name), 0.0) for a, c in self._pairs()
                   if (a.id, c.name) not in self._running]
        if self._config.discovery.enabled:
            waiting.append(self._next_discovery)
        timeout = max(0.0, min(waiting) - now) if waiting else None
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _scheduled_poll(self, account: AccountConfig, collector: Collector[Any, Any]) -> None:
        key = (account.id, collector.name)
        try:
            await self.poll(account, collector)
        finally:
            self._running.discard(key)
            self._due[key] = self._next_slot(key, time.monotonic())
            if self._wake is not None:
                self._wake.set()

    def _interval(self, endpoint: str) -> float:
        interval: float = self._setup.collectors[endpoint].settings.interval
        return interval

    def _next_slot(self, key: Key, now: float) -> float:
        interval = self._interval(key[1])
        start = self._epoch + self._phase.get(key, 0.0)
        cycles = math.floor((now - start) / interval) + 1
        return start + max(1, cycles) * interval

    async def _once(self) -> bool:
        self._open()
        assert self._client is not None
        try:
            discovered = await self._discover() if self._config.discovery.enabled else True
            self.discovered_ok = discovered
            results = await asyncio.gather(*(self.poll(a, c) for a, c in self._pairs()))
            return discovered and all(results)
        finally:
            await self._client.http.aclose()

    # --- one poll of one (account, endpoint) ---

    async def poll(self, account: AccountConfig, collector: Collector[Any, Any]) -> bool:
        assert self._client is not None and self._gate is not None
        async with self._gate:
            counts = PollCounts()
            started = time.monotonic()
            fields: dict[str, Any] = {"account": account.name, "account_id": account.id, "endpoint": collector.name}
            state = self._store.get(account.id)
            previous = state.endpoints[collector.name].data if state and collector.name in state.endpoints else None
            try:
                fetched = await base.fetch(collector, AccountApi(self._client, account, counts), previous)
            except Exception as err:  # an ApiError, or a bug of ours: keep the loop and the last good data
                duration = time.monotonic() - started
                reason = err.reason if isinstance(err, ApiError) else "internal"
                if not isinstance(err, ApiError):
                    counts.errors["internal"] += 1  # a bug of ours: counted too, never a silent failure
                message = str(err) if isinstance(err, ApiError) else f"{type(err).__name__} (a bug: see the log)"
                self._store.record_poll(account.id, collector.name,
                                        lambda s: s.after_failure(reason, message, time.time(), duration), counts)
                fields.update(reason=reason, duration_seconds=round(duration, 3))
                if isinstance(err, ApiError):
                    log.warning("poll failed", extra={**fields, "error": message})
                else:
                    log.exception("poll crashed", extra=fields)
                return False
            duration = time.monotonic() - started
            self._store.record_poll(account.id, collector.name,
                                    lambda s: s.after_success(fetched.data, fetched.enrolled, time.time(), duration),
                                    counts, fetched.skipped)
            fields.update(fetched.summary, enrolled=fetched.enrolled, duration_seconds=round(duration, 3))
            if fetched.skipped:
                log.warning("poll succeeded, malformed or duplicate items left out",
                            extra={**fields, "skipped": fetched.skipped, "reason": "invalid_response"})
            elif fetched.warning and self._warned.get((account.id, collector.name)) != fetched.warning:
                log.warning(f"poll succeeded, but {fetched.warning}", extra=fields)
            elif fetched.warning:
                log.info("poll succeeded", extra={**fields, "warning": fetched.warning})
            else:
                log.info("poll succeeded", extra=fields)
            if fetched.warning:
                self._warned[(account.id, collector.name)] = fetched.warning
            else:
                self._warned.pop((account.id, collector.name), None)
            return True

    # --- accounts: listed, discovered, sharded ---

    async def _discover(self) -> bool:
        """Refresh the discovered accounts; on failure keep the previous list and return False."""
        assert self._client is not None
        creds = self._config.cloudflare.credentials
        if creds is None:
            return False
        counts = PollCounts()
        try:
            found = await self._client.list_accounts(creds, counts)
        except ApiError as err:
            log.warning("account discovery failed", extra={"reason": err.reason, "error": str(err)})
            return False
        finally:
            self._store.record_poll("", "discovery", None, counts)
        discovery = self._config.discovery
        self._discovered = [AccountConfig(account_id, name, "all", creds)
                            for account_id, name in found if discovery.selects(account_id, name)]
        log.info("account discovery succeeded", extra={"found": len(found), "selected": len(self._discovered)})
        self._warn_duplicate_names()
        self._rebuild_accounts()
        return True

    def _warn_duplicate_names(self) -> None:
        """A discovered account named like another account (configured or discovered): its ``account`` label
        is ambiguous; the ``account_id`` label still tells them apart. Warned at every discovery."""
        listed = {a.id for a in self._config.accounts}
        names: dict[str, list[str]] = {}
        for account in [*self._config.accounts, *(a for a in self._discovered if a.id not in listed)]:
            names.setdefault(account.name, []).append(account.id)
        for name, ids in names.items():
            if len(ids) > 1:
                log.warning("accounts share a name: the account label is ambiguous, use account_id to tell them "
                            "apart (or give the configured account another name)",
                            extra={"account": name, "account_ids": ",".join(ids)})

    def _reconfigure(self, setup: Setup) -> None:
        old, config = self._config, setup.config
        self._setup, self._config = setup, config
        self._limiter.set_rate(config.cloudflare.requests_per_second)  # the one budget, resized in place
        self._graphql_limiter.set_rate(config.cloudflare.graphql_queries_per_second)
        self._limiter.cap_pause()  # a pause the API asked for stays, never longer than ratelimit.MAX_PAUSE
        if not config.discovery.enabled:
            self._discovered = []
        self._next_discovery = 0.0
        if self._client is not None:
            http = self._client.http
            # The connection limit is the HTTP client's; everything else (budget, timeout, retries, token, base
            # URL) is applied per request, so the client, its TLS context and its open connections stay.
            if config.poll.max_concurrency != old.poll.max_concurrency:
                http = self._new_http()
                self._spawn(self._close_later(self._client.http, old.cloudflare.timeout + 1.0))
            self._client.reconfigure(config.cloudflare, http)
        if self._gate is not None:
            self._spawn(self._gate.resize(config.poll.max_concurrency))
        self._rebuild_accounts()
        if self._wake is not None:
            self._wake.set()

    @staticmethod
    async def _close_later(http: httpx.AsyncClient, delay: float) -> None:
        """Requests in flight on the old connections end within a timeout; then close them."""
        try:
            await asyncio.sleep(delay)
        finally:
            await http.aclose()

    def _check_budget(self) -> None:
        """Warn, with the numbers, when the enabled collectors need more requests than the budget allows."""
        collectors = self._setup.collectors.values()
        need = request_budget(collectors, len(self._accounts))
        queries = sum(request_budget(collectors, len(self._accounts), graphql=True).values())
        total = sum(need.values())
        budget = self._config.cloudflare.requests_per_second * BUDGET_WINDOW
        key = (round(total, 1), budget, round(queries, 1), self._config.cloudflare.graphql_queries_per_second)
        if key == self._budget_warned:
            return
        self._budget_warned = key
        graphql_budget = self._config.cloudflare.graphql_queries_per_second * BUDGET_WINDOW
        if queries > min(graphql_budget, GRAPHQL_LIMIT_PER_5M):
            intervals = " or ".join(f"collectors.{c.name}.interval" for c in collectors if c.graphql_per_poll)
            log.warning("the enabled collectors need more GraphQL queries per 5 minutes than "
                        "cloudflare.graphql_queries_per_second allows or Cloudflare's quota of 300 per user: their "
                        f"polls will run late; lengthen {intervals} or shard the accounts",
                        extra={"accounts": len(self._accounts), "graphql_per_5m_needed": round(queries, 1),
                               "graphql_per_5m_budget": round(graphql_budget, 1),
                               "graphql_per_5m_cloudflare_default": GRAPHQL_LIMIT_PER_5M})
        fields: dict[str, Any] = {
            "accounts": len(self._accounts), "requests_per_5m_needed": round(total, 1),
            "requests_per_5m_budget": round(budget, 1),
            "per_collector": ",".join(f"{e}={n:g}" for e, n in need.items())}
        if total > budget:
            log.warning("the enabled collectors need more requests per 5 minutes than cloudflare.requests_per_second "
                        "allows: polls will run late; lengthen collectors.<name>.interval, turn collectors off or "
                        "shard the accounts", extra=fields)
        if total > CLOUDFLARE_LIMIT_PER_5M:
            log.warning("the enabled collectors need more than Cloudflare's 1,200 requests per 5 minutes per user "
                        "(shared by all of that user's tokens and the dashboard): expect HTTP 429",
                        extra={**fields, "cloudflare_limit_per_5m": CLOUDFLARE_LIMIT_PER_5M})

    def _rebuild_accounts(self) -> None:
        sharding = self._config.sharding
        listed = {a.id: a for a in self._config.accounts}
        merged = list(listed.values()) + [a for a in self._discovered if a.id not in listed]
        self._accounts = [a for a in merged if shard_of(a.id, sharding.total_shards) == sharding.shard]
        endpoints = list(self._setup.collectors)
        self._store.set_accounts(((a.id, a.name) for a in self._accounts), endpoints)
        count = max(1, len(self._accounts))
        self._check_budget()
        # Account i of n starts i/n into each interval; its collectors are spread a further 1/n apart among
        # themselves, so no two (account, endpoint) pairs of one interval length start together.
        width = max(1, len(endpoints))
        self._phase = {(a.id, e): self._interval(e) * (i + j / width) / count
                       for j, e in enumerate(endpoints) for i, a in enumerate(self._accounts)}
        now = time.monotonic()
        for account in self._accounts:
            state = self._store.get(account.id)
            for endpoint in endpoints:
                key = (account.id, endpoint)
                endpoint_state = state.endpoints.get(endpoint) if state is not None else None
                if endpoint_state is None or not endpoint_state.polled:
                    self._due.setdefault(key, 0.0)
                else:
                    self._due[key] = min(self._due.get(key, now), self._next_slot(key, now))
        self._due = {k: v for k, v in self._due.items() if k in self._phase}
        self._warned = {k: v for k, v in self._warned.items() if k in self._phase}
