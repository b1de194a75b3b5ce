"""A token bucket, as the provider's rate limit is modelled: real monotonic time, injectable."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The bucket's answer to one request, and what the ``RateLimit-*`` headers say about it."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit/-Remaining/-Reset`` (and ``Retry-After`` when refused), whole seconds."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class TokenBucket:
    """``rate`` requests per second on average, up to ``burst`` at once.

    The budget runs on ``monotonic`` (real time by default, not the sandbox
    clock: the limit models the provider's, which no test can fast-forward).
    """

    def __init__(self, rate: float, burst: int, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._tokens = float(burst)
        self._updated = monotonic()
        self._lock = threading.Lock()

    def take(self) -> RateDecision:
        """Spend one token if there is one; say so, and when to come back if not."""
        with self._lock:
            now = self._monotonic()
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._updated = now
            allowed = self._tokens >= 1.0
            if allowed:
                self._tokens -= 1.0
            missing_for_one = max(0.0, 1.0 - self._tokens)
            return RateDecision(
                allowed=allowed,
                limit=self.burst,
                remaining=math.floor(self._tokens),
                reset=math.ceil((self.burst - self._tokens) / self.rate),
                retry_after=0 if allowed else max(1, math.ceil(missing_for_one / self.rate)),
            )
