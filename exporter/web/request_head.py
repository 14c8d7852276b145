"""Reading one request head within its deadline, and parsing it: the request line and the headers."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from http.client import HTTPMessage

from exporter.web import limits


class BadRequest(Exception):
    """A request that cannot be answered normally: answered ``status`` with ``explain``, then closed."""

    def __init__(self, status: int, explain: str) -> None:
        super().__init__(explain)
        self.status = status
        self.explain = explain


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    version: tuple[int, int]  # (0, 9) for a request line without a version
    headers: HTTPMessage
    keep_alive: bool  # as the client asked (HTTP/1.1 by default, HTTP/1.0 with Connection: keep-alive)
    line: str  # the request line, for the log


def head_end(buffer: bytes | bytearray) -> int:
    """Where the head in ``buffer`` ends (after its blank line), or -1 if it has not ended yet."""
    crlf = buffer.find(b"\n\r\n")
    lf = buffer.find(b"\n\n")
    if lf < 0:
        return crlf + 3 if crlf >= 0 else -1
    return crlf + 3 if 0 <= crlf < lf else lf + 2


def receive(sock: socket.socket, buffer: bytearray, deadline: float) -> bool:
    """Append what the client sends next to ``buffer``; False if it closed. TimeoutError past ``deadline``:
    a client sending a byte every few seconds still ends at the deadline (a per-read timeout never would)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("request not complete within the deadline")
    sock.settimeout(remaining)
    data = sock.recv(65536)
    buffer += data
    return bool(data)


def read_head(sock: socket.socket, buffer: bytearray, deadline: float) -> bytes | None:
    """The next request head, taken from the front of ``buffer`` (read into from ``sock`` as needed); None if
    the client closed before it ended. BadRequest (431) if it is larger than MAX_HEAD_BYTES."""
    while (end := head_end(buffer)) < 0:
        if len(buffer) > limits.MAX_HEAD_BYTES:
            break
        if not receive(sock, buffer, deadline):
            return None
    if end < 0 or end > limits.MAX_HEAD_BYTES:
        raise BadRequest(431, f"request head larger than {limits.MAX_HEAD_BYTES} bytes")
    head = bytes(buffer[:end])
    del buffer[:end]
    return head


def read_body(sock: socket.socket, buffer: bytearray, length: int, deadline: float) -> bool:
    """Take a body of ``length`` bytes off ``buffer`` (read into from ``sock`` as needed); False if the client
    closed first."""
    while len(buffer) < length:
        if not receive(sock, buffer, deadline):
            return False
    del buffer[:length]
    return True


def parse_head(head: bytes) -> Request:
    """The request in a complete head; BadRequest for a malformed one (400), too many header lines (431), or
    an HTTP version from 2.0 on (505)."""
    line, *header_lines = head.decode("iso-8859-1").rstrip("\r\n").split("\n")
    line = line.rstrip("\r")
    words = line.split()
    if len(words) == 3:
        version = _version(words[2])
    elif len(words) == 2 and words[0] == "GET":
        version = (0, 9)
    elif len(words) == 2:
        raise BadRequest(400, f"Bad HTTP/0.9 request type ({words[0]!r})")
    else:
        raise BadRequest(400, f"Bad request syntax ({line[:200]!r})")
    if len(header_lines) > limits.MAX_HEADER_LINES:
        raise BadRequest(431, f"more than {limits.MAX_HEADER_LINES} header lines")
    headers = _headers(header_lines)
    path = words[1].split("?", 1)[0]
    if path.startswith("//"):  # a base URL ending in / joined with /metrics asks for //metrics: the same route
        path = "/" + path.lstrip("/")
    connection = (headers.get("Connection") or "").lower()
    keep_alive = version >= (1, 1) if connection not in ("close", "keep-alive") else connection == "keep-alive"
    # an answer to HTTP/0.9 has no head: only closing the connection ends it
    return Request(words[0], path, version, headers, keep_alive and version > (0, 9), line)


def _version(text: str) -> tuple[int, int]:
    name, _, number = text.partition("/")
    major, dot, minor = number.partition(".")
    try:
        if name != "HTTP" or not dot:
            raise ValueError(text)
        version = int(major), int(minor)
    except ValueError:
        raise BadRequest(400, f"Bad request version ({text[:40]!r})") from None
    if version >= (2, 0):
        raise BadRequest(505, f"Invalid HTTP version ({number[:40]})")
    return version


def _headers(lines: list[str]) -> HTTPMessage:
    """The header lines as a message; a folded line continues the one before (RFC 9112, 5.2)."""
    headers = HTTPMessage()
    name, value = "", ""
    for raw in lines:
        text = raw.rstrip("\r")
        if text[:1] in (" ", "\t") and name:
            value += " " + text.strip()
            continue
        if name:
            headers[name] = value
        name, colon, value = text.partition(":")
        if not colon or not name or name != "".join(name.split()):
            raise BadRequest(400, f"Bad header line ({text[:80]!r})")
        value = value.strip()
    if name:
        headers[name] = value
    return headers
