"""Rendered sample lines kept as blocks of about ``BLOCK_BYTES``, each with its gzip member.

A ``Blocks`` holds the lines of a run of metric families in exposition order, one slot per (family, source):
a source is an (account, endpoint) state or one account's API counters. A slot may be empty (the source has
no lines in that family). Blocks never span families (the ``# HELP``/``# TYPE`` lines differ between the
text format and OpenMetrics and are written around them) and end at slot boundaries. A scrape hands the kept
blocks (or their gzip members) to the socket as they are: a few hundred buffers for 20 MB.

A block is compressed in parts of about ``PART_BYTES``, each an independent deflate segment (a fresh
compressor ending in a sync flush), so the segments of a block's unchanged parts are copied out of its old
member and only the parts holding a changed slot are compressed again. When a source changes, its new lines
are spliced into the blocks holding its slots: a poll costs a copy of those few blocks and the recompression
of a few parts, not the whole exposition.
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
BLOCK_BYTES = 64 * 1024  # plain text per kept block, one buffer of the answer; a splice copies one block
PART_BYTES = 8 * 1024  # plain text per compressed part: within 1.1-1.2x of one stream, a poll recompresses ~100 kB
SPLIT_AT = 2  # a block (or part) grown past SPLIT_AT x its size by splices is cut again
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, no mtime, OS unknown (RFC 1952)
EMPTY_FINAL_BLOCK = b"\x03\x00"  # a final fixed-Huffman deflate block holding only end-of-block


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``: give the free pages inside the heap back to the system. A full render frees
    the old blocks and makes new ones; without it the process keeps both footprints (17 MB more after a
    reload at 1,000 x 20). A no-op where the C library has no such call."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


release_free_memory = _malloc_trim()


def deflate_segment(data: bytes | memoryview) -> bytes:
    """``data`` as a byte-aligned, self-contained deflate segment (no back-reference before it, a sync flush
    at its end): segments made this way, one after another, are one deflate stream."""
    if not data:
        return b""
    # A window no larger than the data: small inputs (headers, the per-scrape families) need no 32 kB window.
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -max(9, min(15, len(data).bit_length())))
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def gzip_trailer(crc: int, size: int) -> bytes:
    """What ends a member whose deflate segments hold ``size`` bytes with CRC-32 ``crc``."""
    return EMPTY_FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF)


def gzip_member(data: bytes) -> bytes:
    """A complete gzip member such that ``member[10:-10]`` is ``deflate_segment(data)``, which can also be
    spliced into one single-member stream."""
    return GZIP_HEADER + deflate_segment(data) + gzip_trailer(zlib.crc32(data), len(data))


def _cut(data: memoryview, lengths: Sequence[int], first: int) -> tuple[list[bytes], array[int], list[array[int]]]:
    """Slots ``first``, ``first + 1``, ... (their bytes one after another in ``data``) as blocks: (blocks,
    first slot of each block, first slot of each part of each block)."""
    blocks: list[bytes] = []
    starts: array[int] = array("l")
    parts: list[array[int]] = []
    begin = end = part = 0  # the current block's span of data, where its current part began
    for index, length in enumerate(lengths):
        if not starts or end - begin >= BLOCK_BYTES:
            if starts:
                blocks.append(bytes(data[begin:end]))
                begin = end
            starts.append(first + index)
            parts.append(array("l", [first + index]))
            part = end
        elif end - part >= PART_BYTES:
            parts[-1].append(first + index)
            part = end
        end += length
    if starts:
        blocks.append(bytes(data[begin:end]))
    return blocks, starts, parts


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
        self._parts: list[list[array[int]]] = []  # per block, the first slot of each part
        self._lengths = lengths
        for index, spool in enumerate(spools):
            with memoryview(spool) as data:
                blocks, starts, parts = _cut(data, lengths[index], 0)
            spools[index] = bytearray()
            del spool
            self.blocks.append(blocks)
            self._starts.append(starts)
            self._parts.append(parts)
        # per block, its member and where each part's segment ends in the member's deflate data
        self._members: list[list[bytes]] = [[b""] * len(b) for b in self.blocks]
        self._ends: list[list[array[int]]] = [[array("l", [0]) * len(p) for p in parts] for parts in self._parts]
        # the first slots of the parts whose segment is old; a block never compressed has an empty member
        self._stale: list[set[int]] = [{s for p in parts for s in p} for parts in self._parts]
        self._segments: list[tuple[memoryview, ...] | None] = [None] * len(self.blocks)
        self.version = 0  # + 1 with every change of the bytes

    def _end(self, family: int, block: int) -> int:
        """The slot after the block's last."""
        starts = self._starts[family]
        return starts[block + 1] if block + 1 < len(starts) else len(self._lengths[family])

    def splice(self, family: int, slot: int, data: bytes) -> None:
        """Put ``data`` in the slot, in place of what was there."""
        lengths, starts = self._lengths[family], self._starts[family]
        block = bisect_right(starts, slot) - 1
        offset, length = sum(lengths[starts[block]:slot]), lengths[slot]
        old = self.blocks[family][block]
        if length == len(data) and old.startswith(data, offset):
            return
        with memoryview(old) as view:
            new = b"".join((view[:offset], data, view[offset + length:]))
        self.blocks[family][block] = new
        lengths[slot] = len(data)
        parts = self._parts[family][block]
        part = bisect_right(parts, slot) - 1
        self._stale[family].add(parts[part])
        self._segments[family] = None
        self.version += 1
        end = self._end(family, block)
        if len(new) > SPLIT_AT * BLOCK_BYTES and end - starts[block] > 1:
            self._split(family, block, end)
            return
        part_end = parts[part + 1] if part + 1 < len(parts) else end
        if part_end - parts[part] > 1 and sum(lengths[parts[part]:part_end]) > SPLIT_AT * PART_BYTES:
            self._split_part(family, block, part, part_end)

    def _split(self, family: int, block: int, end: int) -> None:
        """Cut a block grown by splices (an account's first poll fills its empty slots) into blocks again;
        they are compressed whole at the next gzip scrape."""
        first = self._starts[family][block]
        with memoryview(self.blocks[family][block]) as data:
            blocks, starts, parts = _cut(data, self._lengths[family][first:end], first)
        self.blocks[family][block:block + 1] = blocks
        self._members[family][block:block + 1] = [b""] * len(blocks)
        self._parts[family][block:block + 1] = parts
        self._ends[family][block:block + 1] = [array("l", [0]) * len(p) for p in parts]
        old = self._starts[family]
        self._starts[family] = old[:block] + starts + old[block + 1:]
        self._stale[family].update(s for p in parts for s in p)

    def _split_part(self, family: int, block: int, part: int, end: int) -> None:
        """Cut a part grown by splices into parts again; the new ones are compressed at the next gzip scrape."""
        parts, ends, lengths = self._parts[family][block], self._ends[family][block], self._lengths[family]
        firsts, size = array("l"), 0
        for slot in range(parts[part] + 1, end):
            size += lengths[slot - 1]
            if size >= PART_BYTES:
                firsts.append(slot)
                size = 0
        parts[part + 1:part + 1] = firsts
        ends[part:part] = array("l", [ends[part]]) * len(firsts)  # the old segment's end follows the last
        self._stale[family].update(firsts)

    def _compress(self, family: int, block: int, stale: set[int]) -> None:
        """Make the block's member again: its stale parts compressed, the others' segments copied."""
        data, old = self.blocks[family][block], self._members[family][block]
        parts, ends, lengths = self._parts[family][block], self._ends[family][block], self._lengths[family]
        last = self._end(family, block)
        segments: list[bytes | memoryview] = []
        new_ends: array[int] = array("l")
        at = old_end = size = 0  # where the part begins in the data, the end of its old segment, the new size
        with memoryview(data) as view, memoryview(old) as old_view:
            for index, first in enumerate(parts):
                stop = at + sum(lengths[first:parts[index + 1] if index + 1 < len(parts) else last])
                if not old or first in stale:
                    segments.append(deflate_segment(view[at:stop]))
                else:
                    segments.append(old_view[10 + old_end:10 + ends[index]])
                old_end, at = ends[index], stop
                size += len(segments[-1])
                new_ends.append(size)
            member = b"".join((GZIP_HEADER, *segments, gzip_trailer(zlib.crc32(data), len(data))))
            segments.clear()
        self._members[family][block] = member
        self._ends[family][block] = new_ends

    def members(self, family: int) -> list[bytes]:
        """The family's blocks as gzip members; the parts changed since the last call are compressed again."""
        stale = self._stale[family]
        if stale:
            starts = self._starts[family]
            for block in sorted({bisect_right(starts, slot) - 1 for slot in stale}):
                self._compress(family, block, stale)
            stale.clear()
            self._segments[family] = None
        return self._members[family]

    def segments(self, family: int) -> tuple[memoryview, ...]:
        """The members' deflate segments (without gzip header and trailer), to splice into one member."""
        members = self.members(family)
        segments = self._segments[family]
        if segments is None:
            segments = self._segments[family] = tuple(memoryview(member)[10:-10] for member in members)
        return segments
