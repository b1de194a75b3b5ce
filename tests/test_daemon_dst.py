"""The daemon through Berlin's autumn night, 2025-10-26, on a clock the test drives.

That night 03:00 CEST is followed by 02:00 CET (at 01:00Z), and the hour 02:00-02:59 happens twice.
Slots used to repeat 01:30Z forever there: ``run-once`` hung and the daemon spun, starving the systemd
watchdog. By :mod:`rotator.slots`' rules ``30 2 * * *`` runs once, at its first occurrence (00:30Z),
and ``0 * * * *`` runs at 02:00 CEST (00:00Z) but not again at 02:00 CET (01:00Z).

The watchdog loop is what moves the clock here: each of its sleeps is 30 s of the night, after which
the due jobs fire. Nothing sleeps for real, and no assertion is about how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from unittest import mock

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.cron import CronTrigger

from rotator.events import Events, Observer
from rotator.health import HealthState
from rotator.notify import Notifier, Sleep
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Runner, RunReport
from rotator.schedule import cron_trigger
from rotator.scheduler import Daemon, ScheduledJob
from rotator.slots import SlotTrigger, latest_slot, next_slots, upcoming
from rotator.telemetry import Telemetry

BERLIN = "Europe/Berlin"
DUSK = datetime(2025, 10, 25, 22, 10, tzinfo=UTC)  # 00:10 CEST
DAWN = datetime(2025, 10, 26, 3, 10, tzinfo=UTC)  # 04:10 CET
BEAT = timedelta(seconds=30)  # WatchdogSec=60s: a WATCHDOG=1 every 30 s
WATCHDOG_USEC = 60_000_000


def utc(hour: int, minute: int = 0, day: int = 26) -> datetime:
    return datetime(2025, 10, day, hour, minute, tzinfo=UTC)


# Each slot of the night, once: none at 01:00Z (02:00 CET) nor at 01:30Z (02:30 CET).
EXPECTED_RUNS = [
    ("hourly", utc(23, day=25)),  # 01:00 CEST
    ("hourly", utc(0)),  # 02:00 CEST
    ("nightly", utc(0, 30)),  # 02:30 CEST
    ("hourly", utc(2)),  # 03:00 CET
    ("hourly", utc(3)),  # 04:00 CET
]


class NightClock:
    """The night's time: moves only when the watchdog sleeps."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.now = start
        self._waiting: list[tuple[datetime, asyncio.Future[None]]] = []

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - self.start).total_seconds()

    def advance(self, delta: timedelta) -> None:
        self.now += delta
        for moment, waiter in list(self._waiting):
            if moment <= self.now and not waiter.done():
                waiter.set_result(None)
        self._waiting = [(moment, waiter) for moment, waiter in self._waiting if not waiter.done()]

    async def sleep_until(self, moment: datetime) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((moment, waiter))
        await waiter


RUN_TAKES = timedelta(minutes=5)  # ten watchdog beats


class RecordingRunner:
    """Stands in for the Runner: records which policy ran which slot, and when; a run takes
    ``RUN_TAKES`` of the night (its waits for the API, during which the watchdog must go on)."""

    def __init__(self, clock: NightClock) -> None:
        self.clock = clock
        self.runs: list[tuple[str, datetime]] = []
        self.started: list[datetime] = []
        self.finished: list[datetime] = []
        self.abandon = asyncio.Event()

    async def run(
        self,
        spec: JobSpec,
        slot: datetime,
        *,
        servers: Any = None,
        dry_run: bool = False,
        now: datetime | None = None,
        observers: Iterable[Observer] = (),
        **_: Any,
    ) -> RunReport:
        self.runs.append((spec.name, slot))
        self.started.append(self.clock.now)
        await self.clock.sleep_until(self.clock.now + RUN_TAKES)
        self.finished.append(self.clock.now)
        report = RunReport(spec.name, slot, dry_run=dry_run, servers=[])
        await Events(observers).emit(report.finished())  # as a run tells its observers at its end
        return report


class RecordingNotifier(Notifier):
    """A notifier with the watchdog on that records each message (at the night's time) instead of
    sending it; its watchdog sleeps with ``sleep``."""

    def __init__(self, clock: NightClock, sleep: Sleep | None = None) -> None:
        super().__init__("@rotator-dst-test", watchdog_usec=WATCHDOG_USEC)
        self.clock = clock
        self.sleep = sleep
        self.sent: list[tuple[datetime, tuple[str, ...]]] = []

    def notify(self, *fields: str) -> bool:
        self.sent.append((self.clock.now, fields))
        return True

    async def watchdog_loop(
        self, *, on_beat: Callable[[], None] | None = None, sleep: Sleep | None = None
    ) -> None:
        await super().watchdog_loop(on_beat=on_beat, sleep=sleep or self.sleep or asyncio.sleep)

    def watchdogs(self) -> list[datetime]:
        return [when for when, fields in self.sent if fields == ("WATCHDOG=1",)]

    def statuses(self) -> list[tuple[datetime, str]]:
        return [
            (when, field) for when, fields in self.sent for field in fields if field.startswith("STATUS=")
        ]


def night_jobs() -> list[ScheduledJob]:
    jobs = []
    for name, expression in (("nightly", "30 2 * * *"), ("hourly", "0 * * * *")):
        policy = Policy(name, Retention(keep_last=3), servers=(1, 2), timezone=BERLIN)
        jobs.append(ScheduledJob(JobSpec(policy), cron_trigger(expression, BERLIN), catch_up=False))
    return jobs


def make_daemon(clock: NightClock, notifier: Notifier) -> tuple[Daemon, RecordingRunner]:
    runner = RecordingRunner(clock)
    telemetry = Telemetry(health=HealthState(monotonic=clock.monotonic))
    daemon = Daemon(
        night_jobs(), cast(Runner, runner), wall_clock=clock.wall, telemetry=telemetry, notifier=notifier
    )
    return daemon, runner


@contextmanager
def cron_steps() -> Iterator[list[int]]:
    """Counts the steps slot searches take: the calls of APScheduler's cron ``get_next_fire_time``."""
    steps = [0]
    original = CronTrigger.get_next_fire_time

    def counted(self: CronTrigger, previous: datetime | None, now: datetime) -> datetime | None:
        steps[0] += 1
        fire: datetime | None = original(self, previous, now)
        return fire

    with mock.patch.object(CronTrigger, "get_next_fire_time", counted):
        yield steps


@contextmanager
def progress_checked() -> Iterator[list[datetime]]:
    """Fails a fire time that is not after the previous one, instead of letting APScheduler's
    ``_get_run_times`` loop on it forever (the autumn-fold hang); records every fire time given."""
    fires: list[datetime] = []
    original = SlotTrigger.get_next_fire_time

    def checked(self: SlotTrigger, previous: datetime | None, now: datetime) -> datetime | None:
        fire: datetime | None = original(self, previous, now)
        assert fire is None or previous is None or fire > previous, f"{fire} after {previous}"
        if fire is not None:
            fires.append(fire)
        assert len(fires) < 1_000, "no end to the fire times"
        return fire

    with mock.patch.object(SlotTrigger, "get_next_fire_time", checked):
        yield fires


async def let_runs_finish() -> None:
    """Lets the loop run what the last tick started (a job's task, its run, the status it sends)."""
    for _ in range(20):
        await asyncio.sleep(0)


def assert_watchdog_fed_all_night(
    notifier: RecordingNotifier, health: HealthState, until: datetime = DAWN
) -> None:
    """A WATCHDOG=1 every 30 s of the night, from dusk until ``until``, runs or no runs."""
    beats = notifier.watchdogs()
    assert beats[0] == DUSK
    assert beats[-1] >= until - BEAT
    assert all(later - earlier == BEAT for earlier, later in itertools.pairwise(beats))
    assert health.heartbeat == (beats[-1] - DUSK).total_seconds()


def assert_status_names_a_future_run(notifier: RecordingNotifier) -> None:
    """Every status line after a run names a next run that is still to come, never one that was."""
    statuses = [(when, status) for when, status in notifier.statuses() if "next run " in status]
    assert len(statuses) >= len(EXPECTED_RUNS)  # one after each run (and the ready message's)
    for when, status in statuses:
        _, _, rest = status.partition("next run ")
        next_run = datetime.fromisoformat(rest.split()[1].rstrip(";").replace("Z", "+00:00"))
        assert next_run > when, status


# -- run-once, check-config and the status line at every minute of the night ---------------------


@pytest.mark.parametrize(("expression", "spacing"), [("30 2 * * *", 25), ("0 * * * *", 2)])
def test_every_minute_of_the_night(expression: str, spacing: int) -> None:
    """At any minute (and second) of the night, ``latest_slot`` and ``next_slots`` answer in a few
    steps, the latest slot is at or before now and the next one after it."""
    trigger = cron_trigger(expression, BERLIN)
    job = ScheduledJob(JobSpec(Policy("p", Retention(keep_last=1), timezone=BERLIN)), trigger)
    moment = DUSK
    while moment <= DAWN:
        ahead = list(itertools.islice(upcoming(trigger, moment), 4))
        assert all(earlier < later for earlier, later in itertools.pairwise([moment, *ahead])), ahead
        with cron_steps() as latest_steps:
            latest = latest_slot(trigger, moment)
        with cron_steps() as next_steps:
            following = next_slots(trigger, moment, 3)
        assert latest is not None
        assert latest <= moment < following[0] < following[1] < following[2]
        assert next_slots(trigger, latest, 1) == following[:1]
        assert following[0] - latest <= timedelta(hours=spacing)
        assert job.slot_for(moment) == latest
        assert latest_steps[0] <= 80, f"latest_slot at {moment}: {latest_steps[0]} steps"
        assert next_steps[0] <= 20, f"next_slots at {moment}: {next_steps[0]} steps"
        moment += timedelta(minutes=1, seconds=7)


# -- APScheduler's loop by hand ---------------------------------------------------------------


class HandScheduler:
    """Fires the daemon's jobs as APScheduler 3's ``_process_jobs`` does, at the night's time: the due
    fire times of each job from ``Job._get_run_times`` (the trigger asked for each next one), one run
    for the latest (``coalesce=True``), a task per run, and the next fire time from the last."""

    def __init__(self, daemon: Daemon, clock: NightClock) -> None:
        self.daemon = daemon
        self.clock = clock
        self.fires: dict[str, list[datetime]] = {name: [] for name in daemon.jobs}
        self.steps: list[int] = []  # the steps of each get_next_fire_time
        self.tasks: set[asyncio.Task[None]] = set()
        self.following = {name: self._next_fire(name, None) for name in daemon.jobs}

    def _next_fire(self, name: str, previous: datetime | None) -> datetime | None:
        trigger = self.daemon.jobs[name].trigger
        assert trigger is not None
        with cron_steps() as steps:
            fire: datetime | None = trigger.get_next_fire_time(previous, self.clock.now)
        self.steps.append(steps[0])
        assert fire is None or previous is None or fire > previous, f"{name}: {fire} after {previous}"
        return fire

    def process(self) -> None:
        now = self.clock.now
        for name in self.daemon.jobs:
            run_times = []
            following = self.following[name]
            while following is not None and following <= now:
                run_times.append(following)
                following = self._next_fire(name, following)
                assert len(run_times) < 100, f"{name}: no end to the fire times before {now}"
            if run_times:
                self.fires[name].extend(run_times)
                task = asyncio.ensure_future(self.daemon._scheduled_run(name))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                self.following[name] = self._next_fire(name, run_times[-1])


async def test_berlins_autumn_night_with_apschedulers_loop_by_hand() -> None:
    """Through the night, each slot runs once and on time, the watchdog is fed every 30 s, and each
    fire time the trigger gives takes a few steps."""
    clock = NightClock(DUSK)
    notifier = RecordingNotifier(clock)
    daemon, runner = make_daemon(clock, notifier)
    hand = HandScheduler(daemon, clock)
    dawn = asyncio.Event()

    async def night_passes(seconds: float) -> None:  # the watchdog's sleep
        clock.advance(timedelta(seconds=seconds))
        hand.process()
        await let_runs_finish()
        if clock.now >= DAWN:
            dawn.set()
            await asyncio.Event().wait()  # until the watchdog is cancelled

    health = daemon.telemetry.health
    watchdog = asyncio.create_task(notifier.watchdog_loop(on_beat=health.beat, sleep=night_passes))
    morning = asyncio.create_task(dawn.wait())
    await asyncio.wait({watchdog, morning}, return_when=asyncio.FIRST_COMPLETED)
    if watchdog.done():  # the night failed (a check in the hand scheduler): say why
        morning.cancel()
        watchdog.result()
    watchdog.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watchdog

    assert runner.runs == EXPECTED_RUNS
    assert hand.fires == {
        "nightly": [utc(0, 30)],
        "hourly": [slot for name, slot in EXPECTED_RUNS if name == "hourly"],
    }
    for (_, slot), started in zip(runner.runs, runner.started, strict=True):
        assert slot <= started < slot + BEAT  # at the first wake-up after its slot
    assert runner.finished == [started + RUN_TAKES for started in runner.started]
    assert_watchdog_fed_all_night(notifier, health)
    assert_status_names_a_future_run(notifier)
    assert max(hand.steps) <= 12  # a search walks at most the hour before (a gap) and the slot's own
    assert daemon.history.job_errors == daemon.history.missed == 0


# -- APScheduler's own loop -------------------------------------------------------------------


def clock_datetime(clock: NightClock) -> type[datetime]:
    """``datetime`` whose ``now()`` is the night's: APScheduler 3 reads the clock only as
    ``datetime.now(tz)``, in the scheduler (due jobs, next wake-up) and the executor (misfires)."""

    class NightDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return clock.now.astimezone(tz)

    return NightDatetime


STOP = utc(3, 2)  # a SIGTERM while the 03:00Z run is under way


async def test_berlins_autumn_night_through_daemon_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Daemon.run`` with APScheduler's own scheduler, executor and job store through the night: the
    same runs, the watchdog fed all along, no job missed or crashed, and a stop that lets the last run
    finish."""
    clock = NightClock(DUSK)
    night = clock_datetime(clock)
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", night)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", night)
    daemon: Daemon | None = None

    async def night_passes(seconds: float) -> None:  # the watchdog's sleep
        assert daemon is not None
        try:
            if clock.now >= STOP or len(runner.runs) > len(EXPECTED_RUNS):
                daemon.request_stop("SIGTERM")  # time goes on while the runs finish, until it cancels us
            clock.advance(timedelta(seconds=seconds))
            if daemon.scheduler.state == STATE_RUNNING:
                daemon.scheduler.wakeup()  # what its timer would do when the next fire time comes
            await let_runs_finish()
        except AssertionError:
            daemon.request_stop("a check failed")
            raise

    notifier = RecordingNotifier(clock, sleep=night_passes)
    daemon, runner = make_daemon(clock, notifier)
    with cron_steps() as steps, progress_checked() as fires:
        assert await daemon.run() == 0
    await let_runs_finish()

    assert runner.runs == EXPECTED_RUNS
    for (_, slot), started in zip(runner.runs, runner.started, strict=True):
        assert slot <= started < slot + BEAT
    assert runner.finished == [started + RUN_TAKES for started in runner.started]
    assert runner.finished[-1] > STOP  # the stop waited for it
    assert_watchdog_fed_all_night(notifier, daemon.telemetry.health, until=runner.finished[-1])
    assert_status_names_a_future_run(notifier)
    assert daemon.history.job_errors == daemon.history.missed == 0
    stopping = [when for when, fields in notifier.sent if fields[0] == "STOPPING=1"]
    assert len(stopping) == 1
    assert STOP <= stopping[0] < STOP + BEAT
    # the fire times APScheduler was given: the night's slots, then each job's next (02:30 CET is none)
    assert sorted(set(fires)) == [*(slot for _, slot in EXPECTED_RUNS), utc(4), utc(1, 30, day=27)]
    # every search of the night (fire times, slot_for, status lines) took a few steps
    assert steps[0] <= 25 * (len(notifier.sent) + len(runner.runs))
