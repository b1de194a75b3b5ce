"""Stand-ins for time that tests inject into a sandbox, so no test ever waits."""

from __future__ import annotations


class RecordingSleep:
    """An async ``sleep`` that returns at once and remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    @property
    def total(self) -> float:
        """All the waiting asked for, in seconds."""
        return sum(self.calls)


class ManualMonotonic:
    """A monotonic clock that moves only when told to (for the rate limiter's budget)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        self.now += seconds
