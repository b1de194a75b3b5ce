"""The sandbox's world: servers, their backups, and the log of what happened to them.

Nothing runs in the background. Every read or write first *settles* the state
against the clock: creates whose time has come end ``completed`` or
``failed``, automatic backups past ``expires_at`` vanish, and servers with a
daily automatic schedule get the backups they were due. Each of those lands in
the event log with the sandbox-clock instant at which it happened.

Whoever drives the sandbox can write into the same log: a ``note`` (e.g. "the
client process was killed here") or a ``snapshot`` of every backup present, so
that a reader of the log afterwards can replay the state from a known start
and see outside happenings in the same order as the backups' own events. A
*third party* (someone else with access to the account) can delete and create
backups too; its events say ``"by": "third_party"``.

Listings may lag the writes (``listing_lag``): while a lag is set, each backup
that appears, changes status or goes keeps a short history (a deleted one in a
graveyard), so that :meth:`SandboxState.listing` can show it as it was that
long ago; histories older than the lag are forgotten. Without a lag nothing is
kept and a listing is the true state.

Listings are ordered by id. The state keeps the ids sorted, all together and by backup type
(:class:`~rotator.sandbox.index.SortedIds`), and each server's backups apart, so that a page of the
account's listing costs time in proportion to the page, not to the account (:meth:`SandboxState.listed`);
only a lagging listing with changes still to hide is worked out whole.
"""

from __future__ import annotations

import heapq
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

from rotator.sandbox.clock import Clock, format_instant
from rotator.sandbox.index import SortedIds

BackupType = Literal["manual", "automatic"]
BACKUP_TYPES: tuple[BackupType, ...] = ("manual", "automatic")
EventKind = Literal["created", "completed", "failed", "deleted", "expired", "restored", "note", "listed"]
Actor = Literal["third_party"]
THIRD_PARTY: Actor = "third_party"
THIRD_PARTY_DESCRIPTION = "third party backup"

AUTOMATIC_LIFETIME = timedelta(days=30)
AUTOMATIC_DESCRIPTION = "Automatic daily backup"
_DUE_FINISH = 0
_DUE_EXPIRE = 1
_DUE_SCHEDULE = 2


class SandboxError(Exception):
    """Base of the state's refusals; the app turns each into an HTTP answer."""


class UnknownServer(SandboxError):
    """No server has this id."""


class UnknownBackup(SandboxError):
    """No (visible) backup has this id."""


class RestoreRefused(SandboxError):
    """The backup exists but cannot restore this server (another server's, or not completed)."""


@dataclass(frozen=True, slots=True)
class Server:
    """A server of the fleet; ``size_mb`` is about how large its backups are.

    ``automatic_at`` is the UTC time of day of its daily automatic backup, or
    ``None`` when the provider's automatic backups are off for it.
    """

    id: int
    name: str
    size_mb: int = 4096
    automatic_at: time | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``server`` object of a backup: ``{"id", "name"}``."""
        return {"id": self.id, "name": self.name}


@dataclass(slots=True)
class BackupRecord:
    """One backup as the sandbox stores it (mutable: its status moves on)."""

    id: int
    server_id: int
    backup_type: BackupType
    status: str
    created_at: datetime
    size_mb: int | None = None
    expires_at: datetime | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a backup, at a sandbox-clock instant, with its snapshot.

    A ``note`` event carries no backup (``backup`` is empty) but the ``note``
    its writer gave (see :meth:`SandboxState.note`); a ``listed`` event carries
    the ``listing`` a client read (see :meth:`SandboxState.log_listing`). ``by``
    names who other than the API's client did it (``"third_party"``).
    """

    seq: int
    kind: EventKind
    at: datetime
    backup: dict[str, Any]
    note: dict[str, Any] | None = None
    by: Actor | None = None
    listing: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"seq", "kind", "at", "backup"}`` (plus ``"by"`` for a third party's deed); for a note
        ``{"seq", "kind", "at", "exact", "note"}``; for a listing ``{..., "exact", "listing"}``.

        ``at`` has whole seconds, as the API writes times; notes and listings also give their ``exact``
        instant (microseconds), since they mark moments that a reader may need to place precisely.
        """
        head = {"seq": self.seq, "kind": self.kind, "at": format_instant(self.at)}
        if self.note is not None:
            return {**head, "exact": exact_instant(self.at), "note": self.note}
        if self.listing is not None:
            return {**head, "exact": exact_instant(self.at), "listing": self.listing}
        if self.by is not None:
            return {**head, "backup": self.backup, "by": self.by}
        return {**head, "backup": self.backup}


@dataclass(slots=True)
class _Past:
    """What a lagging listing must remember of one backup: when it appeared, changed status and went.

    ``born`` is ``None`` for a backup that was there before anything was remembered of it; ``first``
    is its status and size then.
    """

    record: BackupRecord
    born: datetime | None
    first: tuple[str, int | None]
    changes: list[tuple[datetime, str, int | None]] = field(default_factory=list)
    gone: datetime | None = None

    def as_of(self, at: datetime) -> BackupRecord | None:
        """The backup as it was at ``at``, or ``None`` if it was not there then."""
        if (self.born is not None and self.born > at) or (self.gone is not None and self.gone <= at):
            return None
        status, size_mb = self.first
        for when, later_status, later_size in self.changes:
            if when > at:
                break
            status, size_mb = later_status, later_size
        if (status, size_mb) == (self.record.status, self.record.size_mb):
            return self.record
        return replace(self.record, status=status, size_mb=size_mb)

    def forgettable(self, at: datetime) -> bool:
        """Whether a listing as of ``at`` (or later) no longer needs this history."""
        if self.gone is not None:
            return self.gone <= at
        return (self.born is None or self.born <= at) and all(when <= at for when, _, _ in self.changes)


@dataclass(frozen=True, slots=True)
class Listed:
    """A listing as it is now: how many backups it holds, and those at some of its positions.

    Read it at once (before anything else changes the state): ``window`` reads the live indexes.
    """

    count: int
    _window: Callable[[int, int], list[BackupRecord]]

    def window(self, start: int, stop: int) -> list[BackupRecord]:
        """The backups at positions ``start`` to ``stop - 1``, by id."""
        return self._window(start, stop)


@dataclass(slots=True)
class Fleet:
    """The seeded starting point: servers, their existing backups, and the id the next create gets."""

    servers: list[Server]
    backups: list[BackupRecord] = field(default_factory=list)
    next_id: int = 1


def whole_seconds(instant: datetime) -> datetime:
    """``instant`` in UTC without its fraction of a second (the API shows whole seconds)."""
    return instant.astimezone(UTC).replace(microsecond=0)


def exact_instant(instant: datetime) -> str:
    """``instant`` in UTC to the microsecond with a ``Z`` (for moments a reader must place precisely)."""
    return instant.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _completed_manual(record: BackupRecord) -> bool:
    return record.backup_type == "manual" and record.status == "completed"


class SandboxState:
    """Servers and backups, evaluated lazily against ``clock``; safe to share between threads."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        clock: Clock,
        seed: int = 0,
        create_seconds: float = 30.0,
    ) -> None:
        self.clock = clock
        self.create_seconds = create_seconds
        self._lock = threading.RLock()
        self._rng = random.Random(f"{seed}:backups")  # noqa: S311 -- seeded simulation, not secrets
        self._servers: dict[int, Server] = {server.id: server for server in fleet.servers}
        self._backups: dict[int, BackupRecord] = {}
        self._by_server: dict[int, dict[int, BackupRecord]] = {sid: {} for sid in self._servers}
        self._ids = SortedIds()  # every backup's id, in order
        self._ids_by_type: dict[str, SortedIds] = {}
        self._next_id = max([fleet.next_id, *(b.id + 1 for b in fleet.backups)])
        self._due: list[tuple[datetime, int, int, int]] = []
        self._due_seq = 0
        self._outcomes: dict[int, tuple[str, int | None]] = {}
        self._events: list[Event] = []
        self._api_offset = timedelta(0)
        self._lag = timedelta(0)
        self._past: dict[int, _Past] = {}  # only while a listing lag is set
        self.doomed = 0  # creates that were set to end ``failed`` (by ``fail_rate``)
        for record in fleet.backups:
            self._insert(record, index=False)
        self._ids = SortedIds(self._backups)
        for backup_type in {record.backup_type for record in self._backups.values()}:
            self._ids_by_type[backup_type] = SortedIds(
                record.id for record in self._backups.values() if record.backup_type == backup_type
            )
        now = clock.now()
        for server in fleet.servers:
            if server.automatic_at is not None:
                self._push(_next_daily(now, server.automatic_at), _DUE_SCHEDULE, server.id)

    def configure(self, *, api_clock_offset: float, listing_lag: float) -> None:
        """Set how far the API's clock is off the sandbox clock and how far its listings lag (seconds).

        A lag takes effect for changes from now on; without one, what a lag remembered is forgotten.
        """
        with self._lock:
            self.settle()  # what fell due before the change happened under the faults in force then
            self._api_offset = timedelta(seconds=api_clock_offset)
            self._lag = timedelta(seconds=listing_lag)
            if not self._lag:
                self._past.clear()

    @property
    def remembered(self) -> int:
        """How many backups (deleted ones too) a lagging listing keeps a history of; 0 without a lag."""
        with self._lock:
            return len(self._past)

    # -- reading -----------------------------------------------------------------

    def servers(self) -> list[Server]:
        """All servers, by id."""
        with self._lock:
            return sorted(self._servers.values(), key=lambda server: server.id)

    def has_server(self, server_id: int) -> bool:
        """Whether a server has this id."""
        with self._lock:
            return server_id in self._servers

    def server(self, server_id: int) -> Server:
        """The server with this id; raise :class:`UnknownServer` otherwise."""
        with self._lock:
            try:
                return self._servers[server_id]
            except KeyError:
                raise UnknownServer(f"server {server_id} does not exist") from None

    def backups(self, *, server_id: int | None = None, backup_type: str | None = None) -> list[BackupRecord]:
        """Visible backups matching the filters, ordered by id (not by time: ids are not a clock)."""
        with self._lock:
            self.settle()
            return self._current(server_id, backup_type)

    def _current(self, server_id: int | None, backup_type: str | None) -> list[BackupRecord]:
        if server_id is not None:
            mine = sorted(self._by_server.get(server_id, {}).values(), key=lambda b: b.id)
            if backup_type is None:
                return mine
            return [record for record in mine if record.backup_type == backup_type]
        index = self._index(backup_type)
        backups = self._backups
        return [backups[backup_id] for backup_id in index]

    def _index(self, backup_type: str | None) -> SortedIds:
        if backup_type is None:
            return self._ids
        return self._ids_by_type.get(backup_type) or SortedIds()

    def listed(self, *, server_id: int | None = None, backup_type: str | None = None) -> Listed:
        """What :meth:`listing` shows, read a window at a time: an account page costs the page.

        A server's own listing and a lagging listing with changes still to hide are worked out whole.
        """
        with self._lock:
            self.settle()
            if server_id is None and not self._lagging():
                index = self._index(backup_type)
                return Listed(len(index), lambda start, stop: self._records(index, start, stop))
            shown = self.listing(server_id=server_id, backup_type=backup_type)
            return Listed(len(shown), lambda start, stop: shown[max(0, start) : max(0, stop)])

    def _records(self, index: SortedIds, start: int, stop: int) -> list[BackupRecord]:
        with self._lock:
            backups = self._backups
            return [backups[backup_id] for backup_id in index.window(start, stop)]

    def _lagging(self) -> bool:
        """Whether a listing now differs from the true state (a lag with changes it must still hide)."""
        if not self._lag:
            return False
        self._forget(self.clock.now() - self._lag)
        return bool(self._past)

    def listing(self, *, server_id: int | None = None, backup_type: str | None = None) -> list[BackupRecord]:
        """The backups a listing shows: as they were ``listing_lag`` ago (by id), or as they are.

        A backup that appeared less than the lag ago is not there yet, one that went less than the
        lag ago is still there, and a status change shows once it is that old.
        """
        with self._lock:
            current = self.backups(server_id=server_id, backup_type=backup_type)
            if not self._lag:
                return current
            at = self.clock.now() - self._lag
            self._forget(at)
            if not self._past:
                return current
            shown: list[BackupRecord] = []
            for record in current:
                past = self._past.get(record.id)
                view = record if past is None else past.as_of(at)
                if view is not None:
                    shown.append(view)
            lingering = [
                view
                for past in self._past.values()
                if past.gone is not None
                and (server_id is None or past.record.server_id == server_id)
                and (backup_type is None or past.record.backup_type == backup_type)
                and (view := past.as_of(at)) is not None
            ]
            if lingering:
                shown = sorted([*shown, *lingering], key=lambda b: b.id)
            return shown

    def exists(self, backup_id: int) -> bool:
        """Whether a backup with this id is there now (whatever a lagging listing shows)."""
        with self._lock:
            self.settle()
            return backup_id in self._backups

    def backup(self, backup_id: int) -> BackupRecord:
        """The visible backup with this id; raise :class:`UnknownBackup` otherwise."""
        with self._lock:
            self.settle()
            try:
                return self._backups[backup_id]
            except KeyError:
                raise UnknownBackup(f"backup {backup_id} does not exist") from None

    def to_json(self, record: BackupRecord) -> dict[str, Any]:
        """The API's backup object for ``record``."""
        server = self._servers[record.server_id]
        return {
            "id": record.id,
            "server": server.to_json(),
            "backup_type": record.backup_type,
            "status": record.status,
            "size_mb": record.size_mb,
            "created_at": format_instant(record.created_at),
            "expires_at": format_instant(record.expires_at) if record.expires_at else None,
            "description": record.description,
        }

    def events(self, kind: str | None = None) -> list[Event]:
        """The event log so far (settled first), oldest first, optionally of one kind."""
        with self._lock:
            self.settle()
            if kind is None:
                return list(self._events)
            return [event for event in self._events if event.kind == kind]

    # -- writing -----------------------------------------------------------------

    def create_backup(
        self,
        server_id: int,
        description: str | None = None,
        *,
        fail_rate: float = 0.0,
        seconds: float | None = None,
    ) -> BackupRecord:
        """Start a manual backup; it ends ``failed`` with probability ``fail_rate``.

        It finishes ``seconds`` (sandbox clock) after now, by default the state's ``create_seconds``.
        """
        with self._lock:
            self.settle()
            server = self.server(server_id)
            now = self.clock.now()
            record = BackupRecord(
                id=self._take_id(),
                server_id=server.id,
                backup_type="manual",
                status="in_progress",
                created_at=whole_seconds(now + self._api_offset),
                description=description,
            )
            failed = self._rng.random() < fail_rate
            self.doomed += failed
            self._outcomes[record.id] = ("failed", None) if failed else ("completed", self._size(server))
            self._insert(record)
            self._born(record, now)
            self._log("created", now, record)
            duration = self.create_seconds if seconds is None else seconds
            self._push(now + timedelta(seconds=duration), _DUE_FINISH, record.id)
            return record

    def add_backup(
        self,
        server_id: int,
        *,
        backup_type: BackupType = "manual",
        status: str = "completed",
        created_at: datetime | None = None,
        size_mb: int | None = None,
        expires_at: datetime | None = None,
        description: str | None = None,
    ) -> BackupRecord:
        """Put a backup in place as if it had always been there (for tests; no event is logged).

        An ``in_progress`` backup added this way stays in progress until deleted.
        """
        with self._lock:
            server = self.server(server_id)
            created = whole_seconds(created_at or self.clock.now())
            if backup_type == "automatic" and expires_at is None:
                expires_at = created + AUTOMATIC_LIFETIME
            if size_mb is None and status == "completed":
                size_mb = self._size(server)
            record = BackupRecord(
                id=self._take_id(),
                server_id=server.id,
                backup_type=backup_type,
                status=status,
                created_at=created,
                size_mb=size_mb,
                expires_at=whole_seconds(expires_at) if expires_at else None,
                description=description,
            )
            self._insert(record)
            return record

    def add_third_party_backup(
        self, server_id: int, description: str = THIRD_PARTY_DESCRIPTION
    ) -> BackupRecord:
        """A third party makes a manual backup, completed at once; its ``created`` event says ``by``."""
        with self._lock:
            self.settle()
            server = self.server(server_id)
            now = self.clock.now()
            record = BackupRecord(
                id=self._take_id(),
                server_id=server.id,
                backup_type="manual",
                status="completed",
                created_at=whole_seconds(now + self._api_offset),
                size_mb=self._size(server),
                description=description,
            )
            self._insert(record)
            self._born(record, now)
            self._log("created", now, record, by=THIRD_PARTY)
            return record

    def delete_backup(self, backup_id: int, *, by: Actor | None = None) -> BackupRecord:
        """Delete a visible backup for good; raise :class:`UnknownBackup` otherwise.

        ``by="third_party"``: someone else than the API's client did it, and its event says so.
        """
        with self._lock:
            record = self.backup(backup_id)
            now = self.clock.now()
            self._remove(record, now)
            self._log("deleted", now, record, by=by)
            return record

    def third_party_delete_newest(self, rng: random.Random) -> BackupRecord | None:
        """A third party deletes the newest completed manual backup of a random server that has one."""
        with self._lock:
            self.settle()
            servers = [
                server_id
                for server_id, backups in sorted(self._by_server.items())
                if any(_completed_manual(record) for record in backups.values())
            ]
            if not servers:
                return None
            backups = self._by_server[rng.choice(servers)].values()
            newest = max(filter(_completed_manual, backups), key=lambda b: (b.created_at, b.id))
            return self.delete_backup(newest.id, by=THIRD_PARTY)

    def third_party_replace(self, backup_id: int) -> tuple[BackupRecord, BackupRecord]:
        """A third party deletes this backup and makes a manual one of the same server: (gone, new)."""
        with self._lock:
            gone = self.delete_backup(backup_id, by=THIRD_PARTY)
            return gone, self.add_third_party_backup(gone.server_id)

    def restore(self, server_id: int, backup_id: int) -> BackupRecord:
        """Restore ``server_id`` from ``backup_id``: it must be this server's and completed."""
        with self._lock:
            self.settle()
            self.server(server_id)
            record = self.backup(backup_id)
            if record.server_id != server_id:
                raise RestoreRefused(f"Backup {backup_id} does not belong to server {server_id}.")
            if record.status != "completed":
                raise RestoreRefused(f"Backup {backup_id} is not completed (status: {record.status}).")
            self._log("restored", self.clock.now(), record)
            return record

    def log_listing(self, listing: Mapping[str, Any]) -> Event:
        """Write that a client read a listing (``{"server_id", "backup_type", "count", "pages"}``)."""
        with self._lock:
            event = Event(len(self._events) + 1, "listed", self.clock.now(), {}, listing=dict(listing))
            self._events.append(event)
            return event

    def note(self, note: Mapping[str, Any]) -> Event:
        """Write ``note`` (a JSON object) into the event log at the clock's now, after settling."""
        with self._lock:
            self.settle()
            event = Event(len(self._events) + 1, "note", self.clock.now(), {}, dict(note))
            self._events.append(event)
            return event

    def snapshot(self, **extra: Any) -> Event:
        """Note every visible backup as it is now, ``{"what": "snapshot", "backups": [...]}``.

        A reader of the log can start its replay here: every later event applies to this state.
        """
        with self._lock:
            backups = [self.to_json(record) for record in self.backups()]
            return self.note({**extra, "what": "snapshot", "backups": backups})

    def settle(self) -> None:
        """Apply every transition that is due at the clock's now, in time order."""
        with self._lock:
            now = self.clock.now()
            while self._due and self._due[0][0] <= now:
                due, _, what, subject = heapq.heappop(self._due)
                if what == _DUE_FINISH:
                    self._finish(subject, due)
                elif what == _DUE_EXPIRE:
                    self._expire(subject, due)
                else:
                    self._run_schedule(subject, due)

    # -- inside ------------------------------------------------------------------

    def _finish(self, backup_id: int, at: datetime) -> None:
        record = self._backups.get(backup_id)
        outcome = self._outcomes.pop(backup_id, None)
        if record is None or outcome is None or record.status != "in_progress":
            return
        past = self._remembered(record)
        record.status, record.size_mb = outcome
        if past is not None:
            past.changes.append((at, record.status, record.size_mb))
        self._log("completed" if record.status == "completed" else "failed", at, record)

    def _expire(self, backup_id: int, at: datetime) -> None:
        record = self._backups.get(backup_id)
        if record is None or record.expires_at is None:
            return
        self._remove(record, at)
        self._log("expired", at, record)

    def _run_schedule(self, server_id: int, at: datetime) -> None:
        server = self._servers[server_id]
        if server.automatic_at is None:
            return
        # the API writes its own clock's times; the backup still expires on the sandbox clock
        created = whole_seconds(at + self._api_offset)
        record = BackupRecord(
            id=self._take_id(),
            server_id=server_id,
            backup_type="automatic",
            status="completed",
            created_at=created,
            size_mb=self._size(server),
            expires_at=created + AUTOMATIC_LIFETIME,
            description=AUTOMATIC_DESCRIPTION,
        )
        self._insert(record, expires_due=whole_seconds(at) + AUTOMATIC_LIFETIME)
        self._born(record, at)
        self._log("created", at, record)
        self._push(at + timedelta(days=1), _DUE_SCHEDULE, server_id)

    def _insert(
        self, record: BackupRecord, *, expires_due: datetime | None = None, index: bool = True
    ) -> None:
        self._backups[record.id] = record
        self._by_server.setdefault(record.server_id, {})[record.id] = record
        if index:
            self._ids.add(record.id)
            self._ids_by_type.setdefault(record.backup_type, SortedIds()).add(record.id)
        if record.expires_at is not None:
            self._push(expires_due or record.expires_at, _DUE_EXPIRE, record.id)

    def _remove(self, record: BackupRecord, at: datetime) -> None:
        past = self._remembered(record)
        if past is not None:
            past.gone = at  # into the graveyard: a lagging listing still shows it for a while
        del self._backups[record.id]
        del self._by_server[record.server_id][record.id]
        self._outcomes.pop(record.id, None)
        self._ids.discard(record.id)
        self._ids_by_type[record.backup_type].discard(record.id)

    def _born(self, record: BackupRecord, at: datetime) -> None:
        if self._lag:
            self._past[record.id] = _Past(record, at, (record.status, record.size_mb))

    def _remembered(self, record: BackupRecord) -> _Past | None:
        """The history of ``record`` about to change, begun now if need be; ``None`` without a lag."""
        if not self._lag:
            return None
        past = self._past.get(record.id)
        if past is None:
            past = self._past[record.id] = _Past(record, None, (record.status, record.size_mb))
        return past

    def _forget(self, at: datetime) -> None:
        """Drop the histories (and graveyard) no listing as of ``at`` or later needs."""
        stale = [backup_id for backup_id, past in self._past.items() if past.forgettable(at)]
        for backup_id in stale:
            del self._past[backup_id]

    def _push(self, due: datetime, what: int, subject: int) -> None:
        self._due_seq += 1
        heapq.heappush(self._due, (due, self._due_seq, what, subject))

    def _take_id(self) -> int:
        backup_id = self._next_id
        self._next_id += 1
        return backup_id

    def _size(self, server: Server) -> int:
        return max(1, round(server.size_mb * self._rng.uniform(0.97, 1.03)))

    def _log(self, kind: EventKind, at: datetime, record: BackupRecord, *, by: Actor | None = None) -> None:
        self._events.append(Event(len(self._events) + 1, kind, at, self.to_json(record), by=by))


def _next_daily(now: datetime, at: time) -> datetime:
    """The first instant strictly after ``now`` at time of day ``at`` (UTC)."""
    candidate = datetime.combine(now.astimezone(UTC).date(), at, tzinfo=UTC)
    if candidate <= now:
        candidate += timedelta(days=1)
    return candidate
