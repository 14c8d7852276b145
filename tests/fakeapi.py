"""A local fake of the Cloudflare API for AI Gateway billing: test support, not part of the product.

It speaks the real wire format (docs/demo.md describes it) on a loopback port, so the exporter can be tested
against realistic good and bad answers, and users can point an exporter at it to try their alert routing.

Endpoints, under ``BASE_PATH``, all GET (every other method answers 405; the fake records it, so a test can
prove the exporter never writes):

- ``/accounts/{account_id}/ai-gateway/billing/invoice-history?type=&page=&per_page=``
- ``/accounts/{account_id}/ai-gateway/billing/credit-balance``, ``spending-limit``, ``invoice-preview``,
  ``topup/config`` and ``usage-history?value_grouping_window=day|hour&start_time=&end_time=`` (milliseconds)
- ``/accounts?page=&per_page=`` (account discovery)

Typical use in a test::

    with FakeCloudflareAPI() as api:
        api.add_account("023e105f4ecef8ad9ca31a8372d0c353", "production",
                        [invoice(id="in_1", amount_due=1234.5, created=1700000000)])
        api.set_billing("023e105f4ecef8ad9ca31a8372d0c353", balance=5000, has_default_payment_method=True)
        api.inject(None, Fault.server_error(), Fault.rate_limited(retry_after=1))
        api.inject(None, Fault.api_error(1004, "Not found", status=404), endpoint="invoice_preview")
        api.inject(ACCOUNT, Fault.gzip_bomb(), Fault.drip(1.0), Fault.errors_flood())  # hostile answers
        ...  # point the exporter at api.base_url with bearer token "fake-api-token"
        assert [r.status for r in api.requests_for(ACCOUNT, "invoice_history")] == [502, 429, 200]
        assert api.writes() == []

An account's billing state is a ``Billing`` (exporter.demo); its defaults are an account without Unified
Billing (balance 0, no payment method, no top-up config, spending limit null/false, no usage, invoice preview
404). How one request is judged (the first step that objects answers):

1. routing: a non-GET method 405 (7001) on any billing or accounts path, unknown path 404 (7000),
   malformed account id 400 (7003);
2. account endpoints: the account's ``latency``, then the next queued ``Fault`` for that endpoint
   (account-specific before any-account, endpoint-specific before ``endpoint="*"``);
3. rate limit, counted per credential: 429 (10100) with ``Retry-After``;
4. authentication: bad headers 400 (6003), revoked token 403 (1000), unknown token 403 (10000),
   wrong key pair 403 (9103);
5. authorisation: unknown account, or a credential without access to it, 403 (9109);
6. query validation: 400 (1001); then the answer.

Run ``python -m tests.fakeapi --listen 127.0.0.1:8787`` from a checkout to serve the demo accounts until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import re
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from exporter.collectors import REGISTRY
from exporter.collectors.base import Route, SampleRequest
from exporter.collectors.gateway_analytics import SAMPLE_TRAFFIC, Flow
from exporter.collectors.invoice_history import InvoiceSample, invoice, sample_invoices
from exporter.demo import ROUTES, route_for
from exporter.samples import DEMO_ACCOUNTS, DEMO_REVOKED_TOKEN, DEMO_TOKEN
from tests.fakegraphql import AiGatewayRequest, AnalyticsFake

__all__ = [
    "ACCOUNT_PATHS",
    "ANY_ENDPOINT",
    "BASE_PATH",
    "DEMO_ACCOUNTS",
    "DEMO_REVOKED_TOKEN",
    "DEMO_TOKEN",
    "ENDPOINT_NAMES",
    "FakeAccount",
    "FakeCloudflareAPI",
    "Fault",
    "RecordedRequest",
    "demo_api",
    "invoice",
    "main",
]

BASE_PATH = "/client/v4"
ENDPOINT_NAMES = tuple(route.endpoint for _, route in ROUTES.values())  # invoice_history, ..., gateway_analytics
# The REST endpoints under /accounts/{id}/ai-gateway/, by name: their path there.
ACCOUNT_PATHS = {route.endpoint: route.path for _, route in ROUTES.values() if not route.path.startswith("/")}
ANY_ENDPOINT = "*"
SAMPLE_TYPES = {c.name: type(c.sample("", 0.0, 0.0)) for c in REGISTRY}

ACCOUNTS_PER_PAGE_DEFAULT = 20
ACCOUNTS_PER_PAGE_MAX = 50
DEFAULT_RATE_LIMIT = (1200, 300.0)  # Cloudflare's published limit: 1,200 requests per 5 minutes
MAX_REQUEST_BODY = 1 << 20

_ACCOUNT_ID_RE = re.compile(r"[0-9a-f]{32}")
_GATEWAY_PATH_RE = re.compile(r"/accounts/[^/]+/ai-gateway/.+")
_ACCOUNT_IN_PATH_RE = re.compile(re.escape(BASE_PATH) + r"/accounts/([^/]+)")
# What Fault.wrong_shape() sends as ``result`` per endpoint: success true, but a shape no parser may accept.
_WRONG_SHAPES: dict[str, Any] = {
    "credit_balance": {"balance": "plenty", "has_default_payment_method": "yes", "topup_config": []},
    "spending_limit": {"config": "unlimited", "enabled": "sometimes"},
    "usage_history": {"history": "temporarily unavailable"},
    "invoice_preview": ["not", "an", "invoice"],
    "topup_config": "temporarily unavailable",
    "gateways": {"gateways": "temporarily unavailable"},
    "gateway_analytics": None,  # an envelope without GraphQL's data
}


# --------------------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------------------


def default_samples() -> dict[str, Any]:
    """Every collector's sample of an account that uses none of the features (not enrolled, nothing billed)."""
    return {name: kind() for name, kind in SAMPLE_TYPES.items()}


@dataclass
class FakeAccount:
    """One account served by the fake, with its invoices in wire format."""

    id: str
    name: str
    invoices: list[dict[str, Any]]
    token: str | None = None  # if set, only this bearer token (or the global key pair) may read the account
    ignore_page: bool = False  # always answer page 1, whatever ?page= says
    ignore_per_page: bool = False  # always the fake's default_per_page invoices a page, whatever ?per_page= says
    max_per_page: int | None = None  # honours ?per_page= only up to this many invoices
    endless_has_more: bool = False  # has_more is always true; pages past the end are empty
    latency: float = 0.0  # seconds to sleep before answering any of this account's requests
    # Each collector's sample (its endpoint's server-side state) by collector name; default: not enrolled.
    samples: dict[str, Any] = field(default_factory=default_samples)
    live: Callable[[float], dict[str, Any]] | None = None  # if set, samples = live(time.time()) at each request


@dataclass(frozen=True)
class Fault:
    """One queued misbehaviour of an account endpoint, consumed by one request (see FakeCloudflareAPI.inject)."""

    kind: str
    status: int = 200
    code: int = 0
    message: str = ""
    seconds: float = 0.0
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def rate_limited(retry_after: float = 1) -> Fault:
        """HTTP 429, error code 10100, ``Retry-After`` in whole seconds (rounded up)."""
        return Fault("rate_limited", status=429, code=10100, message="Rate limited", seconds=retry_after)

    @staticmethod
    def server_error(status: int = 502) -> Fault:
        """A 5xx with an HTML body, like Cloudflare's own error pages."""
        return Fault("server_error", status=status)

    @staticmethod
    def api_error(code: int = 10000, message: str = "Authentication error", status: int = 200) -> Fault:
        """A ``success: false`` envelope with this code and message, sent with HTTP ``status``."""
        return Fault("api_error", status=status, code=code, message=message)

    @staticmethod
    def delay(seconds: float) -> Fault:
        """Sleep, then answer normally (to trigger client timeouts)."""
        return Fault("delay", seconds=seconds)

    @staticmethod
    def invalid_json() -> Fault:
        """HTTP 200, content-type application/json, but a truncated body that is not JSON."""
        return Fault("invalid_json")

    @staticmethod
    def raw(body: bytes, status: int = 200, **headers: str) -> Fault:
        """Hostile: exactly these body bytes (any JSON, deep nesting, NaN, "\\ud800", raw ED A0 80, ...)."""
        return Fault("raw", status=status, body=body, headers=tuple(headers.items()))

    @staticmethod
    def gzip_bomb(size: int = 1 << 30) -> Fault:
        """Hostile: ``Content-Encoding: gzip``, a body of about 1 MB that decompresses to ``size`` zero bytes."""
        from tests.hostile import gzip_bomb

        return Fault("raw", body=gzip_bomb(size), headers=(("Content-Encoding", "gzip"),))

    @staticmethod
    def drip(seconds_per_byte: float = 1.0) -> Fault:
        """Hostile: a valid answer's body sent one byte every ``seconds_per_byte`` (a per-read timeout never fires)."""
        return Fault("drip", seconds=seconds_per_byte)

    @staticmethod
    def errors_flood(count: int = 100_000) -> Fault:
        """Hostile: ``success: false`` with ``count`` entries in ``errors`` (HTTP 400)."""
        body = json.dumps({"success": False, "errors": [{"code": 7003 + i % 3} for i in range(count)]})
        return Fault("raw", status=400, body=body.encode())

    @staticmethod
    def wrong_shape() -> Fault:
        """HTTP 200 and ``success: true``, but a result no parser may accept (``result.invoices`` a string,
        ``result.history`` a string, ``balance`` a word, ...)."""
        return Fault("wrong_shape")


@dataclass
class RecordedRequest:
    """One request as the fake saw it. ``status`` is 0 while unanswered (or if abandoned by stop())."""

    time: float  # time.monotonic() when received
    method: str
    path: str  # without the query string
    query: dict[str, str]
    auth: str  # "bearer", "key" or "none": what the client presented, valid or not
    account_id: str | None  # the {account_id} path segment, if any
    status: int = 0
    endpoint: str | None = None  # one of ENDPOINT_NAMES, or None (accounts list, unknown or write paths)


# --------------------------------------------------------------------------------------------------------
# Replies and envelopes
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drip: float = 0.0  # seconds between bytes of the body (a hostile slow answer)


@dataclass(frozen=True)
class _Principal:
    """An authenticated credential: a bearer token or the global key pair."""

    kind: str  # "bearer" or "key"
    token: str | None = None


_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    520: "Web Server Returned an Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
}


def _json_reply(status: int, payload: Any) -> _Reply:
    return _Reply(status, json.dumps(payload, default=str).encode())


def _error_reply(status: int, code: int, message: str, chain: list[dict[str, Any]] | None = None) -> _Reply:
    error: dict[str, Any] = {"code": code, "message": message}
    if chain:
        error["error_chain"] = chain
    return _json_reply(status, {"success": False, "errors": [error], "messages": [], "result": None})


def _success(result: Any, result_info: dict[str, Any]) -> _Reply:
    return _json_reply(
        200, {"success": True, "errors": [], "messages": [], "result": result, "result_info": result_info}
    )


def _method_not_allowed(allowed: str = "GET") -> _Reply:
    reply = _error_reply(405, 7001, "Method not allowed for this URI")
    reply.headers["Allow"] = allowed
    return reply


def _html_error(status: int) -> _Reply:
    title = f"{status} {_REASONS.get(status, 'Error')}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
    return _Reply(status, page.encode(), content_type="text/html")


def _bad_headers(code: int, message: str) -> _Reply:
    return _error_reply(400, 6003, "Invalid request headers", [{"code": code, "message": message}])


def _ray_id() -> str:
    return f"{random.getrandbits(64):016x}-SJC"


# --------------------------------------------------------------------------------------------------------
# Request helpers (pure functions)
# --------------------------------------------------------------------------------------------------------


def _auth_kind(headers: dict[str, str]) -> str:
    if headers.get("authorization", "").lower().startswith("bearer"):
        return "bearer"
    if "x-auth-key" in headers or "x-auth-email" in headers:
        return "key"
    return "none"


def _credential_key(headers: dict[str, str], client: str) -> str:
    """What the rate limit counts against: the token, the key pair's e-mail, or the client address."""
    if "authorization" in headers:
        return "auth:" + headers["authorization"]
    if "x-auth-email" in headers or "x-auth-key" in headers:
        return "email:" + headers.get("x-auth-email", "")
    return "anonymous:" + client


def _positive_int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"Invalid value for {name}: {raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"Invalid value for {name}: must be at least 1")
    return value


def _page_params(query: dict[str, str], default: int, cap: int) -> tuple[int, int] | _Reply:
    """(page, per_page) from the query, per_page capped; or a 400 reply."""
    try:
        page = _positive_int(query, "page", 1)
        per_page = min(_positive_int(query, "per_page", default), cap)
    except ValueError as exc:
        return _error_reply(400, 1001, str(exc))
    return page, per_page


def _account_json(account: FakeAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "type": "standard",
        "settings": {
            "enforce_twofactor": False,
            "api_access_enabled": None,
            "access_approval_expiry": None,
            "abuse_contact_email": None,
        },
        "created_on": "2021-06-01T12:00:00.000000Z",
    }


# --------------------------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------------------------


class _RateLimiter:
    """A sliding-window count of admitted requests per credential; refuses only if ``enforce``."""

    def __init__(self, limit: int, window: float, enforce: bool) -> None:
        self.limit = limit
        self.window = window
        self.enforce = enforce
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> tuple[bool, int]:
        """Count one request. Returns (admitted, seconds until a slot frees up)."""
        with self._lock:
            now = time.monotonic()
            hits = self._recent(key, now)
            admitted = not self.enforce or len(hits) < self.limit
            if admitted:
                hits.append(now)
            return admitted, self._reset(hits, now)

    def headers(self, key: str) -> dict[str, str]:
        """The ``Ratelimit`` and ``Ratelimit-Policy`` headers for this credential, as of now."""
        with self._lock:
            now = time.monotonic()
            hits = self._recent(key, now)
            # Not enforcing: never announce an exhausted budget that would not be enforced anyway.
            remaining = max(0, self.limit - len(hits)) if self.enforce else self.limit
            reset = self._reset(hits, now)
        return self.format(remaining, reset)

    def format(self, remaining: int, reset: int) -> dict[str, str]:
        return {
            "Ratelimit": f'"default";r={remaining};t={reset}',
            "Ratelimit-Policy": f'"default";q={self.limit};w={math.ceil(self.window)}',
        }

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def _reset(self, hits: deque[float], now: float) -> int:
        if not hits:
            return math.ceil(self.window)
        return max(1, math.ceil(hits[0] + self.window - now))


# --------------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server that knows its fake, stops at once and can cut its open connections."""

    daemon_threads = True
    block_on_close = False
    timeout = 0  # handle_request() must not wait: serve() calls it only when a connection is pending

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (the exporter refusing a gzip bomb) is no error of the fake's."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def __init__(self, host: str, port: int, api: FakeCloudflareAPI) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api = api
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (socket.getfqdn), which can be slow: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    def serve(self, stopping: threading.Event) -> None:
        """Accept connections until ``stopping`` is set and wake() called. Unlike serve_forever(), whose
        shutdown() waits for the next poll, this stops at once."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not stopping.is_set():
                if any(key.fileobj is self for key, _ in selector.select()):
                    self.handle_request()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut down every open client connection so idle keep-alive handler threads end."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP into calls of FakeCloudflareAPI._dispatch and writes the reply."""

    protocol_version = "HTTP/1.1"
    server_version = "cloudflare"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid a 40 ms delayed-ACK stall

    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        self._server().track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server().track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default one-line-per-request logging to stderr."""

    def do_GET(self) -> None:
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self._server().api._dispatch(self.command, self.path, body, headers, str(self.client_address[0]))
        if reply is None:  # abandoned because the server is stopping
            self.close_connection = True
            return
        self._send(reply)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        """The request body (a GraphQL query), read whole so the next request on a keep-alive connection
        parses."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            return b""
        with contextlib.suppress(ValueError, OSError):
            length = int(self.headers.get("Content-Length", "0"))
            if length > 0:
                return self.rfile.read(min(length, MAX_REQUEST_BODY))
        return b""

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status, _REASONS.get(reply.status))
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD" and reply.drip > 0:
                self.wfile.flush()
                for byte in reply.body:
                    if not self._server().api._sleep(reply.drip):
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            elif self.command != "HEAD":
                self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


# --------------------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------------------


class FakeCloudflareAPI:
    """The fake Cloudflare API server. Configure accounts and faults, then start() it (or use ``with``)."""

    def __init__(
        self,
        *,
        token: str = "fake-api-token",  # noqa: S107  (a fake credential for a fake server)
        api_email: str = "billing@example.com",
        api_key: str = "fake-global-api-key",
        host: str = "127.0.0.1",
        port: int = 0,
        default_per_page: int = 50,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        self.token = token
        self.api_email = api_email
        self.api_key = api_key
        self.host = host
        self.default_per_page = default_per_page
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: list[RecordedRequest] = []
        limit, window = rate_limit or DEFAULT_RATE_LIMIT
        self._limiter = _RateLimiter(limit, window, enforce=rate_limit is not None)
        self._requested_port = port
        self._faults: dict[tuple[str | None, str], deque[Fault]] = {}
        self._revoked: set[str] = set()
        # POST /graphql: executed against the schema (tests/cloudflare_analytics.graphql) over these events
        self.analytics = AnalyticsFake()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- configuration -------------------------------------------------------------------------------

    def add_account(
        self, account_id: str, name: str, invoices: list[dict[str, Any]] | None = None, **kw: Any
    ) -> FakeAccount:
        """Add (or replace) an account; ``kw`` are the other FakeAccount fields (token, latency, ...)."""
        account = FakeAccount(id=account_id, name=name, invoices=list(invoices or []), **kw)
        self.accounts[account_id] = account
        return account

    def inject(self, account_id: str | None, *faults: Fault, endpoint: str = "invoice_history") -> None:
        """Queue faults for the account's next requests of ``endpoint`` (one of ENDPOINT_NAMES, or
        ANY_ENDPOINT for whichever comes first); ``account_id`` None: any account's."""
        if endpoint != ANY_ENDPOINT and endpoint not in ENDPOINT_NAMES:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINT_NAMES} or '*'")
        with self._lock:
            self._faults.setdefault((account_id, endpoint), deque()).extend(faults)

    def set_billing(self, account_id: str, **changes: Any) -> None:
        """Change fields of the account's samples, each in the collector sample that has it (balance,
        has_default_payment_method, payment_method, topup_config, first_topup_success, spending_limit,
        spending_limit_enabled, usage, invoice_preview, gateways ...); the next request sees them. KeyError for
        an unknown account, TypeError for a field no sample has."""
        account = self.accounts[account_id]
        with self._lock:
            for key, value in changes.items():
                owner = next((name for name, sample in account.samples.items() if dataclasses.is_dataclass(sample)
                              and key in {f.name for f in dataclasses.fields(sample)}), None)
                if owner is None:
                    raise TypeError(f"no collector sample has a field {key!r}")
                account.samples[owner] = dataclasses.replace(account.samples[owner], **{key: value})

    def revoke_token(self, token: str) -> None:
        """From now on this token gets 403, code 1000 "Invalid API Token", and so does every bearer
        request for an account whose own ``token`` it is."""
        with self._lock:
            self._revoked.add(token)

    def pay_invoice(self, account_id: str, invoice_id: str) -> None:
        """Mark an invoice paid in full. KeyError if the account or the invoice is unknown."""
        for entry in self.accounts[account_id].invoices:
            if isinstance(entry, dict) and entry.get("id") == invoice_id:
                with self._lock:
                    entry["status"] = "paid"
                    entry["amount_paid"] = entry.get("amount_due", 0)
                    entry["amount_remaining"] = 0
                return
        raise KeyError(f"no invoice {invoice_id!r} in account {account_id!r}")

    def requests_for(self, account_id: str, endpoint: str | None = None) -> list[RecordedRequest]:
        """The recorded requests whose path names this account (and, if given, of this endpoint), in
        arrival order."""
        with self._lock:
            return [r for r in self.requests
                    if r.account_id == account_id and (endpoint is None or r.endpoint == endpoint)]

    def writes(self) -> list[RecordedRequest]:
        """Every recorded request that could change something (all answered 405): a method other than GET,
        besides a GraphQL query's POST. The exporter must make none."""
        with self._lock:
            return [r for r in self.requests if r.method != "GET" and r.endpoint != "gateway_analytics"]

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeCloudflareAPI is already started")
        self._stopping.clear()
        self._server = _Server(self.host, self._requested_port, self)
        self._thread = threading.Thread(
            target=self._server.serve,
            args=(self._stopping,),
            name=f"fake-cloudflare-api:{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and open connections; sleeping handlers are abandoned."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.wake()
        thread.join(timeout=0.5)
        server.server_close()
        server.close_connections()
        self._server = self._thread = None

    def __enter__(self) -> FakeCloudflareAPI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the configured one before start(); RuntimeError if that is 0)."""
        if self._server is not None:
            return self._server.server_port
        if self._requested_port:
            return self._requested_port
        raise RuntimeError("port 0 is chosen at start(): start the fake first")

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{BASE_PATH}"

    # ---- request handling (called from handler threads) --------------------------------------------

    def _dispatch(self, method: str, raw_path: str, body: bytes, headers: dict[str, str],
                  client: str) -> _Reply | None:
        """Answer one request; None means: abandon it (the server is stopping)."""
        parts = urlsplit(raw_path)
        match = _ACCOUNT_IN_PATH_RE.match(parts.path)
        rest = parts.path[len(BASE_PATH) :].rstrip("/") if parts.path.startswith(BASE_PATH + "/") else ""
        routed = route_for(rest)
        record = RecordedRequest(
            time=time.monotonic(),
            method=method,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            auth=_auth_kind(headers),
            account_id=match[1] if match else None,
            endpoint=routed[1].endpoint if routed else None,
        )
        if routed is not None and routed[1].path.startswith("/"):  # GraphQL: the account is in the variables
            record.account_id = _graphql_account(body)
        with self._lock:
            self.requests.append(record)
        reply = self._route(method, record, rest, routed[1] if routed else None, body, headers, client)
        if reply is None:
            return None
        if "Ratelimit" not in reply.headers:
            reply.headers.update(self._limiter.headers(_credential_key(headers, client)))
        reply.headers["cf-ray"] = _ray_id()
        record.status = reply.status
        return reply

    def _route(
        self, method: str, record: RecordedRequest, rest: str, route: Route | None, body: bytes,
        headers: dict[str, str], client: str,
    ) -> _Reply | None:
        expected = route.method if route is not None else "GET"
        known = route is not None or rest == "/accounts" or _GATEWAY_PATH_RE.fullmatch(rest) is not None
        if method != expected and known:
            return _method_not_allowed(expected)  # the write endpoints (topup, spending-limit POST/DELETE...) too
        if rest == "/accounts":
            return self._accounts_list(record.query, headers, client)
        if route is None:
            return _error_reply(404, 7000, "No route for that URI")
        if route.path.startswith("/"):
            return self._graphql(record, body, headers, client)
        account_id = record.account_id or ""
        if not _ACCOUNT_ID_RE.fullmatch(account_id):
            message = f"Could not route to {record.path}, perhaps your object identifier is invalid?"
            return _error_reply(400, 7003, message)
        return self._account_endpoint(account_id, route, record.query, body, headers, client)

    def _account_endpoint(
        self, account_id: str, route: Route, query: dict[str, str], body: bytes, headers: dict[str, str],
        client: str,
    ) -> _Reply | None:
        account = self.accounts.get(account_id)
        if account is not None and account.latency > 0 and not self._sleep(account.latency):
            return None
        fault = self._pop_fault(account_id, route.endpoint)
        if fault is not None and fault.kind not in ("delay", "drip"):
            return self._fault_reply(fault, route.endpoint)
        if fault is not None and fault.kind == "delay" and not self._sleep(fault.seconds):
            return None
        reply = self._answer(account_id, route, query, body, headers, client, account)
        if fault is not None and fault.kind == "drip" and reply is not None:
            reply.drip = fault.seconds
        return reply

    def _answer(self, account_id: str, route: Route, query: dict[str, str], body: bytes, headers: dict[str, str],
                client: str, account: FakeAccount | None) -> _Reply | None:
        principal = self._admit(headers, client)
        if isinstance(principal, _Reply):
            return principal
        denied = self._deny_account(principal, account)
        if denied is not None:
            return denied
        assert account is not None  # _deny_account refuses unknown accounts
        if route.endpoint == "invoice_history":
            return self._invoice_history(account, route, query)
        if account.live is not None:
            fresh = account.live(time.time())
            with self._lock:
                account.samples.update(fresh)
        owner = ROUTES[route.path][0].name
        with self._lock:
            samples = {a.id: a.samples[owner] for a in self.accounts.values()}
            request = SampleRequest(account_id, query, body, time.time(), time.time(), samples.get)
            status, answer = route.answer(samples[account_id], request)
        return _json_reply(status, answer)

    def _graphql(self, record: RecordedRequest, body: bytes, headers: dict[str, str], client: str) -> _Reply | None:
        """POST /graphql: the account's latency and faults as for REST, then the schema-backed answer with the
        accounts this credential may read."""
        account = self.accounts.get(record.account_id or "")
        if account is not None and account.latency > 0 and not self._sleep(account.latency):
            return None
        fault = self._pop_fault(record.account_id or "", "gateway_analytics")
        if fault is not None and fault.kind != "delay":
            return self._fault_reply(fault, "gateway_analytics")
        if fault is not None and not self._sleep(fault.seconds):
            return None
        principal = self._admit(headers, client)
        if isinstance(principal, _Reply):
            return principal
        allowed = {a.id for a in self.accounts.values() if self._deny_account(principal, a) is None}
        status, answer = self.analytics.answer(body, allowed)
        return _json_reply(status, answer)

    def _invoice_history(self, account: FakeAccount, route: Route, query: dict[str, str]) -> _Reply:
        """The invoices' route, but ``default_per_page`` when the query names none, and the account's
        pagination faults (``ignore_page``, ``endless_has_more``)."""
        asked = {"per_page": str(self.default_per_page), **query}
        if account.ignore_page and "page" in asked:
            asked["page"] = "1"
        if account.ignore_per_page:
            asked["per_page"] = str(self.default_per_page)
        if account.max_per_page is not None:
            asked["per_page"] = str(min(int(asked["per_page"]), account.max_per_page))
        with self._lock:
            status, body = route.answer(InvoiceSample(account.invoices),
                                        SampleRequest(account.id, asked, b"", time.time(), time.time(), lambda _: None))
        if status == 200 and account.endless_has_more:
            body["result"]["pagination"]["has_more"] = body["result_info"]["has_more"] = True
        return _json_reply(status, body)

    def _accounts_list(self, query: dict[str, str], headers: dict[str, str], client: str) -> _Reply:
        principal = self._admit(headers, client)
        if isinstance(principal, _Reply):
            return principal
        params = _page_params(query, ACCOUNTS_PER_PAGE_DEFAULT, ACCOUNTS_PER_PAGE_MAX)
        if isinstance(params, _Reply):
            return params
        page, per_page = params
        visible = self._visible_accounts(principal)
        chunk = visible[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(visible),
            "total_pages": math.ceil(len(visible) / per_page),
        }
        return _success([_account_json(a) for a in chunk], info)

    def _fault_reply(self, fault: Fault, endpoint: str) -> _Reply:
        if fault.kind == "rate_limited":
            retry_after = max(0, math.ceil(fault.seconds))
            reply = _error_reply(429, fault.code, fault.message)
            reply.headers.update(self._limiter.format(0, retry_after))
            reply.headers["Retry-After"] = str(retry_after)
            return reply
        if fault.kind == "server_error":
            return _html_error(fault.status)
        if fault.kind == "api_error":
            return _error_reply(fault.status, fault.code, fault.message)
        if fault.kind == "raw":
            return _Reply(fault.status, fault.body, headers=dict(fault.headers))
        if fault.kind == "invalid_json":
            return _Reply(200, b'{"success": true, "errors": [], "result": {"invoices": [{"amount_due": 12')
        if fault.kind == "wrong_shape" and endpoint == "invoice_history":
            pagination = {"has_more": False, "page": 1, "per_page": self.default_per_page, "total_count": 0}
            return _success({"invoices": "temporarily unavailable", "pagination": pagination}, pagination)
        if fault.kind == "wrong_shape":
            return _json_reply(200, {"success": True, "errors": [], "messages": [], "result": _WRONG_SHAPES[endpoint]})
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    # ---- faults, sleeping, auth ------------------------------------------------------------------------

    def _pop_fault(self, account_id: str, endpoint: str) -> Fault | None:
        with self._lock:
            for key in ((account_id, endpoint), (account_id, ANY_ENDPOINT), (None, endpoint), (None, ANY_ENDPOINT)):
                queue = self._faults.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep without blocking stop(); False if the server began stopping meanwhile."""
        return not self._stopping.wait(seconds)

    def _admit(self, headers: dict[str, str], client: str) -> _Principal | _Reply:
        """Rate limit, then authenticate."""
        admitted, retry_after = self._limiter.hit(_credential_key(headers, client))
        if not admitted:
            reply = _error_reply(429, 10100, "Rate limited")
            reply.headers["Retry-After"] = str(retry_after)
            return reply
        return self._authenticate(headers)

    def _authenticate(self, headers: dict[str, str]) -> _Principal | _Reply:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _bad_headers(6111, "Invalid format for Authorization header")
            return self._check_token(token.strip())
        email, key = headers.get("x-auth-email"), headers.get("x-auth-key")
        if key is None:
            return _bad_headers(6103, "Invalid format for X-Auth-Key header")
        if email is None:
            return _bad_headers(6102, "Invalid format for X-Auth-Email header")
        if (email, key) != (self.api_email, self.api_key):
            return _error_reply(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")
        return _Principal("key")

    def _check_token(self, token: str) -> _Principal | _Reply:
        with self._lock:
            revoked = token in self._revoked
        if revoked:
            return _error_reply(403, 1000, "Invalid API Token")
        if token == self.token or any(a.token == token for a in self.accounts.values()):
            return _Principal("bearer", token)
        return _error_reply(403, 10000, "Authentication error")

    def _deny_account(self, principal: _Principal, account: FakeAccount | None) -> _Reply | None:
        """The 403 for an account this credential may not read, or None if it may."""
        if account is not None and principal.kind == "bearer" and account.token is not None:
            with self._lock:
                if account.token in self._revoked:
                    return _error_reply(403, 1000, "Invalid API Token")
        if account is None or not self._may_access(principal, account):
            return _error_reply(403, 9109, "Unauthorized to access requested resource")
        return None

    def _may_access(self, principal: _Principal, account: FakeAccount) -> bool:
        if principal.kind == "key":
            return True
        return principal.token == (account.token or self.token)

    def _visible_accounts(self, principal: _Principal) -> list[FakeAccount]:
        """Accounts GET /accounts lists: global credentials see those without their own token."""
        if principal.kind == "key" or principal.token == self.token:
            return [a for a in self.accounts.values() if a.token is None]
        return [a for a in self.accounts.values() if a.token == principal.token]


# --------------------------------------------------------------------------------------------------------
# The demo data set (from exporter.demo, so the fake and --demo never disagree)
# --------------------------------------------------------------------------------------------------------


def demo_api(*, host: str = "127.0.0.1", port: int = 0, now: float | None = None) -> FakeCloudflareAPI:
    """The demo accounts (DEMO_ACCOUNTS), not started. Invoices are created relative to ``now``. Without
    ``now`` the samples move with the clock (staging's credits drain); with it, they stay as at ``now``."""
    started = time.time() if now is None else now
    api = FakeCloudflareAPI(token=DEMO_TOKEN, host=host, port=port)
    invoices = sample_invoices(started)
    for name, account_id in DEMO_ACCOUNTS.items():

        def live(at: float, account_id: str = account_id) -> dict[str, Any]:
            return {c.name: c.sample(account_id, at if now is None else now, started) for c in REGISTRY}

        token = DEMO_REVOKED_TOKEN if name == "legacy" else None
        api.add_account(account_id, name, invoices[account_id], token=token,
                        samples=live(started), live=live if now is None else None)
        traffic = SAMPLE_TRAFFIC.get(name, ())
        api.analytics.add(account_id, *sample_events(traffic, started - 25 * 3600, started + 24 * 3600))
    api.revoke_token(DEMO_REVOKED_TOKEN)
    return api


# --------------------------------------------------------------------------------------------------------
# Standalone use
# --------------------------------------------------------------------------------------------------------


def sample_events(flows: Iterable[Flow], start: float, end: float) -> list[AiGatewayRequest]:
    """The sample flows as analytics events, one per flow and kind (cached or not, errored or not) and minute
    in [start, end): each minute's counts are whole requests, their sum over any run of minutes within one of the
    flow's rate."""
    events = []
    first = int(start // 60)
    for flow in flows:
        served = 1 - flow.errored
        kinds = [(flow.cached * served, True, False), ((1 - flow.cached) * served, False, False),
                 (flow.errored, False, True)]
        for share, cached, error in kinds:
            rate = flow.per_minute * share
            for m in range(first, int(end // 60)):
                count = math.floor((m + 1) * rate) - math.floor(m * rate)
                if count:
                    events.append(AiGatewayRequest(
                        at=m * 60.0, gateway=flow.gateway, provider=flow.provider, model=flow.model, cached=cached,
                        error=error, rate_limited=flow.rate_limited, wholesale=flow.wholesale,
                        status_code=429 if flow.rate_limited else 200, tokens_in=flow.tokens_in,
                        tokens_out=flow.tokens_out, cost=flow.cost, metadata=flow.metadata, count=count))
    return events


def _graphql_account(body: bytes) -> str | None:
    """The ``accountTag`` variable of a GraphQL request body, if any."""
    try:
        tag = json.loads(body).get("variables", {}).get("accountTag")
    except (ValueError, AttributeError):
        return None
    return tag if isinstance(tag, str) else None


def _parse_listen(address: str) -> tuple[str, int]:
    """'host:port', '[::1]:port' or ':port' (all interfaces) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid listen address {address!r}: expected host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> int:
    """Serve the demo accounts until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakeapi", description="Serve a fake Cloudflare API with demo accounts."
    )
    parser.add_argument("--listen", default="127.0.0.1:8787", help="host:port (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        host, port = _parse_listen(args.listen)
    except ValueError as exc:
        parser.error(str(exc))
    api = demo_api(host=host, port=port)
    try:
        api.start()
    except OSError as exc:
        print(f"cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    print(f"fake Cloudflare API: {api.base_url}")
    print(f"API token: {DEMO_TOKEN}  (revoked token of 'legacy': {DEMO_REVOKED_TOKEN})")
    for name, account_id in DEMO_ACCOUNTS.items():
        print(f"account {name}: {account_id}")
    print("Ctrl-C to stop", flush=True)
    # Ctrl-C stops it even when started from a non-interactive shell's background job, which starts its
    # children with SIGINT ignored (and Python then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:  # short sleeps: a Ctrl-C the kernel hands to a server thread is seen by the next wake-up
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
