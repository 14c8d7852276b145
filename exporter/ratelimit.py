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

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, when: float) -> None:
        """Hold every request until ``when`` (monotonic seconds): the API said to back off."""
        self._paused_until = max(self._paused_until, when)

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
                await self._sleep(wait)  # re-checked: a 429 may have extended the pause meanwhile
            self._granted.append(now)
            self._next_slot = max(self._next_slot + self._interval, now + self._interval - self._slack)
