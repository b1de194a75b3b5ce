"""Schedules: a policy's ``schedule`` as the trigger the daemon fires by and slots are computed from.

Both kinds come back as a :class:`~rotator.slots.SlotTrigger`: APScheduler's own
cron or interval trigger (without jitter) for the arithmetic, fired at the
slots :mod:`rotator.slots` defines plus the jitter. Interval schedules are
anchored at a fixed instant so that their slots do not move when rotator restarts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.slots import SlotTrigger, can_fire, latest_slot, next_slots, upcoming

__all__ = [
    "INTERVAL_ANCHOR",
    "can_fire",
    "check_cron",
    "cron_trigger",
    "interval_trigger",
    "latest_slot",
    "next_slots",
    "upcoming",
]

# Interval slots are counted from here (in the policy's zone), so they survive restarts.
INTERVAL_ANCHOR = datetime(2000, 1, 1)  # noqa: DTZ001 - made aware in the policy's zone below


def _jitter(jitter: timedelta | None) -> int | None:
    return int(jitter.total_seconds()) if jitter else None


_WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday(text: str) -> int:
    """A crontab weekday (0 or 7 Sunday, 1 Monday ... 6 Saturday, or a name) as 0..6."""
    name = text.lower()
    if name in _WEEKDAYS:
        return _WEEKDAYS.index(name)
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text) % 7
    raise ValueError(f"not a day of the week: {text!r}")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field in APScheduler 3's numbering (0 is Monday there, Sunday in cron).

    APScheduler 3's ``from_crontab`` passes the field on unchanged (its issue 286), so that
    ``0 3 * * 0`` would run on Mondays; the field is expanded to the days it names and
    written as APScheduler's numbers.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for token in field.split(","):
        span, _, step_text = token.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"not a step: {step_text!r}")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, _, high = span.partition("-")
            # 7 ends a range as Sunday (5-7: Friday to Sunday) and starts one only as 7-7
            first = 7 if low == "7" else _weekday(low)
            last = 7 if high == "7" else _weekday(high)
            if last < first:
                raise ValueError(f"not a range of days: {span!r}")
        else:
            first = last = _weekday(span)
            if step is not None:
                last = 6
        days.update(day % 7 for day in range(first, last + 1, step or 1))
    return ",".join(str((day - 1) % 7) for day in sorted(days, key=lambda day: (day - 1) % 7))


def cron_trigger(expression: str, timezone: str, jitter: timedelta | None = None) -> SlotTrigger:
    """A crontab expression (five fields, cron's weekdays) in the policy's zone.

    ``ValueError`` naming a bad expression.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"not a cron expression: {expression!r} (wrong number of fields; got {len(fields)}, expected 5)"
        )
    minute, hour, day, month, weekday = fields
    try:
        cron = CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_weekdays(weekday),
            timezone=ZoneInfo(timezone),
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a cron expression: {expression!r} ({exc})") from None
    return SlotTrigger(cron, _jitter(jitter))


def interval_trigger(every: timedelta, timezone: str, jitter: timedelta | None = None) -> SlotTrigger:
    if every < timedelta(seconds=1):
        raise ValueError("an interval must be at least 1s")
    zone = ZoneInfo(timezone)
    interval = IntervalTrigger(
        seconds=every.total_seconds(), start_date=INTERVAL_ANCHOR.replace(tzinfo=zone), timezone=zone
    )
    return SlotTrigger(interval, _jitter(jitter))


def check_cron(expression: str) -> None:
    """``ValueError`` unless ``expression`` is a crontab expression that fires at some time."""
    if not can_fire(cron_trigger(expression, "UTC"), datetime.now(UTC)):
        raise ValueError(f"the cron expression {expression!r} can never fire")
