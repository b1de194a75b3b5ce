"""The campaign's invariants, checked afterwards from the sandbox's event log and the policies' configuration.

The checker trusts nothing rotator says about itself: it replays the sandbox's
event log (``GET /_sandbox/events``, or ``[e.to_json() for e in state.events()]``)
in ``seq`` order, starting from the state a ``snapshot`` note lists, and judges
every change against the policies as configured. The only code of rotator it
uses is the retention engine (:func:`rotator.retention.plan_server`), to know
what a policy's rules keep at a given moment; ownership, candidacy, slots and
schedules are read here independently.

Invariants (each :class:`Violation` names its ``kind`` and carries the events that show it):

``not-a-candidate``
    A deleted backup that was not a candidate of the deleting policy at that
    moment: automatic, not completed, or not owned (the deleting policy is the
    one whose marker the backup carries; a backup that no configured policy
    owns has no policy allowed to delete it, except a ``prune_unmanaged``
    policy for an unmarked manual backup of its servers).
``kept-by-rules``
    A deleted candidate that the policy's rules keep at that moment: the state
    is replayed up to the delete and planned with ``plan_server`` at the
    delete's time; the backup must be in the plan's delete set. (Planning at
    the delete rather than at the run's listing is sound: a plan's delete set
    only grows when newer candidates appear and does not change when deleted
    candidates go, so whatever a correct run deletes is still deletable when
    its DELETE arrives.) The event log has whole seconds: the moment is taken
    as the end of the delete's second.
``below-min-keep``
    A server whose count of completed owned backups (a policy's candidates)
    fell below ``min_keep`` by a delete, after it had once reached ``min_keep``.
``duplicate-slot``
    Two backups for one (policy, server, slot).
``delete-before-completed``
    A DELETE for a server whose new backup of that run had not completed. The
    run's new backup is the server's backup of the policy with the newest slot
    created so far; it must be ``completed`` when the DELETE arrives.
``delete-without-new-backup``
    A DELETE for a server that has no backup for the run's slot at all. A run
    of a policy with a schedule is for its latest slot when it started; its
    deletes come at most ``run_window`` seconds after that (for ``run-once``
    of a daily schedule, minutes: a day's deletes belong to that day's slot).
    So the new backup's slot must be at least the latest slot at ``delete
    time - run_window``.
``catch-up-missing`` / ``catch-up-stale-slot``
    A slot missed while the daemon was down that was not caught up once after
    it came back. Made observable by notes the campaign writes into the same
    log: ``{"what": "ready", "process": N, "mode": "daemon", "policies": [...]}``
    when a daemon logged that its scheduler runs, ``{"what": "killed" |
    "stopped" | "exited", "process": N}`` when it was gone, and ``{"what":
    "said", "event": "run.finished", "policy": P, "slot": S, "process": N}``
    the moment the daemon logged the end of a run. At each ``ready``, for a
    policy with ``catch_up`` and a schedule, the latest slot L is due on a
    server when the server has no backup for L and no owned backup created at
    or after L (the README's rule: "a server whose newest owned backup is older
    than the policy's latest slot gets that slot's run now, once"). A due
    server must get exactly one backup for L before the daemon goes down
    again. This is judged only for a daemon that lived to finish a run of a
    later slot: a policy's runs take turns (one lock), so the catch-up's run,
    or its decision that a newer slot overtook it, comes no later than the end
    of the first scheduled run. A daemon killed sooner may not have
    had the chance: the next ``ready`` judges again, and a newer latest slot
    then coalesces the older one. After ``ready`` no backup may be created for
    a slot older than L (missed runs are coalesced, not replayed). A ``ready``
    within ``start_margin`` seconds of a slot boundary is ambiguous (the
    daemon may have seen either slot as the latest) and is counted as
    unchecked rather than judged. Notes are placed in time by their ``exact``
    instant (the sandbox writes it with microseconds), or, for what rotator
    logged (``ready``, ``said``), by the time on rotator's log line
    (``logged_at``), which a busy driver may note a little later.

    rotator skips a catch-up that a newer slot overtook before it could start
    (the newer slot's own run covers the server). The log cannot show that
    decision, so the campaign notes rotator's word for it (``{"what": "said",
    "event": "catch_up.superseded", ...}``) and the checker accepts a missing
    catch-up on that word only when it is plausible: it came after the next
    slot's time (before it, no slot could have overtaken L), and the server
    did get a backup for a newer slot in the same session.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from rotator.models import Backup
from rotator.retention import Policy, Retention, plan_server

Event = Mapping[str, Any]

COMPLETED = "completed"
MANUAL = "manual"
INTERVAL_ANCHOR = (2000, 1, 1)  # rotator counts interval slots from midnight 2000-01-01 in the policy's zone

KINDS = (
    "not-a-candidate",
    "kept-by-rules",
    "below-min-keep",
    "duplicate-slot",
    "delete-before-completed",
    "delete-without-new-backup",
    "catch-up-missing",
    "catch-up-stale-slot",
)

_MARKER = re.compile(
    r"\[rotator:(?P<policy>[A-Za-z0-9._-]+)"
    r"(?:@(?P<slot>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?Z))?\]\Z"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DOWN = ("killed", "stopped", "exited")


# -- reading the log -------------------------------------------------------------------------


def parse_at(text: str) -> datetime:
    """An event's ``at`` (``2025-01-16T03:00:00Z``) as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def moment_of(event: Event) -> datetime:
    """When an event happened: for a note of something rotator logged, the log line's own time
    (``logged_at``: the sandbox of the daemon phase keeps real time, as rotator's log does);
    else a note's ``exact`` instant; else its ``at``."""
    note = event.get("note") or {}
    return parse_at(str(note.get("logged_at") or event.get("exact") or event["at"]))


def marker_of(description: str | None) -> tuple[str, datetime | None] | None:
    """``(policy, slot)`` of the marker ending ``description``; None when there is none (or a bad one)."""
    match = _MARKER.search(description or "")
    if match is None:
        return None
    slot_text = match["slot"]
    if slot_text is None:
        return match["policy"], None
    layout = "%Y-%m-%dT%H:%M:%SZ" if slot_text.count(":") == 2 else "%Y-%m-%dT%H:%MZ"
    try:
        slot = datetime.strptime(slot_text, layout).replace(tzinfo=UTC)
    except ValueError:
        return None
    return match["policy"], slot


def seconds_of(value: Any) -> float:
    """A duration from a configuration: a number of seconds, or text such as ``6s``, ``2h``, ``1h30m``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a duration: {value!r}")
    return total


def iso(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- policies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A policy's schedule: ``cron`` (5 fields, in ``timezone``) or ``interval`` seconds; no jitter."""

    cron: str | None = None
    interval: float | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("a schedule has exactly one of cron or interval")

    @classmethod
    def from_config(cls, schedule: Mapping[str, Any], timezone: str = "UTC") -> Schedule:
        if schedule.get("cron") is not None:
            return cls(cron=str(schedule["cron"]), timezone=timezone)
        return cls(interval=seconds_of(schedule["interval"]), timezone=timezone)

    def _anchor(self) -> float:
        year, month, day = INTERVAL_ANCHOR
        return datetime(year, month, day, tzinfo=ZoneInfo(self.timezone)).timestamp()

    def _trigger(self) -> CronTrigger:
        assert self.cron is not None
        return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))

    def latest(self, moment: datetime) -> datetime | None:
        """The newest slot at or before ``moment``."""
        if self.interval is not None:
            anchor = self._anchor()
            elapsed = moment.timestamp() - anchor
            if elapsed < 0:
                return None
            return datetime.fromtimestamp(anchor + self.interval * math.floor(elapsed / self.interval), UTC)
        trigger = self._trigger()
        for lookback in (timedelta(hours=1), timedelta(days=2), timedelta(days=32), timedelta(days=400)):
            found: datetime | None = None
            fire = trigger.get_next_fire_time(None, moment - lookback)
            while fire is not None and fire <= moment:
                found = fire
                fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
            if found is not None:
                return found.astimezone(UTC)
        return None

    def after(self, slot: datetime) -> datetime:
        """The first slot strictly after ``slot``."""
        if self.interval is not None:
            return slot + timedelta(seconds=self.interval)
        trigger = self._trigger()
        fire: datetime | None = trigger.get_next_fire_time(None, slot + timedelta(microseconds=1))
        assert fire is not None
        return fire.astimezone(UTC)


@dataclass(frozen=True)
class PolicySpec:
    """What the checker needs to know of a policy, as its configuration gives it."""

    name: str
    servers: tuple[int, ...]
    retention: Mapping[str, int]
    timezone: str = "UTC"
    prune_unmanaged: bool = False
    schedule: Schedule | None = None
    catch_up: bool = True
    run_window: float = 0.0  # seconds after a run's start that its last delete may come

    @classmethod
    def from_config(cls, policy: Mapping[str, Any], *, run_window: float = 0.0) -> PolicySpec:
        """From one entry of a rotator configuration's ``policies`` (as written to its YAML file)."""
        timezone = str(policy.get("timezone", "UTC"))
        schedule = policy.get("schedule")
        return cls(
            name=str(policy["name"]),
            servers=tuple(int(sid) for sid in policy["servers"]),
            retention=dict(policy["retention"]),
            timezone=timezone,
            prune_unmanaged=bool(policy.get("prune_unmanaged", False)),
            schedule=Schedule.from_config(schedule, timezone) if schedule else None,
            catch_up=bool(policy.get("catch_up", True)),
            run_window=run_window,
        )

    @property
    def min_keep(self) -> int:
        return int(self.retention.get("min_keep", 1))

    def engine_policy(self) -> Policy:
        return Policy(
            name=self.name,
            retention=Retention(**self.retention),
            servers=self.servers,
            timezone=self.timezone,
            prune_unmanaged=self.prune_unmanaged,
        )

    def untouched_reason(self, backup: Mapping[str, Any]) -> str | None:
        """Why ``backup`` is not this policy's candidate (read independently of rotator); None if it is."""
        if backup["server"]["id"] not in self.servers:
            return "not one of the policy's servers"
        if backup.get("backup_type") != MANUAL:
            return str(backup.get("backup_type"))
        if backup.get("status") != COMPLETED:
            return str(backup.get("status"))
        marker = marker_of(backup.get("description"))
        if marker is not None:
            return None if marker[0] == self.name else "not owned"
        if self.prune_unmanaged and "[rotator:" not in (backup.get("description") or "").casefold():
            return None
        return "not owned"


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    kind: str
    message: str
    events: tuple[Event, ...] = ()

    def __str__(self) -> str:
        lines = [f"{self.kind}: {self.message}"]
        lines.extend(f"    {describe(event)}" for event in self.events)
        return "\n".join(lines)


@dataclass
class Report:
    """The violations found, and how much was checked."""

    violations: list[Violation] = field(default_factory=list)
    checked: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> Counter[str]:
        return Counter(violation.kind for violation in self.violations)


def describe(event: Event) -> str:
    """One line for an event of the log."""
    head = f"#{event.get('seq')} {event.get('at')} {event.get('kind')}"
    if event.get("kind") == "note":
        note = {k: v for k, v in (event.get("note") or {}).items() if k != "backups"}
        return f"{head} {note}"
    backup = event.get("backup") or {}
    server = (backup.get("server") or {}).get("id")
    return (
        f"{head} backup {backup.get('id')} server {server} {backup.get('backup_type')} "
        f"{backup.get('status')} created {backup.get('created_at')} {backup.get('description')!r}"
    )


# -- the replay ------------------------------------------------------------------------------


@dataclass
class _Session:
    """A daemon from its ``ready`` note to its going down: what its catch-up owed, per (policy, server)."""

    ready: Event
    due: dict[tuple[str, int], datetime]  # (policy, server) -> the slot it must catch up
    latest: dict[str, datetime]  # policy -> latest slot at ready (unambiguous starts only)
    created: Counter[tuple[str, int, datetime]] = field(default_factory=Counter)
    superseded: list[Event] = field(default_factory=list)  # rotator's word: a catch-up was overtaken
    finished: list[tuple[str, datetime]] = field(default_factory=list)  # (policy, slot) of runs that ended


class Checker:
    """Replays one event log; :func:`check` is the way in."""

    def __init__(self, policies: Sequence[PolicySpec], *, start_margin: float = 0.25) -> None:
        self.policies = {policy.name: policy for policy in policies}
        self.start_margin = start_margin
        self.report = Report()
        self.backups: dict[int, dict[str, Any]] = {}  # visible now
        self.by_server: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)  # the same, by server
        self.status: dict[int, str] = {}  # last known status of every backup ever seen
        self.origin: dict[int, Event] = {}  # the event that brought each backup in
        self.transitions: dict[int, list[Event]] = defaultdict(list)  # completed/failed events by id
        self.slots: dict[tuple[str, int], dict[datetime, list[int]]] = defaultdict(dict)
        self.reached: set[tuple[str, int]] = set()
        self.sessions: dict[Any, _Session] = {}
        self.ended: list[tuple[_Session, Event | None]] = []
        self.last_at: datetime | None = None

    # -- helpers --

    def _violate(self, kind: str, message: str, *events: Event | None) -> None:
        self.report.violations.append(Violation(kind, message, tuple(e for e in events if e is not None)))

    def _server_backups(self, server_id: int) -> list[dict[str, Any]]:
        return list(self.by_server[server_id].values())

    def _put(self, backup: dict[str, Any]) -> None:
        self.backups[backup["id"]] = backup
        self.by_server[backup["server"]["id"]][backup["id"]] = backup
        self.status[backup["id"]] = backup["status"]

    def _drop(self, backup_id: int) -> None:
        gone = self.backups.pop(backup_id, None)
        if gone is not None:
            self.by_server[gone["server"]["id"]].pop(backup_id, None)

    def _candidates(self, policy: PolicySpec, server_id: int) -> int:
        return sum(1 for b in self._server_backups(server_id) if policy.untouched_reason(b) is None)

    def _owner(self, backup: Mapping[str, Any]) -> PolicySpec | None:
        """The policy allowed to delete ``backup``, if any."""
        server_id = backup["server"]["id"]
        marker = marker_of(backup.get("description"))
        if marker is not None:
            policy = self.policies.get(marker[0])
            return policy if policy is not None and server_id in policy.servers else None
        for policy in self.policies.values():
            if policy.prune_unmanaged and server_id in policy.servers:
                return policy
        return None

    def _update_reached(self, server_id: int) -> None:
        for policy in self.policies.values():
            if server_id in policy.servers and self._candidates(policy, server_id) >= policy.min_keep:
                self.reached.add((policy.name, server_id))

    def _arrive(self, backup: dict[str, Any], event: Event) -> None:
        """A backup appears (created, or listed by a snapshot)."""
        backup_id = backup["id"]
        known = backup_id in self.origin
        self._put(backup)
        if known:
            return
        self.origin[backup_id] = event
        marker = marker_of(backup.get("description"))
        if marker is None:
            return
        name, slot = marker
        if slot is None or name not in self.policies:
            return
        server_id = backup["server"]["id"]
        same = self.slots[(name, server_id)].setdefault(slot, [])
        same.append(backup_id)
        if len(same) > 1:
            self._violate(
                "duplicate-slot",
                f"{len(same)} backups for policy {name}, server {server_id}, slot {iso(slot)}: {same}",
                *(self.origin[other] for other in same),
            )
        for session in self.sessions.values():
            session.created[(name, server_id, slot)] += 1
            latest = session.latest.get(name)
            if latest is not None and slot < latest and event.get("kind") == "created":
                self._violate(
                    "catch-up-stale-slot",
                    f"after the daemon came back (latest slot {iso(latest)}), policy {name} created a "
                    f"backup for the older slot {iso(slot)} on server {server_id}: missed runs are "
                    "coalesced into the latest slot, not replayed",
                    session.ready,
                    event,
                )

    # -- events --

    def feed(self, event: Event) -> None:
        self.last_at = moment_of(event)
        kind = event["kind"]
        if kind == "note":
            self._note(event)
            return
        backup = dict(event["backup"])
        backup_id = backup["id"]
        server_id = backup["server"]["id"]
        if kind == "created":
            self.report.checked["created"] += 1
            self._arrive(backup, event)
        elif kind in ("completed", "failed"):
            self._put(backup)
            self.transitions[backup_id].append(event)
        elif kind == "deleted":
            self.report.checked["deleted"] += 1
            self._delete(backup, event)
        elif kind == "expired":
            self._drop(backup_id)
        self._update_reached(server_id)

    def _note(self, event: Event) -> None:
        note = event.get("note") or {}
        what = note.get("what")
        if what == "snapshot":
            self.backups = {}
            self.by_server = defaultdict(dict)
            for backup in note.get("backups", []):
                self._arrive(dict(backup), {**event, "kind": "snapshot", "backup": backup})
            for server_id in {b["server"]["id"] for b in self.backups.values()}:
                self._update_reached(server_id)
        elif what == "ready" and note.get("mode") == "daemon":
            self.sessions[note.get("process")] = self._session(event, note.get("policies") or [])
        elif what == "said":
            session = self.sessions.get(note.get("process"))
            if session is None:
                return
            if note.get("event") == "catch_up.superseded":
                session.superseded.append(event)
            elif note.get("event") == "run.finished" and note.get("slot"):
                session.finished.append((str(note.get("policy")), parse_at(str(note["slot"]))))
        elif what in _DOWN and note.get("process") in self.sessions:
            self.ended.append((self.sessions.pop(note.get("process")), event))

    def _session(self, ready: Event, names: Iterable[str]) -> _Session:
        at = moment_of(ready)
        session = _Session(ready, due={}, latest={})
        for name in names:
            policy = self.policies.get(name)
            if policy is None or policy.schedule is None or not policy.catch_up:
                continue
            latest = policy.schedule.latest(at)
            if latest is None:
                continue
            upcoming = policy.schedule.after(latest)
            if min((at - latest).total_seconds(), (upcoming - at).total_seconds()) < self.start_margin:
                self.report.checked["catch-up starts too near a slot to judge"] += 1
                continue
            self.report.checked["catch-up starts judged"] += 1
            session.latest[name] = latest
            for server_id in policy.servers:
                if self._is_due(policy, server_id, latest):
                    session.due[(name, server_id)] = latest
        return session

    def _is_due(self, policy: PolicySpec, server_id: int, latest: datetime) -> bool:
        if self.slots[(policy.name, server_id)].get(latest):
            return False  # the slot has its backup already (an unfinished one is adopted, not re-made)
        newest: datetime | None = None
        for backup in self._server_backups(server_id):
            marker = marker_of(backup.get("description"))
            if marker is not None and marker[0] == policy.name:
                created = parse_at(backup["created_at"])
                newest = created if newest is None else max(newest, created)
        return newest is None or newest < latest

    def _delete(self, backup: dict[str, Any], event: Event) -> None:
        backup_id = backup["id"]
        server_id = backup["server"]["id"]
        at = parse_at(event["at"])
        before = self.backups.get(backup_id, backup)
        policy = self._owner(before)
        try:
            if policy is None:
                self._violate(
                    "not-a-candidate",
                    f"backup {backup_id} of server {server_id} ({before.get('backup_type')}, "
                    f"{before.get('status')}, {before.get('description')!r}) was deleted, but no "
                    "configured policy owns it",
                    self.origin.get(backup_id),
                    event,
                )
                return
            reason = policy.untouched_reason(before)
            if reason is not None:
                self._violate(
                    "not-a-candidate",
                    f"policy {policy.name} deleted backup {backup_id} of server {server_id}, "
                    f"which is not its candidate ({reason})",
                    self.origin.get(backup_id),
                    event,
                )
            else:
                self._check_rules(policy, before, event, at)
            self._check_new_backup(policy, server_id, event, at)
        finally:
            self._drop(backup_id)
            self.status[backup_id] = "deleted"
            if policy is not None:
                key = (policy.name, server_id)
                left = self._candidates(policy, server_id)
                if key in self.reached and left < policy.min_keep:
                    remaining = [
                        self.origin[b["id"]]
                        for b in self._server_backups(server_id)
                        if policy.untouched_reason(b) is None and b["id"] in self.origin
                    ]
                    self._violate(
                        "below-min-keep",
                        f"policy {policy.name}, server {server_id}: {left} completed owned backups left "
                        f"after deleting backup {backup_id}, min_keep is {policy.min_keep}",
                        event,
                        *remaining,
                    )

    def _check_rules(self, policy: PolicySpec, backup: Mapping[str, Any], event: Event, at: datetime) -> None:
        server_id = backup["server"]["id"]
        moment = at + timedelta(seconds=1) - timedelta(microseconds=1)
        listing = [Backup.model_validate(b) for b in self._server_backups(server_id)]
        plan = plan_server(listing, policy.engine_policy(), moment, server_id=server_id)
        self.report.checked["deletes planned"] += 1
        if any(deleted.id == backup["id"] for deleted in plan.deleted):
            return
        reasons = next((d.reasons for d in plan.keep if d.backup.id == backup["id"]), ())
        self._violate(
            "kept-by-rules",
            f"policy {policy.name} deleted backup {backup['id']} of server {server_id} (created "
            f"{backup['created_at']}), which its rules keep at {iso(moment.replace(microsecond=0))}: "
            f"{', '.join(reasons) or 'not in the delete set'}",
            self.origin.get(backup["id"]),
            event,
        )

    def _check_new_backup(self, policy: PolicySpec, server_id: int, event: Event, at: datetime) -> None:
        made = self.slots.get((policy.name, server_id)) or {}
        if not made:
            self._violate(
                "delete-without-new-backup",
                f"policy {policy.name} deleted on server {server_id}, which has no backup of any slot of it",
                event,
            )
            return
        slot = max(made)
        newest = made[slot][-1]
        status = self.status.get(newest)
        if status not in (COMPLETED, "deleted"):
            evidence = [self.origin.get(newest), *self.transitions[newest]]
            self._violate(
                "delete-before-completed",
                f"policy {policy.name} deleted on server {server_id} while the run's new backup {newest} "
                f"(slot {iso(slot)}) was {status}",
                *evidence,
                event,
            )
            return
        if policy.schedule is None:
            return
        floor = policy.schedule.latest(at - timedelta(seconds=policy.run_window))
        if floor is not None and slot < floor:
            self._violate(
                "delete-without-new-backup",
                f"policy {policy.name} deleted on server {server_id} at {iso(at)}, but its newest backup "
                f"there is for slot {iso(slot)}: a run deleting now is for slot {iso(floor)} or later "
                f"(run_window {policy.run_window:g}s), and that run made no backup on this server",
                self.origin.get(newest),
                event,
            )

    def finish(self) -> Report:
        """Judge the daemon sessions (one still up at the end of the log is judged up to its last event)."""
        for session in self.sessions.values():
            self.ended.append((session, None))
        self.sessions = {}
        for session, down in self.ended:
            for (name, server_id), slot in sorted(session.due.items()):
                policy = self.policies[name]
                assert policy.schedule is not None
                if not any(p == name and later > slot for p, later in session.finished):
                    self.report.checked["catch-ups cut short by a kill"] += 1
                    continue  # went down before a later run ended: the next start judges again
                self.report.checked["catch-ups owed"] += 1
                if session.created[(name, server_id, slot)] > 0:
                    continue
                upcoming = policy.schedule.after(slot)
                claims = [
                    e
                    for e in session.superseded
                    if (e.get("note") or {}).get("policy") == name and moment_of(e) >= upcoming
                ]
                newer = any(
                    count > 0 and (p, sid) == (name, server_id) and later > slot
                    for (p, sid, later), count in session.created.items()
                )
                if claims and newer:
                    self.report.checked["catch-ups overtaken by the next slot"] += 1
                    continue
                until = moment_of(down) if down is not None else self.last_at
                self._violate(
                    "catch-up-missing",
                    f"policy {name}, server {server_id}: slot {iso(slot)} was missed while the daemon "
                    f"was down and not caught up after it came back (it was up until {iso(until)} and "
                    f"finished a run of a later slot)",
                    session.ready,
                    *session.superseded,
                    down,
                )
        return self.report


def check(events: Iterable[Event], policies: Sequence[PolicySpec], *, start_margin: float = 0.25) -> Report:
    """Every invariant over ``events`` (the sandbox's log as JSON objects), for ``policies``."""
    checker = Checker(policies, start_margin=start_margin)
    for event in sorted(events, key=lambda e: int(e["seq"])):
        checker.feed(event)
    return checker.finish()
