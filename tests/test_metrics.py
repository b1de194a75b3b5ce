"""Metrics: names, labels and values after runs against the in-process sandbox, and API exchanges."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.metrics import ABANDONED, CONTENT_TYPE, FAILED, OK, Metrics, route_of, run_outcome
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Outcome, Runner, RunReport, ServerResult
from rotator.sandbox import Sandbox, SandboxOptions
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


@pytest.fixture(name="metrics")
def fixture_metrics() -> Metrics:
    """Metrics in a registry of their own, with a fixed wall clock."""
    return Metrics(wall_clock=lambda: FINISHED)


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
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok") == 1
    assert value(metrics, "rotator_backups_created_total", policy="nightly") == 3
    assert value(metrics, "rotator_backups_deleted_total", policy="nightly") == 3 * 4  # 10 + 1 new, keep 7
    assert value(metrics, "rotator_backups_failed_total", policy="nightly") == 0
    for sid in SERVERS:
        assert (
            value(metrics, "rotator_last_success_timestamp_seconds", policy="nightly", server_id=str(sid))
            == FINISHED
        )
    assert value(metrics, "rotator_run_duration_seconds_count", policy="nightly") == 1
    assert value(metrics, "rotator_run_duration_seconds_sum", policy="nightly") == report.duration


async def test_a_failed_run(runner: Runner, sandbox: Sandbox, metrics: Metrics) -> None:
    """Every new backup fails: outcome failed, one failure per server, no last success."""
    sandbox.update_faults(fail_rate=1.0)
    report = await runner.run(job(), SLOT)
    metrics.observe_run(report)
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="failed") == 1
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok") is None
    assert value(metrics, "rotator_backups_failed_total", policy="nightly") == 3
    assert value(metrics, "rotator_backups_deleted_total", policy="nightly") == 0
    assert not any(name == "rotator_last_success_timestamp_seconds" for name, _ in samples(metrics))


async def test_blocked_deletes_by_rail(runner: Runner, metrics: Metrics) -> None:
    """max_deletes_per_run 2 with 9 deletes wanted per server: 7 blocked by that rail on each."""
    report = await runner.run(job(keep_last=2, max_deletes_per_run=2), SLOT)
    metrics.observe_run(report)
    assert value(metrics, "rotator_backups_deleted_total", policy="nightly") == 3 * 2
    assert value(metrics, "rotator_backups_blocked_total", policy="nightly", rail="max_deletes_per_run") == 21


async def test_a_dry_run_counts_but_is_no_success(runner: Runner, metrics: Metrics) -> None:
    """Would-be deletes are blocked by dry_run; the last success does not move."""
    report = await runner.run(job(), SLOT, dry_run=True)
    metrics.observe_run(report)
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok") == 1
    # 3 servers, each: the 4 a real run would delete (its new backup counted in the plan)
    assert value(metrics, "rotator_backups_blocked_total", policy="nightly", rail="dry_run") == 3 * 4
    assert value(metrics, "rotator_backups_created_total", policy="nightly") == 0
    assert not any(name == "rotator_last_success_timestamp_seconds" for name, _ in samples(metrics))


async def test_a_second_run_adopts(runner: Runner, metrics: Metrics) -> None:
    """The same slot again: adopted, not created; counters add up over runs."""
    metrics.observe_run(await runner.run(job(), SLOT))
    metrics.observe_run(await runner.run(job(), SLOT))
    assert value(metrics, "rotator_runs_total", policy="nightly", outcome="ok") == 2
    assert value(metrics, "rotator_backups_created_total", policy="nightly") == 3
    assert value(metrics, "rotator_backups_adopted_total", policy="nightly") == 3


def test_an_abandoned_run() -> None:
    """A run cut short by shutdown (and nothing failed) is labelled abandoned."""
    metrics = Metrics(wall_clock=lambda: FINISHED)
    servers = [ServerResult(1), ServerResult(2, outcome=Outcome.ABANDONED, error="shutdown")]
    metrics.observe_run(RunReport("weekly", SLOT, False, servers, duration=2.0))
    assert value(metrics, "rotator_runs_total", policy="weekly", outcome="abandoned") == 1
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
    text = Metrics(wall_clock=time.time).render().decode()
    assert CONTENT_TYPE.startswith("text/plain; version=")
    assert "# TYPE rotator_runs_total counter" in text
    assert "# TYPE rotator_last_success_timestamp_seconds gauge" in text
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
    metrics = Metrics(wall_clock=lambda: FINISHED)
    metrics.observe_run(RunReport("weekly", SLOT, False, results(Outcome.OK, Outcome.UNKNOWN), duration=1.0))
    assert value(metrics, "rotator_runs_total", policy="weekly", outcome="failed") == 1
    assert value(metrics, "rotator_runs_total", policy="weekly", outcome="unknown") is None
    assert (
        value(metrics, "rotator_last_success_timestamp_seconds", policy="weekly", server_id="1") == FINISHED
    )
    assert value(metrics, "rotator_last_success_timestamp_seconds", policy="weekly", server_id="2") is None


def test_importable_below_the_runner() -> None:
    """metrics and health import nothing of the runner, so the API client may report to them."""
    code = "import sys, rotator.health, rotator.metrics; print('rotator.runner' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
