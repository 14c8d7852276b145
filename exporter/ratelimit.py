"""The client-side request budget shared by every account of one exporter.

Two rules, both checked when a request is granted:

- a sliding window: at most ``n = ceil(rate)`` grants in any window of ``n / rate`` seconds plus a small
  guard (for an integer rate: at most ``rate`` requests in any second). The guard covers the time between a
  grant and the request reaching the API, which varies (a new connection, an event loop busy with another
  account's page): without it a request delayed a few milliseconds and one sent at once could land in the
  same second as ``rate`` others. It costs ``guard`` seconds per window: 5 % of the throughput at most;
- pacing: grants follow a grid ``1 / rate`` apart, so requests are spread over the window, not sent in a
  burst at its start. A grant that wakes up a little late (up to a quarter of a slot) does not push every
  later slot back, so sleep overshoot does not add up to a pace below the budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

GUARD = 0.05  # seconds added to each window, for the jitter between a grant and the request's arrival
MAX_PAUSE = 300.0  # the longest pause the API may impose on every request (Cloudflare's own lockout is 5 minutes)
PAUSE_RECHECK = 1.0  # a waiting request re-checks the pause this often, so a pause ended early lets it go


class RateLimiter:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, guard: float = GUARD,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._guard = guard
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        self.set_rate(rate)
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def set_rate(self, rate: float) -> None:
        """A new budget (a config reload): requests waiting now, and every later one, follow it. There is
        one limiter per process, so two budgets never run side by side."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._slack = self._interval / 4
        self._per_window = max(1, math.ceil(rate - 1e-9))
        self._window = self._per_window / rate + self._guard
        self._granted = deque(self._granted, maxlen=self._per_window)

    def pause_until(self, when: float) -> None:
        """Hold every request until ``when`` (monotonic seconds), at most MAX_PAUSE from now."""
        if math.isnan(when):
            return
        self._paused_until = max(self._paused_until, min(when, self._clock() + MAX_PAUSE))

    def pause(self, seconds: float) -> float:
        """The API said to back off for ``seconds``: hold every request for that long, at most MAX_PAUSE.
        Returns the pause applied."""
        applied = MAX_PAUSE if math.isnan(seconds) else min(max(0.0, seconds), MAX_PAUSE)
        self.pause_until(self._clock() + applied)
        return applied

    def resume(self) -> bool:
        """A good answer came: end a pause early. True if a pause was in force."""
        paused = self._paused_until > self._clock()
        self._paused_until = 0.0
        return paused

    def cap_pause(self) -> None:
        """A reload keeps a pause in force, but never longer than MAX_PAUSE from now."""
        self._paused_until = min(self._paused_until, self._clock() + MAX_PAUSE)

    def _earliest(self) -> float:
        earliest = max(self._next_slot, self._paused_until)
        if len(self._granted) == self._per_window:
            earliest = max(earliest, self._granted[0] + self._window)
        return earliest

    async def acquire(self) -> None:
        """Wait for the next grant. Both rules are checked against the moments grants were actually made,
        so a late wake-up never lets more than the budget through."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._earliest() - now
                if wait <= 0:
                    break
                # re-checked: a 429 may have extended the pause meanwhile, a good answer may have ended it
                await self._sleep(min(wait, PAUSE_RECHECK) if self._paused_until > now else wait)
            self._granted.append(now)
            self._next_slot = max(self._next_slot + self._interval, now + self._interval - self._slack)
