"""Poll rounds wait for a run's first creates (``_FirstSends``), on the in-process sandbox.

A round read while the run's creates are still being sent lists backups mostly not there yet, and
costs its pages again next round: the first round waits until every server sent its create (or its
way ended without one). It waits no longer than half the wait_timeout, so that a backup created early
is still seen, and pruned, while another server's create hangs.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from rotator.api import BackupsClient
from rotator.inventory import View, Views
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec
from rotator.sandbox import Sandbox, SandboxOptions
from tests.sandbox_clients import SandboxTime, sandbox_client, sandbox_runner

SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
NOW = datetime(2025, 1, 16, 3, 5, tzinfo=UTC)
SERVERS = 24


class Recording(httpx.AsyncBaseTransport):
    """The sandbox, each request taking a few turns of the event loop (as a real one would), the
    requests recorded in the order they reach it; ``hold(request)`` may keep one waiting."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str]] = []  # (method, server id of a POST or "")
        self.hold: Callable[[httpx.Request], asyncio.Event | None] = lambda request: None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        held = self.hold(request)
        if held is not None:
            await held.wait()
        server = ""
        if request.method == "POST":
            server = str(httpx.Response(200, content=request.content).json()["server_id"])
        self.sent.append((request.method, server))
        for _ in range(3):
            await asyncio.sleep(0)
        return await self.inner.handle_async_request(request)


def job(**changes: Any) -> JobSpec:
    policy = Policy("nightly", Retention(keep_last=3), servers=tuple(range(1, SERVERS + 1)))
    return replace(JobSpec(policy, description="nightly {date}"), **changes)


ONE_PAGE = SandboxOptions(
    seed=3,
    fleet="uniform",
    servers=SERVERS,
    backups_per_server=10,
    owner="nightly",
    frozen_clock=NOW,
    create_seconds=10,
    page_size=1000,
)
"""24 servers with 10 owned backups each, all in one page (a one-page view needs no confirming)."""


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    return ONE_PAGE


@pytest.fixture(name="time")
def fixture_time(sandbox: Sandbox) -> SandboxTime:
    return SandboxTime(sandbox)


@pytest.fixture(name="recording")
def fixture_recording(sandbox_transport: httpx.ASGITransport) -> Recording:
    return Recording(sandbox_transport)


@pytest.fixture(name="client")
async def fixture_client(
    recording: Recording, sandbox_api_url: str, sandbox: Sandbox, time: SandboxTime
) -> AsyncIterator[BackupsClient]:
    # two requests at a time, four servers worked on at once: the creates take many turns to send
    async with sandbox_client(sandbox, sandbox_api_url, recording, time, max_concurrency=2) as client:
        yield client


async def test_no_poll_round_is_read_while_the_first_creates_are_being_sent(
    client: BackupsClient, time: SandboxTime, recording: Recording
) -> None:
    async with asyncio.timeout(30):  # a round waiting for a create that never comes: the bound, 1 h
        report = await sandbox_runner(client, time, poll_initial=1, poll_max=5).run(job(), SLOT)
    assert report.ok, report.summary_line()
    methods = [method for method, _ in recording.sent]
    first, last = methods.index("POST"), len(methods) - 1 - methods[::-1].index("POST")
    assert methods.count("POST") == SERVERS
    assert last - first == SERVERS - 1, f"requests among the creates: {methods[first : last + 1]}"
    # the views at the start and the rounds after the creates, each one account page: nothing else
    gets = methods.count("GET")
    assert 2 <= gets <= 1 + 6, methods
    assert methods.count("DELETE") == SERVERS * 8


async def test_a_backup_created_early_is_seen_while_another_create_hangs(
    client: BackupsClient, time: SandboxTime, recording: Recording
) -> None:
    """Server 2's create is held until a delete was sent: that delete can only come from a server
    whose backup a poll round saw completed, a round that waited for the first creates a while
    (``first_creates_wait``; half the wait_timeout by default), not for ever."""
    pruned = asyncio.Event()

    def hold(request: httpx.Request) -> asyncio.Event | None:
        if request.method == "DELETE":
            pruned.set()
        elif request.method == "POST" and b'"server_id":2' in request.content.replace(b" ", b""):
            return pruned
        return None

    recording.hold = hold
    runner = sandbox_runner(client, time, poll_initial=5, poll_max=5, first_creates_wait=0.2)
    async with asyncio.timeout(10):  # without the bound the round would wait for server 2 for ever
        report = await runner.run(job(), SLOT, servers=[1, 2])
    assert report.ok, report.summary_line()
    assert [server for method, server in recording.sent if method == "POST"] == ["1", "2"]
    methods = [method for method, _ in recording.sent]
    assert methods.index("DELETE") < methods.index("POST", methods.index("POST") + 1)


async def test_a_poll_round_is_read_while_no_waiting_server_holds_a_view(
    client: BackupsClient, time: SandboxTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet's next poll listing is read while the last one is already let go: when a round is
    read, no view of any read before it is alive (the waiting servers hold none, nor the listing
    their creates were decided on)."""
    runner = sandbox_runner(client, time, poll_initial=1, poll_max=5)
    poll = runner.inventory.poll
    alive: list[tuple[int, int]] = []  # each round: the servers it is read for, the views alive

    async def counted(server_ids: Iterable[int]) -> Views:
        wanted = list(server_ids)
        gc.collect()
        alive.append((len(wanted), sum(isinstance(thing, View) for thing in gc.get_objects())))
        return await poll(wanted)

    monkeypatch.setattr(runner.inventory, "poll", counted)
    async with asyncio.timeout(30):
        report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    assert alive, "no poll round was read"
    assert alive[0][0] == SERVERS  # the first round: every server waits for its backup
    assert all(views == 0 for _, views in alive), alive


@pytest.mark.parametrize("sandbox_options", [replace(ONE_PAGE, page_size=50)])  # views of several pages
async def test_a_confirming_read_is_read_while_no_server_holds_its_first_view(
    client: BackupsClient, time: SandboxTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Views read over several pages are confirmed by a second read before any create: it compares
    the first read's ids alone, so that the first listing's rows are let go while it is read."""
    runner = sandbox_runner(client, time, poll_initial=1, poll_max=5)
    confirm, read = runner.inventory.confirm, runner.inventory.read
    alive: list[int] = []  # each read a confirm made: the views alive as it began
    confirming = [False]

    async def counted_read(server_ids: Iterable[int], *, fall_back: bool = True) -> Views:
        if confirming[0]:
            gc.collect()
            alive.append(sum(isinstance(thing, View) for thing in gc.get_objects()))
        return await read(server_ids, fall_back=fall_back)

    async def counted_confirm(views: Any) -> Views:
        confirming[0] = True
        try:
            return await confirm(views)
        finally:
            confirming[0] = False

    monkeypatch.setattr(runner.inventory, "read", counted_read)
    monkeypatch.setattr(runner.inventory, "confirm", counted_confirm)
    async with asyncio.timeout(30):
        report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    assert report.totals()["created"] == SERVERS
    assert alive, "no view was confirmed"
    assert all(views == 0 for views in alive), alive
