"""The retention engine, rule by rule, as tables (borg's prune tests are the model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import EllipsisType

import pytest

from rotator.markers import make_marker
from rotator.models import Backup, ServerRef
from rotator.planner import prune_actions
from rotator.retention import (
    NOT_OWNED,
    SUPERSEDED,
    Decision,
    Policy,
    Retention,
    ServerPlan,
    Verdict,
    plan_policy,
    plan_server,
)

SERVER = 12345
NOW = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)


# --- builders (also imported by the other retention test modules) ------------------------------


def at(text: str) -> datetime:
    """``2025-01-16T03:00``, ``...Z`` or with an offset, as an aware UTC datetime."""
    value = datetime.fromisoformat(text.removesuffix("Z"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def backup(
    backup_id: int,
    created: str | datetime,
    *,
    backup_type: str = "manual",
    status: str = "completed",
    description: str | EllipsisType | None = ...,
    server: int = SERVER,
    policy: str = "nightly",
) -> Backup:
    """A backup of ``server``; unless told otherwise manual, completed and marked by ``policy``."""
    created_at = at(created) if isinstance(created, str) else created
    if description is ...:
        description = f"Nightly backup {make_marker(policy, created_at)}"
    return Backup(
        id=backup_id,
        server=ServerRef(id=server, name=f"server-{server}"),
        backup_type=backup_type,
        status=status,
        size_mb=100,
        created_at=created_at,
        description=description,
    )


def timeline(*created: str) -> list[Backup]:
    """Owned candidates with ids 1, 2, ... in the order given."""
    return [backup(number, text) for number, text in enumerate(created, start=1)]


def policy(timezone: str = "UTC", prune_unmanaged: bool = False, **rules: int) -> Policy:
    return Policy(
        name="nightly",
        servers=(SERVER,),
        timezone=timezone,
        prune_unmanaged=prune_unmanaged,
        retention=Retention(**rules),
    )


def kept_ids(plan: ServerPlan) -> list[int]:
    return [decision.backup.id for decision in plan.keep]


def reasons_by_id(plan: ServerPlan) -> dict[int, tuple[str, ...]]:
    return {decision.backup.id: decision.reasons for decision in plan.keep}


# --- one rule at a time ------------------------------------------------------------------------

DAILY_JAN = timeline(*(f"2025-01-{day:02d}T03:00" for day in range(1, 17)))  # ids 1..16

RULE_TABLE = [
    pytest.param({"keep_last": 3}, DAILY_JAN, [16, 15, 14], id="last-3"),
    pytest.param({"keep_last": 30}, DAILY_JAN, list(range(16, 0, -1)), id="last-more-than-there-are"),
    pytest.param(
        {"keep_days": 2},
        timeline("2025-01-16T03:00", "2025-01-15T03:00", "2025-01-14T03:00", "2025-01-14T02:59:59"),
        [1, 2, 3],
        id="days-boundary-is-inclusive",
    ),
    pytest.param(
        {"keep_days": 1},
        timeline("2025-01-17T00:00", "2025-01-15T03:00"),
        [1, 2],
        id="days-future-backup-kept-and-min-keep-not-needed",
    ),
    pytest.param(
        {"keep_hourly": 2},
        timeline("2025-01-16T03:10", "2025-01-16T03:50", "2025-01-16T02:30", "2025-01-16T01:00"),
        [2, 3],
        id="hourly-newest-of-each-hour",
    ),
    pytest.param(
        {"keep_daily": 3},
        timeline(
            "2025-01-16T03:00",
            "2025-01-14T01:00",
            "2025-01-14T23:00",
            "2025-01-10T03:00",
            "2025-01-09T03:00",
        ),
        [1, 3, 4],
        id="daily-skips-days-without-backups",
    ),
    pytest.param({"keep_daily": 7}, DAILY_JAN, [16, 15, 14, 13, 12, 11, 10], id="daily-7"),
    pytest.param(
        {"keep_weekly": 3},
        timeline("2020-12-27T12:00", "2020-12-28T12:00", "2021-01-03T12:00", "2021-01-04T12:00"),
        [4, 3, 1],
        id="weekly-iso-week-53",
    ),
    pytest.param(
        {"keep_weekly": 2},
        timeline("2024-12-29T12:00", "2024-12-30T12:00", "2025-01-02T12:00"),
        [3, 1],
        id="weekly-iso-week-1-starts-in-december",
    ),
    pytest.param(
        {"keep_weekly": 2},
        timeline("2026-12-28T12:00", "2027-01-01T12:00", "2027-01-04T00:00"),
        [3, 2],
        id="weekly-2026-has-53-weeks",
    ),
    pytest.param(
        {"keep_monthly": 3},
        timeline(
            "2024-11-30T23:59",
            "2024-12-01T00:00",
            "2024-12-31T23:59:59",
            "2025-01-01T00:00",
            "2025-01-15T00:00",
        ),
        [5, 3, 1],
        id="monthly-across-year-boundary",
    ),
    pytest.param(
        {"keep_yearly": 2},
        timeline("2023-06-01T00:00", "2023-12-31T23:59:59", "2024-01-01T00:00", "2025-01-01T00:00"),
        [4, 3],
        id="yearly-two-years",
    ),
    pytest.param(
        {"keep_yearly": 5},
        timeline("2023-06-01T00:00", "2023-12-31T23:59:59", "2024-01-01T00:00", "2025-01-01T00:00"),
        [4, 3, 2],
        id="yearly-newest-of-each-year",
    ),
    pytest.param(
        {"keep_last": 1, "keep_monthly": 2},
        timeline("2025-01-16T03:00", "2025-01-15T03:00", "2024-12-20T03:00", "2024-12-02T03:00"),
        [1, 3],
        id="rules-are-ored",
    ),
]


@pytest.mark.parametrize(("rules", "backups", "expected_ids"), RULE_TABLE)
def test_rule_keeps(rules: dict[str, int], backups: list[Backup], expected_ids: list[int]) -> None:
    """Each rule keeps exactly the backups its table row names, newest first."""
    plan = plan_server(backups, policy(**rules), NOW)
    assert kept_ids(plan) == expected_ids
    assert sorted(d.backup.id for d in plan.delete) == sorted({b.id for b in backups} - set(expected_ids))


ZONE_TABLE = [
    pytest.param(
        "Europe/Berlin",
        {"keep_daily": 2},
        timeline("2024-03-30T22:30Z", "2024-03-30T23:30Z", "2024-03-31T21:30Z"),
        [3, 1],
        id="berlin-midnight-is-not-utc-midnight",
    ),
    pytest.param(
        "UTC",
        {"keep_daily": 2},
        timeline("2024-03-30T22:30Z", "2024-03-30T23:30Z", "2024-03-31T21:30Z"),
        [3, 2],
        id="same-backups-in-utc",
    ),
    pytest.param(
        "Europe/Berlin",
        {"keep_hourly": 3},
        # 02:30 CEST and 02:30 CET: the repeated hour is one local hour, as in restic.
        timeline("2024-10-27T00:30Z", "2024-10-27T01:30Z", "2024-10-27T02:30Z", "2024-10-26T23:30Z"),
        [3, 2, 4],
        id="berlin-fall-back-hour-is-one-bucket",
    ),
    pytest.param(
        "Europe/Berlin",
        {"keep_hourly": 3},
        # 01:30 CET then 03:30 CEST: the skipped hour 02 simply never occurs.
        timeline("2024-03-31T00:30Z", "2024-03-31T01:30Z", "2024-03-31T01:45Z", "2024-03-30T23:59Z"),
        [3, 1, 4],
        id="berlin-spring-forward",
    ),
    pytest.param(
        "America/New_York",
        {"keep_hourly": 2},
        timeline("2024-11-03T05:30Z", "2024-11-03T06:30Z", "2024-11-03T07:10Z"),
        [3, 2],
        id="new-york-fall-back",
    ),
    pytest.param(
        "America/New_York",
        {"keep_daily": 2, "keep_yearly": 2},
        # 2025-01-01T03:00Z is still 2024-12-31 in New York.
        timeline("2025-01-01T03:00Z", "2025-01-01T06:00Z", "2024-12-31T12:00Z"),
        [2, 1],
        id="new-york-new-year",
    ),
    pytest.param(
        "Asia/Kathmandu",
        {"keep_hourly": 2},
        # +05:45: local hours start at :15 UTC.
        timeline("2025-01-15T10:14Z", "2025-01-15T10:16Z", "2025-01-15T10:50Z"),
        [3, 1],
        id="quarter-hour-offset",
    ),
    pytest.param(
        "America/Sao_Paulo",
        {"keep_daily": 2},
        # DST began at midnight: 2018-11-04 00:00 never happened (23:59 -03 -> 01:00 -02). The
        # 4th starts at 03:00Z, not at 02:00Z (00:00 -02): 23:30 on the 3rd is the 3rd's newest.
        timeline("2018-11-03T13:00Z", "2018-11-04T02:30Z", "2018-11-04T14:00Z"),
        [3, 2],
        id="sao-paulo-midnight-that-never-was",
    ),
    pytest.param(
        "Asia/Beirut",
        {"keep_daily": 2},
        # east of UTC, DST at midnight too: 2018-03-25 begins at 22:00Z (01:00 +03), not 21:00Z
        timeline("2018-03-24T08:00Z", "2018-03-24T21:30Z", "2018-03-25T09:00Z"),
        [3, 2],
        id="beirut-midnight-that-never-was",
    ),
    pytest.param(
        "America/Toronto",
        {"keep_daily": 2},
        # a gap across midnight: 1919-03-30 23:30 EST -> 03-31 00:30 EDT. The 31st begins at 04:30Z,
        # and 04:00Z (00:00 EDT, which never was) is still the 30th, whose newest is 23:20 EST.
        timeline(
            "1919-03-30T17:00Z",  # 03-30 12:00 EST
            "1919-03-31T04:10Z",  # 03-30 23:10 EST
            "1919-03-31T04:20Z",  # 03-30 23:20 EST
            "1919-03-31T04:40Z",  # 03-31 00:40 EDT
            "1919-03-31T16:00Z",  # 03-31 12:00 EDT
        ),
        [5, 3],
        id="toronto-gap-across-midnight",
    ),
    pytest.param(
        "America/Sao_Paulo",
        {"keep_hourly": 3},
        # DST ended at midnight: 2019-02-16 23:00-23:59 happened twice (-02, then -03)
        timeline(
            "2019-02-17T00:30Z",  # 22:30 -02
            "2019-02-17T01:10Z",  # 23:10 -02
            "2019-02-17T01:50Z",  # 23:50 -02
            "2019-02-17T02:10Z",  # 23:10 -03
            "2019-02-17T03:30Z",  # 00:30 -03, the 17th
        ),
        [5, 4, 1],
        id="sao-paulo-hour-repeated-before-midnight",
    ),
    pytest.param(
        "Pacific/Chatham",
        {"keep_hourly": 3},
        # 2024-04-07 03:44:59 +13:45 -> 02:45 +12:45: hour 03 is left for hour 02 again, mid-hour.
        # Hour 03's only backup (03:30 +13:45) is kept; it is not in hour 02's bucket.
        timeline(
            "2024-04-06T12:25Z",  # 02:10 +13:45
            "2024-04-06T13:45Z",  # 03:30 +13:45
            "2024-04-06T14:05Z",  # 02:50 +12:45
            "2024-04-06T15:25Z",  # 04:10 +12:45
        ),
        [4, 3, 2],
        id="chatham-falls-back-into-the-middle-of-an-hour",
    ),
    pytest.param(
        "Pacific/Chatham",
        {"keep_hourly": 4},
        # ... and hour 02, left for hour 03 and entered again, counts twice (as restic counts it)
        timeline("2024-04-06T12:25Z", "2024-04-06T13:45Z", "2024-04-06T14:05Z", "2024-04-06T15:25Z"),
        [4, 3, 2, 1],
        id="chatham-hour-entered-twice-is-two-buckets",
    ),
    pytest.param(
        "Antarctica/Casey",
        {"keep_daily": 3},
        # 2010-03-05 01:59 +11 -> 2010-03-04 23:00 +08: the 5th is left for the 4th again. The 5th's
        # only backup (00:30 +11) is kept; it is not in the 4th's bucket.
        timeline(
            "2010-03-04T01:00Z",  # 03-04 12:00 +11
            "2010-03-04T13:30Z",  # 03-05 00:30 +11
            "2010-03-04T15:30Z",  # 03-04 23:30 +08
            "2010-03-05T18:00Z",  # 03-06 02:00 +08
        ),
        [4, 3, 2],
        id="casey-falls-back-across-midnight",
    ),
]


@pytest.mark.parametrize(("timezone", "rules", "backups", "expected_ids"), ZONE_TABLE)
def test_buckets_follow_the_policy_zone(
    timezone: str, rules: dict[str, int], backups: list[Backup], expected_ids: list[int]
) -> None:
    """Calendar buckets are the policy zone's local hours, days, weeks, months and years."""
    plan = plan_server(backups, policy(timezone, **rules), NOW)
    assert kept_ids(plan) == expected_ids


def unchecked_timeline(*created: str) -> list[Backup]:
    """:func:`timeline`, unvalidated: the API's answers with times this near the ends of ``datetime``
    are refused (``rotator.models``), but the engine plans whatever it is given without crashing."""
    made = []
    for number, text in enumerate(created, start=1):
        created_at = at(text)
        made.append(
            Backup.model_construct(
                id=number,
                server=ServerRef(id=SERVER, name=f"server-{SERVER}"),
                backup_type="manual",
                status="completed",
                size_mb=100,
                created_at=created_at,
                description=f"Nightly backup {make_marker('nightly', created_at)}",
            )
        )
    return made


CALENDAR_END_TABLE = [
    # A bucket that starts before year 1 in UTC (the first day, in a zone east of UTC) has no
    # instant to jump to: the engine steps through it one backup at a time.
    pytest.param(
        "Europe/Berlin",
        {"keep_daily": 3},
        unchecked_timeline("0001-01-01T00:10Z", "0001-01-01T00:20Z", "0001-01-02T12:00Z"),
        [3, 2],
        id="first-day-of-the-calendar",
    ),
    pytest.param(
        "Europe/Berlin",
        {"keep_yearly": 2},
        unchecked_timeline("0001-01-01T00:10Z", "0001-01-01T00:20Z", "0001-06-01T12:00Z"),
        [3],
        id="first-year-of-the-calendar",
    ),
    # The last hour, day, month and year have no next bucket to look for.
    pytest.param(
        "UTC",
        {"keep_hourly": 2},
        unchecked_timeline("9999-06-01T00:00", "9999-12-31T23:10", "9999-12-31T23:50"),
        [3, 1],
        id="last-hour-of-the-calendar",
    ),
    pytest.param(
        "UTC",
        {"keep_daily": 2},
        unchecked_timeline("9999-06-01T00:00", "9999-12-31T10:00", "9999-12-31T20:00"),
        [3, 1],
        id="last-day-of-the-calendar",
    ),
    pytest.param(
        "UTC",
        {"keep_monthly": 2},
        unchecked_timeline("9999-06-01T00:00", "9999-12-01T10:00", "9999-12-31T20:00"),
        [3, 1],
        id="last-month-of-the-calendar",
    ),
    pytest.param(
        "UTC",
        {"keep_yearly": 2},
        unchecked_timeline("9998-06-01T00:00", "9999-06-01T00:00", "9999-12-31T20:00"),
        [3, 1],
        id="last-year-of-the-calendar",
    ),
]


@pytest.mark.parametrize(("timezone_name", "rules", "backups", "expected_ids"), CALENDAR_END_TABLE)
def test_buckets_at_the_ends_of_the_calendar(
    timezone_name: str, rules: dict[str, int], backups: list[Backup], expected_ids: list[int]
) -> None:
    """Backups at the ends of ``datetime``'s range (an API clock gone wrong) are planned, not crashed on."""
    plan = plan_server(backups, policy(timezone_name, **rules), NOW)
    assert kept_ids(plan) == expected_ids
    assert sorted(d.backup.id for d in plan.delete) == sorted({b.id for b in backups} - set(expected_ids))


def test_reason_labels_are_local() -> None:
    """Reasons name the local bucket: the repeated Berlin hour is ``hourly 2024-10-27T02``."""
    backups = timeline("2024-10-27T01:30Z", "2024-10-27T00:10Z")
    plan = plan_server(backups, policy("Europe/Berlin", keep_hourly=2, keep_weekly=1), NOW)
    assert reasons_by_id(plan) == {1: ("hourly 2024-10-27T02", "weekly 2024-W43")}


def test_reasons_name_every_rule_in_a_fixed_order() -> None:
    """Every rule that keeps a backup adds its reason: last, calendar rules, within."""
    plan = plan_server(
        timeline("2025-01-16T03:00", "2025-01-15T03:00"),
        policy(
            keep_last=1,
            keep_hourly=1,
            keep_daily=2,
            keep_weekly=1,
            keep_monthly=1,
            keep_yearly=1,
            keep_days=7,
        ),
        NOW,
    )
    assert reasons_by_id(plan) == {
        1: (
            "last",
            "hourly 2025-01-16T03",
            "daily 2025-01-16",
            "weekly 2025-W03",
            "monthly 2025-01",
            "yearly 2025",
            "within 7d",
        ),
        2: ("daily 2025-01-15", "within 7d"),
    }


def test_min_keep_saves_the_newest_when_no_rule_would() -> None:
    """``min_keep`` keeps the newest M whatever the rules say, and says so only when alone."""
    backups = timeline("2024-01-01T00:00", "2024-01-02T00:00", "2024-01-03T00:00")
    plan = plan_server(backups, policy(keep_days=1, min_keep=2), NOW)
    assert reasons_by_id(plan) == {3: ("min_keep",), 2: ("min_keep",)}
    assert [d.backup.id for d in plan.delete] == [1]


def test_min_keep_adds_nothing_when_a_rule_keeps() -> None:
    """The newest backup kept by ``keep_last`` carries ``last`` only."""
    plan = plan_server(timeline("2025-01-15T00:00"), policy(keep_last=1, min_keep=1), NOW)
    assert reasons_by_id(plan) == {1: ("last",)}


# --- order --------------------------------------------------------------------------------------


def test_order_is_created_at_not_id_or_position() -> None:
    """A high id created earlier is the older backup."""
    backups = [backup(900, "2025-01-10T00:00"), backup(100, "2025-01-15T00:00")]
    assert kept_ids(plan_server(backups, policy(keep_last=1), NOW)) == [100]


@pytest.mark.parametrize("reverse", [False, True], ids=["ascending", "descending"])
def test_same_second_ties_go_to_the_higher_id(reverse: bool) -> None:
    """Two backups created in the same second: the higher id is the newer."""
    backups = [backup(7, "2025-01-15T03:00"), backup(9, "2025-01-15T03:00"), backup(8, "2025-01-14T00:00")]
    if reverse:
        backups.reverse()
    plan = plan_server(backups, policy(keep_last=1, keep_daily=2), NOW)
    assert kept_ids(plan) == [9, 8]
    assert [d.backup.id for d in plan.delete] == [7]


def test_tuples_are_newest_first() -> None:
    """keep, delete and untouched are each newest first."""
    backups = [
        backup(1, "2025-01-01T00:00"),
        backup(2, "2025-01-03T00:00"),
        backup(3, "2025-01-02T00:00"),
        backup(4, "2025-01-05T00:00", backup_type="automatic"),
        backup(5, "2025-01-04T00:00", backup_type="automatic"),
    ]
    plan = plan_server(backups, policy(keep_last=1), NOW)
    assert [d.backup.id for d in plan.delete] == [3, 1]
    assert [d.backup.id for d in plan.untouched] == [4, 5]
    assert [(verdict, d.backup.id) for verdict, d in plan.rows()] == [
        (Verdict.UNTOUCHED, 4),
        (Verdict.UNTOUCHED, 5),
        (Verdict.KEEP, 2),
        (Verdict.DELETE, 3),
        (Verdict.DELETE, 1),
    ]


# --- which backups are candidates ---------------------------------------------------------------


def test_the_api_documentation_example() -> None:
    """The listing of the API docs (501, 499, 495): nothing is ours, nothing is deleted."""
    listing = [
        backup(501, "2025-01-16T03:00:00Z", backup_type="automatic", description="Automatic daily backup"),
        backup(499, "2025-01-14T10:30:00Z", description="Pre-update backup"),
        backup(495, "2025-01-15T03:00:00Z", backup_type="automatic", description="Automatic daily backup"),
    ]
    plan = plan_server(listing, policy(keep_last=1), NOW)
    assert plan.keep == ()
    assert plan.delete == ()
    assert [(d.backup.id, d.reason) for d in plan.untouched] == [
        (501, "automatic"),
        (495, "automatic"),
        (499, NOT_OWNED),
    ]
    adopted = plan_server(listing, policy(prune_unmanaged=True, keep_last=1), NOW)
    assert reasons_by_id(adopted) == {499: ("last",)}


UNTOUCHED_TABLE = [
    pytest.param({"backup_type": "automatic"}, "automatic", id="automatic"),
    pytest.param({"backup_type": "snapshot"}, "snapshot", id="unknown-type"),
    pytest.param({"status": "in_progress"}, "in_progress", id="in-progress"),
    pytest.param({"status": "failed", "policy": "weekly"}, "failed", id="failed-of-another-policy"),
    pytest.param({"status": "failed", "description": "Pre-update backup"}, "failed", id="failed-unmarked"),
    pytest.param({"status": "deleting"}, "deleting", id="unknown-status"),
    pytest.param({"status": "Completed"}, "Completed", id="status-is-exact"),
    pytest.param({"backup_type": ""}, "no backup type", id="empty-type"),
    pytest.param({"status": ""}, "no status", id="empty-status"),
    pytest.param({"description": "Pre-update backup"}, NOT_OWNED, id="no-marker"),
    pytest.param({"description": None}, NOT_OWNED, id="no-description"),
    pytest.param({"policy": "weekly"}, NOT_OWNED, id="other-policy"),
    pytest.param({"policy": "nightly-2"}, NOT_OWNED, id="policy-name-prefix"),
    pytest.param({"description": "[rotator:nightly] copied"}, NOT_OWNED, id="marker-not-at-end"),
    pytest.param({"description": "x [rotator:nightly] "}, NOT_OWNED, id="trailing-space"),
    pytest.param({"description": "x [rotator:nightly@2025-02-30T03:00Z]"}, NOT_OWNED, id="impossible-slot"),
    pytest.param({"description": "x [Rotator:nightly]"}, NOT_OWNED, id="marker-is-case-sensitive"),
]


UNMARKED = ({"description": "Pre-update backup"}, {"description": None})
UNTOUCHED_CASES = [
    pytest.param(*case.values, prune, id=f"{case.id}-{'prune-unmanaged' if prune else 'managed-only'}")
    for case in UNTOUCHED_TABLE
    for prune in (False, True)
    # with prune_unmanaged an unmarked manual completed backup is a candidate: tested below
    if not (prune and case.values[0] in UNMARKED)
]


@pytest.mark.parametrize(("fields", "reason", "prune_unmanaged"), UNTOUCHED_CASES)
def test_non_candidates_are_untouched_with_their_reason(
    fields: dict[str, str | None], reason: str, prune_unmanaged: bool
) -> None:
    """Whatever the rules, a backup that is not a candidate is untouched, with its reason."""
    subject = backup(1, "2024-01-01T00:00", **fields)  # type: ignore[arg-type]
    newer = backup(2, "2025-01-15T00:00")
    plan = plan_server([subject, newer], policy(prune_unmanaged=prune_unmanaged, keep_last=1), NOW)
    assert plan.untouched == (Decision(subject, (reason,)),)
    assert [d.backup.id for d in plan.delete] == []


@pytest.mark.parametrize(
    "description",
    ["Pre-update backup", None, "", "[rotator:nightly@2025-01-16T03:00Z]"],
)
def test_prune_unmanaged_adopts_unmarked_backups(description: str | None) -> None:
    """With ``prune_unmanaged`` an unmarked manual completed backup is a candidate (and can go)."""
    old = backup(1, "2024-01-01T00:00", description=description)
    plan = plan_server([old, backup(2, "2025-01-15T00:00")], policy(prune_unmanaged=True, keep_last=1), NOW)
    assert [d.backup.id for d in plan.delete] == [1]


def test_slot_on_a_leap_day_is_owned() -> None:
    """A marker whose slot is valid but outside the fast path (29 Feb) is still owned."""
    old = backup(1, "2024-02-29T03:00")
    assert old.description is not None
    assert old.description.endswith("[rotator:nightly@2024-02-29T03:00Z]")
    plan = plan_server([old, backup(2, "2025-01-15T00:00")], policy(keep_last=1), NOW)
    assert [d.backup.id for d in plan.delete] == [1]


# --- whole policies and bad input ---------------------------------------------------------------


def test_plan_policy_groups_by_server_in_policy_order() -> None:
    """One ServerPlan per policy server (empty ones too); other servers are not part of it."""
    rules = Policy("nightly", Retention(keep_last=1), servers=(103, 101, 102))
    listing = [
        backup(1, "2025-01-10T00:00", server=101),
        backup(2, "2025-01-11T00:00", server=101),
        backup(3, "2025-01-11T00:00", server=103),
        backup(4, "2025-01-11T00:00", server=999),
    ]
    plan = plan_policy(listing, rules, NOW)
    assert [server.server_id for server in plan.servers] == [103, 101, 102]
    assert [kept_ids(server) for server in plan.servers] == [[3], [2], []]
    assert [d.backup.id for d in plan.delete] == [1]
    assert plan.now == NOW


def test_plan_server_refuses_mixed_or_foreign_servers() -> None:
    """plan_server plans exactly one server, and only one of the policy's."""
    rules = policy(keep_last=1)
    with pytest.raises(ValueError, match="exactly one server"):
        plan_server([backup(1, "2025-01-01T00:00"), backup(2, "2025-01-01T00:00", server=7)], rules, NOW)
    with pytest.raises(ValueError, match="exactly one server"):
        plan_server([], rules, NOW)
    with pytest.raises(ValueError, match="not one of"):
        plan_server([backup(1, "2025-01-01T00:00", server=7)], rules, NOW)
    assert plan_server([], rules, NOW, server_id=SERVER).keep == ()


def test_now_must_be_aware_and_is_held_in_utc() -> None:
    """A naive ``now`` is refused; an offset one is converted to UTC."""
    with pytest.raises(ValueError, match="aware"):
        plan_server([], policy(keep_last=1), datetime(2025, 1, 16), server_id=SERVER)  # noqa: DTZ001
    plus_one = NOW.astimezone(UTC).replace(tzinfo=UTC) + timedelta(0)
    assert plan_server([], policy(keep_last=1), plus_one, server_id=SERVER).now.tzinfo is UTC


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            {},
            "^no retention rule is on: set at least one of keep_last, keep_days, keep_hourly, "
            "keep_daily, keep_weekly, keep_monthly, keep_yearly$",
        ),
        ({"min_keep": 5}, "no retention rule is on"),
        ({"keep_last": -1}, "keep_last must be"),
        ({"keep_daily": True}, "keep_daily must be"),
        ({"keep_last": 1, "min_keep": 0}, "min_keep must be at least 1"),
    ],
)
def test_bad_rules_are_refused(rules: dict[str, int], message: str) -> None:
    """All rules off is an error, not "keep nothing"; counts are whole numbers >= 0."""
    with pytest.raises(ValueError, match=message):
        Retention(**rules)


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: Python counts such a datetime as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_now_without_an_offset_is_naive() -> None:
    """A ``now`` whose tzinfo gives no offset is as naive as one without tzinfo: refused."""
    unknown = datetime(2025, 1, 16, 3, 0, tzinfo=_NoOffset())
    with pytest.raises(ValueError, match="aware"):
        plan_server([], policy(keep_last=1), unknown, server_id=SERVER)
    with pytest.raises(ValueError, match="aware"):
        plan_policy([], policy(keep_last=1), unknown)


def test_plans_carry_their_policy_and_now() -> None:
    """Every plan names its policy and the ``now`` (in UTC) that ``keep_days`` counted from."""
    rules = Policy("db.eu-1", Retention(keep_days=2), servers=(101, 102))
    listing = [
        backup(1, "2025-01-14T03:00", server=101, policy="db.eu-1"),
        backup(2, "2025-01-15T03:00", server=101, policy="db.eu-1"),
        backup(3, "2025-01-16T03:00", server=101, policy="db.eu-1"),
    ]
    later = NOW + timedelta(days=1)  # 2025-01-17T03:00Z: backup 1 is three days old, 2 exactly two
    plan = plan_policy(listing, rules, later.astimezone(timezone(timedelta(hours=-5))))
    assert (plan.policy, plan.now) == ("db.eu-1", later)
    assert [(s.policy, s.server_id, s.now) for s in plan.servers] == [
        ("db.eu-1", 101, later),
        ("db.eu-1", 102, later),
    ]
    assert [kept_ids(s) for s in plan.servers] == [[3, 2], []]
    assert [d.backup.id for d in plan.delete] == [1]
    one = plan_server(listing, rules, later)
    assert (one.policy, one.server_id, one.now) == ("db.eu-1", 101, later)
    assert kept_ids(one) == [3, 2]


def test_bad_policy_is_refused() -> None:
    """A policy name outside the marker grammar, or an unknown zone, is refused."""
    with pytest.raises(ValueError, match="not a policy name"):
        Policy("night ly", Retention(keep_last=1))
    with pytest.raises(ValueError, match="unknown time zone"):
        Policy("nightly", Retention(keep_last=1), timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        Policy("nightly", Retention(keep_last=1), timezone="../etc/passwd")


def test_a_failed_attempt_is_deleted_once_a_later_owned_backup_completed() -> None:
    """An owned failed backup never expires: it goes as ``failed, superseded`` once a newer one completed."""
    failed = backup(1, "2025-01-14T03:00", status="failed")
    newer = backup(2, "2025-01-15T03:00")
    plan = plan_server([failed, newer], policy(keep_last=5), NOW)
    assert [(d.backup.id, d.reasons) for d in plan.delete] == [(1, ("failed, superseded",))]
    assert plan.superseded == (failed,)
    assert kept_ids(plan) == [2]
    assert plan.untouched == ()


def test_a_failed_attempt_stays_while_no_later_owned_backup_completed() -> None:
    """Without a completed owned backup after it, a failed attempt is kept (untouched)."""
    older = backup(1, "2025-01-13T03:00")
    failed = backup(2, "2025-01-14T03:00", status="failed")
    running = backup(3, "2025-01-15T03:00", status="in_progress")
    others = backup(4, "2025-01-15T04:00", policy="weekly")
    plan = plan_server([older, failed, running, others], policy(keep_last=5), NOW)
    assert plan.delete == ()
    assert [d.backup.id for d in plan.untouched] == [4, 3, 2]
    alone = plan_server([failed], policy(keep_last=5), NOW)
    assert alone.delete == ()
    assert alone.untouched == (Decision(failed, ("failed",)),)


def test_superseded_failed_attempts_are_newest_first() -> None:
    """Two failed attempts before a completed backup: both superseded, listed newest first."""
    older = backup(1, "2025-01-13T03:00", status="failed")
    newer = backup(2, "2025-01-14T03:00", status="failed")
    plan = plan_server([older, newer, backup(3, "2025-01-15T03:00")], policy(keep_last=5), NOW)
    assert plan.superseded == (newer, older)
    assert [(d.backup.id, d.reasons) for d in plan.delete] == [(2, (SUPERSEDED,)), (1, (SUPERSEDED,))]


def test_a_failed_listing_of_the_newest_backup_does_not_supersede_it() -> None:
    """A failed attempt is superseded only by a later backup: not by itself, listed again as completed.

    Belt and braces: the API client refuses a listing that carries a backup twice, but were a
    view ever to hold a stale failed copy beside the completed one, its id is never sent a delete.
    """
    completed = backup(5, "2025-01-15T03:00")
    stale = backup(5, "2025-01-15T03:00", status="failed")
    plan = plan_server([completed, stale], policy(keep_last=5), NOW)
    assert plan.delete == ()
    assert plan.superseded == ()
    assert kept_ids(plan) == [5]
    assert plan.untouched == (Decision(stale, ("failed",)),)


def test_the_rails_let_a_superseded_failed_attempt_through() -> None:
    """prune_actions sends the delete of a superseded failed attempt (it is the policy's own)."""
    failed = backup(1, "2025-01-14T03:00", status="failed")
    newer = backup(2, "2025-01-15T03:00")
    plan = plan_server([failed, newer], policy(keep_last=5), NOW)
    actions = prune_actions(plan, policy(keep_last=5), max_deletes=10, dry_run=False, new_backup_id=2)
    assert [d.backup.id for d in actions.delete] == [1]
    assert actions.blocked == ()
