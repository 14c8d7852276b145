"""The real exporter process against a hostile API: one account's poison never blinds the others, memory stays
within the documented worst case (docs/limits.md, the Kubernetes memory limit)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import TOKEN
from tests.fakeapi import FakeCloudflareAPI, Fault, invoice
from tests.hostile import rss_peak_kib
from tests.support import INVOICE_HISTORY_ONLY, ExporterProcess, samples, value

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

IDS = [f"{n:x}" * 32 for n in range(1, 9)]
# The documented worst case of one exporter (docs/limits.md): the Kubernetes limit is 256 MiB.
RSS_BUDGET_MIB = 160


def config(api: FakeCloudflareAPI, ids: list[str], **poll: Any) -> dict[str, Any]:
    return {"cloudflare": {"base_url": api.base_url, "api_token": TOKEN, "requests_per_second": 100,
                           "max_retries": 0, "timeout": "3s"},
            "poll": {"interval": "1s", **poll}, "collectors": INVOICE_HISTORY_ONLY,
            "accounts": [{"id": i, "name": f"acc{n}"} for n, i in enumerate(ids)]}


def padded_page(n_items: int, pad: int) -> bytes:
    """The worst answer the limits allow: a page just under 2 MiB of JSON that parses into the most objects."""
    items = [json.dumps({**invoice(id=f"in_{k}", amount_due=100, created=1700000000), "x": [[]] * pad})
             for k in range(n_items)]
    return (b'{"success": true, "errors": [], "result": {"invoices": [' + ",".join(items).encode()
            + b'], "pagination": {"page": 1, "has_more": false}}}')


def test_one_poisoned_account_fails_alone_counted_with_its_last_good_data_kept(
        fake_api: FakeCloudflareAPI, exporter_factory: Callable[..., ExporterProcess]) -> None:
    for n, account_id in enumerate(IDS[:5]):
        fake_api.add_account(account_id, f"acc{n}", [invoice(id=f"in_{n}", amount_due=500, created=1700000000)])
    exporter = exporter_factory(config(fake_api, IDS[:5]))
    first = exporter.metrics()
    assert value(first, "cloudflare_ai_gateway_poll_success", account_id=IDS[3]) == 1
    poisons = {
        IDS[0]: [Fault.gzip_bomb()] * 3,  # each fault fails one poll (max_retries 0): the account recovers after
        IDS[1]: [Fault.raw(b'{"success": true, "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")] * 3,
        IDS[2]: [Fault.errors_flood()] * 3,
        IDS[4]: [Fault.drip(1.0)] * 3,  # a per-read timeout never fires; cloudflare.timeout (3s) does
    }
    for account_id, faults in poisons.items():
        fake_api.inject(account_id, *faults)

    reasons = {IDS[0]: "invalid_response", IDS[1]: "invalid_response", IDS[2]: "api_error", IDS[4]: "timeout"}

    seen_failing: set[str] = set()

    def all_failed(text: str) -> bool:
        seen_failing.update(i for i in reasons if value(text, "cloudflare_ai_gateway_poll_success", account_id=i) == 0)
        counted = all((value(text, "cloudflare_ai_gateway_api_errors_total", account_id=i, reason=r) or 0) >= 1
                      for i, r in reasons.items())
        return counted and seen_failing == set(reasons)

    text = exporter.wait_metrics(all_failed, what="every poisoned account's failure counted")
    for account_id in reasons:  # the last good data stays, whatever the poll's state now
        assert value(text, "cloudflare_ai_gateway_account_amount_due", account_id=account_id, currency="usd") == 5.0
    assert value(text, "cloudflare_ai_gateway_api_errors_total", reason="internal") is None
    healthy_before = value(text, "cloudflare_ai_gateway_poll_last_success_timestamp_seconds", account_id=IDS[3])
    later = exporter.wait_metrics(lambda t: (value(t, "cloudflare_ai_gateway_poll_last_success_timestamp_seconds",
                                                   account_id=IDS[3]) or 0) > (healthy_before or 0),
                                  what="the healthy account still polled")
    assert value(later, "cloudflare_ai_gateway_poll_success", account_id=IDS[3]) == 1
    log = exporter.output()
    assert "Traceback" not in log and "poll crashed" not in log
    assert max(len(line) for line in log.splitlines()) < 4000  # 100,000 error entries: one short line
    assert "and 99995 more error entries" in log


def test_peak_memory_under_the_worst_allowed_answers_at_max_concurrency(
        fake_api: FakeCloudflareAPI, exporter_factory: Callable[..., ExporterProcess]) -> None:
    """8 accounts (poll.max_concurrency 8) answered, poll after poll, with gzip bombs and pages just under
    the size limit that parse into the most objects; the peak RSS is what docs/limits.md states."""
    page = padded_page(1000, 440)
    assert 1.9 * 2**20 < len(page) < 2 * 2**20
    for n, account_id in enumerate(IDS):
        fake_api.add_account(account_id, f"acc{n}", [invoice(id=f"in_{n}", amount_due=500, created=1700000000)])
        fake_api.inject(account_id, *[Fault.gzip_bomb(), Fault.raw(page)] * 2)
    exporter = exporter_factory(config(fake_api, IDS, max_concurrency=8), wait_ready=False)

    def drained() -> bool:
        return all(len(fake_api.requests_for(i, "invoice_history")) >= 5 for i in IDS)

    exporter.wait_metrics(lambda _: drained(), timeout=60, what="every poisoned answer served")
    text = exporter.metrics()
    peak_mib = rss_peak_kib(exporter.proc.pid) / 1024
    print(f"peak RSS under gzip bombs and 2 MiB pages at max_concurrency 8: {peak_mib:.0f} MiB")
    assert value(text, "cloudflare_ai_gateway_api_errors_total", reason="internal") is None
    assert sum(v for _, v in samples(text, "cloudflare_ai_gateway_api_errors_total", reason="invalid_response")) >= 8
    assert peak_mib < RSS_BUDGET_MIB
