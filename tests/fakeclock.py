"""A fake monotonic clock whose sleep advances time at once: the limiter and the client, tested in-process."""

from __future__ import annotations

import asyncio

from exporter.ratelimit import RateLimiter


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


def grants(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    """The fake times of ``count`` grants, one after another."""
    async def run() -> list[float]:
        times = []
        for _ in range(count):
            await limiter.acquire()
            times.append(clock.now)
        return times

    return asyncio.run(run())


def next_grant(limiter: RateLimiter, clock: FakeClock) -> float:
    """How long, from now, the next request would wait (a pause in force, or the pacing)."""
    start = clock.now
    return grants(limiter, clock, 1)[0] - start
