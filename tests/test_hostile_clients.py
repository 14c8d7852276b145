"""Hostile HTTP clients against the exporter's server: idle and trickling connections, huge heads and bodies,
clients that hang up. The server stays bounded in threads and descriptors and keeps answering a scraper."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from exporter.web import limits
from exporter.web.limits import MAX_HANDLER_THREADS
from exporter.web.listening import ListenAddress, WebServers
from exporter.web.routes import Response, RouteHandler
from exporter.web.send import batches, send_buffers
from exporter.webconfig import WebConfig
from tests.hostile import trickle, wait
from tests.support import REPO, free_port, terminate

pytestmark = pytest.mark.timeout(120)
BIG = b"x" * (4 << 20)


@functools.cache
def pieces() -> tuple[bytes | memoryview, ...]:
    """An answer made of many kept pieces, as /metrics is: thousands of chunks of every size, some of them views
    into larger buffers (13.7 MB, made once and only by the test that asks for it)."""
    return tuple(memoryview(f"{n:07d}".encode() * (n % 9000 + 1))[3:] if n % 7 == 0
                 else f"piece {n}\n".encode() * (n % 50 + 1) if n != 2500
                 else b"one account of many invoices\n" * 40000 for n in range(5000))


class App:
    def __init__(self) -> None:
        self.routes: Mapping[str, Mapping[str, RouteHandler]] = {
            "/metrics": {"GET": lambda _: Response(200, b"up 1\n")},
            "/big": {"GET": lambda _: Response(200, BIG)},
            "/pieces": {"GET": lambda _: Response(200, pieces())},
            "/-/reload": {"POST": lambda _: Response(200, b"reloaded\n")},
            "/bug": {"GET": lambda _: Response(200, str(1 / 0).encode())},
        }

    def web_config(self) -> WebConfig:
        return WebConfig()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, WebServers]]:
    monkeypatch.setattr(limits, "REQUEST_TIMEOUT", 1.0)
    monkeypatch.setattr(limits, "IDLE_TIMEOUT", 1.5)
    servers = WebServers(App(), [ListenAddress("127.0.0.1", 0, socket.AF_INET)])
    servers.start()
    try:
        yield f"http://{servers.bound[0]}", servers
    finally:
        servers.shutdown()


def raw_exchange(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_huge_request_head_gets_431(served: tuple[str, WebServers]) -> None:
    url, _ = served
    answer = raw_exchange(url, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    long_line = raw_exchange(url, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert long_line.startswith(b"HTTP/1.1 431")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    assert raw_exchange(url, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431")


def test_a_request_body_over_the_limit_gets_413(served: tuple[str, WebServers]) -> None:
    url, _ = served
    answer = raw_exchange(url, b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + b"a" * 1000)
    assert answer.startswith(b"HTTP/1.1 413") and b"65536" in answer


def test_slow_and_idle_clients_are_cut_at_their_deadline(served: tuple[str, WebServers]) -> None:
    url, _servers = served
    host, port = url.removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)))
    slow = socket.create_connection((host, int(port)))
    started = time.monotonic()
    slow.sendall(b"GET /metrics HTTP/1.1\r\n")
    for sock in (idle, slow):
        sock.settimeout(5)
    stop = threading.Event()

    def dribble() -> None:
        while not stop.wait(0.3):
            try:
                slow.sendall(b"X")
            except OSError:
                return

    threading.Thread(target=dribble, daemon=True).start()
    try:
        assert slow.recv(100) == b""  # closed by the server: 1 s after its first byte, though it never paused 1 s
        assert time.monotonic() - started < 3.0
        assert idle.recv(100) == b""  # closed after the idle timeout
    finally:
        stop.set()
        idle.close()
        slow.close()
    assert httpx.get(url + "/metrics").text == "up 1\n"


def test_keep_alive_requests_are_answered_and_a_stalled_next_request_holds_no_thread(
        served: tuple[str, WebServers], monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler thread that answered a keep-alive request also answers the next one if it comes at once
    (pipelined here); a next request that stalls half-way goes back to the accept loop and is cut 1 s after its
    first byte, like any slow client."""
    monkeypatch.setattr(limits, "IDLE_TIMEOUT", 5.0)
    monkeypatch.setattr(limits, "MAX_HANDLER_THREADS", 1)
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(request * 3 + b"GET /metrics HTTP/1.1\r\nHo")
        answers = b""
        while answers.count(b"up 1\n") < 3:
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
        assert answers.count(b"HTTP/1.1 200 OK") == 3
        # back in the accept loop, no thread held: the only handler thread answers another client before the
        # stalled request's deadline
        assert raw_exchange(url, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").endswith(b"up 1\n")
        assert time.monotonic() - started < 0.9
        assert sock.recv(100) == b""  # closed at the request deadline, not the 5 s idle one
        assert time.monotonic() - started < 3.0
    assert httpx.get(url + "/metrics").text == "up 1\n"


def test_an_answer_of_thousands_of_pieces_reaches_a_slow_reader_whole_and_in_order(
        served: tuple[str, WebServers]) -> None:
    """The pieces go out in batches; a reader slower than the socket buffer makes the kernel take part of a
    batch at a time, and the rest still arrives in order."""
    url, _ = served
    expected = b"".join(pieces())
    assert len(expected) > 8 << 20 and len(expected) > 10 * limits.WRITE_BATCH
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /pieces HTTP/1.0\r\n\r\n")
        time.sleep(0.3)  # the socket buffers fill up: the kernel takes only part of a call
        received = []
        while chunk := sock.recv(1 << 16):
            received.append(chunk)
            if len(received) % 50 == 0:
                time.sleep(0.01)
    head, _, body = b"".join(received).partition(b"\r\n\r\n")
    assert f"Content-Length: {len(expected)}".encode() in head
    assert body == expected


def test_an_answer_goes_out_in_batches_of_bounded_size_each_with_its_write_timeout() -> None:
    chunks = pieces()
    sent = list(batches(chunks))
    assert b"".join(bytes(piece) for batch in sent for piece in batch) == b"".join(chunks)
    assert max(sum(map(len, batch)) for batch in sent) < 2 * limits.WRITE_BATCH
    assert max(map(len, sent)) <= limits.MAX_BUFFERS
    assert len(sent) < len(chunks) / 10  # small chunks share a system call


def test_a_client_that_reads_the_answer_too_slowly_is_cut_at_the_write_timeout(
        served: tuple[str, WebServers], monkeypatch: pytest.MonkeyPatch) -> None:
    """A client trickling the answer in (100 bytes every 0.1 s) holds a handler thread for WRITE_TIMEOUT per
    batch at most, not for as long as it likes."""
    monkeypatch.setattr(limits, "WRITE_TIMEOUT", 1.0)
    monkeypatch.setattr(limits, "MAX_HANDLER_THREADS", 1)  # while it writes the answer, no other request is
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    stop = threading.Event()
    received = [0]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((host, int(port)))
        sock.sendall(b"GET /pieces HTTP/1.0\r\n\r\n")

        def trickle() -> None:
            with contextlib.suppress(OSError):
                while not stop.is_set() and (chunk := sock.recv(100)):
                    received[0] += len(chunk)
                    time.sleep(0.1)

        reader = threading.Thread(target=trickle, daemon=True)
        reader.start()
        try:
            assert wait(lambda: received[0] > 0, 5)  # the handler thread writes the answer
            asked = time.monotonic()
            other = raw_exchange(url, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", timeout=8)
            assert other.endswith(b"up 1\n") and time.monotonic() - asked > 0.5  # once the server gave up
            assert reader.is_alive()  # while the client was still reading
        finally:
            stop.set()
            reader.join(timeout=5)
        sock.settimeout(5)
        while chunk := sock.recv(1 << 16):  # what the kernel still held, then the end: the server closed it
            received[0] += len(chunk)
        assert received[0] < len(b"".join(pieces()))
    assert httpx.get(url + "/metrics").text == "up 1\n"


def test_a_batch_has_one_deadline_however_steadily_the_client_reads() -> None:
    """Progress does not extend it: a reader taking 4 kB every 20 ms gets 1 MB cut at the deadline."""
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    received: list[int] = []

    def read() -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(4096):
                received.append(len(chunk))
                time.sleep(0.02)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            send_buffers(server, [b"x" * (1 << 20)], started + 1.0)
        assert 1.0 <= time.monotonic() - started < 2.0
        assert 0 < sum(received) < 1 << 20
    finally:
        server.close()
        client.close()
        reader.join(timeout=5)


def test_a_client_that_hangs_up_is_logged_at_debug_without_a_traceback(
        served: tuple[str, WebServers], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    url, _ = served
    caplog.set_level(logging.DEBUG, "exporter.http")
    host, port = url.removeprefix("http://").split(":")
    for _ in range(3):  # hang up while a 4 MB answer is written
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(10)
    with socket.create_connection((host, int(port))) as sock:  # hang up mid-head
        sock.sendall(b"GET /metrics HTT")
    assert wait(lambda: any(r.getMessage() == "client connection ended early" for r in caplog.records), 5)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "exporter.http")
    assert "Traceback" not in capfd.readouterr().err
    assert httpx.get(url + "/metrics").text == "up 1\n"


def test_a_bug_in_one_route_answers_500_and_is_logged_as_a_bug(
        served: tuple[str, WebServers], caplog: pytest.LogCaptureFixture) -> None:
    """A route that raises gets 500 (the client is told, not reset); the server keeps answering."""
    url, _ = served
    caplog.set_level(logging.DEBUG, "exporter.http")
    answer = httpx.get(url + "/bug")
    assert answer.status_code == 500
    assert [r.levelno for r in caplog.records if r.getMessage() == "HTTP handler failed (a bug)"] == [logging.ERROR]
    assert httpx.get(url + "/metrics").text == "up 1\n"


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


@pytest.fixture
def demo_exporter() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The real exporter (--demo) with the usual 1,024 descriptor limit."""
    port = free_port()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    limit = 1024 if hard == resource.RLIM_INFINITY else min(1024, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "--demo", "--web.listen-address",
                             f"127.0.0.1:{port}"], cwd=REPO, env=env, preexec_fn=lower,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait(lambda: _get(port, "/-/ready") == 200, 20), "exporter not ready"
        yield proc, port
    finally:
        terminate(proc)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in stderr


def _get(port: int, path: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture
def descriptors() -> Iterator[None]:
    """This test process holds 1,100+ client sockets: raise its own soft limit if needed, bounded, restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2048
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.e2e
def test_metrics_answer_while_1100_idle_sockets_are_open(demo_exporter: Any, descriptors: None) -> None:
    proc, port = demo_exporter
    before = _threads(proc.pid)
    idle = []
    try:
        for _ in range(1100):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        assert len(idle) == 1100
        slowest = 0.0
        for _ in range(3):
            started = time.monotonic()
            answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert answer.status_code == 200 and "cloudflare_ai_gateway_poll_success" in answer.text
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 2.0
        threads = _threads(proc.pid)
        print(f"1,100 idle sockets: slowest /metrics {slowest * 1000:.0f} ms, threads {before} -> {threads}")
        assert threads <= before + MAX_HANDLER_THREADS
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.e2e
def test_300_trickling_clients_do_not_grow_threads_and_a_scraper_is_answered(demo_exporter: Any) -> None:
    proc, port = demo_exporter
    before = _threads(proc.pid)
    stop = threading.Event()
    clients = [threading.Thread(target=trickle, args=(("127.0.0.1", port), stop, 0.5), daemon=True)
               for _ in range(300)]
    try:
        for client in clients:
            client.start()
        time.sleep(2.0)
        peak = _threads(proc.pid)
        for _ in range(3):
            started = time.monotonic()
            assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
            assert time.monotonic() - started < 2.0
        peak = max(peak, _threads(proc.pid))
        print(f"300 trickling clients: threads {before} -> {peak}")
        assert peak <= before + MAX_HANDLER_THREADS
    finally:
        stop.set()
        for client in clients:
            client.join(5)


