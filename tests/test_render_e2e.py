"""The real Prometheus scrapes the exporter's multi-member gzip answer and ingests every account's series."""

from __future__ import annotations

import socket
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.app import ExporterApp
from exporter.config.model import AccountConfig, CloudflareConfig, Config, Credentials, MetricsConfig, PollConfig
from exporter.render import Rendered
from exporter.web.listening import ListenAddress, WebServers
from tests.promstack import Prometheus
from tests.support import free_port, samples, wait_for

pytestmark = pytest.mark.e2e
ACCOUNTS = 150
INVOICES = 8


def api(request: httpx.Request) -> httpx.Response:
    account = request.url.path.split("/")[4]
    invoices = [{"id": f"in_{account[-4:]}_{k}", "currency": "usd", "amount_due": 862296 + k, "amount_paid": 0,
                 "amount_remaining": 862296 + k, "status": "open", "attempt_count": 1, "attempted": True,
                 "created": 1.7e9 + k} for k in range(INVOICES)]
    return httpx.Response(200, json={"success": True, "result": {"invoices": invoices,
                                                                 "pagination": {"page": 1, "has_more": False}}})


def test_prometheus_scrapes_the_multi_member_gzip_answer(tmp_path: Path) -> None:
    config = Config(
        cloudflare=CloudflareConfig(base_url="https://api.test/client/v4", requests_per_second=1000),
        poll=PollConfig(interval=3600, max_concurrency=16),
        accounts=tuple(AccountConfig(f"{i:032x}", f"acc{i}", "all", Credentials(api_token="t"))
                       for i in range(ACCOUNTS)),
        metrics=MetricsConfig(invoice_series="all"))
    app = ExporterApp(config, transport=httpx.MockTransport(api))
    seen: list[tuple[str | None, str | None, Rendered]] = []
    render = app.renderer.render

    def recording(accept: str | None = None, accept_encoding: str | None = None,
                  user_agent: str | None = None) -> Rendered:
        answer = render(accept, accept_encoding, user_agent)
        seen.append((accept_encoding, user_agent, answer))
        return answer

    app.renderer.render = recording  # type: ignore[method-assign]
    port = free_port()
    servers = WebServers(app, [ListenAddress("127.0.0.1", port, socket.AF_INET)])
    servers.start()
    app.poller.start()
    prometheus: Prometheus | None = None
    try:
        wait_for(lambda: app.store.snapshot().ready, timeout=30, what="every account polled")
        exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text  # single-member gzip
        expected = sum(1 for line in exposition.splitlines() if line and not line.startswith("#"))
        assert len(samples(exposition, "cloudflare_ai_gateway_invoice_amount_due")) == ACCOUNTS * INVOICES
        scrape: dict[str, Any] = {"job_name": "cf", "scrape_interval": "1s", "scrape_timeout": "1s",
                                  "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        prometheus = Prometheus({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]},
                                tmp_path / "prometheus")

        def ingested() -> bool:
            assert prometheus is not None
            got = prometheus.query('scrape_samples_scraped{job="cf"}')
            return bool(got) and float(got[0]["value"][1]) >= expected

        wait_for(ingested, timeout=30, what="a full scrape by Prometheus")
        assert float(prometheus.query('up{job="cf"}')[0]["value"][1]) == 1
        per_account = prometheus.query("count by (account_id) (cloudflare_ai_gateway_invoice_amount_due)")
        assert len(per_account) == ACCOUNTS
        assert {float(r["value"][1]) for r in per_account} == {INVOICES}
        total = prometheus.query('sum(cloudflare_ai_gateway_account_amount_remaining{currency="usd"})')
        assert float(total[0]["value"][1]) == pytest.approx(ACCOUNTS * sum(8622.96 + k / 100 for k in range(INVOICES)))
        scrapes = [(enc, agent, r) for enc, agent, r in seen if (agent or "").startswith("Prometheus/")]
        assert scrapes and all(r.content_encoding == "gzip" for _, _, r in scrapes)
        body, members = scrapes[-1][2].body, 0
        while body:  # the kept members (a family header, a block of lines), not one recompressed stream
            reader = zlib.decompressobj(31)
            reader.decompress(body)
            body, members = reader.unused_data, members + 1
        assert members > 30
    finally:
        if prometheus is not None:
            prometheus.stop()
        servers.shutdown()
        app.poller.stop(timeout=2)
