"""The slot decision (rotator.slots.decide and its helpers), as tables: what a run does about a slot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rotator.markers import MAX_ATTEMPT, mark_description
from rotator.models import Backup
from rotator.slots import (
    Action,
    SlotDecision,
    decide,
    slot_attempt,
    slot_backups,
    slot_done,
    slot_marker,
    whole_minutes,
)
from tests.test_retention import backup

SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
CREATED = datetime(2025, 1, 16, 3, 4, tzinfo=UTC)  # the API's clock: a few minutes after the slot


def attempt(
    backup_id: int,
    status: str,
    number: int = 1,
    *,
    slot: datetime = SLOT,
    policy: str = "nightly",
    minutes: int = 0,
) -> Backup:
    """Attempt ``number`` of ``policy``'s ``slot``, created ``minutes`` after the first's creation."""
    return backup(
        backup_id,
        CREATED + timedelta(minutes=minutes),
        status=status,
        description=mark_description("Nightly backup", policy, slot, number),
    )


Summary = tuple[Action, int, int | None, list[int]]


def summary(decision: SlotDecision) -> Summary:
    """The decision as (action, attempt, adopted id, failed ids oldest first)."""
    adopted = decision.backup.id if decision.backup is not None else None
    return (decision.action, decision.attempt, adopted, [b.id for b in decision.failed])


# --- adopt: a completed backup of the slot over one in progress, never a failed or unknown one -----

ADOPT_TABLE = [
    pytest.param([attempt(1, "completed")], (Action.ADOPT, 1, 1, []), id="completed"),
    pytest.param([attempt(1, "in_progress")], (Action.ADOPT, 1, 1, []), id="in-progress-to-wait-for"),
    pytest.param(
        [attempt(1, "failed"), attempt(2, "completed", 2, minutes=30)],
        (Action.ADOPT, 2, 2, []),
        id="retry-that-completed",
    ),
    pytest.param(
        [attempt(1, "completed", 2, minutes=10), attempt(2, "in_progress", 3, minutes=20)],
        (Action.ADOPT, 2, 1, []),
        id="completed-over-a-newer-in-progress",
    ),
    pytest.param(
        [attempt(1, "in_progress", 3, minutes=20), attempt(2, "completed", 2, minutes=10)],
        (Action.ADOPT, 2, 2, []),
        id="completed-over-in-progress-whatever-the-order",
    ),
    pytest.param(
        [attempt(1, "completed", 3, minutes=5), attempt(2, "completed", 2, minutes=15)],
        (Action.ADOPT, 2, 2, []),
        id="two-completed-the-newest-created-not-the-highest-attempt",
    ),
    pytest.param(
        [attempt(5, "completed", 1), attempt(4, "completed", 1)],
        (Action.ADOPT, 1, 5, []),
        id="two-completed-at-the-same-second-the-higher-id",
    ),
    pytest.param(
        [attempt(1, "in_progress", 1, minutes=10), attempt(2, "in_progress", 2, minutes=5)],
        (Action.ADOPT, 1, 1, []),
        id="two-in-progress-the-newest-created",
    ),
    pytest.param(
        [attempt(3, "in_progress", 2), attempt(2, "in_progress", 2)],
        (Action.ADOPT, 2, 3, []),
        id="two-in-progress-at-the-same-second-the-higher-id",
    ),
    pytest.param(
        [attempt(1, "failed"), attempt(2, "in_progress", 2, minutes=30)],
        (Action.ADOPT, 2, 2, []),
        id="retry-in-progress",
    ),
]


@pytest.mark.parametrize(("view", "expected"), ADOPT_TABLE)
def test_the_slots_backup_is_adopted(view: list[Backup], expected: Summary) -> None:
    """A completed backup of the slot is adopted (the newest), else one in progress: no second create."""
    assert summary(decide(view, "nightly", SLOT, attempts=3)) == expected


@pytest.mark.parametrize("status", ["failed", "deleting", "Completed", "queued", ""])
def test_failed_and_unknown_statuses_are_never_adopted(status: str) -> None:
    """Only exactly ``completed`` and ``in_progress`` are usable; anything else is a tried attempt."""
    view = [attempt(7, status)]
    assert summary(decide(view, "nightly", SLOT, attempts=3)) == (Action.RETRY, 2, None, [7])
    assert summary(decide(view, "nightly", SLOT, attempts=1)) == (Action.GIVE_UP, 1, None, [7])
    assert not slot_done(view, "nightly", SLOT)


# --- create, retry, give up ---------------------------------------------------------------------

CREATE_TABLE = [
    pytest.param([], 1, (Action.CREATE, 1, None, []), id="nothing-yet-create-1"),
    pytest.param([], 3, (Action.CREATE, 1, None, []), id="nothing-yet-create-1-of-3"),
    pytest.param([attempt(1, "failed")], 3, (Action.RETRY, 2, None, [1]), id="first-failed-retry-#2"),
    pytest.param(
        [attempt(1, "failed"), attempt(2, "failed", 2, minutes=30)],
        3,
        (Action.RETRY, 3, None, [1, 2]),
        id="second-failed-retry-#3",
    ),
    pytest.param(
        [attempt(2, "failed", 2, minutes=30), attempt(1, "failed")],
        3,
        (Action.RETRY, 3, None, [1, 2]),
        id="failed-listed-newest-first-still-oldest-first",
    ),
    pytest.param(
        [attempt(1, "failed", 2)],
        3,
        (Action.RETRY, 3, None, [1]),
        id="numbering-follows-the-highest-attempt-seen",
    ),
    pytest.param([attempt(1, "failed")], 1, (Action.GIVE_UP, 1, None, [1]), id="one-attempt-give-up"),
    pytest.param(
        [attempt(1, "failed"), attempt(2, "failed", 2, minutes=30)],
        2,
        (Action.GIVE_UP, 2, None, [1, 2]),
        id="two-attempts-used-give-up",
    ),
    pytest.param(
        [attempt(1, "failed", 3)],
        2,
        (Action.GIVE_UP, 3, None, [1]),
        id="an-attempt-beyond-the-limit-give-up",
    ),
    pytest.param(
        [attempt(1, "failed", MAX_ATTEMPT - 1)],
        MAX_ATTEMPT + 5,
        (Action.RETRY, MAX_ATTEMPT, None, [1]),
        id="the-last-attempt-a-marker-can-spell",
    ),
    pytest.param(
        [attempt(1, "failed", MAX_ATTEMPT)],
        MAX_ATTEMPT + 5,
        (Action.GIVE_UP, MAX_ATTEMPT, None, [1]),
        id="no-attempt-past-what-a-marker-can-spell",
    ),
]


@pytest.mark.parametrize(("view", "attempts", "expected"), CREATE_TABLE)
def test_create_retry_and_give_up(view: list[Backup], attempts: int, expected: Summary) -> None:
    """No usable backup: create #1, retry with the next number while attempts remain, then give up."""
    decision = decide(view, "nightly", SLOT, attempts=attempts)
    assert summary(decision) == expected
    assert decision.creates == (decision.action in (Action.CREATE, Action.RETRY))


def test_the_default_is_one_attempt() -> None:
    """Without ``attempts`` a slot is tried once: a failed attempt gives up."""
    assert summary(decide([], "nightly", SLOT)) == (Action.CREATE, 1, None, [])
    assert summary(decide([attempt(1, "failed")], "nightly", SLOT)) == (Action.GIVE_UP, 1, None, [1])


# --- confirm the view before a create; wait for a create whose outcome is unknown ----------------

CONFIRM_TABLE = [
    pytest.param([], 3, None, (Action.CONFIRM, 1, None, []), id="would-create-confirm-first"),
    pytest.param(
        [attempt(1, "failed")], 3, None, (Action.CONFIRM, 2, None, [1]), id="would-retry-confirm-first"
    ),
    pytest.param(
        [attempt(1, "completed")], 3, None, (Action.ADOPT, 1, 1, []), id="adopt-needs-no-confirmation"
    ),
    pytest.param(
        [attempt(1, "in_progress")], 3, None, (Action.ADOPT, 1, 1, []), id="wait-needs-no-confirmation"
    ),
    pytest.param([attempt(1, "failed")], 1, None, (Action.GIVE_UP, 1, None, [1]), id="give-up-needs-none"),
    pytest.param([], 3, 1, (Action.WAIT, 1, None, []), id="unknown-create-wait-even-unconfirmed"),
]


@pytest.mark.parametrize(("view", "attempts", "unknown", "expected"), CONFIRM_TABLE)
def test_an_unconfirmed_view_never_creates(
    view: list[Backup], attempts: int, unknown: int | None, expected: Summary
) -> None:
    """On a view that may have skipped a backup a create becomes CONFIRM; adopting and giving up do not."""
    decision = decide(view, "nightly", SLOT, attempts=attempts, confirmed=False, unknown_attempt=unknown)
    assert summary(decision) == expected
    assert not decision.creates


WAIT_TABLE = [
    pytest.param([], 1, (Action.WAIT, 1, None, []), id="first-create-unknown-wait"),
    pytest.param([attempt(1, "failed")], 2, (Action.WAIT, 2, None, [1]), id="retry-unknown-wait"),
    pytest.param(
        [attempt(1, "failed")], 1, (Action.RETRY, 2, None, [1]), id="unknown-create-now-listed-failed"
    ),
    pytest.param(
        [attempt(1, "failed"), attempt(2, "failed", 2, minutes=30)],
        2,
        (Action.RETRY, 3, None, [1, 2]),
        id="older-unknown-attempt-already-listed",
    ),
    pytest.param([attempt(1, "in_progress")], 1, (Action.ADOPT, 1, 1, []), id="unknown-create-listed-adopt"),
    pytest.param([attempt(1, "completed")], 2, (Action.ADOPT, 1, 1, []), id="completed-wins-over-waiting"),
]


@pytest.mark.parametrize(("view", "unknown", "expected"), WAIT_TABLE)
def test_a_create_of_unknown_outcome_is_waited_for(
    view: list[Backup], unknown: int, expected: Summary
) -> None:
    """An attempt whose create answer was lost and that is not listed yet: WAIT, no second POST."""
    assert summary(decide(view, "nightly", SLOT, attempts=3, unknown_attempt=unknown)) == expected


# --- what is, and is not, the slot's backup ------------------------------------------------------

OTHER_MINUTE = SLOT + timedelta(minutes=1)
FOREIGN_TABLE = [
    pytest.param(attempt(1, "completed", slot=SLOT + timedelta(days=1)), id="the-next-days-slot"),
    pytest.param(attempt(1, "completed", slot=SLOT - timedelta(days=1)), id="the-previous-days-slot"),
    pytest.param(attempt(1, "completed", slot=OTHER_MINUTE), id="one-minute-later"),
    pytest.param(attempt(1, "completed", slot=SLOT + timedelta(seconds=30)), id="thirty-seconds-later"),
    pytest.param(attempt(1, "completed", policy="weekly"), id="another-policy"),
    pytest.param(attempt(1, "completed", policy="nightly-2"), id="a-policy-whose-name-extends-ours"),
    pytest.param(attempt(1, "completed", policy="night"), id="a-policy-whose-name-ours-extends"),
    pytest.param(
        backup(1, CREATED, description="[rotator:nightly@2025-01-16T03:00Z] copy"), id="marker-not-at-end"
    ),
    pytest.param(backup(1, CREATED, description="[rotator:nightly]"), id="marker-without-a-slot"),
    pytest.param(backup(1, CREATED, description="Nightly backup"), id="no-marker"),
    pytest.param(backup(1, CREATED, description=None), id="no-description"),
    pytest.param(
        backup(1, CREATED, description="[rotator:nightly@2025-01-16T03:00Z#1]"), id="#1-is-not-a-marker"
    ),
]


@pytest.mark.parametrize("other", FOREIGN_TABLE)
def test_backups_of_another_slot_or_policy_are_ignored(other: Backup) -> None:
    """Only a marker of this policy and this slot, at the end of the description, makes a slot's backup."""
    assert slot_attempt(other, "nightly", SLOT) is None
    assert slot_backups([other], "nightly", SLOT) == []
    assert summary(decide([other], "nightly", SLOT, attempts=3)) == (Action.CREATE, 1, None, [])
    assert not slot_done([other], "nightly", SLOT)


def test_other_slots_do_not_count_as_attempts() -> None:
    """A failed attempt of yesterday's slot neither blocks today's nor raises its attempt number."""
    yesterday = attempt(1, "failed", 2, slot=SLOT - timedelta(days=1))
    others = attempt(2, "completed", policy="weekly")
    mine = attempt(3, "failed")
    assert summary(decide([yesterday, others, mine], "nightly", SLOT, attempts=3)) == (
        Action.RETRY,
        2,
        None,
        [3],
    )


def test_slot_attempt_reads_the_attempt_number() -> None:
    """The attempt is the marker's ``#N``; the first attempt has none."""
    assert slot_attempt(attempt(1, "completed"), "nightly", SLOT) == 1
    assert slot_attempt(attempt(1, "completed", 2), "nightly", SLOT) == 2
    assert slot_attempt(attempt(1, "completed", MAX_ATTEMPT), "nightly", SLOT) == MAX_ATTEMPT


def test_the_slot_is_compared_as_an_instant_to_the_second() -> None:
    """A slot given in another zone or with a fraction of a second names the same marker."""
    berlin = SLOT.astimezone(timezone(timedelta(hours=1)))
    view = [attempt(1, "failed"), attempt(2, "completed", 2)]
    for same in (berlin, SLOT.replace(microsecond=250_000)):
        assert slot_attempt(view[1], "nightly", same) == 2
        assert slot_backups(view, "nightly", same) == [(1, view[0]), (2, view[1])]
        assert summary(decide(view, "nightly", same)) == (Action.ADOPT, 2, 2, [])


def test_a_sub_minute_slot_carries_its_seconds() -> None:
    """Interval slots of seconds: the marker spells them, and the slot of the whole minute is another."""
    slot = SLOT.replace(second=30)
    mine = attempt(1, "completed", slot=slot)
    assert mine.description == "Nightly backup [rotator:nightly@2025-01-16T03:00:30Z]"
    assert slot_attempt(mine, "nightly", slot) == 1
    assert slot_attempt(mine, "nightly", SLOT) is None
    assert summary(decide([mine], "nightly", SLOT)) == (Action.CREATE, 1, None, [])


def test_slot_backups_keeps_every_attempt_in_listing_order() -> None:
    """Every attempt of the slot, whatever its status, with its number, in the order listed."""
    view = [
        attempt(3, "in_progress", 3, minutes=60),
        attempt(9, "completed", policy="weekly"),
        attempt(1, "failed"),
        attempt(2, "deleting", 2, minutes=30),
    ]
    assert slot_backups(view, "nightly", SLOT) == [(3, view[0]), (1, view[2]), (2, view[3])]


def test_slot_done_only_on_a_completed_backup() -> None:
    """Catch-up skips a slot only when it has a completed backup on the server."""
    assert slot_done([attempt(1, "failed"), attempt(2, "completed", 2)], "nightly", SLOT)
    assert not slot_done([attempt(1, "in_progress")], "nightly", SLOT)
    assert not slot_done([attempt(1, "failed")], "nightly", SLOT)
    assert not slot_done([], "nightly", SLOT)


def test_slot_marker_spells_the_attempt() -> None:
    """``[rotator:POLICY@SLOT]`` for the first attempt, ``...#N]`` after."""
    assert slot_marker("nightly", SLOT) == "[rotator:nightly@2025-01-16T03:00Z]"
    assert slot_marker("nightly", SLOT, 2) == "[rotator:nightly@2025-01-16T03:00Z#2]"
    assert slot_marker("nightly", SLOT, 1) == "[rotator:nightly@2025-01-16T03:00Z]"


def test_a_naive_slot_is_refused() -> None:
    """A slot without a zone is ambiguous: no decision is made on it."""
    naive = datetime(2025, 1, 16, 3, 0)  # noqa: DTZ001
    with pytest.raises(ValueError, match="aware"):
        decide([attempt(1, "completed")], "nightly", naive)
    with pytest.raises(ValueError, match="aware"):
        slot_attempt(attempt(1, "completed"), "nightly", naive)
    with pytest.raises(ValueError, match="aware"):
        whole_minutes(naive)


def test_whole_minutes_is_utc_to_the_minute() -> None:
    """The slot of a run without a schedule: its instant in UTC, seconds and fractions dropped."""
    moment = datetime(2025, 1, 16, 4, 0, 59, 999_999, tzinfo=timezone(timedelta(hours=1)))
    assert whole_minutes(moment) == SLOT
    assert whole_minutes(moment).tzinfo is UTC
