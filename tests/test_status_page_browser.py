"""The status page in a real browser: the exporter runs ``--demo`` on loopback, headless Chromium (Debian's
``chromium``) opens ``/`` at a desktop and at a phone size, takes a screenshot of each and measures the layout.

Set STATUS_PAGE_SCREENSHOTS=DIR to keep the screenshots; docs/status-page.png is DIR/status-page-desktop-content.png
quantised to 64 colours (Debian python3-pil: Image.quantize(64, dither=NONE), 43 kB instead of 140 kB).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, Browser, png_size, png_variety
from tests.support import ExporterProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium (.ci/run installs it)"),
    pytest.mark.timeout(120),
]

VIEWPORTS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}

# What the page looks like to a person, measured in the browser after layout (no script runs in the page).
LAYOUT = """(() => {
  const width = document.documentElement.clientWidth;
  const overflowing = [...document.querySelectorAll('body *')].filter(el => {
    const box = el.getBoundingClientRect();
    let scroller = el.parentElement;
    while (scroller && getComputedStyle(scroller).overflowX === 'visible') scroller = scroller.parentElement;
    return box.width > 0 && box.right > width + 1 && (!scroller || scroller === document.body ||
                                                       scroller === document.documentElement);
  }).map(el => el.tagName + '.' + el.className + ': ' + (el.textContent || '').slice(0, 40));
  const rows = [...document.querySelectorAll('tbody tr')].map(tr => ({
    text: tr.innerText, cls: tr.className,
    visible: tr.getBoundingClientRect().height > 0 && getComputedStyle(tr).display !== 'none'}));
  return {width, scrollWidth: document.documentElement.scrollWidth, bodyScrollWidth: document.body.scrollWidth,
          overflowing, rows, scripts: document.scripts.length, banner: document.querySelector('.banner.demo')
          ? document.querySelector('.banner.demo').innerText : null,
          fontSize: parseFloat(getComputedStyle(document.body).fontSize),
          links: [...document.querySelectorAll('nav a')].map(a => a.href),
          table: document.querySelector('.scroll') && [document.querySelector('.scroll').scrollWidth,
                                                       document.querySelector('.scroll').clientWidth]};
})()"""


@pytest.fixture(scope="module")
def demo_exporter(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proc = ExporterProcess(None, ("--demo",), None, tmp_path_factory.mktemp("demo"))
    try:
        proc.wait_ready(30)
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_status_page_in_chromium(demo_exporter: ExporterProcess, viewport: str, tmp_path: Path) -> None:
    width, height, mobile = VIEWPORTS[viewport]
    with Browser() as browser:
        browser.open(demo_exporter.url + "/", width, height, mobile)
        layout = browser.evaluate(LAYOUT)
        png = browser.screenshot(tmp_path / f"status-page-{viewport}.png")
        keep = os.environ.get("STATUS_PAGE_SCREENSHOTS")
        if keep:
            shutil.copy(tmp_path / f"status-page-{viewport}.png", Path(keep) / f"status-page-{viewport}.png")
            browser.screenshot(Path(keep) / f"status-page-{viewport}-content.png", content_only=True)

    # It renders: a screenshot of the viewport's size with something on it.
    assert png_size(png) == (width, height)
    assert png_variety(png) > 0.02, "the screenshot is (nearly) blank"
    assert layout["scripts"] == 0
    assert layout["fontSize"] >= 14
    assert layout["links"] == [demo_exporter.url + p for p in ("/metrics", "/-/healthy", "/-/ready")]

    # Nothing is wider than the screen: no sideways scrolling of the page, no element sticking out.
    assert layout["width"] == width
    assert layout["scrollWidth"] <= width and layout["bodyScrollWidth"] <= width, layout
    assert layout["overflowing"] == [], layout["overflowing"]

    # The demo says it is one; the failing account (legacy, revoked token) comes first and says so in words.
    assert layout["banner"] and "Demo mode" in layout["banner"] and "sample accounts" in layout["banner"]
    rows = layout["rows"]
    assert len(rows) == 6 and all(r["visible"] for r in rows)
    first = rows[0]
    assert "legacy" in first["text"] and "FAILED" in first["text"].upper() and "bad" in first["cls"], first
    assert "Invalid API Token" in first["text"] and "auth" in first["text"]
    # The poller's schedule shows: every row says when its next poll comes (or that it is running now).
    assert all(("next in" in r["text"] or "polling now" in r["text"]) and "every 10 s / 30 s / 60 s" in r["text"]
               for r in rows)  # the demo's intervals: credit balance, invoices/limit/usage, preview
    assert "unknown (never read)" in first["text"] and "nothing unpaid" not in first["text"]
    assert [r["cls"] for r in rows[1:]] == ["ok"] * 5, rows[1:]  # the others are healthy
    research = next(r for r in rows if "research" in r["text"])
    assert "failed" in research["text"].lower() and "USD" in research["text"]  # declined card: failed attempts


def crowded_page() -> str:
    """Every billing endpoint per account, a credit balance column, gateways with hostile rule ids, hostile and
    long names, a 300-character error."""
    from types import SimpleNamespace

    from exporter.collectors.gateway_analytics import Analytics, RuleUsage
    from exporter.collectors.gateways import parse_gateway
    from exporter.collectors.invoice_history import InvoiceData, parse_invoice, totals
    from exporter.snapshot import EndpointState
    from tests.support import config_with, page_for, poll_counts, store_for

    now = time.time()
    endpoints = ["invoice_history", "credit_balance", "spending_limit", "usage_history", "invoice_preview"]
    names = {"a" * 32: "production", "b" * 32: "legacy", "c" * 32: "research", "d" * 32: "hobby", "f" * 32: "new",
             "e" * 32: HOSTILE + " and_a_very_long_account_name_without_any_space_" + "x" * 40}
    store = store_for(config_with())
    store.set_accounts(names.items(), endpoints)
    raw = {"id": "in_1", "currency": "usd", "amount_due": 14537, "amount_paid": 0, "amount_remaining": 14537,
           "status": "open", "created": now - 40 * 86400, "attempt_count": 4, "attempted": True}
    invoices = tuple(i for i in [parse_invoice(raw)] if i is not None)
    unpaid, empty = InvoiceData(invoices, totals(invoices)), InvoiceData((), totals(()))

    def ok(data: object, enrolled: bool = True) -> EndpointState:
        return EndpointState().after_success(data, enrolled, now - 20, 0.1)

    def record(account_id: str, endpoint: str, state: EndpointState) -> None:
        store.record_poll(account_id, endpoint, state, poll_counts())

    for ep in endpoints:
        invoice = ep == "invoice_history"
        record("a" * 32, ep, ok(empty if invoice else SimpleNamespace(balance=182450, auto_topup_failing=False)))
        record("b" * 32, ep, EndpointState().after_failure("auth", "HTTP 403: [1000] Invalid API Token", now, 0.1))
        record("c" * 32, ep, ok(unpaid if invoice else SimpleNamespace(balance=3275.5, auto_topup_failing=True)))
        record("d" * 32, ep, ok(empty if invoice else None, enrolled=invoice))
    record("e" * 32, "invoice_history", ok(unpaid))
    record("e" * 32, "credit_balance", ok(SimpleNamespace(balance=100, auto_topup_failing=False)).after_failure(
        "timeout", f"timed out {HOSTILE} " + "x" * 400, now, 0.1))
    # Gateways with hostile rule ids, rules near and over their limit, and a rate limit refusing requests.
    raw_gateways = [{"id": f"gateway-{n}-with-a-long-name", "rate_limiting_limit": 60, "rate_limiting_interval": 60,
                     "spend_limits": {"rules": [{"id": HOSTILE + "x" * 60, "limit": 300, "window": 86400},
                                                {"id": f"rule-{n}", "limit": 40, "window": 3600}]}}
                    for n in range(6)]
    gateways = tuple(g for g in map(parse_gateway, raw_gateways) if g is not None)
    usages = tuple(RuleUsage(g.id, rule, rule.limit * 1.25) for g in gateways for rule in g.rules)
    analytics = Analytics(now, {}, rules=usages, refused={g.id: 12345 for g in gateways})
    endpoints += ["gateways", "gateway_analytics"]
    store.set_accounts(names.items(), endpoints)
    for account_id in ("a" * 32, "c" * 32, "d" * 32):
        record(account_id, "gateways", ok(()))
        record(account_id, "gateway_analytics", ok(Analytics(now, {})))
    for ep in ("gateways", "gateway_analytics"):
        record("b" * 32, ep, EndpointState().after_failure("auth", "HTTP 403: [1000] Invalid API Token", now, 0.1))
    record("e" * 32, "gateways", ok(gateways))
    record("e" * 32, "gateway_analytics", ok(analytics))
    return page_for(store.snapshot(), now=now,
                    next_polls={(i, ep): now + 100 for i in names for ep in endpoints})


HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_a_crowded_hostile_page_in_chromium(viewport: str, tmp_path: Path) -> None:
    """What the demo does not show yet: every endpoint and the credit column, names and an error message
    that try to inject markup, unbreakable long words. Nothing runs, nothing overflows, the text is shown."""
    width, height, mobile = VIEWPORTS[viewport]
    page = tmp_path / "status.html"
    page.write_text(crowded_page())
    with Browser() as browser:
        browser.open(page.as_uri(), width, height, mobile)
        layout = browser.evaluate(LAYOUT)
        images = browser.evaluate("document.images.length")
        png = browser.screenshot(tmp_path / "crowded.png")
    assert png_size(png) == (width, height) and png_variety(png) > 0.02
    assert layout["scripts"] == 0 and images == 0
    assert layout["scrollWidth"] <= width and layout["overflowing"] == [], layout["overflowing"]
    if not mobile:  # at 1280 px even this table fits without scrolling sideways in its box
        assert layout["table"][0] <= layout["table"][1], layout["table"]
    rows = layout["rows"]
    assert [r["cls"] for r in rows] == ["bad", "bad", "wait", "ok", "ok", "ok"]
    assert HOSTILE in rows[0]["text"] and "timeout" in rows[0]["text"]  # the hostile name, as text
    assert "all 7 endpoints" in rows[1]["text"] and "legacy" in rows[1]["text"]
    assert "auto top-up failing" in next(r["text"] for r in rows if "research" in r["text"])
    assert "125% of 300.00 USD (reached: traffic refused)" in rows[0]["text"]
    assert "12,345 requests refused by a rate limit" in rows[0]["text"]


def test_png_checks_tell_a_blank_image() -> None:
    """The two PNG checks above, against a blank image and a striped one of known size."""
    import struct
    import zlib

    def png(width: int, height: int, row: bytes) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        raw = b"".join(b"\0" + row for _ in range(height))
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + \
            chunk(b"IEND", b"")

    blank = png(40, 30, b"\xff" * 120)
    striped = png(40, 30, bytes(range(120)))
    assert png_size(blank) == (40, 30)
    assert png_variety(blank) < 0.01 < png_variety(striped)
