"""A hostile Cloudflare API: every answer bounded, every failure counted under a reason a user can act on.

Network-level attacks (a gzip bomb, an endless body, a body dripped a byte a second, a refused connection)
come from a raw-socket server on loopback (tests/hostile.py); malformed content goes through MockTransport.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import tracemalloc
from typing import Any

import httpx
import pytest

from exporter.cloudflare.account import MAX_ITEMS_PER_ACCOUNT, AccountApi
from exporter.cloudflare.body import MAX_RESPONSE_BYTES
from exporter.cloudflare.client import CloudflareClient
from exporter.cloudflare.errors import ApiError, PollCounts
from exporter.collectors.invoice_history import InvoiceData
from exporter.config.model import AccountConfig, CloudflareConfig, Credentials
from exporter.ratelimit import RateLimiter
from exporter.render import Lines
from tests.hostile import HostileServer, send_dripped, send_endless, send_gzip_bomb
from tests.test_client import ACCOUNT, collector, get, invoice, invoice_fetch, page, run, sequence

TOKEN = "hostile-test-token-1234"


def over_network(base_url: str, call: Any, **config: Any) -> tuple[Any, PollCounts, float]:
    """Run ``call(api)`` with a real HTTP client against ``base_url``; (result or error, counts, seconds)."""
    counts = PollCounts()
    account = AccountConfig(ACCOUNT.id, "prod", "all", Credentials(api_token=TOKEN))

    async def go() -> Any:
        async with httpx.AsyncClient(trust_env=False) as http:
            client = CloudflareClient(CloudflareConfig(base_url=base_url, **config), RateLimiter(100), http)
            try:
                return await call(AccountApi(client, account, counts))
            except ApiError as err:
                return err

    started = time.monotonic()
    result = asyncio.run(go())
    return result, counts, time.monotonic() - started


def test_a_gzip_bomb_fails_fast_with_little_memory() -> None:
    with HostileServer(send_gzip_bomb) as server:
        tracemalloc.start()
        try:
            err, counts, seconds = over_network(server.base_url, get, max_retries=0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(err, ApiError) and err.reason == "invalid_response"
    assert "decompresses to more than 2,097,152 bytes" in str(err)
    assert counts.errors == {"invalid_response": 1} and counts.requests == {"200": 1}
    assert seconds < 2.0
    assert peak < 4 * MAX_RESPONSE_BYTES, f"peak {peak / 2**20:.1f} MiB of Python allocations"


def test_an_endless_body_stops_at_the_size_limit() -> None:
    with HostileServer(send_endless) as server:
        err, _counts, seconds = over_network(server.base_url, get, max_retries=0)
    assert isinstance(err, ApiError) and err.reason == "invalid_response" and "limit" in str(err)
    assert seconds < 2.0


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    def declare_and_wait(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_RESPONSE_BYTES + 1}\r\n\r\n{{".encode())
        server.sleep(5)

    with HostileServer(declare_and_wait) as server:
        err, _counts, seconds = over_network(server.base_url, get, max_retries=0)
    assert isinstance(err, ApiError) and err.reason == "invalid_response" and "2,097,153 bytes" in str(err)
    assert seconds < 1.0


def test_a_dripped_body_fails_at_the_deadline_with_reason_timeout() -> None:
    with HostileServer(send_dripped) as server:
        err, counts, seconds = over_network(server.base_url, get, max_retries=0, timeout=1.5)
    assert isinstance(err, ApiError) and err.reason == "timeout" and "for the whole request" in str(err)
    assert counts.errors == {"timeout": 1} and counts.requests == {"200": 1}  # the headers had come
    assert 1.4 < seconds < 2.5


def test_a_refused_connection_says_where_and_why_and_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        caplog.set_level(logging.DEBUG, "exporter.client")

        async def fast(api: AccountApi) -> Any:
            api.client._sleep = lambda _: asyncio.sleep(0)
            return await get(api)

        err, counts, _ = over_network(f"http://127.0.0.1:{port}/client/v4", fast, max_retries=2)
    assert isinstance(err, ApiError) and err.reason == "connection"
    assert str(err) == f"cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    assert counts.errors == {"connection": 3}
    retries = [r for r in caplog.records if r.getMessage() == "retrying request"]
    assert [r.attempt for r in retries] == [2, 3]  # type: ignore[attr-defined]
    assert all(r.reason == "connection" and r.delay_seconds >= 0 for r in retries)  # type: ignore[attr-defined]
    assert TOKEN not in caplog.text


def test_a_hundred_thousand_error_entries_make_a_short_message() -> None:
    errors = [{"code": 1000 + i % 7} for i in range(100_000)]
    handler, _ = sequence(httpx.Response(400, json={"success": False, "errors": errors}))
    err, _counts, _, _ = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "auth"
    assert len(str(err)) < 2000 and "and 99995 more error entries" in str(err)


def raw_answer(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"success": true, "result": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}"])
def test_deep_nesting_is_an_invalid_response_not_a_bug(body: bytes) -> None:
    handler, _ = sequence(raw_answer(body))
    err, counts, _, _ = run(handler, get)
    assert isinstance(err, ApiError) and err.reason == "invalid_response" and "nested deeper" in str(err)
    assert counts.errors == {"invalid_response": 1}


def invoices_answer(*items: bytes) -> httpx.Response:
    return raw_answer(b'{"success": true, "result": {"invoices": [' + b", ".join(items)
                      + b'], "pagination": {"page": 1, "has_more": false}}}')


GOOD = json.dumps(invoice(1)).encode()


@pytest.mark.parametrize("amount", [b"1e400", b"NaN", b"-Infinity", b"Infinity", b"9" * 5000, b"-" + b"9" * 400])
def test_non_finite_numbers_and_huge_integers_are_refused_at_the_edge(amount: bytes) -> None:
    bad = GOOD.replace(b'"amount_due": 862296', b'"amount_due": ' + amount).replace(b"in_1", b"in_2")
    handler, _ = sequence(invoices_answer(GOOD, bad))
    fetched, counts, _, _ = run(handler, invoice_fetch())
    assert [i.id for i in fetched.data.invoices] == ["in_1"] and fetched.skipped == 1
    assert fetched.data.totals.due == {"usd": 862296.0} and not counts.errors


@pytest.mark.parametrize("bad_id", [b'"in_\\ud800x"', b'"in_\xed\xa0\x80x"', b'"in_\\udfff"', b'"\xff\xfe"'])
def test_text_that_cannot_be_encoded_is_repaired_where_it_enters(bad_id: bytes) -> None:
    item = GOOD.replace(b'"in_1"', bad_id)
    handler, _ = sequence(invoices_answer(item))
    fetched, _, _, _ = run(handler, invoice_fetch())
    [inv] = fetched.data.invoices
    assert "\ufffd" in inv.id
    inv.id.encode("utf-8")  # never fails downstream
    out = Lines()
    collector().render((ACCOUNT.id, "prod"), fetched.data, out)
    assert b"\xef\xbf\xbd" in b"".join(out.encoded().values())


def test_discovered_account_names_are_repaired_and_bad_ids_left_out() -> None:
    body = (b'{"success": true, "result": [{"id": "' + b"a" * 32 + b'", "name": "ops\\ud800"}, '
            b'{"id": "' + b"b" * 32 + b'", "name": "caf\xed\xa0\x80"}, {"id": "../../x", "name": "evil"}, '
            b'{"id": "' + b"c" * 32 + b'", "name": "' + b"n" * 1000 + b'"}], "result_info": {"total_pages": 1}}')
    handler, _ = sequence(raw_answer(body))
    counts = PollCounts()

    async def go() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = CloudflareClient(CloudflareConfig(), RateLimiter(100), http)
            return await client.list_accounts(Credentials(api_token=TOKEN), counts)

    found = asyncio.run(go())
    assert [(i, n.encode()) for i, n in found[:2]] == [("a" * 32, "ops\ufffd".encode()),
                                                         ("b" * 32, "caf\ufffd\ufffd\ufffd".encode())]
    assert len(found) == 3 and found[2][1] == "n" * 200


def test_more_items_in_a_page_than_the_limit_is_an_invalid_response() -> None:
    handler, _ = sequence(page([invoice(n) for n in range(1001)], 1, False))
    err, counts, _, _ = run(handler, invoice_fetch())
    assert isinstance(err, ApiError) and err.reason == "invalid_response" and "1,001 items" in str(err)
    assert counts.errors == {"invalid_response": 1}


def test_more_items_per_account_than_the_limit_is_an_invalid_response() -> None:
    pages = [page([invoice(p * 1000 + n) for n in range(1000)], p + 1, True) for p in range(11)]
    handler, seen = sequence(*pages)
    err, _counts, _, _ = run(handler, invoice_fetch(), per_page=1000)
    assert isinstance(err, ApiError) and err.reason == "invalid_response"
    assert f"more than {MAX_ITEMS_PER_ACCOUNT:,} items" in str(err) and len(seen) == 11


def test_the_same_invoice_id_on_two_pages_is_kept_once_and_counted() -> None:
    handler, _ = sequence(page([invoice(1), invoice(2)], 1, True), page([invoice(2), invoice(3)], 2, False))
    fetched, counts, _, _ = run(handler, invoice_fetch(), per_page=2)
    assert isinstance(fetched.data, InvoiceData)
    assert [i.id for i in fetched.data.invoices] == ["in_1", "in_2", "in_3"]
    assert fetched.skipped == 1 and fetched.summary["duplicate_invoices"] == 1
    assert fetched.data.totals.remaining == {"usd": 3 * 862296.0} and not counts.errors


def test_an_unsupported_content_encoding_is_an_invalid_response() -> None:
    with HostileServer(lambda conn, _: conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: compress\r\nContent-Length: 2\r\n\r\n{}")) as server:
        err, _counts, _ = over_network(server.base_url, get, max_retries=0)
    assert isinstance(err, ApiError) and err.reason == "invalid_response" and "content-encoding" in str(err)


def test_pauses_are_exported_per_header() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from exporter.config.model import Config
    from exporter.render import Renderer
    from tests.support import poll_counts, store_for

    store = store_for(Config())
    store.record_poll("", "discovery", None, poll_counts(pauses={"retry-after": 2}))
    renderer = Renderer(store)
    text = renderer.render().body.decode()
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "cloudflare_ai_gateway_api_pauses"]
    assert family.type == "counter"
    assert [(s.labels, s.value) for s in family.samples if s.name.endswith("_total")] == [
        ({"header": "retry-after"}, 2.0)]


def test_an_invoice_with_a_huge_label_value_is_left_out_and_counted() -> None:
    handler, _ = sequence(page([invoice(1), invoice(2, id="in_" + "x" * 500_000), invoice(3, currency="u" * 100)],
                               1, False))
    fetched, _, _, _ = run(handler, invoice_fetch())
    assert [i.id for i in fetched.data.invoices] == ["in_1"] and fetched.skipped == 2


def test_discovery_listing_more_accounts_than_the_limit_fails_and_keeps_nothing_new() -> None:
    listed = [{"id": f"{n:032x}", "name": f"a{n}"} for n in range(1001)]
    handler, _ = sequence(httpx.Response(200, json={"success": True, "result": listed,
                                                    "result_info": {"total_pages": 1}}))
    counts = PollCounts()

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = CloudflareClient(CloudflareConfig(), RateLimiter(100), http)
            try:
                return await client.list_accounts(Credentials(api_token=TOKEN), counts)
            except ApiError as err:
                return err

    err = asyncio.run(go())
    assert isinstance(err, ApiError) and err.reason == "invalid_response" and counts.errors == {"invalid_response": 1}
