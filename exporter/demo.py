"""The ``--demo`` data: six sample accounts in telling states, answered in-process (no socket, no thread).

``demo_transport()`` is an ``httpx.MockTransport`` that speaks the real wire format of the five AI Gateway
billing endpoints, ``topup/config`` and ``GET /accounts`` (see docs/demo.md). The accounts:

- production: all invoices paid, plenty of credit, auto top-up working, a monthly sliding spending limit;
- staging: one fresh open invoice; credits draining toward zero as time passes, no auto top-up;
- research: a declined card; the last auto top-up failed (``topup_config.error``, recent ``lastFailedAt``);
- bulk: 120 invoices over 3 pages in usd and eur; today's spend is 85% of a daily fixed spending limit;
- legacy: a revoked token: every request answers 403, code 1000;
- hobby: no Unified Billing (balance 0, no top-up, no spending limit, no usage, invoice preview 404).

The test fake (tests/fakeapi.py) builds its demo accounts from the same functions, so the two never disagree.
Amounts are in cents, timestamps as the API sends them (usage history and ``lastFailedAt`` in milliseconds).
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

from exporter.config import AccountConfig, CloudflareConfig, CollectorsConfig, Config, Credentials, PollConfig

DEMO_BASE_URL = "https://api.cloudflare.invalid/client/v4"  # never resolved: demo_transport answers it
DEMO_TOKEN = "demo-token-0c4f6a1e9b2d7f35"  # noqa: S105  (valid only against the demo)
DEMO_REVOKED_TOKEN = "demo-revoked-token-7e21b9c0d4a8"  # noqa: S105
DEMO_ACCOUNTS: dict[str, str] = {
    "production": "023e105f4ecef8ad9ca31a8372d0c353",
    "staging": "1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40",
    "research": "6c2f8e1a3b5d7f9e0a4c6e8b1d3f5a72",
    "bulk": "9d4b6f8a0c2e4a6c8e0b2d4f6a8c0e13",
    "legacy": "f0e1d2c3b4a5968778695a4b3c2d1e0f",
    "hobby": "3a5c7e9b1d2f4a6c8e0b2d4f6a8c0e1b",
}
# The read endpoints under /accounts/{id}/ai-gateway/billing/, by path suffix.
ENDPOINTS = {
    "invoice-history": "invoice_history",
    "credit-balance": "credit_balance",
    "spending-limit": "spending_limit",
    "usage-history": "usage_history",
    "invoice-preview": "invoice_preview",
    "topup/config": "topup_config",
}
INVOICE_TYPES = ("auto", "manual", "all")
INVOICE_PER_PAGE_MAX = 100
STAGING_START_BALANCE = 4_500.0  # cents, when the demo starts
STAGING_BURN_PER_SECOND = 0.25  # cents: 9 USD an hour, zero after 5 hours
BULK_DAILY_LIMIT = 50_000.0  # cents
_HOUR, _DAY = 3600.0, 86400.0
DEMO_POLL_INTERVAL = 30.0


@dataclass
class Billing:
    """An account's answers besides invoice history. The defaults are an account without Unified Billing."""

    balance: float = 0.0
    has_default_payment_method: bool = False
    payment_method: dict[str, Any] | None = None
    topup_config: dict[str, Any] | None = None  # the camelCase object as the API sends it
    first_topup_success: bool | None = None  # None: left out of the answer
    spending_limit: dict[str, Any] | None = None  # {amount, duration, strategy}
    spending_limit_enabled: bool = False
    usage: list[tuple[float, float]] = field(default_factory=list)  # (unix seconds, cents): one hour each
    invoice_preview: dict[str, Any] | None = None  # None: nothing upcoming, 404


# ---- wire format (shared with tests/fakeapi.py) -----------------------------------------------------------


def envelope(result: Any, result_info: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def error_envelope(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def topup_config(amount: float | None = None, threshold: float | None = None, *, error: str | None = None,
                 last_failed_at: float | None = None, disabled_reason: str | None = None) -> dict[str, Any]:
    """A ``topup_config`` object; ``last_failed_at`` in unix seconds, sent as milliseconds."""
    failed = None if last_failed_at is None else int(last_failed_at * 1000)
    return {"amount": amount, "threshold": threshold, "disabledReason": disabled_reason, "error": error,
            "lastFailedAt": failed}


def invoice_page(invoices: list[Any], kind: str, page: int, per_page: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result, pagination) of one invoice-history page; malformed entries count as 'auto'."""
    chosen = [e for e in invoices if kind == "all" or _origin(e) == kind]
    start = (page - 1) * per_page
    info = {"has_more": start + per_page < len(chosen), "page": page, "per_page": per_page,
            "total_count": len(chosen)}
    return {"invoices": chosen[start:start + per_page], "pagination": info}, info


def _origin(entry: Any) -> str:
    return "manual" if isinstance(entry, dict) and entry.get("invoice_origin") == "manual" else "auto"


def usage_query(query: dict[str, str]) -> tuple[str, int | None, int | None]:
    """(window, start ms, end ms) of a usage-history query; ValueError with the API's message."""
    window = query.get("value_grouping_window")
    if window not in ("day", "hour"):
        raise ValueError(f"value_grouping_window is required and must be day or hour, got {window!r}")
    bounds = []
    for name in ("start_time", "end_time"):
        raw = query.get(name)
        if raw is not None and not raw.isdigit():
            raise ValueError(f"Invalid value for {name}: {raw!r} is not a time in milliseconds")
        bounds.append(None if raw is None else int(raw))
    if bounds[0] is not None and bounds[1] is not None and bounds[1] < bounds[0]:
        raise ValueError("end_time must not be before start_time")
    return window, bounds[0], bounds[1]


def usage_history(usage: list[tuple[float, float]], window: str, start_ms: int | None,
                  end_ms: int | None) -> dict[str, Any]:
    """Hourly usage summed per UTC hour or day; events in [start, end) only; oldest first."""
    size = _HOUR if window == "hour" else _DAY
    sums: dict[int, float] = {}
    for at, value in usage:
        ms = at * 1000
        if (start_ms is None or ms >= start_ms) and (end_ms is None or ms < end_ms):
            bucket = int(at // size * size)
            sums[bucket] = sums.get(bucket, 0.0) + value
    return {"history": [{"id": f"mtrusg_{window}_{b}", "aggregated_value": round(v, 4),
                         "start_time": b * 1000, "end_time": int(b + size) * 1000}
                        for b, v in sorted(sums.items())]}


def billing_answer(endpoint: str, billing: Billing, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of every read endpoint except invoice history."""
    if endpoint == "credit_balance":
        result: dict[str, Any] = {
            "balance": billing.balance, "has_default_payment_method": billing.has_default_payment_method,
            "payment_method": billing.payment_method, "topup_config": billing.topup_config}
        if billing.first_topup_success is not None:
            result["first_topup_success"] = billing.first_topup_success
        return 200, envelope(result)
    if endpoint == "topup_config":
        return 200, envelope(billing.topup_config)
    if endpoint == "spending_limit":
        return 200, envelope({"config": billing.spending_limit, "enabled": billing.spending_limit_enabled})
    if endpoint == "usage_history":
        try:
            window, start, end = usage_query(query)
        except ValueError as exc:
            return 400, error_envelope(1001, str(exc))
        return 200, envelope(usage_history(billing.usage, window, start, end))
    if endpoint == "invoice_preview":
        if billing.invoice_preview is None:
            return 404, error_envelope(1004, "No upcoming invoice")
        return 200, envelope(billing.invoice_preview)
    raise ValueError(f"unknown endpoint {endpoint!r}")


# ---- the demo data ----------------------------------------------------------------------------------------


def invoice(*, id: str, amount_due: float, amount_paid: float = 0, amount_remaining: float | None = None,
            currency: str = "usd", status: str | None = "open", created: int, attempt_count: int = 0,
            attempted: bool = False, origin: str = "subscription_cycle", created_by: str = "system",
            description: str | None = None, invoice_pdf: str | None = None,
            auto_advance: bool | None = True) -> dict[str, Any]:
    """One wire-format invoice. Amounts are in the smallest currency unit (cents)."""
    if amount_remaining is None:
        amount_remaining = round(amount_due - amount_paid, 6)
    return {"id": id, "amount_due": amount_due, "amount_paid": amount_paid, "amount_remaining": amount_remaining,
            "currency": currency, "status": status, "created": created, "attempt_count": attempt_count,
            "attempted": attempted, "auto_advance": auto_advance, "created_by": created_by,
            "description": description, "invoice_origin": origin, "invoice_pdf": invoice_pdf}


def _invoice(rng: random.Random, now: float, days_ago: float, status: str | None = "paid", *,
             currency: str = "usd", origin: str = "subscription_cycle", attempt_count: int | None = None,
             description: str | None = None) -> dict[str, Any]:
    """A realistic demo invoice; paid ones are paid in full, all others owe everything."""
    invoice_id = "in_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))
    created = int(now - days_ago * _DAY)
    amount = round(rng.uniform(150.0, 9800.0), 2)
    paid, manual = status == "paid", origin == "manual"
    attempts = (1 if paid else 0) if attempt_count is None else attempt_count
    month = time.strftime("%B %Y", time.gmtime(created))
    return invoice(
        id=invoice_id, amount_due=amount, amount_paid=amount if paid else 0, currency=currency, status=status,
        created=created, attempt_count=attempts, attempted=attempts > 0, origin=origin,
        created_by="dashboard" if manual else "system",
        description=description or ("AI Gateway credit top-up" if manual else f"AI Gateway usage, {month}"),
        invoice_pdf=None if status == "draft" else f"https://pay.stripe.com/invoice/acct_1Demo/{invoice_id}/pdf",
        auto_advance=None if manual else status != "draft")


def demo_invoices(now: float) -> dict[str, list[dict[str, Any]]]:
    """Invoice history per account id, newest first, created relative to ``now``; amounts deterministic."""
    rng = random.Random("cloudflare-ai-gateway-exporter demo")

    def monthly(count: int, first_days_ago: float) -> list[dict[str, Any]]:
        return [_invoice(rng, now, first_days_ago + 30 * i) for i in range(count)]

    ids = DEMO_ACCOUNTS
    out = {ids["production"]: monthly(12, 5)}
    out[ids["staging"]] = [_invoice(rng, now, 3, "open", attempt_count=0), *monthly(11, 33)]
    out[ids["research"]] = [
        _invoice(rng, now, 10, "open", attempt_count=1, description="AI Gateway credits, automatic top-up"),
        _invoice(rng, now, 40, "open", attempt_count=3), *monthly(10, 70)]
    odd: dict[int, str | None] = {0: "draft", 1: "open", 7: "open", 22: "open", 30: "void", 61: None,
                                  95: "uncollectible"}
    out[ids["bulk"]] = [
        _invoice(rng, now, 1 + 3 * i, odd.get(i, "paid"), currency="eur" if i % 3 == 2 else "usd",
                 origin="manual" if i % 5 == 4 else "subscription_cycle",
                 attempt_count=4 if odd.get(i) == "uncollectible" else None)
        for i in range(120)]
    out[ids["legacy"]] = monthly(6, 12)
    out[ids["hobby"]] = []
    return out


def _hourly(now: float, per_hour: Callable[[float], float], days: int = 35) -> list[tuple[float, float]]:
    """One usage event per past hour (the current one prorated), ``per_hour(hour_start)`` cents each."""
    first = (now // _HOUR - days * 24) * _HOUR
    events = []
    for hour in range(days * 24 + 1):
        at = first + hour * _HOUR
        share = min(1.0, (now - at) / _HOUR)
        if share > 0:
            events.append((at, round(per_hour(at) * share, 2)))
    return events


def _bulk_usage(now: float) -> list[tuple[float, float]]:
    """Earlier days 60-80% of the daily limit; today exactly 85% of it so far, whatever the hour."""
    midnight = now // _DAY * _DAY
    earlier = _hourly(midnight, lambda at: BULK_DAILY_LIMIT * (0.6 + 0.1 * (at // _DAY % 3)) / 24)
    today = [(midnight + h * _HOUR, min(_HOUR, now - midnight - h * _HOUR))
             for h in range(math.ceil((now - midnight) / _HOUR))]
    elapsed = sum(seconds for _, seconds in today)
    return earlier + [(at, 0.85 * BULK_DAILY_LIMIT * seconds / elapsed) for at, seconds in today]


def _preview(now: float, amount: float, currency: str = "usd", status: str = "draft") -> dict[str, Any]:
    year, month = time.gmtime(now)[:2]
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    line = {"amount": amount, "currency": currency, "description": "AI Gateway credits",
            "period": {"start": start, "end": end}, "pricing": {"unit_amount_decimal": f"{amount:.2f}"},
            "quantity": 1}
    return {"id": f"upcoming_in_{start}", "amount_due": amount, "amount_paid": 0, "amount_remaining": amount,
            "currency": currency, "period_start": start, "period_end": end, "status": status,
            "invoice_lines": [line]}


def demo_billing(account_id: str, now: float, started: float) -> Billing:
    """An account's billing state at ``now``, for a demo that began at ``started`` (staging drains since)."""
    name = {v: k for k, v in DEMO_ACCOUNTS.items()}.get(account_id)
    if name == "production":
        return Billing(182_450.0, True, {"brand": "visa", "last4": "4242"}, topup_config(100_000, 50_000), True,
                       {"amount": 2_000_000, "duration": "monthly", "strategy": "sliding"}, True,
                       _hourly(now, lambda at: 1_200 + 400 * math.sin(at / _DAY * 2 * math.pi)),
                       _preview(now, 100_000))
    if name == "staging":
        balance = max(0.0, STAGING_START_BALANCE - STAGING_BURN_PER_SECOND * (now - started))
        return Billing(round(balance, 2), False, None, topup_config(), True, None, False,
                       _hourly(now, lambda at: STAGING_BURN_PER_SECOND * _HOUR), _preview(now, 2_500, status="open"))
    if name == "research":
        failing = topup_config(50_000, 10_000, error="Your card was declined.", last_failed_at=now - 2 * _HOUR)
        return Billing(3_275.5, True, {"brand": "mastercard", "last4": "0341"}, failing, True, None, False,
                       _hourly(now, lambda at: 150.0), _preview(now, 50_000, status="open"))
    if name == "bulk":
        return Billing(1_265_000.0, True, {"brand": "amex", "last4": "1881"}, topup_config(500_000, 250_000), True,
                       {"amount": BULK_DAILY_LIMIT, "duration": "daily", "strategy": "fixed"}, True,
                       _bulk_usage(now), _preview(now, 120_000, currency="eur"))
    return Billing(first_topup_success=False if name == "hobby" else None)


# ---- the in-process responder and the config ------------------------------------------------------------


def demo_transport(now: float | None = None) -> httpx.MockTransport:
    """Answers the demo accounts in process. ``now`` freezes the clock (tests); by default time passes."""
    started = time.time() if now is None else now
    invoices = demo_invoices(started)
    prefix = httpx.URL(DEMO_BASE_URL).path

    def reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(status, headers=headers, json=body)

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(prefix).rstrip("/")
        parts = path.split("/", 5)  # "", "accounts", id, "ai-gateway", "billing", endpoint
        billing_path = len(parts) == 6 and parts[3:5] == ["ai-gateway", "billing"]
        endpoint = ENDPOINTS.get(parts[5]) if billing_path else None
        if request.method != "GET" and (billing_path or path == "/accounts"):  # the write endpoints too
            return reply(405, error_envelope(7001, "Method not allowed for this URI"), {"Allow": "GET"})
        if path != "/accounts" and endpoint is None:
            return reply(404, error_envelope(7000, "No route for that URI"))
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token == DEMO_REVOKED_TOKEN or (endpoint and parts[2] == DEMO_ACCOUNTS["legacy"]):
            return reply(403, error_envelope(1000, "Invalid API Token"))
        if token != DEMO_TOKEN:
            return reply(403, error_envelope(10000, "Authentication error"))
        query = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        if endpoint is None:
            listed = [{"id": i, "name": n, "type": "standard"} for n, i in DEMO_ACCOUNTS.items() if n != "legacy"]
            info = {"page": 1, "per_page": 50, "count": len(listed), "total_count": len(listed), "total_pages": 1}
            return reply(200, envelope(listed, info))
        if parts[2] not in invoices:
            return reply(403, error_envelope(9109, "Unauthorized to access requested resource"))
        if endpoint == "invoice_history":
            try:
                page, per_page = int(query.get("page", "1")), min(int(query.get("per_page", "50")), 100)
                kind = query.get("type", "all")
                if page < 1 or per_page < 1 or kind not in INVOICE_TYPES:
                    raise ValueError
            except ValueError:
                return reply(400, error_envelope(1001, "Invalid page, per_page or type"))
            result, info = invoice_page(invoices[parts[2]], kind, page, per_page)
            return reply(200, envelope(result, info))
        status, body = billing_answer(endpoint, demo_billing(parts[2], time.time() if now is None else now,
                                                             started), query)
        return reply(status, body)

    return httpx.MockTransport(handle)


def demo_config(base_url: str = DEMO_BASE_URL) -> Config:
    """The built-in config of ``--demo``: every demo account, legacy with its revoked token."""
    accounts = tuple(
        AccountConfig(account_id, name, "all",
                      Credentials(api_token=DEMO_REVOKED_TOKEN if name == "legacy" else DEMO_TOKEN))
        for name, account_id in DEMO_ACCOUNTS.items()
    )
    # Shorter intervals than the defaults, so a dashboard shows movement within minutes: the staging balance
    # every 10 s (its drain has a slope after two polls), everything else every 30 s, the preview every minute.
    defaults = CollectorsConfig.following(DEMO_POLL_INTERVAL, 100.0)
    collectors = dataclasses.replace(
        defaults, credit_balance=dataclasses.replace(defaults.credit_balance, interval=10.0),
        spending_limit=dataclasses.replace(defaults.spending_limit, interval=DEMO_POLL_INTERVAL),
        usage_history=dataclasses.replace(defaults.usage_history, interval=DEMO_POLL_INTERVAL),
        invoice_preview=dataclasses.replace(defaults.invoice_preview, interval=60.0))
    return Config(cloudflare=CloudflareConfig(base_url=base_url, requests_per_second=10, max_retries=2,
                                              credentials=Credentials(api_token=DEMO_TOKEN)),
                  poll=PollConfig(interval=DEMO_POLL_INTERVAL), accounts=accounts, collectors=collectors)
