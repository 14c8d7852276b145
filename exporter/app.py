"""The exporter wired in one place: store, poller, renderer, routes, reload, and the two ways to run.

``cli.py`` parses flags and calls ``ExporterApp``; nothing else builds these parts.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from email.message import Message
from types import FrameType
from typing import BinaryIO

import httpx

from exporter import __version__
from exporter.collectors.invoice_history import InvoiceData
from exporter.config import Config, ConfigError, load_config
from exporter.logs import RedactSecrets
from exporter.poller import Poller
from exporter.render import ExporterStatus, Renderer
from exporter.server import ListenAddress, ListenError, Response, RouteHandler, WebServers
from exporter.sharding import validate_sharding
from exporter.snapshot import Snapshot, SnapshotStore
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/-/reload")


def with_sharding(config: Config, shard: int | None, total_shards: int | None, source: str) -> Config:
    """The config with the --shard/--total-shards flags applied; the one place sharding is validated."""
    shard = config.sharding.shard if shard is None else shard
    total = config.sharding.total_shards if total_shards is None else total_shards
    try:
        validate_sharding(shard, total)
    except (TypeError, ValueError) as err:
        raise ConfigError(source, [f"--shard/--total-shards: {err}"]) from None
    return dataclasses.replace(config, sharding=dataclasses.replace(config.sharding, shard=shard, total_shards=total))


def check_telemetry_path(path: str) -> None:
    if not path.startswith("/") or path in RESERVED_PATHS:
        raise ValueError(f"{path!r} must start with / and not be a reserved path")


class ExporterApp:
    """Owns the running parts and swaps the config on reload.

    ``load`` re-reads the config (for a reload); None means the config is built in (demo mode).
    ``transport`` replaces the network under the API client (tests, an in-process demo)."""

    def __init__(self, config: Config, *, load: Callable[[], Config] | None = None,
                 web_config_file: str | None = None, telemetry_path: str = "/metrics",
                 process_metrics: bool = False, transport: httpx.AsyncBaseTransport | None = None,
                 redact: RedactSecrets | None = None, enable_lifecycle: bool = False) -> None:
        self._load = load
        self._enable_lifecycle = enable_lifecycle
        self._web_config_file = web_config_file
        self._redact = redact
        self._web_config = load_web_config(web_config_file)
        log_warnings(config, self._web_config)
        self._reload_lock = threading.Lock()
        self.status = ExporterStatus(config, 0, True, time.time())
        self.store = SnapshotStore()
        self.poller = Poller(config, self.store, transport)
        self.renderer = Renderer(self.store, lambda: self.status, process_metrics, lambda: self.poller.limiter.pauses)
        self.telemetry_path = telemetry_path
        self.routes: Mapping[str, Mapping[str, RouteHandler]] = {
            "/": {"GET": lambda _: Response(200, self.landing_page().encode(), "text/html; charset=utf-8")},
            telemetry_path: {"GET": self._metrics},
            "/-/healthy": {"GET": lambda _: Response(200, b"Healthy\n")},
            "/-/ready": {"GET": self._ready},
            "/-/reload": {"POST": self._reload},
        }

    def web_config(self) -> WebConfig:
        return self._web_config

    # --- routes ---

    def _metrics(self, headers: Message) -> Response:
        rendered = self.renderer.render(headers.get("Accept"), headers.get("Accept-Encoding"),
                                        headers.get("User-Agent"))
        extra = {"Vary": "Accept, Accept-Encoding"}
        if rendered.content_encoding:
            extra["Content-Encoding"] = rendered.content_encoding
        return Response(200, rendered.chunks, rendered.content_type, extra)

    def _ready(self, _: Message) -> Response:
        if self.store.snapshot().ready:
            return Response(200, b"Ready\n")
        return Response(503, b"Not ready: not every account polled yet\n")

    def _reload(self, _: Message) -> Response:
        if not self._enable_lifecycle:
            return Response(403, b"Lifecycle API is not enabled: start the exporter with --web.enable-lifecycle "
                            b"to reload over HTTP, or send it SIGHUP\n")
        ok, message = self.reload()
        return Response(200 if ok else 500, (message + "\n").encode())

    def landing_page(self) -> str:
        return landing_page(self.store.snapshot(), self.telemetry_path, self.status.config.metrics.amount_divisor)

    # --- reload ---

    def reload(self) -> tuple[bool, str]:
        with self._reload_lock:
            if self._load is None:
                return True, "the config is built in (demo mode): nothing to reload"
            try:
                config = self._load()
                web_config = load_web_config(self._web_config_file)
            except ConfigError as err:
                self.status = dataclasses.replace(self.status, generation=self.status.generation + 1,
                                                  reload_successful=False)
                log.error("config reload failed, keeping the running config", extra={"error": err.report()})
                return False, "reload failed, the old config keeps running:\n" + err.report()
            if self._redact is not None:
                self._redact.update(config.secrets())
            self.poller.apply(config)
            self._web_config = web_config
            self.status = ExporterStatus(config, self.status.generation + 1, True, time.time())
            log.info("config reloaded", extra={"accounts": len(config.accounts)})
            log_warnings(config, web_config)
            return True, "config reloaded"

    # --- the two ways to run ---

    def run_once(self, out: BinaryIO, failing_by_design: Mapping[str, str] | None = None) -> int:
        """Poll every account once, write the exposition; 0 if every poll (and discovery) succeeded, else 1.
        ``failing_by_design`` (account id -> why; the demo's revoked account) are failures that do not count."""
        ok = self.poller.run_once()
        out.write(self.renderer.render().body)
        out.flush()
        if ok or not failing_by_design:
            return 0 if ok else 1
        failed = {account.account_id for account in self.store.snapshot().accounts.values()
                  if any(e.polled and not e.success for e in account.endpoints.values())}
        designed = failed & set(failing_by_design)
        for account_id in sorted(designed):
            log.info("this account fails by design", extra={"account_id": account_id,
                                                             "why": failing_by_design[account_id]})
        discovery_failed = self.status.config.discovery.enabled and not self.poller.discovered_ok
        return 0 if failed <= designed and not discovery_failed else 1

    def serve(self, addresses: list[ListenAddress]) -> int:
        """Serve until SIGTERM or SIGINT; SIGHUP reloads. 1 if an address cannot be bound."""
        try:
            servers = WebServers(self, addresses)
        except ListenError as err:
            print(f"--web.listen-address: cannot listen on {err.address}: {err.reason}", file=sys.stderr)
            return 1
        events: queue.SimpleQueue[str] = queue.SimpleQueue()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            events.put("reload" if signum == signal.SIGHUP else "stop")

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)
        servers.start()
        self.poller.start()
        log.info("exporter started", extra={"version": __version__, "listen": ",".join(servers.bound),
                                            "accounts": len(self.status.config.accounts),
                                            "tls": self._web_config.ssl_context is not None})
        while True:
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                continue
            if event == "reload":
                self.reload()
                continue
            break
        log.info("shutting down")
        servers.shutdown()
        self.poller.stop(timeout=1.0)
        return 0


def landing_page(snapshot: Snapshot, telemetry_path: str, divisor: float) -> str:
    """One row per account; the unpaid total is the invoice collector's own totals (computed once per poll)."""
    rows = []
    for state in snapshot.accounts.values():
        endpoints = state.endpoints.values()
        failed = sorted({f"{e.last_error_reason}" for e in endpoints if e.polled and not e.success})
        if not state.polled:
            result = "not polled yet"
        elif failed:
            result = f"failed ({', '.join(failed)})"
        else:
            result = "ok"
        times = [e.last_poll_time for e in endpoints if e.last_poll_time]
        last = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(times))) if times else "never"
        invoices = state.endpoints.get("invoice_history")
        data = invoices.data if invoices is not None else None
        unpaid = data.totals.remaining if isinstance(data, InvoiceData) else {}
        totals = ", ".join(f"{amount / divisor:,.2f} {currency.upper()}"
                           for currency, amount in unpaid.items() if amount > 0)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
            state.name, state.account_id, last, result, totals or "nothing unpaid")) + "</tr>")
    path = html.escape(telemetry_path, quote=True)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Cloudflare AI Gateway Exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head>
<body><h1>Cloudflare AI Gateway Exporter</h1>
<p>Version {html.escape(__version__)}. <a href="{path}">Metrics</a> ·
<a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a></p>
<table><tr><th>Account</th><th>Account ID</th><th>Last poll</th><th>Result</th><th>Unpaid</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def log_warnings(config: Config, web_config: WebConfig) -> None:
    """Every warning of the config and the web config, at warn level: at start and after each reload."""
    for warning in (*config.warnings, *web_config.warnings):
        log.warning("config warning", extra={"warning": warning})


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def load_for_flags(config_file: str, shard: int | None, total_shards: int | None) -> Config:
    """The config file with the sharding flags applied (start-up and every reload)."""
    return with_sharding(load_config(config_file), shard, total_shards, config_file)
