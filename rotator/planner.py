"""What one run may delete on one server: the retention plan, passed through the safety rails.

Pure: no I/O, no clock. The runner asks :func:`prune_actions` and sends
exactly the deletes it returns; everything it refuses comes back as
:class:`Blocked` with the rail that stopped it, so it is logged and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rotator.retention import Decision, Policy, ServerPlan


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
    """Apply the rails to ``plan``: oldest first, candidates only, at most ``max_deletes``, none if dry."""
    send: list[Decision] = []
    blocked: list[Blocked] = []
    # the plan lists deletes newest first; the oldest go first
    for decision in sorted(plan.delete, key=lambda d: d.backup.sort_key):
        backup = decision.backup
        deletable = policy.untouched_reason(backup) is None or policy.owns_failed(backup)
        if backup.server_id != plan.server_id or not deletable:
            blocked.append(Blocked(decision, Rail.NOT_CANDIDATE))  # belt and braces: the plan said delete
        elif backup.id == new_backup_id:
            blocked.append(Blocked(decision, Rail.NEW_BACKUP))
        elif dry_run:
            blocked.append(Blocked(decision, Rail.DRY_RUN))
        elif len(send) >= max_deletes:
            blocked.append(Blocked(decision, Rail.MAX_DELETES))
        else:
            send.append(decision)
    return PruneActions(plan.server_id, tuple(send), tuple(blocked))


def nothing_to_prune(plan: ServerPlan, rail: Rail) -> PruneActions:
    """Every delete of ``plan`` refused for one reason (a partial listing, a failed new backup)."""
    return PruneActions(plan.server_id, (), tuple(Blocked(d, rail) for d in plan.delete))
