"""The shared request budget, on a fake clock: no real waiting, exact grant times."""

from __future__ import annotations

import asyncio
import itertools

from exporter.ratelimit import GUARD, RateLimiter
from tests.fakeclock import FakeClock


def grants(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    async def run() -> list[float]:
        times = []
        for _ in range(count):
            await limiter.acquire()
            times.append(clock.now)
        return times

    return asyncio.run(run())


def most_in_any_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_never_more_than_rate_requests_in_any_second_and_spread_out() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, clock=clock, sleep=clock.sleep)
    times = grants(limiter, clock, 30)
    assert most_in_any_window(times, 1.0 + GUARD) <= 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / 3 * 0.75 - 1e-9  # paced over the window, not a burst at its start
    assert times[-1] - times[0] < 30 / 3 * (1 + GUARD)  # and close to the budget, not far below it


def test_a_pause_holds_every_request_until_it_ends() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    grants(limiter, clock, 1)
    limiter.pause_until(clock.now + 7.5)
    assert grants(limiter, clock, 1)[0] >= 1000.0 + 7.5


def test_a_new_rate_applies_to_the_same_limiter() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    fast = grants(limiter, clock, 10)
    assert fast[-1] - fast[0] < 1.0
    limiter.set_rate(1)
    slow = grants(limiter, clock, 4)
    assert limiter.rate == 1
    assert most_in_any_window(slow, 1.0 + GUARD) == 1
    assert slow[-1] - slow[0] >= 3 * 0.75
