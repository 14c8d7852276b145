"""The client-side request budget shared by every account of one exporter.

A pacing limiter (a token bucket of depth one): requests are granted one at a time, at least ``1 / rate``
seconds apart, so no window of one second ever holds more than ``rate`` requests, however many accounts wait.
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
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, when: float) -> None:
        """Hold every request until ``when`` (monotonic seconds): the API said to back off."""
        self._paused_until = max(self._paused_until, when)

    async def acquire(self) -> None:
        """Wait for the next slot. Slots are spaced from the moment each was actually granted, so a
        late wake-up never lets two requests through closer together than ``1 / rate``."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = max(self._next_slot, self._paused_until) - now
                if wait <= 0:
                    break
                await asyncio.sleep(wait)  # re-checked: a 429 may have extended the pause meanwhile
            self._next_slot = now + self._interval
