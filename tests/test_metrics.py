"""Metrics: names, labels and values after runs against the in-process sandbox, API exchanges, the
fleet gauges, their seeding from the API (a restart), and the cost of a large fleet's text."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import httpx
import pytest
import structlog
from apscheduler.triggers.base import BaseTrigger
from prometheus_client.parser import text_string_to_metric_families

from rotator import errors
from rotator.config import load_config
from rotator.inventory import Inventory
from rotator.markers import make_marker
from rotator.metrics import (
    ABANDONED,
    CONTENT_TYPE,
    FAILED,
    OK,
    RAILS,
    Metrics,
    PolicyWatch,
    latest_attempt_failed,
    newest_success,
    route_of,
    run_outcome,
)
from rotator.models import Backup, ServerRef
from rotator.planner import Rail
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Outcome, Runner, RunReport, ServerResult
from rotator.sandbox import Sandbox, SandboxOptions
from rotator.schedule import cron_trigger, interval_trigger
from rotator.scheduler import jobs_from_config
from rotator.telemetry import policy_watch, seed_metrics
from tests.sandbox_clients import SandboxTime, sandbox_client, sandbox_runner

NOW = datetime(2025, 1, 16, 3, 0, 30, tzinfo=UTC)
SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
SERVERS = (1, 2, 3)
FINISHED = 1_736_996_400.0  # the wall clock the metrics read at the end of a run


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """3 servers with 10 owned nightly backups each, clock frozen just after the 03:00 slot."""
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


@pytest.fixture(name="runner")
async def fixture_runner(
    sandbox_transport: httpx.ASGITransport, sandbox_api_url: str, sandbox: Sandbox
) -> AsyncIterator[Runner]:
    """A Runner on the in-process sandbox, on the sandbox's clock, without retry waits."""
    clock = SandboxTime(sandbox)
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, clock) as client:
        yield sandbox_runner(client, clock)


WATCH = PolicyWatch("nightly", SERVERS, max_age=26 * 3600.0)


@pytest.fixture(name="metrics")
def fixture_metrics() -> Metrics:
    """Metrics in a registry of their own, with a fixed wall clock, per-server series on, watching
    the nightly policy of 3 servers."""
    return Metrics(wall_clock=lambda: FINISHED, per_server=True, policies=[WATCH])


def job(**changes: object) -> JobSpec:
    keep = changes.pop("keep_last", 7)
    assert isinstance(keep, int)
    policy = Policy("nightly", Retention(keep_last=keep), servers=SERVERS)
    return JobSpec(policy, description="nightly {date}", **changes)  # type: ignore[arg-type]


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered text format, parsed back: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


async def test_a_successful_run(runner: Runner, metrics: Metrics) -> None:
    """created, deleted, the run's outcome and each server's last success, with their labels."""
    report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    metrics.observe_run(report)
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok", dry_run="false") == 1
    assert value(metrics, "rotator_backups_created_total", policy="nightly") == 3
    assert value(metrics, "rotator_backups_deleted_total", policy="nightly") == 3 * 4  # 10 + 1 new, keep 7
    assert value(metrics, "rotator_backups_failed_total", policy="nightly") == 0
    for sid in SERVERS:
        assert (
            value(metrics, "rotator_last_success_timestamp_seconds", policy="nightly", server_id=str(sid))
            == FINISHED
        )
    assert value(metrics, "rotator_run_duration_seconds_count", policy="nightly", dry_run="false") == 1
    assert (
        value(metrics, "rotator_run_duration_seconds_sum", policy="nightly", dry_run="false")
        == report.duration
    )
    assert value(metrics, "rotator_servers", policy="nightly") == 3
    assert value(metrics, "rotator_servers_failing", policy="nightly") == 0
    assert value(metrics, "rotator_servers_overdue", policy="nightly") == 0
    assert value(metrics, "rotator_oldest_last_success_timestamp_seconds", policy="nightly") == FINISHED


async def test_a_failed_run(runner: Runner, sandbox: Sandbox, metrics: Metrics) -> None:
    """Every new backup fails: outcome failed, one failure per server, no last success."""
    sandbox.update_faults(fail_rate=1.0)
    report = await runner.run(job(), SLOT)
    metrics.observe_run(report)
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="failed", dry_run="false") == 1
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok", dry_run="false") == 0
    assert value(metrics, "rotator_backups_failed_total", policy="nightly") == 3
    assert value(metrics, "rotator_backups_deleted_total", policy="nightly") == 0
    assert not any(name == "rotator_last_success_timestamp_seconds" for name, _ in samples(metrics))
    assert value(metrics, "rotator_servers_failing", policy="nightly") == 3
    assert value(metrics, "rotator_servers_overdue", policy="nightly") == 3  # none ever succeeded
    assert value(metrics, "rotator_oldest_last_success_timestamp_seconds", policy="nightly") == 0


async def test_blocked_deletes_by_rail(runner: Runner, metrics: Metrics) -> None:
    """max_deletes_per_run 2 with 9 deletes wanted per server: 7 blocked by that rail on each."""
    report = await runner.run(job(keep_last=2, max_deletes_per_run=2), SLOT)
    metrics.observe_run(report)
    assert value(metrics, "rotator_backups_deleted_total", policy="nightly") == 3 * 2
    blocked = {"policy": "nightly", "rail": "max_deletes_per_run"}
    assert value(metrics, "rotator_backups_blocked_total", dry_run="false", **blocked) == 21
    assert value(metrics, "rotator_deletes_held_back", **blocked) == 21
    assert value(metrics, "rotator_deletes_held_back", policy="nightly", rail="dry_run") == 0
    metrics.observe_run(await runner.run(job(keep_last=2, max_deletes_per_run=100), SLOT))
    assert value(metrics, "rotator_deletes_held_back", **blocked) == 0  # the latest run held none back
    assert value(metrics, "rotator_backups_blocked_total", dry_run="false", **blocked) == 21


async def test_a_dry_run_counts_but_is_no_success(runner: Runner, metrics: Metrics) -> None:
    """Labelled dry_run="true"; would-be deletes blocked by dry_run; no last success, nothing held back."""
    report = await runner.run(job(), SLOT, dry_run=True)
    metrics.observe_run(report)
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok", dry_run="true") == 1
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok", dry_run="false") == 0
    # 3 servers, each: the 4 a real run would delete (its new backup counted in the plan)
    assert (
        value(metrics, "rotator_backups_blocked_total", policy="nightly", rail="dry_run", dry_run="true")
        == 3 * 4
    )
    assert value(metrics, "rotator_backups_created_total", policy="nightly") == 0
    assert value(metrics, "rotator_backups_adopted_total", policy="nightly") == 0
    assert not any(name == "rotator_last_success_timestamp_seconds" for name, _ in samples(metrics))
    assert value(metrics, "rotator_deletes_held_back", policy="nightly", rail="dry_run") == 0
    assert value(metrics, "rotator_servers_overdue", policy="nightly") is None  # still nothing known


async def test_a_second_run_adopts(runner: Runner, metrics: Metrics) -> None:
    """The same slot again: adopted, not created; counters add up over runs."""
    metrics.observe_run(await runner.run(job(), SLOT))
    metrics.observe_run(await runner.run(job(), SLOT))
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok", dry_run="false") == 2
    assert value(metrics, "rotator_backups_created_total", policy="nightly") == 3
    assert value(metrics, "rotator_backups_adopted_total", policy="nightly") == 3


def test_an_abandoned_run() -> None:
    """A run cut short by shutdown (and nothing failed) is labelled abandoned."""
    metrics = Metrics(wall_clock=lambda: FINISHED, per_server=True)
    servers = [ServerResult(1), ServerResult(2, outcome=Outcome.ABANDONED, error="shutdown")]
    metrics.observe_run(RunReport("weekly", SLOT, False, servers, duration=2.0))
    assert value(metrics, "rotator_runs_total", policy="weekly", outcome="abandoned", dry_run="false") == 1
    assert value(metrics, "rotator_servers_failing", policy="weekly") == 0  # abandoned is not failed
    assert (
        value(metrics, "rotator_last_success_timestamp_seconds", policy="weekly", server_id="1") == FINISHED
    )
    assert value(metrics, "rotator_last_success_timestamp_seconds", policy="weekly", server_id="2") is None


def test_api_requests_retries_and_rate_limits(metrics: Metrics) -> None:
    """Requests by method, route and status with durations; retries by method; 429s; authentication."""
    metrics.observe_request("GET", "/api/v1/backups/", "200", 0.2)
    metrics.observe_request("GET", "/api/v1/backups/", "200", 0.3)
    metrics.observe_request("DELETE", route_of("/api/v1/backups/42/"), "429", 0.01)
    metrics.observe_retry("DELETE")
    metrics.observe_rate_limited()
    metrics.set_authenticated(True)
    get = {"method": "GET", "route": "/api/v1/backups/"}
    assert value(metrics, "rotator_api_requests_total", status="200", **get) == 2
    assert value(metrics, "rotator_api_request_duration_seconds_count", **get) == 2
    assert value(metrics, "rotator_api_request_duration_seconds_sum", **get) == pytest.approx(0.5)
    assert value(metrics, "rotator_api_request_duration_seconds_bucket", le="0.25", **get) == 1
    assert (
        value(
            metrics,
            "rotator_api_requests_total",
            method="DELETE",
            route="/api/v1/backups/{id}/",
            status="429",
        )
        == 1
    )
    assert value(metrics, "rotator_api_retries_total", method="DELETE") == 1
    assert value(metrics, "rotator_api_rate_limited_total") == 1
    assert value(metrics, "rotator_api_authenticated") == 1
    metrics.set_authenticated(False)
    assert value(metrics, "rotator_api_authenticated") == 0


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api/v1/backups/", "/api/v1/backups/"),
        ("/api/v1/backups/123/", "/api/v1/backups/{id}/"),
        ("/api/v1/servers/7/restore?x=1", "/api/v1/servers/{id}/restore"),
        ("/api/v1/backups/?page=3&server=12", "/api/v1/backups/"),
        ("/api/v2x/backups", "/api/v2x/backups"),
    ],
)
def test_route_of_keeps_cardinality_low(path: str, route: str) -> None:
    """Ids and queries never become label values."""
    assert route_of(path) == route


def test_registries_are_isolated() -> None:
    """Two Metrics share nothing (and nothing lands in prometheus_client's global registry)."""
    first, second = Metrics(), Metrics()
    first.observe_rate_limited()
    assert value(first, "rotator_api_rate_limited_total") == 1
    assert value(second, "rotator_api_rate_limited_total") == 0


def test_render_is_prometheus_text() -> None:
    """render() is the text format its content type names, with HELP and TYPE lines."""
    text = Metrics(wall_clock=time.time, per_server=True, policies=[WATCH]).render().decode()
    assert CONTENT_TYPE.startswith("text/plain; version=")
    assert "# TYPE rotator_runs_total counter" in text
    assert "# TYPE rotator_last_success_timestamp_seconds gauge" in text
    assert "# TYPE rotator_servers_overdue gauge" in text
    assert "# TYPE rotator_api_request_duration_seconds histogram" in text


def test_outcome_labels_are_the_runners() -> None:
    """The label values are runner.Outcome's, but for unknown: a run is ok, failed or abandoned."""
    assert {outcome.value for outcome in Outcome} == {OK, FAILED, ABANDONED, "unknown"}
    assert {run_outcome(RunReport("p", SLOT, False, [ServerResult(1, outcome=o)])) for o in Outcome} == {
        OK,
        FAILED,
        ABANDONED,
    }


def results(*outcomes: Outcome) -> list[ServerResult]:
    return [ServerResult(sid, outcome=outcome) for sid, outcome in enumerate(outcomes, start=1)]


@pytest.mark.parametrize(
    ("outcomes", "label"),
    [
        ((), OK),
        ((Outcome.OK, Outcome.OK), OK),
        ((Outcome.OK, Outcome.ABANDONED), ABANDONED),
        ((Outcome.ABANDONED,), ABANDONED),
        ((Outcome.OK, Outcome.FAILED), FAILED),
        ((Outcome.UNKNOWN,), FAILED),
        ((Outcome.OK, Outcome.UNKNOWN), FAILED),
        ((Outcome.ABANDONED, Outcome.UNKNOWN), FAILED),
        ((Outcome.ABANDONED, Outcome.FAILED), FAILED),
        ((Outcome.UNKNOWN, Outcome.FAILED, Outcome.ABANDONED), FAILED),
    ],
)
def test_run_outcome(outcomes: tuple[Outcome, ...], label: str) -> None:
    """failed (a failure or an unknown create) beats abandoned, which beats ok."""
    assert run_outcome(RunReport("nightly", SLOT, False, results(*outcomes))) == label


def test_a_run_with_an_unknown_create_counts_as_failed() -> None:
    """rotator_runs_total{outcome="failed"}, never "unknown": alerts on failed runs see it."""
    metrics = Metrics(wall_clock=lambda: FINISHED, per_server=True)
    metrics.observe_run(RunReport("weekly", SLOT, False, results(Outcome.OK, Outcome.UNKNOWN), duration=1.0))
    assert value(metrics, "rotator_runs_total", policy="weekly", outcome="failed", dry_run="false") == 1
    assert value(metrics, "rotator_runs_total", policy="weekly", outcome="unknown", dry_run="false") is None
    assert value(metrics, "rotator_servers_failing", policy="weekly") == 1
    assert (
        value(metrics, "rotator_last_success_timestamp_seconds", policy="weekly", server_id="1") == FINISHED
    )
    assert value(metrics, "rotator_last_success_timestamp_seconds", policy="weekly", server_id="2") is None


def test_importable_below_the_runner() -> None:
    """metrics and health import nothing of the runner, so the API client may report to them."""
    code = "import sys, rotator.health, rotator.metrics; print('rotator.runner' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# -- the fleet's gauges, and a restart ------------------------------------------------------


def owned(backup_id: int, server: int, slot: datetime, status: str = "completed", attempt: int = 1) -> Backup:
    """A backup of ``server`` that the nightly policy made for ``slot`` (created a minute after it)."""
    return Backup(
        id=backup_id,
        server=ServerRef(id=server, name=f"server-{server}"),
        backup_type="manual",
        status=status,
        size_mb=10,
        created_at=slot + timedelta(minutes=1),
        description=f"nightly {make_marker('nightly', slot, attempt)}",
    )


DAY = timedelta(days=1)


def listing() -> dict[int, list[Backup]]:
    """What the API lists: server 1 backed up last night; server 2's last night failed (its newest
    completed backup is from the night before); server 3 has no backup of the policy at all."""
    last_night = SLOT
    return {
        1: [owned(11, 1, last_night - DAY), owned(12, 1, last_night)],
        2: [owned(21, 2, last_night - DAY), owned(22, 2, last_night, status="failed")],
        3: [
            Backup(
                id=31,
                server=ServerRef(id=3, name="server-3"),
                backup_type="manual",
                status="completed",
                created_at=last_night,
                description="by hand",
            )
        ],
    }


def test_newest_success_reads_the_marker_not_the_clock_of_the_api() -> None:
    """The newest completed owned backup's slot; failed, unowned and other policies' backups count not."""
    backups = listing()
    assert newest_success(backups[1], "nightly") == SLOT.timestamp()
    assert newest_success(backups[2], "nightly") == (SLOT - DAY).timestamp()
    assert newest_success(backups[3], "nightly") is None
    assert newest_success(backups[1], "weekly") is None


def test_latest_attempt_failed() -> None:
    """Failing when the newest attempt (by slot, then attempt) failed; not once a retry worked."""
    backups = listing()
    assert not latest_attempt_failed(backups[1], "nightly")
    assert latest_attempt_failed(backups[2], "nightly")
    assert not latest_attempt_failed(backups[3], "nightly")
    retried = [*backups[2], owned(23, 2, SLOT, attempt=2)]
    assert not latest_attempt_failed(retried, "nightly")


def test_a_restart_reads_the_state_back_from_the_api() -> None:
    """A new process seeded from the API reports what the old one did: the oldest last success, the
    failing and the overdue servers, each server's last success (the alerts keep firing)."""
    now = SLOT.timestamp() + 12 * 3600
    watch = PolicyWatch("nightly", SERVERS, max_age=26 * 3600.0)
    restarted = Metrics(wall_clock=lambda: now, per_server=True, policies=[watch])
    # before the listing is read: no claim (a firing alert keeps firing meanwhile, keep_firing_for)
    for name in ("servers_overdue", "servers_failing", "oldest_last_success_timestamp_seconds"):
        assert value(restarted, f"rotator_{name}", policy="nightly") is None
    assert value(restarted, "rotator_servers", policy="nightly") == 3
    restarted.seed("nightly", listing())
    assert value(restarted, "rotator_servers", policy="nightly") == 3
    assert value(restarted, "rotator_servers_failing", policy="nightly") == 1
    assert value(restarted, "rotator_servers_overdue", policy="nightly") == 2  # 2: 36 h ago; 3: never
    assert value(restarted, "rotator_oldest_last_success_timestamp_seconds", policy="nightly") == 0
    assert value(restarted, "rotator_policy_max_age_seconds", policy="nightly") == 26 * 3600
    per_server = "rotator_last_success_timestamp_seconds"
    assert value(restarted, per_server, policy="nightly", server_id="1") == SLOT.timestamp()
    assert value(restarted, per_server, policy="nightly", server_id="2") == (SLOT - DAY).timestamp()
    assert value(restarted, per_server, policy="nightly", server_id="3") is None
    later = Metrics(wall_clock=lambda: SLOT.timestamp() + 20 * 3600, policies=[watch])
    later.seed("nightly", {1: listing()[1], 2: listing()[2], 3: [owned(32, 3, SLOT)]})
    assert value(later, "rotator_servers_overdue", policy="nightly") == 1  # server 2: 44 h ago
    assert value(later, "rotator_oldest_last_success_timestamp_seconds", policy="nightly") == (
        (SLOT - DAY).timestamp()
    )


def test_a_seed_never_undoes_what_a_run_reported() -> None:
    """A run's outcome, once recorded, wins over a listing read before it (the daemon's catch-up)."""
    metrics = Metrics(wall_clock=lambda: FINISHED, policies=[WATCH])
    metrics.observe_run(RunReport("nightly", SLOT, False, results(Outcome.OK, Outcome.FAILED, Outcome.OK)))
    metrics.seed("nightly", listing())  # says 1 is fine, 2 failing, 3 never succeeded
    assert value(metrics, "rotator_servers_failing", policy="nightly") == 1  # server 2, as its run said
    assert value(metrics, "rotator_oldest_last_success_timestamp_seconds", policy="nightly") == (
        (SLOT - DAY).timestamp()  # server 2's last success, from the listing; 1 and 3 at FINISHED
    )
    assert value(metrics, "rotator_servers_overdue", policy="nightly") == 0


def test_every_counter_starts_at_zero() -> None:
    """Each watched policy's counters exist at 0 for every outcome and rail, so increase() sees the
    first failure after a start; dry-run policies under their own label."""
    dry = PolicyWatch("trial", (9,), dry_run=True)
    metrics = Metrics(policies=[WATCH, dry])
    for outcome in (OK, FAILED, ABANDONED):
        assert value(metrics, "rotator_runs_total", policy="nightly", outcome=outcome, dry_run="false") == 0
        assert value(metrics, "rotator_runs_total", policy="trial", outcome=outcome, dry_run="true") == 0
    for rail in RAILS:
        assert (
            value(metrics, "rotator_backups_blocked_total", policy="nightly", rail=rail, dry_run="false") == 0
        )
    for name in ("created", "adopted", "deleted", "failed"):
        assert value(metrics, f"rotator_backups_{name}_total", policy="nightly") == 0
    assert value(metrics, "rotator_run_duration_seconds_count", policy="nightly", dry_run="false") == 0
    assert value(metrics, "rotator_servers_overdue", policy="trial") is None  # no max age: not watched


def test_rails_are_the_planners() -> None:
    """The rails counted from 0 are exactly planner.Rail's."""
    assert set(RAILS) == {rail.value for rail in Rail}


def test_no_created_series() -> None:
    """prometheus_client's _created gauges are off: they doubled the series and no alert reads them."""
    metrics = Metrics(policies=[WATCH])
    metrics.observe_request("GET", "/api/v1/backups/", "200", 0.1)
    names = [name for name, _ in samples(metrics)]
    assert names
    assert [name for name in names if name.endswith("_created")] == []


def test_per_server_series_are_off_by_default() -> None:
    """Without per_server, no series carries a server_id, whatever the fleet; with it, one per server."""
    report = RunReport("nightly", SLOT, False, results(*[Outcome.OK] * 50))
    plain = Metrics(wall_clock=lambda: FINISHED)
    plain.observe_run(report)
    assert "server_id" not in plain.render().decode()
    assert value(plain, "rotator_servers", policy="nightly") == 50
    detailed = Metrics(wall_clock=lambda: FINISHED, per_server=True)
    detailed.observe_run(report)
    names = [name for name, _ in samples(detailed)]
    assert names.count("rotator_last_success_timestamp_seconds") == 50


def test_overdue_follows_the_clock() -> None:
    """A server is overdue once its last success is older than the policy's max age."""
    clock = [FINISHED]
    metrics = Metrics(wall_clock=lambda: clock[0], policies=[PolicyWatch("nightly", SERVERS, max_age=3600.0)])
    metrics.observe_run(RunReport("nightly", SLOT, False, results(Outcome.OK, Outcome.OK, Outcome.OK)))
    assert value(metrics, "rotator_servers_overdue", policy="nightly") == 0
    clock[0] = FINISHED + 3600
    assert value(metrics, "rotator_servers_overdue", policy="nightly") == 0
    clock[0] = FINISHED + 3601
    assert value(metrics, "rotator_servers_overdue", policy="nightly") == 3


def test_a_reload_forgets_servers_and_policies_that_left() -> None:
    """watch() again: a dropped policy's gauges go, a dropped server leaves its policy's gauges."""
    metrics = Metrics(
        wall_clock=lambda: FINISHED, per_server=True, policies=[WATCH, PolicyWatch("old", (7,))]
    )
    metrics.observe_run(RunReport("nightly", SLOT, False, results(Outcome.OK, Outcome.FAILED, Outcome.OK)))
    metrics.watch([PolicyWatch("nightly", (1, 3), max_age=WATCH.max_age)])
    assert value(metrics, "rotator_servers", policy="nightly") == 2
    assert value(metrics, "rotator_servers_failing", policy="nightly") == 0
    assert value(metrics, "rotator_servers", policy="old") is None
    ids = {dict(labels).get("server_id") for name, labels in samples(metrics) if "server_id" in dict(labels)}
    assert ids == {"1", "3"}


def test_authenticated_is_absent_until_the_api_answers() -> None:
    """No 0 before the first answer: a token-rejected alert must not fire on a process just started."""
    metrics = Metrics()
    assert value(metrics, "rotator_api_authenticated") is None
    metrics.set_authenticated(True)
    assert value(metrics, "rotator_api_authenticated") == 1


def test_gzip_render_is_the_same_text() -> None:
    """render_gzip() is render() compressed."""
    metrics = Metrics(wall_clock=lambda: FINISHED, policies=[WATCH])
    assert gzip.decompress(metrics.render_gzip()) == metrics.render()


def test_render_in_a_thread_while_runs_are_recorded() -> None:
    """Rendering in a worker thread while the loop records runs raises nothing and parses."""
    metrics = Metrics(wall_clock=lambda: FINISHED, per_server=True, policies=[WATCH])
    stop = threading.Event()
    failures: list[BaseException] = []

    def render() -> None:
        try:
            while not stop.is_set():
                list(text_string_to_metric_families(metrics.render().decode()))
        except BaseException as exc:  # pragma: no cover - what the test looks for
            failures.append(exc)

    worker = threading.Thread(target=render)
    worker.start()
    try:
        for number in range(300):
            outcomes = [Outcome.OK] * (number % 40 + 1)
            metrics.observe_run(RunReport(f"p{number % 7}", SLOT, False, results(*outcomes)))
    finally:
        stop.set()
        worker.join()
    assert failures == []


GRACE = timedelta(hours=2) * 3 + timedelta(minutes=10) * 2  # 3 attempts' waits and 2 retry delays


@pytest.mark.parametrize(
    ("schedule", "max_age"),
    [
        pytest.param(cron_trigger("0 3 * * *", "UTC"), DAY + GRACE, id="nightly"),
        pytest.param(cron_trigger("0 3 * * 1-5", "UTC"), 3 * DAY + GRACE, id="weekdays: the weekend"),
        pytest.param(
            cron_trigger("0 3 * * *", "UTC", timedelta(minutes=30)),
            DAY + GRACE + timedelta(minutes=30),
            id="jitter",
        ),
        pytest.param(interval_trigger(timedelta(hours=6), "UTC"), timedelta(hours=6) + GRACE, id="interval"),
        pytest.param(cron_trigger("30 2 * * *", "Europe/Berlin"), DAY + timedelta(hours=1) + GRACE, id="dst"),
    ],
)
def test_max_age_is_the_longest_gap_and_a_grace(schedule: BaseTrigger, max_age: timedelta) -> None:
    """A policy's max age: the longest gap between slots around now, plus jitter, waits and retries."""
    now = datetime(2025, 10, 24, 12, 0, tzinfo=UTC)  # Berlin's autumn change two nights later
    watch = policy_watch(job(), schedule, now=now)
    assert watch.max_age == max_age.total_seconds()
    assert watch.servers == SERVERS
    assert not watch.dry_run


def test_prune_only_and_unscheduled_policies_have_no_max_age() -> None:
    """Nothing is overdue where rotator makes no backups on a schedule."""
    now = datetime(2025, 10, 24, 12, 0, tzinfo=UTC)
    assert policy_watch(job(create=False), cron_trigger("0 3 * * *", "UTC"), now=now).max_age is None
    assert policy_watch(job(), None, now=now).max_age is None
    assert policy_watch(job(dry_run=True), None, now=now).dry_run
    assert policy_watch(job(), None, now=now, dry_run=True).dry_run


def test_watch_takes_any_iterable() -> None:
    """A generator of watches (as the daemon passes) gives every policy its counters at 0."""
    metrics = Metrics()
    metrics.watch(watch for watch in [WATCH])
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome=FAILED, dry_run="false") == 0
    assert value(metrics, "rotator_servers", policy="nightly") == 3


class DownInventory:
    """Stands in for the Inventory while the API is down."""

    async def read(self, server_ids: object) -> object:
        raise errors.ServerError("the API is down", method="GET", path="/api/v1/backups/", status=503)


async def test_a_listing_that_fails_at_start_claims_nothing() -> None:
    """The API down at start: logged, and the fleet gauges stay absent (not 'never backed up') until
    a run or a later listing tells."""
    metrics = Metrics(wall_clock=lambda: FINISHED, policies=[WATCH])
    with structlog.testing.capture_logs() as logs:
        await seed_metrics(metrics, cast(Inventory, DownInventory()), [WATCH])
    assert [entry["event"] for entry in logs] == ["metrics.seed_failed"]
    assert value(metrics, "rotator_servers_overdue", policy="nightly") is None
    assert value(metrics, "rotator_oldest_last_success_timestamp_seconds", policy="nightly") is None
    metrics.observe_run(RunReport("nightly", SLOT, False, results(Outcome.OK, Outcome.OK, Outcome.FAILED)))
    assert value(metrics, "rotator_servers_overdue", policy="nightly") == 1  # 3 failed: no success known
    assert value(metrics, "rotator_servers_failing", policy="nightly") == 1


def test_max_age_takes_the_policys_status_grace(tmp_path: Path) -> None:
    """status_grace, when set, is the grace of the max age too: rotator status and the alerts agree."""
    now = datetime(2025, 10, 24, 12, 0, tzinfo=UTC)
    nightly = cron_trigger("0 3 * * *", "UTC")
    assert (
        policy_watch(job(), nightly, now=now, grace=timedelta(hours=3)).max_age
        == (DAY + timedelta(hours=3)).total_seconds()
    )
    config = tmp_path / "rotator.yaml"
    config.write_text(
        "policies:\n"
        "  - {name: nightly, servers: [1], schedule: {cron: '0 3 * * *'}, retention: {keep_last: 3},"
        " status_grace: 3h}\n"
        "  - {name: plain, servers: [2], schedule: {cron: '0 3 * * *'}, retention: {keep_last: 3}}\n",
        encoding="utf-8",
    )
    jobs = {item.name: item for item in jobs_from_config(load_config(config))}
    ages = {
        name: policy_watch(item.spec, item.trigger, now=now, grace=item.status_grace).max_age
        for name, item in jobs.items()
    }
    assert ages == {
        "nightly": (DAY + timedelta(hours=3)).total_seconds(),
        "plain": (DAY + GRACE).total_seconds(),
    }
