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
import logging
import math
import os
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal, overload

import httpx

from exporter.config import ACCOUNT_ID_RE, AccountConfig, CloudflareConfig, Credentials
from exporter.ratelimit import MAX_PAUSE, RateLimiter

log = logging.getLogger("exporter.client")
# Errors that more tries cannot fix: a bad or under-privileged credential, or a malformed header.
AUTH_ERROR_CODES = frozenset({1000, 6003, 6111, 6102, 6103, 9103, 9106, 9109, 10000, 10001})
RATE_LIMIT_CODE = 10100
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
MAX_RETRY_AFTER = 60.0  # a longer Retry-After ends the poll; the limiter still holds every account back
BILLING_PATH = "/accounts/{id}/ai-gateway/billing/"
_RATELIMIT_RE = re.compile(r"r=(\d{1,9})(?:.*?;t=(\d{1,9}))?")

# Limits on what one API answer may make the exporter do (docs/limits.md lists them all).
MAX_RESPONSE_BYTES = 2 << 20  # 2 MiB, as received and once decompressed; a page of 1,000 invoices is ~350 kB
MAX_ITEMS_PER_PAGE = 1000  # items in one page (cloudflare.per_page is at most 1,000)
MAX_ITEMS_PER_ACCOUNT = 10_000  # items over all pages of one poll of one account
MAX_ERROR_ENTRIES = 5  # `errors` entries of one answer kept in a message; the rest are counted
MAX_JSON_DEPTH = 32  # nesting of objects and arrays (the billing answers need 5)
MAX_INT_DIGITS = 300  # a longer integer cannot be a float: it is refused like 1e400
MAX_NAME_CHARS = 200  # an account name from discovery is cut to this length
MAX_DISCOVERED_ACCOUNTS = 10_000  # accounts one discovery may list
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class Refused:
    """What a number that cannot be a finite float becomes when an answer is parsed (NaN, Infinity, 1e400,
    a 5,000-digit integer): not a number, so every collector's type check leaves its item out."""

    _instance: Refused | None = None

    def __new__(cls) -> Refused:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<refused non-finite number>"


REFUSED = Refused()


class BadBody(Exception):
    """An answer that cannot be used: too large, bad encoding, not JSON, nested too deeply."""


def _parse_float(text: str) -> float | Refused:
    value = float(text)
    return value if math.isfinite(value) else REFUSED


def _parse_int(text: str) -> int | Refused:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else REFUSED


def _parse_constant(_: str) -> Refused:
    return REFUSED


def _repair(value: Any) -> Any:
    """Lone UTF-16 surrogates (a JSON ``"\\ud800"``) replaced by U+FFFD: such text cannot be encoded."""
    if isinstance(value, str):
        return _SURROGATE_RE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_repair(k): _repair(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repair(v) for v in value]
    return value


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadBody(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def parse_body(data: bytes | bytearray) -> Any:
    """An answer's bytes as JSON, refused or repaired at the edge: text that is not UTF-8 and lone surrogates
    become U+FFFD; non-finite numbers and huge integers become REFUSED; too deep nesting is refused."""
    text = data.decode("utf-8", errors="replace")
    try:
        value = json.loads(text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant)
    except RecursionError:
        raise BadBody(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as err:
        raise BadBody(f"not JSON ({str(err)[:100]})") from None
    if isinstance(value, dict | list):
        _check_depth(value)
    if _SURROGATE_ESCAPE_RE.search(text):
        value = _repair(value)
    return value


async def read_body(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes | bytearray:
    """The body, at most ``limit`` bytes as received and once decompressed; stops reading at the limit,
    and decompresses at most ``limit`` + 1 bytes (a gzip bomb never gets further)."""
    if response.is_stream_consumed:  # built in memory (httpx.MockTransport: tests, the demo): already decoded
        if len(response.content) > limit:
            raise BadBody(f"the answer is {len(response.content):,} bytes, more than the limit of {limit:,}")
        return response.content
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadBody(f"the answer is {int(declared):,} bytes, more than the limit of {limit:,}")
    if encoding in ("", "identity"):
        decompressor = None
    elif encoding in ("gzip", "x-gzip"):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decompressor = zlib.decompressobj()
    else:
        raise BadBody(f"unsupported content-encoding {encoding[:40]!r}")
    out = bytearray()
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > limit:
            raise BadBody(f"the answer is more than {limit:,} bytes, the limit")
        if decompressor is None:
            out += chunk
            continue
        data = chunk
        try:
            while data and not decompressor.eof:
                out += decompressor.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise BadBody(f"the answer decompresses to more than {limit:,} bytes, the limit")
                data = decompressor.unconsumed_tail
        except zlib.error as err:
            raise BadBody(f"the {encoding} body cannot be decompressed ({err})") from None
    return out  # not copied: one body in memory per request in flight


def _connection_message(url: httpx.URL, err: Exception) -> str:
    """Where and why a connection failed: host, port and the system's reason (never a header or token)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    cause: BaseException | None = err
    why = ""
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, OSError) and (cause.errno is not None or cause.strerror):
            text = os.strerror(cause.errno) if cause.errno and cause.errno > 0 else cause.strerror
            why = f"[Errno {cause.errno}] {text}" if cause.errno is not None else str(text)
            break
        cause = cause.__cause__ or cause.__context__
    if not why:
        why = f"{type(err).__name__}: {str(err)[:200]}" if str(err) else type(err).__name__
    if isinstance(err, httpx.ConnectError):
        return f"cannot connect to {url.host}:{port}: {why}"
    return f"connection to {url.host}:{port} failed: {why}"

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
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
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
    errors = errors if isinstance(errors, list) else []
    for err in errors[:MAX_ERROR_ENTRIES]:  # 100,000 entries must not make a 15 MB message
        if isinstance(err, dict):
            code = err.get("code")
            if isinstance(code, int) and not isinstance(code, bool):
                codes.append(code)
            texts.append(f"[{str(code)[:20]}] {str(err.get('message', ''))[:200]}")
    if len(errors) > MAX_ERROR_ENTRIES:
        texts.append(f"and {len(errors) - MAX_ERROR_ENTRIES} more error entries, not shown")
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
                delay = self._backoff(attempt, last.retry_after if last else None)
                log.debug("retrying request", extra={"path": path, "attempt": attempt + 1, "reason": last.reason
                                                     if last else None, "error": str(last) if last else None,
                                                     "delay_seconds": round(delay, 3)})
                await self._sleep(delay)
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
        """One HTTP attempt: connect, headers and the whole body within cloudflare.timeout (a total, not a
        per-read timeout: a body dripped a byte a second fails at the deadline), the body bounded."""
        timeout = self.config.timeout
        url = httpx.URL(self.config.base_url + path)
        status = 0
        try:
            async with asyncio.timeout(timeout):
                async with self.http.stream("GET", url, params=params, timeout=timeout,
                                            headers={**credentials.headers(), "Accept-Encoding": "gzip"}) as response:
                    status = response.status_code
                    raw = await read_body(response)
        except TimeoutError:
            record(str(status) if status else "error", "timeout")
            raise ApiError("timeout", f"no complete answer from {url.host} within {timeout:g}s "
                           "(cloudflare.timeout, for the whole request)", retryable=True) from None
        except httpx.TimeoutException:
            record("error", "timeout")
            raise ApiError("timeout", f"no answer from {url.host} within {timeout:g}s (cloudflare.timeout)",
                           retryable=True) from None
        except BadBody as err:
            record(str(status), "invalid_response")
            raise ApiError("invalid_response", f"HTTP {status}: {err}", status=status) from None
        except httpx.RequestError as err:  # refused, reset, DNS, TLS, a malformed or oversized header...
            record(str(status) if status else "error", "connection")
            raise ApiError("connection", _connection_message(url, err), retryable=True) from None
        code = str(status)
        try:
            body = parse_body(raw)
        except BadBody as err:
            if status < 400:  # an error page (HTML) is judged by its status below
                record(code, "invalid_response")
                raise ApiError("invalid_response", f"HTTP {status}: {err} (content-type "
                               f"{response.headers.get('content-type', 'none')[:80]})", status=status) from None
            body = None
        codes, detail = _envelope_errors(body)
        self._honour_ratelimit_header(response, status == 429 or RATE_LIMIT_CODE in codes)

        def fail(reason: str, message: str, retryable: bool = False, retry_after: float | None = None) -> ApiError:
            record(code, reason)
            return ApiError(reason, message, retryable, retry_after, status, codes)

        if status == 429 or RATE_LIMIT_CODE in codes:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after:
                retry_after = self._pause(retry_after, "retry-after", path)
            raise fail("rate_limited", f"HTTP {status}: rate limited ({detail})", True, retry_after)
        if status >= 500:
            raise fail("server_error", f"HTTP {status} from the API"
                       + (f": {detail}" if body is not None else " (non-JSON body)"), True)
        auth = bool(AUTH_ERROR_CODES.intersection(codes))
        # Only an API envelope can say "not enrolled": a proxy's or WAF's HTML 403/404 is a failure, else it
        # would drop every billing endpoint's last good data as if the account had left the feature.
        if accept_not_enrolled and not auth and isinstance(body, dict) and (
                status in (403, 404) or body.get("success") is False):
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

    def _honour_ratelimit_header(self, response: httpx.Response, limited: bool) -> None:
        """``Ratelimit: "default";r=0;t=N`` pauses every request for N seconds (capped); any other answer that
        is not rate limited ends a pause in force."""
        remaining = parse_ratelimit(response.headers.get("Ratelimit"))
        if remaining is not None and remaining[0] == 0 and remaining[1] > 0:
            self._pause(remaining[1], "ratelimit", str(response.url.path))
        elif not limited and self.limiter.resume():
            log.info("a good answer ended the pause the API asked for")

    def _pause(self, seconds: float, header: str, path: str) -> float:
        applied = self.limiter.pause(seconds, header)
        log.warning("the API asked to pause every request", extra={
            "header": header, "asked_seconds": seconds, "pause_seconds": applied, "path": path,
            **({"capped_at_seconds": MAX_PAUSE} if applied < seconds else {})})
        return applied

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
            if len(result) > MAX_ITEMS_PER_PAGE or len(found) + len(result) > MAX_DISCOVERED_ACCOUNTS:
                raise error("invalid_response", f"GET /accounts: more than {MAX_ITEMS_PER_PAGE:,} accounts in a page "
                            f"or {MAX_DISCOVERED_ACCOUNTS:,} in all, the limits")
            for item in result:
                if isinstance(item, dict) and isinstance(item.get("id"), str) and ACCOUNT_ID_RE.match(item["id"]):
                    name = item.get("name")
                    name = name if isinstance(name, str) and name.strip() else item["id"]
                    found.append((item["id"].lower(), name[:MAX_NAME_CHARS]))
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

    async def get_pages(self, path_suffix: str, params: dict[str, Any], items_key: str,
                        parse: Callable[[Any], Any] | None = None) -> tuple[list[Any], int]:
        """Every page's ``result[items_key]`` items (page/per_page, following ``has_more``), and the page count.
        Guards: at most cloudflare.max_pages pages, no repeated page, no wrong page, no empty page with more,
        at most MAX_ITEMS_PER_PAGE items per page and MAX_ITEMS_PER_ACCOUNT in all. ``parse`` turns each item
        into what is kept, page by page, so a page's raw JSON is never held while the next one is fetched."""
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
            if len(page_items) > MAX_ITEMS_PER_PAGE:
                raise self.fail("invalid_response", f"page {page} has {len(page_items):,} items, more than the "
                                f"limit of {MAX_ITEMS_PER_PAGE:,} per page")
            if len(items) + len(page_items) > MAX_ITEMS_PER_ACCOUNT:
                raise self.fail("invalid_response", f"more than {MAX_ITEMS_PER_ACCOUNT:,} items over {page} pages, "
                                "the limit per account")
            if has_more and not page_items:
                raise self.fail("pagination", f"page {page} is empty but has_more is true")
            fingerprint = _page_fingerprint(page_items)
            if page_items and fingerprint in seen:
                raise self.fail("pagination",
                                f"page {page} repeats an earlier page: the server ignores the page parameter")
            seen.add(fingerprint)
            items.extend(page_items if parse is None else map(parse, page_items))
            del body, page_items  # only what parse kept lives on while the next page is fetched
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
