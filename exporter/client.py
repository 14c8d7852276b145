"""A pure Cloudflare API client: paced, retried, validated requests. It never touches the store.

Every HTTP attempt passes the shared ``RateLimiter`` and is reported to the caller's ``RequestRecorder``
as ``(code, reason)``; a failure raises ``ApiError`` with the ``api_errors_total`` reason. ``AccountApi``
binds one account and one poll's counts for an endpoint collector (``exporter/collectors``).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal, overload

import httpx

from exporter.config import AccountConfig, CloudflareConfig, Credentials
from exporter.ratelimit import RateLimiter

# Errors that more tries cannot fix: a bad or under-privileged credential, or a malformed header.
AUTH_ERROR_CODES = frozenset({1000, 6003, 6111, 6102, 6103, 9103, 9106, 9109, 10000, 10001})
RATE_LIMIT_CODE = 10100
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
MAX_RETRY_AFTER = 60.0  # a longer Retry-After ends the poll; the limiter still holds every account back
BILLING_PATH = "/accounts/{id}/ai-gateway/billing/"
_RATELIMIT_RE = re.compile(r"r=(\d+)(?:.*?;t=(\d+))?")

RequestRecorder = Callable[[str, "str | None"], None]
"""Called once per HTTP attempt: (HTTP status as str, or "error" when no response came; the
api_errors_total reason when that attempt failed, else None)."""


class ApiError(Exception):
    """A failed request or poll; ``reason`` is the ``api_errors_total`` label, the message is ``str()``."""

    def __init__(self, reason: str, message: str, retryable: bool = False, retry_after: float | None = None,
                 status: int | None = None, codes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.codes = codes


class NotEnrolled(Exception):
    """The API says the account does not use this endpoint's feature (HTTP 404, or 403 / success:false
    without an authentication or rate-limit code). Not an ApiError: the poll is not a failure."""


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
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
    return max(0.0, when.timestamp() - now())


def parse_ratelimit(value: str | None) -> tuple[int, int] | None:
    """``"default";r=50;t=30`` -> (remaining, seconds to reset)."""
    match = _RATELIMIT_RE.search(value or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def _envelope_errors(body: Any) -> tuple[tuple[int, ...], str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    codes: list[int] = []
    texts: list[str] = []
    for err in errors if isinstance(errors, list) else []:
        if isinstance(err, dict):
            code = err.get("code")
            if isinstance(code, int) and not isinstance(code, bool):
                codes.append(code)
            texts.append(f"[{code}] {str(err.get('message', ''))[:200]}")
    return tuple(codes), "; ".join(texts) or "no error detail"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class CloudflareClient:
    def __init__(self, config: CloudflareConfig, limiter: RateLimiter, http: httpx.AsyncClient,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.limiter = limiter
        self.http = http
        self._sleep = sleep
        self._clock = clock

    def reconfigure(self, config: CloudflareConfig, http: httpx.AsyncClient) -> None:
        """A reload: every later attempt, also of polls in flight, uses the new settings and connections."""
        self.config = config
        self.http = http

    async def get(self, path: str, params: dict[str, Any], credentials: Credentials, record: RequestRecorder,
                  accept_not_enrolled: bool = False) -> dict[str, Any]:
        """One JSON envelope with ``success: true``, after retries; else ApiError (or NotEnrolled when
        ``accept_not_enrolled`` and the answer says the account does not use the feature)."""
        last: ApiError | None = None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                await self._sleep(self._backoff(attempt, last.retry_after if last else None))
            await self.limiter.acquire()
            try:
                return await self._attempt(path, params, credentials, record, accept_not_enrolled)
            except ApiError as err:
                last = err
                if not err.retryable or (err.retry_after is not None and err.retry_after > MAX_RETRY_AFTER):
                    raise
        assert last is not None
        raise last

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        return max(delay, retry_after or 0.0)

    async def _attempt(self, path: str, params: dict[str, Any], credentials: Credentials, record: RequestRecorder,
                       accept_not_enrolled: bool) -> dict[str, Any]:
        timeout = self.config.timeout
        try:
            response = await self.http.get(self.config.base_url + path, params=params,
                                           headers=credentials.headers(), timeout=timeout)
        except httpx.TimeoutException:
            record("error", "timeout")
            raise ApiError("timeout", f"no answer within {timeout:g}s", retryable=True) from None
        except httpx.TransportError as err:
            record("error", "connection")
            raise ApiError("connection", f"connection failed: {type(err).__name__}", retryable=True) from None
        status = response.status_code
        code = str(status)
        self._honour_ratelimit_header(response)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        codes, detail = _envelope_errors(body)

        def fail(reason: str, message: str, retryable: bool = False, retry_after: float | None = None) -> ApiError:
            record(code, reason)
            return ApiError(reason, message, retryable, retry_after, status, codes)

        if status == 429 or RATE_LIMIT_CODE in codes:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after:
                self.limiter.pause_until(self._clock() + retry_after)
            raise fail("rate_limited", f"HTTP {status}: rate limited ({detail})", True, retry_after)
        if status >= 500:
            raise fail("server_error", f"HTTP {status} from the API"
                       + (f": {detail}" if body is not None else " (non-JSON body)"), True)
        auth = bool(AUTH_ERROR_CODES.intersection(codes))
        if accept_not_enrolled and not auth and (
                status in (403, 404) or (isinstance(body, dict) and body.get("success") is False)):
            record(code, None)
            raise NotEnrolled(f"HTTP {status}: {detail}")
        if status in (401, 403) or auth:
            raise fail("auth", f"HTTP {status}: {detail}")
        if not isinstance(body, dict):
            raise fail("invalid_response", f"HTTP {status}: body is not a JSON object "
                       f"(content-type {response.headers.get('content-type', 'none')})")
        if body.get("success") is not True or status >= 400:
            raise fail("api_error", f"HTTP {status}: success is not true: {detail}")
        record(code, None)
        return body

    def _honour_ratelimit_header(self, response: httpx.Response) -> None:
        remaining = parse_ratelimit(response.headers.get("Ratelimit"))
        if remaining is not None and remaining[0] == 0 and remaining[1] > 0:
            self.limiter.pause_until(self._clock() + remaining[1])

    async def list_accounts(self, credentials: Credentials, record: RequestRecorder,
                            fail: Callable[[str, str], ApiError] | None = None) -> list[tuple[str, str]]:
        """(id, name) of every account the credentials can see, for discovery. ``fail(reason, message)``
        counts a failure that is not an HTTP attempt's and returns the error to raise."""
        error = fail or ApiError
        found: list[tuple[str, str]] = []
        for page in range(1, self.config.max_pages + 1):
            body = await self.get("/accounts", {"page": page, "per_page": 50}, credentials, record)
            result = body.get("result")
            if not isinstance(result, list):
                raise error("invalid_response", "GET /accounts: result is not a list")
            for item in result:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    found.append((item["id"].lower(), str(item.get("name") or item["id"])))
            info = body.get("result_info") or {}
            total_pages = info.get("total_pages") if isinstance(info, dict) else None
            if not result or not isinstance(total_pages, int) or page >= total_pages:
                return found
        raise error("pagination", f"GET /accounts: more than {self.config.max_pages} pages")


class PollCounts:
    """One poll's request and error counts, written to the store once when the poll ends."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def record(self, code: str, reason: str | None) -> None:
        self.requests[code] += 1
        if reason is not None:
            self.errors[reason] += 1

    def fail(self, reason: str, message: str) -> ApiError:
        self.errors[reason] += 1
        return ApiError(reason, message)


def _page_fingerprint(items: list[Any]) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


class AccountApi:
    """What an endpoint collector's ``fetch()`` gets: the client bound to one account and one poll."""

    def __init__(self, client: CloudflareClient, account: AccountConfig, counts: PollCounts) -> None:
        self.account = account
        self.client = client
        self.counts = counts
        self.pages = 0  # pages fetched by get_pages in this poll, for the log

    def fail(self, reason: str, message: str) -> ApiError:
        """Count ``reason`` in api_errors_total and return the error to raise."""
        return self.counts.fail(reason, message)

    @overload
    async def get(self, path_suffix: str, params: dict[str, Any],
                  accept_not_enrolled: Literal[False] = False) -> dict[str, Any]: ...

    @overload
    async def get(self, path_suffix: str, params: dict[str, Any],
                  accept_not_enrolled: bool) -> dict[str, Any] | None: ...

    async def get(self, path_suffix: str, params: dict[str, Any],
                  accept_not_enrolled: bool = False) -> dict[str, Any] | None:
        """GET ``/accounts/{id}/ai-gateway/billing/<path_suffix>``; None when not enrolled (if accepted)."""
        path = BILLING_PATH.format(id=self.account.id) + path_suffix
        try:
            return await self.client.get(path, params, self.account.credentials, self.counts.record,
                                         accept_not_enrolled)
        except NotEnrolled:
            if accept_not_enrolled:
                return None
            raise

    async def get_pages(self, path_suffix: str, params: dict[str, Any], items_key: str) -> tuple[list[Any], int]:
        """Every page's ``result[items_key]`` items (page/per_page, following ``has_more``), and the page count.
        Guards: at most cloudflare.max_pages pages, no repeated page, no wrong page, no empty page with more."""
        config = self.client.config
        items: list[Any] = []
        seen: set[str] = set()
        page = 1
        while True:
            if page > config.max_pages:
                raise self.fail("pagination", f"still has_more after {config.max_pages} pages (cloudflare.max_pages)")
            query = {**params, "page": page}
            if config.per_page:
                query["per_page"] = config.per_page
            body = await self.get(path_suffix, query)
            page_items, has_more = self._page_contents(body, items_key, page)
            self.pages = page
            if has_more and not page_items:
                raise self.fail("pagination", f"page {page} is empty but has_more is true")
            fingerprint = _page_fingerprint(page_items)
            if page_items and fingerprint in seen:
                raise self.fail("pagination",
                                f"page {page} repeats an earlier page: the server ignores the page parameter")
            seen.add(fingerprint)
            items.extend(page_items)
            if not has_more:
                return items, page
            page += 1

    def _page_contents(self, body: dict[str, Any], items_key: str, page: int) -> tuple[list[Any], bool]:
        result = body.get("result")
        page_items = result.get(items_key) if isinstance(result, dict) else None
        if not isinstance(page_items, list):
            raise self.fail("invalid_response", f"page {page}: result.{items_key} is not a list")
        pagination = result.get("pagination") if isinstance(result, dict) else None
        if not isinstance(pagination, dict):
            pagination = body.get("result_info")
        if pagination is None:
            return page_items, False
        if not isinstance(pagination, dict) or not isinstance(pagination.get("has_more", False), bool):
            raise self.fail("invalid_response", f"page {page}: pagination.has_more is not a boolean")
        served = pagination.get("page")
        if page > 1 and is_number(served) and served not in (0, page):
            raise self.fail("pagination",
                            f"asked for page {page}, got page {served}: the server ignores the page parameter")
        return page_items, bool(pagination.get("has_more", False))
