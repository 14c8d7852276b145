"""The exporter wired in one place: store, poller, renderer, routes, reload, and the two ways to run.

``cli.py`` parses flags and calls ``ExporterApp``; nothing else builds these parts.
"""

from __future__ import annotations

import dataclasses
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
from exporter.config.load import load_config
from exporter.config.model import Config, ConfigError
from exporter.demo import DEMO_BASE_URL
from exporter.logs import RedactSecrets
from exporter.poller import Poller
from exporter.render import Renderer
from exporter.sharding import validate_sharding
from exporter.snapshot import ExporterStatus, Setup, SnapshotStore
from exporter.status_page import PageInput, render_status_page
from exporter.web.listening import ListenAddress, ListenError, WebServers
from exporter.web.routes import Response, RouteHandler
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/-/reload")
STATUS_PAGE_MAX_AGE = 2.0  # seconds a rendered status page is reused while no poll ended


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
        setup = Setup.of(config)
        self.store = SnapshotStore(ExporterStatus(setup, 0, True, time.time()))
        self.poller = Poller(setup, self.store, transport)
        self.renderer = Renderer(self.store, process_metrics)
        self.telemetry_path = telemetry_path
        self._status_page_cache: tuple[int, float, bytes] | None = None
        self.routes: Mapping[str, Mapping[str, RouteHandler]] = {
            "/": {"GET": lambda _: Response(200, self._status_page_bytes(), "text/html; charset=utf-8")},
            telemetry_path: {"GET": self._metrics},
            "/-/healthy": {"GET": lambda _: Response(200, b"Healthy\n")},
            "/-/ready": {"GET": self._ready},
            "/-/reload": {"POST": self._reload},
        }

    def web_config(self) -> WebConfig:
        return self._web_config

    @property
    def status(self) -> ExporterStatus:
        return self.store.snapshot().status

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

    def _status_page_bytes(self) -> bytes:
        """The status page, rendered at most once per STATUS_PAGE_MAX_AGE seconds while nothing changed (no poll
        ended, no reload): 10,000 accounts take about 0.6 s to render, and anyone may reload the page."""
        key = self.store.snapshot().version
        cached = self._status_page_cache
        now = time.monotonic()
        if cached is not None and cached[0] == key and now - cached[1] < STATUS_PAGE_MAX_AGE:
            return cached[2]
        body = self.status_page().encode()
        self._status_page_cache = (key, now, body)
        return body

    def status_page(self) -> str:
        snapshot = self.store.snapshot()
        config = snapshot.status.setup.config
        redact = self._redact
        if redact is None:  # no logger's redactor (tests, embedding): one from the running config's secrets
            redact = RedactSecrets()
            redact.update(config.secrets())
        return render_status_page(PageInput(snapshot, self.telemetry_path, self.poller.next_polls(),
                                            demo=config.cloudflare.base_url == DEMO_BASE_URL, mask=redact.mask))

    # --- reload ---

    def reload(self) -> tuple[bool, str]:
        with self._reload_lock:
            if self._load is None:
                return True, "the config is built in (demo mode): nothing to reload"
            try:
                config = self._load()
                web_config = load_web_config(self._web_config_file)
            except ConfigError as err:
                self.store.set_status(dataclasses.replace(self.status, generation=self.status.generation + 1,
                                                          reload_successful=False))
                log.error("config reload failed, keeping the running config", extra={"error": err.report()})
                return False, "reload failed, the old config keeps running:\n" + err.report()
            if self._redact is not None:
                self._redact.update(config.secrets())
            setup = Setup.of(config)
            self.poller.apply(setup)
            self._web_config = web_config
            self.store.set_status(ExporterStatus(setup, self.status.generation + 1, True, time.time()))
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
        discovery_failed = self.status.setup.config.discovery.enabled and not self.poller.discovered_ok
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
                                            "accounts": len(self.status.setup.config.accounts),
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


def log_warnings(config: Config, web_config: WebConfig) -> None:
    """Every warning of the config and the web config, at warn level: at start and after each reload."""
    for warning in (*config.warnings, *web_config.warnings):
        log.warning("config warning", extra={"warning": warning})


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def load_for_flags(config_file: str, shard: int | None, total_shards: int | None) -> Config:
    """The config file with the sharding flags applied (start-up and every reload)."""
    return with_sharding(load_config(config_file), shard, total_shards, config_file)
