"""Real Prometheus, Alertmanager and a webhook receiver on loopback, for the alerting and dashboard tests.

Every process gets a free 127.0.0.1 port and its own temporary data directory, so nothing here depends on
(or disturbs) a system-wide Prometheus or Alertmanager. Callers stop what they start (``stop()``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import free_port, terminate, wait_for

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "prometheus"
GRAFANA_DIR = REPO / "grafana"
DOCS_DIR = REPO / "docs"
ALERTS_FILE = PROMETHEUS_DIR / "alerts.yml"

# Debian installs Alertmanager as prometheus-alertmanager; upstream tarballs and images call it alertmanager.
ALERTMANAGER_NAMES = ("alertmanager", "prometheus-alertmanager")


def find_program(*names: str) -> str:
    """Path of the first of ``names`` on PATH. Missing: skipped locally, a failure in CI (CI=true)."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    wanted = " or ".join(names)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{wanted} is not installed (.ci/run should install it: apt-get install prometheus "
                    "prometheus-alertmanager docker-compose)")
    pytest.skip(f"{wanted} is not installed")


def run_tool(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run promtool/amtool/docker-compose; the output is in the result for assertion messages."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
                          stdin=subprocess.DEVNULL)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules(doc: Any | None = None) -> list[dict[str, Any]]:
    """The alerting rules of alerts.yml, in file order (one alert name may have several rules, for example
    ExporterDown as a warning first and critical later)."""
    doc = load_yaml(ALERTS_FILE) if doc is None else doc
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def recording_rules(doc: Any | None = None) -> list[dict[str, Any]]:
    doc = load_yaml(ALERTS_FILE) if doc is None else doc
    return [rule for group in doc["groups"] for rule in group["rules"] if "record" in rule]


def rules_with_short_for(for_: str = "1s") -> dict[str, Any]:
    """alerts.yml with every alert's ``for:`` replaced by ``for_``, for the end-to-end test only: the real
    durations (5 minutes to 1 hour) are what production needs and are proven by promtool test rules."""
    doc = load_yaml(ALERTS_FILE)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = for_
    return dict(doc)


_EXPOSITION_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", re.MULTILINE)
_demo_names: set[str] | None = None


def exported_metric_names() -> set[str]:
    """Names of every sample the real exporter exposes in --demo mode (run once per test session)."""
    global _demo_names
    if _demo_names is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
        done = subprocess.run([sys.executable, "-m", "exporter", "--demo", "--once"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        # Exit status 1 is expected: the demo's "legacy" account has a revoked token.
        names = set(_EXPOSITION_NAME.findall(done.stdout))
        assert "cloudflare_ai_gateway_poll_success" in names, f"no exposition from --demo --once:\n{done.stderr}"
        _demo_names = names
    return _demo_names


def missing_metrics(used: set[str]) -> set[str]:
    """Names in ``used`` that the exporter does not expose."""
    return used - exported_metric_names()


_NAME_TOKEN = re.compile(r"(?<![\w:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def referenced_metrics(expr: str) -> set[str]:
    """Exporter metric names referenced in a PromQL expression (recording rule names, with colons, excluded)."""
    return {name for name in _NAME_TOKEN.findall(expr)
            if name.startswith("cloudflare_ai_gateway_") and ":" not in name}


class Program:
    """A long-running server process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, interval=0.1, what=f"{self.name} ready at {url}")

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.proc, timeout)
        self._log.close()


class _Server(Program):
    """A Prometheus-family server of our own: its config in ``workdir``, its data there too, its web port on
    loopback; the constructor returns once ``/-/ready`` answers."""

    def __init__(self, name: str, binary: str, config: dict[str, Any], workdir: Path, storage_flag: str,
                 *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, [
            binary,
            f"--config.file={self.config_path}",
            f"{storage_flag}={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *extra,
            "--log.level=info",
        ], workdir)
        try:
            self.wait_ready(self.url + "/-/ready")
        except BaseException:
            self.stop()
            raise


class Prometheus(_Server):
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        # A firing alert is sent to Alertmanager at once; re-sends (default every minute) come sooner.
        super().__init__("prometheus", find_program("prometheus"), config, workdir, "--storage.tsdb.path",
                         "--rules.alert.resend-delay=1s")

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns ``data``; fails the test on an error status."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body.get("status") == "success", (
            f"{path} {params} -> HTTP {response.status_code}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def query_range(self, expr: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        return list(self.api("query_range", query=expr, start=start, end=end, step=step)["result"])

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params = {} if match is None else {"match[]": match}
        return list(self.api(f"label/{label}/values", **params))


class Alertmanager(_Server):
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        # No gossip: a single instance, no port besides the web one.
        super().__init__("alertmanager", find_program(*ALERTMANAGER_NAMES), config, workdir, "--storage.path",
                         "--cluster.listen-address=")

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts, including silenced and inhibited ones; ``filters`` are label equalities."""
        params = [("filter", f'{k}="{v}"') for k, v in filters.items()]
        params += [("silenced", "true"), ("inhibited", "true"), ("active", "true")]
        response = httpx.get(f"{self.url}/api/v2/alerts", params=tuple(params), timeout=10)
        response.raise_for_status()
        return list(response.json())


class WebhookReceiver:
    """Alertmanager webhook target: records every notification (path and JSON body) in arrival order."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.notifications.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()

    def alerts(self, path: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every alert of every notification so far, as (path, alert), oldest first."""
        with self._lock:
            notes = list(self.notifications)
        return [(p, alert) for p, body in notes if path is None or p == path for alert in body.get("alerts", [])]

    def wait_for_alert(self, match: Callable[[str, dict[str, Any]], bool], timeout: float,
                       what: str) -> tuple[str, dict[str, Any]]:
        def found() -> tuple[str, dict[str, Any]] | None:
            return next(((p, a) for p, a in self.alerts() if match(p, a)), None)

        result: tuple[str, dict[str, Any]] = wait_for(found, timeout, interval=0.1, what=what)
        return result

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)


def prometheus_test_config(targets: list[str], alertmanager: str, rule_file: Path) -> dict[str, Any]:
    """prometheus.example.yml with loopback targets, a 1s scrape and evaluation interval and the given rules;
    the job name is kept, so the ExporterDown rule's job matcher is exercised as shipped."""
    config = dict(load_yaml(PROMETHEUS_DIR / "prometheus.example.yml"))
    config["global"] = {**config.get("global", {}), "scrape_interval": "1s", "evaluation_interval": "1s",
                        "scrape_timeout": "1s"}
    config["rule_files"] = [str(rule_file)]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": targets}])
    return config


def alertmanager_test_config(webhook_url: str) -> dict[str, Any]:
    """alertmanager.example.yml with every webhook sent to ``webhook_url`` (same path) and 1s group timers;
    routing, grouping and inhibition stay as shipped."""
    config = dict(load_yaml(PROMETHEUS_DIR / "alertmanager.example.yml"))

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            route[key] = "1s"
        route.pop("active_time_intervals", None)
        route["repeat_interval"] = "1h"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    config.pop("time_intervals", None)  # business hours would make the test depend on the wall clock
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            path = httpx.URL(webhook["url"]).path
            webhook["url"] = webhook_url + path
    return config
