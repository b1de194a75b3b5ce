"""Slots from APScheduler triggers: the latest, the next ones, jitter left out, DST, and never-firing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.schedule import can_fire, cron_trigger, interval_trigger, latest_slot, next_slots
from rotator.scheduler import slot_due
from tests.test_retention import backup

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)


def test_cron_slots_are_in_the_policys_zone() -> None:
    """03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer."""
    trigger = cron_trigger("0 3 * * *", "Europe/Berlin")
    assert latest_slot(trigger, NOW) == datetime(2025, 1, 16, 2, 0, tzinfo=UTC)
    summer = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
    assert latest_slot(trigger, summer) == datetime(2025, 7, 1, 1, 0, tzinfo=UTC)


def test_cron_across_the_spring_dst_gap() -> None:
    """02:30 does not exist in Berlin on 2025-03-30; the slots around it stay one a day."""
    trigger = cron_trigger("30 2 * * *", "Europe/Berlin")
    slots = next_slots(trigger, datetime(2025, 3, 28, 12, tzinfo=UTC), 4)
    assert len(slots) == 4
    assert len({slot.date() for slot in slots}) == 4


def test_jitter_never_moves_the_slot() -> None:
    """The slot names the run; jitter only delays when it fires."""
    plain = cron_trigger("0 3 * * *", "UTC")
    jittered = cron_trigger("0 3 * * *", "UTC", timedelta(minutes=10))
    assert latest_slot(jittered, NOW) == latest_slot(plain, NOW)
    assert next_slots(jittered, NOW, 3) == next_slots(plain, NOW, 3)


def test_interval_slots_are_anchored_and_survive_restarts() -> None:
    """Interval slots sit on a fixed grid, whenever rotator started."""
    trigger = interval_trigger(timedelta(hours=6), "UTC")
    assert latest_slot(trigger, NOW) == datetime(2025, 1, 16, 12, 0, tzinfo=UTC)
    assert latest_slot(trigger, NOW - timedelta(seconds=1)) == datetime(2025, 1, 16, 6, 0, tzinfo=UTC)
    assert next_slots(trigger, NOW, 2) == [
        datetime(2025, 1, 16, 18, 0, tzinfo=UTC),
        datetime(2025, 1, 17, 0, 0, tzinfo=UTC),
    ]


def test_latest_slot_of_a_minutely_and_a_yearly_cron() -> None:
    """The look-back widens as needed and stays cheap for frequent schedules."""
    assert latest_slot(cron_trigger("* * * * *", "UTC"), NOW + timedelta(seconds=30)) == NOW
    assert latest_slot(cron_trigger("0 0 1 1 *", "UTC"), NOW) == datetime(2025, 1, 1, tzinfo=UTC)


def test_a_schedule_that_can_never_fire() -> None:
    """February 30th never comes."""
    assert not can_fire(cron_trigger("0 0 30 2 *", "UTC"), NOW)
    assert can_fire(cron_trigger("0 0 29 2 *", "UTC"), NOW)


@pytest.mark.parametrize("expression", ["61 * * * *", "0 3 * *", "every day", ""])
def test_bad_cron_expressions_are_named(expression: str) -> None:
    """A bad expression is a ValueError that quotes it."""
    with pytest.raises(ValueError, match="not a cron expression"):
        cron_trigger(expression, "UTC")


SLOT = datetime(2025, 1, 16, 2, 0, tzinfo=UTC)


def test_a_slot_is_due_until_its_marker_shows_a_usable_backup() -> None:
    """Catch-up asks the slot's marker, never a timestamp: backups of other slots or policies do not count."""
    marked = f"x [rotator:nightly@{SLOT:%Y-%m-%dT%H:%MZ}]"
    yesterday = backup(1, SLOT - timedelta(days=1))
    other_policy = backup(3, SLOT + timedelta(hours=1), policy="weekly")
    assert slot_due([yesterday], "nightly", SLOT)
    assert slot_due([], "nightly", SLOT)
    assert slot_due([yesterday, other_policy], "nightly", SLOT)
    assert not slot_due(
        [yesterday, backup(2, SLOT + timedelta(seconds=30), description=marked)], "nightly", SLOT
    )
    # the API's clock runs 5 minutes ahead: a newer-looking owned backup of an earlier slot is not this slot's
    ahead = backup(4, SLOT + timedelta(minutes=5), description="x [rotator:nightly@2025-01-15T02:00Z]")
    assert slot_due([ahead], "nightly", SLOT)
    # ... and its clock behind: the slot's backup stamped before the slot still counts
    assert not slot_due([backup(5, SLOT - timedelta(minutes=5), description=marked)], "nightly", SLOT)


def test_a_slot_whose_backup_is_unfinished_or_failed_is_due() -> None:
    """In progress: the run that made it stopped early; failed: a retry is due while attempts remain."""
    yesterday = backup(1, SLOT - timedelta(days=1))
    marked = f"x [rotator:nightly@{SLOT:%Y-%m-%dT%H:%MZ}]"
    pending = backup(2, SLOT + timedelta(seconds=30), status="in_progress", description=marked)
    failed = backup(3, SLOT + timedelta(seconds=30), status="failed", description=marked)
    done = backup(4, SLOT + timedelta(seconds=30), description=marked)
    assert slot_due([yesterday, pending], "nightly", SLOT)
    assert slot_due([yesterday, failed], "nightly", SLOT, attempts=3)
    assert not slot_due([yesterday, failed], "nightly", SLOT, attempts=1)  # every attempt failed
    assert not slot_due([yesterday, failed, done], "nightly", SLOT, attempts=3)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("every", [timedelta(hours=6), timedelta(minutes=90), timedelta(days=1)])
def test_latest_slot_of_an_interval_is_a_slot_the_trigger_fires(zone: str, every: timedelta) -> None:
    """In summer and in winter, across DST changes: latest_slot agrees with APScheduler's own slots."""
    trigger = interval_trigger(every, zone)
    for start in (datetime(2025, 1, 10, tzinfo=UTC), datetime(2025, 7, 10, tzinfo=UTC)):
        for slot in next_slots(trigger, start, 6):
            assert latest_slot(trigger, slot) == slot
            assert latest_slot(trigger, slot + every / 2) == slot
            assert latest_slot(trigger, slot - timedelta(seconds=1)) == slot - every
