"""Exposition bytes for a scrape, assembled from pieces rendered once per poll.

Each (account, endpoint) ``EndpointState`` is rendered when it first appears, one piece of lines per metric
family, and kept while the store holds that same object (states are immutable and replaced whole by a
poll). A scrape writes each family's
``# HELP``/``# TYPE`` and then the kept pieces in account order; the counters and the exporter's own small
families are rendered per scrape from their own small pieces. So a poll of one account costs that account's
rendering, and a counted API request never throws billing lines away.

The gzip answer is a sequence of gzip members (RFC 1952 section 2.2), which every gzip reader, Go's
(Prometheus) included, reads as one stream: one member per block of consecutive chunks of about
``BLOCK_BYTES`` of plain text, compressed at the first gzip scrape after one of its pieces changed. Blocks
compress almost as well as the whole exposition in one stream (a piece alone, often one line, would not),
and a poll of one account recompresses only the blocks its pieces are in (a block holds about 8 kB and may
span two families). Gauge lines are the same bytes in the text format 0.0.4 and in
OpenMetrics; only the headers of counters and the trailing ``# EOF`` differ, and those come from
prometheus_client itself.
"""

from __future__ import annotations

import platform
import struct
import threading
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.collectors import build_collectors, settings_for
from exporter.collectors.base import ACC, NS, EndpointCollector, Family, Sink
from exporter.config import Config
from exporter.snapshot import Counts, EndpointState, Snapshot, SnapshotStore

# The classic text format, which every Prometheus version parses; newer client libraries label it 1.0.0.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GZIP_LEVEL = 6
BLOCK_BYTES = 8 * 1024  # plain text per gzip member: within 1.1-1.2x of one stream, a poll recompresses ~100 kB
EP = (*ACC, "endpoint")

POLL_SUCCESS = Family(f"{NS}_poll_success", "1 if the last poll of the account's endpoint succeeded, else 0.", EP)
POLL_LAST_SUCCESS = Family(f"{NS}_poll_last_success_timestamp_seconds",
                           "When the account's endpoint was last polled successfully, Unix time.", EP)
POLL_DURATION = Family(f"{NS}_poll_duration_seconds", "Duration of the last poll of the account's endpoint, "
                       "all pages.", EP)
ENROLLED = Family(f"{NS}_endpoint_enrolled", "1 if the account uses the endpoint's feature, 0 if the API says "
                  "it does not.", EP)
POLL_FAMILIES = (POLL_SUCCESS, POLL_LAST_SUCCESS, POLL_DURATION, ENROLLED)
REQUESTS = Family(f"{NS}_api_requests", "Requests made to the Cloudflare API, by HTTP status (error when no "
                  "response came).", ("account_id", "code"), "counter")
ERRORS = Family(f"{NS}_api_errors", "Failed Cloudflare API requests or pages, retried or not, by reason.",
                ("account_id", "reason"), "counter")
INVALID = Family(f"{NS}_api_invalid_invoices", "Malformed invoices skipped (the rest of the page was kept).",
                 ("account_id",), "counter")
COUNTER_FAMILIES = (REQUESTS, ERRORS, INVALID)
BUILD_INFO = Family(f"{NS}_exporter_build_info", "Exporter build information; always 1.",
                    ("version", "python_version"))
RELOAD_OK = Family(f"{NS}_exporter_config_last_reload_successful",
                   "1 if the last config load or reload succeeded, else 0.", ())
RELOAD_TIME = Family(f"{NS}_exporter_config_last_reload_success_timestamp_seconds",
                     "When the config was last loaded successfully, Unix time.", ())
SHARD_INFO = Family(f"{NS}_exporter_shard_info", "Which shard of how many this exporter is; always 1.",
                    ("shard", "total_shards"))
API_PAUSES = Family(f"{NS}_api_pauses", "Pauses of every API request the API asked for (Retry-After, or "
                    "Ratelimit with r=0), by header; each is at most 5 minutes.", ("header",), "counter")
EXPORTER_FAMILIES = (BUILD_INFO, RELOAD_OK, RELOAD_TIME, SHARD_INFO, API_PAUSES)


@dataclass(frozen=True)
class ExporterStatus:
    """The exporter's own state that metrics report; replaced whole on every reload (``generation`` + 1)."""

    config: Config
    generation: int = 0
    reload_successful: bool = True
    reload_timestamp: float = 0.0


# --- the samples (shared with the byte-for-byte test, which feeds them to prometheus_client) ---

def endpoint_samples(collector: EndpointCollector, acc: tuple[str, str], state: EndpointState, settings: Any,
                     out: Sink) -> None:
    """Every sample one (account, endpoint) state gives: the collector's, then the poll health gauges."""
    if state.data is not None:
        collector.render(acc, state.data, settings, out)
    labels = (*acc, collector.endpoint)
    if state.polled:
        out.add(POLL_SUCCESS, labels, 1.0 if state.success else 0.0)
    if state.last_success_time is not None:
        out.add(POLL_LAST_SUCCESS, labels, state.last_success_time)
    if state.polled and state.duration is not None:
        out.add(POLL_DURATION, labels, state.duration)
    if state.last_success_time is not None:
        out.add(ENROLLED, labels, 1.0 if state.enrolled else 0.0)


def count_samples(account_id: str, counts: Counts, out: Sink) -> None:
    for code, n in counts.requests.items():
        out.add(REQUESTS, (account_id, code), n)
    for reason, n in counts.errors.items():
        out.add(ERRORS, (account_id, reason), n)
    if counts.invalid:
        out.add(INVALID, (account_id,), counts.invalid)


def exporter_samples(status: ExporterStatus, out: Sink, pauses: Mapping[str, int] | None = None) -> None:
    out.add(BUILD_INFO, (__version__, platform.python_version()), 1.0)
    for header_name, count in sorted((pauses or {}).items()):
        out.add(API_PAUSES, (header_name,), count)
    out.add(RELOAD_OK, (), 1.0 if status.reload_successful else 0.0)
    out.add(RELOAD_TIME, (), status.reload_timestamp)
    sharding = status.config.sharding
    out.add(SHARD_INFO, (str(sharding.shard), str(sharding.total_shards)), 1.0)


# --- formatting ---

_go_float: Callable[[float], str] = floatToGoString
_openmetrics: Callable[[Collector], bytes] = generate_openmetrics


@lru_cache(maxsize=1024)
def _template(family: Family) -> str:
    """``name{a="{0}",b="{1}"} {2}\\n`` with the labels sorted by name, as prometheus_client writes them."""
    labels = family.labels
    pairs = ",".join(f'{labels[i]}="{{{i}}}"' for i in sorted(range(len(labels)), key=labels.__getitem__))
    name = family.name + ("_total" if family.type == "counter" else "")
    return name + ("{{" + pairs + "}}" if labels else "") + " {" + str(len(labels)) + "}\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


class Lines:
    """A Sink that formats each sample into its family's exposition lines."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: dict[Family, list[str]] = {}

    def add(self, family: Family, labels: Sequence[str], value: float) -> None:
        joined = "".join(labels)
        if "\\" in joined or "\n" in joined or '"' in joined:
            labels = [_escape(v) for v in labels]
        line = _template(family).format(*labels, _go_float(value))
        found = self.lines.get(family)
        if found is None:
            self.lines[family] = [line]
        else:
            found.append(line)

    def encoded(self) -> dict[Family, bytes]:
        return {family: "".join(lines).encode() for family, lines in self.lines.items()}


class _Static(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


@lru_cache(maxsize=1024)
def header(family: Family, openmetrics: bool) -> bytes:
    """``# HELP`` and ``# TYPE`` of a family, written by prometheus_client itself."""
    make = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
    metric = make(family.name, family.doc, labels=list(family.labels))
    if openmetrics:
        return _openmetrics(_Static([metric])).removesuffix(b"# EOF\n")
    return generate_latest(_Static([metric]))


GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, OS unknown (RFC 1952)
EMPTY_FINAL_BLOCK = b"\x03\x00"  # a final fixed-Huffman deflate block holding only end-of-block


def gzip_member(data: bytes) -> bytes:
    """A complete gzip member whose deflate data ends with a sync flush before an empty final block, so
    ``member[10:-10]`` is a byte-aligned, self-contained deflate segment that can also be spliced into
    one single-member stream (see ``_single_member``)."""
    # A window no larger than the data: small inputs (headers, the per-scrape families) need no 32 kB window.
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -max(9, min(15, len(data).bit_length())))
    segment = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return GZIP_HEADER + segment + EMPTY_FINAL_BLOCK + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def _single_member(parts: Sequence[_Part], rest: bytes) -> tuple[bytes | memoryview, ...]:
    """The blocks' deflate segments as one gzip member: for clients that read only the first member
    (curl, httpx). Costs a CRC-32 over the plain bytes, no compression; each kept part keeps the CRC of its
    bytes (continued from the parts before it) until one of its pieces changes."""
    crc = size = 0
    segments: list[bytes | memoryview] = [GZIP_HEADER]
    for part in parts:
        crc, size = part.checksum(crc, size)
        segments += [memoryview(member)[10:-10] for member in part.gz()]
    crc, size = zlib.crc32(rest, crc), size + len(rest)
    segments.append(memoryview(gzip_member(rest))[10:-10])
    segments.append(EMPTY_FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF))
    return tuple(segments)


class _Piece:
    """One source's rendered lines per family."""

    __slots__ = ("key", "lines")

    def __init__(self, key: Any, lines: dict[Family, bytes]) -> None:
        self.key = key
        self.lines = lines


@dataclass(frozen=True)
class Rendered:
    """One scrape's answer: chunks written one after another (for gzip, each a gzip member)."""

    chunks: tuple[bytes | memoryview, ...]
    content_type: str
    content_encoding: str | None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def length(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


class Renderer:
    """Renders each (account, endpoint) state once, and assembles scrapes from the kept pieces."""

    def __init__(self, store: SnapshotStore, status: Callable[[], ExporterStatus],
                 process_metrics: bool = False, pauses: Callable[[], Mapping[str, int]] | None = None) -> None:
        self._store = store
        self._status = status
        self._pauses = pauses
        self._runtime: CollectorRegistry | None = None
        if process_metrics:
            self._runtime = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._runtime)
            PlatformCollector(registry=self._runtime)
            GCCollector(registry=self._runtime)
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._collectors: dict[str, EndpointCollector] = {}
        self._settings: dict[str, Any] = {}
        self._families: tuple[Family, ...] = ()
        self._pieces: dict[tuple[str, str], _Piece] = {}
        self._counts: dict[str, _Piece] = {}
        self._snapshot: Snapshot | None = None  # the snapshot the pieces are of
        self._accounts: Mapping[str, Any] = {}  # account_id -> the AccountState its pieces were checked against
        # the billing part of an answer, as plain chunks (and gzip blocks), kept until its layout changes:
        # (openmetrics, gzip) -> part
        self._parts: dict[tuple[bool, bool], _Part] = {}
        self._count_parts: dict[tuple[bool, bool], _Part] = {}  # the same for the API counters

    def render(self, accept: str | None = None, accept_encoding: str | None = None,
               user_agent: str | None = None) -> Rendered:
        """The answer to a scrape. With gzip, Prometheus (whose Go reader reads every member of a gzip
        stream) gets the kept members as they are; other clients, some of which stop after the first
        member, get the same compressed segments spliced into one member."""
        openmetrics = wants_openmetrics(accept)
        use_gzip = wants_gzip(accept_encoding)
        snapshot, status = self._store.snapshot(), self._status()
        with self._lock:
            self._refresh(snapshot, status)
            chunks = self._assemble(status, openmetrics, use_gzip, single_member=not reads_gzip_members(user_agent))
        return Rendered(chunks, OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE,
                        "gzip" if use_gzip else None)

    def _refresh(self, snapshot: Snapshot, status: ExporterStatus) -> None:
        """The pieces of this snapshot, in account order; only states not seen before are rendered, and
        the kept answers get the new pieces in place."""
        if status.generation != self._generation:  # a reload: divisor, series, families may all differ
            self._generation = status.generation
            collectors = build_collectors(status.config)
            self._collectors = {c.endpoint: c for c in collectors}
            self._settings = {c.endpoint: settings_for(status.config, c.endpoint) for c in collectors}
            self._families = (*(f for c in collectors for f in c.families), *POLL_FAMILIES)
            self._pieces, self._counts, self._parts, self._count_parts = {}, {}, {}, {}
            self._accounts, self._snapshot = {}, None
        if snapshot is self._snapshot:
            return
        self._snapshot = snapshot
        old, seen, accounts = self._pieces, self._accounts, snapshot.accounts
        # The same accounts with the same endpoints as at the last scrape: only the accounts polled since are
        # looked at (an AccountState is replaced whole by a poll), not all of them.
        same = list(accounts) == list(seen)
        todo = [a for k, a in accounts.items() if seen[k] is not a] if same else list(accounts.values())
        if same and any(a.endpoints.keys() != seen[a.account_id].endpoints.keys() for a in todo):
            same, todo = False, list(accounts.values())
        pieces = dict(old) if same else {}
        replaced: list[tuple[tuple[str, str], _Piece]] = []
        structural = False
        for account in todo:
            acc = (account.account_id, account.name)
            for endpoint, state in account.endpoints.items():
                collector = self._collectors.get(endpoint)
                if collector is None:
                    continue
                key = (account.account_id, endpoint)
                piece = old.get(key)
                if piece is None or piece.key[0] is not state or piece.key[1] != acc:
                    sink = Lines()
                    endpoint_samples(collector, acc, state, self._settings[endpoint], sink)
                    new = _Piece((state, acc), sink.encoded())
                    structural = structural or piece is None or new.lines.keys() != piece.lines.keys()
                    replaced.append((key, new))
                    piece = new
                pieces[key] = piece
        self._accounts = accounts
        if structural or len(pieces) != len(old) or (not same and list(pieces) != list(old)):
            self._parts = {}
        else:  # the same families in the same places: each kept answer gets the new chunks in place
            for part in self._parts.values():
                part.replace(replaced)
        self._pieces = pieces
        old_counts, counts = self._counts, {}
        replaced_counts: list[tuple[str, _Piece]] = []
        structural = False
        for account_id in sorted(snapshot.counts):
            value = snapshot.counts[account_id]
            piece = old_counts.get(account_id)
            if piece is None or piece.key is not value:
                sink = Lines()
                count_samples(account_id, value, sink)
                new = _Piece(value, sink.encoded())
                structural = structural or piece is None or new.lines.keys() != piece.lines.keys()
                replaced_counts.append((account_id, new))
                piece = new
            counts[account_id] = piece
        if structural or len(counts) != len(old_counts):
            self._count_parts = {}
        else:
            for part in self._count_parts.values():
                part.replace(replaced_counts)
        self._counts = counts

    def _assemble(self, status: ExporterStatus, openmetrics: bool,
                  use_gzip: bool, single_member: bool) -> tuple[bytes | memoryview, ...]:
        """Headers and kept pieces in family order, then the small per-scrape families."""
        key = (openmetrics, use_gzip)
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Part(self._families, self._pieces, openmetrics, use_gzip)
        counters = self._count_parts.get(key)
        if counters is None:
            counters = self._count_parts[key] = _Part(COUNTER_FAMILIES, self._counts, openmetrics, use_gzip)
        tail = Lines()
        exporter_samples(status, tail, dict(self._pauses()) if self._pauses is not None else None)
        lines = tail.encoded()
        small = [header(f, openmetrics) + lines.get(f, b"") for f in EXPORTER_FAMILIES]
        if self._runtime is not None:
            small.append((_openmetrics if openmetrics else generate_latest)(self._runtime).removesuffix(b"# EOF\n"))
        if openmetrics:
            small.append(b"# EOF\n")
        rest = b"".join(small)
        if use_gzip and single_member:
            return _single_member((part, counters), rest)
        if not use_gzip:
            return (*part.plain, *counters.plain, rest)
        return (*part.gz(), *counters.gz(), gzip_member(rest))


class _Part:
    """Family headers and pieces in exposition order as plain chunks, with where each piece's chunks are, so
    a poll that leaves an account's families in place swaps its chunks in O(1). The indexes are kept as
    machine ints (an ``array``), not as Python tuples of ints: 17,000 pieces cost 0.1 MB, not 2 MB.

    With gzip, the chunks are cut into blocks of consecutive chunks of about ``BLOCK_BYTES`` each (a block
    may span families); each block's gzip member is made at the first gzip scrape after one of its chunks
    changed. Both gzip answers use them: as they are (many members) or their deflate segments spliced."""

    def __init__(self, families: Sequence[Family], pieces: Mapping[Any, _Piece], openmetrics: bool,
                 use_gzip: bool) -> None:
        self.families = families
        self.plain: list[bytes] = []
        self.where: dict[Any, array[int]] = {}  # key -> index of each of its families' chunks, family order
        self._checksum: tuple[int, int, int, int] | None = None  # (crc in, size in, crc out, size out)
        plain = self.plain
        for family in families:
            plain.append(header(family, openmetrics))
            for key, piece in pieces.items():
                data = piece.lines.get(family)
                if data:
                    at = self.where.get(key)
                    if at is None:
                        at = self.where[key] = array("l")
                    at.append(len(plain))
                    plain.append(data)
        self.starts = array("l")  # index of each block's first chunk
        self.members: list[bytes | None] = []  # each block's gzip member, None until made (or after a change)
        if use_gzip:
            size = BLOCK_BYTES
            for index, data in enumerate(plain):
                if size >= BLOCK_BYTES:
                    self.starts.append(index)
                    size = 0
                size += len(data)
            self.members = [None] * len(self.starts)

    def gz(self) -> list[bytes]:
        """The blocks' gzip members; the blocks changed since the last call are compressed again."""
        members, starts, plain = self.members, self.starts, self.plain
        for block, member in enumerate(members):
            if member is None:
                end = starts[block + 1] if block + 1 < len(starts) else len(plain)
                members[block] = gzip_member(b"".join(plain[starts[block]:end]))
        return members  # type: ignore[return-value]  # none is None now

    def checksum(self, crc: int, size: int) -> tuple[int, int]:
        """The CRC-32 and length of this part's plain bytes, continued from ``crc`` and ``size``."""
        kept = self._checksum
        if kept is None or kept[:2] != (crc, size):
            out_crc, out_size = crc, size
            for data in self.plain:
                out_crc = zlib.crc32(data, out_crc)
                out_size += len(data)
            kept = self._checksum = (crc, size, out_crc, out_size)
        return kept[2], kept[3]

    def replace(self, replaced: list[tuple[Any, _Piece]]) -> None:
        """Put each new piece where the piece of the same key was (it has the same families)."""
        if replaced:
            self._checksum = None
        for key, piece in replaced:
            at = self.where.get(key)
            if at is None:
                continue
            lines = piece.lines
            families = [f for f in self.families if lines.get(f)]
            for family, index in zip(families, at, strict=True):
                self.plain[index] = lines[family]
                if self.members:
                    self.members[bisect_right(self.starts, index) - 1] = None


MULTI_MEMBER_CLIENTS = ("Prometheus/",)  # Go's gzip reader reads concatenated members (multistream)


def reads_gzip_members(user_agent: str | None) -> bool:
    return (user_agent or "").startswith(MULTI_MEMBER_CLIENTS)


def wants_openmetrics(accept: str | None) -> bool:
    for part in (accept or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0] == "application/openmetrics-text":
            version = next((f.split("=", 1)[1] for f in fields[1:] if f.startswith("version=")), "1.0.0")
            if version in ("1.0.0", "0.0.1"):
                return True
    return False


def wants_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0].lower() == "gzip":
            return not any(f.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for f in fields[1:])
    return False
