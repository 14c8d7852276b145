"""Answering one request on an accepted connection: its TLS handshake (once), head and body, basic auth, the
route, and the answer's head. Runs in a pool thread."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import logging
import platform
import socket
import ssl
import time
from http import HTTPStatus

from exporter import __version__
from exporter.web import limits
from exporter.web.request_head import BadRequest, Request, parse_head, read_body, read_head
from exporter.web.routes import Response, WebApp
from exporter.web.send import send_answer

log = logging.getLogger("exporter.http")
SERVER = f"cloudflare-ai-gateway-exporter/{__version__} Python/{platform.python_version()}"
TLS_HANDSHAKE_RECORD = 0x16
METHODS = ("GET", "HEAD", "POST")
PHRASES = {status.value: status.phrase for status in HTTPStatus}
UNAUTHORIZED = Response(401, b"Unauthorized\n",
                        headers={"WWW-Authenticate": 'Basic realm="cloudflare-ai-gateway-exporter"'})


def start_tls(sock: socket.socket, context: ssl.SSLContext, deadline: float, client: str) -> ssl.SSLSocket | None:
    """The connection after its TLS handshake (each read waits until ``deadline`` at most); None if the
    handshake failed, or if the client sent plain HTTP (answered 400)."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    first = sock.recv(1, socket.MSG_PEEK)
    if first and first[0] != TLS_HANDSHAKE_RECORD:
        _refuse(sock, client, BadRequest(400, "Client sent an HTTP request to an HTTPS server."))
        return None
    try:
        return context.wrap_socket(sock, server_side=True)
    except (ssl.SSLError, OSError) as err:
        log.debug("TLS handshake failed", extra={"client": client, "error": str(err)})
        return None


def answer_request(sock: socket.socket, client: str, buffer: bytearray, deadline: float, app: WebApp) -> bool:
    """Read one request (``buffer`` holds what has come of it already, and keeps what follows it) and answer
    it; True if the connection stays open for the next one."""
    request: Request | None = None
    try:
        head = read_head(sock, buffer, deadline)
        if head is None:
            return False
        request = parse_head(head)
        if request.method not in METHODS:
            raise BadRequest(501, f"Unsupported method ({request.method[:40]!r})")
        if not _read_body(sock, buffer, request, deadline):
            return False
    except BadRequest as refused:
        _refuse(sock, client, refused, request)
        return False
    except TimeoutError:
        log.debug("request not complete in time", extra={"client": client,
                                                         "timeout_seconds": limits.REQUEST_TIMEOUT})
        return False
    response, close = _route(request, app, client)
    _send(sock, client, request, response, close)
    return request.keep_alive and not close


def _read_body(sock: socket.socket, buffer: bytearray, request: Request, deadline: float) -> bool:
    """Read the request body away before answering, so that it is never taken for the next request; False if
    the client closed first. BadRequest (413) for a body over MAX_BODY or of unknown length (chunked)."""
    text = request.headers.get("Content-Length") or "0"
    length = int(text) if text.isascii() and text.isdigit() and len(text) < 12 else -1
    if not 0 <= length <= limits.MAX_BODY or "Transfer-Encoding" in request.headers:
        raise BadRequest(413, f"Request body larger than {limits.MAX_BODY} bytes")
    if length > len(buffer) and request.version >= (1, 1) and \
            (request.headers.get("Expect") or "").lower() == "100-continue":
        send_answer(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
    return read_body(sock, buffer, length, deadline)


def _route(request: Request, app: WebApp, client: str) -> tuple[Response, bool]:
    """The answer from the route's handler, after basic auth; and whether to close the connection after it."""
    auth = app.web_config().basic_auth
    if auth is not None and not auth.check(request.headers.get("Authorization")):
        return UNAUTHORIZED, False
    methods = app.routes.get(request.path)
    if methods is None:
        return Response(404, b"Not found\n"), False
    handler = methods.get("GET" if request.method == "HEAD" else request.method)
    if handler is None:
        allowed = "GET, HEAD" if "GET" in methods else ", ".join(methods)
        return Response(405, f"Method not allowed: use {allowed}\n".encode(), headers={"Allow": allowed}), False
    try:
        return handler(request.headers), False
    except Exception:  # a bug in one route: that request gets a 500, not a dropped connection
        log.error("HTTP handler failed (a bug)", extra={"client": client, "path": request.path[:200]},
                  exc_info=True)
        return Response(500, b"Internal Server Error (logged)\n"), True


def _refuse(sock: socket.socket, client: str, refused: BadRequest, request: Request | None = None) -> None:
    """Answer a request that cannot be served, then read a little of what the client still sends, so that
    closing does not reset the connection before the client has read the answer."""
    _send(sock, client, request, Response(refused.status, f"{refused.explain}\n".encode()), close=True)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        end = time.monotonic() + limits.ERROR_LINGER
        for _ in range(4):
            sock.settimeout(max(0.0, end - time.monotonic()))
            if not sock.recv(65536):
                break


def _send(sock: socket.socket, client: str, request: Request | None, response: Response, close: bool) -> None:
    """The answer: head (none for HTTP/0.9) and body (none for HEAD), ``Connection: close`` if the server
    closes a connection the client may have wanted kept."""
    if log.isEnabledFor(logging.DEBUG):
        line = request.line if request else ""
        log.debug("http request", extra={"client": client, "request": f'"{line}" {response.status} -'})
    chunks = (response.body,) if isinstance(response.body, bytes) else response.body
    if request is not None and request.version == (0, 9):
        send_answer(sock, b"", chunks)
        return
    lines = [f"HTTP/1.1 {response.status} {PHRASES.get(response.status, '')}", f"Server: {SERVER}",
             f"Date: {_http_date(int(time.time()))}", f"Content-Type: {response.content_type}",
             f"Content-Length: {sum(map(len, chunks))}", *(f"{k}: {v}" for k, v in response.headers.items())]
    if close:
        lines.append("Connection: close")
    head = "\r\n".join((*lines, "", "")).encode("latin-1")
    send_answer(sock, head, () if request is not None and request.method == "HEAD" else chunks)


@functools.lru_cache(maxsize=2)
def _http_date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)

