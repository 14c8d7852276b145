"""GET /accounts/{id}/ai-gateway/billing/invoice-history: the invoices and the account's unpaid totals."""

from __future__ import annotations

import hashlib
import json
import math
import random
import string
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any, Self

from exporter.cloudflare.account import AccountApi
from exporter.collectors._wire import MAX_CURRENCY_CHARS, is_finite
from exporter.collectors.base import ACC, NS, Acc, Collector, Family, Fetched, Route, SampleRequest, Sink, money
from exporter.collectors.cells import StatusCell, StatusLine
from exporter.config.model import Config, Inherited, MoneySettings
from exporter.samples import DAY, DEMO_ACCOUNTS, envelope, error_envelope, query_int
from exporter.words import date, duration

PATH = "billing/invoice-history"

SETTLED_STATUSES = frozenset({"paid", "void", "draft"})
INV = (*ACC, "invoice_id")
_SMALL_FLOATS = {float(i): float(i) for i in range(16)}  # 0.0 amounts, attempt counts: one object each


@dataclass(frozen=True, slots=True)
class Invoice:
    """One invoice as the API sent it; amounts in the API's unit (smallest currency unit by default)."""

    id: str
    currency: str
    amount_due: float
    amount_paid: float
    amount_remaining: float
    status: str | None = None
    attempt_count: float | None = None
    attempted: bool | None = None
    created: float | None = None
    created_by: str | None = None
    origin: str | None = None
    invoice_pdf: str | None = None

    def __post_init__(self) -> None:
        # Values repeated across invoices are stored once, not once per invoice (strings, zero amounts,
        # attempt counts, amount_paid equal to amount_due): about 5 MB less at 20,000 invoices.
        share = object.__setattr__
        for name in ("currency", "status", "created_by", "origin"):
            value = getattr(self, name)
            if type(value) is str:
                share(self, name, sys.intern(value))
        for name in ("amount_paid", "amount_remaining", "attempt_count"):
            value = getattr(self, name)
            if value in _SMALL_FLOATS and type(value) is float and math.copysign(1.0, value) > 0:
                share(self, name, _SMALL_FLOATS[value])
        if self.amount_paid == self.amount_due and self.amount_due != 0:
            share(self, "amount_paid", self.amount_due)

    @property
    def unpaid(self) -> bool:
        return self.amount_remaining > 0 and (self.status or "").lower() not in SETTLED_STATUSES


@dataclass(frozen=True)
class Totals:
    """The account families, computed once per poll; the status page reads them too."""

    by_status: Mapping[str, int]
    unpaid: int
    due: Mapping[str, float]  # currency -> sum of amount_due over unpaid invoices, API units
    remaining: Mapping[str, float]
    failed_attempts: float
    oldest_unpaid: float | None


@dataclass(frozen=True)
class InvoiceData:
    invoices: tuple[Invoice, ...]
    totals: Totals
    complete: bool = True  # False: the API ignored the page parameter and only part of the history was read


def totals(invoices: tuple[Invoice, ...]) -> Totals:
    by_status: Counter[str] = Counter()
    due: dict[str, float] = {}
    remaining: dict[str, float] = {}
    unpaid = 0
    failed = 0.0
    oldest: float | None = None
    for inv in invoices:
        by_status[inv.status if inv.status is not None else "unknown"] += 1
        due.setdefault(inv.currency, 0.0)
        remaining.setdefault(inv.currency, 0.0)
        if inv.unpaid:
            unpaid += 1
            due[inv.currency] += inv.amount_due  # summed in API units, divided once: less rounding
            remaining[inv.currency] += inv.amount_remaining
            if inv.attempted and inv.attempt_count:
                failed += inv.attempt_count
            if inv.created is not None and (oldest is None or inv.created < oldest):
                oldest = inv.created
    def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
        return MappingProxyType(dict(sorted(mapping.items())))

    return Totals(frozen(by_status), unpaid, frozen(due), frozen(remaining), failed, oldest)


_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "status": (str,), "attempted": (bool,), "created_by": (str,),
    "invoice_origin": (str,), "invoice_pdf": (str,), "description": (str,), "auto_advance": (bool,),
}


# Longest text kept per field: each is a label value on several series (a real invoice id has ~30 characters).
MAX_TEXT = {"id": 200, "currency": MAX_CURRENCY_CHARS, "status": 64, "created_by": 200, "invoice_origin": 200,
            "invoice_pdf": 2048, "description": 10_000}


def parse_invoice(raw: Any, pdf: bool = True) -> Invoice | None:
    """One wire invoice -> Invoice, or None when it is malformed (required fields missing or wrong type).
    Without ``pdf`` the PDF link is not kept: it is a capability URL, and 20,000 of them are 2.5 MB."""
    if not isinstance(raw, dict):
        return None
    if not all(is_finite(raw.get(k)) for k in ("amount_due", "amount_paid", "amount_remaining")):
        return None
    currency = raw.get("currency")
    if not isinstance(currency, str) or not currency.strip():
        return None
    for key, types in _OPTIONAL_TYPES.items():
        if raw.get(key) is not None and not isinstance(raw[key], types):
            return None
    for key in ("attempt_count", "created"):
        if raw.get(key) is not None and not is_finite(raw[key]):
            return None
    if any(isinstance(raw.get(key), str) and len(raw[key]) > limit for key, limit in MAX_TEXT.items()):
        return None  # a label value of megabytes, repeated on every series of the invoice
    invoice_id = raw.get("id") or "noid-" + hashlib.sha256(
        json.dumps(raw, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    return Invoice(
        id=invoice_id,
        currency=currency.strip().lower(),
        amount_due=float(raw["amount_due"]),
        amount_paid=float(raw["amount_paid"]),
        amount_remaining=float(raw["amount_remaining"]),
        status=raw.get("status"),
        attempt_count=float(raw["attempt_count"]) if raw.get("attempt_count") is not None else None,
        attempted=raw.get("attempted"),
        created=float(raw["created"]) if raw.get("created") is not None else None,
        created_by=raw.get("created_by"),
        origin=raw.get("invoice_origin"),
        invoice_pdf=raw.get("invoice_pdf") if pdf else None,
    )


def _family(name: str, doc: str, labels: tuple[str, ...]) -> Family:
    return Family(f"{NS}_{name}", doc, labels)


DUE = _family("invoice_amount_due", "Invoice amount due, in major currency units.", (*INV, "currency"))
PAID = _family("invoice_amount_paid", "Invoice amount paid, in major currency units.", (*INV, "currency"))
REMAINING = _family("invoice_amount_remaining", "Invoice amount still to pay, in major currency units.",
                    (*INV, "currency"))
ATTEMPTS = _family("invoice_payment_attempts", "Payment attempts made for the invoice.", INV)
CREATED = _family("invoice_created_timestamp_seconds", "When the invoice was created, Unix time.", INV)
INFO_LABELS = (*INV, "status", "origin", "created_by", "currency")
ACC_INVOICES = _family("account_invoices", "Invoices in the account's history by status.", (*ACC, "status"))
ACC_UNPAID = _family("account_unpaid_invoices", "Unpaid invoices (amount remaining, not paid/void/draft).", ACC)
ACC_DUE = _family("account_amount_due", "Sum of amount due over unpaid invoices, major currency units.",
                  (*ACC, "currency"))
ACC_REMAINING = _family("account_amount_remaining",
                        "Sum of amount remaining over unpaid invoices, major currency units.", (*ACC, "currency"))
ACC_FAILED = _family("account_failed_payment_attempts",
                     "Sum of payment attempts over unpaid invoices whose payment was attempted.", ACC)
ACC_OLDEST = _family("account_oldest_unpaid_invoice_created_timestamp_seconds",
                     "Creation time of the oldest unpaid invoice, Unix time.", ACC)
COMPLETE = _family("invoice_history_complete", "1 when every page of the invoice history was read, 0 when the API's "
                   "pagination could not be followed and only part of it is exported.", ACC)
INCOMPLETE = ("the invoice history is incomplete: the API ignores the page parameter and says neither how many "
              "invoices there are nor honours per_page, so only its first page is exported; set cloudflare.per_page "
              "to 1000 (the most a page holds) and report it")


# --- the sample accounts ---

INVOICE_TYPES = ("auto", "manual", "all")
PER_PAGE_MAX = 100  # what the API serves at most per page, whatever per_page asks


def invoice(*, id: str, amount_due: float, amount_paid: float = 0, amount_remaining: float | None = None,
            currency: str = "usd", status: str | None = "open", created: int, attempt_count: int = 0,
            attempted: bool = False, origin: str = "subscription_cycle", created_by: str = "system",
            description: str | None = None, invoice_pdf: str | None = None,
            auto_advance: bool | None = True) -> dict[str, Any]:
    """One wire-format invoice. Amounts are in the smallest currency unit (cents)."""
    if amount_remaining is None:
        amount_remaining = round(amount_due - amount_paid, 6)
    return {"id": id, "amount_due": amount_due, "amount_paid": amount_paid, "amount_remaining": amount_remaining,
            "currency": currency, "status": status, "created": created, "attempt_count": attempt_count,
            "attempted": attempted, "auto_advance": auto_advance, "created_by": created_by,
            "description": description, "invoice_origin": origin, "invoice_pdf": invoice_pdf}


def _invoice(rng: random.Random, now: float, days_ago: float, status: str | None = "paid", *,
             currency: str = "usd", origin: str = "subscription_cycle", attempt_count: int | None = None,
             description: str | None = None) -> dict[str, Any]:
    """A realistic sample invoice; paid ones are paid in full, all others owe everything."""
    invoice_id = "in_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))
    created = int(now - days_ago * DAY)
    amount = round(rng.uniform(150.0, 9800.0), 2)
    paid, manual = status == "paid", origin == "manual"
    attempts = (1 if paid else 0) if attempt_count is None else attempt_count
    month = time.strftime("%B %Y", time.gmtime(created))
    return invoice(
        id=invoice_id, amount_due=amount, amount_paid=amount if paid else 0, currency=currency, status=status,
        created=created, attempt_count=attempts, attempted=attempts > 0, origin=origin,
        created_by="dashboard" if manual else "system",
        description=description or ("AI Gateway credit top-up" if manual else f"AI Gateway usage, {month}"),
        invoice_pdf=None if status == "draft" else f"https://pay.stripe.com/invoice/acct_1Demo/{invoice_id}/pdf",
        auto_advance=None if manual else status != "draft")


@lru_cache(maxsize=4)
def sample_invoices(now: float) -> dict[str, list[dict[str, Any]]]:
    """Invoice history per sample account id, newest first, created relative to ``now``; amounts
    deterministic. production: all paid; staging: one fresh open invoice; research: a declined card; bulk: 120
    invoices in usd and eur over several pages; hobby: none."""
    rng = random.Random("cloudflare-ai-gateway-exporter demo")

    def monthly(count: int, first_days_ago: float) -> list[dict[str, Any]]:
        return [_invoice(rng, now, first_days_ago + 30 * i) for i in range(count)]

    ids = DEMO_ACCOUNTS
    out = {ids["production"]: monthly(12, 5)}
    out[ids["staging"]] = [_invoice(rng, now, 3, "open", attempt_count=0), *monthly(11, 33)]
    out[ids["research"]] = [
        _invoice(rng, now, 10, "open", attempt_count=1, description="AI Gateway credits, automatic top-up"),
        _invoice(rng, now, 40, "open", attempt_count=3), *monthly(10, 70)]
    odd: dict[int, str | None] = {0: "draft", 1: "open", 7: "open", 22: "open", 30: "void", 61: None,
                                  95: "uncollectible"}
    out[ids["bulk"]] = [
        _invoice(rng, now, 1 + 3 * i, odd.get(i, "paid"), currency="eur" if i % 3 == 2 else "usd",
                 origin="manual" if i % 5 == 4 else "subscription_cycle",
                 attempt_count=4 if odd.get(i) == "uncollectible" else None)
        for i in range(120)]
    out[ids["legacy"]] = monthly(6, 12)
    out[ids["hobby"]] = []
    return out


@dataclass(frozen=True)
class InvoiceSample:
    invoices: list[Any] = field(default_factory=list)  # wire-format invoices (or anything, to test parsing)


def _sample(account: str, now: float, started: float) -> InvoiceSample:
    return InvoiceSample(sample_invoices(started).get(account, []))


def invoice_page(invoices: list[Any], kind: str, page: int, per_page: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result, pagination) of one invoice-history page; malformed entries count as 'auto'."""
    def origin(entry: Any) -> str:
        return "manual" if isinstance(entry, dict) and entry.get("invoice_origin") == "manual" else "auto"

    chosen = [e for e in invoices if kind == "all" or origin(e) == kind]
    start = (page - 1) * per_page
    info = {"has_more": start + per_page < len(chosen), "page": page, "per_page": per_page,
            "total_count": len(chosen)}
    return {"invoices": chosen[start:start + per_page], "pagination": info}, info


def _answer(sample: InvoiceSample, request: SampleRequest) -> tuple[int, Any]:
    try:
        page, per_page = query_int(request.query, "page", 1, 10**9), query_int(request.query, "per_page", 50,
                                                                                  PER_PAGE_MAX)
        kind = request.query.get("type", "all")
        if kind not in INVOICE_TYPES:
            raise ValueError(kind)
    except ValueError:
        return 400, error_envelope(1001, "Invalid page, per_page or type")
    result, info = invoice_page(sample.invoices, kind, page, per_page)
    return 200, envelope(result, info)


# --- the collector ---


@dataclass(frozen=True)
class InvoiceHistorySettings(MoneySettings):
    """Default interval: poll.interval; default divisor: metrics.amount_divisor."""

    @classmethod
    def defaults(cls, inherited: Inherited) -> Self:
        return cls(interval=inherited.poll_interval, amount_divisor=inherited.amount_divisor)


class InvoiceHistoryCollector(Collector[InvoiceHistorySettings, InvoiceData]):
    name = "invoice_history"
    title = "invoices"
    settings_type = InvoiceHistorySettings
    columns = ("Unpaid",)
    routes = (Route("invoice_history", PATH, _answer),)
    sample = staticmethod(_sample)

    def __init__(self, settings: InvoiceHistorySettings, config: Config) -> None:
        super().__init__(settings, config)
        self.series = config.metrics.invoice_series
        self.pdf = config.metrics.invoice_pdf_url
        self.info = _family("invoice_info", "Invoice metadata; always 1.",
                            (*INFO_LABELS, "invoice_pdf_url") if self.pdf else INFO_LABELS)
        self.families = (DUE, PAID, REMAINING, ATTEMPTS, CREATED, self.info, ACC_INVOICES, ACC_UNPAID, ACC_DUE,
                         ACC_REMAINING, ACC_FAILED, ACC_OLDEST, COMPLETE)

    async def fetch(self, api: AccountApi, previous: InvoiceData | None) -> Fetched:
        parse = parse_invoice if self.pdf else partial(parse_invoice, pdf=False)
        read = await api.get_pages(PATH, {"type": api.account.type}, "invoices", parse)
        parsed = read.items
        # The same id on two pages (an invoice arriving between page fetches shifts offset pages): kept once,
        # the later copy, and counted with the malformed ones in api_invalid_invoices_total.
        by_id = {inv.id: inv for inv in parsed if inv is not None}
        invoices = tuple(by_id.values())
        malformed = sum(inv is None for inv in parsed)
        duplicates = len(parsed) - malformed - len(invoices)
        data = InvoiceData(invoices, totals(invoices), read.complete)
        summary = {"invoices": len(invoices), "unpaid": data.totals.unpaid, "pages": read.pages}
        if duplicates:
            summary["duplicate_invoices"] = duplicates
        # Said once per account, when the history becomes incomplete (the gauge says it at every scrape).
        newly_incomplete = not read.complete and (previous is None or previous.complete)
        return Fetched(data, skipped=malformed + duplicates, summary=summary,
                       warning=INCOMPLETE if newly_incomplete else None)

    def render(self, acc: Acc, data: InvoiceData, out: Sink) -> None:
        divisor = self.settings.amount_divisor
        if self.series != "none":
            for inv in data.invoices:
                if self.series == "all" or inv.unpaid:
                    self._invoice(out, acc, inv, divisor)
        t = data.totals
        for status, count in t.by_status.items():
            out.add(ACC_INVOICES, (*acc, status), count)
        out.add(ACC_UNPAID, acc, t.unpaid)
        for currency, amount in t.due.items():
            out.add(ACC_DUE, (*acc, currency), money(amount, divisor))
        for currency, amount in t.remaining.items():
            out.add(ACC_REMAINING, (*acc, currency), money(amount, divisor))
        out.add(ACC_FAILED, acc, t.failed_attempts)
        if t.oldest_unpaid is not None:
            out.add(ACC_OLDEST, acc, t.oldest_unpaid)
        out.add(COMPLETE, acc, 1.0 if data.complete else 0.0)

    def _invoice(self, out: Sink, acc: Acc, inv: Invoice, divisor: float) -> None:
        labels = (*acc, inv.id)
        out.add(DUE, (*labels, inv.currency), money(inv.amount_due, divisor))
        out.add(PAID, (*labels, inv.currency), money(inv.amount_paid, divisor))
        out.add(REMAINING, (*labels, inv.currency), money(inv.amount_remaining, divisor))
        if inv.attempt_count is not None:
            out.add(ATTEMPTS, labels, inv.attempt_count)
        if inv.created is not None:
            out.add(CREATED, labels, inv.created)
        info = (*labels, inv.status if inv.status is not None else "unknown", inv.origin or "",
                inv.created_by or "", inv.currency)
        out.add(self.info, (*info, inv.invoice_pdf or "") if self.pdf else info, 1.0)

    def status(self, data: InvoiceData, now: float) -> tuple[StatusCell, ...]:
        """What is unpaid per currency, how many invoices and since when, failed payment attempts."""
        t = data.totals
        divisor = self.settings.amount_divisor
        lines = [StatusLine(f"{v / divisor:,.2f} {c.upper()}", "amount") for c, v in t.remaining.items() if v > 0]
        if not lines:
            lines.append(StatusLine("nothing unpaid", "amount"))
        else:
            lines.append(StatusLine(f"{t.unpaid} unpaid invoice{'' if t.unpaid == 1 else 's'}", "note"))
            if t.oldest_unpaid is not None:
                lines.append(StatusLine(f"oldest {duration(now - t.oldest_unpaid)} (since {date(t.oldest_unpaid)})",
                                        "note"))
        if t.failed_attempts > 0:
            attempts = f"{t.failed_attempts:.0f} failed payment attempt{'' if t.failed_attempts == 1 else 's'}"
            lines.append(StatusLine(attempts, "warn"))
        if not data.complete:
            lines.append(StatusLine("history incomplete: the API ignores page", "warn"))
        return (StatusCell(tuple(lines), attention=t.failed_attempts > 0 or not data.complete),)


COLLECTOR = InvoiceHistoryCollector
