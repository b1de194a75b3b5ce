"""Slots at their edges: the step bound, schedule starts and ends, jitter, and odd inputs.

Each test states the promise of :mod:`rotator.slots` it checks (the edges
``tests/test_slots.py`` does not reach: ``make mutation`` found them).
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

import rotator.slots
from rotator.slots import (
    SlotSearchError,
    SlotTrigger,
    _shift_bound,
    _utc,
    _wall_clock,
    can_fire,
    latest_slot,
    next_slots,
    upcoming,
)

BERLIN = ZoneInfo("Europe/Berlin")
SPRING = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)  # Berlin's clocks go 02:00 CET -> 03:00 CEST


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class NoOffset(tzinfo):
    """A tzinfo that names no offset: a datetime carrying it is not aware (Python's definition)."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def fromutc(self, dt: datetime) -> datetime:
        return dt.replace(tzinfo=self)


# --- the step bound ----------------------------------------------------------------------------


def test_a_cron_slot_takes_two_steps_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain hourly cron in UTC: one step finds the slot, one more sees it is the earliest.

    The bound is per slot, so a bound of 2 lets any number of slots through.
    """
    monkeypatch.setattr(rotator.slots, "MAX_STEPS", 2)
    hourly = CronTrigger(minute=0, timezone=UTC)
    assert next_slots(hourly, at("2025-06-01T10:30"), 3) == [
        at("2025-06-01T11:00"),
        at("2025-06-01T12:00"),
        at("2025-06-01T13:00"),
    ]


def test_a_cron_search_past_the_bound_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that needs more steps than MAX_STEPS raises SlotSearchError naming the bound."""
    monkeypatch.setattr(rotator.slots, "MAX_STEPS", 1)
    hourly = CronTrigger(minute=0, timezone=UTC)
    with pytest.raises(
        SlotSearchError, match=r"no slot found within 1 steps after 2025-06-01T10:30:00\+00:00"
    ):
        next(upcoming(hourly, at("2025-06-01T10:30")))


def test_latest_slot_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """latest_slot walks the look-back's slots: 61 minutely ones in the first hour, steps 0..60."""
    monkeypatch.setattr(rotator.slots, "MAX_STEPS", 60)
    minutely = CronTrigger(minute="*", timezone=UTC)
    assert latest_slot(minutely, at("2025-06-01T10:00")) == at("2025-06-01T10:00")


def test_latest_slot_past_the_bound_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """More slots in the look-back than MAX_STEPS: SlotSearchError, not a long walk."""
    monkeypatch.setattr(rotator.slots, "MAX_STEPS", 59)
    minutely = CronTrigger(minute="*", timezone=UTC)
    with pytest.raises(
        SlotSearchError, match=r"more than 59 slots in 1:00:00 before 2025-06-01T10:00:00\+00:00"
    ):
        latest_slot(minutely, at("2025-06-01T10:00"))


# --- what a slot is ----------------------------------------------------------------------------


def test_cron_slots_are_utc_and_ignore_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots are aware UTC instants, the same whatever the host's local zone is (no naive time is
    read as the host's local time on the way)."""
    expected = [at("2025-06-01T13:00"), at("2025-06-01T14:00"), at("2025-06-01T15:00")]
    hourly = CronTrigger(minute=0, timezone=BERLIN)
    for zone in ("UTC", "America/New_York", "Asia/Tokyo", "Pacific/Honolulu"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            slots = next_slots(hourly, at("2025-06-01T12:00"), 3)
        finally:
            monkeypatch.delenv("TZ")
            time.tzset()
        assert slots == expected, zone
        assert all(slot.tzinfo is UTC for slot in slots), zone
    assert os.environ.get("TZ") is None


def test_the_wall_clock_is_the_cron_fields_alone() -> None:
    """The wall clock has the cron's fields on UTC, without the trigger's own start or end date."""
    cron = CronTrigger(
        hour=3,
        minute=0,
        timezone=BERLIN,
        start_date=datetime(2025, 1, 1, tzinfo=BERLIN),
        end_date=datetime(2026, 1, 1, tzinfo=BERLIN),
    )
    wall = _wall_clock(cron)
    assert wall.timezone is UTC
    assert wall.start_date is None
    assert wall.end_date is None
    assert str(wall) == str(cron)
    assert cron.start_date == datetime(2025, 1, 1, tzinfo=BERLIN)  # the caller's trigger is left alone


def test_the_gap_bound_is_the_gap_within_a_day() -> None:
    """_shift_bound is the spring gap (1 h in Berlin) within a day of the change, else nothing."""
    assert _shift_bound(BERLIN, SPRING) == timedelta(hours=1)
    assert _shift_bound(BERLIN, SPRING - timedelta(hours=23)) == timedelta(hours=1)
    assert _shift_bound(BERLIN, SPRING + timedelta(hours=23)) == timedelta(hours=1)
    assert _shift_bound(BERLIN, SPRING + timedelta(hours=36)) == timedelta(0)  # not two days after
    assert _shift_bound(BERLIN, SPRING - timedelta(hours=36)) == timedelta(0)  # nor two days before
    assert _shift_bound(UTC, SPRING) == timedelta(0)


def test_the_gap_bound_of_a_zone_without_offsets_is_zero() -> None:
    """A zone that names no offsets has no gap to shift by."""
    assert _shift_bound(NoOffset(), SPRING) == timedelta(0)


def test_a_tzinfo_without_an_offset_is_not_aware() -> None:
    """A datetime whose tzinfo names no offset is refused like a naive one (not read as local time)."""
    with pytest.raises(ValueError, match="needs an aware datetime"):
        _utc(datetime(2025, 6, 1, tzinfo=NoOffset()))
    with pytest.raises(ValueError, match="needs an aware datetime"):
        next_slots(CronTrigger(minute=0, timezone=UTC), datetime(2025, 6, 1, tzinfo=NoOffset()), 1)


def test_other_triggers_are_refused_by_name() -> None:
    """Only cron and interval schedules have slots: another trigger is a TypeError naming it."""
    with pytest.raises(TypeError, match=r"not DateTrigger$"):
        next(upcoming(DateTrigger(at("2025-06-01T10:00")), at("2025-06-01T09:00")))


# --- interval starts and ends ------------------------------------------------------------------


def test_an_interval_starts_at_its_start_date() -> None:
    """Long before an interval's start date, its first slot is the start date itself."""
    daily = IntervalTrigger(days=1, start_date=at("2030-01-01T00:00"), timezone=UTC)
    assert next_slots(daily, at("2029-12-25T12:00"), 2) == [at("2030-01-01T00:00"), at("2030-01-02T00:00")]
    hourly = IntervalTrigger(hours=1, start_date=at("2030-01-01T00:00"), timezone=UTC)
    assert next_slots(hourly, at("2029-12-31T23:30"), 1) == [at("2030-01-01T00:00")]


def test_an_interval_ends_with_its_end_date_inclusive() -> None:
    """A slot exactly at the end date is the last one (APScheduler's end date is inclusive)."""
    ending = IntervalTrigger(
        hours=1, start_date=at("2030-01-01T00:00"), end_date=at("2030-01-01T03:00"), timezone=UTC
    )
    assert next_slots(ending, at("2029-12-31T00:00"), 10) == [
        at("2030-01-01T00:00"),
        at("2030-01-01T01:00"),
        at("2030-01-01T02:00"),
        at("2030-01-01T03:00"),
    ]
    assert next_slots(ending, at("2030-01-01T03:00"), 10) == []


def test_latest_slot_at_the_start_date_is_the_start_date() -> None:
    """At exactly an interval's start, that start is the latest slot; a microsecond before, none."""
    start = at("2030-01-01T00:00")
    hourly = IntervalTrigger(hours=1, start_date=start, timezone=UTC)
    assert latest_slot(hourly, start) == start
    assert latest_slot(hourly, start - timedelta(microseconds=1)) is None


def test_no_slots_asked_none_given() -> None:
    """next_slots with count 0 (or less) gives none, even from a schedule with slots left."""
    ending = IntervalTrigger(
        hours=1, start_date=at("2030-01-01T00:00"), end_date=at("2030-01-01T03:00"), timezone=UTC
    )
    assert next_slots(ending, at("2029-12-31T00:00"), 0) == []
    assert next_slots(ending, at("2029-12-31T00:00"), -1) == []


def test_can_fire_while_slots_are_left() -> None:
    """can_fire: true while a slot is left after now (the end date inclusive), false after it."""
    ending = IntervalTrigger(
        hours=1, start_date=at("2030-01-01T00:00"), end_date=at("2030-01-01T03:00"), timezone=UTC
    )
    assert can_fire(ending, at("2030-01-01T02:59")) is True
    assert can_fire(ending, at("2030-01-01T03:00")) is False
    assert can_fire(CronTrigger(minute=0, timezone=BERLIN), at("2030-01-01T03:00")) is True


# --- the APScheduler trigger -------------------------------------------------------------------


def test_slot_trigger_jitter_fires_within_the_jitter_never_before() -> None:
    """With jitter J, each fire time is in [slot, slot + J], and the jitter is really applied."""
    random.seed(20261202)
    trigger = SlotTrigger(CronTrigger(minute=0, timezone=UTC), jitter=600)
    now = at("2025-06-01T10:30")
    delays = []
    previous = None
    for hour in range(11, 31):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        slot = at("2025-06-01T00:00") + timedelta(hours=hour)
        assert slot <= fire <= slot + timedelta(seconds=600)
        delays.append((fire - slot).total_seconds())
        previous = now = fire
    assert len(set(delays)) == len(delays)  # drawn afresh for each slot, so none repeats
    assert max(delays) > 60


def test_slot_trigger_reads_a_schedule_without_its_jitter() -> None:
    """A jittered cron given to SlotTrigger is kept without jitter (None, as APScheduler spells none)."""
    trigger = SlotTrigger(CronTrigger(minute=0, timezone=UTC, jitter=30), jitter=5)
    assert trigger.schedule.jitter is None
    assert trigger.jitter == 5


def test_slot_trigger_ends_with_its_schedule() -> None:
    """Once the schedule has no slot left the trigger has no fire time (None: the job is done)."""
    ending = IntervalTrigger(
        hours=1, start_date=at("2030-01-01T00:00"), end_date=at("2030-01-01T03:00"), timezone=UTC
    )
    trigger = SlotTrigger(ending, jitter=60)
    assert trigger.get_next_fire_time(None, at("2030-01-01T03:00")) is not None  # the last slot, at now
    assert trigger.get_next_fire_time(at("2030-01-01T03:00:30"), at("2030-01-01T03:00:30")) is None


def test_slot_trigger_state_is_versioned() -> None:
    """The pickled state carries its format version (1), the schedule and the jitter."""
    schedule = CronTrigger(minute=0, timezone=UTC)
    state = SlotTrigger(schedule, jitter=7).__getstate__()
    assert state == {"version": 1, "schedule": schedule, "jitter": 7}
