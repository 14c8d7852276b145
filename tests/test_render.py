"""The renderer: byte for byte what prometheus_client writes, O(changed) re-rendering, multi-member gzip."""

from __future__ import annotations

import dataclasses
import gzip
import random
import subprocess
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter import blocks as render_blocks
from exporter.collectors.base import Family
from exporter.collectors.invoice_history import Invoice, InvoiceData, InvoiceHistoryCollector, totals
from exporter.config.model import Config, MetricsConfig, ShardingConfig
from exporter.render import (
    COUNTER_FAMILIES,
    EXPORTER_FAMILIES,
    POLL_FAMILIES,
    Renderer,
    count_samples,
    endpoint_samples,
    exporter_samples,
)
from exporter.snapshot import EndpointState, Snapshot, SnapshotStore
from tests.promstack import find_program, run_tool
from tests.support import config_with, poll_counts, status_of, store_for

AWKWARD = ["", "plain", 'say "hi"', "back\\slash", "new\nline", "ünïcødé ✓", "a,b=c}{", "\\n literal", "tab\there"]
NUMBERS = [0.0, -0.0, 1.0, -1.0, 3.0, 0.1, 1e-9, 1e21, 123456789.0, 1234567.5, 12.3456789012345, 7.0, 1e16,
           99999999999.0, 862296.0, 8622996.0, 33.0]
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def random_invoice(rng: random.Random, index: int) -> Invoice:
    def maybe(choices: list[str]) -> str | None:
        return None if rng.random() < 0.2 else rng.choice(choices)

    return Invoice(
        id=rng.choice(AWKWARD) + f"in_{index}", currency=rng.choice(["usd", "eur", 'q"x', "ü"]),
        amount_due=rng.choice(NUMBERS), amount_paid=rng.choice(NUMBERS),
        amount_remaining=rng.choice([*NUMBERS, 0.0, 0.0, 500.0]),
        status=maybe(["open", "paid", "void", "draft", "uncollectible", 'we"ird']),
        attempt_count=rng.choice([None, 0.0, 1.0, 3.0, 2.5]), attempted=rng.choice([None, True, False]),
        created=rng.choice([None, 1700000000.0, 1.5, 1e10]),
        created_by=maybe(AWKWARD), origin=maybe(AWKWARD), invoice_pdf=maybe(AWKWARD))


def invoice_state(invoices: Sequence[Invoice], at: float = 1.7e9, duration: float = 0.25) -> EndpointState:
    data = tuple(invoices)
    return EndpointState().after_success(InvoiceData(data, totals(data)), True, at, duration)


def random_store(rng: random.Random) -> SnapshotStore:
    store = store_for(Config())
    accounts = [(f"{i:032x}", rng.choice(AWKWARD) + f"acc{i}") for i in range(rng.randint(0, 6))]
    store.set_accounts(accounts, ["invoice_history"])
    for account_id, _ in accounts:
        requests = {rng.choice(["200", "429", "error"]): rng.randint(1, 3)}
        errors = {"rate_limited": 1} if rng.random() < 0.3 else {}
        roll = rng.random()
        if roll < 0.15:
            continue  # never polled
        if roll < 0.3:
            state = EndpointState().after_failure("timeout", "no answer", 1700000000.5, 0.25)
        elif roll < 0.4:
            state = EndpointState().after_success(None, False, 1.7e9, 0.5)  # not enrolled
        else:
            invoices = [random_invoice(rng, k) for k in range(rng.randint(0, 40))]
            state = invoice_state(invoices, rng.choice([1700000000.0, 1.25]), rng.choice(NUMBERS))
            if rng.random() < 0.3:
                state = state.after_failure("auth", "HTTP 403", 1.8e9, 0.1)  # the last good data stays
        store.record_poll(account_id, "invoice_history", state, poll_counts(requests, errors), rng.choice([0, 2]))
    if rng.random() < 0.3:
        store.record_poll("", "discovery", None, poll_counts({"200": 1}))
    return store


class _Families(Collector):
    """The same samples as the renderer's, as prometheus_client metric families."""

    def __init__(self, families: Sequence[Family]) -> None:
        self.metrics: dict[Family, GaugeMetricFamily | CounterMetricFamily] = {}
        for f in families:
            make = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
            self.metrics[f] = make(f.name, f.doc, labels=list(f.labels))

    def add(self, family: Family, labels: Sequence[str], value: float) -> None:
        self.metrics[family].add_metric(list(labels), value)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics.values())


def reference(snapshot: Snapshot) -> Collector:
    collectors = snapshot.status.setup.collectors.values()
    families = [*(f for c in collectors for f in c.families), *POLL_FAMILIES, *COUNTER_FAMILIES, *EXPORTER_FAMILIES]
    out = _Families(families)
    for c in collectors:
        for account in snapshot.accounts.values():
            state = account.endpoints.get(c.name)
            if state is not None:
                endpoint_samples(c, (account.account_id, account.name), state, out)
    for account_id in sorted(snapshot.counts):
        count_samples(account_id, snapshot.counts[account_id], out)
    exporter_samples(snapshot.status, out, snapshot.pauses)
    return out


def test_exposition_is_what_prometheus_client_writes_byte_for_byte() -> None:
    rng = random.Random(7)
    for round_ in range(150):
        store = random_store(rng)
        metrics = MetricsConfig(amount_divisor=rng.choice([100.0, 1.0, 3.0]),
                                invoice_series=rng.choice(["unpaid", "all", "none"]),
                                invoice_pdf_url=rng.random() < 0.5)
        config = config_with(divisor=metrics.amount_divisor, metrics=metrics,
                             sharding=ShardingConfig(rng.randint(0, 2), 3))
        store.set_status(status_of(config, round_, rng.random() < 0.8))
        if rng.random() < 0.3:
            store.record_poll("", "discovery", None, poll_counts(pauses={"retry-after": 2, "ratelimit": 1}))
        renderer = Renderer(store)
        for step in range(3):  # fresh, from the kept pieces, after some accounts were polled again
            ref = reference(store.snapshot())
            text, om = generate_latest(ref), generate_openmetrics(ref)
            assert renderer.render().body == text, f"round {round_} step {step}"
            assert renderer.render(OPENMETRICS).body == om, f"round {round_} step {step}"
            assert gzip.decompress(renderer.render(None, "gzip", "Prometheus/3.0").body) == text
            assert gzip.decompress(renderer.render(OPENMETRICS, "gzip, deflate").body) == om
            if step == 1:
                for account_id in list(store.snapshot().accounts)[::2]:
                    state = invoice_state([random_invoice(rng, k) for k in range(rng.randint(0, 5))])
                    store.record_poll(account_id, "invoice_history", state, poll_counts({"200": 1}))


def test_accounts_polled_one_by_one_after_the_first_scrape_fill_blocks_of_bounded_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At start-up every account is unpolled (no lines), so the first scrape keeps one block per family;
    each poll then splices an account in, and a block grown too large is cut again."""
    monkeypatch.setattr(render_blocks, "BLOCK_BYTES", 2048)
    rng = random.Random(11)
    store = store_for(config_with())
    ids = [f"{i:032x}" for i in range(60)]
    store.set_accounts([(i, f"acc{i[-2:]}") for i in ids], ["invoice_history"])
    store.set_status(status_of(config_with(metrics=MetricsConfig(invoice_series="all"))))
    renderer = Renderer(store)
    renderer.render(None, "gzip", "Prometheus/3.5.0")
    for n, account_id in enumerate(ids):
        state = invoice_state([random_invoice(rng, k) for k in range(rng.randint(0, 12))], 1.7e9 + n)
        store.record_poll(account_id, "invoice_history", state, poll_counts({"200": 1}))
        zipped = renderer.render(None, "gzip", "Prometheus/3.5.0").body
        if n % 10 == 9:
            expected = generate_latest(reference(store.snapshot()))
            assert renderer.render().body == expected and gzip.decompress(zipped) == expected
    largest = max(len(b) for blocks in renderer._billing.blocks.blocks for b in blocks)
    assert largest <= render_blocks.SPLIT_AT * 2048 + 12 * 400  # at most one piece over the split size


def test_whole_cent_amounts_print_as_written() -> None:
    store = store_for(config_with())
    store.set_accounts([("a" * 32, "prod")], ["invoice_history"])
    inv = Invoice("in_1", "usd", 8622996.0, 0.0, 8622996.0, "open")
    store.record_poll("a" * 32, "invoice_history", invoice_state([inv, dataclasses.replace(inv, id="in_2")]),
                      poll_counts())
    text = Renderer(store).render().body.decode()
    assert 'invoice_id="in_1"} 86229.96\n' in text
    assert 'cloudflare_ai_gateway_account_amount_due{account="prod",account_id="' + "a" * 32 + '",currency="usd"} ' \
        "172459.92\n" in text


def test_a_poll_of_one_account_renders_only_that_account(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    original = InvoiceHistoryCollector.render

    def counting(self: InvoiceHistoryCollector, acc: tuple[str, str], *args: Any) -> None:
        calls.append(acc)
        original(self, acc, *args)

    monkeypatch.setattr(InvoiceHistoryCollector, "render", counting)
    store = store_for(config_with())
    ids = [f"{i:032x}" for i in range(50)]
    store.set_accounts([(i, f"acc{i[-2:]}") for i in ids], ["invoice_history"])
    rng = random.Random(1)
    for account_id in ids:
        state = invoice_state([random_invoice(rng, k) for k in range(5)])
        store.record_poll(account_id, "invoice_history", state, poll_counts({"200": 1}))
    store.set_status(status_of(config_with(metrics=MetricsConfig(invoice_series="all"))))
    renderer = Renderer(store)
    first = renderer.render(None, "gzip").body
    assert len(calls) == 50
    calls.clear()
    # API requests counted (a poll in progress, discovery) never re-render billing data
    store.record_poll("", "discovery", None, poll_counts({"200": 3}, {"rate_limited": 1}))
    assert renderer.render(None, "gzip").body != first and calls == []
    # one account polled: that account alone is rendered again, whatever the format
    store.record_poll(ids[7], "invoice_history", invoice_state([random_invoice(rng, 99)]), poll_counts({"200": 1}))
    for accept in (None, OPENMETRICS):
        for encoding in (None, "gzip"):
            renderer.render(accept, encoding)
    assert calls == [(ids[7], "acc07")]
    text = renderer.render().body
    assert text == generate_latest(reference(store.snapshot()))


def gzip_members(body: bytes) -> int:
    count = 0
    while body:
        d = zlib.decompressobj(31)
        d.decompress(body)
        body = d.unused_data
        count += 1
    return count


@pytest.mark.e2e
def test_the_gzip_answer_is_many_members_read_whole_by_python_gzip_and_promtool(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_blocks, "BLOCK_BYTES", 1024)  # many blocks, so many members to read and splice
    rng = random.Random(3)
    store = store_for(config_with())
    ids = [f"{i:032x}" for i in range(30)]
    store.set_accounts([(i, "acc" + i[-2:]) for i in ids], ["invoice_history"])
    for account_id in ids:
        invoices = [Invoice(f"in_{k}", rng.choice(["usd", "eur"]), rng.randint(0, 10**6), 0.0, rng.randint(1, 999),
                            "open", 1.0, True, 1.7e9) for k in range(10)]
        store.record_poll(account_id, "invoice_history", invoice_state(invoices),
                          poll_counts({"200": 2}, {"server_error": 1}))
    renderer = Renderer(store)
    plain = renderer.render().body
    zipped = renderer.render(None, "gzip", "Prometheus/3.5.0")
    assert zipped.content_encoding == "gzip" and gzip_members(zipped.body) > 30
    assert gzip.decompress(zipped.body) == plain
    # other clients (curl, httpx stop after the first member) get the same segments as one member
    single = renderer.render(None, "gzip", "curl/8.0")
    assert gzip_members(single.body) == 1 and zlib.decompress(single.body, 31) == plain
    assert len(single.body) < len(zipped.body)
    unzipped = subprocess.run(["gzip", "-d", "-c"], input=zipped.body, capture_output=True, check=True,
                              timeout=30).stdout
    assert unzipped == plain
    find_program("promtool")
    path = tmp_path / "metrics.txt"
    path.write_bytes(unzipped)
    result = run_tool("sh", "-c", f"promtool check metrics < {path}")
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def test_gzip_blocks_compress_like_one_stream_and_a_poll_recompresses_only_its_blocks(
        compressions: list[bytes]) -> None:
    store = store_for(config_with())
    ids = [f"{i:032x}" for i in range(1000)]
    store.set_accounts([(i, f"team-{i[-4:]}") for i in ids], ["invoice_history"])

    def invoices(n: int, paid: float) -> EndpointState:
        return invoice_state([Invoice(f"in_{n}_{k}", "usd", 1000.0 + n, paid, 1000.0 + n - paid, "open", 1.0, True,
                                      1.7e9 + n) for k in range(2)])

    for n, account_id in enumerate(ids):
        store.record_poll(account_id, "invoice_history", invoices(n, 0.0), poll_counts({"200": 1}))
    store.set_status(status_of(config_with(metrics=MetricsConfig(invoice_series="all"))))
    renderer = Renderer(store)
    plain = renderer.render().body
    whole = len(gzip.compress(plain, 6))  # blocks of 2-line pieces and a member per family header: 1.30x
    for agent in ("Prometheus/3.5.0", "curl/8.0"):
        body = renderer.render(None, "gzip", agent).body
        assert gzip.decompress(body) == plain and len(body) <= 1.35 * whole, (agent, len(body), whole)

    compressions.clear()  # what the first renders compressed
    renderer.render(None, "gzip", "Prometheus/3.5.0")
    assert compressions == []  # unchanged: nothing compressed again, not even the exporter's own families
    compressions.clear()
    polled = ids[500]
    store.record_poll(polled, "invoice_history", invoices(500, 250.0), poll_counts({"200": 1}))
    body = renderer.render(None, "gzip", "Prometheus/3.5.0").body
    plain = renderer.render().body
    assert gzip.decompress(body) == plain
    assert compressions and all(polled.encode() in part for part in compressions)  # only the parts holding its lines
    assert sum(map(len, compressions)) < len(plain) / 20
    compressions.clear()
    assert zlib.decompress(renderer.render(None, "gzip", "curl/8.0").body, 31) == plain
    assert compressions == []  # the single-member answer uses the same blocks
