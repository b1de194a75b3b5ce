"""One run of a policy: create -> wait -> prune on every server, with the safety rails.

The run is stateless: the API is the state. A backup that a policy creates
carries ``[rotator:POLICY@SLOT]`` (``#N`` for the N-th attempt), so a run that
crashed, or another instance, is recognised by its marker and its backup
adopted instead of creating a second one (:func:`rotator.slots.decide`).

Each server goes its own way through the run, so that one slow backup holds
nobody else up: decide (adopt, create, retry, confirm the view, wait, give up),
wait for the backup, prune. What they read is batched: the views at the start,
each poll round while backups are in progress, and the fresh views before
prunes are each one :meth:`~rotator.inventory.Inventory.read` for all servers
asking at the time, at the lowest page cost.

The promises, and where they are kept:

* **No second backup for a slot.** A create is decided only on a confirmed
  view (one that cannot have skipped the slot's backup). A create whose
  outcome is unknown (timeout, lost connection, 5xx) is never sent again
  within ``quiet_period`` (longer than the API's listing lag): later polls
  adopt it by its marker; if it never shows, the server's result is
  ``unknown``. A create answer that names a backup already listed, or whose
  description lost the marker, fails the server, and no more are created for it.
* **Never a prune on a stale view.** Every prune plan rests on a view read
  after the server's wait ended and at most ``max_view_age`` before its first
  DELETE (else the server is listed again); the new backup must be in it,
  completed, and is never deleted.
* **A failed backup does not block its slot.** Only an in-progress or
  completed backup is adopted; a failed attempt is retried (``retries``,
  ``retry_delay``) with the next attempt's marker, within the run when
  ``retry_in_run`` (``run-once``), else by the daemon (:attr:`RunReport.retry`).
* **A shutdown is not a failure.** A run cut short reports ``abandoned``.

What a run does is told to its observers as typed, frozen events
(:mod:`rotator.events`: started, created, completed, failed, kept, held back,
deleted, server pruned, finished), the log's first (:mod:`rotator.eventlog`),
then the runner's and the run's own (metrics, pings, notifications, the
daemon's status line); an observer that raises is logged and the run goes on.
Diagnostics that no observer acts on (a poll that failed, a rail's refusal
without a backup, a retry's wait) are logged here directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

import structlog

from rotator import errors
from rotator.api import BackupsClient
from rotator.durations import format_duration
from rotator.eventlog import log_event
from rotator.events import (
    NOT_KEPT,
    BackupCompleted,
    BackupCreated,
    BackupDeleted,
    BackupFailed,
    BackupKept,
    Deleted,
    Events,
    HeldBack,
    Observer,
    Outcome,
    PruneHeldBack,
    RunFinished,
    RunKey,
    RunStarted,
    ServerOutcome,
    ServerPruned,
    Status,
    status_of,
)
from rotator.inventory import Inventory, Rounds, Seen, Stopped, View, Views
from rotator.markers import Marker, mark_description, parse_marker
from rotator.models import COMPLETED, EMPTY, IN_PROGRESS, MANUAL, Backup, find, ids_of
from rotator.planner import Blocked, PruneActions, Rail, ServerActions, run_actions
from rotator.retention import Decision, Policy
from rotator.slots import Action, SlotDecision, decide

# Outcome and Status are the events' (rotator.events), offered here too for code that imports them from here
__all__ = ["JobSpec", "Outcome", "RunReport", "Runner", "ServerResult", "Status"]

log = structlog.get_logger("rotator.runner")

Sleep = Callable[[float], Awaitable[None]]
DEFAULT_QUIET_PERIOD: Final = 120.0
DEFAULT_MAX_VIEW_AGE: Final = 60.0
PRUNE_ROUNDS: Final = 3  # views read for one prune, and plans made on them, at most


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a run of one policy does, beside its retention (the configuration's policy, resolved)."""

    policy: Policy
    create: bool = True
    description: str = "{policy} {date}"
    wait_timeout: timedelta = timedelta(hours=2)
    max_deletes_per_run: int = 10
    dry_run: bool = False
    retries: int = 2
    retry_delay: timedelta = timedelta(minutes=10)

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def attempts(self) -> int:
        """Attempts a slot gets: the first and its retries."""
        return 1 + self.retries

    def describe(self, slot: datetime, attempt: int = 1) -> str:
        """The new backup's description: the template filled in, the ownership marker appended."""
        local = slot.astimezone(ZoneInfo(self.policy.timezone))
        text = self.description.format(
            policy=self.name,
            date=local.strftime("%Y-%m-%d"),
            time=local.strftime("%H:%M"),
            slot=_iso(slot.replace(microsecond=0)),
        )
        return mark_description(text.strip(), self.name, slot, attempt)


class ActGuard(Protocol):
    """Who may act (``rotator.coordination.Fence``): asked before each create and each batch of deletes;
    ``errors.NotLeader`` stops that server's work (abandoned: the leader that took over finishes it)."""

    async def before_create(self, policy: str, server_id: int, slot: datetime, attempt: int) -> None: ...

    async def before_deletes(self, server_id: int, backup_ids: list[int]) -> None: ...

    def may_act(self) -> bool: ...


class _Unguarded:
    """One instance alone: it may always act."""

    async def before_create(self, policy: str, server_id: int, slot: datetime, attempt: int) -> None:
        return None

    async def before_deletes(self, server_id: int, backup_ids: list[int]) -> None:
        return None

    def may_act(self) -> bool:
        return True


@dataclass(slots=True)  # one a server, held through the run
class ServerResult:
    """What happened on one server in one run."""

    server_id: int
    outcome: Outcome = Outcome.OK
    backup: Backup | None = None
    adopted: bool = False
    attempt: int = 0  # the slot's attempt this run used (0: none)
    created: int = 0  # backups this run started (attempts whose create went through)
    deleted: list[int] = field(default_factory=list)
    kept: int = 0
    blocked: list[Blocked] = field(default_factory=list)
    error: str | None = None
    retry: bool = False  # an attempt failed and another remains: the daemon schedules it
    actions: ServerActions | None = None  # a dry run's last plan and rails (what `plan` shows)

    def fail(self, error: str, outcome: Outcome = Outcome.FAILED) -> None:
        self.outcome = outcome
        self.error = error

    def frozen(self) -> ServerOutcome:
        """This result as the run-finished event carries it."""
        return ServerOutcome(
            server_id=self.server_id,
            outcome=self.outcome,
            error=self.error,
            backup_id=self.backup.id if self.backup is not None else None,
            adopted=self.adopted,
            attempt=self.attempt,
            created=self.created,
            deleted=tuple(self.deleted),
            kept=self.kept,
            blocked=tuple(HeldBack(b.decision.backup.id, b.rail.value) for b in self.blocked),
            retry=self.retry,
        )


@dataclass
class RunReport:
    """A run's results, one per server, and its summary."""

    policy: str
    slot: datetime
    dry_run: bool
    servers: list[ServerResult]
    duration: float = 0.0

    @property
    def status(self) -> Status:
        return status_of(result.outcome for result in self.servers)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def retry(self) -> list[int]:
        """Servers whose attempt failed with attempts left: their retry is due after ``retry_delay``."""
        return [result.server_id for result in self.servers if result.retry]

    def finished(self) -> RunFinished:
        """The report as the frozen event observers are told (:class:`~rotator.events.RunFinished`)."""
        return RunFinished(
            RunKey(self.policy, self.slot, self.dry_run),
            servers=tuple(result.frozen() for result in self.servers),
            duration=self.duration,
        )

    def totals(self) -> dict[str, int]:
        return self.finished().totals()

    def summary_line(self) -> str:
        """The run for people: its headline, then each server that did not succeed with its error."""
        return self.finished().summary()


class _Abandoned(Exception):
    """This server's work stops: the run is being abandoned (shutdown after the grace)."""


@dataclass
class _Run:
    """One run's shared parts: what it does, its batched reads, and when it began."""

    job: JobSpec
    slot: datetime
    dry: bool
    now: datetime | None
    retry_in_run: bool
    polls: Rounds
    reads: Rounds
    confirms: Rounds  # every server that must confirm its view at a moment: one second read for all
    events: Events
    key: RunKey
    sending: _FirstSends = field(default_factory=lambda: _FirstSends(()))
    descriptions: dict[int, str] = field(default_factory=dict)  # by attempt: the same for every server

    def describe(self, attempt: int) -> str:
        """The description of ``attempt`` at this run's slot (:meth:`JobSpec.describe`), made once a run."""
        description = self.descriptions.get(attempt)
        if description is None:
            description = self.descriptions[attempt] = self.job.describe(self.slot, attempt)
        return description


class _FirstSends:
    """The servers of a run still on their way to their first wait (creating, adopting, confirming).

    Poll rounds wait for them all (:meth:`Runner.run`): a round read while creates are still being
    sent lists a fleet whose backups are mostly not there yet, costs its pages again in the next
    round, and (the account listing growing as it is read) often fails. A server counts as done at
    its first wait for a poll, or when its way ends without one.
    """

    def __init__(self, server_ids: Iterable[int]) -> None:
        self._pending = set(server_ids)
        self.all_done = asyncio.Event()
        if not self._pending:
            self.all_done.set()

    def done(self, server_id: int) -> None:
        if self._pending:
            self._pending.discard(server_id)
            if not self._pending:
                self.all_done.set()


@dataclass(slots=True)
class _Created:
    """A create this run sent: its attempt, the backup if the answer came, when, and what was there before."""

    attempt: int
    backup_id: int | None
    since: float  # monotonic: when its answer came, or its outcome became unknown
    # the view's backups before it was sent (the view's own: no copy held), kept only while its outcome
    # is unknown (a new backup without the marker is looked for among the others): a fleet's waiting
    # servers whose answers came hold none of the listing they created on
    known: Sequence[Backup] = EMPTY


class Runner:
    """Runs policies against one client; clocks and sleep are injected."""

    def __init__(
        self,
        client: BackupsClient,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        poll_initial: float = 5.0,
        poll_max: float = 60.0,
        quiet_period: float = DEFAULT_QUIET_PERIOD,
        max_view_age: float = DEFAULT_MAX_VIEW_AGE,
        observers: Iterable[Observer] = (),
        guard: ActGuard | None = None,
        first_creates_wait: float | None = None,
    ) -> None:
        self.client = client
        # how long (the event loop's clock) a poll round waits for the run's first creates to be sent:
        # None, half the job's wait_timeout
        self.first_creates_wait = first_creates_wait
        self.guard: ActGuard = guard or _Unguarded()
        # the log first: what observers do about an event comes after the line that tells of it
        self.events = Events([log_event, *observers])
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.quiet_period = quiet_period
        self.max_view_age = max_view_age
        self.inventory = Inventory(client, monotonic=monotonic)
        self.abandon = asyncio.Event()  # set on shutdown after the grace: stop waiting, start no delete
        # Servers worked on at once (creating, planning, deleting): enough to keep every concurrent
        # place of the budget busy, and each server's own CPU work spread between the requests.
        self.workers = 2 * client.budget.max_concurrency
        self.views_read = 0  # views a run planned a prune on that had to be read again (too old)

    async def run(
        self,
        job: JobSpec,
        slot: datetime,
        *,
        servers: Sequence[int] | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
        retry_in_run: bool = True,
        observers: Iterable[Observer] = (),
    ) -> RunReport:
        """One run of ``job`` for ``slot`` on ``servers`` (default: all of the policy's).

        ``now``: the time retention is judged at (default: the wall clock at
        each prune). ``retry_in_run``: a failed attempt is retried within this
        run after ``retry_delay`` (``run-once``); otherwise the server fails
        with :attr:`ServerResult.retry` set, for the daemon to schedule.
        ``observers``: told this run's events, after the runner's own (its pings, say).
        """
        started = self._monotonic()
        dry = dry_run or job.dry_run
        targets = list(servers) if servers is not None else list(job.policy.servers)
        results = {sid: ServerResult(sid) for sid in targets}
        interval = [self.poll_initial]

        async def poll_pause() -> bool:
            await self._interruptible_sleep(interval[0])
            interval[0] = min(interval[0] * 1.5, self.poll_max)
            if not run.sending.all_done.is_set():
                # a round waits for the run's first creates to be sent (see _FirstSends), but no longer
                # than half the wait_timeout (the event loop's clock): a backup created early is still
                # seen well before its server's deadline
                bound = self.first_creates_wait
                await self._until(
                    run.sending.all_done, job.wait_timeout.total_seconds() / 2 if bound is None else bound
                )
            return not self.abandon.is_set()

        async def no_pause() -> bool:
            await asyncio.sleep(0)  # let every server that asks in this moment join the round
            return not self.abandon.is_set()

        run = _Run(
            job,
            slot,
            dry,
            now,
            retry_in_run,
            polls=Rounds(self.inventory.poll, poll_pause),
            reads=Rounds(self.inventory.read, no_pause),
            confirms=Rounds(self.inventory.confirm, no_pause),
            events=self.events.with_observers(observers),
            key=RunKey(job.name, slot, dry),
        )
        gate = asyncio.Semaphore(self.workers)
        bound = structlog.contextvars.bound_contextvars(policy=job.name, slot=_iso(slot))
        with bound:
            await run.events.emit(RunStarted(run.key, servers=tuple(targets)))
            finished = False
            try:
                views, failed = await self._read_all(targets)
                run.sending = _FirstSends(sid for sid in targets if sid in views and job.create)
                for sid, error in failed.items():
                    results[sid].fail(f"listing failed, nothing done: {error}")
                    log.error(
                        "prune.blocked", rail=Rail.PARTIAL_LISTING.value, server_id=sid, error=str(error)
                    )
                async with asyncio.TaskGroup() as servers_at_work:  # a crash stops the others too
                    for sid in targets:
                        if sid in views:  # popped: each server's task alone holds its first view
                            servers_at_work.create_task(self._server(run, results[sid], views.pop(sid), gate))
                finished = True
            finally:
                for rounds in (run.polls, run.reads, run.confirms):
                    await rounds.aclose()
                if not finished:  # cancelled or crashed: no server whose run was cut short counts as ok
                    for result in results.values():
                        if result.outcome is Outcome.OK:
                            result.fail("the run was interrupted before it finished", Outcome.ABANDONED)
                report = RunReport(job.name, slot, dry, list(results.values()))
                report.duration = self._monotonic() - started
                await run.events.emit(report.finished())
        return report

    async def _read_all(self, targets: list[int]) -> Views:
        try:
            return await self.inventory.read(targets)
        except errors.ApiError as exc:
            return {}, dict.fromkeys(targets, exc)

    # -- one server --------------------------------------------------------------

    async def _server(self, run: _Run, result: ServerResult, view: View, gate: asyncio.Semaphore) -> None:
        try:
            if run.job.create:
                # the flow holds the view from here on: this frame keeps none of the views it replaces
                flow = _Flow(self, run, result, view, gate)
                del view
                try:
                    settled = await self._ensure_backup(flow)
                finally:
                    run.sending.done(result.server_id)
                if settled is None:
                    return  # failed, unknown or a dry run's would-create: see below for the dry run
                view = settled
            async with gate:
                await self._prune(run, result, view)
        except _Abandoned:
            result.fail("shutdown before the server's work was done", Outcome.ABANDONED)
            log.warning("server.abandoned", server_id=result.server_id)

    async def _next_view(
        self, rounds: Rounds, sid: int, seen: View | Seen | None = None
    ) -> View | errors.ApiError:
        if self.abandon.is_set():
            raise _Abandoned
        try:
            return await rounds.view(sid, seen)
        except Stopped:
            raise _Abandoned from None
        except errors.ApiError as exc:
            return exc

    async def _ensure_backup(self, flow: _Flow) -> View | None:
        """Adopt or create the slot's backup and wait for it; the view its completion was seen in.

        None when the server is done for this run: failed, unknown, given up,
        or a dry run (which then prunes, as a dry run, on the view it has).
        """
        run = flow.run
        while True:
            if self.abandon.is_set():
                raise _Abandoned
            decision = decide(
                flow.view.backups,
                run.job.name,
                run.slot,
                attempts=run.job.attempts,
                confirmed=flow.view.confirmed,
                unknown_attempt=flow.pending(),
            )
            step = await _STEPS[decision.action](flow, decision)
            if step is _AGAIN:
                continue
            if step is not _WAIT:
                return step if isinstance(step, View) else None
            if not await flow.wait():
                return None

    async def _create(self, run: _Run, result: ServerResult, view: View, attempt: int) -> _Created | None:
        """Send the create of ``attempt``; what is known of it, or None when the server is done (failed)."""
        job, sid = run.job, result.server_id
        description = run.describe(attempt)
        known = view.backups
        try:
            await self.guard.before_create(job.name, sid, run.slot, attempt)
        except errors.NotLeader as exc:
            result.fail(f"not created: {exc}", Outcome.ABANDONED)
            log.warning("backup.not_created", server_id=sid, attempt=attempt, reason=str(exc))
            return None
        try:
            backup = await self.client.create_backup(sid, description)
        except errors.CreateOutcomeUnknown as exc:
            log.warning("backup.create_unknown", server_id=sid, attempt=attempt, error=str(exc))
            result.attempt = attempt
            # the quiet period starts when the outcome became unknown: after any 429s the client
            # waited out, and after the POST that may have gone through
            return _Created(attempt, None, self._monotonic(), known)
        except errors.ApiError as exc:
            result.fail(f"create failed: {exc}")
            log.error("backup.create_failed", server_id=sid, error=str(exc))
            return None
        started = self._monotonic()  # the answer came: the backup exists from here on
        self.inventory.note_created(sid)
        if backup.id in ids_of(known):
            result.fail(
                f"the create's answer names backup {backup.id}, which was already listed: "
                "the answer cannot be trusted; nothing pruned, no more creates for this server"
            )
            log.error("backup.create_invalid", server_id=sid, backup_id=backup.id, reason="known id")
            return None
        expected = Marker(job.name, run.slot.astimezone(UTC).replace(microsecond=0), attempt)
        if parse_marker(backup.description) != expected:
            result.backup = backup
            result.fail(
                f"the API changed backup {backup.id}'s description, losing its marker {expected}: "
                "the policy would never recognise or prune it; no more creates for this server in this "
                "run (check api.max_description_length and the description template)"
            )
            log.error(
                "backup.marker_lost",
                server_id=sid,
                backup_id=backup.id,
                sent=description,
                returned=backup.description,
            )
            return None
        if backup.description != description:
            log.warning("backup.description_changed", server_id=sid, backup_id=backup.id)
        result.backup, result.adopted, result.attempt = backup, False, attempt
        result.created += 1
        await run.events.emit(
            BackupCreated(
                run.key, server_id=sid, backup_id=backup.id, attempt=attempt, description=description
            )
        )
        return _Created(attempt, backup.id, started)

    # -- prune -----------------------------------------------------------------

    async def _prune(self, run: _Run, result: ServerResult, view: View) -> None:
        """Plan on a fresh view and send its deletes, each while that view is fresh.

        A view older than ``max_view_age`` is read again first. A DELETE that could
        not be sent while its view was fresh (throttled, retried) is not sent on it:
        the server is read again and planned anew, the cap counting what went, at most
        :data:`PRUNE_ROUNDS` times in all.
        """
        pruned: list[Deleted] = []
        planned = False
        try:
            planned = await self._prune_rounds(run, result, view, pruned)
        finally:
            if planned:  # one line for the server, whether its prune went all the way or not
                await run.events.emit(
                    ServerPruned(
                        run.key,
                        server_id=result.server_id,
                        kept=result.kept,
                        deleted=tuple(pruned),
                        held_back=tuple(HeldBack(b.decision.backup.id, b.rail.value) for b in result.blocked),
                    )
                )

    async def _prune_rounds(self, run: _Run, result: ServerResult, view: View, pruned: list[Deleted]) -> bool:
        """:meth:`_prune`'s rounds; True once a plan was made (its deletes are added to ``pruned``)."""
        job, sid = run.job, result.server_id
        new = result.backup
        if job.create and new is None and not run.dry:
            # a real prune rests on the slot's backup, listed completed; never on one it would create
            result.fail("the slot's backup is not known; nothing deleted")
            log.error("prune.blocked", rail=Rail.BACKUP_NOT_COMPLETED.value, server_id=sid)
            return False
        blocked_from = len(result.blocked)
        planned = False
        for _ in range(PRUNE_ROUNDS):
            fresh = await self._fresh_view(run, result, view)
            if fresh is None:
                return planned
            view = fresh
            if new is not None and not run.dry:
                listed = find(view.backups, new.id)
                if listed is None or listed.status != COMPLETED:
                    result.fail(
                        f"the new backup {new.id} is not listed as completed any more; nothing deleted"
                    )
                    log.error(
                        "prune.blocked", rail=Rail.BACKUP_NOT_COMPLETED.value, server_id=sid, backup_id=new.id
                    )
                    return planned
            # the one computation of a run's actions, as `rotator plan` and a dry run make it
            actions = run_actions(
                view.backups,
                job,
                run.slot,
                run.now or self._wall_clock(),
                server_id=sid,
                dry_run=run.dry,
                deleted=len(result.deleted),
                new_backup=new,
            )
            if run.dry:  # what `rotator plan` shows of a dry run; a real run's would hold every backup
                result.actions = actions
            del result.blocked[blocked_from:]  # a new plan's rails replace the last one's
            planned = True
            if not await self._apply(run, result, actions.keep, actions.prune, view, pruned=pruned):
                return planned
            # a delete's view went stale before it could be sent: read again and plan anew
        result.fail("no view of the server stayed fresh long enough to prune on; the rest kept")
        log.error("prune.blocked", rail="stale_view", server_id=sid)
        return planned

    async def _fresh_view(self, run: _Run, result: ServerResult, view: View) -> View | None:
        """``view``, or a new read of its server when it is older than ``max_view_age``."""
        sid = result.server_id
        for _ in range(PRUNE_ROUNDS):
            if self._fresh(view):
                return view
            self.views_read += 1
            fresh = await self._next_view(run.reads, sid)
            if isinstance(fresh, errors.ApiError):
                more = " more" if result.deleted else ""
                result.fail(f"listing before the prune failed, nothing{more} deleted: {fresh}")
                log.error("prune.blocked", rail=Rail.PARTIAL_LISTING.value, server_id=sid, error=str(fresh))
                return None
            view = fresh
        result.fail("no view of the server fresh enough to prune on; nothing deleted")
        log.error("prune.blocked", rail="stale_view", server_id=sid)
        return None

    def _fresh(self, view: View) -> bool:
        return view.age(self._monotonic()) <= self.max_view_age

    async def _apply(
        self,
        run: _Run,
        result: ServerResult,
        keep: Sequence[Decision],
        actions: PruneActions,
        view: View,
        *,
        pruned: list[Deleted],
    ) -> bool:
        """Send ``actions``' deletes while ``view`` is fresh; True when one could not be (plan again)."""
        sid, key, emit = result.server_id, run.key, run.events.emit
        result.kept = len(keep)
        for decision in keep:
            await emit(BackupKept(key, server_id=sid, backup_id=decision.backup.id, reasons=decision.reasons))
        for blocked in actions.blocked:
            result.blocked.append(blocked)
            held = blocked.decision
            event = PruneHeldBack(
                key,
                server_id=sid,
                backup_id=held.backup.id,
                rail=blocked.rail.value,
                reasons=held.reasons or (NOT_KEPT,),
            )
            await emit(event)
        try:
            if actions.delete:
                await self.guard.before_deletes(sid, [decision.backup.id for decision in actions.delete])
        except errors.NotLeader as exc:
            result.fail(f"nothing deleted: {exc}", Outcome.ABANDONED)
            log.warning("prune.not_leader", server_id=sid, reason=str(exc))
            return False
        for decision in actions.delete:
            if self.abandon.is_set():
                result.fail("shutdown before every delete was sent", Outcome.ABANDONED)
                return False
            if not self.guard.may_act():
                result.fail("the leadership was lost before every delete was sent", Outcome.ABANDONED)
                return False
            backup_id = decision.backup.id
            try:
                # a delete that has started is finished, whatever happens around it
                await asyncio.shield(self.client.delete_backup(backup_id, fresh=lambda: self._fresh(view)))
            except errors.NotFound:
                await emit(BackupDeleted(key, server_id=sid, backup_id=backup_id, already_gone=True))
            except errors.TooLate:
                log.warning(
                    "prune.replanned",
                    server_id=sid,
                    backup_id=backup_id,
                    view_age_s=view.age(self._monotonic()),
                )
                return True
            except errors.ApiError as exc:
                result.fail(f"delete of backup {backup_id} failed: {exc}")
                log.error("backup.delete_failed", server_id=sid, backup_id=backup_id, error=str(exc))
                return False
            else:
                await emit(
                    BackupDeleted(
                        key,
                        server_id=sid,
                        backup_id=backup_id,
                        created_at=decision.backup.created_at,
                        reasons=decision.reasons,
                    )
                )
            result.deleted.append(backup_id)
            # the server's summary says why each went: a plain candidate because no rule kept it
            pruned.append(Deleted(backup_id, decision.reasons or (NOT_KEPT,)))
        return False

    async def _until(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set, the run is abandoned, or ``seconds`` of the loop's clock pass."""
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.abandon.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _interruptible_sleep(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self.abandon.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()


class _Flow:
    """One server's way to its slot's backup within a run: what it sent, what it waits for, since when."""

    __slots__ = ("created", "deadline", "gate", "poll_error", "result", "run", "runner", "tried", "view")

    def __init__(self, runner: Runner, run: _Run, result: ServerResult, view: View, gate: asyncio.Semaphore):
        self.runner = runner
        self.run = run
        self.result = result
        self.view = view
        self.gate = gate
        self.created: _Created | None = None
        self.deadline: float | None = None
        self.tried = False  # this run made or waited for an attempt: a retry waits retry_delay first
        self.poll_error: str | None = None

    @property
    def sid(self) -> int:
        return self.result.server_id

    def pending(self) -> int | None:
        """The attempt whose create may still show up (outcome unknown, or not listed yet): wait for it."""
        created = self.created
        if created is None or (created.backup_id is not None and created.backup_id in self.view.ids):
            return None
        # judged by when the view was read, not by now: a listing begun before the quiet period
        # passed (and answered after it) is no proof that the backup is absent
        if self.view.read_at - created.since < self.runner.quiet_period:
            return created.attempt
        return None

    async def adopt(self, decision: SlotDecision) -> _Step:
        backup = decision.backup
        assert backup is not None
        result = self.result
        if result.backup is None or result.backup.id != backup.id:
            created = self.created
            # this run's own create: by its id, or (its answer lost) by the attempt its marker names
            mine = created is not None and (
                created.backup_id == backup.id
                or (created.backup_id is None and created.attempt == decision.attempt)
            )
            result.attempt, result.adopted = decision.attempt, not mine
            if mine and created is not None and created.backup_id is None:
                result.created += 1  # its answer was lost, but it went through
            if not mine:
                log.info("backup.adopted", server_id=self.sid, backup_id=backup.id, status=backup.status)
            self.deadline = self.runner._monotonic() + self.run.job.wait_timeout.total_seconds()
        result.backup = backup
        if backup.status == COMPLETED:
            await self.run.events.emit(BackupCompleted(self.run.key, server_id=self.sid, backup_id=backup.id))
            return self.view
        self.tried = True
        return _WAIT

    async def give_up(self, decision: SlotDecision) -> _Step:
        attempts = self.run.job.attempts
        self.result.fail(f"all {attempts} attempts of the slot failed; nothing pruned")
        log.error("backup.given_up", server_id=self.sid, attempts=attempts)
        return None

    async def confirm(self, decision: SlotDecision) -> _Step:
        # the view's ids alone are compared with the confirming read: while it is read, the flow
        # holds no rows (an attribute unset, as while waiting for a poll round)
        seen = Seen.of(self.view)
        del self.view
        confirmed = await self.runner._next_view(self.run.confirms, self.sid, seen)
        if isinstance(confirmed, errors.ApiError):
            self.result.fail(f"listing could not be confirmed, nothing created: {confirmed}")
            log.error("backup.not_created", server_id=self.sid, error=str(confirmed))
            return None
        self.view = confirmed
        return _AGAIN

    async def hold(self, decision: SlotDecision) -> _Step:
        return _WAIT  # a create's outcome is unknown and its quiet period has not passed

    async def create(self, decision: SlotDecision) -> _Step:
        runner, run, result, created = self.runner, self.run, self.result, self.created
        if created is not None and created.backup_id is None and self._unmarked_new_backup():
            result.fail(
                "a create's outcome was unknown and a new backup without the policy's marker appeared: "
                "not creating another (did the API change the description?)",
                Outcome.UNKNOWN,
            )
            log.error("backup.create_unknown", server_id=self.sid, reason="unmarked new backup")
            return None
        if created is not None and created.backup_id is not None and created.attempt == decision.attempt:
            result.fail(f"backup {created.backup_id} vanished while being waited for; nothing pruned")
            await self._failed(created.backup_id, "vanished")
            return None
        if run.dry:
            description = run.describe(decision.attempt)
            log.info("backup.would_create", server_id=self.sid, description=description)
            async with self.gate:
                await runner._prune(run, result, self.view)
            return None
        if decision.action is Action.RETRY and self.tried:
            return await self._retry_later(decision)
        async with self.gate:
            self.created = await runner._create(run, result, self.view, decision.attempt)
        if self.created is None:
            return None
        self.tried = True
        if created is None or created.attempt != decision.attempt or self.deadline is None:
            # the attempt's wait starts at its first POST: a create sent again does not extend it
            self.deadline = self.created.since + run.job.wait_timeout.total_seconds()
        return _WAIT

    async def _retry_later(self, decision: SlotDecision) -> _Step:
        job, result = self.run.job, self.result
        if not self.run.retry_in_run:
            result.retry = True
            result.fail(
                f"attempt {decision.attempt - 1} failed; attempt {decision.attempt} is due "
                f"in {format_duration(job.retry_delay)}"
            )
            log.error("backup.retry_scheduled", server_id=self.sid, attempt=decision.attempt)
            return None
        log.info(
            "backup.retry_waiting",
            server_id=self.sid,
            attempt=decision.attempt,
            delay_s=job.retry_delay.total_seconds(),
        )
        await self.runner._interruptible_sleep(job.retry_delay.total_seconds())
        fresh = await self.runner._next_view(self.run.reads, self.sid)
        if isinstance(fresh, errors.ApiError):
            result.fail(f"listing failed before the retry, nothing created: {fresh}")
            return None
        self.tried = False
        self.view = fresh
        return _AGAIN

    def _unmarked_new_backup(self) -> bool:
        """A new manual backup appeared after an unknown create, but it does not carry our marker."""
        assert self.created is not None
        assert self.created.backup_id is None  # only then is known held
        known = set(ids_of(self.created.known))
        for backup in self.view.backups:
            if backup.id in known or backup.backup_type != MANUAL:
                continue
            marker = parse_marker(backup.description)
            if marker is None or marker.policy != self.run.job.name:
                return True
        return False

    async def wait(self) -> bool:
        """Until a poll round lists the server; False when the wait is over (the server is done).

        While it waits the flow holds no view: a fleet's next poll listing is read while the last one is
        already let go. A round that failed is simply waited past: the server's state is as it was when
        it chose to wait (its decision on the view it had was to wait, and it would be again), so it
        decides anew only on a view that a round did list.
        """
        runner, result = self.runner, self.result
        self.run.sending.done(self.sid)
        del self.view  # an attribute unset, not an empty view: nothing can decide on it while waiting
        if self.deadline is None:
            self.deadline = runner._monotonic() + self.run.job.wait_timeout.total_seconds()
        while True:
            if runner._monotonic() >= self.deadline:
                await self._timed_out()
                return False
            # runner._next_view, inlined: every waiting server of a fleet waits here, one frame fewer each
            if runner.abandon.is_set():
                raise _Abandoned
            try:
                polled = await self.run.polls.view(self.sid)
            except Stopped:
                raise _Abandoned from None
            except errors.ApiError as exc:
                self.poll_error = str(exc)
                log.warning("backup.poll_failed", server_id=self.sid, error=self.poll_error)
                if runner.abandon.is_set():  # checked first after a failed round, as before deciding
                    raise _Abandoned from None
                continue
            break
        self.poll_error = None
        self.view = polled
        before = result.backup
        if before is not None:
            seen = find(polled.backups, before.id)
            if seen is not None and seen.status not in (IN_PROGRESS, COMPLETED):
                # failed, or a status rotator does not know: not a usable backup; a retry may follow
                result.backup, self.created, self.deadline = None, None, None
                await self._failed(before.id, seen.status)
        return True

    async def _failed(self, backup_id: int, status: str) -> None:
        event = BackupFailed(self.run.key, server_id=self.sid, backup_id=backup_id, status=status)
        await self.run.events.emit(event)

    async def _timed_out(self) -> None:
        result, job = self.result, self.run.job
        if result.backup is None:
            result.fail(
                "a create's outcome stayed unknown: no backup of the slot was listed within "
                f"the wait_timeout ({format_duration(job.wait_timeout)})",
                Outcome.UNKNOWN,
            )
            log.error("backup.create_unknown", server_id=self.sid, reason="never listed")
            return
        why = f"backup {result.backup.id} still in progress after the wait_timeout"
        if self.poll_error:
            why += f" (its last poll failed: {self.poll_error})"
        result.fail(why)
        await self._failed(result.backup.id, "wait_timeout")


class _Sentinel:
    """A named step result of :class:`_Flow` (see :data:`_Step`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_WAIT: Final = _Sentinel("wait")  # wait for the next poll round, then decide again
_AGAIN: Final = _Sentinel("again")  # decide again now, on the view just read
_Step = View | _Sentinel | None  # a View: the backup completed in it; None: the server is done
_STEPS: Final[dict[Action, Callable[[_Flow, SlotDecision], Awaitable[_Step]]]] = {
    Action.ADOPT: _Flow.adopt,
    Action.GIVE_UP: _Flow.give_up,
    Action.CONFIRM: _Flow.confirm,
    Action.WAIT: _Flow.hold,
    Action.CREATE: _Flow.create,
    Action.RETRY: _Flow.create,
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
