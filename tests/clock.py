"""A clock that tests drive: monotonic seconds, wall time, and a sleep that only advances them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


class FakeTime:
    """Time that passes only when something sleeps (or a test calls :meth:`advance`)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime(2025, 1, 16, 15, 45, tzinfo=UTC)
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.elapsed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds
        await asyncio.sleep(0)
