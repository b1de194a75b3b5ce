"""The retention engine: which of a policy's backups to keep, and why.

A pure function of ``(backups, policy, now)``: no I/O, no clock of its own, the
same inputs always give the same plan. A deleted backup cannot come back, so
every decision carries the reasons that produced it, like restic's ``forget``.

Only *candidates* are ever deleted: backups of the policy's servers that are
``manual``, ``completed`` and owned by the policy (their description ends with
the policy's marker, see :mod:`rotator.markers`; with ``prune_unmanaged`` also
the server's manual completed backups that carry no marker at all). Every other
backup of the policy's servers is *untouched*, with its reason.

Candidates are ordered by ``created_at``, ties broken by id (the higher id is
the newer); never by id alone or list position. A candidate is kept when any
rule keeps it:

- ``keep_last: N``: the N newest candidates (reason ``last``);
- ``keep_days: D``: every candidate created at or after ``now - D * 24h``
  (reason ``within Dd``);
- ``keep_hourly`` .. ``keep_yearly: N``: restic's calendar rules. Going through
  the candidates newest first, a rule keeps a candidate whose bucket (local hour,
  day, ISO week, month, year in the policy's time zone) differs from the bucket
  of the last candidate it kept, until it has kept N (reasons such as
  ``daily 2025-01-16`` or ``weekly 2025-W03``);
- ``min_keep: M``: the M newest candidates are always kept (reason ``min_keep``,
  given only when no other rule keeps the candidate).

Failed attempts: a manual backup owned by the policy whose status is
``failed`` never expires by itself. It is deleted (reason ``failed,
superseded``) once a candidate of the same server created after it exists (a
later owned backup completed), and never while none does. Any other status
that is not ``completed`` is untouched.

Planning on a view that misses some backups never deletes more than planning
on the complete view: every rule keeps, of the backups present, at least those
it keeps in the complete view (the N newest, the newest of each of the N most
recent buckets, those within D days, the ``min_keep`` newest all stay kept when
other backups are taken away), and a failed attempt is superseded in the view
only if it is in the complete one. So ``plan(view).deleted`` is a subset of
``plan(complete).deleted`` (tested as a property); the danger is a view that
lists backups that are gone, which is why runs plan on fresh views.

The engine sorts once and then jumps from bucket to bucket by binary search, so
a plan costs O(n log n) however many candidates there are. Its per-backup work is
done in C (``map`` over attribute getters, the marker pattern, ``compress``);
up to :data:`STEP_UP_TO` candidates the calendar rules read each candidate's
bucket keys from a per-zone cache instead of jumping, and in :func:`plan_policy`
servers whose candidates fall in the same buckets share one keep answer. The
engine before these fast paths is kept in ``tests/reference_retention.py``, and
property tests hold the two to the same plans.
"""

from __future__ import annotations

import gc
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache, lru_cache
from itertools import chain, compress, islice, repeat
from operator import add, and_, attrgetter, eq, is_not, itemgetter, mul, ne, not_, sub
from typing import Any, Final, Generic, Self, TypeVar, cast, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rotator.markers import (
    ASCII_ATTEMPT_PATTERN,
    MARKER_PREFIX,
    is_policy_name,
    mentions_marker,
    parse_marker,
)
from rotator.models import COMPLETED, FAILED, MANUAL, Backup

NOT_OWNED: Final = "not owned"
"""The untouched reason of a manual completed backup that is not the policy's."""

LAST: Final = "last"
MIN_KEEP: Final = "min_keep"
SUPERSEDED: Final = "failed, superseded"
"""The reason a failed attempt is deleted: a later owned backup of its server completed."""


class Verdict(StrEnum):
    """What a plan does with one backup."""

    KEEP = "keep"
    DELETE = "delete"
    UNTOUCHED = "untouched"


@dataclass(frozen=True, slots=True)
class Retention:
    """A policy's retention rules. Each count is >= 0, 0 meaning off; rules are OR-ed."""

    keep_last: int = 0
    keep_days: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    min_keep: int = 1

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{spec.name} must be a whole number >= 0, got {value!r}")
        if self.min_keep < 1:
            raise ValueError(f"min_keep must be at least 1, got {self.min_keep}")
        if not self.any_rule:
            raise ValueError("no retention rule is on: set at least one of " + ", ".join(RULE_NAMES))

    @property
    def any_rule(self) -> bool:
        """Whether at least one keep rule is on (``min_keep`` is a floor, not a rule)."""
        return any(getattr(self, name) > 0 for name in RULE_NAMES)


RULE_NAMES: Final = (
    "keep_last",
    "keep_days",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)


@dataclass(frozen=True, slots=True)
class Policy:
    """What the engine needs to know of a policy: its name, servers, zone and rules."""

    name: str
    retention: Retention
    servers: tuple[int, ...] = ()
    timezone: str = "UTC"
    prune_unmanaged: bool = False

    def __post_init__(self) -> None:
        if not is_policy_name(self.name):
            raise ValueError(f"not a policy name: {self.name!r} (letters, digits, '-', '_', '.')")
        object.__setattr__(self, "servers", tuple(self.servers))
        load_zone(self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return load_zone(self.timezone)

    def owns_failed(self, backup: Backup) -> bool:
        """Whether ``backup`` is a failed manual backup carrying this policy's marker (a failed attempt)."""
        if backup.backup_type != MANUAL or backup.status != FAILED:
            return False
        marker = parse_marker(backup.description)
        return marker is not None and marker.policy == self.name

    def untouched_reason(self, backup: Backup) -> str | None:
        """Why ``backup`` (of one of this policy's servers) is not a candidate; ``None`` if it is."""
        if backup.backup_type != MANUAL:
            return backup.backup_type or "no backup type"
        if backup.status != COMPLETED:
            return backup.status or "no status"
        return None if self.adopts(backup.description) else NOT_OWNED

    def adopts(self, description: str | None) -> bool:
        """Whether a manual completed backup of one of this policy's servers with ``description`` is
        a candidate: it ends with this policy's marker, or (``prune_unmanaged``) carries no marker."""
        marker = parse_marker(description)
        if marker is not None:
            return marker.policy == self.name
        # A malformed or misplaced marker is rotator's handwriting, never "unmanaged".
        return self.prune_unmanaged and not mentions_marker(description)


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` naming it when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone: {name!r} (use an IANA name such as Europe/Berlin)") from exc


@dataclass(frozen=True, slots=True, init=False)
class Decision:
    """One backup and why the plan treats it so.

    For a kept backup, the rules that keep it; for a deleted one, nothing; for
    an untouched one, its one reason (``automatic``, ``in_progress``, ``not owned`` ...).
    Which of these it is, is told by the :class:`ServerPlan` tuple holding it.
    """

    backup: Backup
    reasons: tuple[str, ...]

    def __init__(self, backup: Backup, reasons: tuple[str, ...] = ()) -> None:
        # A plan builds one Decision per candidate (a million in the benchmark): setting
        # the slots directly is a third cheaper than the frozen dataclass's __init__.
        _set_backup(self, backup)
        _set_reasons(self, reasons)

    @property
    def reason(self) -> str:
        """The reasons as one string (an untouched backup has exactly one)."""
        return ", ".join(self.reasons)


_set_backup: Final = Decision.__dict__["backup"].__set__
_set_reasons: Final = Decision.__dict__["reasons"].__set__


_T = TypeVar("_T")


class _once(Generic[_T]):  # noqa: N801 (named as the decorator it is)
    """``functools.cached_property`` without its lock (Python 3.11 takes one at every first read: a
    fleet plan reads 100,000 of them): the value is stored in the instance's ``__dict__`` under the
    same name, which then shadows this descriptor. Two threads reading it first may both compute it."""

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> _T | Self:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


@dataclass(frozen=True)
class ServerPlan:
    """The plan for one server of a policy; every tuple is newest first.

    ``deleted`` holds the candidates to delete and ``superseded`` the failed
    attempts to delete; ``delete`` gives both as decisions (a candidate's with
    no reasons, a failed attempt's with ``failed, superseded``), built on first
    use: a delete says nothing beyond its backup, and a plan over a million
    candidates should not pay for a million objects before anyone asks.
    """

    policy: str
    server_id: int
    now: datetime
    keep: tuple[Decision, ...]
    deleted: tuple[Backup, ...]
    untouched: tuple[Decision, ...]
    superseded: tuple[Backup, ...] = ()

    @_once
    def delete(self) -> tuple[Decision, ...]:
        deleted = self.deleted
        decisions = _decisions(deleted, repeat(())) if len(deleted) > _MANY else tuple(map(Decision, deleted))
        if not self.superseded:
            return decisions
        failed = tuple(Decision(backup, (SUPERSEDED,)) for backup in self.superseded)
        return tuple(sorted((*decisions, *failed), key=lambda d: d.backup.sort_key, reverse=True))

    def rows(self) -> tuple[tuple[Verdict, Decision], ...]:
        """Every backup of the server, newest first, with what the plan does with it."""
        merged = [
            *((Verdict.KEEP, decision) for decision in self.keep),
            *((Verdict.DELETE, decision) for decision in self.delete),
            *((Verdict.UNTOUCHED, decision) for decision in self.untouched),
        ]
        merged.sort(key=lambda row: row[1].backup.sort_key, reverse=True)
        return tuple(merged)


@dataclass(frozen=True, slots=True)
class PolicyPlan:
    """The plans of a policy's servers, in the order the policy lists them."""

    policy: str
    now: datetime
    servers: tuple[ServerPlan, ...]

    @property
    def delete(self) -> tuple[Decision, ...]:
        with _collector_paused():
            return tuple(chain.from_iterable(map(_DELETE, self.servers)))


# --- calendar buckets --------------------------------------------------------------------------
# A bucket is named by the local wall-clock time at which it starts (naive): two
# candidates share a bucket exactly when their floors are equal.


def _hour_floor(local: datetime) -> datetime:
    return datetime(local.year, local.month, local.day, local.hour)  # noqa: DTZ001 (wall clock)


def _day_floor(local: datetime) -> datetime:
    return datetime(local.year, local.month, local.day)  # noqa: DTZ001 (wall clock)


def _week_floor(local: datetime) -> datetime:
    return _day_floor(local) - timedelta(days=local.weekday())


def _month_floor(local: datetime) -> datetime:
    return datetime(local.year, local.month, 1)  # noqa: DTZ001 (wall clock)


def _year_floor(local: datetime) -> datetime:
    return datetime(local.year, 1, 1)  # noqa: DTZ001 (wall clock)


def _week_name(floor: datetime) -> str:
    iso = floor.isocalendar()
    return f"{iso.year:04d}-W{iso.week:02d}"


def _next_month(floor: datetime) -> datetime:
    return datetime(floor.year + floor.month // 12, floor.month % 12 + 1, 1)  # noqa: DTZ001 (wall clock)


def _next_year(floor: datetime) -> datetime:
    return datetime(floor.year + 1, 1, 1)  # noqa: DTZ001 (wall clock)


@dataclass(frozen=True, slots=True, eq=False)  # one of each, compared and hashed by identity (caches)
class _CalendarRule:
    setting: str
    label: str
    floor: Callable[[datetime], datetime]
    name: Callable[[datetime], str]
    following: Callable[[datetime], datetime]
    """The floor of the bucket after ``floor``'s (may raise past the calendar's end)."""
    key: Callable[[datetime], int]
    """A number that two local times share exactly when they share a floor (cheaper to compare)."""


_CALENDAR_RULES: Final = (
    _CalendarRule(
        "keep_hourly",
        "hourly",
        _hour_floor,
        lambda f: f"{f.year:04d}-{f.month:02d}-{f.day:02d}T{f.hour:02d}",
        lambda f: f + timedelta(hours=1),
        lambda local: local.toordinal() * 24 + local.hour,
    ),
    _CalendarRule(
        "keep_daily",
        "daily",
        _day_floor,
        lambda f: f"{f.year:04d}-{f.month:02d}-{f.day:02d}",
        lambda f: f + timedelta(days=1),
        datetime.toordinal,
    ),
    _CalendarRule(
        "keep_weekly",
        "weekly",
        _week_floor,
        _week_name,
        lambda f: f + timedelta(days=7),
        lambda local: local.toordinal() - local.weekday(),
    ),
    _CalendarRule(
        "keep_monthly",
        "monthly",
        _month_floor,
        lambda f: f"{f.year:04d}-{f.month:02d}",
        _next_month,
        lambda local: local.year * 12 + local.month,
    ),
    _CalendarRule(
        "keep_yearly", "yearly", _year_floor, lambda f: f"{f.year:04d}", _next_year, attrgetter("year")
    ),
)


@lru_cache(maxsize=1 << 16)
def _starts(floor: datetime, rule: _CalendarRule, zone: ZoneInfo) -> tuple[datetime, ...] | None:
    """The instants (UTC, ascending) at which the local clock enters ``floor``'s bucket at its start:
    the wall time ``floor`` (a fall-back repeats it; a gap skips it, and the zone's offset rule moves
    it past the gap). ``None`` if that is outside the calendar. A fleet's servers share their buckets
    (the same days and weeks), so each is worked out once."""
    found: list[datetime] = []
    for fold in (0, 1):
        try:
            start = floor.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        except OverflowError:
            return None
        if rule.floor(start.astimezone(zone)) == floor:
            found.append(start)
    return tuple(sorted(set(found)))


def _latest_start(floor: datetime, rule: _CalendarRule, zone: ZoneInfo, newest: datetime) -> datetime | None:
    """The latest instant at or before ``newest`` at which the local clock entered ``floor``'s bucket
    at its start (see :func:`_starts`). ``None`` if there is none, or it is outside the calendar.
    """
    starts = _starts(floor, rule, zone)
    if starts is None:
        return None
    best: datetime | None = None
    for start in starts:
        if start <= newest:
            best = start
    return best


def _bucket_start(floor: datetime, rule: _CalendarRule, zone: ZoneInfo, newest: datetime) -> datetime | None:
    """The earliest instant from which up to ``newest`` the local clock stays in ``floor``'s bucket.

    The latest start of the bucket at or before ``newest``, unless the clock went
    on into the next bucket after it and fell back into this one: Pacific/Chatham
    goes from 03:44 to 02:45 (hour 03 between two stays in hour 02), and a
    backup of that hour 03 must not be skipped as if it were of hour 02.
    ``None`` when the start cannot be trusted: the caller then steps.
    """
    start = _latest_start(floor, rule, zone, newest)
    if start is None:
        return None
    try:
        following = rule.following(floor)
    except (OverflowError, ValueError):  # no bucket after this one in the calendar
        return start
    left = _latest_start(following, rule, zone, newest)
    return start if left is None or left < start else None


_REASONS: Final[dict[tuple[_CalendarRule, int], str]] = {}
_MAX_REASONS: Final = 1 << 16


def _reason(rule: _CalendarRule, key: int, wall: datetime) -> str:
    """``daily 2025-01-16``: the reason ``rule`` keeps a candidate of local time ``wall`` (whose
    bucket's key is ``key``). A fleet's servers share their buckets, so each is spelt once (a bounded
    cache: forgotten whole when full)."""
    reason = _REASONS.get((rule, key))
    if reason is None:
        if len(_REASONS) >= _MAX_REASONS:
            _REASONS.clear()
        reason = _REASONS[rule, key] = f"{rule.label} {rule.name(rule.floor(wall))}"
    return reason


JUMP_AFTER: Final = 4
"""Candidates seen in one bucket before the rest of it is jumped over (a bisection instead of steps)."""


def _calendar_keeps(
    times: Sequence[datetime],
    rule: _CalendarRule,
    zone: ZoneInfo,
    count: int,
    local: dict[int, datetime] | None = None,
) -> list[tuple[int, str]]:
    """restic's bucket rule over ``times`` (oldest first): the indices kept, with their reason.

    Newest first, one step at a time: a candidate is kept when its bucket is not the last kept one's.
    A bucket holding many candidates is jumped over once :data:`JUMP_AFTER` of them were seen (all
    of ``[start, created]`` shares it, see :func:`_bucket_start`): a fleet's 30 daily backups cost 30
    steps, a million candidates a bisection per bucket. ``local``: the candidates' local times met so
    far, by index, shared between the rules of one plan.
    """
    kept: list[tuple[int, str]] = []
    index = len(times) - 1
    run = 0  # candidates seen in the current bucket
    seen = {} if local is None else local
    key_of = rule.key
    last_key: int | None = None
    while index >= 0 and len(kept) < count:
        created = times[index]
        wall = seen.get(index)
        if wall is None:
            wall = seen[index] = created.astimezone(zone)
        key = key_of(wall)
        if key != last_key:
            kept.append((index, _reason(rule, key, wall)))
            last_key = key
            run = 1
        else:
            run += 1
        if run >= JUMP_AFTER and (start := _bucket_start(rule.floor(wall), rule, zone, created)) is not None:
            # Everything in [start, created] shares the bucket: skip to the first older one.
            index = bisect_left(times, start, 0, index) - 1
            run = 0
        else:
            index -= 1
    return kept


_AGE: Final = attrgetter("created_at", "id")
_DELETE: Final = attrgetter("delete")
_CREATED: Final = attrgetter("created_at")
_TYPE: Final = attrgetter("backup_type")
_STATUS: Final = attrgetter("status")
_DESCRIPTION: Final = attrgetter("description")
_KIND: Final = attrgetter("backup_type", "status", "description")
_SERVER_ID: Final = attrgetter("server.id")

_MANY: Final = 64
"""Decisions beyond this many are built in C (:func:`_decisions`); fewer, by their class (faster so)."""

STEP_UP_TO: Final = 256
"""Up to this many candidates, the calendar rules read the buckets of every candidate (from a cache
a fleet's servers share) and keep where the bucket changes, in C; beyond, they jump
(:func:`_calendar_keeps`)."""

_Local = tuple[datetime, int, int, int, int, int]
"""A candidate's local time in the policy's zone, then its bucket key for each of :data:`_CALENDAR_RULES`."""
_HOUR: Final = attrgetter("hour")
_MONTH: Final = attrgetter("month")
_YEAR: Final = attrgetter("year")


def _locals_of(times: Sequence[datetime], zone: ZoneInfo) -> list[_Local]:
    """The local time and bucket keys of every instant of ``times`` (each key as its rule's ``key``
    gives it), in C; ``OverflowError`` when one's local time is outside the calendar."""
    walls = list(map(datetime.astimezone, times, repeat(zone)))
    ordinals = list(map(datetime.toordinal, walls))
    hours = map(add, map(mul, ordinals, repeat(24)), map(_HOUR, walls))
    weeks = map(sub, ordinals, map(datetime.weekday, walls))
    months = map(add, map(mul, map(_YEAR, walls), repeat(12)), map(_MONTH, walls))
    return list(zip(walls, hours, ordinals, weeks, months, map(_YEAR, walls), strict=True))


_PROBE: Final = timedelta(hours=1)
"""The step at which :class:`_Floors` probes its zone for a change of UTC offset. Changes of offset in
tzdata are days apart (95 hours at the least: Africa/Freetown in 1939; a test checks every zone), so
none comes and goes between two probes unseen."""
_MICROSECOND: Final = timedelta(microseconds=1)
_TABLE_FROM: Final = datetime(2, 1, 1, tzinfo=UTC)
_TABLE_UNTIL: Final = datetime(9998, 1, 1, tzinfo=UTC)
"""The instants a :class:`_Floors` table covers at most (away from the calendar's ends, where local
times may not exist): candidates outside are converted one by one."""
_MIN_PROBES: Final = 4 * 24 * 31
"""The probes a plan's :class:`_Floors` may make however few its candidates: a month's, hourly, four
times over (beyond that, as many as there are candidates)."""
_HOURLY: Final = 1
_DAILY: Final = 2
"""Positions in :data:`_Local` of the two finest keys: either tells every coarser bucket too."""


def _wall_shift(zone: ZoneInfo, at: datetime) -> timedelta:
    """How far the local wall clock of ``zone`` is ahead of UTC at the instant ``at``."""
    return at.astimezone(zone).replace(tzinfo=None) - at.replace(tzinfo=None)


class _Floors:
    """The finest bucket key (hour, or day) of a plan's candidates, read off a table by bisection.

    Scoped to one :func:`plan_policy` call. The table cuts time (UTC) into intervals in which the local
    floor of the finest calendar rule on stays the same: it starts a new interval at every change of the
    zone's offset (found by probing every :data:`_PROBE` and bisecting to the microsecond) and at every
    local hour or midnight between. An interval's key is its start's, converted by ``astimezone`` as
    the reference converts every candidate; a candidate's key is its interval's, found in C. The table
    grows to the candidates' span as servers come; it probes at most ``budget`` times in all, and where
    it would need more (or a candidate is near an end of the calendar) it answers ``None``.
    """

    __slots__ = ("budget", "end", "first", "keys", "off", "position", "starts", "unit", "zone")

    def __init__(self, zone: ZoneInfo, hourly: bool, budget: int) -> None:
        self.zone = zone
        self.position = _HOURLY if hourly else _DAILY
        self.unit = timedelta(hours=1) if hourly else timedelta(days=1)
        self.budget = budget
        self.starts: list[datetime] = []
        """The intervals' starts, ascending, then the end of the last."""
        self.keys: list[int] = []
        """Per interval, its key, after a placeholder (``bisect_right`` over ``starts`` counts from 1)."""
        self.first = self.end = _TABLE_FROM
        self.off = False
        """Given up: a new answer's own local times disagreed with the table's keys (see :func:`_keeps`)."""

    def keys_of(self, times: Sequence[datetime]) -> list[int] | None:
        """The finest bucket key of every instant of ``times`` (ascending), or ``None`` (see above)."""
        if self.off:
            return None
        if not times:
            return []
        if (times[0] < self.first or times[-1] >= self.end) and not self._cover(times[0], times[-1]):
            return None
        return list(map(self.keys.__getitem__, map(bisect_right, repeat(self.starts), times)))

    def _cover(self, first: datetime, last: datetime) -> bool:
        until = _TABLE_UNTIL - self.unit
        if first < _TABLE_FROM or last >= until:
            return False
        if self.starts:
            first, last = min(first, self.first), max(last, self.end)
        span = last - first
        room = self.budget * _PROBE - span
        if room < timedelta(0):
            return False
        # Room for the next servers' backups a little earlier or later, within the budget.
        pad = min(max(timedelta(days=1), span / 4), room / 2)
        lo = first - min(pad, first - _TABLE_FROM)
        end = last + min(pad, until - last) + _MICROSECOND
        self.budget -= int((end - lo) / _PROBE) + 1
        self._build(lo, end)
        return True

    def _build(self, lo: datetime, end: datetime) -> None:
        zone, unit, position = self.zone, self.unit, self.position
        starts: list[datetime] = []
        keys: list[int] = [0]
        at = lo
        while at < end:
            shift = _wall_shift(zone, at)
            change = self._next_change(at, shift, end)
            wall = at + shift
            starts.append(at)
            keys.append(_key_of(wall, position))
            floor = _unit_floor(wall, position) + unit
            while floor - shift < change:
                starts.append(floor - shift)
                keys.append(_key_of(floor, position))
                floor += unit
            at = change
        starts.append(end)
        self.starts, self.keys, self.first, self.end = starts, keys, lo, end

    def _next_change(self, at: datetime, shift: timedelta, end: datetime) -> datetime:
        """The first instant after ``at`` at which the zone's offset is no longer ``shift``, or ``end``."""
        zone = self.zone
        while at < end:
            probe = min(at + _PROBE, end)
            if _wall_shift(zone, probe) != shift:
                # The shift is still ``shift`` at ``low`` microseconds after ``at``, not at ``high``.
                low, high = 0, (probe - at) // _MICROSECOND
                while high - low > 1:
                    middle = (low + high) // 2
                    if _wall_shift(zone, at + timedelta(microseconds=middle)) == shift:
                        low = middle
                    else:
                        high = middle
                return at + timedelta(microseconds=high)
            at = probe
        return end


def _unit_floor(wall: datetime, position: int) -> datetime:
    if position == _HOURLY:
        return wall.replace(minute=0, second=0, microsecond=0)
    return wall.replace(hour=0, minute=0, second=0, microsecond=0)


def _key_of(wall: datetime, position: int) -> int:
    """The key of the wall time ``wall`` (its fields, whatever its tzinfo) as :func:`_locals_of` gives it."""
    return wall.toordinal() * 24 + wall.hour if position == _HOURLY else wall.toordinal()


def _step_keeps(
    local: list[_Local], position: int, rule: _CalendarRule, count: int
) -> tuple[list[int], list[str]]:
    """restic's bucket rule read literally over every candidate (oldest first in ``local``), in C:
    newest first, a candidate is kept when its bucket is not the next newer candidate's (which is the
    last kept one's bucket: every candidate between them shares it), until ``count`` are kept. The
    indices kept, and their reasons."""
    keys = list(map(itemgetter(position), local))
    newest_first = keys[::-1]
    changed = map(ne, newest_first, chain((None,), newest_first))
    kept = list(islice(compress(range(len(keys) - 1, -1, -1), changed), count))
    kept_keys = list(map(keys.__getitem__, kept))
    reasons = list(map(_REASONS.get, zip(repeat(rule), kept_keys)))
    if None in reasons:
        for at, index in enumerate(kept):
            reasons[at] = _reason(rule, kept_keys[at], local[index][0])
    return kept, reasons  # type: ignore[return-value]


_Calendar = tuple[tuple[int, _CalendarRule, int], ...]
"""The calendar rules a retention has on: each with its position in :data:`_Local` and its count."""


def _calendar_of(retention: Retention) -> _Calendar:
    return tuple(
        (position, rule, getattr(retention, rule.setting))
        for position, rule in enumerate(_CALENDAR_RULES, start=1)
        if getattr(retention, rule.setting)
    )


def _calendar_reasons(
    times: Sequence[datetime], calendar: _Calendar, zone: ZoneInfo, steps: list[_Local] | None = None
) -> Iterator[tuple[Sequence[int], Sequence[str]]]:
    """What the calendar rules keep, rule after rule: the indices in ``times`` (oldest first), and why.
    ``steps``: the local times of ``times`` (:func:`_locals_of`), if known."""
    if not calendar:
        return
    if steps is None and len(times) <= STEP_UP_TO:
        try:
            steps = _locals_of(times, zone)
        except OverflowError:  # a candidate at an end of the calendar: the jumping engine visits fewer
            steps = None
    local: dict[int, datetime] = {}
    for position, rule, count in calendar:
        if steps is None:
            kept = _calendar_keeps(times, rule, zone, count, local)
            yield [index for index, _ in kept], [reason for _, reason in kept]
        else:
            yield _step_keeps(steps, position, rule, count)


def _keep_reasons(
    times: Sequence[datetime],
    retention: Retention,
    zone: ZoneInfo,
    now: datetime,
    calendar: _Calendar | None = None,
    *,
    steps: list[_Local] | None = None,
) -> dict[int, list[str]]:
    """The reasons of every kept candidate, by index in ``times`` (oldest first), in the rules' order."""
    count = len(times)
    reasons: defaultdict[int, list[str]] = defaultdict(list)
    get = reasons.__getitem__  # a new index gets an empty list

    def add(indices: Iterable[int], texts: Iterable[str]) -> None:
        deque(map(list.append, map(get, indices), texts), maxlen=0)

    add(range(count - 1, max(count - retention.keep_last, 0) - 1, -1), repeat(LAST))
    for indices, texts in _calendar_reasons(
        times, _calendar_of(retention) if calendar is None else calendar, zone, steps
    ):
        add(indices, texts)
    if retention.keep_days:
        cutoff = now - timedelta(days=retention.keep_days)
        add(range(count - 1, bisect_left(times, cutoff) - 1, -1), repeat(f"within {retention.keep_days}d"))
    for index in range(count - 1, max(count - retention.min_keep, 0) - 1, -1):
        if index not in reasons:
            reasons[index] = [MIN_KEEP]
    return reasons


def _utc_now(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    return now.astimezone(UTC)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a plan is built: a plan makes millions of objects that hold
    no cycles, and every full collection it triggered would walk the whole listing again (most of a
    fleet plan's time). Reference counting frees everything as before; the collector is on again after.

    Before it is, the objects made meanwhile go to the oldest generation at once (``gc.freeze`` and
    ``gc.unfreeze``: a move of lists, no walk): else the first allocation after would walk them all in
    a young collection (0.3 s for a fleet's plan), and a middle one again later, to put them there. Not
    when something else holds objects frozen (``unfreeze`` would let those go too)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def plan_server(
    backups: Iterable[Backup], policy: Policy, now: datetime, *, server_id: int | None = None
) -> ServerPlan:
    """The plan for one server's backups under ``policy`` at ``now``.

    ``backups`` must all belong to one server; ``server_id`` names it (needed
    when there are no backups, checked against them otherwise).
    """
    now = _utc_now(now)
    listing = list(backups)
    server_ids = set(map(_SERVER_ID, listing))
    if server_id is not None:
        server_ids.add(server_id)
    if len(server_ids) != 1:
        raise ValueError(
            f"plan_server needs the backups of exactly one server, got servers {sorted(server_ids)}"
        )
    (server,) = server_ids
    if policy.servers and server not in policy.servers:
        raise ValueError(f"server {server} is not one of policy {policy.name!r}'s servers")
    with _collector_paused():
        kinds = _completed_manual(listing)
        marks = _marked(policy, list(map(_DESCRIPTION, listing)))
        quick = list(marks) if kinds is None else list(map(and_, kinds, marks))
        if all(quick):
            return _plan_one_server(listing, [], policy, now, server)
        rest = list(compress(listing, map(not_, quick)))
        return _plan_one_server(list(compress(listing, quick)), rest, policy, now, server)


def _completed_manual(listing: Sequence[Backup]) -> Iterator[bool] | None:
    """Per backup, whether it is manual and completed (the first two tests of ``untouched_reason``), in
    C; ``None`` when every one is (counted in C: the API's words are interned, one object each)."""
    types = list(map(_TYPE, listing))
    statuses = list(map(_STATUS, listing))
    if types.count(MANUAL) == len(types) and statuses.count(COMPLETED) == len(statuses):
        return None
    return map(and_, map(eq, types, repeat(MANUAL)), map(eq, statuses, repeat(COMPLETED)))


# A slot that is a valid time in every year (no 0000, no 29 February), and an attempt as markers spells
# it. Digits are ASCII only: ``\d`` takes any decimal digit (``int`` reads four ARABIC-INDIC DIGIT ZEROs
# as 0, a year 0000 that parse_marker refuses), and a miss here only costs the slow path.
_ANY_YEAR_SLOT: Final = (
    r"(?!0000)[0-9]{4}-"
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?Z"
)
_END: Final = "\x00"
"""What ends each description in the one text :func:`_marked` scans (counted first: when a description
holds it, each is matched alone)."""


def _marker_text(policy: str) -> str:
    """The regular expression of what surely is ``policy``'s marker (see :func:`_marker_pattern`)."""
    slot = r"(?:@" + _ANY_YEAR_SLOT + r"(?:#(?:" + ASCII_ATTEMPT_PATTERN + r"))?)?"
    return r"\[rotator:" + re.escape(policy) + slot + r"\]"


@cache
def _marker_pattern(policy: str) -> re.Pattern[str]:
    """What surely ends with ``policy``'s marker: every description it matches, :func:`parse_marker` reads
    as ``policy``'s marker (a miss proves nothing: a slot on 29 February). Wider than the markers module's
    fast pattern (the 29th to the 31st where every year has them), and without its year 0000, which
    ``parse_marker`` refuses."""
    return re.compile(_marker_text(policy) + r"\Z")


@cache
def _scan_pattern(policy: str) -> re.Pattern[str]:
    """A match at every :data:`_END` of descriptions joined (see :func:`_marked`): its one group is that
    ``_END`` when the marker pattern ends there, else it takes no part (``findall`` gives ``""``)."""
    return re.compile(_marker_text(policy) + "(" + _END + ")|" + _END)


def _marked(policy: Policy, descriptions: list[str | None]) -> Iterator[bool]:
    """Per description, whether it surely ends with ``policy``'s marker (a miss proves nothing).

    One scan of the descriptions joined, each ended by :data:`_END` (a third faster than a match per
    description): when no description holds ``_END``, every match of :func:`_scan_pattern` ends at an
    ``_END`` (the pattern takes none before its last) and lies within one description, and every
    ``_END`` ends one match, so ``findall`` answers each description in order. The marker pattern
    matches within a description only at a ``[rotator:``; none but the last can be followed by a
    marker and the end (the pattern holds no ``[`` after its first).
    """
    texts = (
        [description or "" for description in descriptions]
        if None in descriptions
        else cast(list[str], descriptions)
    )
    text = _END.join(texts) + _END
    if text.count(_END) == len(texts):
        return map(bool, _scan_pattern(policy.name).findall(text))
    # A description holding _END: the marker pattern matched at each one's last "[rotator:" (or at 0,
    # where rfind finds none, and fails there).
    match = _marker_pattern(policy.name).match
    return map(is_not, map(match, texts, map(str.rfind, texts, repeat(MARKER_PREFIX))), repeat(None))


_MARKED: Final = 2
"""The grade of a description :func:`_marked` accepts (as the marker test of the reference)."""
_ADOPTED: Final = 1
"""The grade of a description the policy adopts that :func:`_marked` misses (a slot on the 29th)."""


def _grades(policy: Policy, listing: list[Backup]) -> list[int]:
    """Per backup, :data:`_MARKED` (manual, completed and :func:`_marked`), :data:`_ADOPTED` (a candidate
    :func:`_marked` misses, such as a slot on 29 February) or 0 (not a candidate), each distinct
    (type, status, description) answered once: a fleet's servers share them (one description a slot)."""
    kinds = list(map(_KIND, listing))
    distinct = list(dict.fromkeys(kinds))
    answers = {
        kind: (_MARKED if marked else _ADOPTED if policy.adopts(kind[2]) else 0)
        if kind[0] == MANUAL and kind[1] == COMPLETED
        else 0
        for kind, marked in zip(distinct, _marked(policy, [kind[2] for kind in distinct]), strict=True)
    }
    return list(map(answers.__getitem__, kinds))


def _decisions(backups: Sequence[Backup], reasons: Iterable[tuple[str, ...]]) -> tuple[Decision, ...]:
    """``Decision(backup, reasons)`` for each backup and its reasons, built in C: the slots set as
    :class:`Decision`'s ``__init__`` sets them (a plan of a million candidates deletes a million)."""
    made: list[Decision] = list(map(object.__new__, repeat(Decision, len(backups))))
    deque(map(_set_backup, made, backups), maxlen=0)
    deque(map(_set_reasons, made, reasons), maxlen=0)
    return tuple(made)


def _plan_one_server(
    candidates: list[Backup],
    rest: list[Backup],
    policy: Policy,
    now: datetime,
    server_id: int,
    *,
    zone: ZoneInfo | None = None,
    calendar: _Calendar | None = None,
    memo: dict[object, _Keeps] | None = None,
    floors: _Floors | None = None,
) -> ServerPlan:
    """The plan of one server: ``candidates`` are known to be (in listing order), ``rest`` are the other
    backups (in listing order), each asked :meth:`Policy.untouched_reason`."""
    untouched: list[Decision] = []
    for backup in rest:
        reason = policy.untouched_reason(backup)
        if reason is None:
            candidates.append(backup)
        else:
            untouched.append(Decision(backup, (reason,)))
    # Oldest first by (created_at, id): by created_at alone (much faster than by tuples); ties
    # (rare) are spotted in C and then settled by the id.
    candidates.sort(key=_CREATED)
    times = list(map(_CREATED, candidates))
    if any(map(eq, times, islice(times, 1, None))):
        candidates.sort(key=_AGE)
    superseded: list[Backup] = []
    if candidates and untouched:
        newest = candidates[-1].sort_key
        still: list[Decision] = []
        for decision in untouched:
            backup = decision.backup
            if backup.sort_key < newest and policy.owns_failed(backup):
                superseded.append(backup)
            else:
                still.append(decision)
        untouched = still
        superseded.sort(key=attrgetter("sort_key"), reverse=True)
        untouched.sort(key=lambda decision: decision.backup.sort_key, reverse=True)
    elif untouched:
        untouched.sort(key=lambda decision: decision.backup.sort_key, reverse=True)
    kept, reasons, doomed = _keeps(
        times,
        policy.retention,
        policy.zone if zone is None else zone,
        now,
        calendar=calendar,
        memo=memo,
        floors=floors,
    )
    keep = tuple(map(Decision, map(candidates.__getitem__, kept), reasons))
    deleted = tuple(compress(reversed(candidates), doomed))
    return ServerPlan(policy.name, server_id, now, keep, deleted, tuple(untouched), tuple(superseded))


_Keeps = tuple[tuple[int, ...], tuple[tuple[str, ...], ...], tuple[bool, ...]]
"""The indices kept (newest first), their reasons, and per candidate (newest first) whether it goes."""


def _keeps(
    times: Sequence[datetime],
    retention: Retention,
    zone: ZoneInfo,
    now: datetime,
    *,
    calendar: _Calendar | None,
    memo: dict[object, _Keeps] | None,
    floors: _Floors | None = None,
) -> _Keeps:
    """What :func:`_keep_reasons` keeps, ready to build a plan. ``memo``: the answers of a fleet's
    servers so far, by what the rules read of ``times``: their count, where ``keep_days`` cuts them,
    and (when a calendar rule is on) the finest bucket key of each, local hour or day, which tells
    every coarser bucket and the reasons spelt from them. Servers backed up in the same hours or days
    get the same answer (and share its tuples). ``floors``: the plan's table of finest keys; when it
    gives none, each candidate is converted."""
    count = len(times)
    signature: object = None
    steps: list[_Local] | None = None
    if memo is not None and count <= STEP_UP_TO:
        on = _calendar_of(retention) if calendar is None else calendar
        cut = bisect_left(times, now - timedelta(days=retention.keep_days)) if retention.keep_days else 0
        finest: list[int] | None = None
        position = _HOURLY if on and on[0][1].setting == "keep_hourly" else _DAILY
        if on and floors is not None:
            finest = floors.keys_of(times)
        if on and finest is None:
            try:
                steps = _locals_of(times, zone)
            except OverflowError:  # outside the calendar: worked out without the memo
                steps = None
            else:
                finest = list(map(itemgetter(position), steps))
        if finest is not None or not on:
            signature = (count, cut, tuple(finest) if finest is not None else ())
            found = memo.get(signature)
            if found is not None:
                return found
            if on and steps is None:
                # A new answer: worked out from each candidate's own local time, which must give the
                # keys the table gave (else the table is given up and the signature is the true one).
                steps = _locals_of(times, zone)
                exact = list(map(itemgetter(position), steps))
                if exact != finest:  # a change of offset the probes missed
                    assert floors is not None
                    floors.off = True
                    signature = (count, cut, tuple(exact))
    reasons = _keep_reasons(times, retention, zone, now, calendar, steps=steps)
    kept = sorted(reasons, reverse=True)
    doomed = [True] * count
    for index in kept:
        doomed[count - 1 - index] = False
    answer = (tuple(kept), tuple(map(tuple, map(reasons.__getitem__, kept))), tuple(doomed))
    if signature is not None:
        memo[signature] = answer  # type: ignore[index]
    return answer


def plan_policy(backups: Iterable[Backup], policy: Policy, now: datetime) -> PolicyPlan:
    """The plan of every server of ``policy``; backups of other servers are not part of it."""
    now = _utc_now(now)
    listing = list(backups)
    with _collector_paused():
        # Sorted out over the whole listing at once, in C: a fleet's 3,000,000 backups are mostly marked.
        grades = _grades(policy, listing)
        server_ids = list(map(_SERVER_ID, listing))
        marked: dict[int, list[Backup]] = {server: [] for server in policy.servers}
        every = grades.count(_MARKED) == len(grades)
        if every:
            _group(marked, listing, server_ids)
        else:
            mask = list(map(eq, grades, repeat(_MARKED)))
            _group(marked, list(compress(listing, mask)), list(compress(server_ids, mask)))
        adopted: dict[int, list[Backup]] = {}
        others: dict[int, list[Backup]] = {}
        if not every:
            for backup, server, grade in zip(listing, server_ids, grades, strict=True):
                if grade != _MARKED and server in marked:
                    (adopted if grade else others).setdefault(server, []).append(backup)
        zone = policy.zone
        calendar = _calendar_of(policy.retention)
        memo: dict[object, _Keeps] = {}
        floors = (
            _Floors(zone, calendar[0][1].setting == "keep_hourly", len(listing) + _MIN_PROBES)
            if calendar
            else None
        )
        return PolicyPlan(
            policy.name,
            now,
            tuple(
                _plan_one_server(
                    [*group, *adopted[server]] if server in adopted else group,
                    others.get(server, []),
                    policy,
                    now,
                    server,
                    zone=zone,
                    calendar=calendar,
                    memo=memo,
                    floors=floors,
                )
                for server, group in marked.items()
            ),
        )


def _group(groups: dict[int, list[Backup]], listing: list[Backup], server_ids: list[int]) -> None:
    """Each backup of ``listing`` appended to its server's group (if it has one), in listing order: run
    by run of one server (found in C; an account listing holds a server's backups together)."""
    if not listing:
        return
    starts = [0, *compress(range(1, len(server_ids)), map(ne, server_ids, islice(server_ids, 1, None)))]
    ends = [*islice(starts, 1, None), len(server_ids)]
    get = groups.get
    for start, end in zip(starts, ends, strict=True):
        group = get(server_ids[start])
        if group is not None:
            group += listing[start:end]
