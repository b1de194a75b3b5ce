"""One request budget shared by every caller of a client.

:class:`RequestBudget` combines three things that must be shared to work at
all: a rate limit (requests per second with a burst, as a GCRA token bucket),
a concurrency cap, and a pause that a 429 sets for *every* caller until its
``Retry-After`` has passed. It also reads the ``RateLimit-*`` headers that
some providers send (Hetzner, DigitalOcean, the IETF draft) and slows down
before the budget runs out instead of waiting for a 429.

How the headers are read: ``Remaining`` requests are left, and the budget is
whole again ``Reset`` seconds from now. Whether the API counts in fixed windows
(nothing comes back before the reset) or as a token bucket (a little comes back
all the time) the headers do not say, so rotator assumes the stricter: it never
plans more than ``Remaining`` requests before the reset. Within that it spends
freely at its own rate down to a *reserve* (a tenth of ``Limit``), and only
the reserve is spread evenly over the time to the reset. Against a window this
spends the window's budget and then waits for the next; against a bucket it
keeps the bucket just above the reserve, which is exactly the bucket's refill
rate, found without being told. Every request started since an answer is
counted against what that answer said, and requests still on the wire are not
in its ``Remaining`` yet, so they count too.

Clocks and sleep are injected, so tests drive time explicitly.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

Sleep = Callable[[float], Awaitable[None]]
Monotonic = Callable[[], float]
WallClock = Callable[[], datetime]

# A RateLimit-Reset above this is a Unix timestamp (Hetzner, DigitalOcean), not a delta.
_EPOCH_THRESHOLD = 1_000_000_000
# The share of the API's announced limit that is kept back and only spread out until the reset.
RESERVE_SHARE = 0.1
# Waiting on the API's budget while answers are on their way, look again this often: each may bring news.
OBSERVE_STEP = 0.02


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RateLimitHint:
    """What a response's ``RateLimit-*`` headers said."""

    limit: int | None
    remaining: int
    reset_in: float  # seconds until the budget resets

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: datetime) -> RateLimitHint | None:
        remaining = _int_header(headers, "ratelimit-remaining")
        reset = _int_header(headers, "ratelimit-reset")
        if remaining is None or reset is None:
            return None
        reset_in = float(reset)
        if reset > _EPOCH_THRESHOLD:
            reset_in = max(0.0, reset - now.timestamp())
        return cls(limit=_int_header(headers, "ratelimit-limit"), remaining=remaining, reset_in=reset_in)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    # the IETF draft allows "100, 100;w=60": the first item is the one in force
    head = raw.split(",")[0].split(";")[0].strip()
    try:
        value = int(float(head))
    except ValueError:
        return None
    return value if value >= 0 else None


class RequestBudget:
    """Rate limit, concurrency cap and shared 429 pause for one API client."""

    def __init__(
        self,
        requests_per_second: float,
        burst: int = 1,
        max_concurrency: int = 8,
        *,
        monotonic: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: WallClock = utcnow,
    ) -> None:
        if requests_per_second <= 0 or burst < 1 or max_concurrency < 1:
            raise ValueError("requests_per_second > 0, burst >= 1 and max_concurrency >= 1 are required")
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.max_concurrency = max_concurrency
        self._monotonic = monotonic
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0  # requests that hold a token and have not finished
        self._tat = monotonic()  # GCRA "theoretical arrival time" of the next request
        self._paused_until = 0.0
        # What the API's RateLimit-* headers announced: requests left (less those started since the
        # answer), in force until the budget's reset; and the largest limit seen, to size the reserve.
        self._api_left = math.inf
        self._api_until = -math.inf
        self._api_limit = 0
        self._last_start = -math.inf  # when the last request took its token
        self.waited = 0.0  # total seconds callers spent waiting for the budget
        self.pauses = 0  # 429 pauses and exhausted-budget pauses taken

    @property
    def _interval(self) -> float:
        return 1.0 / self.requests_per_second

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the concurrent places and one token of the rate for a request."""
        async with self._semaphore:
            await self._take_token()
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    async def _take_token(self) -> None:
        while True:
            now = self._monotonic()
            interval, tolerance = self._interval, (self.burst - 1) * self._interval
            start = max(now, self._paused_until)
            tat = max(self._tat, start)
            allowed_at = max(tat - tolerance, start)
            api_allows = self._api_allows(now)
            if api_allows > now:
                wait = max(allowed_at, api_allows) - now
                if self.in_flight > 0:
                    wait = min(wait, OBSERVE_STEP)  # an answer on its way may say the budget came back
                self.waited += wait
                await self._sleep(wait)
                continue
            # The token at allowed_at is this caller's from now on (GCRA's reservation): the callers
            # waiting beside it queue behind it and each sleeps once, instead of all of them waking
            # at every token to find that one of them took it.
            self._tat = tat + interval
            if allowed_at > now:
                self.waited += allowed_at - now
                await self._sleep(allowed_at - now)
                now = self._monotonic()
                if self._paused_until > now or self._api_allows(now) > now:
                    continue  # a 429 or the API's headers said wait meanwhile: that token is let go
            self._last_start = now
            self._api_left -= 1
            return

    @property
    def _reserve(self) -> float:
        return max(1.0, RESERVE_SHARE * self._api_limit)

    def _api_allows(self, now: float) -> float:
        """The earliest start that the API's announced budget allows (``now`` when it allows one now)."""
        if now >= self._api_until or self._api_left > self._reserve:
            return now
        if self._api_left < 1:
            return self._api_until  # nothing left before the reset
        # the reserve: the gaps from the last start to the reset, one more than the requests left,
        # are made equal (decided now, not committed ahead: a fresh answer may bring more)
        return (self._api_left * self._last_start + self._api_until) / (self._api_left + 1)

    def pause(self, seconds: float) -> None:
        """Stop every caller from starting a request for ``seconds`` (a 429's Retry-After)."""
        until = self._monotonic() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take in what an answer's ``RateLimit-*`` headers say of the API's budget (see the module)."""
        hint = RateLimitHint.from_headers(headers, self._wall_clock())
        if hint is None:
            return
        now = self._monotonic()
        self._api_limit = max(self._api_limit, hint.limit or 0, hint.remaining)
        # Requests still on the wire spend budget that this answer does not show yet
        # (observe() runs after the answer's own slot is released, so in_flight is the others).
        usable = hint.remaining - self.in_flight
        if usable >= hint.reset_in * self.requests_per_second + self._reserve:
            self._api_until = -math.inf  # the budget lasts at our own pace: no slowdown
            return
        if hint.remaining <= 0:
            self.pauses += 1
        self._api_left = usable
        self._api_until = now + (hint.reset_in if hint.reset_in > 0 else self._interval)

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._monotonic())


def retry_after_or_default(seconds: float | None, default: float = 1.0) -> float:
    """A usable wait: the API's Retry-After, or ``default`` when it sent none."""
    if seconds is None or math.isnan(seconds):
        return default
    return seconds
