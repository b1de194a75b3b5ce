"""The campaign's invariants, checked afterwards from the sandbox's event log and the policies' configuration.

The checker trusts nothing rotator says about itself: it replays the sandbox's
event log (``GET /_sandbox/events``, or ``[e.to_json() for e in state.events()]``)
in ``seq`` order, starting from the state a ``snapshot`` note lists, and judges
every change against the policies as configured. The only code of rotator it
uses is the retention engine (:func:`rotator.retention.plan_server`), to know
what a policy's rules keep at a given moment; ownership, markers (with their
attempts, ``[rotator:POLICY@SLOT#N]``), slots and schedules are read here
independently.

**Third parties.** A deletion or creation the log marks ``"by": "third_party"``
(someone else with access to the account; the sandbox's ``page_shift_rate`` and
``third_party_delete_rate``) is not rotator's: it is never a violation by
itself, and rotator is not blamed for what it did. Every rotator DELETE is still
judged against the replayed state; where a third party's deletion could only
have made rotator's (earlier) view hold *more* than the present, the judgement
counts the third party's deletions as if they had not happened (*ghosts*, see
``kept-by-rules``). What really exists is what counts for ``below-min-keep``.

Invariants (each :class:`Violation` names its ``kind`` and carries the events that show it):

``not-a-candidate``
    A rotator delete of a backup that was not a candidate of the deleting
    policy at that moment: automatic, not completed, or not owned (the deleting
    policy is the one whose marker the backup carries; a backup that no
    configured policy owns has no policy allowed to delete it, except a
    ``prune_unmanaged`` policy for an unmarked manual backup of its servers).
    One exception: an owned *failed* manual backup (a failed attempt) may be
    deleted ("failed, superseded") once a candidate of the same server that is
    newer by ``(created_at, id)`` exists (a ghost counts: a third party may have
    deleted it after rotator's view) -- never while none does.
``kept-by-rules``
    A deleted candidate (or failed attempt) that the policy's rules keep at that
    moment: the server's replayed backups, ghosts included, are planned with
    ``plan_server`` at the delete's time; the backup must be in the plan's
    delete set. (Sound: a plan on fewer backups deletes a subset of what a plan
    on more deletes, and rotator's view is a subset of the replayed state with
    its ghosts, up to backups rotator itself deleted, which do not change the
    plan; ``keep_days`` only deletes more as time passes.) The event log has
    whole seconds: the moment is taken as the end of the delete's second.
``below-min-keep``
    A rotator delete of a completed owned backup after which the server has
    fewer than ``min_keep`` of the policy's candidates, counting what really
    exists then: a third party's deletions may have lowered the count first,
    and then rotator must not delete more. (Deleting a failed attempt does not
    lower the count.)
``duplicate-slot``
    Two COMPLETED backups for one (policy, server, slot), whatever their
    attempts; or two backups of the same (policy, server, slot, attempt). A
    backup a third party deleted does not count (rotator may make its slot's
    backup again).
``second-post-in-quiet-period``
    A create of (policy, server, slot, attempt N) less than the policy's
    ``quiet_period`` (``api.create_quiet_period``) after an earlier create of
    the same attempt, by the sandbox's instants (whole seconds: judged only
    when the gap is at most ``quiet_period - 1`` s): a create whose outcome is
    unknown is never sent again within the quiet period.
``delete-before-completed``
    A DELETE for a server where no attempt of the run's slot has completed: the
    run's new backup is the newest completed attempt of the slot (earlier
    attempts may have failed); a slot whose attempts are all in progress or
    failed has none.
``delete-without-new-backup``
    A DELETE for a server that has no backup for the run's slot at all. A
    ``run-once`` process's slot is known from the campaign's ``started`` note
    (its ``now``, ``policies`` and ``servers``): the latest slot at ``now``.
    Otherwise (the daemon) the run's slot is the newest slot of the policy
    made on the server, and must be at least the latest slot at ``delete time
    - run_window`` (a run deletes at most ``run_window`` seconds after its
    start).
``stale-view``
    The first rotator DELETE of a (policy, server) batch (a run's deletes on a
    server; a batch ends with a note that its process started, was ready,
    finished a run of the policy, or went down) while the most recent
    ``listed`` event covering that server (the account's listing of manual or
    all backups, or that server's own) began more than ``max_view_age``
    (``api.max_view_age``) plus ``view_tolerance`` seconds before it -- or began
    before the run's new backup completed (the plan must rest on a view that
    shows it completed; judged by the log's order, since a listing settles the
    state, logging every completion due by then, before its own ``listed``
    event is written; and only for a listing of one page, since ``listed`` is
    written for the first page and a longer listing's later pages, where the
    new backup is, come later). Listings are placed by their ``exact`` instant, the
    DELETE by its whole second (rounded down, so that a gap is never
    overstated); a ``clock`` note (the campaign moved the sandbox clock) forgets
    the listings before it. Judged only in a log that has ``listed`` events
    (``SandboxOptions.log_listings``). The tolerance covers the DELETE's own way
    to the API (the client's pacing and the retries of a first attempt answered
    5xx or 429 are invisible in the log).
``retry-missing``
    A slot whose attempts all failed while fewer than ``1 + retries`` attempts
    were made, judged where the campaign knows the run had time and means to
    retry: a ``run-once`` process whose ``started`` note says
    ``"retries_judged": true`` (the campaign started it under faults that give
    a correct rotator no other reason to stop: no API errors, drops, lies,
    third parties or lag, and a wait long enough) and that ``exited`` (0 or 1,
    not killed), for each of its (policy, server) at the latest slot at its
    ``now``, as the state stands at the ``exited`` note.
``catch-up-missing`` / ``catch-up-stale-slot``
    A slot missed while the daemon was down that was not caught up once after
    it came back. Made observable by notes the campaign writes into the same
    log: ``{"what": "ready", "process": N, "mode": "daemon", "policies": [...]}``
    when a daemon logged that its scheduler runs, ``{"what": "killed" |
    "stopped" | "exited", "process": N}`` when it was gone, and ``{"what":
    "said", "event": "run.finished", "policy": P, "slot": S, "process": N}``
    the moment the daemon logged the end of a run. At each ``ready``, for a
    policy with ``catch_up`` and a schedule, the latest slot L is due on a
    server by its markers alone (the README's rule, no timestamp compared):
    when L has no backup in progress or completed (any attempt) and fewer than
    ``1 + retries`` attempts of it are there (none at all, or failed ones with
    attempts left: a retry). A due server must get a backup for L before the
    daemon goes down again. This is judged only for a daemon that lived to
    finish a run of a later slot (a policy's runs take turns, one lock) and
    whose catch-up was decided: rotator reads the catch-up's listing before it
    takes its turn, and that listing may still be retried when a later slot's
    run has ended, so the checker waits for rotator's word that it decided
    (``catch_up.started``, ``catch_up.superseded``, ``catch_up.listing_failed``)
    or for the daemon to have lived ``decision_grace`` seconds after ``ready``
    (rotator says nothing when it finds nothing due). A daemon that went down
    sooner may not have had the chance: the next ``ready`` judges again, and a
    newer latest slot then coalesces the older one. After ``ready`` no backup may be
    created for a slot older than L (missed runs are coalesced, not replayed).
    A ``ready`` within ``start_margin`` seconds of a slot boundary is ambiguous
    (the daemon may have seen either slot as the latest) and is counted as
    unchecked rather than judged. Notes are placed in time by their ``exact``
    instant (the sandbox writes it with microseconds), or, for what rotator
    logged (``ready``, ``said``), by the time on rotator's log line
    (``logged_at``), which a busy driver may note a little later.

    rotator skips a catch-up that a newer slot overtook before it could start
    (the newer slot's own run covers the server). The log cannot show that
    decision, so the campaign notes rotator's word for it (``{"what": "said",
    "event": "catch_up.superseded", "slot": S, ...}``) and the checker accepts
    a missing catch-up on that word only when it is plausible: it names the
    owed slot (when it names one), came after the next slot's time (before it,
    no slot could have overtaken L), and the server did get a backup for a
    newer slot in the same session. A catch-up whose account listing failed
    (``catch_up.listing_failed`` without a server) is skipped by rotator; that
    is accepted only where the server got a newer slot's backup in the session.
    A catch-up whose create for the server ended of unknown outcome and was
    never listed (``backup.create_unknown`` with ``reason: never listed``, the
    server's final word: the API failed the POST before acting, and rotator
    sends no blind second one) is counted, not a violation.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from rotator.models import Backup
from rotator.retention import Policy, Retention, plan_server

Event = Mapping[str, Any]

COMPLETED = "completed"
IN_PROGRESS = "in_progress"
FAILED = "failed"
MANUAL = "manual"
THIRD_PARTY = "third_party"
INTERVAL_ANCHOR = (2000, 1, 1)  # rotator counts interval slots from midnight 2000-01-01 in the policy's zone
DEFAULT_RETRIES = 2  # rotator's defaults for what a configuration leaves out
DEFAULT_QUIET_PERIOD = 120.0
DEFAULT_MAX_VIEW_AGE = 60.0

KINDS = (
    "not-a-candidate",
    "kept-by-rules",
    "below-min-keep",
    "duplicate-slot",
    "second-post-in-quiet-period",
    "delete-before-completed",
    "delete-without-new-backup",
    "stale-view",
    "retry-missing",
    "catch-up-missing",
    "catch-up-stale-slot",
)

_MARKER = re.compile(
    r"\[rotator:(?P<policy>[A-Za-z0-9._-]+)"
    r"(?:@(?P<slot>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?Z)(?:#(?P<attempt>[2-9]|[1-9]\d{1,2}))?)?\]\Z"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DOWN = ("killed", "stopped", "exited")


# -- reading the log -------------------------------------------------------------------------


class Marker(NamedTuple):
    """A marker as the checker reads it: the owning policy, its slot if any, the attempt (1 without ``#``)."""

    policy: str
    slot: datetime | None
    attempt: int = 1


def parse_at(text: str) -> datetime:
    """An event's ``at`` (``2025-01-16T03:00:00Z``) as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def moment_of(event: Event) -> datetime:
    """When an event happened: for a note of something rotator logged, the log line's own time
    (``logged_at``: the sandbox of the daemon phase keeps real time, as rotator's log does);
    else a note's or listing's ``exact`` instant; else its ``at``."""
    note = event.get("note") or {}
    return parse_at(str(note.get("logged_at") or event.get("exact") or event["at"]))


def marker_of(description: str | None) -> Marker | None:
    """The marker ending ``description``; None when there is none (or a bad one)."""
    match = _MARKER.search(description or "")
    if match is None:
        return None
    slot_text = match["slot"]
    if slot_text is None:
        return Marker(match["policy"], None)
    layout = "%Y-%m-%dT%H:%M:%SZ" if slot_text.count(":") == 2 else "%Y-%m-%dT%H:%MZ"
    try:
        slot = datetime.strptime(slot_text, layout).replace(tzinfo=UTC)
    except ValueError:
        return None
    return Marker(match["policy"], slot, int(match["attempt"] or 1))


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


def _sort_key(backup: Mapping[str, Any]) -> tuple[datetime, int]:
    """The retention engine's age order: ``created_at``, ties broken by id."""
    return parse_at(str(backup["created_at"])), int(backup["id"])


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
    retries: int = DEFAULT_RETRIES
    quiet_period: float = DEFAULT_QUIET_PERIOD  # api.create_quiet_period, seconds
    max_view_age: float = DEFAULT_MAX_VIEW_AGE  # api.max_view_age, seconds

    @classmethod
    def from_config(
        cls, policy: Mapping[str, Any], *, api: Mapping[str, Any] | None = None, run_window: float = 0.0
    ) -> PolicySpec:
        """From one entry of a rotator configuration's ``policies`` (as written to its YAML file) and
        the configuration's ``api`` section."""
        api = api or {}
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
            retries=int(policy.get("retries", DEFAULT_RETRIES)),
            quiet_period=seconds_of(api.get("create_quiet_period", DEFAULT_QUIET_PERIOD)),
            max_view_age=seconds_of(api.get("max_view_age", DEFAULT_MAX_VIEW_AGE)),
        )

    @property
    def min_keep(self) -> int:
        return int(self.retention.get("min_keep", 1))

    @property
    def attempts(self) -> int:
        """Attempts a slot gets: the first and its retries."""
        return 1 + self.retries

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
            return None if marker.policy == self.name else "not owned"
        if self.prune_unmanaged and "[rotator:" not in (backup.get("description") or "").casefold():
            return None
        return "not owned"

    def owns_failed(self, backup: Mapping[str, Any]) -> bool:
        """Whether ``backup`` is a failed manual backup of one of its servers carrying its marker."""
        marker = marker_of(backup.get("description"))
        return (
            backup["server"]["id"] in self.servers
            and backup.get("backup_type") == MANUAL
            and backup.get("status") == FAILED
            and marker is not None
            and marker.policy == self.name
        )


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
    if event.get("kind") == "listed":
        return f"{head} at {event.get('exact')} {event.get('listing')}"
    backup = event.get("backup") or {}
    server = (backup.get("server") or {}).get("id")
    by = f" by {event['by']}" if event.get("by") else ""
    return (
        f"{head}{by} backup {backup.get('id')} server {server} {backup.get('backup_type')} "
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
    skipped: list[Event] = field(default_factory=list)  # rotator's word: its catch-up listing failed
    decided: set[str] = field(default_factory=set)  # policies whose catch-up rotator said it decided
    finished: list[tuple[str, datetime]] = field(default_factory=list)  # (policy, slot) of runs that ended
    # rotator's word: a server's create in a run stayed of unknown outcome (never listed): the API
    # failed it (a 5xx before it acted) and rotator, rightly, sent no blind second one
    unknown: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class _Process:
    """A rotator process as the campaign's ``started`` note describes it (None: not said, so any)."""

    started: Event
    mode: str
    policies: frozenset[str] | None
    servers: frozenset[int] | None
    now: datetime | None  # run-once's --now
    retries_judged: bool

    @classmethod
    def from_note(cls, event: Event) -> _Process:
        note = event.get("note") or {}
        policies = note.get("policies")
        servers = note.get("servers")
        now = note.get("now")
        return cls(
            started=event,
            mode=str(note.get("mode", "")),
            policies=frozenset(str(p) for p in policies) if policies is not None else None,
            servers=frozenset(int(s) for s in servers) if servers is not None else None,
            now=parse_at(str(now)) if now else None,
            retries_judged=bool(note.get("retries_judged", False)),
        )

    def covers(self, policy: str, server_id: int) -> bool:
        return (self.policies is None or policy in self.policies) and (
            self.servers is None or server_id in self.servers
        )


class Checker:
    """Replays one event log; :func:`check` is the way in."""

    def __init__(
        self,
        policies: Sequence[PolicySpec],
        *,
        start_margin: float = 0.25,
        view_tolerance: float = 2.0,
        decision_grace: float = 0.0,
    ) -> None:
        self.policies = {policy.name: policy for policy in policies}
        self.start_margin = start_margin
        self.view_tolerance = view_tolerance
        self.decision_grace = decision_grace
        self.report = Report()
        self.backups: dict[int, dict[str, Any]] = {}  # visible now
        self.by_server: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)  # the same, by server
        self.ghosts: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)  # deleted by a third party
        self.status: dict[int, str] = {}  # last known status of every backup ever seen ("deleted" at the end)
        self.completed_at: dict[int, Event | None] = {}  # backups that completed, and how (None: snapshot)
        self.third_party_deleted: set[int] = set()
        self.origin: dict[int, Event] = {}  # the event that brought each backup in
        self.transitions: dict[int, list[Event]] = defaultdict(list)  # completed/failed events by id
        # (policy, server) -> slot -> [(attempt, backup id)], every backup ever made, by marker
        self.slots: dict[tuple[str, int], dict[datetime, list[tuple[int, int]]]] = defaultdict(dict)
        self.creates: dict[tuple[str, int, datetime, int], list[Event]] = defaultdict(list)
        self.sessions: dict[Any, _Session] = {}
        self.ended: list[tuple[_Session, Event | None]] = []
        self.processes: dict[Any, _Process] = {}  # live ones, by number
        self.listed: dict[int | None, Event] = {}  # latest listing covering a server (None: the account's)
        self.listings_logged = False
        self.batches: set[tuple[str, int]] = set()  # (policy, server) whose batch of deletes has begun
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
            policy = self.policies.get(marker.policy)
            return policy if policy is not None and server_id in policy.servers else None
        for policy in self.policies.values():
            if policy.prune_unmanaged and server_id in policy.servers:
                return policy
        return None

    def _attempts(self, name: str, server_id: int, slot: datetime) -> list[tuple[int, int]]:
        """``(attempt, id)`` of the slot's backups ever made, but those a third party deleted."""
        made = self.slots.get((name, server_id), {}).get(slot, [])
        return [(a, b) for a, b in made if b not in self.third_party_deleted]

    def _live(self, name: str, server_id: int) -> _Process | None:
        """The live run-once process that runs ``name`` on ``server_id`` (with its ``now``), if one."""
        found = [
            p for p in self.processes.values() if p.mode == "run-once" and p.now and p.covers(name, server_id)
        ]
        return found[-1] if len(found) == 1 else None

    def _arrive(self, backup: dict[str, Any], event: Event) -> None:
        """A backup appears (created, or listed by a snapshot)."""
        backup_id = backup["id"]
        known = backup_id in self.origin
        self._put(backup)
        if backup["status"] == COMPLETED and backup_id not in self.completed_at:
            self.completed_at[backup_id] = None
        if known:
            return
        self.origin[backup_id] = event
        marker = marker_of(backup.get("description"))
        if marker is None or marker.slot is None or marker.policy not in self.policies:
            return
        name, slot, attempt = marker.policy, marker.slot, marker.attempt
        server_id = backup["server"]["id"]
        policy = self.policies[name]
        earlier = self._attempts(name, server_id, slot)
        self.slots[(name, server_id)].setdefault(slot, []).append((attempt, backup_id))
        twins = [b for a, b in earlier if a == attempt]
        if twins:
            self._violate(
                "duplicate-slot",
                f"{len(twins) + 1} backups for policy {name}, server {server_id}, slot {iso(slot)}, "
                f"attempt {attempt}: {[*twins, backup_id]}",
                *(self.origin[other] for other in twins),
                event,
            )
        elif backup["status"] == COMPLETED:
            self._two_completed(name, server_id, slot, backup_id, event)
        if event.get("kind") == "created":
            key = (name, server_id, slot, attempt)
            at = parse_at(str(event["at"]))
            soon = [
                e
                for e in self.creates[key]
                if e["backup"]["id"] not in self.third_party_deleted
                and (at - parse_at(str(e["at"]))).total_seconds() <= policy.quiet_period - 1
            ]
            if soon:
                gap = (at - parse_at(str(soon[-1]["at"]))).total_seconds()
                self._violate(
                    "second-post-in-quiet-period",
                    f"policy {name}, server {server_id}: attempt {attempt} of slot {iso(slot)} created again "
                    f"{gap:.0f}s after an earlier create of it (quiet period {policy.quiet_period:g}s)",
                    *soon,
                    event,
                )
            self.creates[key].append(event)
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

    def _two_completed(self, name: str, server_id: int, slot: datetime, backup_id: int, event: Event) -> None:
        others = [
            b for _, b in self._attempts(name, server_id, slot) if b != backup_id and b in self.completed_at
        ]
        if others:
            self._violate(
                "duplicate-slot",
                f"two completed backups for policy {name}, server {server_id}, slot {iso(slot)}: "
                f"{[*others, backup_id]}",
                *(self.origin[other] for other in others),
                event,
            )

    # -- events --

    def feed(self, event: Event) -> None:
        self.last_at = moment_of(event)
        kind = event["kind"]
        if kind == "note":
            self._note(event)
            return
        if kind == "listed":
            self._listed(event)
            return
        backup = dict(event["backup"])
        backup_id = backup["id"]
        if kind == "created":
            self.report.checked["third-party creates" if event.get("by") else "created"] += 1
            self._arrive(backup, event)
        elif kind in ("completed", "failed"):
            self._put(backup)
            self.transitions[backup_id].append(event)
            if kind == "completed" and backup_id not in self.completed_at:
                marker = marker_of(backup.get("description"))
                if marker is not None and marker.slot is not None and marker.policy in self.policies:
                    self._two_completed(marker.policy, backup["server"]["id"], marker.slot, backup_id, event)
                self.completed_at[backup_id] = event
        elif kind == "deleted" and event.get("by") == THIRD_PARTY:
            self.report.checked["third-party deletes"] += 1
            before = self.backups.get(backup_id, backup)
            self.ghosts[backup["server"]["id"]][backup_id] = before
            self.third_party_deleted.add(backup_id)
            self._drop(backup_id)
            self.status[backup_id] = "deleted"
        elif kind == "deleted":
            self.report.checked["deleted"] += 1
            self._delete(backup, event)
        elif kind == "expired":
            self._drop(backup_id)
            self.status[backup_id] = "expired"

    def _listed(self, event: Event) -> None:
        listing = event.get("listing") or {}
        if listing.get("backup_type") not in (None, MANUAL):
            return  # a listing of automatic backups shows nothing a prune plans on
        self.listings_logged = True
        self.report.checked["listings"] += 1
        server_id = listing.get("server_id")
        self.listed[int(server_id) if server_id is not None else None] = event

    def _note(self, event: Event) -> None:
        note = event.get("note") or {}
        what = note.get("what")
        number = note.get("process")
        if what == "snapshot":
            self.backups = {}
            self.by_server = defaultdict(dict)
            for backup in note.get("backups", []):
                self._arrive(dict(backup), {**event, "kind": "snapshot", "backup": backup})
        elif what == "clock":
            self.listed = {}  # the campaign moved the sandbox clock: earlier listings are of another time
        elif what == "started":
            self.processes[number] = _Process.from_note(event)
            self._end_batches(number)
        elif what == "ready" and note.get("mode") == "daemon":
            self._end_batches(number)
            self.sessions[number] = self._session(event, note.get("policies") or [])
        elif what == "said":
            if note.get("event") == "run.finished":
                self._end_batches(number, str(note.get("policy")))
            session = self.sessions.get(number)
            if session is None:
                return
            said = note.get("event")
            if said in ("catch_up.started", "catch_up.superseded", "catch_up.listing_failed"):
                session.decided.add(str(note.get("policy")))
            if said == "catch_up.superseded":
                session.superseded.append(event)
            elif said == "catch_up.listing_failed" and note.get("server_id") is None:
                session.skipped.append(event)
            elif said == "backup.create_unknown" and note.get("reason") == "never listed":
                session.unknown.append(event)
            elif said == "run.finished" and note.get("slot"):
                session.finished.append((str(note.get("policy")), parse_at(str(note["slot"]))))
        elif what in _DOWN:
            if what == "exited" and note.get("code") in (0, 1) and number in self.processes:
                self._judge_retries(self.processes[number], event)
            self._end_batches(number)
            self.processes.pop(number, None)
            if number in self.sessions:
                self.ended.append((self.sessions.pop(number), event))

    def _end_batches(self, number: Any, policy: str | None = None) -> None:
        """A process started, became ready, finished a run (of ``policy``) or went down: its batches end."""
        process = self.processes.get(number)
        for name, server_id in list(self.batches):
            if policy is not None and name != policy:
                continue
            if process is None or process.covers(name, server_id):
                self.batches.discard((name, server_id))

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
        """By the slot's markers alone: no attempt in progress or completed, and attempts left."""
        there = [(a, b) for a, b in self._attempts(policy.name, server_id, latest) if b in self.backups]
        if any(self.backups[b]["status"] in (IN_PROGRESS, COMPLETED) for _, b in there):
            return False  # the slot has its backup already (an unfinished one is adopted, not made again)
        return max((a for a, _ in there), default=0) < policy.attempts

    def _judge_retries(self, process: _Process, exited: Event) -> None:
        """A run-once that ran to its end under faults that leave it no reason not to retry a failed slot."""
        if not process.retries_judged or process.now is None:
            return
        for policy in self.policies.values():
            if policy.schedule is None:
                continue
            slot = policy.schedule.latest(process.now)
            if slot is None:
                continue
            for server_id in policy.servers:
                if not process.covers(policy.name, server_id):
                    continue
                made = self._attempts(policy.name, server_id, slot)
                if not made:
                    continue
                self.report.checked["slots judged for retries"] += 1
                if any(b in self.completed_at or self.status.get(b) == IN_PROGRESS for _, b in made):
                    continue
                tried = max(a for a, _ in made)
                if tried >= policy.attempts:
                    self.report.checked["slots given up after every attempt"] += 1
                    continue
                self._violate(
                    "retry-missing",
                    f"policy {policy.name}, server {server_id}: every attempt of slot {iso(slot)} failed, "
                    f"but only {tried} of {policy.attempts} were made before the run ended",
                    process.started,
                    *(self.origin[b] for _, b in made),
                    *(t for _, b in made for t in self.transitions[b]),
                    exited,
                )

    def _delete(self, backup: dict[str, Any], event: Event) -> None:
        backup_id = backup["id"]
        server_id = backup["server"]["id"]
        at = parse_at(event["at"])
        before = self.backups.get(backup_id, backup)
        policy = self._owner(before)
        was_candidate = False
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
            was_candidate = reason is None
            if reason is None:
                self._check_rules(policy, before, event, at)
            elif policy.owns_failed(before):
                if self._superseded(policy, before):
                    self.report.checked["failed attempts deleted as superseded"] += 1
                    self._check_rules(policy, before, event, at)
                else:
                    self._violate(
                        "not-a-candidate",
                        f"policy {policy.name} deleted the failed attempt {backup_id} of server {server_id} "
                        "while no later completed backup of the policy existed there",
                        self.origin.get(backup_id),
                        *self.transitions[backup_id],
                        event,
                    )
            else:
                self._violate(
                    "not-a-candidate",
                    f"policy {policy.name} deleted backup {backup_id} of server {server_id}, "
                    f"which is not its candidate ({reason})",
                    self.origin.get(backup_id),
                    event,
                )
            new = self._check_new_backup(policy, server_id, event, at)
            self._check_view(policy, server_id, event, at, new)
        finally:
            self._drop(backup_id)
            self.status[backup_id] = "deleted"
            if policy is not None and was_candidate:
                left = self._candidates(policy, server_id)
                if left < policy.min_keep:
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

    def _planned_state(self, server_id: int) -> list[dict[str, Any]]:
        """The server as rotator may have seen it: the replayed state and the third party's ghosts."""
        return [*self._server_backups(server_id), *self.ghosts[server_id].values()]

    def _superseded(self, policy: PolicySpec, failed: Mapping[str, Any]) -> bool:
        key = _sort_key(failed)
        server_id = failed["server"]["id"]
        return any(
            policy.untouched_reason(b) is None and _sort_key(b) > key for b in self._planned_state(server_id)
        )

    def _check_rules(self, policy: PolicySpec, backup: Mapping[str, Any], event: Event, at: datetime) -> None:
        server_id = backup["server"]["id"]
        moment = at + timedelta(seconds=1) - timedelta(microseconds=1)
        listing = [Backup.from_api(b) for b in self._planned_state(server_id)]
        plan = plan_server(listing, policy.engine_policy(), moment, server_id=server_id)
        self.report.checked["deletes planned"] += 1
        if any(deleted.backup.id == backup["id"] for deleted in plan.delete):
            return
        reasons = next((d.reasons for d in (*plan.keep, *plan.untouched) if d.backup.id == backup["id"]), ())
        self._violate(
            "kept-by-rules",
            f"policy {policy.name} deleted backup {backup['id']} of server {server_id} (created "
            f"{backup['created_at']}), which its rules keep at {iso(moment.replace(microsecond=0))}: "
            f"{', '.join(reasons) or 'not in the delete set'}",
            self.origin.get(backup["id"]),
            event,
        )

    def _check_new_backup(self, policy: PolicySpec, server_id: int, event: Event, at: datetime) -> int | None:
        """The run's new backup (the id of its slot's completed attempt), or None after a violation."""
        made = self.slots.get((policy.name, server_id)) or {}
        process = self._live(policy.name, server_id)
        slot: datetime | None = None
        if process is not None and process.now is not None and policy.schedule is not None:
            slot = policy.schedule.latest(process.now)
        if slot is not None:
            attempts = made.get(slot, [])
            if not attempts:
                self._violate(
                    "delete-without-new-backup",
                    f"policy {policy.name} deleted on server {server_id} in a run for slot {iso(slot)} "
                    "(its process's now), which made no backup there",
                    process.started if process is not None else None,
                    event,
                )
                return None
        elif not made:
            self._violate(
                "delete-without-new-backup",
                f"policy {policy.name} deleted on server {server_id}, which has no backup of any slot of it",
                event,
            )
            return None
        else:
            slot = max(made)
            attempts = made[slot]
        completed = [b for a, b in sorted(attempts) if b in self.completed_at]
        if not completed:
            newest = max(attempts)[1]
            evidence = [e for _, b in attempts for e in (self.origin.get(b), *self.transitions[b])]
            self._violate(
                "delete-before-completed",
                f"policy {policy.name} deleted on server {server_id} while no attempt of the run's slot "
                f"{iso(slot)} had completed (attempts {sorted(a for a, _ in attempts)}; the newest, "
                f"backup {newest}, was {self.status.get(newest)})",
                *evidence,
                event,
            )
            return None
        if process is None and policy.schedule is not None:
            floor = policy.schedule.latest(at - timedelta(seconds=policy.run_window))
            if floor is not None and slot < floor:
                self._violate(
                    "delete-without-new-backup",
                    f"policy {policy.name} deleted on server {server_id} at {iso(at)}, but its newest backup "
                    f"there is for slot {iso(slot)}: a run deleting now is for slot {iso(floor)} or later "
                    f"(run_window {policy.run_window:g}s), and that run made no backup on this server",
                    self.origin.get(completed[-1]),
                    event,
                )
                return None
        return completed[-1]

    def _check_view(
        self, policy: PolicySpec, server_id: int, event: Event, at: datetime, new: int | None
    ) -> None:
        """The first DELETE of a batch: on a listing of the server that is recent and shows the new backup."""
        key = (policy.name, server_id)
        if key in self.batches or not self.listings_logged:
            return
        self.batches.add(key)
        self.report.checked["delete batches judged for their view"] += 1
        shown = [e for e in (self.listed.get(None), self.listed.get(server_id)) if e is not None]
        if not shown:
            self._violate(
                "stale-view",
                f"policy {policy.name} deleted on server {server_id} with no listing of it since the clock "
                "was last moved",
                event,
            )
            return
        listing = max(shown, key=lambda e: int(e["seq"]))
        began = moment_of(listing)
        age = (at - began).total_seconds()
        if age > policy.max_view_age + self.view_tolerance:
            self._violate(
                "stale-view",
                f"policy {policy.name} began deleting on server {server_id} {age:.1f}s after the latest "
                f"listing of it began (max_view_age {policy.max_view_age:g}s + {self.view_tolerance:g}s)",
                listing,
                event,
            )
            return
        # A listing settles the state first: a completion due by then is logged before it. So the log's
        # order tells whether the listing began before the new backup completed, whatever the clock did.
        # Only a listing of one page is one answer: the later pages of a longer one (where the new backup,
        # the highest id, is) come later, and may show it completed.
        completed = self.completed_at.get(new) if new is not None else None
        one_page = int((listing.get("listing") or {}).get("pages", 1)) == 1
        if completed is not None and one_page and int(listing["seq"]) < int(completed["seq"]):
            self._violate(
                "stale-view",
                f"policy {policy.name} began deleting on server {server_id} on a listing that began at "
                f"{iso(began)}, before the run's new backup {new} completed",
                listing,
                completed,
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
                until = moment_of(down) if down is not None else self.last_at
                lived = (until - moment_of(session.ready)).total_seconds() if until is not None else 0.0
                if name not in session.decided and lived < self.decision_grace:
                    # rotator lists before it takes the policy's turn: its catch-up may still have been
                    # reading (retrying a listing) when it went down; the next start judges again
                    self.report.checked["catch-ups undecided when the daemon went down"] += 1
                    continue
                self.report.checked["catch-ups owed"] += 1
                if session.created[(name, server_id, slot)] > 0:
                    continue
                upcoming = policy.schedule.after(slot)
                claims = [
                    e
                    for e in session.superseded
                    if (e.get("note") or {}).get("policy") == name
                    and moment_of(e) >= upcoming
                    and _names_slot(e, slot)
                ]
                newer = any(
                    count > 0 and (p, sid) == (name, server_id) and later > slot
                    for (p, sid, later), count in session.created.items()
                )
                if claims and newer:
                    self.report.checked["catch-ups overtaken by the next slot"] += 1
                    continue
                unknown = [
                    e
                    for e in session.unknown
                    if (e.get("note") or {}).get("policy") == name
                    and (e.get("note") or {}).get("server_id") == server_id
                    and _names_slot(e, slot)
                ]
                if unknown:
                    # the catch-up ran and its create met an API failure it cannot see through: the
                    # server's result was "unknown" (reported), not a second blind POST
                    self.report.checked["catch-ups whose create's outcome stayed unknown"] += 1
                    continue
                skipped = [e for e in session.skipped if (e.get("note") or {}).get("policy") == name]
                if skipped and newer:
                    self.report.checked["catch-ups skipped on a failed listing, the next slot made"] += 1
                    continue
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


def _names_slot(claim: Event, slot: datetime) -> bool:
    """Whether rotator's word names ``slot`` (or no readable slot at all)."""
    text = (claim.get("note") or {}).get("slot")
    try:
        return parse_at(str(text)) == slot
    except ValueError:
        return True


def check(
    events: Iterable[Event],
    policies: Sequence[PolicySpec],
    *,
    start_margin: float = 0.25,
    view_tolerance: float = 2.0,
    decision_grace: float = 0.0,
) -> Report:
    """Every invariant over ``events`` (the sandbox's log as JSON objects), for ``policies``."""
    checker = Checker(
        policies, start_margin=start_margin, view_tolerance=view_tolerance, decision_grace=decision_grace
    )
    for event in sorted(events, key=lambda e: int(e["seq"])):
        checker.feed(event)
    return checker.finish()
