"""The sample accounts of ``--demo`` and of the test fake: who they are and the wire format they answer in.

Six accounts in telling states (docs/demo.md): production (healthy), staging (credits draining), research (a
declined card), bulk (a long multi-currency history, near its limits), legacy (a revoked token), hobby (no
Unified Billing). Each collector module holds its own endpoint's sample data for them (``Collector.sample``);
this module is the vocabulary they share.
"""

from __future__ import annotations

from typing import Any

HOUR, DAY = 3600.0, 86400.0
DEMO_TOKEN = "demo-token-0c4f6a1e9b2d7f35"  # noqa: S105  (valid only against the demo)
DEMO_REVOKED_TOKEN = "demo-revoked-token-7e21b9c0d4a8"  # noqa: S105
DEMO_ACCOUNTS: dict[str, str] = {
    "production": "023e105f4ecef8ad9ca31a8372d0c353",
    "staging": "1b7e4d2c9a0f4e6b8d3c5a7f9e1b2d40",
    "research": "6c2f8e1a3b5d7f9e0a4c6e8b1d3f5a72",
    "bulk": "9d4b6f8a0c2e4a6c8e0b2d4f6a8c0e13",
    "legacy": "f0e1d2c3b4a5968778695a4b3c2d1e0f",
    "hobby": "3a5c7e9b1d2f4a6c8e0b2d4f6a8c0e1b",
}
DEMO_NAMES = {account_id: name for name, account_id in DEMO_ACCOUNTS.items()}
# What the samples of several endpoints agree on.
BULK_DAILY_LIMIT = 50_000.0  # cents: bulk's account spending limit; its usage today is 85 % of it
STAGING_START_BALANCE = 4_500.0  # cents, when the demo starts
STAGING_BURN_PER_SECOND = 0.25  # cents: 9 USD an hour, zero after 5 hours


def envelope(result: Any, result_info: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def error_envelope(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}


def query_int(query: dict[str, str] | Any, name: str, default: int, maximum: int) -> int:
    """A positive integer query parameter, at most ``maximum``; ValueError when it is not one."""
    value = int(query.get(name, str(default)))
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return min(value, maximum)
