"""The HTTP side only: a route table (from exporter/app.py) served on one or more addresses, with TLS and auth.

Built on the standard library's HTTP request handler. One thread per address accepts connections and reads
request heads without blocking; a bounded pool of threads answers complete requests (a scrape only reads the
pre-rendered exposition). Every connection has a deadline, and their number is capped (docs/limits.md).
TLS handshakes happen in a pool thread, never in the accept loop.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import queue
import resource
import select
import selectors
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from exporter import __version__
from exporter.web import limits
from exporter.web.routes import WebApp
from exporter.web.send import batches, send_buffers

log = logging.getLogger("exporter.http")
TLS_HANDSHAKE_RECORD = 0x16


class HeadTooLarge(http.client.HTTPException):
    """More request head than MAX_HEAD_BYTES: answered 431."""


class _Reader:
    """The request's bytes: what the accept loop already read, then the socket, all within one deadline.
    A client sending a byte every few seconds still ends at the deadline (a per-read timeout never would)."""

    def __init__(self, sock: socket.socket, buffer: bytes, deadline: float) -> None:
        self.sock = sock
        self.buffer = bytearray(buffer)
        self.deadline = deadline
        self.head_left: int | None = limits.MAX_HEAD_BYTES  # None once the head is read

    def _fill(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not complete within the deadline")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self.head_left is not None:
            self.head_left -= len(data)
            if self.head_left < 0:
                raise HeadTooLarge(f"request head larger than {limits.MAX_HEAD_BYTES} bytes")
        return data

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                return self._take(end + 1)
            if 0 <= limit <= len(self.buffer):
                return self._take(limit)
            if self.head_left is not None and len(self.buffer) > self.head_left:
                raise HeadTooLarge(f"request head larger than {limits.MAX_HEAD_BYTES} bytes")
            if not self._fill():
                return self._take(len(self.buffer))

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buffer) < n) and self._fill():
            pass
        return self._take(len(self.buffer) if n < 0 else n)

    def close(self) -> None:
        pass


class _Writer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes | memoryview) -> int:
        if self.sock.gettimeout() != limits.WRITE_TIMEOUT:
            self.sock.settimeout(limits.WRITE_TIMEOUT)
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Conn:
    sock: socket.socket
    address: Any
    deadline: float
    buffer: bytes = b""
    tls: bool = False  # handshake done
    started: float = 0.0  # the first byte of the current request arrived (for REQUEST_TIMEOUT)


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


class _Server(HTTPServer):
    """Serves one listen address: one thread accepts connections and reads request heads without blocking,
    at most MAX_HANDLER_THREADS threads answer requests. Idle and slow clients cost no thread and are cut at
    their deadline; past MAX_CONNECTIONS the oldest connection without a request in progress is closed, so a
    scraper is always answered."""

    request_queue_size = limits.LISTEN_BACKLOG

    def __init__(self, address: ListenAddress, handler: type[BaseHTTPRequestHandler], app: WebApp) -> None:
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
        self.socket.setblocking(False)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_connections = limits.MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else \
            max(8, min(limits.MAX_CONNECTIONS, soft // 2))
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[int, _Conn] = {}  # fd -> connection waiting for its (next) request
        self._busy = 0  # connections in a handler thread
        self._lock = threading.Lock()
        self._returned: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._jobs: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []  # daemon threads: a stuck client never delays exit
        self._stop = threading.Event()
        self._stopped = threading.Event()

    # --- the accept loop ---

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(poll_interval):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._readable(key.data)
                self._take_back()
                self._expire()
        finally:
            self._stopped.set()

    def _open(self) -> int:
        return len(self._waiting) + self._busy

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # out of descriptors: make room, try again at the next event
                log.debug("accept failed", extra={"error": str(err)})
                self._evict_oldest()
                return
            with self._lock:
                crowded = self._open() >= self.max_connections
            if crowded and not self._evict_oldest():
                log.debug("connection refused: too many open", extra={"client": address[0]})
                sock.close()
                continue
            sock.setblocking(False)
            now = time.monotonic()
            self._wait(_Conn(sock, address, now + limits.IDLE_TIMEOUT))

    def _wait(self, conn: _Conn) -> None:
        if conn.buffer and _head_complete(conn.buffer):
            self._dispatch(conn)
            return
        if conn.tls and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
            self._dispatch(conn)
            return
        self._waiting[conn.sock.fileno()] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _evict_oldest(self) -> bool:
        """Close the waiting connection that has waited longest (its deadline is the nearest)."""
        if not self._waiting:
            return False
        oldest = min(self._waiting.values(), key=lambda c: c.deadline)
        log.debug("connection closed to make room", extra={"client": oldest.address[0]})
        self._drop(oldest)
        return True

    def _unwait(self, conn: _Conn) -> None:
        self._waiting.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)

    def _drop(self, conn: _Conn) -> None:
        self._unwait(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _readable(self, conn: _Conn) -> None:
        if self.app.web_config().ssl_context is not None or conn.tls:
            self._unwait(conn)  # TLS: the handshake and the request are read in a handler thread
            self._dispatch(conn)
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        if not conn.buffer:
            conn.started = time.monotonic()
            conn.deadline = min(conn.deadline, conn.started + limits.REQUEST_TIMEOUT)
        conn.buffer += data
        if _head_complete(conn.buffer) or len(conn.buffer) > limits.MAX_HEAD_BYTES:
            self._unwait(conn)
            self._dispatch(conn)

    def _dispatch(self, conn: _Conn) -> None:
        if not conn.started:
            conn.started = time.monotonic()
        with self._lock:
            self._busy += 1
            more = self._busy > len(self._threads) and len(self._threads) < limits.MAX_HANDLER_THREADS
        if more:
            thread = threading.Thread(target=self._worker, name=f"http-{self.server_address[1]}-"
                                      f"{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put(conn)

    def _worker(self) -> None:
        while (conn := self._jobs.get()) is not None:
            self._work(conn)

    def _take_back(self) -> None:
        while True:
            try:
                conn = self._returned.get_nowait()
            except queue.Empty:
                return
            if self._stop.is_set():
                conn.sock.close()
                continue
            if conn.buffer:  # part of the next request came already: its REQUEST_TIMEOUT runs from its first byte
                conn.started = conn.started or time.monotonic()
                conn.deadline = conn.started + limits.REQUEST_TIMEOUT
            else:
                conn.started = 0.0
                conn.deadline = time.monotonic() + limits.IDLE_TIMEOUT
            with contextlib.suppress(OSError, ValueError):
                conn.sock.setblocking(False)
                self._wait(conn)
                continue
            conn.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._waiting.values() if c.deadline <= now]:
            log.debug("connection closed: no complete request in time", extra={"client": conn.address[0]})
            self._drop(conn)

    # --- a handler thread ---

    def _work(self, conn: _Conn) -> None:
        keep = False
        try:
            while (keep := self._handle(conn)) and self._next_request(conn):
                pass
        except Exception:  # noqa: BLE001 - handle_error logs it: debug for a client gone, error for a bug
            self.handle_error(conn.sock, conn.address)
        finally:
            with self._lock:
                self._busy -= 1
            if keep:
                self._returned.put(conn)
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"x")
            else:
                with contextlib.suppress(OSError):
                    conn.sock.close()

    def _next_request(self, conn: _Conn) -> bool:
        """True if this thread answers the connection's next request too: its head is complete (already
        buffered, or arriving within KEEPALIVE_LINGER) and no other request waits for a thread."""
        conn.started = time.monotonic() if conn.buffer else 0.0  # the next request's first byte
        if self._stop.is_set() or not self._jobs.empty():
            return False
        linger_end = time.monotonic() + limits.KEEPALIVE_LINGER
        poller = select.poll()
        poller.register(conn.sock.fileno(), select.POLLIN)
        conn.sock.settimeout(0.0)
        while not _head_complete(conn.buffer) and len(conn.buffer) <= limits.MAX_HEAD_BYTES:
            if conn.tls and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                break
            remaining = linger_end - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return False
            if conn.tls:  # a TLS record arrived: read it in this thread, as the accept loop would hand it over
                break
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:  # the client closed: the accept loop sees it too and drops the connection
                return False
            if not conn.buffer:
                conn.started = time.monotonic()
            conn.buffer += data
        conn.started = conn.started or time.monotonic()
        return True

    def _handle(self, conn: _Conn) -> bool:
        """Answer one request; True if the connection stays open for the next one."""
        deadline = conn.started + limits.REQUEST_TIMEOUT
        conn.sock.setblocking(True)
        context = self.app.web_config().ssl_context
        if context is not None and not conn.tls:
            conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
            first = conn.sock.recv(1, socket.MSG_PEEK)
            if first and first[0] != TLS_HANDSHAKE_RECORD:
                conn.sock.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                  b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                return False
            try:
                conn.sock = context.wrap_socket(conn.sock, server_side=True)
            except (ssl.SSLError, OSError) as err:
                log.debug("TLS handshake failed", extra={"client": conn.address[0], "error": str(err)})
                return False
            conn.tls = True
        reader = _Reader(conn.sock, conn.buffer, deadline)
        handler = self.RequestHandlerClass(conn.sock, conn.address, self)  # type: ignore[arg-type]
        assert isinstance(handler, Handler)
        keep = handler.answer(reader)
        conn.buffer = bytes(reader.buffer)
        return keep

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or times out is no error: debug. Anything else is a bug, logged as one."""
        err = sys.exc_info()[1]
        client = client_address[0] if client_address else "?"
        if isinstance(err, OSError):
            log.debug("client connection ended early", extra={"client": client, "error": str(err) or
                                                              type(err).__name__})
        else:
            log.error("HTTP handler failed (a bug)", extra={"client": client}, exc_info=True)

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait(5)

    def server_close(self) -> None:
        super().server_close()
        if not hasattr(self, "_jobs"):  # bind failed in __init__: nothing else was made
            return
        for _ in self._threads:
            self._jobs.put(None)
        for conn in list(self._waiting.values()):
            self._drop(conn)
        with contextlib.suppress(Exception):
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    @property
    def load(self) -> tuple[int, int]:
        """(connections waiting for a request, connections in a handler thread): for tests and debugging."""
        with self._lock:
            return len(self._waiting), self._busy


def _head_complete(buffer: bytes) -> bool:
    return b"\r\n\r\n" in buffer or b"\n\n" in buffer


class Handler(BaseHTTPRequestHandler):
    """One request on a connection the server already accepted (and, for plain HTTP, whose head it read)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = f"cloudflare-ai-gateway-exporter/{__version__}"

    def __init__(self, request: Any, client_address: Any, server: _Server) -> None:
        # Not BaseRequestHandler.__init__: answer() handles exactly one request.
        self.request = request
        self.connection = request
        self.client_address = client_address
        self.server = server

    def answer(self, reader: _Reader) -> bool:
        """Read and answer one request; True if the connection stays open for another."""
        # Headers and body are separate writes: with Nagle's algorithm on, a small body waits for the client's
        # delayed ACK of the headers, 40 ms on Linux, on every scrape of a small exposition.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = reader  # type: ignore[assignment]
        self.wfile = _Writer(self.connection)  # type: ignore[assignment]
        self.close_connection = True
        # what an error answer needs before the request line is parsed (a request line too long to read)
        self.command, self.request_version, self.requestline = "", "HTTP/1.1", ""
        try:
            self.handle_one_request()
        except HeadTooLarge as err:
            self.send_error(431, "Request Header Fields Too Large", str(err))
            self.linger()
            return False
        except TimeoutError:
            log.debug("request not complete in time", extra={"client": self.client_address[0],
                                                             "timeout_seconds": limits.REQUEST_TIMEOUT})
            return False
        return not self.close_connection

    def linger(self) -> None:
        """After an error answer to a client still sending: stop writing, read a little of what it sends, so
        closing does not reset the connection before the client reads the answer (at most 0.5 s, 256 kB)."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            for _ in range(4):
                if not self.connection.recv(65536):
                    break

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if not ok and self.close_connection:
            self.linger()
        if isinstance(self.rfile, _Reader):
            self.rfile.head_left = None  # the head is read: the body has its own limit
        return ok

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0], "request": format % args})

    def _send(self, status: int, body: bytes | tuple[bytes | memoryview, ...],
              content_type: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        """Answer with ``body``: bytes, or chunks of bytes (the cached exposition) written one after another."""
        chunks = (body,) if isinstance(body, bytes) else body
        length = sum(map(len, chunks))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if not head_only and length <= limits.WRITE_BATCH and self.request_version != "HTTP/0.9":
            # head and a small body in one write: one system call (and GIL hand-off) less per answer
            head: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
            self.wfile.write(b"".join((*head, b"\r\n", *chunks)))
            head.clear()
            return
        self.end_headers()
        if not head_only:
            self._write(chunks)

    def _write(self, chunks: tuple[bytes | memoryview, ...]) -> None:
        """The chunks a batch at a time, each batch within WRITE_TIMEOUT."""
        for batch in batches(chunks):
            send_buffers(self.connection, batch, time.monotonic() + limits.WRITE_TIMEOUT)

    def _authorized(self) -> bool:
        auth = self.server.app.web_config().basic_auth
        if auth is None or auth.check(self.headers.get("Authorization")):
            return True
        self._send(401, b"Unauthorized\n",
                   headers={"WWW-Authenticate": 'Basic realm="cloudflare-ai-gateway-exporter"'})
        return False

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        if not self._discard_body():
            self.close_connection = True
            self._send(413, f"Request body larger than {limits.MAX_BODY} bytes\n".encode())
            self.linger()
            return
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        if not self._authorized():
            return
        methods = self.server.app.routes.get(self.path.split("?", 1)[0])
        if methods is None:
            self._send(404, b"Not found\n", head_only=method == "HEAD")
            return
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allowed = "GET, HEAD" if "GET" in methods else ", ".join(methods)
            self._send(405, f"Method not allowed: use {allowed}\n".encode(), headers={"Allow": allowed},
                       head_only=method == "HEAD")
            return
        try:
            answer = handler(self.headers)
        except Exception:  # a bug in one route: that request gets a 500, not a dropped connection
            log.error("HTTP handler failed (a bug)", extra={"client": self.client_address[0], "path": self.path[:200]},
                      exc_info=True)
            self.close_connection = True
            self._send(500, b"Internal Server Error (logged)\n", head_only=method == "HEAD")
            return
        self._send(answer.status, answer.body, answer.content_type, dict(answer.headers), method == "HEAD")

    def _discard_body(self) -> bool:
        """Read the request body away (before any answer), so it is never taken for the next request.
        False if it is larger than MAX_BODY or of unknown length (chunked): the connection is then closed."""
        length_header = self.headers.get("Content-Length") or "0"
        length = int(length_header) if length_header.isdigit() and len(length_header) < 12 else -1
        if 0 <= length <= limits.MAX_BODY and "Transfer-Encoding" not in self.headers:
            self.rfile.read(length)
            return True
        self.close_connection = True
        return False


class ListenError(Exception):
    """An address that cannot be listened on: ``address`` as given, ``reason`` the system's words."""

    def __init__(self, address: ListenAddress, err: OSError) -> None:
        self.address = address
        self.reason = err.strerror or str(err)
        super().__init__(f"cannot listen on {address}: {self.reason}")


def _bind(address: ListenAddress, app: WebApp) -> _Server:
    try:
        return _Server(address, Handler, app)
    except OSError as err:
        if address.host != "::":
            raise ListenError(address, err) from None
        # ":port" on a host without IPv6 (some containers): every IPv4 interface instead.
        fallback = ListenAddress("0.0.0.0", address.port, socket.AF_INET)
        try:
            return _Server(fallback, Handler, app)
        except OSError as again:
            raise ListenError(address, again) from None


class WebServers:
    """One server thread per listen address; ``shutdown`` stops them all."""

    def __init__(self, app: WebApp, addresses: list[ListenAddress]) -> None:
        self._servers: list[_Server] = []
        try:
            for address in addresses:
                self._servers.append(_bind(address, app))
        except ListenError:
            for server in self._servers:
                server.server_close()
            raise
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
