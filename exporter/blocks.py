"""Rendered sample lines kept as blocks of about ``BLOCK_BYTES``, each with its gzip member.

A ``Blocks`` holds the lines of a run of metric families in exposition order, one slot per (family, source):
a source is an (account, endpoint) state or one account's API counters. A slot may be empty (the source has
no lines in that family). Blocks never span families (the ``# HELP``/``# TYPE`` lines differ between the
text format and OpenMetrics and are written around them) and end at slot boundaries. When a source changes,
its new lines are spliced into the blocks holding its slots: a poll costs a copy of those few blocks and
their recompression, not the whole exposition, and a scrape hands the kept blocks (or their gzip members)
to the socket as they are: a few thousand buffers, not one per account and family.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence

GZIP_LEVEL = 6
BLOCK_BYTES = 8 * 1024  # plain text per gzip member: within 1.1-1.2x of one stream, a poll recompresses ~100 kB
SPLIT_AT = 4  # a block grown past SPLIT_AT x BLOCK_BYTES by splices is cut again
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, OS unknown (RFC 1952)
EMPTY_FINAL_BLOCK = b"\x03\x00"  # a final fixed-Huffman deflate block holding only end-of-block


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``: give the free pages inside the heap back to the system. A full render frees
    the old blocks (thousands of 8 kB allocations) and makes new ones; without it the process keeps both
    footprints (17 MB more after a reload at 1,000 x 20). A no-op where the C library has no such call."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


release_free_memory = _malloc_trim()


def gzip_member(data: bytes) -> bytes:
    """A complete gzip member whose deflate data ends with a sync flush before an empty final block, so
    ``member[10:-10]`` is a byte-aligned, self-contained deflate segment that can also be spliced into
    one single-member stream."""
    # A window no larger than the data: small inputs (headers, the per-scrape families) need no 32 kB window.
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -max(9, min(15, len(data).bit_length())))
    segment = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return GZIP_HEADER + segment + EMPTY_FINAL_BLOCK + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def _cut(data: memoryview, lengths: Sequence[int]) -> tuple[list[bytes], array[int], array[int]]:
    """A family's slots (their bytes one after another in ``data``) as blocks: (blocks, first slot of each
    block, offset of each slot in its block)."""
    blocks: list[bytes] = []
    starts, offsets = array("l"), array("l", [0]) * len(lengths)
    begin = end = 0  # the current block's span of data
    for slot, length in enumerate(lengths):
        if not starts or end - begin >= BLOCK_BYTES:
            if starts:
                blocks.append(bytes(data[begin:end]))
                begin = end
            starts.append(slot)
        offsets[slot] = end - begin
        end += length
    if starts:
        blocks.append(bytes(data[begin:end]))
    return blocks, starts, offsets


class Blocks:
    """The lines of a run of families, each with a fixed number of slots. Not thread-safe: the renderer calls it
    under its lock; a block is never changed in place (a splice makes a new one), so a scrape still writing
    the old one is not disturbed."""

    def __init__(self, spools: list[bytearray], lengths: list[array[int]]) -> None:
        """Family ``i``'s slots are ``lengths[i]`` bytes long, one after another in ``spools[i]``. Each spool
        is emptied once it is cut: one large buffer per family is freed whole, where thousands of small
        ones would leave the heap full of holes."""
        self.blocks: list[list[bytes]] = []
        self._starts: list[array[int]] = []
        self._offsets: list[array[int]] = []
        self._lengths = lengths
        for index, spool in enumerate(spools):
            with memoryview(spool) as data:
                blocks, starts, offsets = _cut(data, lengths[index])
            spools[index] = bytearray()
            del spool
            self.blocks.append(blocks)
            self._starts.append(starts)
            self._offsets.append(offsets)
        self._members: list[list[bytes]] = [[b""] * len(b) for b in self.blocks]
        self._stale: list[set[int]] = [set(range(len(b))) for b in self.blocks]  # blocks whose member is old
        self._segments: list[tuple[memoryview, ...] | None] = [None] * len(self.blocks)
        self.version = 0  # + 1 with every change of the bytes

    def splice(self, family: int, slot: int, data: bytes) -> None:
        """Put ``data`` in the slot, in place of what was there."""
        lengths, offsets, starts = self._lengths[family], self._offsets[family], self._starts[family]
        offset, length = offsets[slot], lengths[slot]
        block = bisect_right(starts, slot) - 1
        old = self.blocks[family][block]
        if length == len(data) and old.startswith(data, offset):
            return
        view = memoryview(old)
        new = b"".join((view[:offset], data, view[offset + length:]))
        view.release()
        self.blocks[family][block] = new
        lengths[slot] = len(data)
        end = starts[block + 1] if block + 1 < len(starts) else len(lengths)
        delta = len(data) - length
        if delta:
            for later in range(slot + 1, end):
                offsets[later] += delta
        self._stale[family].add(block)
        self._segments[family] = None
        self.version += 1
        if len(new) > SPLIT_AT * BLOCK_BYTES and end - starts[block] > 1:
            self._split(family, block, end)

    def _split(self, family: int, block: int, end: int) -> None:
        """Cut a block grown by splices (an account's first poll fills its empty slots) into blocks again."""
        first = self._starts[family][block]
        with memoryview(self.blocks[family][block]) as data:
            blocks, starts, offsets = _cut(data, self._lengths[family][first:end])
        self._offsets[family][first:end] = offsets
        self.blocks[family][block:block + 1] = blocks
        self._members[family][block:block + 1] = [b""] * len(blocks)
        old_starts = self._starts[family]
        self._starts[family] = old_starts[:block] + array("l", (first + s for s in starts)) + old_starts[block + 1:]
        grown = len(blocks) - 1
        self._stale[family] = {b if b < block else b + grown for b in self._stale[family] if b != block} | set(
            range(block, block + len(blocks)))

    def members(self, family: int) -> list[bytes]:
        """The family's blocks as gzip members; those changed since the last call are compressed again."""
        stale, members, blocks = self._stale[family], self._members[family], self.blocks[family]
        if stale:
            for block in stale:
                members[block] = gzip_member(blocks[block])
            stale.clear()
            self._segments[family] = None
        return members

    def segments(self, family: int) -> tuple[memoryview, ...]:
        """The members' deflate segments (without gzip header and trailer), to splice into one member."""
        members = self.members(family)
        segments = self._segments[family]
        if segments is None:
            segments = self._segments[family] = tuple(memoryview(member)[10:-10] for member in members)
        return segments
