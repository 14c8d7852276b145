"""The first scrape after one account's poll against a scrape of an unchanged snapshot, in-process.

The real ``SnapshotStore`` and ``Renderer`` with 1,000 accounts x 20 invoices (``invoice_series: all``), built
from the same wire invoices the fake API serves and parsed by the exporter's own parser. A "scrape" is
``Renderer.render`` plus the server's own write (``batches``, ``send_buffers``) into a socket that a child
process drains. "After one poll": one account gets a new ``EndpointState`` (the same invoices, a new poll time),
as a poll leaves it, with its request counted; then one scrape. Medians over ``--rounds`` rounds, each a
different account.

    python -m bench.firstscrape [--accounts 1000] [--invoices-per-account 20] [--rounds 21]

prints one JSON object; ``bench/run.py`` runs it in a child process of its own.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.fakeserver import account_id, account_name, make_invoices
from exporter.collectors.invoice_history import InvoiceData, parse_invoice, totals
from exporter.config.model import MetricsConfig
from exporter.render import Rendered, Renderer
from exporter.snapshot import EndpointState
from exporter.web.send import batches, send_buffers
from tests.support import config_with, poll_counts, store_for

ENDPOINT = "invoice_history"
VARIANTS = {  # name -> (Accept, Accept-Encoding, User-Agent)
    "plain": (None, None, None),
    "gzip_prometheus": (None, "gzip", "Prometheus/2.42.0"),
    "gzip_other": (None, "gzip", "curl/8.5.0"),
}


class Sink:
    """A socket whose other end a child process (``cat``) drains into /dev/null: a scrape's write costs the
    kernel's copy, as it does for Prometheus, and the server's own ``batches`` and ``send_buffers`` write."""

    def __init__(self) -> None:
        self.sock, other = socket.socketpair()
        self.reader = subprocess.Popen(["cat"], stdin=other.fileno(), stdout=subprocess.DEVNULL)
        other.close()

    def write(self, answer: Rendered) -> int:
        for batch in batches(answer.chunks):
            send_buffers(self.sock, batch, time.monotonic() + 30)
        return sum(map(len, answer.chunks))

    def close(self) -> None:
        self.sock.close()
        self.reader.wait(timeout=10)


def state_for(invoices: list[dict[str, Any]], at: float) -> EndpointState:
    parsed = tuple(i for i in (parse_invoice(raw) for raw in invoices) if i is not None)
    return EndpointState().after_success(InvoiceData(parsed, totals(parsed)), True, at, 0.05)


def measure(accounts: int, per_account: int, rounds: int) -> dict[str, Any]:
    rng = random.Random(f"firstscrape {accounts} {per_account}")
    now = int(time.time())
    store = store_for(config_with("invoice_history", metrics=MetricsConfig(invoice_series="all")))
    ids = [(account_id(i), account_name(i)) for i in range(accounts)]
    store.set_accounts(ids, [ENDPOINT])
    raw = {}
    for i, (aid, _) in enumerate(ids):
        raw[aid] = make_invoices(rng, i, per_account, per_account, now)
        store.record_poll(aid, ENDPOINT, state_for(raw[aid], now), poll_counts({"200": 1}))
    renderer = Renderer(store)
    out: dict[str, Any] = {"accounts": accounts, "invoices": accounts * per_account, "rounds": rounds}
    sink = Sink()
    write = sink.write
    started = time.process_time()
    for accept, encoding, agent in VARIANTS.values():
        write(renderer.render(accept, encoding, agent))
    out["first_render_cpu_seconds"] = time.process_time() - started
    for name, (accept, encoding, agent) in VARIANTS.items():
        unchanged, after_poll = [], []
        size = 0
        for r in range(rounds):
            t0 = time.perf_counter()
            size = write(renderer.render(accept, encoding, agent))
            unchanged.append(time.perf_counter() - t0)
            aid = ids[(r * 37) % accounts][0]
            store.record_poll(aid, ENDPOINT, state_for(raw[aid], now + r + 1), poll_counts({"200": 1}))
            t0 = time.perf_counter()
            write(renderer.render(accept, encoding, agent))
            after_poll.append(time.perf_counter() - t0)
        u, a = statistics.median(unchanged), statistics.median(after_poll)
        out[name] = {"bytes": size, "unchanged_ms": u * 1e3, "after_poll_ms": a * 1e3, "ratio": a / u}
    sink.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.firstscrape")
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--invoices-per-account", type=int, default=20)
    p.add_argument("--rounds", type=int, default=21)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.accounts, args.invoices_per_account, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
