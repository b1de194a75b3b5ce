"""The runner's create and prune path, promise by promise (the in-process sandbox, its clock).

Each test names the promise it checks about what a run creates or deletes:
the deletes sent and in what order, when a prune stops, what a result reports.
The fixtures are tests/test_runner_faults.py's (2 servers, 10 owned nightly
backups each, keep_last 3, the clock frozen just after the 03:00 slot).
"""

from __future__ import annotations

import httpx
import pytest

from rotator.planner import Rail
from rotator.runner import Outcome, Runner
from rotator.sandbox import Sandbox
from tests.test_runner_faults import (  # noqa: F401 - fixtures, found by name
    SLOT,
    Hooked,
    api_deletes,
    fixture_client,
    fixture_hooked,
    fixture_runner,
    fixture_sandbox_options,
    fixture_time,
    job,
    owned,
    posts,
)


def oldest_first(sandbox: Sandbox, server_id: int) -> list[int]:
    return [b.id for b in sorted(owned(sandbox, server_id), key=lambda b: (b.created_at, b.id))]


def delete_id(request: httpx.Request) -> int | None:
    if request.method != "DELETE":
        return None
    return int(request.url.path.rstrip("/").rsplit("/", 1)[1])


async def test_a_run_creates_one_backup_keeps_the_newest_and_deletes_the_rest(
    runner: Runner, sandbox: Sandbox
) -> None:
    """One create per server; keep_last 3 keeps the new backup and the 2 newest old ones; the 8 oldest
    are deleted, and the result says so: created 1, not adopted, attempt 1, kept 3, deleted those 8."""
    before = {sid: oldest_first(sandbox, sid) for sid in (1, 2)}
    report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    assert posts(sandbox) == 2
    for result in report.servers:
        sid = result.server_id
        assert result.outcome is Outcome.OK
        assert (result.created, result.adopted, result.attempt) == (1, False, 1)
        assert result.kept == 3
        assert sorted(result.deleted) == sorted(before[sid][:8])
        assert result.backup is not None
        assert result.backup.status == "completed"
        assert oldest_first(sandbox, sid) == [*before[sid][8:], result.backup.id]
    assert sorted(d["id"] for d in api_deletes(sandbox)) == sorted(before[1][:8] + before[2][:8])


async def test_a_second_run_adopts_its_slots_backup_and_creates_nothing(
    runner: Runner, sandbox: Sandbox
) -> None:
    """The same slot again: the completed backup is adopted (created 0, adopted), nothing more deleted."""
    first = await runner.run(job(), SLOT)
    assert first.ok, first.summary_line()
    deletes = len(api_deletes(sandbox))
    again = await runner.run(job(), SLOT)
    assert again.ok, again.summary_line()
    assert posts(sandbox) == 2
    assert len(api_deletes(sandbox)) == deletes
    for before, result in zip(first.servers, again.servers, strict=True):
        assert (result.created, result.adopted, result.attempt, result.kept) == (0, True, 1, 3)
        assert result.deleted == []
        assert result.backup is not None
        assert before.backup is not None
        assert result.backup.id == before.backup.id


async def test_a_backup_gone_before_its_delete_counts_as_deleted_and_the_prune_goes_on(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """A third party deletes a backup just before rotator's DELETE of it: the 404 is success, it is
    reported deleted, and the deletes after it are still sent."""
    gone: list[int] = []

    def delete_first_by_hand(request: httpx.Request) -> None:
        backup_id = delete_id(request)
        if backup_id is not None and not gone:
            gone.append(backup_id)
            sandbox.state.delete_backup(backup_id)

    hooked.before.append(delete_first_by_hand)
    old = oldest_first(sandbox, 1)
    report = await runner.run(job(servers=(1,)), SLOT)
    assert report.ok, report.summary_line()
    (result,) = report.servers
    assert gone
    assert gone[0] in result.deleted
    assert sorted(result.deleted) == sorted(old[:8])
    assert len(oldest_first(sandbox, 1)) == 3


async def test_a_refused_delete_stops_the_prune_of_that_server(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """A DELETE the API keeps refusing (5xx): the server fails naming that backup, no delete after it
    is sent, and only the deletes before it are reported."""
    seen: list[int] = []

    def refuse_the_third(request: httpx.Request) -> None:
        backup_id = delete_id(request)
        if backup_id is not None and backup_id not in seen:
            seen.append(backup_id)
            if len(seen) == 3:
                sandbox.update_faults(error_rate=1.0)  # this DELETE and its retries fail

    hooked.before.append(refuse_the_third)
    old = oldest_first(sandbox, 1)
    report = await runner.run(job(servers=(1,)), SLOT)
    sandbox.update_faults(error_rate=0.0)
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert f"delete of backup {seen[2]} failed" in (result.error or "")
    assert result.deleted == seen[:2]
    assert len(seen) == 3  # nothing after the refused one was tried
    assert [d["id"] for d in api_deletes(sandbox)] == seen[:2]
    assert len(oldest_first(sandbox, 1)) == len(old) + 1 - 2


async def test_a_shutdown_between_deletes_sends_no_more(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """Abandon set while a DELETE is in flight: that delete finishes, no other is started, and the
    server is abandoned (not ok, not failed)."""
    seen: list[int] = []

    def shutdown_at_the_first(request: httpx.Request) -> None:
        backup_id = delete_id(request)
        if backup_id is not None:
            seen.append(backup_id)
            runner.abandon.set()

    hooked.before.append(shutdown_at_the_first)
    report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.ABANDONED
    assert result.error == "shutdown before every delete was sent"
    assert result.deleted == seen == [d["id"] for d in api_deletes(sandbox)]
    assert len(seen) == 1


async def test_a_dry_run_reports_its_would_deletes_and_touches_nothing(
    runner: Runner, sandbox: Sandbox
) -> None:
    """Dry run: no create, no delete; the 8 oldest are reported blocked by the dry-run rail, 3 kept
    (the 10 old backups only: there is no new one)."""
    old = oldest_first(sandbox, 1)
    report = await runner.run(job(servers=(1,)), SLOT, dry_run=True)
    assert report.ok, report.summary_line()
    (result,) = report.servers
    assert posts(sandbox) == 0
    assert api_deletes(sandbox) == []
    assert (result.created, result.deleted, result.kept) == (0, [], 3)
    assert sorted(b.decision.backup.id for b in result.blocked) == sorted(old[:7])
    assert {b.rail for b in result.blocked} == {Rail.DRY_RUN}
    assert oldest_first(sandbox, 1) == old


@pytest.mark.parametrize("limit", [1, 5])
async def test_max_deletes_per_run_sends_that_many_oldest_first(
    runner: Runner, sandbox: Sandbox, limit: int
) -> None:
    """max_deletes_per_run N: the N oldest due are deleted, the rest reported blocked, none sent."""
    old = oldest_first(sandbox, 1)
    report = await runner.run(job(servers=(1,), max_deletes_per_run=limit), SLOT)
    (result,) = report.servers
    assert sorted(result.deleted) == sorted(old[:limit])
    assert sorted(b.decision.backup.id for b in result.blocked) == sorted(old[limit:8])
    assert [d["id"] for d in api_deletes(sandbox)] == result.deleted
