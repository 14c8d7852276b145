"""``--demo``: the sample accounts (``exporter/samples.py``) polled through every registered collector, answered
in-process by an ``httpx.MockTransport`` (no socket, no thread) from each collector's own sample data and routes
(docs/demo.md). The test fake (tests/fakeapi.py) routes requests the same way, with ``route_for``."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import httpx

from exporter.collectors import REGISTRY
from exporter.collectors.base import Collector, Route, SampleRequest
from exporter.config.load import default_collectors
from exporter.config.model import AccountConfig, CloudflareConfig, Config, Credentials, Inherited, PollConfig
from exporter.samples import DEMO_ACCOUNTS, DEMO_REVOKED_TOKEN, DEMO_TOKEN, envelope, error_envelope

DEMO_BASE_URL = "https://api.cloudflare.invalid/client/v4"  # never resolved: demo_transport answers it
DEMO_POLL_INTERVAL = 30.0
_ACCOUNT_ROUTE_RE = re.compile(r"/accounts/([^/]+)/ai-gateway/(.+)")
Routed = tuple[type[Collector[Any, Any]], Route, str | None]  # collector, route, account id in the path


def _routes() -> dict[str, tuple[type[Collector[Any, Any]], Route]]:
    return {route.path: (collector, route) for collector in REGISTRY for route in collector.routes}


ROUTES = _routes()


def route_for(path: str) -> Routed | None:
    """The collector route answering ``path`` (below the base URL's path), with the account id it names."""
    match = _ACCOUNT_ROUTE_RE.fullmatch(path)
    if match is not None:
        found = ROUTES.get(match.group(2))
        return None if found is None else (*found, match.group(1))
    found = ROUTES.get(path)
    return None if found is None or not path.startswith("/") else (*found, None)


def reply(status: int, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json=body)


def demo_transport(now: float | None = None) -> httpx.MockTransport:
    """Answers the sample accounts in process. ``now`` freezes the clock (tests); by default time passes."""
    started = time.time() if now is None else now
    prefix = httpx.URL(DEMO_BASE_URL).path

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(prefix).rstrip("/")
        routed = route_for(path)
        expected = routed[1].method if routed is not None else "GET"
        known = routed is not None or path == "/accounts" or _ACCOUNT_ROUTE_RE.fullmatch(path) is not None
        if known and request.method != expected:  # the write endpoints (top-up, spending-limit ...) too
            return reply(405, error_envelope(7001, "Method not allowed for this URI"), {"Allow": expected})
        if path != "/accounts" and routed is None:
            return reply(404, error_envelope(7000, "No route for that URI"))
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        account_id = routed[2] if routed is not None else None
        if token == DEMO_REVOKED_TOKEN or account_id == DEMO_ACCOUNTS["legacy"]:
            return reply(403, error_envelope(1000, "Invalid API Token"))
        if token != DEMO_TOKEN:
            return reply(403, error_envelope(10000, "Authentication error"))
        if routed is None:
            listed = [{"id": i, "name": n, "type": "standard"} for n, i in DEMO_ACCOUNTS.items() if n != "legacy"]
            info = {"page": 1, "per_page": 50, "count": len(listed), "total_count": len(listed), "total_pages": 1}
            return reply(200, envelope(listed, info))
        collector, route, account_id = routed
        if account_id is not None and account_id not in DEMO_ACCOUNTS.values():
            return reply(403, error_envelope(9109, "Unauthorized to access requested resource"))
        clock = time.time() if now is None else now

        def sample(of: str) -> Any:
            return collector.sample(of, clock, started) if of in DEMO_ACCOUNTS.values() else None

        query = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        asked = SampleRequest(account_id or "", query, request.content, clock, started, sample)
        status, body = route.answer(sample(account_id) if account_id else None, asked)
        return reply(status, body)

    return httpx.MockTransport(handle)


def demo_config(base_url: str = DEMO_BASE_URL) -> Config:
    """The built-in config of ``--demo``: every sample account, legacy with its revoked token, every collector
    at its demo interval (shorter than the defaults, so a dashboard shows movement within minutes)."""
    accounts = tuple(
        AccountConfig(account_id, name, "all",
                      Credentials(api_token=DEMO_REVOKED_TOKEN if name == "legacy" else DEMO_TOKEN))
        for name, account_id in DEMO_ACCOUNTS.items()
    )
    collectors = default_collectors(Inherited(DEMO_POLL_INTERVAL, 100.0),
                                    **{c.name: {"interval": c.demo_interval} for c in REGISTRY})
    return Config(cloudflare=CloudflareConfig(base_url=base_url, requests_per_second=10, graphql_queries_per_second=10,
                                              max_retries=2, credentials=Credentials(api_token=DEMO_TOKEN)),
                  poll=PollConfig(interval=DEMO_POLL_INTERVAL), accounts=accounts, collectors=collectors)
