"""One run of a policy: create -> wait -> prune, for every server, with the safety rails.

The run is stateless: the API is the state. A backup that a policy creates
carries ``[rotator:POLICY@SLOT]``, so a run that crashed, or another instance,
is recognised and its backup adopted instead of creating a second one.

Request cost: listings are read either for the whole account (``backup_type=
manual``, one listing serving every server) or per server, whichever takes
fewer pages; a complete listing read after a server's new backup completed
also serves that server's prune plan. A run therefore costs about one create
and the deletes per server, plus the listings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import structlog

from rotator import errors
from rotator.api import BackupsClient
from rotator.markers import make_marker, mark_description, parse_marker
from rotator.models import COMPLETED, IN_PROGRESS, MANUAL, Backup, Listing
from rotator.planner import Blocked, PruneActions, Rail, prune_actions
from rotator.retention import Decision, Policy, plan_server

log = structlog.get_logger("rotator.runner")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a run of one policy does, beside its retention (the configuration's policy, resolved)."""

    policy: Policy
    create: bool = True
    description: str = "{policy} {date}"
    wait_timeout: timedelta = timedelta(hours=2)
    max_deletes_per_run: int = 10
    dry_run: bool = False

    @property
    def name(self) -> str:
        return self.policy.name

    def describe(self, slot: datetime) -> str:
        """The new backup's description: the template filled in, the ownership marker appended."""
        local = slot.astimezone(ZoneInfo(self.policy.timezone))
        text = self.description.format(
            policy=self.name,
            date=local.strftime("%Y-%m-%d"),
            time=local.strftime("%H:%M"),
            slot=_iso(slot.replace(microsecond=0)),
        )
        return mark_description(text.strip(), self.name, slot)


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    ABANDONED = "abandoned"  # shutdown came first


@dataclass
class ServerResult:
    """What happened on one server in one run."""

    server_id: int
    outcome: Outcome = Outcome.OK
    backup: Backup | None = None
    adopted: bool = False
    deleted: list[int] = field(default_factory=list)
    kept: int = 0
    blocked: list[Blocked] = field(default_factory=list)
    error: str | None = None

    def fail(self, error: str, outcome: Outcome = Outcome.FAILED) -> None:
        self.outcome = outcome
        self.error = error


@dataclass
class RunReport:
    """A run's results, one per server, and its summary."""

    policy: str
    slot: datetime
    dry_run: bool
    servers: list[ServerResult]
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(result.outcome is Outcome.OK for result in self.servers)

    def totals(self) -> dict[str, int]:
        return {
            "servers": len(self.servers),
            "created": sum(1 for r in self.servers if r.backup is not None and not r.adopted),
            "adopted": sum(1 for r in self.servers if r.adopted),
            "deleted": sum(len(r.deleted) for r in self.servers),
            "kept": sum(r.kept for r in self.servers),
            "failed": sum(1 for r in self.servers if r.outcome is not Outcome.OK),
            "blocked": sum(len(r.blocked) for r in self.servers),
        }

    def summary_line(self) -> str:
        t = self.totals()
        state = "ok" if self.ok else "FAILED"
        failures = "; ".join(
            f"server {r.server_id}: {r.error}" for r in self.servers if r.outcome is not Outcome.OK
        )
        return (
            f"policy {self.policy} {state}{' (dry run)' if self.dry_run else ''}: "
            f"{t['servers']} servers, {t['created']} created, {t['adopted']} adopted, "
            f"{t['deleted']} deleted, {t['kept']} kept, {t['blocked']} blocked, {t['failed']} failed "
            f"in {self.duration:.1f}s" + (f" — {failures}" if failures else "")
        )


class Listings:
    """Reads complete listings of manual backups for a set of servers, at the lowest page count.

    One listing of the account's manual backups serves every server at once;
    per-server listings cost at least a page each. It picks whichever takes
    fewer pages, from the counts it has seen (probing the account listing's
    first page when it knows nothing yet).
    """

    def __init__(self, client: BackupsClient) -> None:
        self._client = client
        self.account_count: int | None = None  # manual backups in the account, last seen
        self.server_counts: dict[int, int] = {}  # manual backups per server, last seen

    async def for_servers(
        self, server_ids: Iterable[int]
    ) -> tuple[dict[int, list[Backup]], dict[int, errors.ApiError]]:
        """Every listed server's manual backups, each list complete, and the servers whose listing
        could not be read whole, with the error. One account listing serves all or raises."""
        wanted = sorted(set(server_ids))
        if not wanted:
            return {}, {}
        per_server = sum(self._client.pages_for(self.server_counts.get(sid, 0)) for sid in wanted)
        if len(wanted) > 1 and (
            self.account_count is None or self._client.pages_for(self.account_count) < per_server
        ):
            account = await self._client.list_backups_within(per_server - 1, backup_type=MANUAL)
            self.account_count = account.count
            if isinstance(account, Listing):
                grouped: dict[int, list[Backup]] = {sid: [] for sid in wanted}
                for backup in account.backups:
                    if backup.server_id in grouped:
                        grouped[backup.server_id].append(backup)
                self.server_counts.update((sid, len(items)) for sid, items in grouped.items())
                return grouped, {}
        answers = await asyncio.gather(
            *(self._client.list_backups(server_id=sid, backup_type=MANUAL) for sid in wanted),
            return_exceptions=True,
        )
        grouped = {}
        failed: dict[int, errors.ApiError] = {}
        for sid, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, errors.ApiError):
                failed[sid] = answer  # this server's own listing: the others are still good
            elif isinstance(answer, BaseException):
                raise answer  # a bug or a cancellation, not the API
            else:
                # a server filter the API ignored must not leak other servers' backups into a plan
                grouped[sid] = [b for b in answer.backups if b.server_id == sid]
        self.server_counts.update((sid, len(items)) for sid, items in grouped.items())
        return grouped, failed

    def note_created(self, server_id: int) -> None:
        """A create adds one backup to the listings: keep the page estimates honest."""
        self.server_counts[server_id] = self.server_counts.get(server_id, 0) + 1
        if self.account_count is not None:
            self.account_count += 1


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
    ) -> None:
        self.client = client
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.listings = Listings(client)
        self.abandon = asyncio.Event()  # set on shutdown after the grace: stop waiting, start no delete
        # Servers worked on at once when creating and when pruning: enough to keep every concurrent
        # place of the budget busy. Each worker does a server's own work (checking its listing for the
        # slot's backup, planning and logging its keeps) just before that server's requests, so that
        # the CPU it takes is spread between the requests instead of holding the event loop (seconds,
        # for a thousand servers) while the request budget stands idle.
        self.workers = 2 * client.budget.max_concurrency

    async def run(
        self,
        job: JobSpec,
        slot: datetime,
        *,
        servers: Sequence[int] | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> RunReport:
        """One run of ``job`` for ``slot`` on ``servers`` (default: all of the policy's)."""
        started = self._monotonic()
        dry = dry_run or job.dry_run
        targets = list(servers) if servers is not None else list(job.policy.servers)
        results = {sid: ServerResult(sid) for sid in targets}
        bound = structlog.contextvars.bound_contextvars(policy=job.name, slot=_iso(slot))
        with bound:
            log.info("run.started", servers=len(targets), dry_run=dry)
            prune_from: dict[int, list[Backup]] = {}
            finished = False
            try:
                if job.create:
                    prune_from = await self._create_and_wait(job, slot, results, dry)
                else:
                    prune_from = await self._listings_or_fail(results.values())
                await self._prune(job, results, prune_from, dry, now or self._wall_clock())
                finished = True
            finally:
                if not finished:  # cancelled or crashed: no server whose run was cut short counts as ok
                    for result in results.values():
                        if result.outcome is Outcome.OK:
                            result.fail("the run was interrupted before it finished", Outcome.ABANDONED)
                report = RunReport(job.name, slot, dry, list(results.values()))
                report.duration = self._monotonic() - started
                log.info(
                    "run.finished", ok=report.ok, duration_s=round(report.duration, 2), **report.totals()
                )
        return report

    # -- create and wait -----------------------------------------------------

    async def _create_and_wait(
        self, job: JobSpec, slot: datetime, results: dict[int, ServerResult], dry: bool
    ) -> dict[int, list[Backup]]:
        existing = await self._listings_or_fail(results.values())
        pending: dict[int, Backup] = {}
        ready: dict[int, list[Backup]] = {}
        description = job.describe(slot)
        stem = _slot_stem(job.name, slot)

        async def create(result: ServerResult) -> None:
            sid = result.server_id
            mine = [b for b in existing[sid] if _is_slot_backup(b, job.name, slot, stem)]
            if mine:
                backup = max(mine, key=lambda b: b.sort_key)
                result.backup, result.adopted = backup, True
                log.info("backup.adopted", server_id=sid, backup_id=backup.id, status=backup.status)
            elif dry:
                log.info("backup.would_create", server_id=sid, description=description)
                ready[sid] = existing[sid]
                return
            else:
                try:
                    # what the server had before: a lost answer's backup is the new one with this
                    # description, found without comparing the API's clock with ours
                    known = {b.id for b in existing[sid]}
                    backup = await self.client.create_backup(sid, description, known_ids=known)
                except errors.ApiError as exc:
                    result.fail(f"create failed: {exc}")
                    log.error("backup.create_failed", server_id=sid, error=str(exc))
                    return
                result.backup = backup
                self.listings.note_created(sid)
                log.info("backup.created", server_id=sid, backup_id=backup.id, description=description)
            if backup.status == IN_PROGRESS:
                pending[sid] = backup
            else:
                self._settle(result, backup, existing[sid], ready)

        await self._each(create, [results[sid] for sid in existing])
        # the listing read before the creates is stale now: a fleet's worth of backups not to keep
        # alive (and have the garbage collector walk) while the next listing is read
        existing.clear()
        await self._wait(job, results, pending, ready)
        return ready

    def _settle(
        self, result: ServerResult, backup: Backup, listing: list[Backup], ready: dict[int, list[Backup]]
    ) -> None:
        """A backup that is no longer in progress: completed (its listing serves the prune), or not."""
        result.backup = backup
        if backup.status == COMPLETED:
            log.info("backup.completed", server_id=result.server_id, backup_id=backup.id)
            ready[result.server_id] = listing
        else:
            result.fail(f"backup {backup.id} is {backup.status}, nothing pruned")
            log.error("backup.failed", server_id=result.server_id, backup_id=backup.id, status=backup.status)

    async def _wait(
        self,
        job: JobSpec,
        results: dict[int, ServerResult],
        pending: dict[int, Backup],
        ready: dict[int, list[Backup]],
    ) -> None:
        deadline = self._monotonic() + job.wait_timeout.total_seconds()
        interval = self.poll_initial
        poll_errors: dict[int, str] = {}  # the last poll's error, for the servers it could not read
        while pending:
            if self.abandon.is_set():
                for sid, backup in pending.items():
                    results[sid].fail("shutdown before the backup completed", Outcome.ABANDONED)
                    log.warning("backup.wait_abandoned", server_id=sid, backup_id=backup.id)
                return
            left = deadline - self._monotonic()
            if left <= 0:
                for sid, backup in pending.items():
                    why = f"backup {backup.id} still in progress after the wait_timeout"
                    if sid in poll_errors:
                        why += f" (its last poll failed: {poll_errors[sid]})"
                    results[sid].fail(why)
                    log.error("backup.failed", server_id=sid, backup_id=backup.id, status="wait_timeout")
                return
            await self._interruptible_sleep(min(interval, left))
            interval = min(interval * 1.5, self.poll_max)
            if self.abandon.is_set():
                continue
            try:
                listings, failed = await self.listings.for_servers(pending)
            except errors.ApiError as exc:
                poll_errors = dict.fromkeys(pending, str(exc))
                log.warning("backup.poll_failed", error=str(exc), waiting=len(pending))
                continue
            poll_errors = {sid: str(error) for sid, error in failed.items()}
            for sid, error in failed.items():
                log.warning("backup.poll_failed", server_id=sid, error=str(error))
            for sid in [sid for sid in pending if sid in listings]:
                current = next((b for b in listings[sid] if b.id == pending[sid].id), None)
                if current is None:
                    results[sid].fail(f"backup {pending[sid].id} vanished while being waited for")
                    log.error("backup.failed", server_id=sid, backup_id=pending[sid].id, status="vanished")
                    del pending[sid]
                elif current.status != IN_PROGRESS:
                    del pending[sid]
                    self._settle(results[sid], current, listings[sid], ready)

    async def _interruptible_sleep(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self.abandon.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()

    async def _listings_or_fail(self, results: Iterable[ServerResult]) -> dict[int, list[Backup]]:
        """The servers' listings; a server whose listing could not be read whole fails, nothing done."""
        targets = list(results)
        try:
            listings, failed = await self.listings.for_servers(r.server_id for r in targets)
        except errors.ApiError as exc:
            for result in targets:
                result.fail(f"listing failed, nothing done: {exc}")
            log.error("prune.blocked", rail=Rail.PARTIAL_LISTING.value, error=str(exc))
            return {}
        for result in targets:
            error = failed.get(result.server_id)
            if error is not None:
                result.fail(f"listing failed, nothing done: {error}")
                log.error(
                    "prune.blocked",
                    rail=Rail.PARTIAL_LISTING.value,
                    server_id=result.server_id,
                    error=str(error),
                )
        return listings

    # -- prune -----------------------------------------------------------------

    async def _prune(
        self,
        job: JobSpec,
        results: dict[int, ServerResult],
        listings: dict[int, list[Backup]],
        dry: bool,
        now: datetime,
    ) -> None:
        async def prune(result: ServerResult) -> None:
            sid = result.server_id
            listing = listings.get(sid)
            if listing is None:
                return  # failed earlier: nothing is pruned on this server this run
            plan = plan_server(listing, job.policy, now, server_id=sid)
            new_id = result.backup.id if result.backup is not None else None
            actions = prune_actions(
                plan, job.policy, max_deletes=job.max_deletes_per_run, dry_run=dry, new_backup_id=new_id
            )
            await self._apply(result, plan.keep, actions)

        await self._each(prune, [r for r in results.values() if r.outcome is Outcome.OK])

    async def _each(
        self, work: Callable[[ServerResult], Awaitable[None]], results: list[ServerResult]
    ) -> None:
        """``work`` on every server, by :attr:`workers` workers taking the next server when one is done."""
        queue = iter(results)

        async def worker() -> None:
            for result in queue:
                await work(result)

        await asyncio.gather(*(worker() for _ in range(max(1, min(self.workers, len(results))))))

    async def _apply(self, result: ServerResult, keep: Sequence[Decision], actions: PruneActions) -> None:
        sid = result.server_id
        result.kept = len(keep)
        for decision in keep:
            log.info(
                "backup.kept", server_id=sid, backup_id=decision.backup.id, reasons=list(decision.reasons)
            )
        for blocked in actions.blocked:
            result.blocked.append(blocked)
            event = "backup.would_delete" if blocked.rail is Rail.DRY_RUN else "prune.blocked"
            log.info(event, server_id=sid, backup_id=blocked.decision.backup.id, rail=blocked.rail.value)
        for decision in actions.delete:
            if self.abandon.is_set():
                result.fail("shutdown before every delete was sent", Outcome.ABANDONED)
                return
            backup_id = decision.backup.id
            try:
                # a delete that has started is finished, whatever happens around it
                await asyncio.shield(self.client.delete_backup(backup_id))
            except errors.NotFound:
                log.info("backup.deleted", server_id=sid, backup_id=backup_id, already_gone=True)
            except errors.ApiError as exc:
                result.fail(f"delete of backup {backup_id} failed: {exc}")
                log.error("backup.delete_failed", server_id=sid, backup_id=backup_id, error=str(exc))
                return
            else:
                log.info(
                    "backup.deleted",
                    server_id=sid,
                    backup_id=backup_id,
                    created_at=_iso(decision.backup.created_at),
                )
            result.deleted.append(backup_id)


def _slot_stem(policy: str, slot: datetime) -> str:
    """What every marker of ``policy``'s ``slot`` contains, however written: ``[rotator:POLICY@...THH:MM``
    (with ``:SS`` for a slot that has seconds), a cheap test before the marker is parsed."""
    return make_marker(policy, slot)[: -len("Z]")]


def _is_slot_backup(backup: Backup, policy: str, slot: datetime, stem: str) -> bool:
    """Whether ``backup`` is ``policy``'s backup of ``slot`` (``stem``: :func:`_slot_stem` of them)."""
    if stem not in (backup.description or ""):
        return False  # not this slot's, without parsing a marker (checked for every backup listed)
    marker = parse_marker(backup.description)
    return (
        marker is not None
        and marker.policy == policy
        and marker.slot is not None
        and marker.slot == slot.astimezone(UTC).replace(microsecond=0)
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
