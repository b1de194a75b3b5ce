"""The daemon: APScheduler wiring, catch-up after downtime, reload on SIGHUP, graceful stop.

Each policy is one APScheduler job (explicit id, ``coalesce=True``,
``max_instances=1``, a misfire grace), whose trigger fires at the policy's
slots plus jitter. A run is always named by its slot (the un-jittered time),
so its backup is the same one whichever instance or restart creates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger

from rotator import errors
from rotator.config import PolicyConfig, RotatorConfig
from rotator.coordination import Coordinator, NoCoordination, Role, pinned_term
from rotator.events import Event, Observer, RunFinished
from rotator.health import HealthServer
from rotator.models import Backup
from rotator.notifications import Notifications
from rotator.notify import Notifier
from rotator.pings import Pinger
from rotator.runner import JobSpec, Runner
from rotator.schedule import cron_trigger, interval_trigger
from rotator.slots import Action, SlotTrigger, decide, latest_slot, next_slots, whole_minutes
from rotator.telemetry import Telemetry, policy_watch, reported_run, seed_metrics

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = structlog.get_logger("rotator.daemon")


@dataclass(frozen=True)
class ScheduledJob:
    """A policy as the daemon runs it: what a run does, when it runs, and whether it catches up."""

    spec: JobSpec
    trigger: BaseTrigger | None
    catch_up: bool = True
    pings_url: str | None = None
    observers: tuple[Observer, ...] = ()  # told each run's events: the policy's notifications
    status_grace: timedelta | None = None  # how late its backup may be (status, metrics); None: the default

    @property
    def name(self) -> str:
        return self.spec.name

    def latest(self, now: datetime) -> datetime | None:
        return latest_slot(self.trigger, now) if self.trigger is not None else None

    def slot_for(self, now: datetime) -> datetime:
        """The slot a run at ``now`` belongs to: the latest scheduled time, or now to the minute."""
        if self.trigger is not None:
            slot = latest_slot(self.trigger, now)
            if slot is not None:
                return slot
        return whole_minutes(now)


@dataclass
class DaemonSettings:
    shutdown_grace: timedelta = timedelta(minutes=5)
    misfire_grace: timedelta = timedelta(hours=1)


@dataclass
class _History:
    """What the daemon knows of its runs, for its status line."""

    started: datetime | None = None
    last_runs: dict[str, RunFinished] = field(default_factory=dict)
    job_errors: int = 0
    missed: int = 0


class Daemon:
    """``rotator run``: policies on their schedules until SIGTERM/SIGINT."""

    def __init__(
        self,
        jobs: Sequence[ScheduledJob],
        runner: Runner,
        *,
        reload: Callable[[], Sequence[ScheduledJob]] | None = None,
        settings: DaemonSettings | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dry_run: bool = False,
        telemetry: Telemetry | None = None,
        notifier: Notifier | None = None,
        pinger: Pinger | None = None,
        http_listen: str | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.jobs = {job.name: job for job in jobs}
        # only the leader runs jobs and catch-up; NoCoordination: this instance always leads
        self.coordinator: Coordinator = coordinator or NoCoordination()
        self._campaign: asyncio.Task[None] | None = None
        self._acting = False
        self.runner = runner
        self._reload = reload
        self.settings = settings or DaemonSettings()
        self._wall_clock = wall_clock
        self.dry_run = dry_run
        self.telemetry = telemetry or Telemetry()
        self.notifier = notifier or Notifier(None)
        self.pinger = pinger
        self.http = (
            HealthServer(http_listen, self.telemetry.health, self.telemetry.metrics) if http_listen else None
        )
        self.history = _History()
        self._locks: dict[str, asyncio.Lock] = {}
        self._retries: dict[tuple[str, datetime], set[int]] = {}  # (policy, slot) -> servers due a retry
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._stopping = False
        # only the daemon loads APScheduler's scheduler: with its executors it imports
        # concurrent.futures and multiprocessing, some 40 ms that run-once and plan would pay for nothing
        from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415

        self.scheduler: AsyncIOScheduler = AsyncIOScheduler(timezone=UTC)
        self.scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)

    # -- lifecycle -------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        health = self.telemetry.health
        health.config_ok = True  # the daemon is only built from a configuration that loaded
        watchdog: asyncio.Task[None] | None = None
        try:
            if self.http is not None:
                await self.http.start()
            self._install(self.jobs.values())
            self._watch()
            self.scheduler.start()
            health.scheduler_running = True
            self.history.started = self._wall_clock()
            watchdog = asyncio.create_task(self.notifier.watchdog_loop(on_beat=health.beat), name="watchdog")
            log.info("daemon.started", policies=sorted(self.jobs), next_runs=self.next_runs())
            self.notifier.ready(self.status_line())
            self._campaign = asyncio.create_task(
                self.coordinator.campaign(self._on_role), name="coordination"
            )
            await self._stop.wait()
            await self._shutdown()
        finally:
            health.scheduler_running = False
            await self._end_campaign()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            if self.http is not None:
                await self.http.stop()
        return errors.EXIT_OK

    def status_line(self) -> str:
        """One line for ``systemctl status``: the next run, and how the last one went."""
        upcoming = self.next_runs()
        parts = []
        if upcoming:
            name, when = min(upcoming.items(), key=lambda item: item[1])
            parts.append(f"next run {name} {when}")
        else:
            parts.append("no scheduled runs")
        if self.history.last_runs:
            last = max(self.history.last_runs.values(), key=lambda run: run.slot)
            state = "ok" if last.ok else "FAILED"
            parts.append(f"last run {last.policy} {state}")
        return "; ".join(parts)

    def _on_role(self, role: Role) -> None:
        """The coordinator's word: acting (catch up now), or standing by (run nothing)."""
        acting = role in (Role.LEADER, Role.SINGLE)
        if role is not Role.SINGLE:
            self.telemetry.health.role = role.value
            self.telemetry.metrics.set_role(acting, reachable=role is not Role.UNREACHABLE)
        else:
            self.telemetry.metrics.set_role(True, reachable=True)
        became = acting and not self._acting
        self._acting = acting
        if became and not self._stopping:
            if role is Role.LEADER:
                log.info("daemon.leading", name=self.coordinator.name, catch_up=True)
            self._spawn(self._catch_up_all(), "catch-up")
        elif not acting and role is not Role.SINGLE:
            log.warning("daemon.standing_by", name=self.coordinator.name, role=role.value)

    async def _end_campaign(self) -> None:
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._campaign
            self._campaign = None
            await self.coordinator.release()

    def request_stop(self, why: str = "stop") -> None:
        if not self._stopping:
            log.info("daemon.stopping", signal=why, running=len(self._tasks))
            self.notifier.stopping(f"stopping: {len(self._tasks)} runs finishing")
            self._stopping = True
            self._stop.set()

    def request_reload(self) -> None:
        if self._reload is None or self._stopping:
            return
        self.notifier.reloading("reloading the configuration")
        try:
            jobs = self._reload()
        except errors.RotatorError as exc:
            log.error("config.reload_failed", error=str(exc), kept="the running configuration")
            self.notifier.ready(f"reload failed, kept the running configuration; {self.status_line()}")
            return
        self.jobs = {job.name: job for job in jobs}
        for existing in self.scheduler.get_jobs():
            if existing.id not in self.jobs:
                existing.remove()
        self._install(self.jobs.values())
        self._watch()
        log.info("config.reloaded", policies=sorted(self.jobs), next_runs=self.next_runs())
        self.notifier.ready(self.status_line())

    async def _shutdown(self) -> None:
        # Pause, not shutdown: AsyncIOExecutor.shutdown() cancels running jobs, which would cut
        # a run short without its grace (and a DELETE on the wire without its outcome logged).
        self.scheduler.pause()
        pending = {task for task in self._tasks if not task.done()}
        if pending:
            grace = self.settings.shutdown_grace.total_seconds()
            _, still = await asyncio.wait(pending, timeout=grace)
            if still:
                log.warning("daemon.grace_expired", abandoning=len(still))
                self.runner.abandon.set()  # stop waits; deletes on the wire finish, none start
                await asyncio.wait(still)
        self.scheduler.shutdown(wait=False)
        log.info("daemon.stopped")

    # -- jobs ------------------------------------------------------------------

    def _install(self, jobs: Iterable[ScheduledJob]) -> None:
        for job in jobs:
            if job.trigger is None:
                log.warning("policy.unscheduled", policy=job.name, hint="add a schedule, or use run-once")
                continue
            self.scheduler.add_job(
                self._scheduled_run,
                trigger=job.trigger,
                args=[job.name],
                id=job.name,
                name=f"policy {job.name}",
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=int(self.settings.misfire_grace.total_seconds()),
            )

    def _watch(self) -> None:
        """Tell the metrics which policies and servers there are (their counters start at 0)."""
        now = self._wall_clock()
        self.telemetry.metrics.watch(
            policy_watch(job.spec, job.trigger, now=now, dry_run=self.dry_run, grace=job.status_grace)
            for job in self.jobs.values()
        )

    def next_runs(self) -> dict[str, str]:
        now = self._wall_clock()
        result = {}
        for name, job in sorted(self.jobs.items()):
            if job.trigger is not None:
                upcoming = next_slots(job.trigger, now, 1)
                if upcoming:
                    result[name] = upcoming[0].isoformat().replace("+00:00", "Z")
        return result

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scheduled_run(self, name: str) -> None:
        if self._stopping:
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        job = self.jobs.get(name)
        if job is not None and self._may_run(job.name):
            await self._run(job, job.slot_for(self._wall_clock()))

    def _may_run(self, policy: str) -> bool:
        if self.coordinator.is_leader():
            return True
        log.info("run.skipped", policy=policy, reason="standby", role=self.coordinator.role.value)
        return False

    async def _run(
        self,
        job: ScheduledJob,
        slot: datetime,
        servers: Sequence[int] | None = None,
        *,
        catching_up: bool = False,
    ) -> None:
        lock = self._locks.setdefault(job.name, asyncio.Lock())
        async with lock:
            if self._stopping or not self._may_run(job.name):
                return
            if catching_up and job.latest(self._wall_clock()) != slot:
                # a newer slot came while this one waited for the lock: its own run covers it,
                # and a backup for the older slot now would only be out of order
                log.info("catch_up.superseded", policy=job.name, slot=slot.isoformat())
                return
            try:
                with pinned_term(self.coordinator):  # the run acts only under this leadership
                    report = await reported_run(
                        self.runner,
                        job.spec,
                        slot,
                        pings_url=job.pings_url,
                        pinger=self.pinger,
                        metrics=self.telemetry.metrics,
                        observers=[self._on_run_event, *job.observers],
                        servers=servers,
                        dry_run=self.dry_run,
                        retry_in_run=False,  # the daemon schedules retries (see _schedule_retry)
                    )
            except Exception:  # one policy's bug must not stop the others
                log.exception("run.crashed", policy=job.name)
                return
            if report.retry:
                self._schedule_retry(job, slot, report.retry)

    def _schedule_retry(self, job: ScheduledJob, slot: datetime, servers: Sequence[int]) -> None:
        """A run of ``slot`` for ``servers`` after the policy's ``retry_delay``: their next attempt."""
        due = self._retries.setdefault((job.name, slot), set())
        due.update(servers)
        when = self._wall_clock() + job.spec.retry_delay
        log.info(
            "retry.scheduled",
            policy=job.name,
            slot=slot.isoformat(),
            servers=sorted(due),
            at=when.isoformat(),
        )
        self.scheduler.add_job(
            self._retry_run,
            trigger=DateTrigger(run_date=when, timezone=UTC),
            args=[job.name, slot],
            id=f"{job.name}@{slot.isoformat()}#retry",
            name=f"policy {job.name}: retry of {slot.isoformat()}",
            replace_existing=True,
            misfire_grace_time=int(self.settings.misfire_grace.total_seconds()),
        )

    async def _retry_run(self, name: str, slot: datetime) -> None:
        servers = sorted(self._retries.pop((name, slot), set()))
        job = self.jobs.get(name)
        if self._stopping or job is None or not servers:
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # a newer slot overtook this one: its own run gives these servers their backup
        await self._run(job, slot, servers=servers, catching_up=True)

    async def _catch_up_all(self) -> None:
        jobs = list(self.jobs.values())
        await asyncio.gather(self._seed_metrics(jobs), *(self.catch_up(job) for job in jobs))

    async def _seed_metrics(self, jobs: Sequence[ScheduledJob]) -> None:
        """The last successes of the policies that do not catch up (whose catch-up reads them), in one
        listing; only where someone can scrape them (``http.listen``)."""
        if self.http is None:
            return
        now = self._wall_clock()
        watches = [
            policy_watch(job.spec, job.trigger, now=now, grace=job.status_grace)
            for job in jobs
            if job.spec.create and job.trigger is not None and not job.catch_up
        ]
        await seed_metrics(self.telemetry.metrics, self.runner.inventory, watches)

    async def catch_up(self, job: ScheduledJob) -> None:
        """Run the latest slot now, once, for the servers without a usable backup of it (after downtime).

        The same listing tells the metrics each server's last success, so that they hold across a
        restart.
        """
        if not job.catch_up or not job.spec.create or job.trigger is None:
            return
        now = self._wall_clock()
        slot = latest_slot(job.trigger, now)
        if slot is None:
            return
        try:
            views, failed = await self.runner.inventory.read(job.spec.policy.servers)
        except errors.ApiError as exc:
            log.error("catch_up.listing_failed", policy=job.name, error=str(exc))
            return
        self.telemetry.metrics.seed(job.name, {sid: view.backups for sid, view in views.items()})
        due = [
            sid for sid, view in views.items() if slot_due(view.backups, job.name, slot, job.spec.attempts)
        ]
        for sid, error in failed.items():
            # not known to be done: its run finds out (a slot's backup that exists is adopted, not made again)
            log.warning("catch_up.listing_failed", policy=job.name, server_id=sid, error=str(error))
        due = sorted([*due, *failed])
        if due:
            log.info("catch_up.started", policy=job.name, slot=slot.isoformat(), servers=due)
            await self._run(job, slot, servers=due, catching_up=True)

    def _on_run_event(self, event: Event) -> None:
        """A run's events as the daemon's history, its summary line and the systemd status line see them."""
        if not isinstance(event, RunFinished):
            return
        self.history.last_runs[event.policy] = event
        (log.info if event.ok else log.error)("run.summary", summary=event.summary())
        self.notifier.status(self.status_line())

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            self.history.missed += 1
            log.warning("run.missed", policy=event.job_id, scheduled=str(event.scheduled_run_time))
        else:
            self.history.job_errors += 1
            log.error("run.crashed", policy=event.job_id, error=repr(event.exception))


def slot_due(backups: Sequence[Backup], policy: str, slot: datetime, attempts: int = 1) -> bool:
    """Whether a server's run of ``slot`` is missing or unfinished, judged by the slot's marker alone.

    Due: the slot has no backup yet, or only failed attempts with attempts left
    (a retry), or its backup is still in progress (the run that created it
    stopped before its wait and prune: running the slot again adopts it and
    finishes the job). Not due: the slot has a completed backup, or every
    attempt failed. No timestamp is compared: the API's clock is not ours.
    """
    decision = decide(backups, policy, slot, attempts=attempts)
    if decision.action is Action.ADOPT:
        assert decision.backup is not None
        return decision.backup.status != "completed"
    return decision.action is not Action.GIVE_UP


def policy_trigger(policy: PolicyConfig) -> SlotTrigger | None:
    """The trigger a policy's ``schedule`` fires by, in the policy's zone; None without a schedule."""
    schedule = policy.schedule
    if schedule is None:
        return None
    if schedule.cron is not None:
        return cron_trigger(schedule.cron, policy.timezone, schedule.jitter)
    assert schedule.interval is not None
    return interval_trigger(schedule.interval, policy.timezone, schedule.jitter)


def jobs_from_config(config: RotatorConfig) -> list[ScheduledJob]:
    """Each configured policy as the daemon runs it."""
    jobs = []
    for index, policy in enumerate(config.policies):
        spec = JobSpec(
            policy=policy.to_policy(),
            create=policy.create,
            description=policy.description,
            wait_timeout=policy.wait_timeout,
            max_deletes_per_run=policy.max_deletes_per_run,
            dry_run=policy.dry_run,
            retries=policy.retries,
            retry_delay=policy.retry_delay,
        )
        trigger = policy_trigger(policy)
        pings = policy.pings.url if policy.pings is not None else None
        observers: tuple[Observer, ...] = ()
        if policy.notify is not None:
            urls = [url.get_secret_value() for url in policy.notify.urls]
            observers = (Notifications(urls, policy.notify.on, where=f"policies[{index}].notify"),)
        jobs.append(
            ScheduledJob(
                spec,
                trigger,
                catch_up=policy.catch_up,
                pings_url=pings,
                observers=observers,
                status_grace=policy.status_grace,
            )
        )
    return jobs


def daemon_settings(config: RotatorConfig) -> DaemonSettings:
    return DaemonSettings(
        shutdown_grace=config.daemon.shutdown_grace, misfire_grace=config.daemon.misfire_grace
    )
