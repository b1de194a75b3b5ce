"""The runner's typed events and their hook: what observers are told, in what order, and that a failing
observer never fails a run (the in-process sandbox of tests/test_runner_faults.py: 2 servers, 10 owned
nightly backups each, keep_last 3)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
import structlog

from rotator.eventlog import log_event
from rotator.events import (
    NOT_KEPT,
    BackupCompleted,
    BackupCreated,
    BackupDeleted,
    BackupFailed,
    BackupKept,
    Event,
    Events,
    Outcome,
    PruneHeldBack,
    RunFinished,
    RunKey,
    RunStarted,
    ServerPruned,
    Status,
    status_of,
)
from rotator.metrics import Metrics
from rotator.observability import configure_logging, debug_logged
from rotator.pings import Pinger, RunPings
from rotator.runner import Runner
from rotator.sandbox import Sandbox
from rotator.telemetry import Telemetry
from tests.test_pings import Monitor
from tests.test_runner_faults import (  # noqa: F401 - fixtures, found by name
    SLOT,
    SLOT_MARKER,
    fixture_client,
    fixture_hooked,
    fixture_runner,
    fixture_sandbox_options,
    fixture_time,
    job,
    owned,
)


def oldest_first(backup: Any) -> tuple[Any, int]:
    return backup.created_at, backup.id


class Recorder:
    """An observer that keeps every event it is told."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


async def test_a_run_tells_its_observers_each_step_in_order(runner: Runner, sandbox: Sandbox) -> None:
    """run.started first and run.finished last; per server: created, completed, its keeps, its deletes
    (oldest first), then one server.pruned whose counts are the result's; every event names the run."""
    before = {
        sid: [b.id for b in sorted(owned(sandbox, sid), key=lambda b: (b.created_at, b.id))] for sid in (1, 2)
    }
    seen = Recorder()
    report = await runner.run(job(), SLOT, observers=[seen])
    assert report.ok, report.summary_line()
    assert isinstance(seen.events[0], RunStarted)
    assert seen.events[0].servers == (1, 2)
    assert isinstance(seen.events[-1], RunFinished)
    assert {event.run for event in seen.events} == {RunKey("nightly", SLOT, False)}
    for result in report.servers:
        sid = result.server_id
        mine = [e for e in seen.events if getattr(e, "server_id", None) == sid]
        kinds = [type(e) for e in mine]
        assert kinds == [BackupCreated, BackupCompleted] + [BackupKept] * 3 + [BackupDeleted] * 8 + [
            ServerPruned
        ]
        created, completed = mine[0], mine[1]
        assert result.backup is not None
        assert (created.backup_id, created.attempt) == (result.backup.id, 1)
        assert created.description.endswith(f"{SLOT_MARKER}]") or SLOT_MARKER in created.description
        assert completed.backup_id == result.backup.id
        kept = [e.backup_id for e in mine if isinstance(e, BackupKept)]
        assert set(kept) == {result.backup.id, *before[sid][-2:]}
        assert all(e.reasons for e in mine if isinstance(e, BackupKept))
        deleted = [e for e in mine if isinstance(e, BackupDeleted)]
        assert [e.backup_id for e in deleted] == before[sid][:8]
        assert all(e.created_at is not None and not e.already_gone for e in deleted)
        assert {e.reasons for e in deleted} == {()}  # the decision's own: no rule kept them
        (pruned,) = [e for e in mine if isinstance(e, ServerPruned)]
        assert pruned.kept == result.kept == 3
        assert [d.backup_id for d in pruned.deleted] == result.deleted == before[sid][:8]
        assert {d.reasons for d in pruned.deleted} == {(NOT_KEPT,)}
        assert pruned.held_back == ()
    finished = seen.events[-1]
    assert isinstance(finished, RunFinished)
    assert finished == report.finished()
    assert finished.totals() == report.totals()
    assert finished.summary() == report.summary_line()


async def test_events_are_frozen(runner: Runner) -> None:
    """An observer cannot change what the next observer is told."""
    seen = Recorder()
    await runner.run(job(servers=(1,)), SLOT, observers=[seen])
    finished = seen.of(RunFinished)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        finished.duration = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        finished.servers[0].outcome = Outcome.FAILED
    assert isinstance(finished.servers, tuple)
    assert isinstance(finished.servers[0].deleted, tuple)


async def test_the_cap_is_told_as_held_back_deletes(runner: Runner) -> None:
    """max_deletes_per_run 5 of 8: five BackupDeleted, three PruneHeldBack with the rail, and server.pruned
    lists both."""
    seen = Recorder()
    report = await runner.run(job(servers=(1,), max_deletes_per_run=5), SLOT, observers=[seen])
    held = seen.of(PruneHeldBack)
    assert [e.rail for e in held] == ["max_deletes_per_run"] * 3
    assert all(e.reasons for e in held)
    (pruned,) = seen.of(ServerPruned)
    assert len(pruned.deleted) == 5
    assert [h.backup_id for h in pruned.held_back] == [e.backup_id for e in held]
    assert [h.rail for h in report.finished().servers[0].blocked] == ["max_deletes_per_run"] * 3


async def test_a_dry_run_is_told_as_one(runner: Runner, sandbox: Sandbox) -> None:
    """Every event of a dry run says so; its would-be deletes are held back by the dry_run rail."""
    seen = Recorder()
    await runner.run(job(servers=(1,), create=False), SLOT, dry_run=True, observers=[seen])
    assert all(event.dry_run for event in seen.events)
    assert not seen.of(BackupDeleted)
    assert {e.rail for e in seen.of(PruneHeldBack)} == {"dry_run"}
    assert len(owned(sandbox, 1)) == 10


async def test_a_failed_backup_is_told(runner: Runner, sandbox: Sandbox) -> None:
    """The slot's backup failing at the provider: BackupFailed with the API's status, and no prune."""
    sandbox.state.add_backup(1, status="failed", description=f"x {SLOT_MARKER}")
    sandbox.state.add_backup(2, status="in_progress", description=f"stuck {SLOT_MARKER}")
    seen = Recorder()
    report = await runner.run(job(retries=0, wait_timeout=timedelta(minutes=5)), SLOT, observers=[seen])
    failed = seen.of(BackupFailed)
    assert [(e.server_id, e.status) for e in failed] == [(2, "wait_timeout")]
    assert not seen.of(ServerPruned)
    assert report.finished().status is Status.FAILED


async def test_an_observer_that_raises_never_fails_the_run(runner: Runner, sandbox: Sandbox) -> None:
    """A sync and an async observer raising at every event: the run is ok and prunes all the same, the
    observers after them are still told everything, and each failure is logged with its observer."""

    def broken(event: Event) -> None:
        raise RuntimeError("observer bug")

    async def broken_later(event: Event) -> None:
        raise ValueError

    seen = Recorder()
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT, observers=[broken, broken_later, seen])
    assert report.ok, report.summary_line()
    assert len(report.servers[0].deleted) == 8
    assert isinstance(seen.events[-1], RunFinished)
    failures = [e for e in logs if e["event"] == "observer.failed"]
    assert len(failures) == 2 * len(seen.events)
    assert {f["observer"].rsplit(".", 1)[-1] for f in failures} == {"broken", "broken_later"}
    assert {f["log_level"] for f in failures} == {"error"}
    assert failures[0] == {
        "event": "observer.failed",
        "log_level": "error",
        "observer": failures[0]["observer"],
        "on": "run.started",
        "error": "RuntimeError: observer bug",
    }
    assert failures[1]["error"] == "ValueError"


async def test_an_observer_is_awaited_before_the_run_goes_on() -> None:
    """An awaitable an observer returns is awaited in order: the next observer is told after it."""
    order: list[str] = []

    async def slow(event: Event) -> None:
        order.append("slow begins")
        order.append("slow ends")

    def quick(event: Event) -> None:
        order.append("quick")

    await Events([slow, quick]).emit(RunStarted(RunKey("p", SLOT, False), servers=(1,)))
    assert order == ["slow begins", "slow ends", "quick"]


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ((), Status.OK),
        ((Outcome.OK, Outcome.OK), Status.OK),
        ((Outcome.OK, Outcome.ABANDONED), Status.ABANDONED),
        ((Outcome.ABANDONED, Outcome.UNKNOWN), Status.UNKNOWN),
        ((Outcome.UNKNOWN, Outcome.FAILED, Outcome.ABANDONED), Status.FAILED),
    ],
)
def test_a_runs_status_is_its_worst_outcome(outcomes: tuple[Outcome, ...], status: Status) -> None:
    """failed over unknown over abandoned over ok."""
    assert status_of(outcomes) is status


def test_the_runner_module_still_offers_outcome_and_status() -> None:
    """Code that imports them from the runner gets the events' own enums."""
    from rotator import runner  # noqa: PLC0415 - the import is what is tested

    assert runner.Outcome is Outcome
    assert runner.Status is Status


# -- item 8: logs at fleet scale --------------------------------------------------------------


async def run_logged(runner: Runner, level: str, **changes: Any) -> list[dict[str, Any]]:
    stream = io.StringIO()
    configure_logging(level, "json", stream)
    try:
        await runner.run(job(**changes), SLOT)
    finally:
        structlog.reset_defaults()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_at_info_a_servers_prune_is_one_line(runner: Runner, sandbox: Sandbox) -> None:
    """At info: no backup.kept, one server.pruned per server with kept and deleted counts and each
    deleted id with its reasons, beside the backup.deleted lines."""
    lines = await run_logged(runner, "info", max_deletes_per_run=6)
    assert not [line for line in lines if line["event"] == "backup.kept"]
    pruned = {line["server_id"]: line for line in lines if line["event"] == "server.pruned"}
    assert set(pruned) == {1, 2}
    for sid, line in pruned.items():
        deleted = [d for d in lines if d["event"] == "backup.deleted" and d["server_id"] == sid]
        assert line["level"] == "info"
        assert line["policy"] == "nightly"
        assert (line["kept"], line["deleted"], line["held_back"]) == (3, 6, 2)
        assert [d["id"] for d in line["deleted_backups"]] == [d["backup_id"] for d in deleted]
        assert [d["reasons"] for d in line["deleted_backups"]] == [[NOT_KEPT]] * 6
        assert [h["rail"] for h in line["held_back_backups"]] == ["max_deletes_per_run"] * 2


async def test_at_debug_each_keep_has_its_line(runner: Runner) -> None:
    """At debug the per-backup backup.kept lines are back, each with its reasons."""
    lines = await run_logged(runner, "debug", servers=(1,))
    kept = [line for line in lines if line["event"] == "backup.kept"]
    assert len(kept) == 3
    assert all(line["level"] == "debug" and line["reasons"] and line["server_id"] == 1 for line in kept)
    (pruned,) = [line for line in lines if line["event"] == "server.pruned"]
    assert "held_back" not in pruned


@pytest.mark.parametrize(
    ("wrapper", "written"),
    [
        (structlog.make_filtering_bound_logger(logging.INFO), False),
        (structlog.make_filtering_bound_logger(logging.DEBUG), True),
        (structlog.BoundLogger, True),  # no level of its own: the lines may be written
    ],
    ids=["filtering-info", "filtering-debug", "unfiltered"],
)
def test_debug_lines_are_asked_for_by_the_configured_level(wrapper: Any, written: bool) -> None:
    """The runner's per-backup keeps skip even the logger's binding when debug lines are not written."""
    structlog.configure(wrapper_class=wrapper)
    try:
        assert debug_logged() is written
        with structlog.testing.capture_logs() as logs:
            kept = BackupKept(RunKey("nightly", SLOT, False), server_id=1, backup_id=7, reasons=("last 1",))
            log_event(kept)
        assert [line["event"] for line in logs] == (["backup.kept"] if written else [])
    finally:
        structlog.reset_defaults()


# -- the subscribers: metrics, pings, health ---------------------------------------------------


async def test_metrics_count_a_run_from_its_finished_event(runner: Runner) -> None:
    """Metrics subscribed to a run's events: one run counted by outcome, its creates and deletes."""
    metrics = Metrics()
    await runner.run(job(), SLOT, observers=[metrics.observe])
    text = metrics.render().decode()
    assert 'rotator_runs_total{dry_run="false",outcome="ok",policy="nightly"} 1.0' in text
    assert 'rotator_backups_created_total{policy="nightly"} 2.0' in text
    assert 'rotator_backups_deleted_total{policy="nightly"} 16.0' in text


async def test_pings_follow_the_run_through_its_events(runner: Runner) -> None:
    """RunPings: URL/start at run.started, before the run reads anything; URL with the headline at
    run.finished; a dry run pings nothing."""
    monitor = Monitor()
    try:
        url = f"{monitor.url}/ping/check"
        async with Pinger(timeout=5.0) as pinger:
            seen = Recorder()
            report = await runner.run(job(), SLOT, observers=[RunPings(pinger, url), seen])
            await runner.run(job(), SLOT, dry_run=True, observers=[RunPings(pinger, url)])
    finally:
        monitor.close()
    start, done = monitor.pings
    assert start.path == "/ping/check/start"
    assert start.body == "policy nightly: run of slot 2025-01-16T03:00:00+00:00 started"
    assert done.path == "/ping/check"
    assert done.body == report.finished().headline()


def test_the_tokens_acceptance_is_recorded_once() -> None:
    """Readiness and the rotator_api_authenticated gauge read one record: a 401 turns both, a 200 both
    back; before any answer the gauge is absent (not 0: no alert on a process just started) and
    readiness gives the token the benefit of the doubt."""
    telemetry = Telemetry()

    def gauge() -> float | None:
        return telemetry.metrics.registry.get_sample_value("rotator_api_authenticated")

    assert (telemetry.health.last_auth_ok, gauge()) == (None, None)
    telemetry.on_response("GET", "/api/v1/backups/", 401, 0.01)
    assert (telemetry.health.last_auth_ok, gauge()) == (False, 0.0)
    telemetry.on_response("GET", "/api/v1/backups/", None, 0.01)  # no answer: says nothing of the token
    assert (telemetry.health.last_auth_ok, gauge()) == (False, 0.0)
    telemetry.on_response("GET", "/api/v1/backups/", 200, 0.01)
    assert (telemetry.health.last_auth_ok, gauge()) == (True, 1.0)
