"""The daemon's decisions, without processes: catch-up order (the end-to-end tests run the real thing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from prometheus_client.parser import text_string_to_metric_families

from rotator import errors
from rotator.inventory import View
from rotator.markers import mark_description
from rotator.metrics import Metrics
from rotator.models import Backup
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Runner, RunReport, ServerResult
from rotator.schedule import interval_trigger
from rotator.scheduler import Daemon, ScheduledJob
from rotator.telemetry import Telemetry

START = datetime(2025, 1, 16, 3, 0, 10, tzinfo=UTC)


class RecordingRunner:
    """Stands in for Runner.run: records the slots it was asked to run."""

    def __init__(self) -> None:
        self.slots: list[datetime] = []
        self.servers: list[Any] = []

    async def run(self, spec: JobSpec, slot: datetime, *, servers: Any = None, **_: Any) -> RunReport:
        self.slots.append(slot)
        self.servers.append(servers)
        return RunReport(spec.name, slot, dry_run=False, servers=[])


def make_daemon(now: list[datetime]) -> tuple[Daemon, ScheduledJob, RecordingRunner]:
    policy = Policy("hourly", Retention(keep_last=3), servers=(1,))
    job = ScheduledJob(JobSpec(policy), interval_trigger(timedelta(hours=1), "UTC"))
    runner = RecordingRunner()
    daemon = Daemon([job], cast(Runner, runner), wall_clock=lambda: now[0])
    return daemon, job, runner


async def test_a_catch_up_overtaken_by_a_newer_slot_is_skipped() -> None:
    """Catch-up of 03:00 that only got the policy's lock after 04:00 came leaves it to 04:00's run."""
    now = [START]
    daemon, job, runner = make_daemon(now)
    slot = job.slot_for(START)
    now[0] = START + timedelta(hours=1)
    with structlog.testing.capture_logs() as logs:
        await daemon._run(job, slot, catching_up=True)
    assert runner.slots == []
    assert [entry["event"] for entry in logs] == ["catch_up.superseded"]


async def test_a_catch_up_still_current_runs() -> None:
    """The same catch-up within its own slot runs it."""
    now = [START]
    daemon, job, runner = make_daemon(now)
    slot = job.slot_for(START)
    now[0] = START + timedelta(minutes=30)
    await daemon._run(job, slot, catching_up=True)
    assert runner.slots == [slot]


class PartlyListing:
    """Stands in for the runner's Inventory: server 1 has the slot's backup, server 2 has none, and
    server 3's listing could not be read."""

    def __init__(self, slot: datetime) -> None:
        self.slot = slot

    async def read(self, server_ids: Any) -> tuple[dict[int, View], dict[int, errors.ApiError]]:
        done = Backup.from_api(
            {
                "id": 7,
                "server": {"id": 1, "name": "web-1"},
                "backup_type": "manual",
                "status": "completed",
                "created_at": self.slot.isoformat(),
                "description": mark_description("hourly", "hourly", self.slot),
            }
        )
        failed = errors.ServerError("the API is down", method="GET", path="/api/v1/backups/", status=503)
        views = {
            sid: View(sid, backups, read_at=0.0, source="account", pages=1, confirmed=True)
            for sid, backups in ((1, (done,)), (2, ()))
        }
        return views, {3: failed}


async def test_catch_up_runs_a_server_whose_listing_failed() -> None:
    """Not known to have its slot's backup: it is run (the run adopts one that exists), not skipped."""
    now = [START]
    policy = Policy("hourly", Retention(keep_last=3), servers=(1, 2, 3))
    job = ScheduledJob(JobSpec(policy), interval_trigger(timedelta(hours=1), "UTC"))
    runner = RecordingRunner()
    slot = job.slot_for(START)
    runner.inventory = PartlyListing(slot)  # type: ignore[attr-defined]
    daemon = Daemon([job], cast(Runner, runner), wall_clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        await daemon.catch_up(job)
    assert runner.servers == [[2, 3]]
    assert [e["server_id"] for e in logs if e["event"] == "catch_up.listing_failed"] == [3]


class FailingAttemptRunner(RecordingRunner):
    """Stands in for Runner.run: server 1's attempt failed with attempts left, as a daemon's run reports."""

    async def run(self, spec: JobSpec, slot: datetime, *, servers: Any = None, **options: Any) -> RunReport:
        self.slots.append(slot)
        self.servers.append(servers)
        self.options = options
        result = ServerResult(1)
        result.retry = servers is None
        result.fail("attempt 1 failed; attempt 2 is due in 10m")
        return RunReport(spec.name, slot, dry_run=False, servers=[result])


async def test_the_daemon_schedules_a_failed_attempts_retry_after_its_delay() -> None:
    """A run leaves the retry to the daemon (retry_in_run off); the daemon runs the slot again for the
    servers that need it, retry_delay later, and skips it once a newer slot came."""
    now = [START]
    policy = Policy("hourly", Retention(keep_last=3), servers=(1, 2))
    job = ScheduledJob(
        JobSpec(policy, retry_delay=timedelta(minutes=10)), interval_trigger(timedelta(hours=1), "UTC")
    )
    runner = FailingAttemptRunner()
    daemon = Daemon([job], cast(Runner, runner), wall_clock=lambda: now[0])
    slot = job.slot_for(START)
    await daemon._run(job, slot)
    assert runner.options["retry_in_run"] is False
    (retry,) = [j for j in daemon.scheduler.get_jobs() if j.id.endswith("#retry")]
    assert retry.trigger.run_date == START + timedelta(minutes=10)
    await daemon._retry_run("hourly", slot)
    assert runner.slots == [slot, slot]
    assert runner.servers == [None, [1]]
    # a retry that comes after the next slot began is left to that slot's run
    await daemon._run(job, slot)
    now[0] = START + timedelta(hours=1)
    await daemon._retry_run("hourly", slot)
    assert runner.slots == [slot, slot, slot]


def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(daemon.telemetry.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


class CountingListing(PartlyListing):
    """PartlyListing that counts its reads and the servers each asked for."""

    def __init__(self, slot: datetime) -> None:
        super().__init__(slot)
        self.asked: list[list[int]] = []

    async def read(self, server_ids: Any) -> tuple[dict[int, View], dict[int, errors.ApiError]]:
        self.asked.append(sorted(server_ids))
        return await super().read(server_ids)


async def test_catch_up_tells_the_metrics_what_the_api_lists() -> None:
    """The catch-up's listing seeds the last successes: server 1's slot backup counts, 2 has none."""
    now = [START]
    policy = Policy("hourly", Retention(keep_last=3), servers=(1, 2, 3))
    job = ScheduledJob(JobSpec(policy), interval_trigger(timedelta(hours=1), "UTC"))
    runner = RecordingRunner()
    slot = job.slot_for(START)
    runner.inventory = PartlyListing(slot)  # type: ignore[attr-defined]
    telemetry = Telemetry(metrics=Metrics(wall_clock=START.timestamp))
    daemon = Daemon([job], cast(Runner, runner), wall_clock=lambda: now[0], telemetry=telemetry)
    daemon._watch()
    await daemon.catch_up(job)
    assert metric(daemon, "rotator_servers", policy="hourly") == 3
    assert metric(daemon, "rotator_servers_overdue", policy="hourly") == 2  # 2: none; 3: not read
    assert metric(daemon, "rotator_oldest_last_success_timestamp_seconds", policy="hourly") == 0


async def test_policies_without_catch_up_are_read_once_for_the_metrics_when_served() -> None:
    """With a listener, the policies that do not catch up are listed at start, all in one read; with
    none (nobody can scrape), nothing is read."""
    now = [START]
    slot = interval_trigger(timedelta(hours=1), "UTC")
    jobs = [
        ScheduledJob(JobSpec(Policy(name, Retention(keep_last=3), servers=servers)), slot, catch_up=False)
        for name, servers in (("hourly", (1, 2)), ("other", (3,)))
    ]
    for listen, reads in (("127.0.0.1:0", [[1, 2, 3]]), (None, [])):
        runner = RecordingRunner()
        listing = CountingListing(START.replace(minute=0, second=0))
        runner.inventory = listing  # type: ignore[attr-defined]
        telemetry = Telemetry(metrics=Metrics(wall_clock=START.timestamp))
        daemon = Daemon(
            jobs, cast(Runner, runner), wall_clock=lambda: now[0], telemetry=telemetry, http_listen=listen
        )
        daemon._watch()
        await daemon._catch_up_all()
        assert listing.asked == reads
        assert runner.slots == []
        if listen is not None:
            assert metric(daemon, "rotator_servers_overdue", policy="hourly") == 1  # server 2: none
            assert metric(daemon, "rotator_servers_failing", policy="other") == 0
