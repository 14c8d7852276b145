"""The shared request budget, on a fake clock: no real waiting, exact grant times."""

from __future__ import annotations

import asyncio
import itertools

from exporter.ratelimit import GUARD, RateLimiter
from tests.fakeclock import FakeClock, grants, next_grant


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
    assert most_in_any_window(slow, 1.0 + GUARD) == 1
    assert slow[-1] - slow[0] >= 3 * 0.75


def test_a_pause_is_capped_at_five_minutes_and_a_reload_keeps_it_capped() -> None:
    from exporter.ratelimit import MAX_PAUSE

    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    assert limiter.pause(99999) == MAX_PAUSE == 300
    assert limiter.pause(float("inf")) == 300 and limiter.pause(float("nan")) == 300
    limiter.pause_until(clock.now + 10**9)  # whatever a caller asks, never past the cap
    clock.now += 100
    limiter.set_rate(5)
    limiter.cap_pause()  # a reload
    assert next_grant(limiter, clock) == 200  # the pause ends when it said (at 1000 + 300), not later
    assert limiter.resume() is False  # nothing in force any more


def test_a_good_answer_lets_a_waiting_request_go_before_the_pause_ends() -> None:
    clock = FakeClock()

    async def yielding_sleep(seconds: float) -> None:  # time passes, and other tasks get to run meanwhile
        await clock.sleep(seconds)
        await asyncio.sleep(0)

    limiter = RateLimiter(10, clock=clock, sleep=yielding_sleep)
    limiter.pause(300)

    async def go() -> float:
        waiting = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        assert limiter.resume() is True
        await waiting
        return clock.now

    assert asyncio.run(go()) <= 1000.0 + 1.0  # re-checked within a second, not after 300
