"""The connections of one listening socket: a non-blocking accept loop that reads plain-HTTP request heads,
a deadline per connection, a cap on open connections, and the hand-over of complete requests to the handler
threads and back (a kept-alive connection)."""

from __future__ import annotations

import contextlib
import logging
import queue
import resource
import select
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from exporter.web import limits
from exporter.web.handler import answer_request, start_tls
from exporter.web.handler_pool import HandlerPool
from exporter.web.request_head import head_end
from exporter.web.routes import WebApp

log = logging.getLogger("exporter.http")


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    client: str  # the peer's address, for logs
    deadline: float  # while it waits in the accept loop: closed if no complete request head by then
    buffer: bytearray = field(default_factory=bytearray)  # what has come of the next request
    tls: bool = False  # handshake done
    started: float = 0.0  # the first byte of the current request arrived (for REQUEST_TIMEOUT)


class ConnectionLoop:
    """Serves one listening socket from a thread of its own. Idle and slow plain-HTTP clients cost no handler
    thread and are cut at their deadline; past the cap on open connections the one that has waited longest
    without a request in progress is closed, so a scraper is always answered."""

    def __init__(self, listener: socket.socket, app: WebApp) -> None:
        self._listener = listener
        self._app = app
        listener.setblocking(False)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self._max_connections = limits.MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else \
            max(8, min(limits.MAX_CONNECTIONS, soft // 2))
        self._name = f"http-{listener.getsockname()[1]}"
        self._pool: HandlerPool[Connection] = HandlerPool(self._name, self._serve)
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[int, Connection] = {}  # fd -> connection waiting for its (next) request head
        self._returned: queue.SimpleQueue[Connection] = queue.SimpleQueue()  # kept alive by a handler thread
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the loop, close the listening socket and every connection not in a handler thread."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        self._listener.close()
        self._pool.stop()
        for conn in list(self._waiting.values()):
            self._drop(conn)
        while not self._returned.empty():
            self._returned.get().sock.close()
        self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    # --- the accept loop ---

    def _run(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.2):
                if key.data is not None:
                    self._readable(key.data)
                elif key.fileobj is self._listener:
                    self._accept()
                else:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
            self._take_back()
            self._expire()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # out of descriptors: make room, try again at the next event
                log.debug("accept failed", extra={"error": str(err)})
                self._evict_oldest()
                return
            if len(self._waiting) + self._pool.busy >= self._max_connections and not self._evict_oldest():
                log.debug("connection refused: too many open", extra={"client": address[0]})
                sock.close()
                continue
            sock.setblocking(False)
            # An answer in several writes (a large one goes in batches) must not wait for the client's delayed
            # ACK of the write before (40 ms on Linux) to send its last small segment.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            self._wait(Connection(sock, str(address[0]), time.monotonic() + limits.IDLE_TIMEOUT))

    def _wait(self, conn: Connection) -> None:
        if head_end(conn.buffer) >= 0 or (conn.tls and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
            self._dispatch(conn)
            return
        self._waiting[conn.sock.fileno()] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _evict_oldest(self) -> bool:
        """Close the waiting connection that has waited longest (its deadline is the nearest)."""
        if not self._waiting:
            return False
        oldest = min(self._waiting.values(), key=lambda c: c.deadline)
        log.debug("connection closed to make room", extra={"client": oldest.client})
        self._drop(oldest)
        return True

    def _unwait(self, conn: Connection) -> None:
        self._waiting.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)

    def _drop(self, conn: Connection) -> None:
        self._unwait(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _readable(self, conn: Connection) -> None:
        if conn.tls or self._app.web_config().ssl_context is not None:
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
        if head_end(conn.buffer) >= 0 or len(conn.buffer) > limits.MAX_HEAD_BYTES:
            self._unwait(conn)
            self._dispatch(conn)

    def _dispatch(self, conn: Connection) -> None:
        conn.started = conn.started or time.monotonic()
        self._pool.put(conn)

    def _take_back(self) -> None:
        while not self._returned.empty():
            conn = self._returned.get()
            if self._stop.is_set():
                conn.sock.close()
                continue
            if conn.buffer:  # part of the next request came already: its REQUEST_TIMEOUT runs from its first byte
                conn.started = conn.started or time.monotonic()
                conn.deadline = conn.started + limits.REQUEST_TIMEOUT
            else:
                conn.started = 0.0
                conn.deadline = time.monotonic() + limits.IDLE_TIMEOUT
            try:
                conn.sock.setblocking(False)
                self._wait(conn)
            except (OSError, ValueError):
                conn.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._waiting.values() if c.deadline <= now]:
            log.debug("connection closed: no complete request in time", extra={"client": conn.client})
            self._drop(conn)

    # --- in a handler thread ---

    def _serve(self, conn: Connection) -> None:
        """Answer the connection's requests while they come at once; then hand it back or close it."""
        keep = False
        try:
            while (keep := self._answer(conn)) and self._next_request(conn):
                pass
        except OSError as err:
            keep = False
            log.debug("client connection ended early", extra={"client": conn.client,
                                                              "error": str(err) or type(err).__name__})
        except Exception:
            keep = False
            log.error("HTTP handler failed (a bug)", extra={"client": conn.client}, exc_info=True)
        self._pool.done()
        if keep:
            self._returned.put(conn)
            self._wake()
        else:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def _answer(self, conn: Connection) -> bool:
        deadline = conn.started + limits.REQUEST_TIMEOUT
        context = self._app.web_config().ssl_context
        if context is not None and not conn.tls:
            tls = start_tls(conn.sock, context, deadline, conn.client)
            if tls is None:
                return False
            conn.sock, conn.tls = tls, True
        return answer_request(conn.sock, conn.client, conn.buffer, deadline, self._app)

    def _next_request(self, conn: Connection) -> bool:
        """True if this thread answers the connection's next request too: its head is complete (already
        buffered, or arriving within KEEPALIVE_LINGER) and no other request waits for a thread."""
        conn.started = time.monotonic() if conn.buffer else 0.0  # the next request's first byte
        if self._stop.is_set() or self._pool.queued():
            return False
        linger_end = time.monotonic() + limits.KEEPALIVE_LINGER
        poller = select.poll()
        poller.register(conn.sock.fileno(), select.POLLIN)
        conn.sock.settimeout(0.0)
        while head_end(conn.buffer) < 0 and len(conn.buffer) <= limits.MAX_HEAD_BYTES:
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
