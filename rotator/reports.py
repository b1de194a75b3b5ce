"""The ``--json`` documents of the commands that act: ``run-once``, ``check-config``, ``backups delete``,
``restore``. Plain data (dicts, lists, strings, numbers), timestamps as the API writes them (``...Z``).

Each document is stable for scripts: keys are only ever added. The shapes are in README.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rotator.models import format_timestamp
from rotator.runner import RunReport, ServerResult


def run_report_document(report: RunReport) -> dict[str, Any]:
    """One policy's run: its status, totals and what happened on each server."""
    return {
        "policy": report.policy,
        "slot": format_timestamp(report.slot),
        "dry_run": report.dry_run,
        "status": report.status.value,
        "duration_s": round(report.duration, 3),
        "totals": report.totals(),
        "servers": [_server_document(result) for result in report.servers],
    }


def _server_document(result: ServerResult) -> dict[str, Any]:
    backup = result.backup
    return {
        "server_id": result.server_id,
        "outcome": result.outcome.value,
        "backup": None if backup is None else {"id": backup.id, "status": backup.status},
        "adopted": result.adopted,
        "attempt": result.attempt,
        "created": result.created,
        "deleted": list(result.deleted),
        "kept": result.kept,
        "blocked": [{"id": b.decision.backup.id, "rail": b.rail.value} for b in result.blocked],
        "error": result.error,
        "retry": result.retry,
    }


def run_once_document(reports: Sequence[RunReport], exit_code: int) -> dict[str, Any]:
    """``run-once --json``: every policy's run and the exit code they add up to."""
    return {"exit_code": exit_code, "runs": [run_report_document(report) for report in reports]}


def policy_check_document(
    name: str,
    *,
    servers: Sequence[int],
    timezone: str,
    dry_run: bool,
    create: bool,
    next_runs: Sequence[datetime] | None,
    warnings: Sequence[str],
    notify: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """One policy as ``check-config --json`` shows it; ``next_runs`` is ``None`` without a schedule."""
    return {
        "name": name,
        "servers": list(servers),
        "timezone": timezone,
        "dry_run": dry_run,
        "create": create,
        "next_runs": None if next_runs is None else [format_timestamp(slot) for slot in next_runs],
        "warnings": list(warnings),
        "notify": list(notify),  # each {"on": [...], "targets": [...]}, targets shown without tokens
    }


def delete_document(
    deleted: Sequence[int], already_gone: Sequence[int], failed: dict[int, str]
) -> dict[str, Any]:
    """``backups delete --json``: what went, what was gone before, what failed and why."""
    return {
        "deleted": list(deleted),
        "already_gone": list(already_gone),
        "failed": [{"id": backup_id, "error": error} for backup_id, error in failed.items()],
    }


def restore_document(
    server_id: int, backup_id: int, *, accepted: bool, answer: object = None
) -> dict[str, Any]:
    """``restore --json``: whether the API accepted it (false: not asked) and its answer, as it came."""
    return {"server_id": server_id, "backup_id": backup_id, "accepted": accepted, "answer": answer}
