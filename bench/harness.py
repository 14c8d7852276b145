"""The moving parts of the benchmark: child processes (the fake API, the exporter, nginx, wrk), each bounded
in time and stopped by the bench, and what /proc says about them (CPU ticks, peak RSS).

Linux only (it reads /proc). Loopback only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.collectors import REGISTRY

REPO = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TOKEN = "bench-token-5f1c0e7a9d2b"  # the fake's token, see bench/fakeserver.py


class BenchError(Exception):
    """Something the bench needs did not happen (a process died, a port never opened)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------


class Children:
    """Every process the bench starts, so that each is stopped, by its pid, whatever happens."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(args, **kwargs)
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return int(proc.returncode)

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                self.stop(proc, 3.0)
        self._procs.clear()


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (or one of its threads), in seconds."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0])
    return found


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def http_get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - started
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, elapsed)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------------
# The fake Cloudflare API, in a child process
# --------------------------------------------------------------------------------------------------------


class Fake:
    """``bench/fakeserver.py`` in a child process; ``stop()`` returns the requests it recorded."""

    def __init__(self, children: Children, workdir: Path, accounts: int, per_account: int,
                 unpaid: int | None = None, latency: float = 0.0, max_seconds: float = 300.0) -> None:
        self.children = children
        self.accounts = accounts
        self.per_account = per_account
        self.requests_file = workdir / f"requests-{time.monotonic_ns()}.json"
        args = [sys.executable, "-m", "bench.fakeserver", "--accounts", str(accounts),
                "--invoices-per-account", str(per_account), "--latency", str(latency),
                "--requests-file", str(self.requests_file), "--max-seconds", str(max_seconds)]
        if unpaid is not None:
            args += ["--unpaid-per-account", str(unpaid)]
        self.proc = children.spawn(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=(workdir / "fake.log").open("ab"))
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120.0)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http"):
            self.children.stop(self.proc)
            raise BenchError(f"the fake API did not start (see {workdir / 'fake.log'})")
        self.base_url = line

    def stop(self) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.children.stop(self.proc)
        if not self.requests_file.exists():
            return []
        records: list[dict[str, Any]] = json.loads(self.requests_file.read_text())
        self.requests_file.unlink()
        return records


# --------------------------------------------------------------------------------------------------------
# The exporter, as the real process
# --------------------------------------------------------------------------------------------------------


INVOICE_HISTORY_ONLY = {c.name: {"enabled": False} for c in REGISTRY if c.name != "invoice_history"}


def exporter_config(base_url: str, accounts: int, *, rps: float, interval: str = "1h", per_page: int = 100,
                    max_concurrency: int = 8, invoice_series: str = "unpaid",
                    all_collectors: bool = False) -> dict[str, Any]:
    """The exporter's config; invoice history alone unless ``all_collectors`` (then the default collectors
    config: every collector, each at its default interval)."""
    from bench.fakeserver import account_id, account_name

    collectors = {} if all_collectors else {"collectors": INVOICE_HISTORY_ONLY}
    return {
        **collectors,
        "cloudflare": {"base_url": base_url, "api_token": TOKEN, "requests_per_second": rps,
                       "graphql_queries_per_second": rps, "per_page": per_page, "max_retries": 1, "timeout": "30s"},
        "poll": {"interval": interval, "max_concurrency": max_concurrency},
        "accounts": [{"id": account_id(i), "name": account_name(i)} for i in range(accounts)],
        "metrics": {"invoice_series": invoice_series},
    }


class Exporter:
    """``python -m exporter`` on a free loopback port."""

    def __init__(self, children: Children, workdir: Path, config: dict[str, Any], *args: str) -> None:
        self.children = children
        self.port = free_port()
        self.config_path = config_path = workdir / f"exporter-{self.port}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"exporter-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.started = time.monotonic()
        self.proc = children.spawn(
            [sys.executable, "-m", "exporter", "--config.file", str(config_path),
             "--web.listen-address", f"127.0.0.1:{self.port}", *args],
            cwd=REPO, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the exporter exited with {self.proc.returncode}; see {self.log_path}")

    def _status(self, path: str) -> int:
        self._check_alive()
        try:
            return http_get(self.port, path, timeout=5).status
        except OSError:
            return 0

    def wait_listening(self, timeout: float = 60.0) -> None:
        wait_for(lambda: self._status("/-/healthy") == 200, timeout, "the exporter to listen")

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Seconds from process start until /-/ready said 200."""
        wait_for(lambda: self._status("/-/ready") == 200, timeout, "the exporter to be ready", interval=0.05)
        return time.monotonic() - self.started

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def main_thread_cpu(self) -> float:
        return cpu_seconds(self.pid, self.pid)

    def memory(self) -> dict[str, int]:
        return memory_kib(self.pid)

    def get(self, path: str = "/metrics", headers: dict[str, str] | None = None) -> Response:
        self._check_alive()
        return http_get(self.port, path, headers)

    def reload(self, config: dict[str, Any], timeout: float = 30.0) -> None:
        """Rewrite the config file and SIGHUP; returns once the exporter logged the reload."""
        done = self.log_path.read_bytes().count(b"config reloaded")
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.log_path.read_bytes().count(b"config reloaded") > done, timeout,
                 "the exporter to reload its config", interval=0.05)

    def reset_peak_memory(self) -> None:
        """Start VmHWM afresh from the current RSS (Linux >= 4.0: ``5`` into /proc/PID/clear_refs)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.children.stop(self.proc)


# --------------------------------------------------------------------------------------------------------
# nginx serving a static copy, and wrk
# --------------------------------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp-body;
    proxy_temp_path {root}/tmp-proxy;
    fastcgi_temp_path {root}/tmp-fastcgi;
    uwsgi_temp_path {root}/tmp-uwsgi;
    scgi_temp_path {root}/tmp-scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location = /metrics {{
            default_type "text/plain; version=0.0.4; charset=utf-8";
            try_files /metrics.txt =404;
        }}
        location = /metrics.gz {{
            default_type "text/plain; version=0.0.4; charset=utf-8";
            add_header Content-Encoding gzip;
            try_files /metrics.txt.gz =404;
        }}
    }}
}}
"""


class Nginx:
    """nginx as our own process (never the system service), serving given bytes at /metrics."""

    def __init__(self, children: Children, plain: bytes, gzipped: bytes | None = None) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.children = children
        self.root = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        (self.root / "www").mkdir()
        # nginx started as root serves from an unprivileged worker: let it read (only) these copies.
        self.root.chmod(0o755)
        (self.root / "www").chmod(0o755)
        (self.root / "www" / "metrics.txt").write_bytes(plain)
        if gzipped is not None:
            (self.root / "www" / "metrics.txt.gz").write_bytes(gzipped)
        self.port = free_port()
        conf = self.root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=self.root, port=self.port))
        self.proc = children.spawn([binary, "-p", str(self.root), "-c", str(conf), "-e", str(self.root / "error.log")],
                                   stdout=subprocess.DEVNULL, stderr=(self.root / "stderr.log").open("wb"))

        def up() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"nginx exited: {(self.root / 'stderr.log').read_text()}")
            try:
                return http_get(self.port, "/metrics", timeout=2).body == plain
            except OSError:
                return False

        wait_for(up, 20.0, "nginx")

    def stop(self) -> None:
        self.children.stop(self.proc)  # SIGTERM: fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


def _wrk_args(port: int, path: str, connections: int, seconds: float, headers: dict[str, str] | None,
              threads: int, pause_ms: int = 0, jitter: bool = False) -> list[str]:
    binary = shutil.which("wrk") or "wrk"
    args = [binary, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", str(WRK_SCRIPT)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    args.append(f"http://127.0.0.1:{port}{path}")
    if not pause_ms:
        return args
    return [*args, "--", str(pause_ms), "jitter"] if jitter else [*args, "--", str(pause_ms)]


def _wrk_result(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    line = next((x for x in stdout.splitlines() if x.startswith("{")), None)
    if returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({returncode}): {stderr.strip() or stdout.strip()}")
    result: dict[str, Any] = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6) if result["duration_us"] else 0.0
    if result["errors"] or result["non_2xx"]:
        raise BenchError(f"wrk saw errors: {result}")
    return result


def wrk(port: int, path: str, connections: int, seconds: float, headers: dict[str, str] | None = None,
        threads: int = 1, pause_ms: int = 0, jitter: bool = False) -> dict[str, Any]:
    """One wrk run on loopback; latencies in microseconds, plus requests per second. ``pause_ms``: each
    connection waits that long before each request (a steady load instead of back-to-back requests), drawn
    from 0.5 to 1.5 times that with ``jitter``."""
    done = subprocess.run(_wrk_args(port, path, connections, seconds, headers, threads, pause_ms, jitter),
                          capture_output=True,
                          text=True, timeout=seconds + 60, check=False)
    return _wrk_result(done.returncode, done.stdout, done.stderr)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
