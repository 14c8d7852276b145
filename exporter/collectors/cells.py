"""What a collector adds to the status page: a cell per column it declares, each a few lines of plain text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StatusLine:
    text: str
    style: str = ""  # "amount" (a value), "note" (small print), "warn" (a badge that needs attention)


@dataclass(frozen=True)
class StatusCell:
    """What a collector shows in one of its status-page columns for one account."""

    lines: tuple[StatusLine, ...]
    attention: bool = False  # the account is listed before the healthy ones
