"""The shared request budget against an API that announces its budget in RateLimit-* headers."""

from __future__ import annotations

import math

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
