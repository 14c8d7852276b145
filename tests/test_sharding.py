"""Horizontal sharding: every account is polled by exactly one of N exporters.

Unit tests of exporter.sharding, then end to end: N exporter processes (``--once``)
against the fake Cloudflare API together report every account exactly once, with the
shard taken from the config or from ``--shard``/``--total-shards``, for listed and for
discovered accounts.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.sharding import shard_of, validate_sharding

ROOT = Path(__file__).resolve().parents[1]


def _random_ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(n)]


IDS = _random_ids(1000, seed=20261124)


# --- unit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("total", range(1, 9))
def test_every_account_has_one_shard_whatever_its_spelling(total: int) -> None:
    for account_id in IDS:
        shard = shard_of(account_id, total)
        assert 0 <= shard < total
        assert shard_of(f"  {account_id.upper()}\n", total) == shard  # case and whitespace do not move it


def test_the_assignment_never_changes_between_versions() -> None:
    """SHA-256 of the id, modulo the total: every replica and every release agree (pinned values)."""
    assert [shard_of("023e105f4ecef8ad9ca31a8372d0c353", n) for n in (2, 3, 7)] == [
        int.from_bytes(hashlib.sha256(b"023e105f4ecef8ad9ca31a8372d0c353").digest()[:8], "big") % n
        for n in (2, 3, 7)]


@pytest.mark.parametrize("total", range(2, 9))
def test_roughly_balanced(total: int) -> None:
    counts = Counter(shard_of(account_id, total) for account_id in IDS)
    expected = len(IDS) / total
    assert set(counts) == set(range(total))
    # A fair hash stays within about 4 standard deviations of the mean.
    tolerance = 4 * (expected * (1 - 1 / total)) ** 0.5
    for shard, count in counts.items():
        assert abs(count - expected) <= tolerance, (shard, count, expected)


# Pinned: a changed hash would silently move accounts between running shards after an upgrade.
PINNED = {
    "023e105f4ecef8ad9ca31a8372d0c353": [0, 1, 1, 1, 0, 1, 5, 1],
    "00000000000000000000000000000000": [0, 0, 2, 0, 3, 2, 6, 4],
    "ffffffffffffffffffffffffffffffff": [0, 0, 1, 0, 3, 4, 6, 0],
    "0123456789abcdef0123456789abcdef": [0, 0, 1, 2, 2, 4, 2, 6],
}


@pytest.mark.parametrize("account_id", sorted(PINNED))
def test_stable_pinned_values(account_id: str) -> None:
    assert [shard_of(account_id, total) for total in range(1, 9)] == PINNED[account_id]


def test_case_and_whitespace_do_not_matter() -> None:
    for account_id in IDS[:50]:
        for total in (2, 3, 7):
            assert shard_of(account_id.upper(), total) == shard_of(account_id, total)
            assert shard_of(f" {account_id}\n", total) == shard_of(account_id, total)


@pytest.mark.e2e
def test_stable_across_processes() -> None:
    """Python's own hash() is salted per process; the shard must not be."""
    code = "import sys; from exporter.sharding import shard_of; print([shard_of(a, 5) for a in sys.argv[1:]])"
    sample = IDS[:20]
    outputs = set()
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", code, *sample],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        outputs.add(proc.stdout.strip())
    assert outputs == {str([shard_of(a, 5) for a in sample])}


def test_adding_accounts_moves_no_other_account() -> None:
    before = {a: shard_of(a, 4) for a in IDS[:500]}
    after = {a: shard_of(a, 4) for a in IDS}
    assert all(after[a] == shard for a, shard in before.items())


@pytest.mark.parametrize(
    ("shard", "total", "error"),
    [(0, 0, ValueError), (-1, 3, ValueError), (3, 3, ValueError), (1, -2, ValueError), (True, 2, TypeError)],
)
def test_invalid_arguments(shard: int, total: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_sharding(shard, total)


def test_one_shard_owns_everything() -> None:
    assert all(shard_of(a, 1) == 0 for a in IDS)
    with pytest.raises(ValueError):
        shard_of(IDS[0], 0)


# --- end to end: N exporter processes ---------------------------------------------------------

E2E_ACCOUNTS = _random_ids(12, seed=7)
POLL_SUCCESS = re.compile(r'^cloudflare_ai_gateway_poll_success\{[^}]*account_id="([0-9a-f]{32})"', re.MULTILINE)
SHARD_INFO = re.compile(r"^cloudflare_ai_gateway_exporter_shard_info\{([^}]*)\} 1(\.0)?$", re.MULTILINE)


@pytest.fixture(scope="module")
def fake_api() -> Iterator[Any]:
    from tests.fakeapi import FakeCloudflareAPI, invoice

    api = FakeCloudflareAPI()
    for n, account_id in enumerate(E2E_ACCOUNTS):
        api.add_account(
            account_id, f"account-{n}", [invoice(id=f"in_{n}", amount_due=1000 + n, created=1700000000 + n)]
        )
    api.start()
    try:
        yield api
    finally:
        api.stop()


def _config(api: Any, *, discovery: bool, sharding: dict[str, int] | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "cloudflare": {"base_url": api.base_url, "api_token": "fake-api-token", "requests_per_second": 100},
    }
    if discovery:
        config["accounts"] = []
        config["discovery"] = {"enabled": True}
    else:
        config["accounts"] = [{"id": a, "name": f"account-{n}"} for n, a in enumerate(E2E_ACCOUNTS)]
    if sharding is not None:
        config["sharding"] = sharding
    return config


def _run_shards(tmp_path: Path, configs: list[dict[str, Any]], flags: list[list[str]]) -> list[str]:
    """Start every shard at once, wait for all; return each one's stdout (the exposition)."""
    procs = []
    try:
        for i, (config, extra) in enumerate(zip(configs, flags, strict=True)):
            path = tmp_path / f"shard-{i}.yaml"
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            cmd = [sys.executable, "-m", "exporter", f"--config.file={path}", "--once", *extra]
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
            )
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"{proc.args!r} exited {proc.returncode}\n{err[-3000:]}"
            outputs.append(out)
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _check_cover(outputs: list[str], total: int) -> None:
    seen: Counter[str] = Counter()
    for shard, out in enumerate(outputs):
        mine = set(POLL_SUCCESS.findall(out))
        assert mine == {a for a in E2E_ACCOUNTS if shard_of(a, total) == shard}, f"shard {shard}"
        seen.update(mine)
        info = SHARD_INFO.findall(out)
        assert len(info) == 1, out[-2000:]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', info[0][0]))
        assert labels == {"shard": str(shard), "total_shards": str(total)}
    assert set(seen) == set(E2E_ACCOUNTS), "some account is polled by no shard"
    assert all(count == 1 for count in seen.values()), f"polled twice: {seen.most_common(3)}"


@pytest.mark.e2e
@pytest.mark.parametrize("total", [1, 3])
def test_shards_cover_every_listed_account_once(fake_api: Any, tmp_path: Path, total: int) -> None:
    configs = [_config(fake_api, discovery=False, sharding={"shard": i, "total_shards": total}) for i in range(total)]
    _check_cover(_run_shards(tmp_path, configs, [[] for _ in range(total)]), total)


@pytest.mark.e2e
def test_shard_flags_override_config_for_discovered_accounts(fake_api: Any, tmp_path: Path) -> None:
    """The StatefulSet way: one shared config, --shard/--total-shards per pod, accounts discovered."""
    total = 4
    shared = _config(fake_api, discovery=True, sharding={"shard": 0, "total_shards": 1})
    flags = [[f"--shard={i}", f"--total-shards={total}"] for i in range(total)]
    _check_cover(_run_shards(tmp_path, [shared] * total, flags), total)


@pytest.mark.e2e
def test_shard_from_environment(fake_api: Any, tmp_path: Path) -> None:
    """`shard: ${POD_INDEX}` in the config, as the docs show for a StatefulSet."""
    config = _config(fake_api, discovery=False, sharding=None)
    text = yaml.safe_dump(config) + "sharding:\n  shard: ${POD_INDEX}\n  total_shards: ${TOTAL_SHARDS:-2}\n"
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    outputs = []
    for index in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", f"--config.file={path}", "--once"],
            env={**os.environ, "PYTHONPATH": str(ROOT), "POD_INDEX": str(index)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout)
    _check_cover(outputs, 2)
