"""Run the real exporter process against a fake API on loopback, for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from exporter.cloudflare.errors import PollCounts
from exporter.collectors import REGISTRY
from exporter.config.load import default_collectors
from exporter.config.model import Config, Inherited
from exporter.snapshot import ExporterStatus, Setup, SnapshotStore

REPO = Path(__file__).resolve().parent.parent
COLLECTORS = tuple(c.name for c in REGISTRY)


def only(*names: str) -> dict[str, dict[str, bool]]:
    """The ``collectors:`` section of a config that polls these collectors alone."""
    return {name: {"enabled": False} for name in COLLECTORS if name not in names}


# The ``collectors:`` section of a config that polls invoice history alone: for the tests of the invoice path and of
# behaviour shared by every endpoint (failures, reload, TLS ...), whose request counts and ``value()`` look-ups
# assume one endpoint per account. tests/test_collectors_e2e.py covers the collectors together.
INVOICE_HISTORY_ONLY = only("invoice_history")


def config_with(*names: str, interval: float = 300.0, divisor: float = 100.0, **fields: Any) -> Config:
    """A config built in code with these collectors enabled at their defaults (every one when none is named),
    as a config file with ``poll.interval`` and ``metrics.amount_divisor`` set would give them."""
    changes = only(*names) if names else {}
    return Config(collectors=default_collectors(Inherited(interval, divisor), **changes), **fields)


def status_of(config: Config, generation: int = 0, reload_successful: bool = True,
              at: float = 1.7e9) -> ExporterStatus:
    return ExporterStatus(Setup.of(config), generation, reload_successful, at)


def store_for(config: Config) -> SnapshotStore:
    return SnapshotStore(status_of(config))


def poll_counts(requests: dict[str, int] | None = None, errors: dict[str, int] | None = None,
                pauses: dict[str, int] | None = None) -> PollCounts:
    counts = PollCounts()
    counts.requests.update(requests or {})
    counts.errors.update(errors or {})
    counts.pauses.update(pauses or {})
    return counts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def samples(exposition: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in a text exposition whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    found = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append((dict(sample.labels), float(sample.value)))
    return found


def terminate(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def value(exposition: str, name: str, **labels: str) -> float | None:
    """The single value of ``name`` with ``labels``, or None when absent."""
    found = samples(exposition, name, **labels)
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series: {found}"
    return found[0][1] if found else None


class ExporterProcess:
    def __init__(self, config: dict[str, Any] | None, args: tuple[str, ...], env: dict[str, str] | None,
                 workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "config.yaml"
        if config is not None:
            self.write_config(config)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.log_path = workdir / "exporter.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_KEY", "CLOUDFLARE_EMAIL"):
            if env is None or name not in env:
                full_env.pop(name, None)
        listen = ["--web.listen-address", self.address]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--config.file", str(self.config_path), *listen, *args],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def metrics(self) -> str:
        response = self.get("/metrics")
        response.raise_for_status()
        return response.text

    def wait_metrics(self, predicate: Callable[[str], bool], timeout: float = 20.0, what: str = "") -> str:
        """Scrape until ``predicate(exposition)`` holds; return that exposition."""
        def check() -> str | None:
            text = self.metrics()
            return text if predicate(text) else None

        return str(wait_for(check, timeout, interval=0.1, what=what))

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return self.get("/-/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, what="exporter ready")

    def wait_listening(self, timeout: float = 20.0) -> None:
        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited with {self.proc.returncode}:\n{self.output()}")
            try:
                self.get("/-/healthy")
                return True
            except httpx.HTTPError:
                return False

        wait_for(listening, timeout, what="exporter listening")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int:
        terminate(self.proc, timeout)
        self._log.close()
        return int(self.proc.returncode)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def start_exporter(config: dict[str, Any] | None, *args: str, env: dict[str, str] | None = None,
                   wait_ready: bool = True, workdir: Path | None = None) -> ExporterProcess:
    """Start ``python -m exporter`` with this config on a free loopback port; the caller must stop() it."""
    proc = ExporterProcess(config, args, env, workdir or Path(tempfile.mkdtemp(prefix="exporter-test-")))
    try:
        if wait_ready:
            proc.wait_ready()
        else:
            proc.wait_listening()
    except BaseException:
        proc.stop()
        raise
    return proc


def run_once(config: dict[str, Any], *args: str, workdir: Path, timeout: float = 60.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m exporter --once`` with this config; returns the finished process (stdout = exposition)."""
    path = workdir / "once.yaml"
    path.write_text(yaml.safe_dump(config))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path), "--once", *args],
                          cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def page_for(snapshot: Any, **kwargs: Any) -> str:
    """The status page of ``snapshot`` (kwargs: the rest of ``PageInput``)."""
    from exporter.status_page import PageInput, render_status_page

    return render_status_page(PageInput(snapshot, **kwargs))
