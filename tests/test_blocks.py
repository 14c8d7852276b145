"""The kept blocks: after any sequence of splices they hold what a fresh build holds, and their gzip members
and spliced segments decompress to those bytes."""

from __future__ import annotations

import gzip
import random
import zlib
from array import array

import pytest

from exporter import blocks as blocks_module
from exporter.blocks import Blocks


def build(columns: list[list[bytes]]) -> Blocks:
    return Blocks([bytearray(b"".join(column)) for column in columns],
                  [array("l", map(len, column)) for column in columns])


def line(rng: random.Random) -> bytes:
    return b"".join(f'metric{{account_id="{rng.randrange(10**6):032x}"}} {rng.random()}\n'.encode()
                    for _ in range(rng.choice([0, 0, 1, 1, 2, 5, 40])))


@pytest.mark.parametrize("seed", range(6))
def test_splices_give_the_bytes_of_a_fresh_build_and_members_that_decompress_to_them(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks_module, "BLOCK_BYTES", 512)  # many blocks, and splits
    monkeypatch.setattr(blocks_module, "PART_BYTES", 128)  # many parts per block, and splits of parts
    rng = random.Random(seed)
    columns = [[line(rng) if rng.random() < 0.3 else b"" for _ in range(rng.choice([0, 1, 7, 60]))]
               for _ in range(5)]
    kept = build(columns)
    for step in range(300):
        family = rng.randrange(len(columns))
        if not columns[family]:
            continue
        slot = rng.randrange(len(columns[family]))
        columns[family][slot] = line(rng) if step < 150 else b""  # grow (splits), then empty everything
        kept.splice(family, slot, columns[family][slot])
        if step % 25 == 0 or step == 299:
            for index, column in enumerate(columns):
                assert b"".join(kept.blocks[index]) == b"".join(column), (seed, step, index)
                members = kept.members(index)
                assert [zlib.decompress(m, 31) for m in members] == kept.blocks[index]
                segments = b"".join(kept.segments(index))
                assert zlib.decompressobj(-15).decompress(segments) == b"".join(column)
    sizes = [len(block) for blocks in kept.blocks for block in blocks]
    assert max(sizes, default=0) <= blocks_module.SPLIT_AT * 512 + 40 * 80  # split when grown


def test_a_splice_recompresses_only_the_part_holding_the_slot(monkeypatch: pytest.MonkeyPatch,
                                                               compressions: list[bytes]) -> None:
    monkeypatch.setattr(blocks_module, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(blocks_module, "PART_BYTES", 256)
    rng = random.Random(7)
    column = [f'metric{{account_id="{slot:032x}"}} {rng.random()}\n'.encode() for slot in range(400)]
    kept = build([column])
    kept.members(0)
    assert len(kept.blocks[0]) > 4  # several blocks, each of many parts
    compressions.clear()
    column[123] = b'metric{account_id="changed"} 1\n'
    kept.splice(0, 123, column[123])
    members = kept.members(0)
    assert len(compressions) == 1 and column[123] in compressions[0] and len(compressions[0]) < 2 * 256 + 80
    assert b"".join(gzip.decompress(m) for m in members) == b"".join(column)
    assert zlib.decompressobj(-15).decompress(b"".join(kept.segments(0))) == b"".join(column)


def test_a_splice_of_the_same_bytes_changes_nothing() -> None:
    kept = build([[b"a 1\n", b"b 2\n"]])
    members = list(kept.members(0))
    version = kept.version
    kept.splice(0, 1, b"b 2\n")
    assert kept.version == version and kept.members(0) == members
    kept.splice(0, 1, b"b 3\n")
    assert kept.version == version + 1 and kept.blocks[0] == [b"a 1\nb 3\n"]
