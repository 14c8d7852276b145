"""The HTTP side: landing page, telemetry path, health, readiness and reload, on one or more addresses.

Built on the standard library's threading HTTP server: a scrape only reads the pre-rendered exposition,
so one thread per connection is plenty, and TLS handshakes happen in that thread, never in the accept loop.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.collector import ExporterStatus, MetricsRenderer
from exporter.snapshot import Snapshot, SnapshotStore
from exporter.webconfig import WebConfig

log = logging.getLogger("exporter.http")
CONNECTION_TIMEOUT = 30.0
SENDMSG_MAX_BUFFERS = 512  # below IOV_MAX (1024 on Linux)
MAX_BODY = 65536
TLS_HANDSHAKE_RECORD = 0x16


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int
    family: socket.AddressFamily

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.host}:{self.port}"


def parse_listen_address(text: str) -> ListenAddress:
    """``host:port``, ``:port`` (every interface, IPv6 and IPv4) or ``[::1]:port``; ValueError if malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {text!r}: expected host:port, :port or [ipv6]:port")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        return ListenAddress(host[1:-1], port, socket.AF_INET6)
    if not host:
        return ListenAddress("::" if socket.has_ipv6 else "0.0.0.0", port,
                             socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    if ":" in host:
        raise ValueError(f"invalid listen address {text!r}: put an IPv6 address in brackets, like [::1]:10123")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"invalid listen address {text!r}: cannot resolve {host!r}: {err.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return ListenAddress(str(sockaddr[0]), port, family)


class App:
    """What the handlers need from the rest of the exporter."""

    def __init__(self, store: SnapshotStore, renderer: MetricsRenderer, telemetry_path: str,
                 reload: Callable[[], tuple[bool, str]], web_config: Callable[[], WebConfig],
                 status: Callable[[], ExporterStatus]) -> None:
        self.store = store
        self.status = status
        self.renderer = renderer
        self.telemetry_path = telemetry_path
        self.reload = reload
        self.web_config = web_config


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: ListenAddress, handler: type[BaseHTTPRequestHandler], app: App) -> None:
        self.address_family = address.family
        self.app = app
        super().__init__((address.host, address.port), handler, bind_and_activate=False)
        if address.family == socket.AF_INET6 and address.host == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.app.web_config().ssl_context
        if context is not None:
            request.settimeout(CONNECTION_TIMEOUT)
            try:
                first = request.recv(1, socket.MSG_PEEK)
                if first and first[0] != TLS_HANDSHAKE_RECORD:
                    request.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                                    b"Client sent an HTTP request to an HTTPS server.\n")
                    return
                request = context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as err:
                log.debug("TLS handshake failed", extra={"client": client_address[0], "error": str(err)})
                return
        super().finish_request(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = f"cloudflare-ai-gateway-exporter/{__version__}"
    timeout = CONNECTION_TIMEOUT
    # Headers and body are separate writes: with Nagle's algorithm on, a small body waits for the client's
    # delayed ACK of the headers, 40 ms on Linux, on every scrape of a small exposition.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0], "request": format % args})

    def _send(self, status: int, body: bytes | tuple[bytes, ...], content_type: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        """Answer with ``body``: bytes, or chunks of bytes (the cached exposition) written one after another."""
        chunks = (body,) if isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(chunk) for chunk in chunks)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self._write(chunks)

    def _write(self, chunks: tuple[bytes, ...]) -> None:
        """Write the chunks with as few system calls as the socket takes (``sendmsg`` gathers them)."""
        sock = self.connection
        if len(chunks) == 1 or isinstance(sock, ssl.SSLSocket) or not hasattr(sock, "sendmsg"):
            for chunk in chunks:
                self.wfile.write(chunk)
            return
        pending = [memoryview(chunk) for chunk in chunks if chunk]
        while pending:
            sent = sock.sendmsg(pending[:SENDMSG_MAX_BUFFERS])  # waits up to the socket's timeout, like sendall
            while sent and pending:
                if sent >= len(pending[0]):
                    sent -= len(pending.pop(0))
                else:
                    pending[0] = pending[0][sent:]
                    sent = 0

    def _authorized(self) -> bool:
        auth = self.server.app.web_config().basic_auth
        if auth is None or auth.check(self.headers.get("Authorization")):
            return True
        self._send(401, b"Unauthorized\n",
                   headers={"WWW-Authenticate": 'Basic realm="cloudflare-ai-gateway-exporter"'})
        return False

    def do_GET(self) -> None:
        self._get(head_only=False)

    def do_HEAD(self) -> None:
        self._get(head_only=True)

    def _get(self, head_only: bool) -> None:
        if not self._authorized():
            return
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if path == app.telemetry_path:
            rendered = app.renderer.render(self.headers.get("Accept"), self.headers.get("Accept-Encoding"))
            headers = {"Vary": "Accept, Accept-Encoding"}
            if rendered.content_encoding:
                headers["Content-Encoding"] = rendered.content_encoding
            self._send(200, rendered.chunks, rendered.content_type, headers, head_only)
        elif path == "/-/healthy":
            self._send(200, b"Healthy\n", head_only=head_only)
        elif path == "/-/ready":
            ready = app.store.snapshot().ready
            self._send(200 if ready else 503, b"Ready\n" if ready else b"Not ready: not every account polled yet\n",
                       head_only=head_only)
        elif path == "/":
            self._send(200, landing_page(app.store.snapshot(), app.telemetry_path,
                                            app.status().config.metrics.amount_divisor).encode(),
                       "text/html; charset=utf-8", head_only=head_only)
        elif path == "/-/reload":
            self._send(405, b"Use POST to reload the config\n", headers={"Allow": "POST"}, head_only=head_only)
        else:
            self._send(404, b"Not found\n", head_only=head_only)

    def _discard_body(self) -> None:
        """Read the request body away (before any answer), so it is never taken for the next request."""
        length_header = self.headers.get("Content-Length") or "0"
        length = int(length_header) if length_header.isdigit() else -1
        if 0 <= length <= MAX_BODY and "Transfer-Encoding" not in self.headers:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def do_POST(self) -> None:
        self._discard_body()
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if path in ("/", self.server.app.telemetry_path, "/-/healthy", "/-/ready"):
            self._send(405, b"Method not allowed: use GET\n", headers={"Allow": "GET, HEAD"})
            return
        if path != "/-/reload":
            self._send(404, b"Not found\n")
            return
        ok, message = self.server.app.reload()
        self._send(200 if ok else 500, (message + "\n").encode())


def landing_page(snapshot: Snapshot, telemetry_path: str, divisor: float) -> str:
    rows = []
    for state in snapshot.accounts.values():
        if not state.polled:
            result = "not polled yet"
        elif state.last_poll_success:
            result = "ok"
        else:
            result = f"failed ({state.last_error})"
        last = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(state.last_poll_time)) \
            if state.last_poll_time else "never"
        unpaid: dict[str, float] = {}
        for invoice in state.invoices or ():
            if invoice.unpaid:
                unpaid[invoice.currency] = unpaid.get(invoice.currency, 0.0) + invoice.amount_remaining / divisor
        totals = ", ".join(f"{amount:,.2f} {currency.upper()}" for currency, amount in sorted(unpaid.items()))
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


def _bind(address: ListenAddress, app: App) -> _Server:
    try:
        return _Server(address, Handler, app)
    except OSError:
        if address.host != "::":
            raise
        # ":port" on a host without IPv6 (some containers): every IPv4 interface instead.
        return _Server(ListenAddress("0.0.0.0", address.port, socket.AF_INET), Handler, app)


class WebServers:
    """One server thread per listen address; ``shutdown`` stops them all."""

    def __init__(self, app: App, addresses: list[ListenAddress]) -> None:
        self._servers = [_bind(address, app) for address in addresses]
        self._threads: list[threading.Thread] = []

    @property
    def bound(self) -> list[str]:
        return [str(ListenAddress(str(s.server_address[0]), int(s.server_address[1]),
                                  socket.AddressFamily(s.address_family))) for s in self._servers]

    def start(self) -> None:
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                      name=f"http-{server.server_address[1]}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
