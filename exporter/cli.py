"""Command line, process lifecycle, signals and config reload."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import httpx

from exporter import __version__
from exporter.collector import ExporterStatus, MetricsRenderer
from exporter.config import Config, ConfigError, load_config
from exporter.demo import DEMO_BASE_URL, demo_config, demo_transport
from exporter.logs import LEVELS, RedactSecrets, setup_logging
from exporter.poller import Poller
from exporter.server import App, ListenAddress, WebServers, parse_listen_address
from exporter.snapshot import SnapshotStore
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")
PROG = "cloudflare-ai-gateway-exporter"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Prometheus exporter for Cloudflare AI Gateway billing.")
    p.add_argument("--config.file", dest="config_file", default="config.yaml", metavar="PATH",
                   help="the YAML config file (default: %(default)s)")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the config and its secret files, print the verdict, exit 0 or 1")
    p.add_argument("--web.listen-address", dest="listen", action="append", metavar="ADDR",
                   help="host:port, :port or [::1]:port to listen on; repeatable (default: :10123)")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH",
                   help="path for the metrics (default: %(default)s)")
    p.add_argument("--web.config.file", dest="web_config_file", metavar="PATH",
                   help="exporter-toolkit web config: TLS and basic auth")
    p.add_argument("--log.level", dest="log_level", default="info", choices=list(LEVELS))
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    p.add_argument("--once", action="store_true",
                   help="poll every account once, print the metrics to stdout, exit 0 if every poll succeeded")
    p.add_argument("--demo", action="store_true",
                   help="try-out mode: start a bundled fake Cloudflare API with sample accounts and poll it")
    p.add_argument("--shard", type=int, metavar="N", help="this process's shard (overrides sharding.shard)")
    p.add_argument("--total-shards", dest="total_shards", type=int, metavar="N",
                   help="number of shards (overrides sharding.total_shards)")
    p.add_argument("--collector.process", dest="process_metrics", action="store_true",
                   help="also export the process_* and python_* runtime metrics")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__} (Python {sys.version.split()[0]})")
    return p


def _with_flag_overrides(config: Config, args: argparse.Namespace, source: str) -> Config:
    shard = config.sharding.shard if args.shard is None else args.shard
    total = config.sharding.total_shards if args.total_shards is None else args.total_shards
    if total < 1 or not 0 <= shard < total:
        raise ConfigError(source, [f"--shard/--total-shards: need 0 <= shard < total_shards, got {shard} of {total}"])
    return dataclasses.replace(config, sharding=dataclasses.replace(config.sharding, shard=shard, total_shards=total))


class Exporter:
    """Owns the running parts and swaps the config on reload."""

    def __init__(self, args: argparse.Namespace, config: Config, redact: RedactSecrets) -> None:
        self.args = args
        self.redact = redact
        self.store = SnapshotStore()
        self.poller = Poller(config, self.store, demo_transport() if args.demo else None)
        self.status = ExporterStatus(config, 0, True, time.time())
        self.web_config = load_web_config(args.web_config_file)
        self._reload_lock = threading.Lock()

    def get_status(self) -> ExporterStatus:
        return self.status

    def get_web_config(self) -> WebConfig:
        return self.web_config

    def reload(self) -> tuple[bool, str]:
        with self._reload_lock:
            if self.args.demo:
                return True, "demo mode: the config is built in, nothing to reload"
            try:
                config = _with_flag_overrides(load_config(self.args.config_file), self.args, self.args.config_file)
                web_config = load_web_config(self.args.web_config_file)
            except ConfigError as err:
                self.status = dataclasses.replace(self.status, generation=self.status.generation + 1,
                                                  reload_successful=False)
                log.error("config reload failed, keeping the running config", extra={"error": err.report()})
                return False, "reload failed, the old config keeps running:\n" + err.report()
            self.redact.update(config.secrets())
            self.poller.apply(config)
            self.web_config = web_config
            self.status = ExporterStatus(config, self.status.generation + 1, True, time.time())
            log.info("config reloaded", extra={"accounts": len(config.accounts)})
            return True, "config reloaded"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    redact = setup_logging(args.log_level, args.log_format)
    try:
        if args.demo:
            config = demo_config()
            log.info("demo mode: polling built-in sample accounts, not Cloudflare", extra={"base_url": DEMO_BASE_URL})
        else:
            config = load_config(args.config_file)
        config = _with_flag_overrides(config, args, args.config_file)
        redact.update(config.secrets())
        if args.config_check:
            load_web_config(args.web_config_file)
            print(f"{args.config_file}: OK ({len(config.accounts)} accounts, discovery "
                  f"{'on' if config.discovery.enabled else 'off'})")
            return 0
        if args.once:
            return _run_once(config, demo_transport() if args.demo else None)
        return _serve(args, config, redact)
    except ConfigError as err:
        print(err.report(), file=sys.stderr)
        return 1


def _run_once(config: Config, transport: httpx.AsyncBaseTransport | None) -> int:
    store = SnapshotStore()
    poller = Poller(config, store, transport)
    ok = poller.run_once()
    renderer = MetricsRenderer(store, lambda: ExporterStatus(config, 0, True, time.time()))
    sys.stdout.buffer.write(renderer.render().body)
    sys.stdout.flush()
    return 0 if ok else 1


def _serve(args: argparse.Namespace, config: Config, redact: RedactSecrets) -> int:
    try:
        addresses: list[ListenAddress] = [parse_listen_address(a) for a in (args.listen or [":10123"])]
    except ValueError as err:
        print(f"--web.listen-address: {err}", file=sys.stderr)
        return 1
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/-/healthy", "/-/ready", "/-/reload"):
        print(f"--web.telemetry-path: {args.telemetry_path!r} must start with / and not be a reserved path",
              file=sys.stderr)
        return 1
    exporter = Exporter(args, config, redact)
    renderer = MetricsRenderer(exporter.store, exporter.get_status, args.process_metrics)
    app = App(exporter.store, renderer, args.telemetry_path, exporter.reload, exporter.get_web_config,
              exporter.get_status)
    try:
        servers = WebServers(app, addresses)
    except OSError as err:
        print(f"--web.listen-address: cannot listen: {err.strerror or err}", file=sys.stderr)
        return 1
    events: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        events.put("reload" if signum == signal.SIGHUP else "stop")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    servers.start()
    exporter.poller.start()
    log.info("exporter started", extra={"version": __version__, "listen": ",".join(servers.bound),
                                        "accounts": len(config.accounts),
                                        "tls": exporter.web_config.ssl_context is not None})
    while True:
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            continue
        if event == "reload":
            exporter.reload()
            continue
        break
    log.info("shutting down")
    servers.shutdown()
    exporter.poller.stop(timeout=1.0)
    return 0


def console_main() -> None:
    sys.exit(main())
