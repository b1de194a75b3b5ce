"""What one run does on one server: its slot decision, its new backup, retention, the safety rails.

Pure: no I/O, no clock. :func:`run_actions` is the one place that computes a
run's actions on a server: the slot decision (:func:`rotator.slots.decide`),
the backup it would create, the retention plan with that backup in it, and the
rails (:func:`prune_actions`). The runner calls it on the view it prunes on and
sends exactly the deletes it returns; ``rotator plan`` and a dry run call it
on the listing they read, so what they show is what a run does. Everything a
rail refuses comes back as :class:`Blocked` with the rail, so it is logged,
counted and shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from rotator.models import COMPLETED, MANUAL, Backup, ServerRef
from rotator.retention import Decision, Policy, ServerPlan, plan_server
from rotator.slots import Action, SlotDecision, decide


class Rail(StrEnum):
    """The safety rails; each names why a delete was not sent."""

    DRY_RUN = "dry_run"
    MAX_DELETES = "max_deletes_per_run"
    NOT_CANDIDATE = "not_candidate"
    PARTIAL_LISTING = "partial_listing"
    BACKUP_NOT_COMPLETED = "backup_not_completed"
    NEW_BACKUP = "new_backup"


@dataclass(frozen=True, slots=True)
class Blocked:
    decision: Decision
    rail: Rail


@dataclass(frozen=True, slots=True)
class PruneActions:
    """The deletes to send (oldest first) and the ones the rails stopped."""

    server_id: int
    delete: tuple[Decision, ...]
    blocked: tuple[Blocked, ...]


def prune_actions(
    plan: ServerPlan,
    policy: Policy,
    *,
    max_deletes: int,
    dry_run: bool,
    new_backup_id: int | None = None,
) -> PruneActions:
    """Apply the rails to ``plan``: oldest first, candidates only, at most ``max_deletes``, none if dry.

    The cap comes before the dry run: a dry run's ``dry_run`` deletes are
    exactly those a real run would send, and the rest are ``max_deletes_per_run``.
    """
    send: list[Decision] = []
    blocked: list[Blocked] = []
    allowed = 0  # deletes within the cap: sent, or in a dry run said to be (the cap comes first)
    # the plan lists deletes newest first; the oldest go first
    for decision in sorted(plan.delete, key=lambda d: d.backup.sort_key):
        backup = decision.backup
        deletable = policy.untouched_reason(backup) is None or policy.owns_failed(backup)
        if backup.server_id != plan.server_id or not deletable:
            blocked.append(Blocked(decision, Rail.NOT_CANDIDATE))  # belt and braces: the plan said delete
        elif backup.id == new_backup_id:
            blocked.append(Blocked(decision, Rail.NEW_BACKUP))
        elif allowed >= max_deletes:
            blocked.append(Blocked(decision, Rail.MAX_DELETES))
        elif dry_run:
            allowed += 1
            blocked.append(Blocked(decision, Rail.DRY_RUN))
        else:
            allowed += 1
            send.append(decision)
    return PruneActions(plan.server_id, tuple(send), tuple(blocked))


def nothing_to_prune(plan: ServerPlan, rail: Rail) -> PruneActions:
    """Every delete of ``plan`` refused for one reason (a partial listing, a failed new backup)."""
    return PruneActions(plan.server_id, (), tuple(Blocked(d, rail) for d in plan.delete))


# --- a run's actions on one server ----------------------------------------------------------------

PLANNED_ID: Final = 0
"""The id of the backup a run would create, in a plan (the API's ids are 1 or more)."""


class RunJob(Protocol):
    """What a run's plan needs of a job (:class:`rotator.runner.JobSpec` is one)."""

    @property
    def policy(self) -> Policy: ...

    @property
    def create(self) -> bool: ...

    @property
    def max_deletes_per_run(self) -> int: ...

    @property
    def attempts(self) -> int: ...

    @property
    def dry_run(self) -> bool: ...

    def describe(self, slot: datetime, attempt: int = 1) -> str: ...


@dataclass(frozen=True, slots=True)
class WouldCreate:
    """The backup a run would create: its attempt, its description, when (about) and why it is kept."""

    attempt: int
    description: str
    created_at: datetime
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ServerActions:
    """What one run does on one server: its slot decision, the backup it relies on, and its prune.

    ``plan`` is the retention plan over the backups as they are when the run
    prunes: with the backup it would create (id :data:`PLANNED_ID`) or the
    in-progress one it waits for counted as completed. ``prune`` is that plan
    through the rails. A run's real prune computes this on the view it reads
    after its backup completed; ``rotator plan`` and a dry run compute it on the
    listing they have: the same function, so they agree.
    """

    server_id: int
    slot: datetime | None
    slot_action: Action | None  # None: the policy does not create (prune only)
    attempt: int
    new_backup: Backup | None  # the slot's backup the prune rests on (adopted, or would be created)
    would_create: WouldCreate | None
    plan: ServerPlan
    prune: PruneActions
    waits: bool = False  # the slot's backup was in progress: the run waits for it, then prunes

    @property
    def keep(self) -> tuple[Decision, ...]:
        """The kept backups that exist (the one a run would create is :attr:`would_create`)."""
        return tuple(d for d in self.plan.keep if d.backup.id != PLANNED_ID)

    @property
    def deletes(self) -> tuple[Decision, ...]:
        """What the run deletes (or a dry run would): sent, or stopped only by the dry-run rail."""
        dry = tuple(b.decision for b in self.prune.blocked if b.rail is Rail.DRY_RUN)
        return tuple(sorted((*self.prune.delete, *dry), key=lambda d: d.backup.sort_key))

    @property
    def held_back(self) -> tuple[Blocked, ...]:
        """Deletes the plan wants that a rail other than the dry run stops (the cap, above all)."""
        return tuple(b for b in self.prune.blocked if b.rail is not Rail.DRY_RUN)


def run_actions(
    backups: Iterable[Backup],
    job: RunJob,
    slot: datetime | None,
    now: datetime,
    *,
    server_id: int,
    dry_run: bool = False,
    deleted: int = 0,
    new_backup: Backup | None = None,
) -> ServerActions:
    """What a run of ``job`` for ``slot`` does on ``server_id``, from its listed ``backups``.

    The slot decision (:func:`rotator.slots.decide`, on a confirmed view): a
    completed backup of the slot is adopted; one in progress is adopted and
    counted as completed (the run waits for it); a create or retry adds the
    backup it would make, completed at ``now``; when every attempt failed the
    run prunes nothing. Then retention at ``now`` and the rails: the slot's
    backup is never deleted, at most ``max_deletes_per_run - deleted`` go
    (oldest first), none in a dry run.

    ``new_backup``: the runner's own backup of the slot, listed as completed in
    ``backups`` (its real prune): it is the one protected. ``slot`` None: the
    job does not create.
    """
    listing = list(backups)
    policy = job.policy
    decision: SlotDecision | None = None
    would: tuple[int, str] | None = None  # attempt and description of the backup it would create
    settled = new_backup
    waits = False
    if job.create and slot is not None:
        decision = decide(listing, policy.name, slot, attempts=job.attempts)
        if new_backup is not None:
            pass  # the runner's own, listed completed: the run's prune
        elif decision.action is Action.ADOPT and decision.backup is not None:
            settled = decision.backup
            if settled.status != COMPLETED:  # in progress: the run waits for it, then prunes
                waits = True
                completed = settled.model_copy(update={"status": COMPLETED})
                listing = [completed if b.id == settled.id else b for b in listing]
                settled = completed
        elif decision.creates:
            would = (decision.attempt, job.describe(slot, decision.attempt))
            # the API writes whole seconds
            settled = _planned_backup(server_id, listing, would[1], now.replace(microsecond=0))
            listing.append(settled)
    plan = plan_server(listing, policy, now, server_id=server_id)
    if settled is None and decision is not None:
        # every attempt failed (or a create is undecided): the run prunes nothing on this server
        prune = nothing_to_prune(plan, Rail.BACKUP_NOT_COMPLETED)
    else:
        prune = prune_actions(
            plan,
            policy,
            max_deletes=max(job.max_deletes_per_run - deleted, 0),
            dry_run=dry_run,
            new_backup_id=settled.id if settled is not None else None,
        )
    would_create = None
    if would is not None:
        kept = next((d for d in plan.keep if d.backup.id == PLANNED_ID), None)
        reasons = kept.reasons if kept is not None else ()
        would_create = WouldCreate(would[0], would[1], now.replace(microsecond=0), reasons)
    return ServerActions(
        server_id=server_id,
        slot=slot if job.create else None,
        slot_action=decision.action if decision is not None else None,
        attempt=decision.attempt if decision is not None else 0,
        new_backup=settled,
        would_create=would_create,
        plan=plan,
        prune=prune,
        waits=waits,
    )


def _planned_backup(server_id: int, listing: Sequence[Backup], description: str, now: datetime) -> Backup:
    """The backup a run would create: manual, completed at ``now``, carrying the slot's marker."""
    name = next((b.server.name for b in listing), "")
    return Backup.model_construct(
        id=PLANNED_ID,
        server=ServerRef.model_construct(id=server_id, name=name),
        backup_type=MANUAL,
        status=COMPLETED,
        size_mb=None,
        created_at=now,
        expires_at=None,
        description=description,
    )
