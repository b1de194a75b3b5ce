"""The runner's create and prune path, promise by promise (the in-process sandbox, its clock).

Each test names the promise it checks about what a run creates or deletes:
the deletes sent and in what order, when a prune stops, what a result reports.
The fixtures are tests/test_runner_faults.py's (2 servers, 10 owned nightly
backups each, keep_last 3, the clock frozen just after the 03:00 slot).
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import httpx
import pytest
import structlog

from rotator.api import BackupsClient
from rotator.planner import Rail
from rotator.runner import Outcome, Runner
from rotator.sandbox import Sandbox
from tests.sandbox_clients import SandboxTime, sandbox_runner
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
    """Dry run: no create, no delete; the 8 oldest, as a real run deletes, are reported blocked by the
    dry-run rail; kept: the 2 newest old ones and the backup the run would create (counted in the plan)."""
    old = oldest_first(sandbox, 1)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT, dry_run=True)
    would = [e for e in logs if e["event"] == "backup.would_delete"]
    assert sorted(e["backup_id"] for e in would) == sorted(old[:8])
    assert all((e["server_id"], e["rail"], e["log_level"]) == (1, "dry_run", "info") for e in would)
    assert report.ok, report.summary_line()
    (result,) = report.servers
    assert posts(sandbox) == 0
    assert api_deletes(sandbox) == []
    assert (result.created, result.deleted, result.kept) == (0, [], 2)
    assert result.actions is not None
    assert result.actions.would_create is not None
    assert result.actions.would_create.description == job().describe(SLOT, 1)
    assert sorted(b.decision.backup.id for b in result.blocked) == sorted(old[:8])
    assert {b.rail for b in result.blocked} == {Rail.DRY_RUN}
    assert oldest_first(sandbox, 1) == old


@pytest.mark.parametrize("limit", [1, 5])
async def test_max_deletes_per_run_sends_that_many_oldest_first(
    runner: Runner, sandbox: Sandbox, limit: int
) -> None:
    """max_deletes_per_run N: the N oldest due are deleted, the rest reported blocked, none sent."""
    old = oldest_first(sandbox, 1)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,), max_deletes_per_run=limit), SLOT)
    (result,) = report.servers
    held = [e for e in logs if e["event"] == "prune.blocked"]
    assert sorted(e["backup_id"] for e in held) == sorted(old[limit:8])
    assert all(e["server_id"] == 1 and e["rail"] == result.blocked[0].rail.value for e in held)
    assert sorted(result.deleted) == sorted(old[:limit])
    assert sorted(b.decision.backup.id for b in result.blocked) == sorted(old[limit:8])
    assert [d["id"] for d in api_deletes(sandbox)] == result.deleted


class LoseCreateAnswers(httpx.AsyncBaseTransport):
    """Creates whose answer is lost (a 502 instead): sent on (``forward``), maybe with another
    description (the API renaming the backup), or never reaching the API."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, *, forward: bool = True, description: str | None = None
    ) -> None:
        self.inner = inner
        self.forward = forward
        self.description = description
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or self.lost >= self.limit:
            return await self.inner.handle_async_request(request)
        self.lost += 1
        if self.forward:
            if self.description is not None:
                body = json.loads(request.content)
                body["description"] = self.description
                request = httpx.Request(
                    "POST",
                    request.url,
                    headers={k: v for k, v in request.headers.items() if k != "content-length"},
                    json=body,
                )
            await self.inner.handle_async_request(request)
        return httpx.Response(502, json={"detail": "Bad gateway."})

    limit = 1


async def test_a_lost_create_answer_is_found_by_its_marker_and_counted_as_this_runs(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """The create went through but its answer was lost: the backup is found by the slot's marker and
    counted as this run's own create (created 1, not adopted), no second POST, and the prune runs."""
    hooked.inner = LoseCreateAnswers(hooked.inner)
    old = oldest_first(sandbox, 1)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    assert report.ok, report.summary_line()
    (result,) = report.servers
    assert posts(sandbox) == 1
    assert (result.created, result.adopted, result.attempt) == (1, False, 1)
    assert [e for e in logs if e["event"] == "backup.adopted"] == []  # its own, not someone else's
    assert sorted(result.deleted) == sorted(old[:8])


async def test_a_lost_create_answer_with_a_renamed_backup_is_unknown_and_not_repeated(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """The create went through, its answer was lost and the API dropped the marker from the
    description: a new manual backup without the marker appears, so the outcome is unknown; no second
    create, nothing deleted."""
    hooked.inner = LoseCreateAnswers(hooked.inner, description="renamed by the API")
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.UNKNOWN
    assert "without the policy's marker" in (result.error or "")
    assert posts(sandbox) == 1
    assert api_deletes(sandbox) == []
    assert [
        (e["log_level"], e["server_id"])
        for e in logs
        if e["event"] == "backup.create_unknown" and e.get("reason") == "unmarked new backup"
    ] == [("error", 1)]
    assert (result.error or "").startswith(
        "a create's outcome was unknown and a new backup without the policy's marker appeared: "
        "not creating another (did the API change the description?)"
    )


@pytest.mark.parametrize(
    ("backup_type", "description", "outcome", "creates"),
    [
        ("automatic", None, Outcome.OK, 1),  # the provider's own: not a sign of our create
        ("manual", "someone's manual backup", Outcome.UNKNOWN, 0),
        ("manual", "nightly by hand [rotator:other@2025-01-16T03:00Z]", Outcome.UNKNOWN, 0),
        # this policy's marker of another slot: not ours of this slot renamed, so the create is sent again
        ("manual", "nightly 2025-01-15 [rotator:nightly@2025-01-15T03:00Z]", Outcome.OK, 1),
    ],
)
async def test_a_create_lost_before_the_api_and_a_new_backup_appearing(
    runner: Runner,
    sandbox: Sandbox,
    hooked: Hooked,
    backup_type: str,
    description: str | None,
    outcome: Outcome,
    creates: int,
) -> None:
    """The create's answer is lost and it never reached the API; meanwhile a backup appears. An
    automatic one is no sign of our create: after the quiet period the create is sent again. A manual
    one without this policy's marker (none, or another policy's) may be ours renamed: unknown, no
    second create."""
    lose = LoseCreateAnswers(hooked.inner, forward=False)
    hooked.inner = lose

    def a_backup_appears(request: httpx.Request) -> None:
        if lose.lost == 1 and request.method == "GET" and not appeared:
            appeared.append(sandbox.state.add_backup(1, backup_type=backup_type, description=description))

    appeared: list[object] = []
    hooked.before.append(a_backup_appears)
    report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert appeared
    assert result.outcome is outcome, result.error
    assert posts(sandbox) == creates
    if outcome is Outcome.UNKNOWN:
        assert api_deletes(sandbox) == []
    else:
        assert result.created == 1
        assert len(owned(sandbox, 1)) == 3  # keep_last 3: the new backup and the 2 newest before it


async def test_no_view_fresh_enough_after_three_reads_deletes_nothing(
    client: BackupsClient, time: SandboxTime, sandbox: Sandbox
) -> None:
    """A prune plans only on a view no older than max_view_age: it reads the server again up to 3
    times, and with none fresh enough the server fails and nothing is deleted."""
    runner = sandbox_runner(client, time, poll_max=60, max_view_age=-1.0)  # no view is ever fresh
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    blocked = [e for e in logs if e["event"] == "prune.blocked"]
    assert blocked == [{"event": "prune.blocked", "log_level": "error", "rail": "stale_view", "server_id": 1}]
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert result.error == "no view of the server fresh enough to prune on; nothing deleted"
    assert runner.views_read == 3
    assert api_deletes(sandbox) == []
    assert result.deleted == []


async def test_a_view_exactly_max_view_age_old_is_fresh_enough(
    client: BackupsClient, time: SandboxTime, sandbox: Sandbox
) -> None:
    """max_view_age is inclusive: on a frozen clock the view the completion was seen in is 0 s old,
    so with max_view_age 0 the prune runs on it without reading again."""
    runner = sandbox_runner(client, time, poll_max=60, max_view_age=0.0)
    old = oldest_first(sandbox, 1)
    report = await runner.run(job(servers=(1,)), SLOT)
    assert report.ok, report.summary_line()
    assert runner.views_read == 0
    assert sorted(report.servers[0].deleted) == sorted(old[:8])


async def test_the_logs_name_each_create_keep_and_delete(runner: Runner, sandbox: Sandbox) -> None:
    """The log says what was done, one event per backup: backup.created (id, description),
    backup.completed, backup.kept (with its reasons) and backup.deleted (created_at, reasons)."""
    old = sorted(owned(sandbox, 1), key=lambda b: (b.created_at, b.id))
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    assert report.ok, report.summary_line()
    (result,) = report.servers
    assert result.backup is not None
    new_id = result.backup.id
    by_event: dict[str, list[dict[str, object]]] = {}
    for entry in logs:
        by_event.setdefault(str(entry["event"]), []).append(entry)
    (created,) = by_event["backup.created"]
    assert created["log_level"] == "info"
    assert created["server_id"] == 1
    assert created["backup_id"] == new_id
    assert str(created["description"]).startswith("nightly 2025-01-16")
    assert str(created["description"]).endswith("[rotator:nightly@2025-01-16T03:00Z]")
    assert [(e["server_id"], e["backup_id"]) for e in by_event["backup.completed"]] == [(1, new_id)]
    kept = {e["backup_id"]: e for e in by_event["backup.kept"]}
    assert set(kept) == {new_id, old[-1].id, old[-2].id}
    assert all(e["server_id"] == 1 and e["reasons"] for e in kept.values())
    deleted = {e["backup_id"]: e for e in by_event["backup.deleted"]}
    assert set(deleted) == {b.id for b in old[:8]}
    for backup in old[:8]:
        entry = deleted[backup.id]
        assert entry["log_level"] == "info"
        assert entry["server_id"] == 1
        assert entry["created_at"] == backup.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        assert isinstance(entry["reasons"], list)
    assert "backup.create_failed" not in by_event
    assert "prune.blocked" not in by_event


async def test_a_manual_backup_listed_before_the_create_is_no_sign_of_it(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """A manual backup without a marker that was already listed before the create is not taken for
    our create renamed: the create's answer lost before the API, it is sent again after the quiet
    period, and the run completes."""
    sandbox.state.add_backup(1, description="made by hand last week", created_at=SLOT - timedelta(days=7))
    hooked.inner = LoseCreateAnswers(hooked.inner, forward=False)
    report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.OK, result.error
    assert posts(sandbox) == 1
    assert result.created == 1
