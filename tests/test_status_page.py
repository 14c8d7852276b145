"""The status page's words and order (exporter/status_page.py), from store states built by hand."""

from __future__ import annotations

import re
from email.message import Message
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest

from exporter.app import ExporterApp
from exporter.collectors.invoice_history import InvoiceData, parse_invoice, totals
from exporter.config.model import AccountConfig, Config, Credentials, PollConfig
from exporter.snapshot import EndpointState, SnapshotStore
from tests.support import config_with, page_for, poll_counts, status_of, store_for

NOW = 1_764_000_000.0
TOKEN = "tok-9f8e7d6c5b4a39281706"
A1, A2, A3 = "a" * 32, "b" * 32, "c" * 32
HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>&amp;"


def config(*names: tuple[str, str], interval: float = 300.0, collectors: tuple[str, ...] = ()) -> Config:
    """These accounts; these collectors (every one when none is named)."""
    return config_with(*collectors, interval=interval, poll=PollConfig(interval=interval),
                       accounts=tuple(AccountConfig(i, n, "all", Credentials(api_token=TOKEN)) for i, n in names))


def page_of(store: SnapshotStore, cfg: Config, reload_failed: bool = False, **kwargs: Any) -> str:
    """The status page of the store's accounts under ``cfg`` (kwargs: the rest of ``PageInput``)."""
    store.set_status(status_of(cfg, reload_successful=not reload_failed))
    return page_for(store.snapshot(), **kwargs)


def invoices(*raw: dict[str, object]) -> InvoiceData:
    parsed = tuple(p for p in (parse_invoice(r) for r in raw) if p is not None)
    return InvoiceData(parsed, totals(parsed))


def invoice(n: int, remaining: float, currency: str = "usd", attempts: int = 0,
            created: float = NOW) -> dict[str, object]:
    return {"id": f"in_{n}", "currency": currency, "amount_due": remaining, "amount_paid": 0,
            "amount_remaining": remaining, "status": "open" if remaining else "paid",
            "attempt_count": attempts, "attempted": attempts > 0, "created": created}


def store_with(endpoints: dict[str, dict[str, EndpointState]], names: dict[str, str]) -> SnapshotStore:
    store = store_for(Config())
    all_endpoints = sorted({ep for states in endpoints.values() for ep in states} | {"invoice_history"})
    store.set_accounts(names.items(), all_endpoints)
    for account_id, states in endpoints.items():
        for endpoint, state in states.items():
            store.record_poll(account_id, endpoint, state, poll_counts())
    return store


def ok(data: object, at: float = NOW - 60, enrolled: bool = True) -> EndpointState:
    return EndpointState().after_success(data, enrolled, at, 0.2)


def failed(reason: str, message: str, before: EndpointState | None = None, at: float = NOW - 30) -> EndpointState:
    return (before or EndpointState()).after_failure(reason, message, at, 0.4)


def rows(page: str) -> list[str]:
    """The text of each table row, in order."""
    return [re.sub(r"<[^>]+>", " ", row) for row in re.findall(r"<tr class=.*?</tr>", page, re.S)]


def test_unpaid_says_only_what_an_invoice_poll_read() -> None:
    names = {A1: "never-polled", A2: "auth-fails", A3: "paid-up"}
    store = store_with({A2: {"invoice_history": failed("auth", "HTTP 403: [1000] Invalid API Token")},
                        A3: {"invoice_history": ok(invoices(invoice(1, 0)))}}, names)
    page = page_of(store, config(*((i, n) for i, n in names.items())), now=NOW)
    by_name = {n: next(r for r in rows(page) if n in r) for n in names.values()}
    assert "unknown (never read)" in by_name["never-polled"] and "not polled yet" in by_name["never-polled"]
    assert "unknown (never read)" in by_name["auth-fails"] and "nothing unpaid" not in by_name["auth-fails"]
    assert "nothing unpaid" in by_name["paid-up"]
    # Failing first, then not polled yet, then healthy; the failure in words and its message.
    assert [n for r in rows(page) for n in names.values() if n in r] == ["auth-fails", "never-polled", "paid-up"]
    assert "failed" in by_name["auth-fails"] and "✖" in by_name["auth-fails"] and "Invalid API Token" in page
    assert "1 account is failing:" in page and "1 failed, 1 not polled yet, 1 ok" in page
    assert "Not ready" in page


def test_data_from_an_older_poll_is_shown_as_such_when_the_latest_failed() -> None:
    earlier = ok(invoices(invoice(1, 14537, attempts=4, created=NOW - 40 * 86400), invoice(2, 1631, "eur")),
                 at=NOW - 600)
    store = store_with({A1: {"invoice_history": failed("timeout", "request timed out", earlier)}}, {A1: "research"})
    (row,) = rows(page_of(store, config((A1, "research")), now=NOW))
    assert "145.37 USD" in row and "16.31 EUR" in row and "2 unpaid invoices" in row
    assert "as of 10 min ago (last poll failed)" in row
    assert "4 failed payment attempts" in row and "40 days" in row and "timeout" in row


def test_every_value_is_escaped() -> None:
    store = store_with({A1: {"invoice_history": failed("api_error", f"echo {HOSTILE}")}}, {A1: HOSTILE})
    page = page_of(store, config((A1, HOSTILE)), telemetry_path='/m"><script>x</script>', now=NOW)
    assert "<script" not in page and "<img" not in page and "&amp;amp;" in page

    found: list[str] = []

    class Tags(HTMLParser):

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append(tag)
            assert not any(k.startswith("on") for k, _ in attrs)

    Tags().feed(page)
    assert "table" in found and "script" not in found and "img" not in found
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3  # name in the row, in the banner, in the error


def test_secrets_in_an_error_message_are_masked() -> None:
    cfg = config((A1, "prod"))
    app = ExporterApp(cfg)
    app.store.record_poll(A1, "invoice_history", failed("api_error", f"HTTP 400: echo Bearer {TOKEN}"), poll_counts())
    page = app.status_page()
    assert TOKEN not in page and "echo Bearer &lt;secret&gt;" in page


def test_long_messages_are_cut() -> None:
    store = store_with({A1: {"invoice_history": failed("invalid_response", "x" * 5000)}}, {A1: "a"})
    page = page_of(store, config((A1, "a")), now=NOW)
    assert "x" * 300 + "…" in page and "x" * 301 not in page


def test_next_poll_and_interval() -> None:
    store = store_with({A1: {"invoice_history": ok(invoices())}}, {A1: "a", A2: "b"})
    cfg = config((A1, "a"), (A2, "b"), interval=60)
    page = page_of(store, cfg, next_polls={(A1, "invoice_history"): NOW + 42,
                                                       (A2, "invoice_history"): None}, now=NOW)
    by_name = {n: next(r for r in rows(page) if f">{n}<" in r or f" {n} " in r) for n in ("a", "b")}
    assert "in 42 s" in by_name["a"] and "every 60 s" in by_name["a"]
    assert "polling now" in by_name["b"]
    assert "Poll interval 60 s" in page
    assert "not scheduled" in page_of(store, cfg, now=NOW)  # --once: no schedule


def test_credit_balance_when_that_endpoint_has_data() -> None:
    states = {A1: {"credit_balance": ok(SimpleNamespace(balance=327550, auto_topup_failing=True))},
              A2: {"credit_balance": ok(None, enrolled=False)}}
    store = store_with(states, {A1: "research", A2: "hobby"})
    page = page_of(store, config((A1, "research"), (A2, "hobby")), now=NOW)
    by_name = {n: next(r for r in rows(page) if n in r) for n in ("research", "hobby")}
    assert "Credit balance" in page
    assert "3,275.50 USD" in by_name["research"] and "auto top-up failing" in by_name["research"]
    assert "not enrolled" in by_name["hobby"] and "✖" not in by_name["hobby"]
    # Without that collector, no column at all.
    plain = store_with({A1: {"invoice_history": ok(invoices())}}, {A1: "a"})
    assert "Credit balance" not in page_of(plain, config((A1, "a"), collectors=("invoice_history",)), now=NOW)


def test_demo_and_reload_banners() -> None:
    store = store_with({}, {A1: "a"})
    assert "Demo mode" not in page_of(store, config((A1, "a")), now=NOW)
    page = page_of(store, config((A1, "a")), demo=True, reload_failed=True, now=NOW)
    assert "Demo mode" in page and "built-in sample accounts" in page and "config reload failed" in page


def test_the_served_page_follows_every_poll_at_once() -> None:
    """The app reuses a rendered page for a moment, but never past the end of a poll."""
    app = ExporterApp(config((A1, "prod")))
    route = app.routes["/"]["GET"]
    first = route(Message()).body
    assert isinstance(first, bytes) and b"unknown (never read)" in first and route(Message()).body is first
    app.store.record_poll(A1, "invoice_history", ok(invoices(invoice(1, 0))), poll_counts())
    after = route(Message()).body
    assert isinstance(after, bytes) and b"nothing unpaid" in after


def test_header_links_and_facts() -> None:
    store = store_with({}, {A1: "a"})
    page = page_of(store, config((A1, "a"), interval=300), telemetry_path="/custom/metrics", now=NOW)
    assert '<a href="./custom/metrics">Metrics</a>' in page
    assert '<a href="./-/healthy">Health</a>' in page and '<a href="./-/ready">Readiness</a>' in page
    assert "Version " in page and "Poll interval 5 min" in page and "1 account: 1 not polled yet" in page


@pytest.mark.parametrize("created", [1e300, -1e300, 1e17])
def test_a_finite_time_out_of_the_platform_range_still_renders(created: float) -> None:
    """The API may send any finite number as an invoice's created time; the page shows the oldest unpaid
    invoice's date clamped to the years 1 to 9999 instead of failing with OverflowError."""
    store = store_with({A1: {"invoice_history": ok(invoices(invoice(1, 14537, created=created)))}}, {A1: "research"})
    (row,) = rows(page_of(store, config((A1, "research")), now=NOW))
    assert "145.37 USD" in row and "oldest" in row
