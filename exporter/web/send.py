"""The one way an answer goes out: its head and body in batches, each batch within WRITE_TIMEOUT."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable, Iterator

from exporter.web import limits


def send_answer(sock: socket.socket, head: bytes, body: Iterable[bytes | memoryview] = ()) -> None:
    """The head, then the body's chunks; a head and a body that fit one batch go in one system call."""
    for batch in batches((head, *body)):
        send_buffers(sock, batch, time.monotonic() + limits.WRITE_TIMEOUT)


def batches(chunks: Iterable[bytes | memoryview]) -> Iterator[list[bytes | memoryview]]:
    """The chunks (a few hundred kept blocks) in batches of about WRITE_BATCH bytes and at most MAX_BUFFERS
    buffers; a chunk larger than a batch (one account's lines may be megabytes) goes out in slices of its own."""
    batch_bytes, max_buffers = limits.WRITE_BATCH, limits.MAX_BUFFERS
    batch: list[bytes | memoryview] = []
    size = 0
    for chunk in chunks:
        if len(chunk) > batch_bytes:
            if batch:
                yield batch
                batch, size = [], 0
            view = memoryview(chunk)
            for start in range(0, len(view), batch_bytes):
                yield [view[start:start + batch_bytes]]
            continue
        batch.append(chunk)
        size += len(chunk)
        if size >= batch_bytes or len(batch) >= max_buffers:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def send_buffers(sock: socket.socket, buffers: list[bytes | memoryview], deadline: float) -> None:
    """Send every buffer, in order, by ``deadline`` (monotonic), with as few system calls as the socket allows:
    ``sendmsg`` hands the kernel the buffers as they are, where joining them (or a ``sendall`` each) would copy
    every byte of a large answer in Python with the GIL held. A TLS socket has no ``sendmsg``: the buffers are
    joined."""
    if isinstance(sock, ssl.SSLSocket):
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        sock.sendall(b"".join(buffers))
        return
    first = 0
    while first < len(buffers):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client did not read the answer in time")
        sock.settimeout(remaining)
        sent = sock.sendmsg(buffers[first:])
        while first < len(buffers) and sent >= len(buffers[first]):
            sent -= len(buffers[first])
            first += 1
        if sent:
            buffers[first] = memoryview(buffers[first])[sent:]
