"""The fake Cloudflare API in a child process of its own, sized for a benchmark.

The bench runs the fake here, not in its own process, so that the fake's Python threads never compete
for one GIL with the load generator or the measuring code. Protocol:

- argv: ``--accounts N --invoices-per-account M [--unpaid-per-account U] [--latency S] [--max-seconds T]``;
- stdout: one line, the base URL, once the fake is listening;
- it serves until its standard input closes (or SIGTERM, or ``--max-seconds``), then writes every recorded
  request as JSON to ``--requests-file`` (when given) and exits.

Request times are ``time.monotonic()``, which on Linux is one clock for every process of the machine, so
the bench can put them next to its own.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import string
import sys
import threading
import time
from pathlib import Path
from typing import Any

from exporter.collectors import REGISTRY
from exporter.samples import DEMO_ACCOUNTS
from tests.fakeapi import FakeCloudflareAPI, invoice

TOKEN = "bench-token-5f1c0e7a9d2b"
_DAY = 86400


def account_id(index: int) -> str:
    return f"{index:032x}"


def account_name(index: int) -> str:
    return f"account-{index:04d}"


def make_invoices(rng: random.Random, index: int, count: int, unpaid: int, now: int) -> list[dict[str, Any]]:
    """``count`` monthly invoices, newest first; the newest ``unpaid`` are open, the rest paid in full."""
    out = []
    alphabet = string.ascii_letters + string.digits
    for j in range(count):
        amount = rng.randrange(1_500, 980_000)
        is_unpaid = j < unpaid
        invoice_id = "in_" + "".join(rng.choices(alphabet, k=24))
        out.append(invoice(
            id=invoice_id,
            amount_due=amount,
            amount_paid=0 if is_unpaid else amount,
            status="open" if is_unpaid else "paid",
            created=now - (j * 30 + index % 28 + 1) * _DAY,
            attempt_count=0 if is_unpaid else 1,
            attempted=not is_unpaid,
            description=f"AI Gateway usage, invoice {j}",
            invoice_pdf=f"https://pay.stripe.com/invoice/acct_1Bench/{invoice_id}/pdf",
        ))
    return out


def build(accounts: int, per_account: int, unpaid: int, latency: float, per_page: int) -> FakeCloudflareAPI:
    # The fake's own rate limit is set out of reach: the exporter's budget is what is measured, and the
    # fake's Ratelimit header must never tell the exporter to pause.
    api = FakeCloudflareAPI(token=TOKEN, default_per_page=per_page, rate_limit=(10**9, 300.0))
    rng = random.Random(f"bench {accounts} {per_account} {unpaid}")
    now = int(time.time())
    # Every account uses Unified Billing like the demo's "production" account: credits, auto top-up, a
    # spending limit (so the spending_limit collector also reads usage-history), hourly usage, an upcoming invoice.
    samples = {c.name: c.sample(DEMO_ACCOUNTS["production"], now, now) for c in REGISTRY}
    for i in range(accounts):
        api.add_account(account_id(i), account_name(i), make_invoices(rng, i, per_account, unpaid, now),
                        latency=latency, samples=dict(samples))
    return api


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fakeserver")
    p.add_argument("--accounts", type=int, required=True)
    p.add_argument("--invoices-per-account", type=int, required=True)
    p.add_argument("--unpaid-per-account", type=int, default=None, help="default: all of them")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each billing answer")
    p.add_argument("--per-page", type=int, default=50, help="the fake's default per_page")
    p.add_argument("--requests-file", type=Path)
    p.add_argument("--max-seconds", type=float, default=600.0, help="exit by itself after this long")
    args = p.parse_args(argv)
    unpaid = args.invoices_per_account if args.unpaid_per_account is None else args.unpaid_per_account
    api = build(args.accounts, args.invoices_per_account, unpaid, args.latency, args.per_page)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the bench closed our stdin
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    api.start()
    print(api.base_url, flush=True)
    done.wait(args.max_seconds)
    api.stop()
    if args.requests_file is not None:
        records = [{"time": r.time, "status": r.status, "account_id": r.account_id,
                    "page": r.query.get("page"), "path": r.path} for r in api.requests]
        args.requests_file.write_text(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
