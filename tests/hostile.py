"""A hostile stand-in for the Cloudflare API: a raw-socket server on loopback that answers every request with
whatever bytes a test scripts (a gzip bomb, a body dripped a byte a second, an endless body), and hostile
HTTP clients for the exporter's own server. Test support only; everything stops by itself."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from functools import lru_cache

Respond = Callable[[socket.socket, "HostileServer"], None]


class HostileServer:
    """Accepts connections on 127.0.0.1; for each, reads the request head and calls ``respond(conn, self)``."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.stopping = threading.Event()
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/client/v4"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        return
                    head += data
                self.requests += 1
                self.respond(conn, self)
            except OSError:
                return

    def sleep(self, seconds: float) -> bool:
        """False if the server is stopping."""
        return not self.stopping.wait(seconds)


def head(status: int = 200, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Connection: close",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@lru_cache(maxsize=1)
def gzip_bomb(size: int = 1 << 30) -> bytes:
    """``size`` zero bytes, gzip-compressed (1 GiB: about 1 MB): one fully flushed deflate segment of 1 MiB
    of zeros, repeated (each starts afresh, so the copies are identical), in one gzip member."""
    block = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size >> 20):
        crc = zlib.crc32(block, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + segment * (size >> 20) + b"\x03\x00"
            + struct.pack("<II", crc, size & 0xFFFFFFFF))


def send_gzip_bomb(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(head(200, Content_Type="application/json", Content_Encoding="gzip"))
    bomb = gzip_bomb()
    for start in range(0, len(bomb), 65536):
        if server.stopping.is_set():
            return
        conn.sendall(bomb[start:start + 65536])


def send_endless(conn: socket.socket, server: HostileServer) -> None:
    """A JSON body that never ends (no Content-Length), 64 KiB at a time."""
    conn.sendall(head(200, Content_Type="application/json") + b'{"success": true, "result": {"x": "')
    block = b"a" * 65536
    while not server.stopping.is_set():
        conn.sendall(block)


def send_dripped(conn: socket.socket, server: HostileServer) -> None:
    """A valid answer, one byte a second."""
    body = b'{"success": true, "errors": [], "result": {}}'
    conn.sendall(head(200, Content_Type="application/json", Content_Length=str(len(body))))
    for byte in body:
        if not server.sleep(1.0):
            return
        conn.sendall(bytes([byte]))


def rss_peak_kib(pid: int) -> int:
    """The peak resident set size (VmHWM) of a process, KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def trickle(address: tuple[str, int], stop: threading.Event, interval: float = 1.0) -> None:
    """A slowloris client: a request line dribbled a byte per ``interval``, never finished."""
    try:
        with socket.create_connection(address, timeout=5) as sock:
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                if stop.wait(interval):
                    return
                sock.sendall(bytes([byte]))
    except OSError:
        return


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
