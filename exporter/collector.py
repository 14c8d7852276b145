"""Turn a Snapshot into the contract's metric families, and render them once per change.

``BillingCollector`` is a prometheus_client custom collector; ``MetricsRenderer`` keeps the rendered
exposition (plain and gzip, text and OpenMetrics) until the snapshot or the config changes, so a scrape
of an unchanged snapshot is a dictionary lookup.
"""

from __future__ import annotations

import gzip
import platform
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import Config
from exporter.snapshot import AccountState, Invoice, Snapshot, SnapshotStore

NS = "cloudflare_ai_gateway"
ACC = ["account_id", "account"]
INV = [*ACC, "invoice_id"]
# The classic text format, which every Prometheus version parses; newer client libraries label it 1.0.0.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class ExporterStatus:
    """The exporter's own state that metrics report; replaced whole on every reload."""

    config: Config
    generation: int = 0
    reload_successful: bool = True
    reload_timestamp: float = 0.0


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NS}_{name}", doc, labels=labels)


class _Families:
    def __init__(self, pdf_label: bool) -> None:
        info_labels = [*INV, "status", "origin", "created_by", "currency"] + (["invoice_pdf_url"] if pdf_label else [])
        self.due = _gauge("invoice_amount_due", "Invoice amount due, in major currency units.", [*INV, "currency"])
        self.paid = _gauge("invoice_amount_paid", "Invoice amount paid, in major currency units.", [*INV, "currency"])
        self.remaining = _gauge("invoice_amount_remaining", "Invoice amount still to pay, in major currency units.",
                                [*INV, "currency"])
        self.attempts = _gauge("invoice_payment_attempts", "Payment attempts made for the invoice.", INV)
        self.created = _gauge("invoice_created_timestamp_seconds", "When the invoice was created, Unix time.", INV)
        self.info = _gauge("invoice_info", "Invoice metadata; always 1.", info_labels)
        self.acc_invoices = _gauge("account_invoices", "Invoices in the account's history by status.",
                                   [*ACC, "status"])
        self.acc_unpaid = _gauge("account_unpaid_invoices", "Unpaid invoices (amount remaining, not paid/void/draft).",
                                 ACC)
        self.acc_due = _gauge("account_amount_due", "Sum of amount due over unpaid invoices, major currency units.",
                              [*ACC, "currency"])
        self.acc_remaining = _gauge("account_amount_remaining",
                                    "Sum of amount remaining over unpaid invoices, major currency units.",
                                    [*ACC, "currency"])
        self.acc_failed = _gauge("account_failed_payment_attempts",
                                 "Sum of payment attempts over unpaid invoices whose payment was attempted.", ACC)
        self.acc_oldest = _gauge("account_oldest_unpaid_invoice_created_timestamp_seconds",
                                 "Creation time of the oldest unpaid invoice, Unix time.", ACC)
        self.poll_success = _gauge("poll_success", "1 if the last poll of the account succeeded, else 0.", ACC)
        self.poll_last_success = _gauge("poll_last_success_timestamp_seconds",
                                        "When the account was last polled successfully, Unix time.", ACC)
        self.poll_duration = _gauge("poll_duration_seconds", "Duration of the account's last poll, all pages.", ACC)

    def all(self) -> list[Metric]:
        return [self.due, self.paid, self.remaining, self.attempts, self.created, self.info, self.acc_invoices,
                self.acc_unpaid, self.acc_due, self.acc_remaining, self.acc_failed, self.acc_oldest,
                self.poll_success, self.poll_last_success, self.poll_duration]


class BillingCollector(Collector):
    def __init__(self, store: SnapshotStore, status: Callable[[], ExporterStatus]) -> None:
        self._store = store
        self._status = status

    def collect(self) -> Iterator[Metric]:
        return iter(self.families(self._store.snapshot(), self._status()))

    def families(self, snapshot: Snapshot, status: ExporterStatus) -> list[Metric]:
        metrics = status.config.metrics
        fam = _Families(metrics.invoice_pdf_url)
        for state in snapshot.accounts.values():
            self._account(fam, state, status.config)
        out = fam.all()
        out.extend(self._api_counters(snapshot))
        out.extend(self._exporter_info(status))
        return out

    def _account(self, fam: _Families, state: AccountState, config: Config) -> None:
        acc = [state.account_id, state.name]
        if state.polled:
            fam.poll_success.add_metric(acc, 1.0 if state.last_poll_success else 0.0)
            if state.last_poll_duration is not None:
                fam.poll_duration.add_metric(acc, state.last_poll_duration)
        if state.last_success_time is not None:
            fam.poll_last_success.add_metric(acc, state.last_success_time)
        if state.invoices is None:
            return
        divisor = config.metrics.amount_divisor
        series = config.metrics.invoice_series
        by_status: dict[str, int] = defaultdict(int)
        due: dict[str, float] = {}
        remaining: dict[str, float] = {}
        unpaid_count = 0
        failed_attempts = 0.0
        oldest: float | None = None
        for inv in state.invoices:
            by_status[inv.status if inv.status is not None else "unknown"] += 1
            due.setdefault(inv.currency, 0.0)
            remaining.setdefault(inv.currency, 0.0)
            if inv.unpaid:
                unpaid_count += 1
                due[inv.currency] += inv.amount_due  # summed in API units, divided once: less rounding
                remaining[inv.currency] += inv.amount_remaining
                if inv.attempted and inv.attempt_count:
                    failed_attempts += inv.attempt_count
                if inv.created is not None and (oldest is None or inv.created < oldest):
                    oldest = inv.created
            if series == "all" or (series == "unpaid" and inv.unpaid):
                self._invoice(fam, acc, inv, divisor, config.metrics.invoice_pdf_url)
        for status_name, count in sorted(by_status.items()):
            fam.acc_invoices.add_metric([*acc, status_name], count)
        fam.acc_unpaid.add_metric(acc, unpaid_count)
        for currency in sorted(due):
            fam.acc_due.add_metric([*acc, currency], due[currency] / divisor)
            fam.acc_remaining.add_metric([*acc, currency], remaining[currency] / divisor)
        fam.acc_failed.add_metric(acc, failed_attempts)
        if oldest is not None:
            fam.acc_oldest.add_metric(acc, oldest)

    @staticmethod
    def _invoice(fam: _Families, acc: list[str], inv: Invoice, divisor: float, pdf_label: bool) -> None:
        labels = [*acc, inv.id]
        fam.due.add_metric([*labels, inv.currency], inv.amount_due / divisor)
        fam.paid.add_metric([*labels, inv.currency], inv.amount_paid / divisor)
        fam.remaining.add_metric([*labels, inv.currency], inv.amount_remaining / divisor)
        if inv.attempt_count is not None:
            fam.attempts.add_metric(labels, inv.attempt_count)
        if inv.created is not None:
            fam.created.add_metric(labels, inv.created)
        info = [*labels, inv.status if inv.status is not None else "unknown", inv.origin or "",
                inv.created_by or "", inv.currency]
        if pdf_label:
            info.append(inv.invoice_pdf or "")
        fam.info.add_metric(info, 1.0)

    @staticmethod
    def _api_counters(snapshot: Snapshot) -> list[Metric]:
        requests = CounterMetricFamily(f"{NS}_api_requests", "Requests made to the Cloudflare API, by HTTP status "
                                       "(error when no response came).", labels=["account_id", "code"])
        for (account_id, code), count in sorted(snapshot.requests.items()):
            requests.add_metric([account_id, code], count)
        errors = CounterMetricFamily(f"{NS}_api_errors", "Failed Cloudflare API requests or pages, retried or not, "
                                     "by reason.", labels=["account_id", "reason"])
        for (account_id, reason), count in sorted(snapshot.errors.items()):
            errors.add_metric([account_id, reason], count)
        invalid = CounterMetricFamily(f"{NS}_api_invalid_invoices", "Malformed invoices skipped (the rest of the "
                                      "page was kept).", labels=["account_id"])
        for account_id, count in sorted(snapshot.invalid_invoices.items()):
            invalid.add_metric([account_id], count)
        return [requests, errors, invalid]

    @staticmethod
    def _exporter_info(status: ExporterStatus) -> list[Metric]:
        build = _gauge("exporter_build_info", "Exporter build information; always 1.", ["version", "python_version"])
        build.add_metric([__version__, platform.python_version()], 1.0)
        reload_ok = GaugeMetricFamily(f"{NS}_exporter_config_last_reload_successful",
                                      "1 if the last config load or reload succeeded, else 0.")
        reload_ok.add_metric([], 1.0 if status.reload_successful else 0.0)
        reload_time = GaugeMetricFamily(f"{NS}_exporter_config_last_reload_success_timestamp_seconds",
                                        "When the config was last loaded successfully, Unix time.")
        reload_time.add_metric([], status.reload_timestamp)
        sharding = status.config.sharding
        shard = _gauge("exporter_shard_info", "Which shard of how many this exporter is; always 1.",
                       ["shard", "total_shards"])
        shard.add_metric([str(sharding.shard), str(sharding.total_shards)], 1.0)
        return [build, reload_ok, reload_time, shard]


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    content_encoding: str | None


class MetricsRenderer:
    """Exposition bytes for a scrape; billing metrics are rendered once per snapshot/config change."""

    def __init__(self, store: SnapshotStore, status: Callable[[], ExporterStatus],
                 process_metrics: bool = False) -> None:
        self._store = store
        self._status = status
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(BillingCollector(store, status))
        self._runtime: CollectorRegistry | None = None
        if process_metrics:
            self._runtime = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._runtime)
            PlatformCollector(registry=self._runtime)
            GCCollector(registry=self._runtime)
        self._lock = threading.Lock()
        self._cache_key: tuple[int, int] | None = None
        self._cache: dict[tuple[bool, bool], bytes] = {}

    def render(self, accept: str | None = None, accept_encoding: str | None = None) -> Rendered:
        openmetrics = _wants_openmetrics(accept)
        use_gzip = _wants_gzip(accept_encoding)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        encoding = "gzip" if use_gzip else None
        if self._runtime is not None:
            body = self._billing(openmetrics, False)
            generate = generate_openmetrics if openmetrics else generate_latest
            if openmetrics:
                body = body.removesuffix(b"# EOF\n")
            body += generate(self._runtime)
            return Rendered(gzip.compress(body, 6) if use_gzip else body, content_type, encoding)
        return Rendered(self._billing(openmetrics, use_gzip), content_type, encoding)

    def _billing(self, openmetrics: bool, use_gzip: bool) -> bytes:
        key = (self._store.snapshot().version, self._status().generation)
        with self._lock:
            if key != self._cache_key:
                self._cache = {}
                self._cache_key = key
            plain = self._cache.get((openmetrics, False))
            if plain is None:
                plain = (generate_openmetrics if openmetrics else generate_latest)(self._registry)
                self._cache[(openmetrics, False)] = plain
            if not use_gzip:
                return plain
            zipped = self._cache.get((openmetrics, True))
            if zipped is None:
                zipped = gzip.compress(plain, 6)
                self._cache[(openmetrics, True)] = zipped
            return zipped


def _wants_openmetrics(accept: str | None) -> bool:
    for part in (accept or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0] == "application/openmetrics-text":
            version = next((f.split("=", 1)[1] for f in fields[1:] if f.startswith("version=")), "1.0.0")
            if version in ("1.0.0", "0.0.1"):
                return True
    return False


def _wants_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0].lower() == "gzip":
            return not any(f.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for f in fields[1:])
    return False
