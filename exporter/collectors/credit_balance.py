"""``credit-balance``: Unified Billing credits, the payment method and the auto top-up. One request per poll.

``auto_topup_failing`` is decided from this one answer alone (the collector keeps no state between polls):
1 when the auto top-up config is present and
  (a) ``topup_config.error`` is a non-empty string (the API reports the last auto top-up failed), or
  (b) ``topup_config.lastFailedAt`` is set and the balance is below ``topup_config.threshold``: a failure is on
      record and no refill has lifted the balance back over the threshold since (a successful auto top-up runs
      when the balance falls below the threshold and adds ``amount``, so it would have).
else 0; absent when the answer has no ``topup_config``. Known limits: (b) also holds for the short time between
the balance dropping under the threshold and the next top-up running when an old failure is on record (alerts
should wait a few polls), and it misses a failure when a manual top-up has lifted the balance (then nothing is
at risk until the balance falls again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from exporter.cloudflare.account import AccountApi
from exporter.cloudflare.errors import NotEnrolled
from exporter.collectors._wire import boolean, bounded_label, number, optional_object, result_object, string, timestamp
from exporter.collectors.base import ACC, NS, Acc, Collector, Family, Fetched, Route, SampleRequest, Sink, money
from exporter.collectors.cells import StatusCell, StatusLine
from exporter.config import values
from exporter.config.model import MoneySettings, setting
from exporter.samples import DEMO_NAMES, HOUR, STAGING_BURN_PER_SECOND, STAGING_START_BALANCE, envelope
from exporter.words import dollars

PATH = "billing/credit-balance"
# Label values of payment_method_info: a card brand is a short word (Stripe: visa, mastercard, amex, ...),
# last4 is four digits; anything else is exported as "other" (a label takes few, short values).
BRAND_RE = re.compile(r"[a-z0-9_]{1,24}")
LAST4_RE = re.compile(r"[0-9]{4}")

BALANCE = Family(f"{NS}_credit_balance", "Unified Billing credit balance, in major currency units "
                 "(credit-balance balance / amount_divisor).", ACC)
PAYMENT_METHOD_PRESENT = Family(f"{NS}_payment_method_present",
                                "1 if the account has a default payment method, else 0.", ACC)
PAYMENT_METHOD_INFO = Family(f"{NS}_payment_method_info", "The default payment method's card brand and last four "
                             "digits; always 1 (only with collectors.credit_balance.payment_method_labels).",
                             (*ACC, "brand", "last4"))
TOPUP_ENABLED = Family(f"{NS}_auto_topup_enabled", "1 if an auto top-up is configured (amount and threshold set) "
                       "and not disabled, else 0.", ACC)
TOPUP_THRESHOLD = Family(f"{NS}_auto_topup_threshold", "Balance below which an auto top-up runs, in major "
                         "currency units.", ACC)
TOPUP_AMOUNT = Family(f"{NS}_auto_topup_amount", "Amount one auto top-up adds, in major currency units.", ACC)
TOPUP_LAST_FAILURE = Family(f"{NS}_auto_topup_last_failure_timestamp_seconds",
                            "When an auto top-up last failed (topup_config.lastFailedAt), Unix time.", ACC)
TOPUP_FAILING = Family(f"{NS}_auto_topup_failing", "1 while the API reports an auto top-up error, or a failure is "
                       "on record and the balance is still below the threshold; else 0 (see docs/billing.md).", ACC)


@dataclass(frozen=True)
class TopupConfig:
    amount: float | None = None  # API units
    threshold: float | None = None  # API units
    disabled_reason: str | None = None
    error: str | None = None
    last_failed_at: float | None = None  # Unix seconds; None when never (null, missing, or 0)

    @property
    def configured(self) -> bool:
        return self.amount is not None and self.threshold is not None

    @property
    def enabled(self) -> bool:
        return self.configured and not (self.disabled_reason or "").strip()


@dataclass(frozen=True)
class CreditBalance:
    balance: float  # API units
    payment_method_present: bool | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    has_card: bool = False  # payment_method was an object
    topup: TopupConfig | None = None
    first_topup_success: bool | None = None

    @property
    def auto_topup_failing(self) -> bool | None:
        """The definition in this module's docstring; None without a top-up config."""
        topup = self.topup
        if topup is None:
            return None
        if (topup.error or "").strip():
            return True
        return topup.last_failed_at is not None and topup.threshold is not None and self.balance < topup.threshold

    @property
    def enrolled(self) -> bool:
        """False for an account that does not use Unified Billing: balance 0, no payment method, no auto top-up
        config (null, or neither amount, threshold nor error set) and first_topup_success not true."""
        topup = self.topup
        no_topup = topup is None or not (topup.configured or (topup.error or "").strip())
        return not (self.balance == 0 and not self.payment_method_present and not self.has_card and no_topup
                    and self.first_topup_success is not True)


def parse_credit_balance(body: Any) -> CreditBalance:
    result = result_object(body, "credit-balance")
    where = "credit-balance: result"
    balance = number(result, "balance", where, required=True)
    assert balance is not None
    card = optional_object(result, "payment_method", where)
    present = boolean(result, "has_default_payment_method", where)
    if present is None and "payment_method" in result:
        present = card is not None
    raw_topup = optional_object(result, "topup_config", where)
    topup = None
    if raw_topup is not None:
        tw = f"{where}.topup_config"
        last_failed = timestamp(raw_topup, "lastFailedAt", tw)
        topup = TopupConfig(
            amount=number(raw_topup, "amount", tw),
            threshold=number(raw_topup, "threshold", tw),
            disabled_reason=string(raw_topup, "disabledReason", tw),
            error=string(raw_topup, "error", tw),
            last_failed_at=last_failed if last_failed is not None and last_failed > 0 else None,
        )
    return CreditBalance(
        balance=balance,
        payment_method_present=present,
        card_brand=_card_label(card, "brand", BRAND_RE, f"{where}.payment_method"),
        card_last4=_card_label(card, "last4", LAST4_RE, f"{where}.payment_method"),
        has_card=card is not None,
        topup=topup,
        first_topup_success=boolean(result, "first_topup_success", where),
    )


def _card_label(card: dict[str, Any] | None, key: str, pattern: re.Pattern[str], where: str) -> str | None:
    value = string(card, key, where) if card is not None else None
    return None if value is None else bounded_label(value, pattern)


@dataclass(frozen=True)
class CreditBalanceSettings(MoneySettings):
    interval: float = setting(60.0, values.INTERVAL, "how often each account's credit balance is polled")
    payment_method_labels: bool = setting(False, values.boolean, "export the card's brand and last four digits")


@dataclass(frozen=True)
class CreditBalanceSample:
    """What ``credit-balance`` answers for a sample account; the defaults are an account without Unified
    Billing. ``topup_config`` is the camelCase object as the API sends it (``topup/config`` answers it too)."""

    balance: float = 0.0
    has_default_payment_method: bool = False
    payment_method: dict[str, Any] | None = None
    topup_config: dict[str, Any] | None = None
    first_topup_success: bool | None = None  # None: left out of the answer


def topup_config(amount: float | None = None, threshold: float | None = None, *, error: str | None = None,
                 last_failed_at: float | None = None, disabled_reason: str | None = None) -> dict[str, Any]:
    """A ``topup_config`` object; ``last_failed_at`` in unix seconds, sent as milliseconds."""
    failed = None if last_failed_at is None else int(last_failed_at * 1000)
    return {"amount": amount, "threshold": threshold, "disabledReason": disabled_reason, "error": error,
            "lastFailedAt": failed}


def _sample(account: str, now: float, started: float) -> CreditBalanceSample:
    """production: plenty, auto top-up working; staging: draining toward zero as time passes; research: the
    last auto top-up failed (a declined card); bulk: large; hobby: no Unified Billing."""
    name = DEMO_NAMES.get(account)
    if name == "production":
        return CreditBalanceSample(182_450.0, True, {"brand": "visa", "last4": "4242"},
                                   topup_config(100_000, 50_000), True)
    if name == "staging":
        balance = max(0.0, STAGING_START_BALANCE - STAGING_BURN_PER_SECOND * (now - started))
        return CreditBalanceSample(round(balance, 2), False, None, topup_config(), True)
    if name == "research":
        failing = topup_config(50_000, 10_000, error="Your card was declined.", last_failed_at=now - 2 * HOUR)
        return CreditBalanceSample(3_275.5, True, {"brand": "mastercard", "last4": "0341"}, failing, True)
    if name == "bulk":
        return CreditBalanceSample(1_265_000.0, True, {"brand": "amex", "last4": "1881"},
                                   topup_config(500_000, 250_000), True)
    return CreditBalanceSample(first_topup_success=False if name == "hobby" else None)


def _answer(sample: CreditBalanceSample, _: SampleRequest) -> tuple[int, Any]:
    result: dict[str, Any] = {
        "balance": sample.balance, "has_default_payment_method": sample.has_default_payment_method,
        "payment_method": sample.payment_method, "topup_config": sample.topup_config}
    if sample.first_topup_success is not None:
        result["first_topup_success"] = sample.first_topup_success
    return 200, envelope(result)


def _topup_answer(sample: CreditBalanceSample, _: SampleRequest) -> tuple[int, Any]:
    return 200, envelope(sample.topup_config)


class CreditBalanceCollector(Collector[CreditBalanceSettings, CreditBalance]):
    name = "credit_balance"
    title = "credit balance"
    settings_type = CreditBalanceSettings
    columns = ("Credit balance",)
    demo_interval = 10.0  # the staging balance drains: a slope after two polls
    routes = (Route("credit_balance", PATH, _answer), Route("topup_config", "billing/topup/config", _topup_answer))
    families = (BALANCE, PAYMENT_METHOD_PRESENT, PAYMENT_METHOD_INFO, TOPUP_ENABLED, TOPUP_THRESHOLD, TOPUP_AMOUNT,
                TOPUP_LAST_FAILURE, TOPUP_FAILING)
    sample = staticmethod(_sample)

    async def fetch(self, api: AccountApi, previous: CreditBalance | None) -> Fetched:
        data = parse_credit_balance(await api.get(PATH, {}, accept_not_enrolled=True))
        if not data.enrolled:
            raise NotEnrolled("no credits, payment method or auto top-up")
        return Fetched(data=data, summary={"balance": data.balance})

    def render(self, acc: Acc, data: CreditBalance, out: Sink) -> None:
        divisor = self.settings.amount_divisor
        out.add(BALANCE, acc, money(data.balance, divisor))
        if data.payment_method_present is not None:
            out.add(PAYMENT_METHOD_PRESENT, acc, 1.0 if data.payment_method_present else 0.0)
        if self.settings.payment_method_labels and data.has_card:
            out.add(PAYMENT_METHOD_INFO, (*acc, data.card_brand or "", data.card_last4 or ""), 1.0)
        topup = data.topup
        out.add(TOPUP_ENABLED, acc, 1.0 if topup is not None and topup.enabled else 0.0)
        if topup is None:
            return
        if topup.threshold is not None:
            out.add(TOPUP_THRESHOLD, acc, money(topup.threshold, divisor))
        if topup.amount is not None:
            out.add(TOPUP_AMOUNT, acc, money(topup.amount, divisor))
        if topup.last_failed_at is not None:
            out.add(TOPUP_LAST_FAILURE, acc, topup.last_failed_at)
        out.add(TOPUP_FAILING, acc, 1.0 if data.auto_topup_failing else 0.0)

    def status(self, data: CreditBalance, now: float) -> tuple[StatusCell, ...]:
        lines = [StatusLine(dollars(data.balance / self.settings.amount_divisor), "amount")]  # credits are USD
        if data.auto_topup_failing:
            lines.append(StatusLine("auto top-up failing", "warn"))
        return (StatusCell(tuple(lines), attention=bool(data.auto_topup_failing)),)


COLLECTOR = CreditBalanceCollector
