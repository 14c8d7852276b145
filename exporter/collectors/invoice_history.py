"""GET /accounts/{id}/ai-gateway/billing/invoice-history: the invoices and the account's unpaid totals."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from exporter.client import AccountApi
from exporter.collectors._wire import MAX_CURRENCY_CHARS, is_finite
from exporter.collectors.base import ACC, NS, Family, Fetched, Sink, money
from exporter.config import MetricsConfig

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


class InvoiceHistory:
    endpoint = "invoice_history"

    def __init__(self, pdf_label: bool = False) -> None:
        self.pdf = pdf_label
        self.info = _family("invoice_info", "Invoice metadata; always 1.",
                            (*INFO_LABELS, "invoice_pdf_url") if pdf_label else INFO_LABELS)
        self.families: tuple[Family, ...] = (DUE, PAID, REMAINING, ATTEMPTS, CREATED, self.info, ACC_INVOICES,
                                             ACC_UNPAID, ACC_DUE, ACC_REMAINING, ACC_FAILED, ACC_OLDEST)

    def requests_per_poll(self) -> int:
        return 1  # one page; a history longer than cloudflare.per_page takes one request per page

    async def fetch(self, api: AccountApi) -> Fetched:
        parse = parse_invoice if self.pdf else partial(parse_invoice, pdf=False)
        parsed, pages = await api.get_pages("invoice-history", {"type": api.account.type}, "invoices", parse)
        # The same id on two pages (an invoice arriving between page fetches shifts offset pages): kept once,
        # the later copy, and counted with the malformed ones in api_invalid_invoices_total.
        by_id = {inv.id: inv for inv in parsed if inv is not None}
        invoices = tuple(by_id.values())
        malformed = sum(inv is None for inv in parsed)
        duplicates = len(parsed) - malformed - len(invoices)
        data = InvoiceData(invoices, totals(invoices))
        summary = {"invoices": len(invoices), "unpaid": data.totals.unpaid, "pages": pages}
        if duplicates:
            summary["duplicate_invoices"] = duplicates
        return Fetched(data, skipped=malformed + duplicates, summary=summary)

    def render(self, acc: tuple[str, str], data: Any, settings: Any, out: Sink) -> None:
        assert isinstance(data, InvoiceData) and isinstance(settings, MetricsConfig)
        divisor = settings.amount_divisor
        series = settings.invoice_series
        pdf = self.pdf
        if series != "none":
            for inv in data.invoices:
                if series == "all" or inv.unpaid:
                    self._invoice(out, acc, inv, divisor, pdf)
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

    def _invoice(self, out: Sink, acc: tuple[str, str], inv: Invoice, divisor: float, pdf: bool) -> None:
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
        out.add(self.info, (*info, inv.invoice_pdf or "") if pdf else info, 1.0)
