"""``invoice-preview``: the upcoming invoice. One request per poll.

An account with nothing upcoming (HTTP 404 or a non-auth error answer, or a success with an empty result) is
not enrolled: endpoint_enrolled 0, poll_success 1, no upcoming_invoice series. Only what the metrics need is
read: ``amount_due`` and ``currency`` (required), ``period_end`` (absent when missing or malformed).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Any

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.errors import NotEnrolled
from exporter.collectors._wire import Malformed, currency, number, optional_result, string, timestamp
from exporter.collectors.base import ACC, NS, Acc, Collector, Family, Fetched, Route, SampleRequest, Sink, money
from exporter.config.model import MoneySettings, setting
from exporter.config.values import INTERVAL
from exporter.samples import DEMO_NAMES, envelope, error_envelope

PATH = "billing/invoice-preview"
WHERE = "invoice-preview: result"

AMOUNT_DUE = Family(f"{NS}_upcoming_invoice_amount_due", "Amount due on the upcoming invoice, in major currency "
                    "units (invoice-preview amount_due / amount_divisor).", (*ACC, "currency"))
PERIOD_END = Family(f"{NS}_upcoming_invoice_period_end_timestamp_seconds",
                    "End of the upcoming invoice's billing period, Unix time.", ACC)


@dataclass(frozen=True)
class UpcomingInvoice:
    amount_due: float  # API units
    currency: str  # lowercased
    period_end: float | None = None  # Unix seconds


def parse_invoice_preview(body: Any) -> UpcomingInvoice:
    """The upcoming invoice; NotEnrolled for a null or empty result (nothing upcoming)."""
    result = optional_result(body, "invoice-preview")
    if not result:
        raise NotEnrolled("nothing upcoming")
    amount_due = number(result, "amount_due", WHERE, required=True)
    code = string(result, "currency", WHERE, required=True)
    assert amount_due is not None and code is not None
    try:
        period_end = timestamp(result, "period_end", WHERE)
    except Malformed:
        period_end = None  # the amount is what matters; a bad date only loses the date
    return UpcomingInvoice(amount_due, currency(code, f"{WHERE}.currency"), period_end)


@dataclass(frozen=True)
class InvoicePreviewSettings(MoneySettings):
    interval: float = setting(900.0, INTERVAL, "how often each account's upcoming invoice is polled")


def preview(now: float, amount: float, currency: str = "usd", status: str = "draft") -> dict[str, Any]:
    """An upcoming invoice for the current UTC month, as the API sends it."""
    year, month = time.gmtime(now)[:2]
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    line = {"amount": amount, "currency": currency, "description": "AI Gateway credits",
            "period": {"start": start, "end": end}, "pricing": {"unit_amount_decimal": f"{amount:.2f}"},
            "quantity": 1}
    return {"id": f"upcoming_in_{start}", "amount_due": amount, "amount_paid": 0, "amount_remaining": amount,
            "currency": currency, "period_start": start, "period_end": end, "status": status,
            "invoice_lines": [line]}


@dataclass(frozen=True)
class InvoicePreviewSample:
    invoice_preview: dict[str, Any] | None = None  # None: nothing upcoming, 404


def _sample(account: str, now: float, started: float) -> InvoicePreviewSample:
    amounts = {"production": (100_000, "usd", "draft"), "staging": (2_500, "usd", "open"),
               "research": (50_000, "usd", "open"), "bulk": (120_000, "eur", "draft")}
    found = amounts.get(DEMO_NAMES.get(account, ""))
    return InvoicePreviewSample(None if found is None else preview(now, *found))


def _answer(sample: InvoicePreviewSample, _: SampleRequest) -> tuple[int, Any]:
    if sample.invoice_preview is None:
        return 404, error_envelope(1004, "No upcoming invoice")
    return 200, envelope(sample.invoice_preview)


class InvoicePreviewCollector(Collector[InvoicePreviewSettings, UpcomingInvoice]):
    name = "invoice_preview"
    title = "invoice preview"
    settings_type = InvoicePreviewSettings
    demo_interval = 60.0
    routes = (Route("invoice_preview", PATH, _answer),)
    families = (AMOUNT_DUE, PERIOD_END)
    sample = staticmethod(_sample)

    async def fetch(self, api: AccountApi, previous: UpcomingInvoice | None) -> Fetched:
        return Fetched(data=parse_invoice_preview(await api.get(PATH, {}, accept_not_enrolled=True)))

    def render(self, acc: Acc, data: UpcomingInvoice, out: Sink) -> None:
        out.add(AMOUNT_DUE, (*acc, data.currency), money(data.amount_due, self.settings.amount_divisor))
        if data.period_end is not None:
            out.add(PERIOD_END, acc, data.period_end)


COLLECTOR = InvoicePreviewCollector
