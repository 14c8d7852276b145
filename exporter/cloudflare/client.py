"""Paced, retried, validated requests to the Cloudflare API.

Every HTTP attempt passes the shared ``RateLimiter`` and is reported to the caller's ``RequestRecorder`` as
``(code, reason)``; a failure raises ``ApiError`` with the ``api_errors_total`` reason. REST answers are judged
by their envelope (``success``, ``errors[].code``), GraphQL answers by ``graphql.judge``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from exporter.cloudflare import graphql
from exporter.cloudflare.body import MAX_GRAPHQL_RESPONSE_BYTES, MAX_RESPONSE_BYTES, BadBody, parse_body, read_body
from exporter.cloudflare.errors import ApiError, NotEnrolled, Recorder
from exporter.config.model import CloudflareConfig, Credentials
from exporter.config.values import ACCOUNT_ID_RE
from exporter.ratelimit import MAX_PAUSE, RateLimiter

log = logging.getLogger("exporter.client")
# Errors that more tries cannot fix: a bad or under-privileged credential, or a malformed header.
AUTH_ERROR_CODES = frozenset({1000, 6003, 6111, 6102, 6103, 9103, 9106, 9109, 10000, 10001})
RATE_LIMIT_CODE = 10100
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
MAX_RETRY_AFTER = 60.0  # a longer Retry-After ends the poll; the limiter still holds every account back
MAX_ERROR_ENTRIES = 5  # `errors` entries of one answer kept in a message; the rest are counted
MAX_ITEMS_PER_PAGE = 1000  # items in one page (cloudflare.per_page is at most 1,000)
MAX_NAME_CHARS = 200  # an account name from discovery is cut to this length
MAX_DISCOVERED_ACCOUNTS = 10_000  # accounts one discovery may list
_RATELIMIT_RE = re.compile(r"r=(\d{1,9})(?:.*?;t=(\d{1,9}))?")

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


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, its body read within the limits: ``body`` is the JSON, or None when it was not JSON
    (an error page), which the status then judges."""

    status: int
    headers: httpx.Headers
    body: Any
    path: str

    def failure(self, counts: Recorder, reason: str, message: str, retryable: bool = False,
                retry_after: float | None = None, codes: tuple[int, ...] = ()) -> ApiError:
        counts.record(str(self.status), reason)
        return ApiError(reason, message, retryable, retry_after, self.status, codes)


class CloudflareClient:
    def __init__(self, config: CloudflareConfig, limiter: RateLimiter, http: httpx.AsyncClient,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 graphql_limiter: RateLimiter | None = None) -> None:
        self.config = config
        self.limiter = limiter
        self.graphql_limiter = graphql_limiter or RateLimiter(config.graphql_queries_per_second)
        self.http = http
        self._sleep = sleep

    def reconfigure(self, config: CloudflareConfig, http: httpx.AsyncClient) -> None:
        """A reload: every later attempt, also of polls in flight, uses the new settings and connections."""
        self.config = config
        self.http = http

    async def get(self, path: str, params: dict[str, Any], credentials: Credentials, counts: Recorder,
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
                answer = await self._exchange("GET", path, credentials, counts, params=params)
                return self._judge_rest(answer, counts, accept_not_enrolled)
            except ApiError as err:
                last = err
                if not err.retryable or (err.retry_after is not None and err.retry_after > MAX_RETRY_AFTER):
                    raise
        assert last is not None
        raise last

    async def graphql(self, document: str, variables: dict[str, Any], credentials: Credentials,
                      counts: Recorder) -> dict[str, Any]:
        """``POST /graphql`` once, never retried (a collector sends at most one query per account per poll, and
        the next poll asks again), paced within the GraphQL quota, which Cloudflare counts apart from the REST
        budget; its ``data`` object."""
        await self.graphql_limiter.acquire()
        answer = await self._exchange("POST", "/graphql", credentials, counts,
                                      json={"query": document, "variables": variables},
                                      limit=MAX_GRAPHQL_RESPONSE_BYTES)
        judged = graphql.judge(answer.status, answer.body)
        if isinstance(judged, graphql.Refusal):
            if judged.pause:  # the GraphQL quota is the user's, apart from REST: only GraphQL queries wait
                asked = parse_retry_after(answer.headers.get("Retry-After")) or judged.pause
                applied = self.graphql_limiter.pause(asked)
                counts.pause("graphql")
                log.warning("the GraphQL API asked to pause queries", extra={
                    "asked_seconds": asked, "pause_seconds": applied})
            raise answer.failure(counts, judged.reason, judged.message)
        counts.record(str(answer.status), None)
        return judged

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None) -> float:
        delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        return max(delay, retry_after or 0.0)

    async def _exchange(self, method: str, path: str, credentials: Credentials, counts: Recorder,
                        params: dict[str, Any] | None = None, json: Any = None,
                        limit: int = MAX_RESPONSE_BYTES) -> Answer:
        """One HTTP attempt: connect, headers and the whole body within cloudflare.timeout (a total, not a
        per-read timeout: a body dripped a byte a second fails at the deadline), the body bounded."""
        timeout = self.config.timeout
        url = httpx.URL(self.config.base_url + path)
        status = 0
        headers = {**credentials.headers(), "Accept-Encoding": "gzip"}
        try:
            async with asyncio.timeout(timeout):
                async with self.http.stream(method, url, params=params, json=json, timeout=timeout,
                                            headers=headers) as response:
                    status = response.status_code
                    raw = await read_body(response, limit)
        except TimeoutError:
            counts.record(str(status) if status else "error", "timeout")
            raise ApiError("timeout", f"no complete answer from {url.host} within {timeout:g}s "
                           "(cloudflare.timeout, for the whole request)", retryable=True) from None
        except httpx.TimeoutException:
            counts.record("error", "timeout")
            raise ApiError("timeout", f"no answer from {url.host} within {timeout:g}s (cloudflare.timeout)",
                           retryable=True) from None
        except BadBody as err:
            counts.record(str(status), "invalid_response")
            raise ApiError("invalid_response", f"HTTP {status}: {err}", status=status) from None
        except httpx.RequestError as err:  # refused, reset, DNS, TLS, a malformed or oversized header...
            counts.record(str(status) if status else "error", "connection")
            raise ApiError("connection", _connection_message(url, err), retryable=True) from None
        try:
            body = parse_body(raw)
        except BadBody as err:
            if status < 400:  # an error page (HTML) is judged by its status
                counts.record(str(status), "invalid_response")
                raise ApiError("invalid_response", f"HTTP {status}: {err} (content-type "
                               f"{response.headers.get('content-type', 'none')[:80]})", status=status) from None
            body = None
        return Answer(status, response.headers, body, str(response.url.path))

    def _judge_rest(self, answer: Answer, counts: Recorder, accept_not_enrolled: bool) -> dict[str, Any]:
        status, body = answer.status, answer.body
        codes, detail = _envelope_errors(body)
        limited = status == 429 or RATE_LIMIT_CODE in codes
        self._honour_ratelimit_header(answer, limited, counts)
        if limited:
            retry_after = parse_retry_after(answer.headers.get("Retry-After"))
            if retry_after:
                retry_after = self._pause(retry_after, "retry-after", answer.path, counts)
            raise answer.failure(counts, "rate_limited", f"HTTP {status}: rate limited ({detail})", True,
                                 retry_after, codes)
        if status >= 500:
            raise answer.failure(counts, "server_error", f"HTTP {status} from the API"
                                 + (f": {detail}" if body is not None else " (non-JSON body)"), True, codes=codes)
        auth = bool(AUTH_ERROR_CODES.intersection(codes))
        # Only an API envelope can say "not enrolled": a proxy's or WAF's HTML 403/404 is a failure, else it
        # would drop every billing endpoint's last good data as if the account had left the feature.
        if accept_not_enrolled and not auth and isinstance(body, dict) and (
                status in (403, 404) or body.get("success") is False):
            counts.record(str(status), None)
            raise NotEnrolled(f"HTTP {status}: {detail}")
        if status in (401, 403) or auth:
            raise answer.failure(counts, "auth", f"HTTP {status}: {detail}", codes=codes)
        if not isinstance(body, dict):
            raise answer.failure(counts, "invalid_response", f"HTTP {status}: body is not a JSON object "
                                 f"(content-type {answer.headers.get('content-type', 'none')})", codes=codes)
        if body.get("success") is not True or status >= 400:
            raise answer.failure(counts, "api_error", f"HTTP {status}: success is not true: {detail}", codes=codes)
        counts.record(str(status), None)
        return body

    def _honour_ratelimit_header(self, answer: Answer, limited: bool, counts: Recorder) -> None:
        """``Ratelimit: "default";r=0;t=N`` pauses every request for N seconds (capped); any other answer that
        is not rate limited ends a pause in force."""
        remaining = parse_ratelimit(answer.headers.get("Ratelimit"))
        if remaining is not None and remaining[0] == 0 and remaining[1] > 0:
            self._pause(remaining[1], "ratelimit", answer.path, counts)
        elif not limited and self.limiter.resume():
            log.info("a good answer ended the pause the API asked for")

    def _pause(self, seconds: float, header: str, path: str, counts: Recorder) -> float:
        applied = self.limiter.pause(seconds)
        counts.pause(header)
        log.warning("the API asked to pause every request", extra={
            "header": header, "asked_seconds": seconds, "pause_seconds": applied, "path": path,
            **({"capped_at_seconds": MAX_PAUSE} if applied < seconds else {})})
        return applied

    async def list_accounts(self, credentials: Credentials, counts: Recorder) -> list[tuple[str, str]]:
        """(id, name) of every account the credentials can see, for discovery."""
        found: list[tuple[str, str]] = []
        for page in range(1, self.config.max_pages + 1):
            body = await self.get("/accounts", {"page": page, "per_page": 50}, credentials, counts)
            result = body.get("result")
            if not isinstance(result, list):
                raise counts.fail("invalid_response", "GET /accounts: result is not a list")
            if len(result) > MAX_ITEMS_PER_PAGE or len(found) + len(result) > MAX_DISCOVERED_ACCOUNTS:
                raise counts.fail("invalid_response", f"GET /accounts: more than {MAX_ITEMS_PER_PAGE:,} accounts in a "
                                  f"page or {MAX_DISCOVERED_ACCOUNTS:,} in all, the limits")
            for item in result:
                if isinstance(item, dict) and isinstance(item.get("id"), str) and ACCOUNT_ID_RE.match(item["id"]):
                    name = item.get("name")
                    name = name if isinstance(name, str) and name.strip() else item["id"]
                    found.append((item["id"].lower(), name[:MAX_NAME_CHARS]))
            info = body.get("result_info") or {}
            total_pages = info.get("total_pages") if isinstance(info, dict) else None
            if not result or not isinstance(total_pages, int) or page >= total_pages:
                return found
        raise counts.fail("pagination", f"GET /accounts: more than {self.config.max_pages} pages")
