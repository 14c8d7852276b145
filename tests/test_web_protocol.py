"""The exporter's HTTP server speaking HTTP: request lines and headers it parses or refuses, keep-alive under
HTTP/1.0 and 1.1, HEAD, methods, bodies, and the answer's head, over loopback sockets."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

import bcrypt
import pytest

from exporter.web import limits
from exporter.web.listening import ListenAddress, WebServers
from exporter.web.request_head import BadRequest, head_end, parse_head
from exporter.web.routes import Response, RouteHandler
from exporter.web.send import send_answer
from exporter.webconfig import BasicAuth, WebConfig

pytestmark = pytest.mark.timeout(60)
BODY = (b"first chunk\n", memoryview(b"-- second chunk\n")[3:], b"third\n")
WHOLE = b"".join(BODY)


class App:
    def __init__(self, auth: BasicAuth | None = None) -> None:
        self.auth = auth
        self.posted: list[str] = []
        self.routes: Mapping[str, Mapping[str, RouteHandler]] = {
            "/metrics": {"GET": lambda headers: Response(200, BODY, headers={"X-Seen": headers.get("X-Probe", "")})},
            "/-/reload": {"POST": lambda headers: self.post(headers.get("Content-Length", ""))},
        }

    def post(self, length: str) -> Response:
        self.posted.append(length)
        return Response(200, b"reloaded\n")

    def web_config(self) -> WebConfig:
        return WebConfig(basic_auth=self.auth)


@contextlib.contextmanager
def serve(app: App) -> Iterator[int]:
    servers = WebServers(app, [ListenAddress("127.0.0.1", 0, socket.AF_INET)])
    servers.start()
    try:
        yield int(servers.bound[0].rsplit(":", 1)[1])
    finally:
        servers.shutdown()


class Client:
    """One connection: what it sends, and the answers it reads off it one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""

    @classmethod
    def to(cls, port: int) -> Client:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=5))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, self.pending
        self.pending += chunk

    def answer(self, head_only: bool = False) -> tuple[str, dict[str, str], bytes]:
        """Status line, headers (lower-case names) and body (by its Content-Length; none if ``head_only``)."""
        while b"\r\n\r\n" not in self.pending:
            self._more()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = 0 if head_only else int(headers["content-length"])
        while len(self.pending) < length:
            self._more()
        body, self.pending = self.pending[:length], self.pending[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True if the server closed the connection (after the answers read so far)."""
        try:
            return not self.pending and self.sock.recv(100) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setattr(limits, "REQUEST_TIMEOUT", 1.0)
    return App()


@pytest.fixture
def port(app: App) -> Iterator[int]:
    with serve(app) as bound:
        yield bound


@pytest.fixture
def client(port: int) -> Iterator[Client]:
    connection = Client.to(port)
    with connection.sock:
        yield connection


# --- parsing a head ---

@pytest.mark.parametrize(("head", "status"), [
    (b"GARBAGE\r\n\r\n", 400), (b"\r\n\r\n", 400), (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET / HTTX/1.1\r\n\r\n", 400), (b"GET / HTTP/1\r\n\r\n", 400), (b"GET / HTTP/a.b\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505), (b"POST /-/reload\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400), (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n: empty name\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (limits.MAX_HEADER_LINES + 1) + b"\r\n", 431),
])
def test_a_malformed_head_is_refused_with_its_status(head: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(head)
    assert refused.value.status == status


def test_a_head_is_parsed_into_method_path_version_and_headers() -> None:
    request = parse_head(b"GET //metrics?x=1 HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n  two\r\nAccept:gzip \r\n\r\n")
    assert (request.method, request.path, request.version) == ("GET", "/metrics", (1, 1))
    assert request.headers.items() == [("Host", "a"), ("X-Long", "one two"), ("Accept", "gzip")]
    assert request.line == "GET //metrics?x=1 HTTP/1.1"
    assert parse_head(b"GET / HTTP/1.1\n\n").version == (1, 1)  # bare LF line ends
    assert parse_head(b"GET /metrics\r\n\r\n").version == (0, 9)


@pytest.mark.parametrize(("version", "connection", "keep"), [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Close", False),
    ("HTTP/1.0", None, False), ("HTTP/1.0", "keep-alive", True), ("HTTP/1.0", "Keep-Alive", True),
    ("HTTP/1.1", "keep-alive", True), ("HTTP/1.0", "upgrade", False),
])
def test_keep_alive_follows_the_version_and_the_connection_header(version: str, connection: str | None,
                                                                   keep: bool) -> None:
    header = f"Connection: {connection}\r\n" if connection else ""
    assert parse_head(f"GET / {version}\r\n{header}\r\n".encode()).keep_alive is keep


def test_a_head_ends_at_its_first_blank_line() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET") == len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head_end(b"GET / HTTP/1.1\nHost: x\n\nrest") == len(b"GET / HTTP/1.1\nHost: x\n\n")
    assert head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") == -1


# --- over a connection ---

def test_a_malformed_request_line_gets_400_and_the_connection_is_closed(client: Client) -> None:
    client.send(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
    status, headers, body = client.answer()
    assert status == "HTTP/1.1 400 Bad Request" and headers["connection"] == "close"
    assert b"Bad request syntax" in body
    assert client.closed()


def test_an_http_version_from_2_on_gets_505(client: Client) -> None:
    client.send(b"GET /metrics HTTP/2.0\r\n\r\n")
    assert client.answer()[0] == "HTTP/1.1 505 HTTP Version Not Supported"
    assert client.closed()


def test_a_head_of_exactly_the_limit_is_answered_and_one_byte_more_gets_431(port: int) -> None:
    start, end = b"GET /metrics HTTP/1.1\r\nX-Pad: ", b"\r\n\r\n"
    for extra, expected in ((0, "HTTP/1.1 200 OK"), (1, "HTTP/1.1 431 Request Header Fields Too Large")):
        client = Client.to(port)
        with client.sock:
            client.send(start + b"a" * (limits.MAX_HEAD_BYTES - len(start) - len(end) + extra) + end)
            assert client.answer()[0] == expected


def test_http_1_0_closes_after_the_answer_unless_it_asks_for_keep_alive(client: Client, port: int) -> None:
    client.send(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert client.answer()[2] == WHOLE
    assert client.closed()
    kept = Client.to(port)
    with kept.sock:
        for _ in range(2):
            kept.send(b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert kept.answer()[2] == WHOLE


def test_http_1_1_keeps_the_connection_unless_it_asks_to_close(client: Client) -> None:
    for probe in ("1", "2"):
        client.send(f"GET /metrics HTTP/1.1\r\nX-Probe: {probe}\r\n\r\n".encode())
        assert client.answer()[1]["x-seen"] == probe
    client.send(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert client.answer()[2] == WHOLE
    assert client.closed()


def test_an_answer_has_server_date_type_and_length_headers(client: Client) -> None:
    client.send(b"GET /metrics HTTP/1.1\r\n\r\n")
    status, headers, body = client.answer()
    assert status == "HTTP/1.1 200 OK" and body == WHOLE
    assert headers["server"].startswith("cloudflare-ai-gateway-exporter/")
    assert abs(email.utils.parsedate_to_datetime(headers["date"]).timestamp() - time.time()) < 5
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(WHOLE))


def test_head_has_the_length_of_the_get_answer_and_no_body(client: Client) -> None:
    """The next answer on the same connection starts right after the head: no body was sent."""
    client.send(b"HEAD /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
    status, headers, _ = client.answer(head_only=True)
    assert status == "HTTP/1.1 200 OK" and headers["content-length"] == str(len(WHOLE))
    assert client.answer()[2] == WHOLE
    for path, expected in ((b"/nope", "HTTP/1.1 404 Not Found"), (b"/-/reload", "HTTP/1.1 405 Method Not Allowed")):
        client.send(b"HEAD " + path + b" HTTP/1.1\r\n\r\n")
        status, headers, _ = client.answer(head_only=True)
        assert status == expected and int(headers["content-length"]) > 0
    assert headers["allow"] == "POST"
    client.send(b"GET /metrics HTTP/1.1\r\n\r\n")
    assert client.answer()[2] == WHOLE


def test_an_unauthorized_head_gets_401_without_a_body(app: App) -> None:
    app.auth = BasicAuth({"alice": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))})
    good = base64.b64encode(b"alice:pw")
    with serve(app) as port:
        client = Client.to(port)
        with client.sock:
            client.send(b"HEAD /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\nAuthorization: Basic " + good
                        + b"\r\n\r\n")
            status, headers, _ = client.answer(head_only=True)
            assert status == "HTTP/1.1 401 Unauthorized" and headers["www-authenticate"].startswith("Basic ")
            assert client.answer()[2] == WHOLE


def test_other_methods_get_501_and_the_connection_is_closed(client: Client) -> None:
    client.send(b"PUT /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    status, headers, _ = client.answer()
    assert status == "HTTP/1.1 501 Not Implemented" and headers["connection"] == "close"
    assert client.closed()


def test_a_body_is_read_away_and_never_taken_for_the_next_request(client: Client, app: App) -> None:
    client.send(b"POST /-/reload HTTP/1.1\r\nContent-Length: 26\r\n\r\nGET /nope HTTP/1.1\r\n\r\n...."
                b"GET /metrics HTTP/1.1\r\n\r\n")
    assert client.answer()[2] == b"reloaded\n"
    assert client.answer()[2] == WHOLE
    assert app.posted == ["26"]


def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(client: Client) -> None:
    client.send(b"POST /-/reload HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert client.answer(head_only=True)[0] == "HTTP/1.1 100 Continue"
    client.send(b"hello")
    assert client.answer()[2] == b"reloaded\n"


def test_a_chunked_body_gets_413_and_the_connection_is_closed(client: Client) -> None:
    client.send(b"POST /-/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    status, headers, body = client.answer()
    assert status.startswith("HTTP/1.1 413 ") and headers["connection"] == "close"
    assert str(limits.MAX_BODY).encode() in body
    assert client.closed()


def test_a_body_trickling_in_is_cut_at_the_request_deadline(client: Client, app: App) -> None:
    """REQUEST_TIMEOUT (1 s here) covers the body too: a byte every 0.2 s never completes it."""
    started = time.monotonic()
    client.send(b"POST /-/reload HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
    with pytest.raises(OSError):  # the server closed the connection: a write fails soon after
        for _ in range(50):
            client.send(b"x")
            time.sleep(0.2)
    assert time.monotonic() - started < 3.0
    assert app.posted == []


def test_http_0_9_gets_the_body_alone(client: Client) -> None:
    client.send(b"GET /metrics\r\n\r\n")
    answer = b""
    while chunk := client.sock.recv(65536):
        answer += chunk
    assert answer == WHOLE


def test_a_head_and_a_small_body_go_out_in_one_system_call() -> None:
    calls: list[int] = []

    class Counting(socket.socket):
        def sendmsg(self, *args: Any) -> int:
            calls.append(len(args[0]))
            return super().sendmsg(*args)

    ours, theirs = socket.socketpair()
    with Counting(fileno=ours.detach()) as counting, theirs:
        send_answer(counting, f"HTTP/1.1 200 OK\r\nContent-Length: {len(WHOLE)}\r\n\r\n".encode(), BODY)
        theirs.settimeout(5)
        assert Client(theirs).answer()[2] == WHOLE
    assert calls == [1 + len(BODY)]
