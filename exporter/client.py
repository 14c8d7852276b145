"""Cloudflare API client: one paced, retried, validated request at a time, and invoice-history pagination.

Every request passes the shared ``RateLimiter``; every response and failure is counted in the
``SnapshotStore`` (``api_requests_total`` by code, ``api_errors_total`` by reason).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from exporter.config import AccountConfig, CloudflareConfig, Credentials
from exporter.ratelimit import RateLimiter
from exporter.snapshot import Invoice, SnapshotStore

# Errors that more tries cannot fix: a bad or under-privileged credential, or a malformed header.
AUTH_ERROR_CODES = frozenset({1000, 6003, 6111, 6102, 6103, 9103, 9106, 9109, 10000, 10001})
RATE_LIMIT_CODE = 10100
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
MAX_RETRY_AFTER = 60.0  # a longer Retry-After ends the poll; the limiter still holds every account back
_RATELIMIT_RE = re.compile(r"r=(\d+)(?:.*?;t=(\d+))?")


class ApiError(Exception):
    """A failed request or poll; ``reason`` is the ``api_errors_total`` label."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class InvoiceHistory:
    invoices: tuple[Invoice, ...]
    pages: int
    skipped: int  # individually malformed invoices left out


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def parse_ratelimit(value: str | None) -> tuple[int, int] | None:
    """``"default";r=50;t=30`` -> (remaining, seconds to reset)."""
    match = _RATELIMIT_RE.search(value or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def _envelope_errors(body: Any) -> tuple[list[int], str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    codes: list[int] = []
    texts: list[str] = []
    for err in errors if isinstance(errors, list) else []:
        if isinstance(err, dict):
            code = err.get("code")
            if isinstance(code, int):
                codes.append(code)
            texts.append(f"[{code}] {str(err.get('message', ''))[:200]}")
    return codes, "; ".join(texts) or "no error detail"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "status": (str,), "attempted": (bool,), "created_by": (str,),
    "invoice_origin": (str,), "invoice_pdf": (str,), "description": (str,), "auto_advance": (bool,),
}


def parse_invoice(raw: Any) -> Invoice | None:
    """One wire invoice -> Invoice, or None when it is malformed (required fields missing or wrong type)."""
    if not isinstance(raw, dict):
        return None
    if not all(_is_number(raw.get(k)) for k in ("amount_due", "amount_paid", "amount_remaining")):
        return None
    currency = raw.get("currency")
    if not isinstance(currency, str) or not currency.strip():
        return None
    for key, types in _OPTIONAL_TYPES.items():
        if raw.get(key) is not None and not isinstance(raw[key], types):
            return None
    for key in ("attempt_count", "created"):
        if raw.get(key) is not None and not _is_number(raw[key]):
            return None
    invoice_id = raw.get("id") or "noid-" + hashlib.sha256(
        json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]
    return Invoice(
        id=invoice_id,
        currency=currency.strip().lower(),
        amount_due=float(raw["amount_due"]),
        amount_paid=float(raw["amount_paid"]),
        amount_remaining=float(raw["amount_remaining"]),
        status=raw.get("status"),
        attempt_count=float(raw["attempt_count"]) if raw.get("attempt_count") is not None else None,
        attempted=raw.get("attempted"),
        created=float(raw["created"]) if raw.get("created") is not None else None,
        created_by=raw.get("created_by"),
        origin=raw.get("invoice_origin"),
        invoice_pdf=raw.get("invoice_pdf"),
    )


def _page_fingerprint(invoices: list[Any]) -> str:
    return hashlib.sha256(json.dumps(invoices, sort_keys=True, default=str).encode()).hexdigest()


class CloudflareClient:
    def __init__(self, config: CloudflareConfig, limiter: RateLimiter, store: SnapshotStore,
                 http: httpx.AsyncClient, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._config = config
        self._limiter = limiter
        self._store = store
        self._http = http
        self._sleep = sleep

    async def get(self, path: str, params: dict[str, Any], credentials: Credentials, account_id: str) -> Any:
        """GET a JSON envelope with retries; return its body or raise ApiError. Counts every attempt."""
        url = self._config.base_url + path
        last: ApiError | None = None
        for attempt in range(self._config.max_retries + 1):
            if attempt:
                await self._sleep(self._backoff(attempt, last.retry_after if last else None))
            await self._limiter.acquire()
            try:
                return await self._attempt(url, params, credentials, account_id)
            except _Retryable as err:
                last = err.error
                if last.retry_after is not None and last.retry_after > MAX_RETRY_AFTER:
                    break
        assert last is not None
        raise last

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        return max(delay, retry_after or 0.0)

    def _fail(self, account_id: str, reason: str, message: str, retry_after: float | None = None,
              retryable: bool = False) -> Exception:
        self._store.count_error(account_id, reason)
        error = ApiError(reason, message, retry_after)
        return _Retryable(error) if retryable else error

    async def _attempt(self, url: str, params: dict[str, Any], credentials: Credentials, account_id: str) -> Any:
        try:
            response = await self._http.get(url, params=params, headers=credentials.headers(),
                                            timeout=self._config.timeout)
        except httpx.TimeoutException:
            self._store.count_request(account_id, "error")
            raise self._fail(account_id, "timeout", f"no answer within {self._config.timeout:g}s",
                             retryable=True) from None
        except httpx.TransportError as err:
            self._store.count_request(account_id, "error")
            raise self._fail(account_id, "connection", f"connection failed: {type(err).__name__}",
                             retryable=True) from None
        status = response.status_code
        self._store.count_request(account_id, str(status))
        self._honour_ratelimit_header(response)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        codes, detail = _envelope_errors(body)
        if status == 429 or RATE_LIMIT_CODE in codes:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after:
                self._limiter.pause_until(time.monotonic() + retry_after)
            raise self._fail(account_id, "rate_limited", f"HTTP {status}: rate limited ({detail})",
                             retry_after=retry_after, retryable=True)
        if status >= 500:
            raise self._fail(account_id, "server_error", f"HTTP {status} from the API"
                             + (f": {detail}" if body is not None else " (non-JSON body)"), retryable=True)
        if status in (401, 403) or AUTH_ERROR_CODES.intersection(codes):
            raise self._fail(account_id, "auth", f"HTTP {status}: {detail}")
        if not isinstance(body, dict):
            raise self._fail(account_id, "invalid_response", f"HTTP {status}: body is not a JSON object "
                             f"(content-type {response.headers.get('content-type', 'none')})")
        if body.get("success") is not True or status >= 400:
            raise self._fail(account_id, "api_error", f"HTTP {status}: success is not true: {detail}")
        return body

    def _honour_ratelimit_header(self, response: httpx.Response) -> None:
        remaining = parse_ratelimit(response.headers.get("Ratelimit"))
        if remaining is not None and remaining[0] == 0 and remaining[1] > 0:
            self._limiter.pause_until(time.monotonic() + remaining[1])

    async def invoice_history(self, account: AccountConfig) -> InvoiceHistory:
        """Every page of the account's invoice history, or ApiError."""
        path = f"/accounts/{account.id}/ai-gateway/billing/invoice-history"
        invoices: list[Invoice] = []
        skipped = 0
        seen_pages: set[str] = set()
        page = 1
        while True:
            if page > self._config.max_pages:
                raise self._fail(account.id, "pagination",
                                 f"still has_more after {self._config.max_pages} pages (cloudflare.max_pages)")
            params: dict[str, Any] = {"type": account.type, "page": page}
            if self._config.per_page:
                params["per_page"] = self._config.per_page
            body = await self.get(path, params, account.credentials, account.id)
            raw_invoices, has_more = self._page_contents(body, account.id, page)
            fingerprint = _page_fingerprint(raw_invoices)
            if has_more and not raw_invoices:
                raise self._fail(account.id, "pagination", f"page {page} is empty but has_more is true")
            if raw_invoices and fingerprint in seen_pages:
                raise self._fail(account.id, "pagination",
                                 f"page {page} repeats an earlier page: the server ignores the page parameter")
            seen_pages.add(fingerprint)
            for raw in raw_invoices:
                parsed = parse_invoice(raw)
                if parsed is None:
                    skipped += 1
                else:
                    invoices.append(parsed)
            if not has_more:
                break
            page += 1
        return InvoiceHistory(tuple(invoices), page, skipped)

    def _page_contents(self, body: dict[str, Any], account_id: str, page: int) -> tuple[list[Any], bool]:
        result = body.get("result")
        raw_invoices = result.get("invoices") if isinstance(result, dict) else None
        if not isinstance(raw_invoices, list):
            raise self._fail(account_id, "invalid_response", f"page {page}: result.invoices is not a list")
        pagination = result.get("pagination") if isinstance(result, dict) else None
        if not isinstance(pagination, dict):
            pagination = body.get("result_info")
        if pagination is None:
            return raw_invoices, False
        if not isinstance(pagination, dict) or not isinstance(pagination.get("has_more", False), bool):
            raise self._fail(account_id, "invalid_response", f"page {page}: pagination.has_more is not a boolean")
        served = pagination.get("page")
        if page > 1 and _is_number(served) and served not in (0, page):
            raise self._fail(account_id, "pagination",
                             f"asked for page {page}, got page {served}: the server ignores the page parameter")
        return raw_invoices, bool(pagination.get("has_more", False))

    async def list_accounts(self, credentials: Credentials) -> list[tuple[str, str]]:
        """(id, name) of every account the credentials can see, for discovery."""
        found: list[tuple[str, str]] = []
        page = 1
        while page <= self._config.max_pages:
            body = await self.get("/accounts", {"page": page, "per_page": 50}, credentials, "")
            result = body.get("result")
            if not isinstance(result, list):
                raise self._fail("", "invalid_response", "GET /accounts: result is not a list")
            for item in result:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    found.append((item["id"].lower(), str(item.get("name") or item["id"])))
            info = body.get("result_info") or {}
            total_pages = info.get("total_pages") if isinstance(info, dict) else None
            if not result or not isinstance(total_pages, int) or page >= total_pages:
                return found
            page += 1
        raise self._fail("", "pagination", f"GET /accounts: more than {self._config.max_pages} pages")


class _Retryable(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error
