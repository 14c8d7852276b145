"""The invoice history of an API that does not follow ``page``, against the fake API over loopback: read whole in
one page when the API says how many invoices there are and honours ``per_page``, else its first page, exported
as incomplete (``invoice_history_complete`` 0), said once and on the status page; never the account lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.client import CloudflareClient
from exporter.cloudflare.errors import PollCounts
from exporter.collectors import base
from exporter.collectors.invoice_history import InvoiceData, InvoiceHistoryCollector, InvoiceHistorySettings
from exporter.config.model import AccountConfig, CloudflareConfig, Config, Credentials, MetricsConfig
from exporter.poller import Poller
from exporter.ratelimit import RateLimiter
from exporter.render import Renderer
from exporter.snapshot import Setup
from tests.fakeapi import FakeCloudflareAPI, invoice
from tests.support import config_with, page_for, samples, store_for, value

ACC = "0123456789abcdef0123456789abcdef"
TOKEN = "fake-api-token"


@pytest.fixture
def api() -> Iterator[FakeCloudflareAPI]:
    with FakeCloudflareAPI(token=TOKEN, default_per_page=50) as fake:
        fake.add_account(ACC, "acme", [invoice(id=f"in_{n:03}", amount_due=100, created=1_700_000_000 + n)
                                       for n in range(75)])
        yield fake


def fetch(api: FakeCloudflareAPI, previous: Any = None, per_page: int | None = None) -> tuple[Any, PollCounts]:
    counts = PollCounts()
    account = AccountConfig(ACC, "acme", "all", Credentials(api_token=TOKEN))
    collector = InvoiceHistoryCollector(InvoiceHistorySettings(), Config())

    async def go() -> Any:
        async with httpx.AsyncClient() as http:
            client = CloudflareClient(CloudflareConfig(base_url=api.base_url, per_page=per_page, max_retries=0),
                                      RateLimiter(1000), http)
            return await base.fetch(collector, AccountApi(client, account, counts), previous)

    return asyncio.run(go()), counts


def ids(fetched: Any) -> list[str]:
    data: InvoiceData = fetched.data
    return sorted(inv.id for inv in data.invoices)


def test_an_ordinary_api_is_read_page_by_page(api: FakeCloudflareAPI) -> None:
    fetched, counts = fetch(api)
    assert ids(fetched) == [f"in_{n:03}" for n in range(75)] and fetched.data.complete
    assert [r.query["page"] for r in api.requests_for(ACC)] == ["1", "2"] and not counts.errors


def test_page_ignored_but_per_page_honoured_reads_everything_in_one_page(api: FakeCloudflareAPI) -> None:
    api.accounts[ACC].ignore_page = True
    fetched, counts = fetch(api)
    assert ids(fetched) == [f"in_{n:03}" for n in range(75)] and fetched.data.complete
    asked = [(r.query["page"], r.query.get("per_page")) for r in api.requests_for(ACC)]
    assert asked == [("1", None), ("2", None), ("1", "75")]  # page 2 came back as page 1: all 75 in one page
    assert counts.errors == {"pagination": 1} and fetched.warning is None


def test_page_and_per_page_ignored_export_the_first_page_as_incomplete(api: FakeCloudflareAPI) -> None:
    api.accounts[ACC].ignore_page = api.accounts[ACC].ignore_per_page = True
    fetched, counts = fetch(api)
    assert ids(fetched) == [f"in_{n:03}" for n in range(50)] and not fetched.data.complete
    assert counts.errors == {"pagination": 1}  # the poll itself succeeds
    assert fetched.warning and "set cloudflare.per_page to 1000" in fetched.warning
    again, _ = fetch(api, fetched.data)
    assert again.warning is None  # said once, not at every poll
    api.accounts[ACC].ignore_page = api.accounts[ACC].ignore_per_page = False
    healed, _ = fetch(api, again.data)
    assert healed.data.complete and len(ids(healed)) == 75


def test_a_server_sending_every_invoice_on_every_page_is_read_whole_once(api: FakeCloudflareAPI) -> None:
    api.accounts[ACC].ignore_page = api.accounts[ACC].endless_has_more = True
    fetched, counts = fetch(api, per_page=100)
    assert ids(fetched) == [f"in_{n:03}" for n in range(75)] and fetched.data.complete
    assert [r.query["page"] for r in api.requests_for(ACC)] == ["1", "2"]  # page 2 repeats page 1: no third
    assert counts.errors == {"pagination": 1} and fetched.summary["pages"] == 2


def test_per_page_partly_honoured_keeps_the_larger_answer_as_incomplete(api: FakeCloudflareAPI) -> None:
    api.accounts[ACC].ignore_page = True
    api.accounts[ACC].max_per_page = 60
    fetched, _ = fetch(api)
    assert len(ids(fetched)) == 60 and not fetched.data.complete  # not the first page's 50


def test_an_incomplete_history_is_a_gauge_a_log_line_and_a_status_page_note(
        api: FakeCloudflareAPI, caplog: pytest.LogCaptureFixture) -> None:
    api.accounts[ACC].ignore_page = api.accounts[ACC].ignore_per_page = True
    api.add_account("f" * 32, "healthy", [invoice(id="in_ok", amount_due=5, created=1_700_000_000)])
    config = config_with("invoice_history", metrics=MetricsConfig(invoice_series="all"),
                         cloudflare=CloudflareConfig(base_url=api.base_url, requests_per_second=100, max_retries=0),
                         accounts=(AccountConfig(ACC, "acme", "all", Credentials(api_token=TOKEN)),
                                   AccountConfig("f" * 32, "healthy", "all", Credentials(api_token=TOKEN))))
    store = store_for(config)
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        assert Poller(Setup.of(config), store).run_once()
    text = Renderer(store).render().body.decode()
    assert value(text, "cloudflare_ai_gateway_invoice_history_complete", account="acme") == 0
    assert value(text, "cloudflare_ai_gateway_invoice_history_complete", account="healthy") == 1
    assert len(samples(text, "cloudflare_ai_gateway_invoice_amount_due", account="acme")) == 50
    assert value(text, "cloudflare_ai_gateway_api_errors_total", account_id=ACC, reason="pagination") == 1
    warned = [r for r in caplog.records if "invoice history is incomplete" in r.getMessage()]
    assert len(warned) == 1 and warned[0].account == "acme"  # type: ignore[attr-defined]
    assert "history incomplete: the API ignores page" in page_for(store.snapshot())
