"""The renderer's own exposition writer against prometheus_client's, on random awkward snapshots."""

from __future__ import annotations

from bench.check_renderer import check


def test_renderer_writes_what_prometheus_client_writes_byte_for_byte() -> None:
    # 100 random snapshots: quotes, backslashes, newlines and non-ASCII in labels; NaN, infinities, -0.0;
    # every invoice_series and invoice_pdf_url setting; text and OpenMetrics, plain and gzip, fresh and cached.
    assert check(rounds=100) == 0
