"""One run of a policy against the in-process sandbox: create -> wait -> prune, and every safety rail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog

from rotator.api import BackupsClient
from rotator.markers import parse_marker
from rotator.planner import Rail
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Outcome, Runner
from rotator.sandbox import Sandbox, SandboxOptions
from tests.sandbox_clients import SandboxTime, sandbox_client, sandbox_runner

NOW = datetime(2025, 1, 16, 3, 0, 30, tzinfo=UTC)
SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
SERVERS = (1, 2, 3, 4, 5)


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """5 servers with 10 owned nightly backups each, clock frozen just after the 03:00 slot."""
    return SandboxOptions(
        seed=3,
        fleet="uniform",
        servers=len(SERVERS),
        backups_per_server=10,
        owner="nightly",
        frozen_clock=NOW,
        create_seconds=90,
        page_size=10,
    )


@pytest.fixture(name="time")
def fixture_time(sandbox: Sandbox) -> SandboxTime:
    """Clocks that follow the sandbox's."""
    return SandboxTime(sandbox)


@pytest.fixture(name="client")
async def fixture_client(
    sandbox_transport: httpx.ASGITransport, sandbox_api_url: str, sandbox: Sandbox, time: SandboxTime
) -> AsyncIterator[BackupsClient]:
    """A BackupsClient into the in-process sandbox, without retry waits."""
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, time) as client:
        yield client


@pytest.fixture(name="runner")
def fixture_runner(client: BackupsClient, time: SandboxTime) -> Runner:
    """A Runner on the sandbox clock, polling every 30 s."""
    return sandbox_runner(client, time, poll_max=60)


def job(**changes: Any) -> JobSpec:
    retention = changes.pop("retention", Retention(keep_last=7))
    policy = Policy("nightly", retention, servers=changes.pop("servers", SERVERS))
    return replace(JobSpec(policy, description="nightly {date}"), **changes)


def owned(sandbox: Sandbox, server_id: int) -> list[Any]:
    return [
        b
        for b in sandbox.state.backups(server_id=server_id)
        if (m := parse_marker(b.description)) is not None and m.policy == "nightly"
    ]


def deleted_ids(sandbox: Sandbox) -> list[int]:
    return [event.backup["id"] for event in sandbox.state.events("deleted")]


async def test_a_run_creates_waits_and_prunes_to_the_policy(runner: Runner, sandbox: Sandbox) -> None:
    """Every server ends with exactly keep_last owned backups, the new one among them."""
    report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    assert report.totals()["created"] == 5
    assert report.totals()["deleted"] == 5 * 4  # 10 + 1 new, keep 7
    for sid in SERVERS:
        mine = owned(sandbox, sid)
        assert len(mine) == 7
        assert all(b.status == "completed" for b in mine)
        assert any(b.description.endswith("@2025-01-16T03:00Z]") for b in mine)
    assert "policy nightly ok" in report.summary_line()


async def test_no_delete_before_the_servers_new_backup_completed(runner: Runner, sandbox: Sandbox) -> None:
    """The sandbox's event log shows each server's deletes only after its new backup completed."""
    await runner.run(job(), SLOT)
    completed_at: dict[int, int] = {}
    for event in sandbox.state.events():
        sid = event.backup["server"]["id"]
        if event.kind == "completed":
            completed_at[sid] = event.seq
        if event.kind == "deleted":
            assert sid in completed_at
            assert event.seq > completed_at[sid]


async def test_a_second_run_of_the_same_slot_adopts_and_deletes_nothing(
    runner: Runner, sandbox: Sandbox
) -> None:
    """Idempotent by slot: the slot's backup is adopted, never created twice."""
    await runner.run(job(), SLOT)
    before = len(sandbox.state.events("created"))
    report = await runner.run(job(), SLOT)
    assert report.ok
    assert report.totals()["adopted"] == 5
    assert report.totals()["created"] == 0
    assert report.totals()["deleted"] == 0
    assert len(sandbox.state.events("created")) == before


async def test_failed_backups_prune_nothing(runner: Runner, sandbox: Sandbox) -> None:
    """A server whose new backup failed keeps all its backups, and the run reports it."""
    sandbox.update_faults(fail_rate=1.0)
    report = await runner.run(job(), SLOT)
    assert not report.ok
    assert deleted_ids(sandbox) == []
    assert all(r.outcome is Outcome.FAILED and "failed" in (r.error or "") for r in report.servers)


async def test_wait_timeout_prunes_nothing(runner: Runner, sandbox: Sandbox) -> None:
    """A backup still in progress after wait_timeout: the run fails for it, nothing deleted."""
    report = await runner.run(job(wait_timeout=timedelta(seconds=60)), SLOT)
    assert not report.ok
    assert deleted_ids(sandbox) == []
    assert all("wait_timeout" in (r.error or "") for r in report.servers)


async def test_max_deletes_per_run_deletes_the_oldest_and_reports_the_rest(
    runner: Runner, sandbox: Sandbox
) -> None:
    """keep_last 2 wants 9 deletes a server; the cap of 3 deletes the 3 oldest and blocks 6."""
    before = {sid: sorted(owned(sandbox, sid), key=lambda b: b.created_at) for sid in SERVERS}
    report = await runner.run(job(retention=Retention(keep_last=2), max_deletes_per_run=3), SLOT)
    assert report.ok
    for result in report.servers:
        assert sorted(result.deleted) == sorted(b.id for b in before[result.server_id][:3])
        assert [b.rail for b in result.blocked] == [Rail.MAX_DELETES] * 6


async def test_dry_run_creates_and_deletes_nothing(runner: Runner, sandbox: Sandbox) -> None:
    """Dry run reports what it would delete and sends no POST and no DELETE."""
    report = await runner.run(job(), SLOT, dry_run=True)
    assert report.ok
    assert sandbox.state.events("created") == []
    assert deleted_ids(sandbox) == []
    # 10 old and the one it would create, keep_last 7: the 4 oldest, as a real run
    assert all(len(r.blocked) == 4 and r.blocked[0].rail is Rail.DRY_RUN for r in report.servers)
    assert "(dry run)" in report.summary_line()
    # 5 servers x 4 would-deletes; kept: 6 old ones each (the one it would create is the 7th)
    assert "20 would be deleted, 30 kept, 0 held back" in report.summary_line()


async def test_listing_failure_touches_nothing(runner: Runner, sandbox: Sandbox) -> None:
    """When the listing cannot be read, nothing is created or deleted."""
    sandbox.update_faults(error_rate=1.0)
    report = await runner.run(job(), SLOT)
    assert not report.ok
    assert sandbox.state.events("created") == []
    assert deleted_ids(sandbox) == []


async def test_prune_only_policy(runner: Runner, sandbox: Sandbox) -> None:
    """create: false prunes without creating."""
    report = await runner.run(job(create=False), SLOT)
    assert report.ok
    assert sandbox.state.events("created") == []
    assert report.totals()["deleted"] == 5 * 3


async def test_abandon_before_the_run_creates_and_deletes_nothing(runner: Runner, sandbox: Sandbox) -> None:
    """Shutdown already under way: no backup is started, nothing is pruned, every server abandoned."""
    runner.abandon.set()
    report = await runner.run(job(), SLOT)
    assert all(r.outcome is Outcome.ABANDONED for r in report.servers)
    assert deleted_ids(sandbox) == []
    assert sandbox.state.events("created") == []


async def test_request_cost_is_one_create_and_the_deletes_plus_listings(
    runner: Runner, sandbox: Sandbox, client: BackupsClient
) -> None:
    """The run costs a create per server, its deletes, and few listing pages."""
    await runner.run(job(), SLOT)
    requests = sandbox.stats()["requests"]
    posts = sum(requests["POST /api/v1/backups/"].values())
    deletes = sum(requests["DELETE /api/v1/backups/{backup_id}/"].values())
    gets = sum(requests["GET /api/v1/backups/"].values())
    assert posts == 5
    assert deletes == 20
    # 55 manual backups in 10-item pages: 6 pages a listing; one before creating, one per poll round
    assert gets <= 6 * 4


async def test_a_cancelled_run_is_reported_abandoned_not_ok(runner: Runner, sandbox: Sandbox) -> None:
    """A run cancelled in its wait logs run.finished with ok=False and every server abandoned."""
    assert len(sandbox.state.events("created")) == 0
    poll_sleep = runner._sleep

    async def cancel_at_the_first_poll(seconds: float) -> None:
        task.cancel()
        await poll_sleep(seconds)

    runner._sleep = cancel_at_the_first_poll
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(runner.run(job(), SLOT))
        with pytest.raises(asyncio.CancelledError):
            await task
    finished = [entry for entry in logs if entry["event"] == "run.finished"]
    assert len(finished) == 1
    assert finished[0]["ok"] is False
    assert finished[0]["status"] == "abandoned"
    assert finished[0]["abandoned"] == len(SERVERS)
    assert deleted_ids(sandbox) == []


class YieldingWrites(httpx.AsyncBaseTransport):
    """The sandbox, where a POST or DELETE first lets every other ready task run, as waiting on a
    network does; ``on_write`` is told when one goes on, and how many are on the wire."""

    def __init__(self, inner: httpx.AsyncBaseTransport, on_write: Any) -> None:
        self.inner = inner
        self.on_write = on_write
        self.writing = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method not in ("POST", "DELETE"):
            return await self.inner.handle_async_request(request)
        self.writing += 1
        try:
            for _ in range(5):
                await asyncio.sleep(0)
            self.on_write(request.method, self.writing)
            return await self.inner.handle_async_request(request)
        finally:
            self.writing -= 1


async def test_servers_are_worked_on_as_their_requests_go_out_not_all_up_front(
    sandbox_transport: httpx.ASGITransport, sandbox_api_url: str, sandbox: Sandbox, time: SandboxTime
) -> None:
    """A server's own work takes CPU (checking its listing for the slot's backup, planning and logging
    its keeps: for a thousand servers, seconds): a few workers each take a server, send its requests,
    then take the next, so that requests start at once instead of after the whole fleet's work."""
    planned_at_deletes: list[int] = []
    creating: list[int] = []
    with structlog.testing.capture_logs() as logs:

        def note(method: str, writing: int) -> None:
            if method == "POST":
                creating.append(writing)
            else:
                planned_at_deletes.append(len({e["server_id"] for e in logs if e["event"] == "backup.kept"}))

        transport = YieldingWrites(sandbox_transport, note)
        async with sandbox_client(sandbox, sandbox_api_url, transport, time) as client:
            runner = sandbox_runner(client, time)
            runner.workers = 2
            report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    assert report.totals()["created"] == 5
    assert report.totals()["deleted"] == 5 * 4
    assert max(creating) <= 2, creating  # not all five servers' creates at once
    assert planned_at_deletes[0] <= 2, planned_at_deletes  # not all five planned before the first delete
    assert planned_at_deletes[-1] == 5


async def test_a_slot_backup_written_with_seconds_is_adopted(runner: Runner, sandbox: Sandbox) -> None:
    """The slot's marker may carry ``:00`` seconds: still this slot's backup, adopted, not duplicated."""
    adopted = sandbox.state.add_backup(1, description="nightly [rotator:nightly@2025-01-16T03:00:00Z]")
    sandbox.state.add_backup(2, description="nightly [rotator:nightly@2025-01-16T03:01Z]")  # another slot
    sandbox.state.add_backup(3, description="nightly [rotator:nightly2@2025-01-16T03:00Z]")  # another policy
    report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    by_server = {r.server_id: r for r in report.servers}
    assert by_server[1].adopted
    assert by_server[1].backup is not None
    assert by_server[1].backup.id == adopted.id
    assert not by_server[2].adopted
    assert not by_server[3].adopted
    assert report.totals()["created"] == 4


class OneServerUnlistable(httpx.AsyncBaseTransport):
    """The sandbox, except that listings of ``server_id`` answer 503 (every retry too): from the start,
    or only once a backup of it was created (``after_create``)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, server_id: int, *, after_create: bool) -> None:
        self.inner = inner
        self.server_id = server_id
        self.broken = not after_create
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and f'"server_id":{self.server_id}' in request.content.decode().replace(
            " ", ""
        ):
            self.broken = True
        if (
            self.broken
            and request.method == "GET"
            and request.url.params.get("server_id") == str(self.server_id)
        ):
            self.refused += 1
            return httpx.Response(503, json={"detail": "Service temporarily unavailable."})
        return await self.inner.handle_async_request(request)


async def run_with_server_unlistable(
    sandbox_transport: httpx.ASGITransport,
    sandbox_api_url: str,
    sandbox: Sandbox,
    time: SandboxTime,
    *,
    after_create: bool,
) -> tuple[Any, OneServerUnlistable]:
    transport = OneServerUnlistable(sandbox_transport, 3, after_create=after_create)
    async with sandbox_client(sandbox, sandbox_api_url, transport, time, retry_attempts=2) as client:
        report = await sandbox_runner(client, time).run(
            job(retention=Retention(keep_last=3), wait_timeout=timedelta(minutes=10)), SLOT
        )
    return report, transport


async def test_a_server_whose_listing_fails_fails_alone(
    sandbox_transport: httpx.ASGITransport, sandbox_api_url: str, sandbox: Sandbox, time: SandboxTime
) -> None:
    """Per-server listings (cheaper here than the account's 6 pages): server 3's cannot be read, so
    server 3 gets no backup and loses none, and the other four servers' runs go through."""
    before = {b.id for b in sandbox.state.backups(server_id=3)}
    report, transport = await run_with_server_unlistable(
        sandbox_transport, sandbox_api_url, sandbox, time, after_create=False
    )
    assert transport.refused > 0
    by_server = {r.server_id: r for r in report.servers}
    assert by_server[3].outcome is Outcome.FAILED
    assert "listing failed, nothing done" in by_server[3].error
    assert {b.id for b in sandbox.state.backups(server_id=3)} == before  # nothing made, nothing deleted
    for sid in (1, 2, 4, 5):
        assert by_server[sid].outcome is Outcome.OK, report.summary_line()
        assert len(by_server[sid].deleted) == 10 + 1 - 3


async def test_a_wait_that_times_out_says_why_its_polls_failed(
    sandbox_transport: httpx.ASGITransport,
    sandbox_api_url: str,
    sandbox: Sandbox,
    time: SandboxTime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Server 3's backup takes an hour and its listings fail from its create on: once the others are
    done it is polled alone (its own listing), waited for until the wait_timeout, and fails naming the
    last poll's error, keeping all its backups; the others complete and are pruned."""
    create = sandbox.state.create_backup

    def an_hour_for_server_3(server_id: int, description: str | None = None, **options: Any) -> Any:
        if server_id == 3:
            options["seconds"] = 3600
        return create(server_id, description, **options)

    monkeypatch.setattr(sandbox.state, "create_backup", an_hour_for_server_3)
    report, _ = await run_with_server_unlistable(
        sandbox_transport, sandbox_api_url, sandbox, time, after_create=True
    )
    by_server = {r.server_id: r for r in report.servers}
    assert by_server[3].outcome is Outcome.FAILED
    assert "after the wait_timeout (its last poll failed:" in by_server[3].error
    assert "503" in by_server[3].error or "unavailable" in by_server[3].error.lower()
    assert by_server[3].deleted == []
    assert len(sandbox.state.backups(server_id=3)) == 10 + 1
    for sid in (1, 2, 4, 5):
        assert by_server[sid].outcome is Outcome.OK, report.summary_line()
