"""The shared request budget against an API that announces its budget in RateLimit-* headers."""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import httpx
import pytest

from rotator.ratelimit import RequestBudget
from tests.clock import FakeTime


class WindowedApi:
    """A fixed-window rate limit of ``limit`` requests per ``window`` seconds, announced in its headers
    (Reset in whole seconds, as Hetzner and DigitalOcean send it)."""

    def __init__(self, clock: FakeTime, limit: int, window: int) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.used: dict[int, int] = {}
        self.rejected = 0

    def request(self) -> httpx.Headers:
        now = self.clock.monotonic()
        window = math.floor(now / self.window)
        self.used[window] = self.used.get(window, 0) + 1
        if self.used[window] > self.limit:
            self.rejected += 1
        remaining = max(0, self.limit - self.used[window])
        return httpx.Headers(
            {
                "RateLimit-Limit": str(self.limit),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(math.ceil((window + 1) * self.window - now)),
            }
        )


@pytest.mark.parametrize(
    ("limit", "window", "concurrency"), [(50, 10, 8), (100, 5, 4), (30, 10, 1), (6, 10, 8), (10, 10, 16)]
)
async def test_headers_pace_at_the_apis_rate_without_a_429(limit: int, window: int, concurrency: int) -> None:
    """Configured 100/s against an API allowing ``limit`` per ``window`` s: no request over its
    budget, and no crawl either (the limiter must not count concurrency it is not using as spent)."""
    clock = FakeTime()
    budget = RequestBudget(
        100, burst=1, max_concurrency=concurrency, monotonic=clock.monotonic, sleep=clock.sleep
    )
    api = WindowedApi(clock, limit, window)
    requests = 10 * limit
    for _ in range(requests):
        async with budget.slot():
            headers = api.request()
        budget.observe(headers)
    assert api.rejected == 0
    # the API's own pace takes 10 windows; whole-second Reset values cost some slack
    assert clock.monotonic() <= 1.25 * 10 * window


async def test_in_flight_counts_requests_holding_a_slot() -> None:
    """in_flight is what the header cannot show yet: requests on the wire."""
    clock = FakeTime()
    budget = RequestBudget(1000, burst=10, max_concurrency=4, monotonic=clock.monotonic, sleep=clock.sleep)
    async with budget.slot():
        assert budget.in_flight == 1
        async with budget.slot():
            assert budget.in_flight == 2
    assert budget.in_flight == 0


class BucketApi:
    """A token bucket of ``capacity`` refilled at ``rate`` per second, announced as the sandbox and
    gateways do: Limit the capacity, Remaining the whole tokens left, Reset the whole seconds until
    the bucket is full again (so a bucket looks like a one-second window to a reader of the headers)."""

    def __init__(self, clock: FakeTime, capacity: int, rate: float) -> None:
        self.clock = clock
        self.capacity = capacity
        self.rate = rate
        self.tokens = float(capacity)
        self.updated = clock.monotonic()
        self.served = 0
        self.rejected = 0

    def request(self) -> httpx.Headers:
        now = self.clock.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.served += 1
        else:
            self.rejected += 1
        return httpx.Headers(
            {
                "RateLimit-Limit": str(self.capacity),
                "RateLimit-Remaining": str(math.floor(self.tokens)),
                "RateLimit-Reset": str(math.ceil((self.capacity - self.tokens) / self.rate)),
            }
        )


class LateClock(FakeTime):
    """An event loop's lag: every sleep ends ``lag`` seconds after it was due."""

    def __init__(self, lag: float) -> None:
        super().__init__()
        self.lag = lag

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.lag)


async def drive(budget: RequestBudget, api: BucketApi | WindowedApi, requests: int) -> None:
    for _ in range(requests):
        async with budget.slot():
            headers = api.request()
        budget.observe(headers)


async def test_a_bucket_at_our_own_rate_is_used_to_the_full_despite_late_wakeups() -> None:
    """Configured at the API's own 100/s against its bucket: Remaining stays high (about 90), which
    is no reason to slow down, and a loop that wakes a millisecond late loses no pace. (Spreading
    Remaining over Reset from the last start, as before, ran at 1 / (1/99 s + 1 ms): 91 a second.)"""
    clock = LateClock(lag=0.001)
    budget = RequestBudget(100, burst=10, max_concurrency=8, monotonic=clock.monotonic, sleep=clock.sleep)
    api = BucketApi(clock, capacity=100, rate=100)
    await drive(budget, api, 2000)
    assert api.rejected == 0
    assert clock.monotonic() <= 1.02 * 2000 / 100


@pytest.mark.parametrize("configured", [400, 1000])
async def test_a_bucket_slower_than_configured_is_found_from_its_headers(configured: float) -> None:
    """Configured for 4 or 10 times what the API allows: its bucket (100 at once, 100 a second) is
    drained down to the reserve and then held there, which is its refill rate; no 429."""
    clock = LateClock(lag=0.001)
    budget = RequestBudget(
        configured, burst=10, max_concurrency=8, monotonic=clock.monotonic, sleep=clock.sleep
    )
    api = BucketApi(clock, capacity=100, rate=100)
    await drive(budget, api, 2000)
    assert api.rejected == 0
    # the bucket's first 100 come at once; the other 1,900 at its rate of 100 a second
    assert clock.monotonic() <= 1.05 * 1900 / 100


async def test_the_reserve_is_spread_until_the_reset_and_then_nothing_is_sent() -> None:
    """Remaining 5 of 100 (within the reserve of 10) with the reset 10 s away: those 5 go out evenly,
    the gaps from each start to the reset shared out among the requests started since the answer,
    and the sixth waits for the reset."""
    clock = FakeTime()
    budget = RequestBudget(100, burst=10, max_concurrency=8, monotonic=clock.monotonic, sleep=clock.sleep)
    budget.observe(
        httpx.Headers({"RateLimit-Limit": "100", "RateLimit-Remaining": "5", "RateLimit-Reset": "10"})
    )
    starts = []
    for _ in range(6):
        async with budget.slot():
            starts.append(clock.monotonic())
    assert starts[0] == 0.0  # nothing was sent before: the first goes at once
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == pytest.approx([2.0, 2.0, 2.0, 2.0, 2.0])  # the sixth: at the reset


async def test_callers_waiting_for_the_rate_sleep_once_each_and_keep_to_it() -> None:
    """Eight callers queued on the rate: each takes its token's time once and sleeps until it (one
    sleep a request), where every caller used to wake at every token to find that another took it
    (six sleeps a request on a fleet run); and the starts still keep to the rate. On the real event
    loop, at 5,000 requests a second: 60 requests take about 12 ms."""
    sleeps: list[float] = []

    async def counted_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(seconds)

    budget = RequestBudget(5000, burst=1, max_concurrency=8, sleep=counted_sleep)
    starts: list[float] = []

    async def request() -> None:
        async with budget.slot():
            starts.append(time.monotonic())
            await asyncio.sleep(0.001)

    await asyncio.gather(*(request() for _ in range(60)))
    assert len(starts) == 60
    assert len(sleeps) <= 60
    # GCRA with a burst of 1: no two starts closer than the interval, whatever the loop's lateness
    starts.sort()
    assert starts[-1] - starts[0] >= 59 / 5000 * 0.999


@pytest.mark.parametrize("news", ["429", "headers"])
async def test_a_stop_that_comes_while_a_caller_sleeps_until_its_token_holds_it_back_too(news: str) -> None:
    """A caller that took its token's time and sleeps until it is held back by what came meanwhile:
    another caller's 429 (Retry-After 30), or an answer whose headers say nothing is left for 30 s.
    It starts after those 30 s, not at its token's time."""
    clock = FakeTime()
    budget = RequestBudget(1, burst=1, max_concurrency=8, monotonic=clock.monotonic, sleep=clock.sleep)
    async with budget.slot():
        pass  # the first token: at once; the next is due a second later

    async def sleep_into_a_429(seconds: float) -> None:
        if budget.pauses:
            await clock.sleep(seconds)
            return
        await clock.sleep(seconds / 2)
        if news == "429":
            budget.pause(30)
        else:
            budget.observe(
                httpx.Headers({"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "30"})
            )
        await clock.sleep(seconds / 2)

    budget._sleep = sleep_into_a_429
    paused_at = clock.monotonic() + 0.5
    async with budget.slot():
        started = clock.monotonic()
    assert started >= paused_at + 30
