"""Check that MetricsRenderer's exposition is byte for byte what prometheus_client writes for BillingCollector.

    python bench/check_renderer.py [--rounds N]

The renderer formats the billing gauges itself (see exporter/collector.py); this compares it with
``generate_latest`` / the OpenMetrics ``generate_latest`` run on the ``BillingCollector``, on random
snapshots with awkward label values (quotes, backslashes, newlines, non-ASCII, empty), odd numbers
(NaN, infinities, huge and tiny, integers) and every ``invoice_series`` and ``invoice_pdf_url`` setting.
The bench runs it first; exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import random
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from prometheus_client.exposition import generate_latest  # noqa: E402
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics  # noqa: E402

from exporter.collector import BillingCollector, ExporterStatus, MetricsRenderer  # noqa: E402
from exporter.config import Config, MetricsConfig  # noqa: E402
from exporter.snapshot import Invoice, SnapshotStore  # noqa: E402

AWKWARD = ["", "plain", 'say "hi"', "back\\slash", "new\nline", "ünïcødé ✓", "a,b=c}{", "\\n literal", "tab\there"]
NUMBERS = [0.0, -0.0, 1.0, -1.0, 3.0, 0.1, 1e-9, 1e21, 123456789.0, 1234567.5, 12.3456789012345, float("nan"),
           float("inf"), -float("inf"), 7.0, 1e16, 99999999999.0]


def random_invoice(rng: random.Random, index: int) -> Invoice:
    def maybe(choices: list[str]) -> str | None:
        return None if rng.random() < 0.2 else rng.choice(choices)

    remaining = rng.choice([*NUMBERS, 0.0, 0.0, 500.0])
    return Invoice(
        id=rng.choice(AWKWARD) + f"in_{index}",
        currency=rng.choice(["usd", "eur", 'q"x', "ü"]),
        amount_due=rng.choice(NUMBERS), amount_paid=rng.choice(NUMBERS), amount_remaining=remaining,
        status=maybe(["open", "paid", "void", "draft", "uncollectible", 'we"ird']),
        attempt_count=rng.choice([None, 0.0, 1.0, 3.0, 2.5]),
        attempted=rng.choice([None, True, False]),
        created=rng.choice([None, 1700000000.0, 1.5, 1e10]),
        created_by=maybe(AWKWARD), origin=maybe(AWKWARD), invoice_pdf=maybe(AWKWARD),
    )


def constant(status: ExporterStatus) -> Callable[[], ExporterStatus]:
    return lambda: status


def check(rounds: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    failures = 0
    for round_ in range(rounds):
        store = SnapshotStore()
        accounts = [(f"{i:032x}", rng.choice(AWKWARD) + f"acc{i}") for i in range(rng.randint(0, 6))]
        store.set_accounts(accounts)
        for account_id, _ in accounts:
            state = store.get(account_id)
            assert state is not None
            roll = rng.random()
            if roll < 0.15:
                continue  # never polled
            if roll < 0.3:
                store.put(state.after_failure("timeout", 1700000000.5, 0.25))
                continue
            invoices = tuple(random_invoice(rng, k) for k in range(rng.randint(0, 40)))
            store.put(state.after_success(invoices, rng.choice([1700000000.0, 1.25]), rng.choice(NUMBERS)))
            for _ in range(rng.randint(0, 3)):
                store.count_request(account_id, rng.choice(["200", "429", "error"]))
            if rng.random() < 0.3:
                store.count_error(account_id, "rate_limited")
                store.count_invalid_invoices(account_id, 2)
        metrics = MetricsConfig(amount_divisor=rng.choice([100.0, 1.0, 3.0]),
                                invoice_series=rng.choice(["unpaid", "all", "none"]),
                                invoice_pdf_url=rng.random() < 0.5)
        status = ExporterStatus(dataclasses.replace(Config(), metrics=metrics), round_, rng.random() < 0.8, 1.7e9)
        collector = BillingCollector(store, constant(status))
        renderer = MetricsRenderer(store, constant(status))
        cases = [
            (None, None, generate_latest(collector), False),
            ("application/openmetrics-text;version=1.0.0", None, generate_openmetrics(collector), False),
            (None, "gzip", generate_latest(collector), True),
            ("application/openmetrics-text; version=1.0.0", "gzip, deflate", generate_openmetrics(collector), True),
        ]
        for accept, encoding, expected, zipped in cases * 2:  # twice: the second answer comes from the cache
            got = renderer.render(accept, encoding).body
            if zipped:
                got = gzip.decompress(got)
            if got != expected:
                failures += 1
                if failures > 5:
                    continue
                print(f"round {round_}: {accept or 'text'} {encoding or 'plain'} differs", file=sys.stderr)
                for a, b in zip(got.splitlines(), expected.splitlines(), strict=False):
                    if a != b:
                        print(f"  got      {a!r}\n  expected {b!r}", file=sys.stderr)
                        break
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/check_renderer.py")
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args(argv)
    failures = check(args.rounds)
    print(f"renderer check: {args.rounds} random snapshots, {failures} differences")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
