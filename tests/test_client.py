"""The pure API client in-process: httpx MockTransport for the API, a fake clock for every wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.client import Answer, CloudflareClient
from exporter.cloudflare.errors import ApiError, NotEnrolled, PollCounts
from exporter.collectors.invoice_history import InvoiceData, InvoiceHistoryCollector, InvoiceHistorySettings
from exporter.config.model import AccountConfig, CloudflareConfig, Config, Credentials, MetricsConfig
from exporter.ratelimit import RateLimiter
from exporter.render import Lines
from tests.fakeclock import FakeClock, next_grant

ACCOUNT = AccountConfig("0123456789abcdef0123456789abcdef", "prod", "all", Credentials(api_token="t0k3n"))
Handler = Callable[[httpx.Request], httpx.Response]


def ok(result: Any) -> httpx.Response:
    return httpx.Response(200, json={"success": True, "errors": [], "result": result})


def failure(status: int, *codes: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers,
                          json={"success": False, "errors": [{"code": c, "message": f"m{c}"} for c in codes]})


def sequence(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def run(handler: Handler, call: Callable[[AccountApi], Any], **config: Any) -> tuple[Any, PollCounts, FakeClock,
                                                                                    RateLimiter]:
    """Run ``call(api)``; return (its result or the exception it raised, the poll's counts, clock, limiter)."""
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    counts = PollCounts()

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = CloudflareClient(CloudflareConfig(base_url="https://api.test/client/v4", **config), limiter,
                                      http, sleep=clock.sleep)
            try:
                return await call(AccountApi(client, ACCOUNT, counts))
            except (ApiError, NotEnrolled) as err:
                return err

    return asyncio.run(go()), counts, clock, limiter


def get(api: AccountApi) -> Any:
    return api.get("billing/credit-balance", {})


def test_server_errors_are_retried_and_every_attempt_recorded() -> None:
    handler, seen = sequence(failure(500), httpx.Response(502, text="<html>bad gateway</html>"), ok({"x": 1}))
    body, counts, _, _ = run(handler, get)
    assert body["result"] == {"x": 1}
    assert len(seen) == 3
    assert counts.requests == {"500": 1, "502": 1, "200": 1}
    assert counts.errors == {"server_error": 2}
    assert seen[0].url.path == f"/client/v4/accounts/{ACCOUNT.id}/ai-gateway/billing/credit-balance"
    assert seen[0].headers["Authorization"] == "Bearer t0k3n"


def test_html_5xx_fails_after_the_retries_with_a_clear_reason() -> None:
    handler, seen = sequence(httpx.Response(503, text="<html>down</html>", headers={"content-type": "text/html"}))
    err, counts, clock, _ = run(handler, get, max_retries=2)
    assert isinstance(err, ApiError) and err.reason == "server_error" and err.retryable and err.status == 503
    assert "non-JSON body" in str(err)
    assert len(seen) == 3 and counts.errors == {"server_error": 3}
    assert len([s for s in clock.sleeps if s >= 0.5]) == 2  # a backoff before each retry


def test_auth_errors_are_not_retried() -> None:
    handler, seen = sequence(failure(403, 10000))
    err, counts, _, _ = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "auth" and not err.retryable and err.codes == (10000,)
    assert len(seen) == 1 and counts.requests == {"403": 1} and counts.errors == {"auth": 1}
    assert "t0k3n" not in str(err)


def test_429_retry_after_is_honoured_by_the_shared_limiter() -> None:
    handler, seen = sequence(failure(429, **{"Retry-After": "7"}), ok({}))
    body, counts, clock, limiter = run(handler, get)
    assert body["success"] is True and len(seen) == 2
    assert counts.errors == {"rate_limited": 1} and counts.requests == {"429": 1, "200": 1}
    assert max(clock.sleeps) >= 7
    assert counts.pauses == {"retry-after": 1}
    assert next_grant(limiter, clock) < 1  # the good answer ended the pause


def test_retry_after_beyond_five_minutes_pauses_five_minutes_logged_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    handler, seen = sequence(failure(429, **{"Retry-After": "99999"}), ok({}))
    err, counts, clock, limiter = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "rate_limited" and err.retry_after == 300
    assert len(seen) == 1 and counts.errors == {"rate_limited": 1}
    assert counts.pauses == {"retry-after": 1} and next_grant(limiter, clock) == 300
    [record] = [r for r in caplog.records if r.getMessage() == "the API asked to pause every request"]
    assert record.asked_seconds == 99999 and record.pause_seconds == 300  # type: ignore[attr-defined]


def test_a_retry_after_beyond_a_minute_ends_the_poll() -> None:
    handler, seen = sequence(failure(429, **{"Retry-After": "3600"}), ok({}))
    err, _, clock, limiter = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "rate_limited" and err.retry_after == 300
    assert len(seen) == 1 and next_grant(limiter, clock) == 300


def test_ratelimit_header_at_zero_pauses_the_limiter() -> None:
    handler, _ = sequence(httpx.Response(200, headers={"Ratelimit": '"default";r=0;t=30'},
                                         json={"success": True, "result": {}}))
    _, counts, clock, limiter = run(handler, get)
    assert next_grant(limiter, clock) >= 30 and counts.pauses == {"ratelimit": 1}


@pytest.mark.parametrize("value", ['"default";r=0;t=99999', '"default";r=0;t=' + "9" * 5000])
def test_ratelimit_header_pause_is_capped_and_a_later_good_answer_ends_it(value: str) -> None:
    handler, _ = sequence(httpx.Response(200, headers={"Ratelimit": value}, json={"success": True, "result": {}}))

    async def paused_then_answer_in_flight(api: AccountApi) -> bool:
        await api.get("billing/credit-balance", {})
        # another account's request, sent before the pause, comes back fine: the pause ends
        answer = Answer(200, httpx.Headers({"Ratelimit": '"default";r=40;t=10'}), {"success": True}, "/")
        api.client._honour_ratelimit_header(answer, False, api.counts)
        return api.client.limiter.resume()

    still_paused, counts, clock, limiter = run(handler, paused_then_answer_in_flight)
    assert counts.pauses == {"ratelimit": 1} and not still_paused
    assert next_grant(limiter, clock) < 1


def test_success_false_on_http_200_is_an_api_error_not_retried() -> None:
    handler, seen = sequence(httpx.Response(200, json={"success": False, "errors": [{"code": 7003, "message": "x"}]}))
    err, counts, _, _ = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "api_error" and len(seen) == 1
    assert counts.requests == {"200": 1} and counts.errors == {"api_error": 1}


def test_timeouts_and_connection_errors_are_counted_as_code_error_and_retried() -> None:
    handler, seen = sequence(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), ok({}))
    body, counts, _, _ = run(handler, get)
    assert body["success"] is True and len(seen) == 3
    assert counts.requests == {"error": 2, "200": 1} and counts.errors == {"timeout": 1, "connection": 1}


def test_not_a_json_object_is_invalid_response() -> None:
    handler, _ = sequence(httpx.Response(200, text="[1, 2]"))
    err, counts, _, _ = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "invalid_response" and counts.errors == {"invalid_response": 1}


@pytest.mark.parametrize("answer", [failure(404, 1404), failure(403, 7003),
                                    httpx.Response(200, json={"success": False, "errors": [{"code": 1004}]})])
def test_not_enrolled_answers_are_not_enrolled_counted_as_requests_not_errors(answer: httpx.Response) -> None:
    handler, seen = sequence(answer)
    result, counts, _, _ = run(handler, lambda api: api.get("billing/invoice-preview", {}, accept_not_enrolled=True))
    assert isinstance(result, NotEnrolled) and len(seen) == 1
    assert counts.requests == {str(answer.status_code): 1} and not counts.errors


def test_a_revoked_token_is_never_not_enrolled() -> None:
    handler, _ = sequence(failure(403, 1000))
    err, counts, _, _ = run(handler, lambda api: api.get("billing/invoice-preview", {}, accept_not_enrolled=True))
    assert isinstance(err, ApiError) and err.reason == "auth" and counts.errors == {"auth": 1}


@pytest.mark.parametrize(("status", "reason"), [(403, "auth"), (404, "invalid_response")])
def test_an_html_403_or_404_is_a_failure_never_not_enrolled(status: int, reason: str) -> None:
    """A proxy's or WAF's error page is not the API saying the account does not use the feature."""
    handler, _ = sequence(httpx.Response(status, text="<html><body>Access denied</body></html>",
                                         headers={"content-type": "text/html"}))
    err, counts, _, _ = run(handler, lambda api: api.get("billing/invoice-preview", {}, accept_not_enrolled=True))
    assert isinstance(err, ApiError) and err.reason == reason and counts.errors == {reason: 1}


def test_not_enrolled_unless_accepted_is_an_error() -> None:
    handler, _ = sequence(failure(404))
    err, _, _, _ = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "api_error"


def collector(metrics: MetricsConfig | None = None) -> InvoiceHistoryCollector:
    return InvoiceHistoryCollector(InvoiceHistorySettings(), Config(metrics=metrics or MetricsConfig()))


def invoice_fetch(metrics: MetricsConfig | None = None) -> Callable[[AccountApi], Any]:
    return lambda api: collector(metrics).fetch(api, None)


def page(items: list[Any], page_no: int, has_more: bool) -> httpx.Response:
    return ok({"invoices": items, "pagination": {"page": page_no, "has_more": has_more}})


def invoice(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"in_{n}", "currency": "USD", "amount_due": 862296, "amount_paid": 0, "amount_remaining": 862296,
            "status": "open", **extra}


def test_invoice_history_follows_pages_and_skips_malformed_items() -> None:
    handler, seen = sequence(page([invoice(1), invoice(2)], 1, True), page([invoice(3), {"id": "bad"}], 2, True),
                             httpx.Response(200, content=b'{"success": true, "result": {"invoices": [{"id": "in_4", '
                                            b'"currency": "usd", "amount_due": NaN, "amount_paid": 0, '
                                            b'"amount_remaining": 0}], "pagination": {"page": 3, "has_more": false}}}'))
    fetched, counts, _, _ = run(handler, invoice_fetch(), per_page=2)
    assert [i.id for i in fetched.data.invoices] == ["in_1", "in_2", "in_3"]
    assert fetched.skipped == 2 and fetched.summary["pages"] == 3
    assert [r.url.params["page"] for r in seen] == ["1", "2", "3"]
    assert {r.url.params["per_page"] for r in seen} == {"2"} and seen[0].url.params["type"] == "all"
    assert isinstance(fetched.data, InvoiceData) and fetched.data.totals.remaining == {"usd": 3 * 862296.0}
    assert counts.requests == {"200": 3} and not counts.errors


@pytest.mark.parametrize("pdf_label", [False, True])
def test_the_pdf_link_is_kept_only_when_it_is_a_label(pdf_label: bool) -> None:
    link = "https://pay.stripe.com/invoice/acct_1/in_1/pdf"
    handler, _ = sequence(page([invoice(1, invoice_pdf=link)], 1, False))
    metrics = MetricsConfig(invoice_series="all", invoice_pdf_url=pdf_label)
    fetched, _, _, _ = run(handler, invoice_fetch(metrics))
    assert fetched.data.invoices[0].invoice_pdf == (link if pdf_label else None)
    out = Lines()
    collector(metrics).render(("acc", "prod"), fetched.data, out)
    assert (link.encode() in b"".join(out.encoded().values())) is pdf_label


@pytest.mark.parametrize(("pages", "message"), [
    ([page([], 1, True)], "empty but has_more"),
    ([page([invoice(n)], n, True) for n in range(1, 5)], "after 3 pages"),
])
def test_pagination_guards(pages: list[httpx.Response], message: str) -> None:
    handler, _ = sequence(*pages)
    err, counts, _, _ = run(handler, invoice_fetch(), max_pages=3)
    assert isinstance(err, ApiError) and err.reason == "pagination" and message in str(err)
    assert counts.errors == {"pagination": 1}


@pytest.mark.parametrize("second", [page([invoice(1)], 2, True),  # page 2 repeats page 1
                                    page([invoice(2)], 1, False)])  # page 2 says it is page 1
def test_a_server_that_ignores_page_keeps_the_first_page_counted(second: httpx.Response) -> None:
    handler, seen = sequence(page([invoice(1)], 1, True), second)
    fetched, counts, _, _ = run(handler, invoice_fetch(), max_pages=3)
    assert [i.id for i in fetched.data.invoices] == ["in_1"] and not fetched.data.complete
    assert counts.errors == {"pagination": 1} and len(seen) == 2  # no total_count: no one-page read


def test_list_accounts_reports_its_requests() -> None:
    handler, _ = sequence(httpx.Response(200, json={"success": True, "result": [{"id": "AB" * 16, "name": "x"}],
                                                    "result_info": {"total_pages": 1}}))
    counts = PollCounts()

    async def go() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = CloudflareClient(CloudflareConfig(), RateLimiter(100), http)
            return await client.list_accounts(Credentials(api_token="t"), counts)

    assert asyncio.run(go()) == [("ab" * 16, "x")]
    assert counts.requests == {"200": 1}
