"""Exposition bytes for a scrape, from lines rendered once per poll and kept as blocks.

Each (account, endpoint) ``EndpointState`` is rendered when it first appears and its lines are spliced into
the kept blocks of each family (``exporter/blocks.py``) while the store holds that same object (states are
immutable and replaced whole by a poll). A scrape writes each family's ``# HELP``/``# TYPE`` and then its
kept blocks; the API counters are kept the same way, and the exporter's own small families are rendered per
scrape. So a poll of one account costs that account's rendering, and a counted API request never throws
billing lines away. A new layout (accounts or endpoints added, removed or renamed, a reload) renders all.

The gzip answer is a sequence of gzip members (RFC 1952 section 2.2), which every gzip reader, Go's
(Prometheus) included, reads as one stream: one member per block, whose changed parts are compressed again at
the first gzip scrape after a poll. Parts of about 8 kB compress almost as well as the whole exposition in one
stream (one account's lines alone, often one line, would not). Other clients, some of which read only the first
member, get the same deflate segments spliced into one member. Gauge lines are the same bytes in the text format
0.0.4 and in OpenMetrics; only the headers of counters and the trailing ``# EOF`` differ, and those come from
prometheus_client itself.
"""

from __future__ import annotations

import platform
import struct
import threading
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector as ClientCollector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.blocks import EMPTY_FINAL_BLOCK, GZIP_HEADER, Blocks, gzip_member, release_free_memory
from exporter.collectors.base import ACC, NS, Collector, Family, Sink
from exporter.snapshot import AccountState, Counts, EndpointState, ExporterStatus, Snapshot, SnapshotStore

# The classic text format, which every Prometheus version parses; newer client libraries label it 1.0.0.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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
API_PAUSES = Family(f"{NS}_api_pauses", "Pauses the API asked for, by header: of every request (retry-after, or "
                    "ratelimit with r=0), or of GraphQL queries (graphql); each is at most 5 minutes.", ("header",),
                    "counter")
EXPORTER_FAMILIES = (BUILD_INFO, RELOAD_OK, RELOAD_TIME, SHARD_INFO, API_PAUSES)


# --- the samples (shared with the byte-for-byte test, which feeds them to prometheus_client) ---

def endpoint_samples(collector: Collector[Any, Any], acc: tuple[str, str], state: EndpointState, out: Sink) -> None:
    """Every sample one (account, endpoint) state gives: the collector's, then the poll health gauges."""
    if state.data is not None:
        collector.render(acc, state.data, out)
    labels = (*acc, collector.name)
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
    sharding = status.setup.config.sharding
    out.add(SHARD_INFO, (str(sharding.shard), str(sharding.total_shards)), 1.0)


# --- formatting ---

_go_float: Callable[[float], str] = floatToGoString
_openmetrics: Callable[[ClientCollector], bytes] = generate_openmetrics


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


class _Static(ClientCollector):
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


@lru_cache(maxsize=1024)
def header_member(family: Family, openmetrics: bool) -> bytes:
    return gzip_member(header(family, openmetrics))


@lru_cache(maxsize=1024)
def header_segment(family: Family, openmetrics: bool) -> memoryview:
    return memoryview(header_member(family, openmetrics))[10:-10]


class _Section:
    """Families whose lines come from sources, kept as ``Blocks``: the billing families (a source is one
    (account, endpoint) state) or the API counters (a source is one account's ``Counts``). Each family's slots
    are the sources of its group: one endpoint's, or all of them (group None)."""

    def __init__(self, families: Sequence[Family], groups: Sequence[str | None],
                 lines_of: Callable[[Any, Any], Mapping[Family, bytes]]) -> None:
        self.families = tuple(families)
        self._lines_of = lines_of
        self._by_group: dict[str | None, list[int]] = {}
        for index, group in enumerate(groups):
            self._by_group.setdefault(group, []).append(index)
        self.layout: list[Any] | None = None  # the sources' keys in exposition order; None: never built
        self._known: dict[Any, tuple[Any, int, int]] = {}  # key -> (source rendered, rank in group, rank in all)
        self.blocks = Blocks([bytearray() for _ in self.families], [array("l") for _ in self.families])
        self._checksums: dict[bool, tuple[int, int, int, int, int]] = {}  # openmetrics -> version, in, out

    def rebuild(self, sources: Sequence[tuple[Any, str | None, Any]]) -> None:
        """Render every source, (key, group, source), in exposition order."""
        spools = [bytearray() for _ in self.families]
        lengths = [array("l") for _ in self.families]
        ranks: Counter[str | None] = Counter()
        known: dict[Any, tuple[Any, int, int]] = {}
        for key, group, source in sources:
            lines = self._lines_of(key, source)
            known[key] = (source, ranks[group], ranks[None])
            for group_ in {group, None}:
                ranks[group_] += 1
                for index in self._by_group.get(group_, ()):
                    data = lines.get(self.families[index], b"")
                    spools[index] += data
                    lengths[index].append(len(data))
        self.layout, self._known = [key for key, _, _ in sources], known
        self.blocks = Blocks(spools, lengths)
        self._checksums = {}
        release_free_memory()

    def update(self, sources: Iterable[tuple[Any, str | None, Any]]) -> None:
        """Render the sources (of the same layout) whose source object changed, and splice in their lines."""
        for key, group, source in sources:
            rendered, in_group, in_all = self._known[key]
            if rendered is source:
                continue
            lines = self._lines_of(key, source)
            for group_, rank in {(group, in_group), (None, in_all)}:
                for index in self._by_group.get(group_, ()):
                    self.blocks.splice(index, rank, lines.get(self.families[index], b""))
            self._known[key] = (source, in_group, in_all)

    def plain(self, openmetrics: bool, out: list[bytes | memoryview]) -> None:
        for index, family in enumerate(self.families):
            out.append(header(family, openmetrics))
            out += self.blocks.blocks[index]

    def members(self, openmetrics: bool, out: list[bytes | memoryview]) -> None:
        for index, family in enumerate(self.families):
            out.append(header_member(family, openmetrics))
            out += self.blocks.members(index)

    def segments(self, openmetrics: bool, out: list[bytes | memoryview]) -> None:
        for index, family in enumerate(self.families):
            out.append(header_segment(family, openmetrics))
            out += self.blocks.segments(index)

    def checksum(self, openmetrics: bool, crc: int, size: int) -> tuple[int, int]:
        """The CRC-32 and length of this section's plain bytes, continued from ``crc`` and ``size``; kept until
        the blocks change."""
        kept = self._checksums.get(openmetrics)
        if kept is None or kept[:3] != (self.blocks.version, crc, size):
            out_crc, out_size = crc, size
            for index, family in enumerate(self.families):
                for data in (header(family, openmetrics), *self.blocks.blocks[index]):
                    out_crc = zlib.crc32(data, out_crc)
                    out_size += len(data)
            kept = self._checksums[openmetrics] = (self.blocks.version, crc, size, out_crc, out_size)
        return kept[3], kept[4]


@dataclass
class _Tail:
    status: ExporterStatus
    pauses: Mapping[str, int] | None
    openmetrics: bool
    plain: bytes
    member: bytes = b""  # its gzip member, made at the first gzip scrape


@dataclass(frozen=True)
class Rendered:
    """One scrape's answer: chunks written one after another (for gzip, each a gzip member)."""

    chunks: tuple[bytes | memoryview, ...]
    content_type: str
    content_encoding: str | None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class Renderer:
    """Renders each (account, endpoint) state once, and assembles scrapes from the kept pieces."""

    def __init__(self, store: SnapshotStore, process_metrics: bool = False) -> None:
        self._store = store
        self._runtime: CollectorRegistry | None = None
        if process_metrics:
            self._runtime = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._runtime)
            PlatformCollector(registry=self._runtime)
            GCCollector(registry=self._runtime)
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._collectors: Mapping[str, Collector[Any, Any]] = {}
        self._billing = _Section((), (), self._billing_lines)
        self._counters = _Section(COUNTER_FAMILIES, [None] * len(COUNTER_FAMILIES), self._count_lines)
        self._snapshot: Snapshot | None = None  # the snapshot the sections are of
        self._accounts: Mapping[str, AccountState] = {}  # the AccountStates the billing section was updated from
        self._kept_tail: _Tail | None = None

    def render(self, accept: str | None = None, accept_encoding: str | None = None,
               user_agent: str | None = None) -> Rendered:
        """The answer to a scrape. With gzip, Prometheus (whose Go reader reads every member of a gzip
        stream) gets the kept members as they are; other clients, some of which stop after the first
        member, get the same compressed segments spliced into one member."""
        openmetrics = wants_openmetrics(accept)
        use_gzip = wants_gzip(accept_encoding)
        snapshot = self._store.snapshot()
        with self._lock:
            self._refresh(snapshot)
            chunks = self._assemble(snapshot, openmetrics, use_gzip,
                                    single_member=not reads_gzip_members(user_agent))
        return Rendered(chunks, OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE,
                        "gzip" if use_gzip else None)

    def _billing_lines(self, key: tuple[str, str, str], state: EndpointState) -> Mapping[Family, bytes]:
        account_id, name, endpoint = key
        sink = Lines()
        endpoint_samples(self._collectors[endpoint], (account_id, name), state, sink)
        return sink.encoded()

    @staticmethod
    def _count_lines(account_id: str, counts: Counts) -> Mapping[Family, bytes]:
        sink = Lines()
        count_samples(account_id, counts, sink)
        return sink.encoded()

    def _refresh(self, snapshot: Snapshot) -> None:
        """Bring the sections up to this snapshot: only the states not rendered before are rendered and spliced
        in; a new layout (accounts or endpoints added, removed or renamed, a reload) renders all again."""
        status = snapshot.status
        if status.generation != self._generation:  # a reload: divisor, series, families may all differ
            self._generation = status.generation
            self._collectors = status.setup.collectors
            families: list[tuple[Family, str | None]] = [(f, c.name) for c in self._collectors.values()
                                                          for f in c.families]
            families += [(f, None) for f in POLL_FAMILIES]
            self._billing = _Section([f for f, _ in families], [g for _, g in families], self._billing_lines)
            self._counters = _Section(COUNTER_FAMILIES, [None] * len(COUNTER_FAMILIES), self._count_lines)
            self._accounts, self._snapshot = {}, None
        if snapshot is self._snapshot:
            return
        self._snapshot = snapshot
        accounts, seen = snapshot.accounts, self._accounts
        # The same accounts with the same names and endpoints as at the last scrape: only the accounts polled
        # since are looked at (an AccountState is replaced whole by a poll), not all of them.
        same = self._billing.layout is not None and list(accounts) == list(seen)
        polled = [a for k, a in accounts.items() if seen[k] is not a] if same else []
        if same and all(a.name == seen[a.account_id].name and a.endpoints.keys() == seen[a.account_id].endpoints.keys()
                        for a in polled):
            self._billing.update(self._billing_sources(polled))
        else:
            self._billing.rebuild(self._billing_sources(accounts.values()))
        self._accounts = accounts
        ids = sorted(snapshot.counts)
        sources = [(account_id, None, snapshot.counts[account_id]) for account_id in ids]
        if ids == self._counters.layout:
            self._counters.update(sources)
        else:
            self._counters.rebuild(sources)

    def _tail(self, snapshot: Snapshot, openmetrics: bool, use_gzip: bool) -> tuple[bytes, bytes]:
        """The exporter's own families (and ``# EOF``), and their gzip member if asked for: kept while the
        status, the pauses and the format are those of the last scrape; rendered per scrape with the process
        metrics."""
        status, pauses = snapshot.status, snapshot.pauses
        tail = self._kept_tail
        if (self._runtime is not None or tail is None or tail.status is not status or tail.pauses != pauses
                or tail.openmetrics != openmetrics):
            sink = Lines()
            exporter_samples(status, sink, pauses)
            lines = sink.encoded()
            small = [header(f, openmetrics) + lines.get(f, b"") for f in EXPORTER_FAMILIES]
            if self._runtime is not None:
                small.append((_openmetrics if openmetrics else generate_latest)(self._runtime).removesuffix(b"# EOF\n"))
            if openmetrics:
                small.append(b"# EOF\n")
            tail = self._kept_tail = _Tail(status, pauses, openmetrics, b"".join(small))
        if use_gzip and not tail.member:
            tail.member = gzip_member(tail.plain)
        return tail.plain, tail.member

    def _billing_sources(self, accounts: Iterable[AccountState]) -> list[tuple[Any, str | None, Any]]:
        return [((a.account_id, a.name, endpoint), endpoint, state) for a in accounts
                for endpoint, state in a.endpoints.items() if endpoint in self._collectors]

    def _assemble(self, snapshot: Snapshot, openmetrics: bool,
                  use_gzip: bool, single_member: bool) -> tuple[bytes | memoryview, ...]:
        """Headers and kept blocks in family order, then the small per-scrape families."""
        rest, rest_member = self._tail(snapshot, openmetrics, use_gzip)
        chunks: list[bytes | memoryview] = []
        sections = (self._billing, self._counters)
        if not use_gzip:
            for section in sections:
                section.plain(openmetrics, chunks)
            chunks.append(rest)
        elif not single_member:
            for section in sections:
                section.members(openmetrics, chunks)
            chunks.append(rest_member)
        else:  # one member, for clients that read only the first (curl, httpx): no compression, one CRC-32
            crc = size = 0
            chunks.append(GZIP_HEADER)
            for section in sections:
                crc, size = section.checksum(openmetrics, crc, size)
                section.segments(openmetrics, chunks)
            crc, size = zlib.crc32(rest, crc), size + len(rest)
            chunks.append(memoryview(rest_member)[10:-10])
            chunks.append(EMPTY_FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF))
        return tuple(chunks)


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
