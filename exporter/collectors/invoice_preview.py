"""``invoice-preview``: the upcoming invoice. One request per poll.

An account with nothing upcoming (HTTP 404 or a non-auth error answer, or a success with an empty result) is
``Fetched(data=None, enrolled=False)``: endpoint_enrolled 0, poll_success 1, no upcoming_invoice series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.collectors._wire import Malformed, currency, number, optional_result, string, timestamp
from exporter.collectors.base import ACC, NS, AccountApi, Family, Fetched, Sink, money
from exporter.config import InvoicePreviewSettings

PATH = "invoice-preview"

AMOUNT_DUE = Family(f"{NS}_upcoming_invoice_amount_due", "Amount due on the upcoming invoice, in major currency "
                    "units (invoice-preview amount_due / amount_divisor).", (*ACC, "currency"))
PERIOD_END = Family(f"{NS}_upcoming_invoice_period_end_timestamp_seconds",
                    "End of the upcoming invoice's billing period, Unix time.", ACC)


@dataclass(frozen=True)
class UpcomingInvoice:
    """Amounts in API units, times in Unix seconds; invoice lines are not kept."""

    amount_due: float
    currency: str  # lowercased
    id: str | None = None
    amount_paid: float | None = None
    amount_remaining: float | None = None
    period_start: float | None = None
    period_end: float | None = None
    status: str | None = None


def parse_invoice_preview(body: Any) -> UpcomingInvoice | None:
    """The upcoming invoice; None for a null or empty result (nothing upcoming)."""
    result = optional_result(body, PATH)
    if not result:
        return None
    where = f"{PATH}: result"
    amount_due = number(result, "amount_due", where, required=True)
    code = string(result, "currency", where, required=True)
    assert amount_due is not None and code is not None
    return UpcomingInvoice(
        amount_due=amount_due,
        currency=currency(code, f"{where}.currency"),
        id=string(result, "id", where),
        amount_paid=number(result, "amount_paid", where),
        amount_remaining=number(result, "amount_remaining", where),
        period_start=timestamp(result, "period_start", where),
        period_end=timestamp(result, "period_end", where),
        status=string(result, "status", where),
    )


class InvoicePreviewCollector:
    endpoint: str = "invoice_preview"
    families: tuple[Family, ...] = (AMOUNT_DUE, PERIOD_END)

    def requests_per_poll(self) -> int:
        return 1

    async def fetch(self, api: AccountApi) -> Fetched:
        try:
            body = await api.get(PATH, {}, accept_not_enrolled=True)
            invoice = None if body is None else parse_invoice_preview(body)
        except Malformed as err:
            raise api.fail(err.reason, str(err)) from None
        if invoice is None:
            return Fetched(data=None, enrolled=False)
        return Fetched(data=invoice)

    def render(self, acc: tuple[str, str], data: UpcomingInvoice | None, settings: InvoicePreviewSettings,
               out: Sink) -> None:
        if data is None:
            return
        out.add(AMOUNT_DUE, (*acc, data.currency), money(data.amount_due, settings.amount_divisor))
        if data.period_end is not None:
            out.add(PERIOD_END, acc, data.period_end)
