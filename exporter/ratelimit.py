"""The client-side request budget shared by every account of one exporter.

A pacing limiter (a token bucket of depth one): requests are spaced at least ``1 / rate`` seconds apart,
so no window of one second ever holds more than ``rate`` requests, however many accounts wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._clock = clock
        self._next_slot = 0.0
        self._paused_until = 0.0

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, when: float) -> None:
        """Hold every request until ``when`` (monotonic seconds): the API said to back off."""
        self._paused_until = max(self._paused_until, when)

    def reserve(self) -> float:
        """Book the next free slot and return how long to wait for it."""
        now = self._clock()
        slot = max(now, self._next_slot, self._paused_until)
        self._next_slot = slot + self._interval
        return slot - now

    async def acquire(self) -> None:
        # reserve() has no await inside, so it is atomic on the event loop.
        while True:
            delay = self.reserve()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._clock() >= self._paused_until:  # else a 429 arrived while we waited: queue again
                return
