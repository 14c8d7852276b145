"""Horizontal sharding: which exporter process polls which Cloudflare account.

When one account list outgrows one process, or one API token's request budget
(1,200 requests per 5 minutes), run ``total_shards`` exporters, each with its own
``shard`` index in ``0 .. total_shards - 1``. Every account is owned by exactly one
shard, chosen by a stable hash of its id, as kube-state-metrics does for objects:

* the hash is SHA-256 of the lowercased account id, read as a big-endian integer,
  taken modulo ``total_shards``; it never depends on Python's randomised ``hash()``,
  the process, the platform or the Python version, so every replica agrees;
* the assignment depends only on the id and ``total_shards``: adding or removing an
  account never moves another one; changing ``total_shards`` reshuffles accounts
  (run every shard with the same value and roll them together).

The poller keeps, of the accounts listed in the config and those found by discovery, the ones whose
:func:`shard_of` is its shard. With ``total_shards == 1`` (the default) one process owns everything.
"""

from __future__ import annotations

import hashlib

__all__ = ["shard_of", "validate_sharding"]


def _check_total(total_shards: int) -> None:
    if isinstance(total_shards, bool) or not isinstance(total_shards, int):
        raise TypeError(f"total_shards must be an int, got {type(total_shards).__name__}")
    if total_shards < 1:
        raise ValueError(f"total_shards must be at least 1, got {total_shards}")


def validate_sharding(shard: int, total_shards: int) -> None:
    """Raise ``ValueError`` (or ``TypeError``) unless ``0 <= shard < total_shards``."""
    _check_total(total_shards)
    if isinstance(shard, bool) or not isinstance(shard, int):
        raise TypeError(f"shard must be an int, got {type(shard).__name__}")
    if not 0 <= shard < total_shards:
        raise ValueError(f"shard must be between 0 and {total_shards - 1} (total_shards - 1), got {shard}")


def shard_of(account_id: str, total_shards: int) -> int:
    """Return the shard (``0 .. total_shards - 1``) that owns ``account_id``.

    Stable everywhere: SHA-256 of the lowercased id, modulo ``total_shards``.
    Leading and trailing whitespace is ignored, like case.
    """
    _check_total(total_shards)
    if total_shards == 1:
        return 0
    digest = hashlib.sha256(account_id.strip().lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total_shards

