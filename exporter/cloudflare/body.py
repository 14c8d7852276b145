"""An API answer's body, bounded and parsed at the edge: size (as received and decompressed), JSON nesting,
numbers that cannot be finite floats, text that cannot be encoded (docs/limits.md lists every limit)."""

from __future__ import annotations

import json
import math
import re
import zlib
from typing import Any

import httpx

MAX_RESPONSE_BYTES = 2 << 20  # 2 MiB, as received and once decompressed; a page of 1,000 invoices is ~350 kB
MAX_GRAPHQL_RESPONSE_BYTES = 4 << 20  # 10,000 groups of the counted alias (the API's maximum) are ~3.2 MB
MAX_JSON_DEPTH = 32  # nesting of objects and arrays (the billing answers need 5, GraphQL answers 8)
MAX_INT_DIGITS = 300  # a longer integer cannot be a float: it is refused like 1e400
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class Refused:
    """What a number that cannot be a finite float becomes when an answer is parsed (NaN, Infinity, 1e400,
    a 5,000-digit integer): not a number, so every collector's type check leaves its item out."""

    _instance: Refused | None = None

    def __new__(cls) -> Refused:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<refused non-finite number>"


REFUSED = Refused()


class BadBody(Exception):
    """An answer that cannot be used: too large, bad encoding, not JSON, nested too deeply."""


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_float(text: str) -> float | Refused:
    value = float(text)
    return value if math.isfinite(value) else REFUSED


def _parse_int(text: str) -> int | Refused:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else REFUSED


def _parse_constant(_: str) -> Refused:
    return REFUSED


def _repair(value: Any) -> Any:
    """Lone UTF-16 surrogates (a JSON ``"\\ud800"``) replaced by U+FFFD: such text cannot be encoded."""
    if isinstance(value, str):
        return _SURROGATE_RE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_repair(k): _repair(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repair(v) for v in value]
    return value


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadBody(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def parse_body(data: bytes | bytearray) -> Any:
    """An answer's bytes as JSON, refused or repaired at the edge: text that is not UTF-8 and lone surrogates
    become U+FFFD; non-finite numbers and huge integers become REFUSED; too deep nesting is refused."""
    text = data.decode("utf-8", errors="replace")
    try:
        value = json.loads(text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant)
    except RecursionError:
        raise BadBody(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as err:
        raise BadBody(f"not JSON ({str(err)[:100]})") from None
    if isinstance(value, dict | list):
        _check_depth(value)
    if _SURROGATE_ESCAPE_RE.search(text):
        value = _repair(value)
    return value


async def read_body(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes | bytearray:
    """The body, at most ``limit`` bytes as received and once decompressed; stops reading at the limit,
    and decompresses at most ``limit`` + 1 bytes (a gzip bomb never gets further)."""
    if response.is_stream_consumed:  # built in memory (httpx.MockTransport: tests, the demo): already decoded
        if len(response.content) > limit:
            raise BadBody(f"the answer is {len(response.content):,} bytes, more than the limit of {limit:,}")
        return response.content
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadBody(f"the answer is {int(declared):,} bytes, more than the limit of {limit:,}")
    if encoding in ("", "identity"):
        decompressor = None
    elif encoding in ("gzip", "x-gzip"):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decompressor = zlib.decompressobj()
    else:
        raise BadBody(f"unsupported content-encoding {encoding[:40]!r}")
    out = bytearray()
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > limit:
            raise BadBody(f"the answer is more than {limit:,} bytes, the limit")
        if decompressor is None:
            out += chunk
            continue
        data = chunk
        try:
            while data and not decompressor.eof:
                out += decompressor.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise BadBody(f"the answer decompresses to more than {limit:,} bytes, the limit")
                data = decompressor.unconsumed_tail
        except zlib.error as err:
            raise BadBody(f"the {encoding} body cannot be decompressed ({err})") from None
    return out  # not copied: one body in memory per request in flight
