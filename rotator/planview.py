"""What ``rotator plan`` and ``rotator run-once --dry-run`` show: a run's actions, as JSON or a table.

Pure: :func:`build_plans` takes the jobs (each with the slot a run now would
have), a listing and ``now``, and returns each server's
:class:`~rotator.planner.ServerActions` from :func:`rotator.planner.run_actions`,
the function the runner prunes with; :func:`plans_of_reports` takes the same
from a dry run's reports. :func:`plan_document` / :func:`render_json` and
:func:`render_table` turn either into text, in the spirit of restic's
``forget --dry-run``: per server what the run would create, keep (with the
reasons), delete, and hold back (with the rail). Nothing here reads a clock,
a file or the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from rotator.errors import ConfigError
from rotator.models import MANUAL, Backup, format_timestamp
from rotator.planner import PLANNED_ID, Blocked, Rail, RunJob, ServerActions, run_actions
from rotator.retention import Decision
from rotator.slots import Action

if TYPE_CHECKING:
    from rotator.runner import RunReport

DESCRIPTION_WIDTH: Final = 60


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A job and the slot a run of it now would have (None: it does not create)."""

    job: RunJob
    slot: datetime | None


@dataclass(frozen=True, slots=True)
class ServerRun:
    """One server's actions, or why there are none (a dry run's server that failed first)."""

    server_id: int
    actions: ServerActions | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a run of one policy does on each of its servers."""

    policy: str
    now: datetime
    slot: datetime | None
    servers: tuple[ServerRun, ...]
    dry_run: bool = False  # the run creates and deletes nothing (dry_run: true, or --dry-run)


def build_plans(
    jobs: Iterable[PlannedJob],
    backups: Iterable[Backup],
    now: datetime,
    *,
    policy: str | None = None,
    server: int | None = None,
) -> tuple[RunPlan, ...]:
    """The actions of a run now of each job (or only ``policy``), on its servers (or only ``server``).

    ``backups`` is a listing of any servers; each job sees its own servers'
    manual backups, as a run does. An unknown policy name, or a server no chosen policy has, is a
    :class:`ConfigError` (the CLI's values are configuration too).
    """
    chosen = list(jobs)
    if policy is not None:
        known = ", ".join(item.job.policy.name for item in chosen) or "none"
        chosen = [item for item in chosen if item.job.policy.name == policy]
        if not chosen:
            raise ConfigError(f"no policy named {policy!r} (known: {known})")
    if server is not None:
        chosen = [item for item in chosen if server in item.job.policy.servers]
        if not chosen:
            scope = f"policy {policy!r}" if policy is not None else "any policy"
            raise ConfigError(f"server {server} is not one of the servers of {scope}")
    by_server: dict[int, list[Backup]] = {}
    for backup in backups:
        if backup.backup_type == MANUAL:  # what a run reads: automatic backups are never its to touch
            by_server.setdefault(backup.server_id, []).append(backup)
    plans = []
    for item in chosen:
        job = item.job
        servers = [sid for sid in job.policy.servers if server in (None, sid)]
        runs = tuple(
            ServerRun(
                sid,
                run_actions(by_server.get(sid, ()), job, item.slot, now, server_id=sid, dry_run=job.dry_run),
            )
            for sid in servers
        )
        plans.append(RunPlan(job.policy.name, now, item.slot, runs, job.dry_run))
    return tuple(plans)


def plans_of_reports(reports: Iterable[RunReport], now: datetime) -> tuple[RunPlan, ...]:
    """What dry runs found, as plans: each server's last actions, or its error."""
    plans = []
    for report in reports:
        runs = tuple(ServerRun(result.server_id, result.actions, result.error) for result in report.servers)
        plans.append(RunPlan(report.policy, now, report.slot, runs, report.dry_run))
    return tuple(plans)


# --- JSON ---------------------------------------------------------------------------------------


def plan_document(plans: Iterable[RunPlan]) -> dict[str, Any]:
    """The document ``rotator plan --json`` prints (key order as documented)."""
    return {
        "policies": [
            {
                "policy": plan.policy,
                "now": format_timestamp(plan.now),
                "slot": format_timestamp(plan.slot) if plan.slot is not None else None,
                "dry_run": plan.dry_run,
                "servers": [_server_document(server) for server in plan.servers],
            }
            for plan in plans
        ]
    }


def _server_document(run: ServerRun) -> dict[str, Any]:
    actions = run.actions
    document: dict[str, Any] = {"server_id": run.server_id}
    if actions is None:
        empty: list[Any] = []
        document |= {"action": None, "would_create": None, "keep": empty, "delete": empty}
        document |= {"held_back": empty, "untouched": empty}
    else:
        would = actions.would_create
        document |= {
            "action": actions.slot_action.value if actions.slot_action is not None else None,
            "would_create": None
            if would is None
            else {
                "attempt": would.attempt,
                "description": would.description,
                "created_at": format_timestamp(would.created_at),
                "reasons": list(would.reasons),
            },
            "keep": [_decided(decision) for decision in _newest_first(actions.keep)],
            "delete": [_decided(decision) for decision in _newest_first(actions.deletes)],
            "held_back": [
                {**_decided(blocked.decision), "rail": blocked.rail.value}
                for blocked in sorted(actions.held_back, key=_blocked_age, reverse=True)
            ],
            "untouched": [
                {
                    "id": decision.backup.id,
                    "created_at": format_timestamp(decision.backup.created_at),
                    "reason": decision.reason,
                }
                for decision in actions.plan.untouched
            ],
        }
    if run.error is not None:
        document["error"] = run.error
    return document


def _blocked_age(blocked: Blocked) -> tuple[datetime, int]:
    return blocked.decision.backup.sort_key


def _newest_first(decisions: Iterable[Decision]) -> list[Decision]:
    return sorted(decisions, key=lambda d: d.backup.sort_key, reverse=True)


def _decided(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.backup.id,
        "created_at": format_timestamp(decision.backup.created_at),
        "reasons": list(decision.reasons),
    }


def render_json(plans: Iterable[RunPlan], *, indent: int | None = 2) -> str:
    """:func:`plan_document` as JSON text."""
    return json.dumps(plan_document(plans), indent=indent, ensure_ascii=False)


# --- table --------------------------------------------------------------------------------------


def render_table(plans: Iterable[RunPlan]) -> str:
    """A table per server of each policy, then one line of totals.

    Rows, newest first: WOULD CREATE (the backup the run makes), ADOPT (the
    slot's backup it uses), KEEP with the rules that keep it, DELETE, HELD BACK
    with the rail that stops it (``max_deletes_per_run`` above all), UNTOUCHED
    with why it is not the policy's to delete.
    """
    plans = tuple(plans)
    blocks = [_server_table(plan, server) for plan in plans for server in plan.servers]
    if not blocks:
        return "no policies to plan\n"
    return "\n\n".join([*blocks, _totals(plans)]) + "\n"


def _totals(plans: Sequence[RunPlan]) -> str:
    runs = [server for plan in plans for server in plan.servers]
    actions = [run.actions for run in runs if run.actions is not None]
    created = sum(1 for a in actions if a.would_create is not None)
    deletes = sum(len(a.deletes) for a in actions)
    held = sum(len(a.held_back) for a in actions)
    failed = sum(1 for run in runs if run.error is not None)
    failures = f", {failed} failed" if failed else ""
    servers = f"{len(runs)} server{'' if len(runs) == 1 else 's'}"
    return f"total: {servers}, create {created}, delete {deletes}, held back {held}{failures}"


def _slot_words(actions: ServerActions) -> str:
    action = actions.slot_action
    if action is None:
        return ""
    new = actions.new_backup
    if actions.would_create is not None:
        attempt = actions.would_create.attempt
        return f"create{'' if attempt == 1 else f' attempt {attempt}'}, "
    if action is Action.ADOPT and new is not None:
        return f"wait for {new.id} (in progress), " if actions.waits else f"adopt {new.id}, "
    if action is Action.GIVE_UP:
        return f"all {actions.attempt} attempts failed: nothing deleted, "
    return f"{action.value}: nothing deleted, "


def _server_table(plan: RunPlan, run: ServerRun) -> str:
    slot = f", slot {format_timestamp(plan.slot)}" if plan.slot is not None else ""
    slot += " (dry run: nothing is created or deleted)" if plan.dry_run else ""
    head = f"policy {plan.policy}, server {run.server_id}"
    actions = run.actions
    if actions is None:
        return f"{head}{slot}: nothing planned: {run.error or 'no listing'}"
    rows = _rows(actions)
    names = {backup.server.name for _, backup, _ in rows if backup.id != PLANNED_ID}
    name = f" ({names.pop()})" if len(names) == 1 else ""
    heading = (
        f"{head}{name} at {format_timestamp(plan.now)}{slot}: {_slot_words(actions)}"
        f"keep {len(actions.keep)}, delete {len(actions.deletes)}, held back {len(actions.held_back)}, "
        f"untouched {len(actions.plan.untouched)}"
    )
    if run.error is not None:
        heading += f" (failed: {run.error})"
    if not rows:
        return f"{heading}\n  (no backups)"
    cells = [("ACTION", "ID", "CREATED_AT", "DESCRIPTION", "REASONS")]
    cells += [
        (
            label,
            "new" if backup.id == PLANNED_ID else str(backup.id),
            format_timestamp(backup.created_at),
            _clip(backup.description or ""),
            reason or "-",
        )
        for label, backup, reason in rows
    ]
    return "\n".join([heading, *_aligned(cells)])


def _rows(actions: ServerActions) -> list[tuple[str, Backup, str]]:
    """Every backup of the server with its label and reason, newest first."""
    new_id = actions.new_backup.id if actions.new_backup is not None else None
    rows: list[tuple[str, Backup, str]] = []
    for decision in actions.plan.keep:
        backup = decision.backup
        if backup.id == PLANNED_ID:
            label = "WOULD CREATE"
        elif backup.id == new_id and actions.slot_action is Action.ADOPT:
            label = "ADOPT"
        else:
            label = "KEEP"
        rows.append((label, backup, decision.reason))
    rows += [("DELETE", decision.backup, decision.reason) for decision in actions.deletes]
    rows += [
        ("HELD BACK", blocked.decision.backup, _rail_reason(blocked, actions))
        for blocked in actions.held_back
    ]
    rows += [("UNTOUCHED", decision.backup, decision.reason) for decision in actions.plan.untouched]
    rows.sort(key=lambda row: row[1].sort_key, reverse=True)
    return rows


def _rail_reason(blocked: Blocked, actions: ServerActions) -> str:
    if blocked.rail is Rail.MAX_DELETES:
        return f"max_deletes_per_run ({len(actions.deletes)} go this run)"
    return blocked.rail.value


def _aligned(cells: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= DESCRIPTION_WIDTH:
        return flat
    # Keep the end: that is where the marker is.
    return "..." + flat[-(DESCRIPTION_WIDTH - 3) :]
