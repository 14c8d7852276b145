"""The command line: parse the flags, then hand over to ``exporter.app``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from exporter import __version__
from exporter.app import ExporterApp, check_telemetry_path, load_for_flags, plural, with_sharding
from exporter.config.model import Config, ConfigError
from exporter.demo import DEMO_BASE_URL, demo_config, demo_transport
from exporter.logs import LEVELS, setup_logging
from exporter.samples import DEMO_ACCOUNTS
from exporter.web.listening import parse_listen_address
from exporter.webconfig import load_web_config

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
    p.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                   help="allow POST /-/reload (as Prometheus' flag); SIGHUP reloads either way")
    p.add_argument("--log.level", dest="log_level", default="info", choices=list(LEVELS))
    p.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    p.add_argument("--once", action="store_true",
                   help="poll every account once, print the metrics to stdout, exit 0 if every poll succeeded")
    p.add_argument("--demo", action="store_true",
                   help="try-out mode: poll built-in sample accounts, answered in process")
    p.add_argument("--shard", type=int, metavar="N", help="this process's shard (overrides sharding.shard)")
    p.add_argument("--total-shards", dest="total_shards", type=int, metavar="N",
                   help="number of shards (overrides sharding.total_shards)")
    p.add_argument("--collector.process", dest="process_metrics", action="store_true",
                   help="also export the process_* and python_* runtime metrics")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__} (Python {sys.version.split()[0]})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    redact = setup_logging(args.log_level, args.log_format)
    try:
        if args.demo:
            config = demo_config()
            log.info("demo mode: polling built-in sample accounts, not Cloudflare", extra={"base_url": DEMO_BASE_URL})
            config = with_sharding(config, args.shard, args.total_shards, "--demo")
        else:
            config = load_for_flags(args.config_file, args.shard, args.total_shards)
        redact.update(config.secrets())
        transport = demo_transport() if args.demo else None
        if args.config_check:
            web_config = load_web_config(args.web_config_file)
            for warning in config.warnings:
                print(f"{args.config_file}: warning: {warning}")
            for warning in web_config.warnings:
                print(f"{args.web_config_file}: warning: {warning}")
            print(f"{args.config_file}: OK ({plural(len(config.accounts), 'account')}, discovery "
                  f"{'on' if config.discovery.enabled else 'off'})")
            return 0

        def reload() -> Config:
            return load_for_flags(args.config_file, args.shard, args.total_shards)

        if args.once:
            designed = {DEMO_ACCOUNTS["legacy"]: "the demo's legacy account has a revoked token: its polls fail "
                        "(reason auth) by design; --demo --once exits 0 when that is the only failure"}
            return ExporterApp(config, transport=transport).run_once(sys.stdout.buffer,
                                                                     designed if args.demo else None)
        try:
            check_telemetry_path(args.telemetry_path)
        except ValueError as err:
            print(f"--web.telemetry-path: {err}", file=sys.stderr)
            return 1
        try:
            addresses = [parse_listen_address(a) for a in (args.listen or [":10123"])]
        except ValueError as err:
            print(f"--web.listen-address: {err}", file=sys.stderr)
            return 1
        app = ExporterApp(config, load=None if args.demo else reload, web_config_file=args.web_config_file,
                          telemetry_path=args.telemetry_path, process_metrics=args.process_metrics, redact=redact,
                          transport=transport, enable_lifecycle=args.enable_lifecycle)
        return app.serve(addresses)
    except ConfigError as err:
        print(err.report(), file=sys.stderr)
        return 1


def console_main() -> None:
    sys.exit(main())
