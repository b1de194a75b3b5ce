"""Slots: the instants a schedule names, in UTC, and what a run does about one server's slot.

Pure: no I/O and no clock of its own.

**Instants.** A *slot* is a scheduled time without its jitter, held as an aware
UTC instant; it names a run, and the backup that run makes carries it in its
marker (:mod:`rotator.markers`). Slots are searched on UTC instants, never by
adding to a local wall-clock time (which drops ``fold`` and can step back an
hour in the autumn), and every search is bounded by construction: each step
returns an instant strictly later than the last, and a search that would take
more than :data:`MAX_STEPS` steps raises :class:`SlotSearchError` instead of
spinning.

What a cron time means around daylight saving changes (in the policy's zone):

* **A wall time that occurs twice** (the autumn fold, e.g. 02:30 on
  2025-10-26 in Europe/Berlin) runs **once, at its first occurrence** (summer
  time, 00:30Z); its second occurrence is no slot. So ``30 2 * * *`` runs once
  that night, and ``0 * * * *`` runs at 02:00 CEST but not again at 02:00 CET.
* **A wall time that does not occur** (the spring gap, e.g. 02:30 on
  2025-03-30 in Europe/Berlin) runs **once, shifted forward by the gap**
  (03:30 CEST, 01:30Z), as Python reads such a time (PEP 495, ``fold=0``). When
  that instant is also a slot of its own (``*/15`` at 03:30), it is one slot.
* The marker spells the slot's UTC instant, so it is unique per slot.

Interval schedules count absolute time from a fixed anchor (2000-01-01 in the
policy's zone), so DST never moves them and a restart does not either.

**The slot decision.** :func:`decide` is the one place that says, from a view
of one server's backups, what a run does about its slot: adopt the slot's
backup, create (or retry) an attempt, confirm the view first, wait, or give up.
Only an ``in_progress`` or ``completed`` backup is adopted; a failed attempt is
retried with the next attempt number until ``attempts`` are used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any, Final, TypeAlias

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.markers import MAX_ATTEMPT, make_marker, parse_marker
from rotator.models import COMPLETED, IN_PROGRESS, Backup, Backups

MAX_STEPS: Final = 200_000
"""The most trigger steps one slot search takes (a minutely cron over 4 months); more is a bug."""

_LOOKBACKS: Final = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=400))
_TICK: Final = timedelta(microseconds=1)


class SlotSearchError(RuntimeError):
    """A slot search did not end within its bound (a schedule or zone rotator cannot step through)."""


Schedule: TypeAlias = CronTrigger | IntervalTrigger
"""What slots are computed from: APScheduler's own triggers, as pure values."""


def _plain(trigger: BaseTrigger) -> BaseTrigger:
    """``trigger`` without its jitter (a slot is the time before jitter)."""
    if isinstance(trigger, SlotTrigger):
        return trigger.schedule
    if isinstance(trigger, CronTrigger | IntervalTrigger) and trigger.jitter:
        clone: BaseTrigger = trigger.__class__.__new__(trigger.__class__)
        clone.__setstate__(trigger.__getstate__())
        clone.jitter = None
        return clone
    return trigger


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a slot search needs an aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _wall_clock(trigger: CronTrigger) -> CronTrigger:
    """The same cron fields on a zone without DST: its fire times are the matching wall-clock times."""
    wall: CronTrigger = CronTrigger.__new__(CronTrigger)
    wall.__setstate__({**trigger.__getstate__(), "timezone": UTC, "start_date": None, "end_date": None})
    return wall


def _shift_bound(zone: tzinfo, moment: datetime) -> timedelta:
    """How far a wall time in a spring gap near ``moment`` can be moved forward (the gap's size)."""
    offsets = [(moment + timedelta(days=days)).astimezone(zone).utcoffset() for days in (-1, 0, 1)]
    known = [offset for offset in offsets if offset is not None]
    return max(known) - min(known) if known else timedelta(0)


def _cron_after(trigger: CronTrigger, after: datetime, steps: list[int]) -> datetime | None:
    """The first slot of a cron strictly after ``after`` (UTC).

    The cron's matches are found as naive wall-clock times (APScheduler on a zone
    without DST), then placed in the policy's zone: a time that occurs twice at
    its first occurrence, a time in a gap shifted forward by the gap (PEP 495's
    ``fold=0``). A time in a gap lands later than the wall times just after the
    gap, so the search starts that much earlier and keeps the earliest instant
    after ``after``; it ends at the first wall time past that instant's.
    """
    zone = trigger.timezone
    wall = _wall_clock(trigger)
    start = after.astimezone(zone).replace(tzinfo=None) - _shift_bound(zone, after)
    best: datetime | None = None
    best_wall: datetime | None = None
    cursor = start.replace(tzinfo=UTC)
    while True:
        steps[0] += 1
        if steps[0] > MAX_STEPS:
            raise SlotSearchError(
                f"no slot found within {MAX_STEPS} steps after {after.isoformat()} (cron {trigger} in {zone})"
            )
        fire = wall.get_next_fire_time(None, cursor + _TICK)
        if fire is None:
            return best
        local = fire.replace(tzinfo=None)
        if best_wall is not None and local > best_wall:
            return best
        instant = local.replace(tzinfo=zone).astimezone(UTC)  # fold=0: first occurrence; a gap moves on
        if instant > after and (best is None or instant < best):
            best = instant
            best_wall = instant.astimezone(zone).replace(tzinfo=None)
        cursor = fire


def _interval_after(trigger: IntervalTrigger, after: datetime) -> datetime | None:
    step = round(trigger.interval.total_seconds() * 1_000_000)
    anchor = _micros(trigger.start_date)
    elapsed = _micros(after) - anchor
    index = 0 if elapsed < 0 else elapsed // step + 1
    slot = anchor + index * step
    if trigger.end_date is not None and slot > _micros(trigger.end_date):
        return None
    return _from_micros(slot)


def _micros(moment: datetime) -> int:
    delta = _utc(moment) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def upcoming(trigger: BaseTrigger, after: datetime) -> Iterator[datetime]:
    """Slots strictly after ``after``, in UTC, strictly increasing, without jitter."""
    plain = _plain(trigger)
    moment = _utc(after)
    steps = [0]
    while True:
        if isinstance(plain, IntervalTrigger):
            following = _interval_after(plain, moment)
        elif isinstance(plain, CronTrigger):
            steps[0] = 0  # the bound is per slot: a long iteration is the caller's to bound
            following = _cron_after(plain, moment, steps)
        else:
            raise TypeError(f"slots are computed for cron and interval schedules, not {type(plain).__name__}")
        if following is None:
            return
        yield following
        moment = following


def next_slots(trigger: BaseTrigger, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` slots after ``now`` (fewer when the schedule ends)."""
    slots: list[datetime] = []
    if count <= 0:
        return slots
    for slot in upcoming(trigger, now):
        slots.append(slot)
        if len(slots) == count:
            break
    return slots


def latest_slot(trigger: BaseTrigger, now: datetime) -> datetime | None:
    """The most recent slot at or before ``now`` (UTC); None if there was none in the look-back (400 days)."""
    plain = _plain(trigger)
    now = _utc(now)
    if isinstance(plain, IntervalTrigger):
        step = round(plain.interval.total_seconds() * 1_000_000)
        elapsed = _micros(now) - _micros(plain.start_date)
        if elapsed < 0:
            return None
        return _from_micros(_micros(plain.start_date) + (elapsed // step) * step)
    # widen the window until it holds a slot: a minutely cron looks back an hour, a yearly one a year
    for lookback in _LOOKBACKS:
        found: datetime | None = None
        for steps, slot in enumerate(upcoming(plain, now - lookback - _TICK)):
            if slot > now:
                break
            if steps > MAX_STEPS:
                raise SlotSearchError(f"more than {MAX_STEPS} slots in {lookback} before {now.isoformat()}")
            found = slot
        if found is not None:
            return found
    return None


def can_fire(trigger: BaseTrigger, now: datetime) -> bool:
    """Whether the schedule has any slot after ``now``."""
    return next(upcoming(trigger, now), None) is not None


class SlotTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """An APScheduler trigger that fires at a schedule's slots, plus up to ``jitter`` seconds.

    The daemon schedules with this rather than with the cron trigger itself, so
    that it fires at exactly the slots :func:`upcoming` defines (and never
    steps back in an autumn fold, as stepping a local time would).
    """

    __slots__ = ("jitter", "schedule")

    def __init__(self, schedule: Schedule, jitter: int | None = None) -> None:
        self.schedule: Schedule = _plain(schedule)
        self.jitter = jitter

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # A fire time has its jitter added: the next slot is the first after the previous fire time
        # (jitter is shorter than the spacing of slots); the first is the first at or after now.
        after = previous_fire_time if previous_fire_time is not None else _utc(now) - _TICK
        slot = next(upcoming(self.schedule, after), None)
        if slot is None:
            return None
        fire: datetime | None = self._apply_jitter(slot, self.jitter, now)
        return fire

    def __getstate__(self) -> dict[str, Any]:
        return {"version": 1, "schedule": self.schedule, "jitter": self.jitter}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.schedule = state["schedule"]
        self.jitter = state["jitter"]

    def __str__(self) -> str:
        return f"slots of {self.schedule}"

    def __repr__(self) -> str:
        return f"<SlotTrigger ({self.schedule!r}, jitter={self.jitter})>"


# --- the slot decision -----------------------------------------------------------------------


class Action(StrEnum):
    """What a run does about a server's slot."""

    ADOPT = "adopt"  # the slot's backup exists (in progress or completed): wait for it or use it
    CREATE = "create"  # no attempt yet: create attempt 1
    RETRY = "retry"  # the last attempt failed and attempts remain: create the next
    CONFIRM = "confirm"  # a create would be decided on a view that may have skipped a backup
    WAIT = "wait"  # a create's outcome is unknown: no second POST until the quiet period passed
    GIVE_UP = "give_up"  # every attempt failed


@dataclass(frozen=True, slots=True)
class SlotDecision:
    """What to do, the attempt it concerns, and the backup adopted (for ADOPT)."""

    action: Action
    attempt: int
    backup: Backup | None = None
    failed: tuple[Backup, ...] = ()

    @property
    def creates(self) -> bool:
        return self.action in (Action.CREATE, Action.RETRY)


def slot_marker(policy: str, slot: datetime, attempt: int = 1) -> str:
    """The marker of ``policy``'s ``attempt`` at ``slot``."""
    return make_marker(policy, slot, attempt)


def slot_attempt(backup: Backup, policy: str, slot: datetime) -> int | None:
    """The attempt number when ``backup`` is ``policy``'s backup of ``slot``, else None.

    The one test of "is this my slot's backup": by the marker that ends its
    description, never by its time (the API's clock is not ours).
    """
    description = backup.description
    if not description or "[rotator:" not in description:
        return None
    marker = parse_marker(description)
    if marker is None or marker.policy != policy or marker.slot is None:
        return None
    return marker.attempt if marker.slot == _utc(slot).replace(microsecond=0) else None


def slot_backups(backups: Iterable[Backup], policy: str, slot: datetime) -> list[tuple[int, Backup]]:
    """``(attempt, backup)`` of every backup of ``policy``'s ``slot`` among ``backups``."""
    found = []
    stem = slot_marker(policy, slot)[: -len("Z]")]  # what every attempt's marker contains
    # packed backups: only those that may be the slot's are read back
    candidates = backups.described(stem) if isinstance(backups, Backups) else backups
    for backup in candidates:
        if stem in (backup.description or ""):
            attempt = slot_attempt(backup, policy, slot)
            if attempt is not None:
                found.append((attempt, backup))
    return found


def decide(
    backups: Iterable[Backup],
    policy: str,
    slot: datetime,
    *,
    attempts: int = 1,
    confirmed: bool = True,
    unknown_attempt: int | None = None,
) -> SlotDecision:
    """What a run does about ``policy``'s ``slot`` on one server, from a view of its backups.

    * a completed backup of the slot (any attempt) is adopted (the newest, when
      someone made two); else one in progress is adopted, to be waited for;
    * a failed backup of the slot (or one in a status rotator does not know:
      not usable) is never adopted; the next attempt is created while attempts
      remain (``attempts``: 1 + the policy's retries), then the run gives up;
    * ``unknown_attempt``: a create of that attempt whose outcome is unknown
      and whose quiet period has not passed: wait (it may still be listed);
    * a create is decided only on a ``confirmed`` view (one that cannot have
      skipped a backup, see :mod:`rotator.inventory`); otherwise CONFIRM.
    """
    mine = slot_backups(backups, policy, slot)
    completed = [(a, b) for a, b in mine if b.status == COMPLETED]
    if completed:
        attempt, backup = max(completed, key=lambda pair: (pair[1].sort_key, pair[0]))
        return SlotDecision(Action.ADOPT, attempt, backup)
    running = [(a, b) for a, b in mine if b.status == IN_PROGRESS]
    if running:
        attempt, backup = max(running, key=lambda pair: (pair[1].sort_key, pair[0]))
        return SlotDecision(Action.ADOPT, attempt, backup)
    failed = tuple(sorted((b for _, b in mine), key=lambda b: b.sort_key))
    tried = max((a for a, _ in mine), default=0)
    if unknown_attempt is not None and unknown_attempt > tried:
        return SlotDecision(Action.WAIT, unknown_attempt, failed=failed)
    following = tried + 1
    if following > min(attempts, MAX_ATTEMPT):
        return SlotDecision(Action.GIVE_UP, tried, failed=failed)
    if not confirmed:
        return SlotDecision(Action.CONFIRM, following, failed=failed)
    return SlotDecision(Action.RETRY if tried else Action.CREATE, following, failed=failed)


def slot_done(backups: Iterable[Backup], policy: str, slot: datetime) -> bool:
    """Whether the slot has a completed backup on this server (catch-up: nothing left to do)."""
    return any(b.status == COMPLETED for _, b in slot_backups(backups, policy, slot))


def whole_minutes(moment: datetime) -> datetime:
    """``moment`` in UTC to the minute: the slot of a run that has no schedule."""
    return _utc(moment).replace(second=0, microsecond=0)
