"""What a run tells its observers: frozen, typed events, and the one hook they come through.

The runner emits these; logs, metrics, pings, notifications and the systemd
status line subscribe to them (:class:`Events`), each reading fields, never
sentences. Every event names its run (:class:`RunKey`: policy, slot, dry run).

=========================  ==========================================================
event (``name``)           when
=========================  ==========================================================
:class:`RunStarted`        a run of a policy's slot begins (``run.started``)
:class:`BackupCreated`     the API answered a create with a backup (``backup.created``)
:class:`BackupCompleted`   the slot's backup is listed completed (``backup.completed``)
:class:`BackupFailed`      the slot's backup failed, vanished or outlived its wait
:class:`BackupKept`        retention keeps a backup (``backup.kept``, one per backup)
:class:`PruneHeldBack`     a delete the plan asked for and a rail refused (the cap, a dry run)
:class:`BackupDeleted`     a DELETE went through, or the backup was already gone
:class:`ServerPruned`      one server's prune is over: what it kept, deleted and held back
:class:`RunFinished`       the run is over: every server's outcome (``run.finished``)
=========================  ==========================================================

An observer is a callable taking an event; it may return an awaitable, which
the run awaits (pings and notifications send over the network). An observer
that raises is logged (``observer.failed``) and the run goes on: telling
somebody about a run is never a reason for it to fail.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

import structlog

log = structlog.get_logger("rotator.events")


class Outcome(StrEnum):
    """One server's outcome in one run."""

    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"  # a create whose outcome never became known: maybe a backup, maybe not
    ABANDONED = "abandoned"  # shutdown came first


class Status(StrEnum):
    """A run's outcome as a whole: the worst of its servers' (failed, unknown, abandoned, ok)."""

    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"
    ABANDONED = "abandoned"


_WORST_FIRST = (
    (Outcome.FAILED, Status.FAILED),
    (Outcome.UNKNOWN, Status.UNKNOWN),
    (Outcome.ABANDONED, Status.ABANDONED),
)


def status_of(outcomes: Iterable[Outcome]) -> Status:
    """The run's status from its servers' outcomes: the worst one; ``ok`` for none."""
    seen = set(outcomes)
    for outcome, status in _WORST_FIRST:
        if outcome in seen:
            return status
    return Status.OK


@dataclass(frozen=True, slots=True)
class RunKey:
    """Which run an event belongs to."""

    policy: str
    slot: datetime
    dry_run: bool


@dataclass(frozen=True, slots=True)
class Event:
    """Something a run did or saw; ``name`` is its log event's name."""

    name: ClassVar[str] = "event"
    run: RunKey

    @property
    def policy(self) -> str:
        return self.run.policy

    @property
    def slot(self) -> datetime:
        return self.run.slot

    @property
    def dry_run(self) -> bool:
        return self.run.dry_run


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    name: ClassVar[str] = "run.started"
    servers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BackupCreated(Event):
    name: ClassVar[str] = "backup.created"
    server_id: int
    backup_id: int
    attempt: int
    description: str


@dataclass(frozen=True, slots=True)
class BackupCompleted(Event):
    name: ClassVar[str] = "backup.completed"
    server_id: int
    backup_id: int


@dataclass(frozen=True, slots=True)
class BackupFailed(Event):
    """The slot's backup is not usable: ``status`` is the API's (``failed``...), ``vanished`` or
    ``wait_timeout``."""

    name: ClassVar[str] = "backup.failed"
    server_id: int
    backup_id: int
    status: str


@dataclass(frozen=True, slots=True)
class BackupKept(Event):
    name: ClassVar[str] = "backup.kept"
    server_id: int
    backup_id: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PruneHeldBack(Event):
    """A delete the plan asked for that a rail refused: ``rail`` is a :class:`~rotator.planner.Rail` value
    (``max_deletes_per_run``, ``dry_run``, ...)."""

    name: ClassVar[str] = "prune.held_back"
    server_id: int
    backup_id: int
    rail: str
    reasons: tuple[str, ...] = ()


NOT_KEPT = "kept by no rule"
"""A deleted candidate's reason in :class:`ServerPruned` and :class:`PruneHeldBack` (retention gives
keeps their reasons and a superseded failed attempt its own; a plain delete's decision has none, and
:class:`BackupDeleted` carries the decision's reasons as they are)."""


@dataclass(frozen=True, slots=True)
class BackupDeleted(Event):
    """A backup deleted by the prune; ``already_gone`` when the API said 404 (deleted by somebody else)."""

    name: ClassVar[str] = "backup.deleted"
    server_id: int
    backup_id: int
    created_at: datetime | None = None
    reasons: tuple[str, ...] = ()
    already_gone: bool = False


@dataclass(frozen=True, slots=True)
class Deleted:
    """One backup a server's prune deleted, and why retention let it go."""

    backup_id: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HeldBack:
    """One delete a rail refused."""

    backup_id: int
    rail: str


@dataclass(frozen=True, slots=True)
class ServerPruned(Event):
    """One server's prune is over (also when it stopped early: ``deleted`` is what went)."""

    name: ClassVar[str] = "server.pruned"
    server_id: int
    kept: int
    deleted: tuple[Deleted, ...]
    held_back: tuple[HeldBack, ...]


@dataclass(frozen=True, slots=True)
class ServerOutcome:
    """What one server's run came to."""

    server_id: int
    outcome: Outcome = Outcome.OK
    error: str | None = None
    backup_id: int | None = None
    adopted: bool = False
    attempt: int = 0
    created: int = 0
    deleted: tuple[int, ...] = ()
    kept: int = 0
    blocked: tuple[HeldBack, ...] = ()
    retry: bool = False


TOTALS = ("servers", "created", "adopted", "deleted", "kept", "failed", "unknown", "abandoned", "blocked")


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    """The run is over; ``duration`` in seconds, waits included."""

    name: ClassVar[str] = "run.finished"
    servers: tuple[ServerOutcome, ...]
    duration: float

    @property
    def status(self) -> Status:
        return status_of(server.outcome for server in self.servers)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def totals(self) -> dict[str, int]:
        """The run's counts, keyed as :data:`TOTALS`."""
        servers = self.servers
        return {
            "servers": len(servers),
            "created": sum(s.created for s in servers),
            "adopted": sum(1 for s in servers if s.adopted),
            "deleted": sum(len(s.deleted) for s in servers),
            "kept": sum(s.kept for s in servers),
            "failed": sum(1 for s in servers if s.outcome is Outcome.FAILED),
            "unknown": sum(1 for s in servers if s.outcome is Outcome.UNKNOWN),
            "abandoned": sum(1 for s in servers if s.outcome is Outcome.ABANDONED),
            "blocked": sum(len(s.blocked) for s in servers),
        }

    def summary(self) -> str:
        """The headline, then each server that did not succeed with its error (one line)."""
        failures = "; ".join(f"server {s.server_id}: {s.error}" for s in self.not_ok())
        return self.headline() + (f" — {failures}" if failures else "")

    def not_ok(self) -> tuple[ServerOutcome, ...]:
        """The servers that did not succeed, in the run's order."""
        return tuple(s for s in self.servers if s.outcome is not Outcome.OK)

    def headline(self) -> str:
        """The run in one line: policy, state and counts (the failures' errors are not in it)."""
        t = self.totals()
        state = "ok" if self.ok else self.status.value.upper()
        deletes = f"{t['deleted']} deleted, {t['kept']} kept, {t['blocked']} blocked"
        if self.dry_run:  # what the run would have done: its deletes are held by the dry-run rail alone
            would = sum(1 for s in self.servers for b in s.blocked if b.rail == "dry_run")
            deletes = f"{would} would be deleted, {t['kept']} kept, {t['blocked'] - would} held back"
        return (
            f"policy {self.policy} {state}{' (dry run)' if self.dry_run else ''}: "
            f"{t['servers']} servers, {t['created']} created, {t['adopted']} adopted, "
            f"{deletes}, {t['failed']} failed, "
            f"{t['unknown']} unknown, {t['abandoned']} abandoned in {self.duration:.1f}s"
        )


Observer = Callable[[Event], Awaitable[None] | None]
"""An event's subscriber; an awaitable it returns is awaited before the run goes on."""


class Events:
    """The hook: observers in the order given, each told every event; one that raises is logged."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers: list[Observer] = list(observers)

    def subscribe(self, observer: Observer) -> None:
        self.observers.append(observer)

    def with_observers(self, observers: Iterable[Observer]) -> Events:
        """A hook telling these observers too, after this one's (a run's own: its pings, say)."""
        return Events([*self.observers, *observers])

    async def emit(self, event: Event) -> None:
        for observer in self.observers:
            try:
                pending = observer(event)
                if inspect.isawaitable(pending):
                    await pending
            except Exception as exc:  # noqa: BLE001 - an observer's bug never fails the run
                log.error(
                    "observer.failed",
                    observer=_name_of(observer),
                    on=event.name,
                    error=f"{type(exc).__name__}: {exc}".rstrip(": "),
                )


def _name_of(observer: Observer) -> str:
    name = getattr(observer, "__qualname__", None) or type(observer).__qualname__
    return str(name)
