"""Schedules: APScheduler triggers built from a policy's ``schedule``, and the slots they define.

A *slot* is a scheduled time without its jitter. It names a run: the backup a
run creates is marked with its slot, which makes creation idempotent across
crashes, restarts and a second instance. Interval schedules are anchored at a
fixed instant so that their slots do not move when rotator restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

# Interval slots are counted from here (in the policy's zone), so they survive restarts.
INTERVAL_ANCHOR = datetime(2000, 1, 1)  # noqa: DTZ001 - made aware in the policy's zone below
_LOOKBACK = timedelta(days=400)  # far enough back to find the previous slot of a yearly cron


def cron_trigger(expression: str, timezone: str, jitter: timedelta | None = None) -> CronTrigger:
    """``CronTrigger.from_crontab`` in the policy's zone; ``ValueError`` naming a bad expression."""
    try:
        trigger = CronTrigger.from_crontab(expression, timezone=ZoneInfo(timezone))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a cron expression: {expression!r} ({exc})") from None
    trigger.jitter = int(jitter.total_seconds()) if jitter else None
    return trigger


def interval_trigger(every: timedelta, timezone: str, jitter: timedelta | None = None) -> IntervalTrigger:
    if every < timedelta(seconds=1):
        raise ValueError("an interval must be at least 1s")
    zone = ZoneInfo(timezone)
    return IntervalTrigger(
        seconds=every.total_seconds(),
        start_date=INTERVAL_ANCHOR.replace(tzinfo=zone),
        timezone=zone,
        jitter=int(jitter.total_seconds()) if jitter else None,
    )


def _unjittered(trigger: BaseTrigger) -> BaseTrigger:
    if isinstance(trigger, CronTrigger | IntervalTrigger) and trigger.jitter:
        clone: BaseTrigger = trigger.__class__.__new__(trigger.__class__)
        clone.__setstate__(trigger.__getstate__())
        clone.jitter = None
        return clone
    return trigger


def upcoming(trigger: BaseTrigger, after: datetime) -> Iterator[datetime]:
    """Slots strictly after ``after`` (UTC), in order, without jitter."""
    plain = _unjittered(trigger)
    previous: datetime | None = None
    moment = after + timedelta(microseconds=1)
    while True:
        fire = plain.get_next_fire_time(previous, moment)
        if fire is None:
            return
        yield fire.astimezone(UTC)
        previous, moment = fire, fire + timedelta(microseconds=1)


def next_slots(trigger: BaseTrigger, now: datetime, count: int) -> list[datetime]:
    slots: list[datetime] = []
    for slot in upcoming(trigger, now):
        slots.append(slot)
        if len(slots) == count:
            break
    return slots


def latest_slot(trigger: BaseTrigger, now: datetime) -> datetime | None:
    """The most recent slot at or before ``now`` (UTC), or None if there was none in the lookback."""
    plain = _unjittered(trigger)
    if isinstance(plain, IntervalTrigger):
        # absolute time, as APScheduler counts intervals (aware arithmetic would be wall-clock,
        # an hour off across a DST change)
        step = plain.interval.total_seconds()
        start = plain.start_date.timestamp()
        elapsed = now.timestamp() - start
        if elapsed < 0:
            return None
        return datetime.fromtimestamp(start + step * (elapsed // step), tz=UTC)
    # widen the window until it holds a slot: a minutely cron looks back an hour, a yearly one a year
    for lookback in (timedelta(hours=1), timedelta(days=1), timedelta(days=32), _LOOKBACK):
        found: datetime | None = None
        for slot in upcoming(plain, now - lookback):
            if slot > now:
                break
            found = slot
        if found is not None:
            return found
    return None


def can_fire(trigger: BaseTrigger, now: datetime) -> bool:
    return next(upcoming(trigger, now), None) is not None
