"""rotator's client and runner on the in-process sandbox, on the sandbox's clock (shared by tests)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx

from rotator.api import BackupsClient, ClientSettings
from rotator.runner import Runner
from rotator.sandbox import Sandbox
from rotator.secrets import ApiToken

# No rate limit to speak of and no retry waits: tests judge what was sent, not how fast.
FAST: dict[str, Any] = {
    "requests_per_second": 1000,
    "burst": 1000,
    "retry_wait_initial": 0,
    "retry_wait_max": 0,
    "retry_wait_jitter": 0,
}


class SandboxTime:
    """rotator's clocks tied to the sandbox clock: sleeping advances the sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.start = sandbox.clock.now()

    def now(self) -> datetime:
        return self.sandbox.clock.now()

    def monotonic(self) -> float:
        return (self.sandbox.clock.now() - self.start).total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.sandbox.clock.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)


def sandbox_client(
    sandbox: Sandbox, api_url: str, transport: httpx.AsyncBaseTransport, time: SandboxTime, **settings: Any
) -> BackupsClient:
    """A client of the sandbox through ``transport``, on ``time``; ``settings`` override :data:`FAST`."""
    return BackupsClient(
        ApiToken(sandbox.token, "test"),
        ClientSettings(base_url=api_url, **{**FAST, **settings}),
        transport=transport,
        wall_clock=time.now,
        monotonic=time.monotonic,
        sleep=time.sleep,
    )


def sandbox_runner(client: BackupsClient, time: SandboxTime, **options: Any) -> Runner:
    """A Runner on ``time``, polling every 30 s unless ``options`` say otherwise."""
    return Runner(
        client,
        wall_clock=time.now,
        monotonic=time.monotonic,
        sleep=time.sleep,
        **{"poll_initial": 30, **options},
    )
