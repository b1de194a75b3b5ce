"""The log subscriber: each typed event of a run as one structlog event, at its level.

At fleet scale the keeps dominate a run's log (30 per server), so each server's
prune is one ``server.pruned`` line at info (kept and deleted counts, the
deleted ids with their reasons, what a rail held back) and the per-backup
``backup.kept`` lines are at debug. The run's policy and slot are in the log
context that the runner binds, so they are not repeated here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from rotator.events import (
    BackupCompleted,
    BackupCreated,
    BackupDeleted,
    BackupFailed,
    BackupKept,
    Event,
    PruneHeldBack,
    RunFinished,
    RunStarted,
    ServerPruned,
)
from rotator.observability import debug_logged

log = structlog.get_logger("rotator.runner")

DRY_RUN_RAIL = "dry_run"  # planner.Rail.DRY_RUN's value: a dry run's would-be delete


def log_event(event: Event) -> None:
    """Log ``event`` (an observer for :class:`~rotator.events.Events`); events it does not know pass."""
    match event:
        case BackupKept():
            if not debug_logged():
                return  # a fleet's 30 keeps a server: not even a logger bound for lines nobody writes
            reasons = list(event.reasons)
            log.debug("backup.kept", server_id=event.server_id, backup_id=event.backup_id, reasons=reasons)
        case PruneHeldBack():
            name = "backup.would_delete" if event.rail == DRY_RUN_RAIL else "prune.blocked"
            log.info(name, server_id=event.server_id, backup_id=event.backup_id, rail=event.rail)
        case BackupDeleted(already_gone=True):
            sid, backup_id = event.server_id, event.backup_id
            log.info("backup.deleted", server_id=sid, backup_id=backup_id, already_gone=True)
        case BackupDeleted():
            log.info(
                "backup.deleted",
                server_id=event.server_id,
                backup_id=event.backup_id,
                created_at=_iso(event.created_at) if event.created_at is not None else None,
                reasons=list(event.reasons),
            )
        case ServerPruned():
            log.info("server.pruned", **pruned_fields(event))
        case BackupCreated():
            log.info(
                "backup.created",
                server_id=event.server_id,
                backup_id=event.backup_id,
                description=event.description,
            )
        case BackupCompleted():
            log.info("backup.completed", server_id=event.server_id, backup_id=event.backup_id)
        case BackupFailed():
            log.error(
                "backup.failed", server_id=event.server_id, backup_id=event.backup_id, status=event.status
            )
        case RunStarted():
            log.info("run.started", servers=len(event.servers), dry_run=event.dry_run)
        case RunFinished():
            log.info(
                "run.finished",
                status=event.status.value,
                ok=event.ok,
                duration_s=round(event.duration, 2),
                **event.totals(),
            )


def pruned_fields(event: ServerPruned) -> dict[str, Any]:
    """``server.pruned``'s fields: counts, and each deleted backup's id with its reasons."""
    fields: dict[str, Any] = {
        "server_id": event.server_id,
        "kept": event.kept,
        "deleted": len(event.deleted),
        "deleted_backups": [{"id": d.backup_id, "reasons": list(d.reasons)} for d in event.deleted],
    }
    if event.held_back:
        fields["held_back"] = len(event.held_back)
        fields["held_back_backups"] = [{"id": h.backup_id, "rail": h.rail} for h in event.held_back]
    return fields


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
