"""The fast retention engine plans exactly what the engine before it planned (tests/reference_retention.py).

The fast paths (candidates sorted out in C, bucket keys from a cache, calendar rules read by change of
bucket, a fleet's servers sharing one keep answer, decisions built in C) are checked against the
reference over random listings, zones with odd transitions and random rules: the same keep, delete,
untouched and superseded backups (the very objects), in the same order, with the same reasons.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_retention import CALENDAR_END_TABLE, NOW, SERVER, ZONE_TABLE, backup, policy
from test_retention_properties import ZONES, created_times, listings, policies, recent

from rotator import retention
from rotator.markers import make_marker, parse_marker
from rotator.models import Backup
from rotator.retention import NOT_OWNED, Policy, Retention, plan_policy, plan_server
from tests import reference_retention as reference

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Descriptions near the marker grammar's edges: days the fast pattern takes or leaves to parse_marker.
DESCRIPTIONS = [
    None,
    "",
    "Pre-update backup",
    "[rotator:nightly]",
    "Ad-hoc [rotator:nightly]",
    "x [rotator:nightly@2024-02-29T03:00Z]",  # leap day: valid, outside the fast pattern
    "x [rotator:nightly@2023-02-29T03:00Z]",  # no such day
    "x [rotator:nightly@2024-04-30T03:00Z]",
    "x [rotator:nightly@2024-04-31T03:00Z]",  # no such day
    "x [rotator:nightly@2024-12-31T23:59:59Z]",
    "x [rotator:nightly@2024-12-31T23:59:60Z]",
    "x [rotator:nightly@2024-13-01T00:00Z]",
    "x [rotator:nightly@0000-01-01T00:00Z]",  # year 0: parse_marker refuses it
    "x [rotator:nightly@0001-01-01T00:00Z]",
    "x [rotator:nightly@2024-01-30T03:00Z#2]",
    "x [rotator:nightly@2024-01-30T03:00Z#1]",  # not rotator's spelling
    "x [rotator:nightly@2024-01-30T03:00Z#999]",
    "x [rotator:nightly@2024-01-30T03:00Z#0999]",
    "x [rotator:nightly-2@2024-01-30T03:00Z]",
    "x [rotator:weekly@2024-01-30T03:00Z]",
    "[rotator:nightly] [rotator:weekly]",
    "[rotator:weekly] [rotator:nightly]",
    "x [rotator:nightly@2024-01-30T03:00Z] ",
    "x [Rotator:nightly]",
    "x [rotator:nightly@2024-01-30T3:00Z]",
    "x\n[rotator:nightly]",
]
# The engine before took a year-0000 slot for the policy's (test_a_slot_in_year_0000_is_not_owned).
SAME_AS_BEFORE = [description for description in DESCRIPTIONS if "@0000" not in (description or "")]
TYPES = ["manual", "manual", "manual", "automatic", "snapshot", ""]
STATUSES = ["completed", "completed", "completed", "failed", "in_progress", "Completed", ""]


def make(backup_id: int, created: str | datetime, server: int = SERVER, **fields: Any) -> Backup:
    return backup(backup_id, created, server=server, **fields)


@st.composite
def odd_listings(draw: st.DrawFn, server: int = SERVER, max_size: int = 30) -> list[Backup]:
    """Backups of one server with any type, status and marker-ish description, some same-second ties."""
    times = draw(st.lists(created_times, max_size=max_size))
    times += draw(st.lists(st.sampled_from(times), max_size=3)) if times else []
    ids = draw(st.permutations(range(1, len(times) + 1)))
    return [
        make(
            number,
            created,
            server,
            backup_type=draw(st.sampled_from(TYPES)),
            status=draw(st.sampled_from(STATUSES)),
            description=draw(st.one_of(st.sampled_from(SAME_AS_BEFORE), st.just(...))),
        )
        for number, created in zip(ids, times, strict=True)
    ]


def reference_policy(subject: Policy) -> reference.Policy:
    rules = subject.retention
    return reference.Policy(
        name=subject.name,
        retention=reference.Retention(
            **{name: getattr(rules, name) for name in (*retention.RULE_NAMES, "min_keep")}
        ),
        servers=subject.servers,
        timezone=subject.timezone,
        prune_unmanaged=subject.prune_unmanaged,
    )


def shape(decisions: Sequence[Any]) -> list[tuple[int, tuple[str, ...]]]:
    """Each decision as the identity of its backup object and its reasons."""
    return [(id(decision.backup), decision.reasons) for decision in decisions]


def assert_same(plan: retention.ServerPlan, expected: reference.ServerPlan) -> None:
    assert (plan.policy, plan.server_id, plan.now) == (expected.policy, expected.server_id, expected.now)
    assert shape(plan.keep) == shape(expected.keep)
    assert list(map(id, plan.deleted)) == list(map(id, expected.deleted))
    assert shape(plan.untouched) == shape(expected.untouched)
    assert list(map(id, plan.superseded)) == list(map(id, expected.superseded))
    assert shape(plan.delete) == shape(expected.delete)
    assert [(verdict.value, id(d.backup)) for verdict, d in plan.rows()] == [
        (verdict.value, id(d.backup)) for verdict, d in expected.rows()
    ]


@contextmanager
def engine(step_up_to: int, many: int) -> Iterator[None]:
    """The fast engine with its size thresholds moved (0: always jump / always build decisions in C)."""
    with mock.patch.object(retention, "STEP_UP_TO", step_up_to), mock.patch.object(retention, "_MANY", many):
        yield


def outcome(plan: Any, *args: Any) -> tuple[str, Any]:
    """The plan (its delete decisions built at once, under the thresholds in force), or the error."""
    try:
        made = plan(*args)
    except (OverflowError, ValueError) as exc:
        return "error", type(exc)
    made.delete  # noqa: B018 (built on first read)
    return "plan", made


THRESHOLDS = st.tuples(st.sampled_from([0, 3, 256]), st.sampled_from([0, 64]))


@FAST
@given(st.one_of(listings(max_size=40), odd_listings()), policies(), recent, THRESHOLDS)
def test_plan_server_is_the_reference_plan(
    items: list[Backup], subject: Policy, now: datetime, thresholds: tuple[int, int]
) -> None:
    """plan_server gives the reference's plan: the same backups kept, deleted and untouched, in the same
    order, with the same reasons, whether the calendar rules step or jump."""
    with engine(*thresholds):
        fast = outcome(fast_plan_server, items, subject, now)
    slow = outcome(reference_plan_server, items, reference_policy(subject), now)
    assert fast[0] == slow[0]
    if fast[0] == "plan":
        assert_same(fast[1], slow[1])
    else:
        assert fast[1] is slow[1]


def fast_plan_server(items: list[Backup], subject: Policy, now: datetime) -> Any:
    return plan_server(items, subject, now, server_id=SERVER)


def reference_plan_server(items: list[Backup], subject: reference.Policy, now: datetime) -> Any:
    return reference.plan_server(items, subject, now, server_id=SERVER)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Backup], tuple[int, ...]]:
    """A few servers backed up at about the same times (so that many share their buckets) or at any
    times, in one listing, in an order that mixes or keeps together the servers."""
    base = draw(st.lists(created_times, max_size=20))
    servers = tuple(range(1, draw(st.integers(1, 6)) + 1))
    listing: list[Backup] = []
    number = 0
    for server in servers:
        if draw(st.booleans()):
            spread = draw(st.sampled_from([119, 6 * 3600, 3 * 86400]))
            times = [created + timedelta(seconds=draw(st.integers(0, spread))) for created in base]
            for created in times:
                number += 1
                listing.append(make(number, created, server))
        else:
            for item in draw(odd_listings(server, max_size=12)):
                number += 1
                listing.append(item.model_copy(update={"id": number}))
    listing.append(make(number + 1, NOW, server=999))  # not the policy's server
    if draw(st.booleans()):
        listing = draw(st.permutations(listing))
    return listing, servers


@FAST
@given(fleets(), policies(), recent, THRESHOLDS)
def test_plan_policy_is_the_reference_plan(
    fleet: tuple[list[Backup], tuple[int, ...]], subject: Policy, now: datetime, thresholds: tuple[int, int]
) -> None:
    """plan_policy gives every server the reference's plan, servers that share buckets (and so one keep
    answer) included, and its delete decisions are the reference's."""
    listing, servers = fleet
    subject = Policy(
        subject.name, subject.retention, servers, subject.timezone, prune_unmanaged=subject.prune_unmanaged
    )
    with engine(*thresholds):
        fast = outcome(plan_policy, listing, subject, now)
    slow = outcome(reference.plan_policy, listing, reference_policy(subject), now)
    assert fast[0] == slow[0]
    if fast[0] == "plan":
        assert [plan.server_id for plan in fast[1].servers] == [plan.server_id for plan in slow[1].servers]
        for plan, expected in zip(fast[1].servers, slow[1].servers, strict=True):
            assert_same(plan, expected)
        assert shape(fast[1].delete) == shape(slow[1].delete)


@pytest.mark.parametrize("step_up_to", [0, 256], ids=["jumping", "stepping"])
@pytest.mark.parametrize(("timezone", "rules", "backups", "expected_ids"), ZONE_TABLE + CALENDAR_END_TABLE)
def test_both_engines_keep_the_tables(
    step_up_to: int, timezone: str, rules: dict[str, int], backups: list[Backup], expected_ids: list[int]
) -> None:
    """The zone and calendar-end tables hold for the stepping and the jumping calendar rules alike."""
    with engine(step_up_to, 64):
        plan = plan_server(backups, policy(timezone, **rules), NOW)
    assert [decision.backup.id for decision in plan.keep] == expected_ids


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Berlin"])
def test_a_candidate_outside_the_calendar_in_local_time(zone: str) -> None:
    """A candidate whose local time is before year 1 (an API clock gone wrong): the rules that never reach
    it plan as before; one that reaches it fails as before (nothing is deleted)."""
    early = make(1, datetime(1, 1, 2, 0, 10, tzinfo=UTC))  # the API refuses the first day: made unchecked
    early = early.model_copy(update={"created_at": datetime(1, 1, 1, 0, 10, tzinfo=UTC)})
    items = [early, make(2, NOW - timedelta(days=1))]
    for rules in ({"keep_daily": 1}, {"keep_daily": 5}, {"keep_last": 1}):
        subject = policy(zone, **rules)
        fast = outcome(plan_server, items, subject, NOW)
        slow = outcome(reference_plan_server, items, reference_policy(subject), NOW)
        assert fast[0] == slow[0]
        if fast[0] == "plan":
            assert_same(fast[1], slow[1])
        fleet = outcome(plan_policy, items, subject, NOW)
        expected = outcome(reference.plan_policy, items, reference_policy(subject), NOW)
        assert fleet[0] == expected[0]
        if fleet[0] == "plan":
            assert_same(fleet[1].servers[0], expected[1].servers[0])


@FAST
@given(st.sampled_from(DESCRIPTIONS[1:]), st.sampled_from(["nightly", "nightly-2", "weekly"]))
def test_the_fast_marker_test_accepts_only_what_parse_marker_reads_as_the_policys(
    description: str, name: str
) -> None:
    """What the fast marker pattern accepts, parse_marker reads as the policy's marker."""
    subject = Policy(name, Retention(keep_last=1))
    if next(retention._marked(subject, [description])):
        marker = parse_marker(description)
        assert marker is not None
        assert marker.policy == name


@FAST
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),  # noqa: DTZ001 (made aware below)
        max_value=datetime(9999, 12, 31),  # noqa: DTZ001
    ),
    st.integers(1, 999),
    st.booleans(),
)
def test_the_fast_marker_test_takes_every_slot_but_29_february(
    slot: datetime, attempt: int, bare: bool
) -> None:
    """Every marker rotator writes is accepted by the fast test, but for a slot on 29 February (which
    parse_marker then reads)."""
    aware = slot.replace(tzinfo=UTC, microsecond=0)
    marker = make_marker("nightly", None if bare else aware, 1 if bare else attempt)
    subject = Policy("nightly", Retention(keep_last=1))
    fast = next(retention._marked(subject, [f"Nightly {marker}"]))
    assert fast == (bare or (aware.month, aware.day) != (2, 29))


def test_a_slot_in_year_0000_is_not_owned() -> None:
    """A marker of year 0000 is no marker (parse_marker refuses it): the backup is untouched, not owned,
    as untouched_reason and the rails say (the engine before took it for a candidate, and the rails
    then refused its delete)."""
    odd = make(1, "2024-01-01T00:00", description="x [rotator:nightly@0000-01-01T00:00Z]")
    plan = plan_server([odd, make(2, NOW - timedelta(days=1))], policy(keep_last=1), NOW)
    assert plan.delete == ()
    assert [(d.backup.id, d.reasons) for d in plan.untouched] == [(1, (NOT_OWNED,))]
    fleet = plan_policy([odd], Policy("nightly", Retention(keep_last=1), servers=(SERVER,)), NOW)
    assert [(d.backup.id, d.reasons) for d in fleet.servers[0].untouched] == [(1, (NOT_OWNED,))]


def test_a_slot_of_other_decimal_digits_is_not_owned() -> None:
    """A year of four ARABIC-INDIC DIGIT ZEROs reads as year 0 (``int`` takes any decimal digit), which
    parse_marker refuses: the backup is untouched, not owned (the fast test took ``\\d`` for digits
    before, and planned it as a candidate). Other such digits, read as valid, go to parse_marker."""
    zeros = "\u0660" * 4
    odd = make(1, "2024-01-01T00:00", description=f"x [rotator:nightly@{zeros}-01-01T00:00Z]")
    three = make(3, "2024-01-02T00:00", description="x [rotator:nightly@2024-01-02T0\u0663:00Z]")
    assert parse_marker(odd.description) is None
    assert parse_marker(three.description) == parse_marker("[rotator:nightly@2024-01-02T03:00Z]")
    plan = plan_server([odd, three, make(2, NOW - timedelta(days=1))], policy(keep_last=1), NOW)
    assert [(d.backup.id, d.reasons) for d in plan.untouched] == [(1, (NOT_OWNED,))]
    assert [backup.id for backup in plan.deleted] == [3]
    fleet = plan_policy([odd], Policy("nightly", Retention(keep_last=1), servers=(SERVER,)), NOW)
    assert [(d.backup.id, d.reasons) for d in fleet.servers[0].untouched] == [(1, (NOT_OWNED,))]


def one_by_one(subject: Policy, descriptions: list[str | None]) -> list[bool]:
    """The marker test description by description: the marker pattern at the last ``[rotator:``."""
    match = retention._marker_pattern(subject.name).match
    return [
        match(text, text.rfind("[rotator:")) is not None
        for text in (description or "" for description in descriptions)
    ]


# Marker-ish pieces: the edge cases of the grammar, other decimal digits, the scan's separator.
_DIGITS = st.sampled_from("0123456789") | st.sampled_from("\u0660\u0663\u0969\uff10\uff19\U0001d7ce")
_EDGES = "0000 0001 2024 2023 1900 2000 00 01 02 12 13 28 29 30 31 23 24 59 60 0999 999 1 0 2 05 10 100"
_FIELD = st.text(_DIGITS, min_size=1, max_size=5) | st.sampled_from(
    [*_EDGES.split(" "), "1000", "\u0660" * 4, "0\uff100\u0660", "\u0660\u0663"]
)


@st.composite
def marker_ish(draw: st.DrawFn) -> str | None:
    """A description that ends with something near a marker of nightly (or another policy), or any text."""
    name = draw(st.sampled_from(["nightly", "nightly-2", "night", "weekly", "n1ghtly"]))
    year, month, day, hour, minute, second, attempt = (draw(_FIELD) for _ in range(7))
    slot = f"@{year}-{month}-{day}T{hour}:{minute}" + draw(st.sampled_from(["", f":{second}"])) + "Z"
    slot += draw(st.sampled_from(["", f"#{attempt}"]))
    marker = f"[rotator:{name}{draw(st.sampled_from(['', slot]))}]"
    text = draw(st.text(st.characters(codec="utf-8") | st.sampled_from("[]\x00\n@#:"), max_size=12))
    tail = draw(st.sampled_from(["", "", "", " ", "\x00", "]", "\x00[rotator:nightly]"]))
    return draw(st.sampled_from([f"{text}{marker}{tail}", f"{marker}{text}", text, None]))


@FAST
@given(st.lists(marker_ish(), max_size=12), st.sampled_from(["nightly", "nightly-2", "n1ghtly"]))
def test_the_one_scan_marker_test_answers_each_description_as_alone(
    descriptions: list[str | None], name: str
) -> None:
    """The marker test over many descriptions at once (one scan of them joined, unless one holds the
    separator) gives each the answer the pattern gives it alone, and what it accepts parse_marker reads
    as the policy's marker."""
    subject = Policy(name, Retention(keep_last=1))
    answers = list(retention._marked(subject, descriptions))
    assert answers == one_by_one(subject, descriptions)
    assert answers == [next(retention._marked(subject, [description])) for description in descriptions]
    for description, answer in zip(descriptions, answers, strict=True):
        if answer:
            marker = parse_marker(description)
            assert marker is not None
            assert marker.policy == name


@FAST
@given(st.lists(st.sampled_from(DESCRIPTIONS), max_size=8), st.sampled_from(["nightly", "weekly"]))
def test_a_description_holding_the_separator_leaves_the_others_answered_alike(
    descriptions: list[str | None], name: str
) -> None:
    """A description holding the scan's separator (a marker before it, or after it) gets no other's
    answer, nor gives its own to another."""
    subject = Policy(name, Retention(keep_last=1))
    for odd in (f"[rotator:{name}]\x00x", f"x\x00[rotator:{name}]", "\x00"):
        listing = [*descriptions, odd, *descriptions]
        assert list(retention._marked(subject, listing)) == one_by_one(subject, listing)


# --- the table of finest bucket keys (_Floors) ---------------------------------------------------
# Zones with DST, odd or historical (LMT) offsets, negative DST, many changes, and a skipped day.
TABLE_ZONES = [
    *ZONES,
    "Europe/Dublin",  # negative DST in winter
    "Africa/Casablanca",  # DST off for Ramadan: changes weeks apart
    "Asia/Gaza",  # changes a week apart
    "Africa/Freetown",  # 1939: changes four days apart
    "Africa/Monrovia",  # -00:44:30 until 1972
    "Europe/Amsterdam",  # +00:19:32 until 1937
    "America/St_Johns",  # -03:30 with DST
    "Pacific/Kiritimati",  # +14, skipped 1994-12-31
]


def _explicit_changes(zone: str) -> list[int]:
    """The UTC instants (epoch seconds) of ``zone``'s changes of offset in its tzdata file, then those of
    its rule for some later years, read by the pure-Python zoneinfo (private, for this test only)."""
    from zoneinfo import _zoneinfo as pure  # noqa: PLC0415

    info = pure.ZoneInfo.no_cache(zone)
    offsets = [info._tti_before.utcoff if info._tti_before else None, *(t.utcoff for t in info._ttinfos)]  # type: ignore[attr-defined]
    found = [at for at, was, now in zip(info._trans_utc, offsets, offsets[1:], strict=False) if was != now]  # type: ignore[attr-defined]
    after = info._tz_after  # type: ignore[attr-defined]
    if isinstance(after, pure._TZStr):  # type: ignore[attr-defined]
        std, dst = after.std.utcoff.total_seconds(), after.dst.utcoff.total_seconds()
        last = found[-1] if found else 0
        for year in (2038, 2040, 2077, 2100, 2101, 2500, 9000):
            begin, end = after.transitions(year)
            found += [at for at in (int(begin - std), int(end - dst)) if at > last]
    return sorted(found)


_CHANGES = {zone: _explicit_changes(zone) for zone in TABLE_ZONES}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUDGES = [timedelta(0), timedelta(microseconds=1), timedelta(seconds=1), timedelta(minutes=30)]


@st.composite
def near_changes(draw: st.DrawFn, zone: str, size: int = 12) -> list[datetime]:
    """Instants around one or two of ``zone``'s changes of offset: right at one, a microsecond or a
    second or half an hour before or after it, or anywhere within two days."""
    changes = _CHANGES[zone] or [1_700_000_000]
    at = draw(st.integers(0, len(changes) - 1))
    picks = [change for change in changes[at : at + 2] if change - changes[at] < 60 * 86400]
    times = []
    for _ in range(draw(st.integers(1, size))):
        change = _EPOCH + timedelta(seconds=draw(st.sampled_from(picks)))
        nudge = draw(
            st.one_of(st.sampled_from(_NUDGES), st.builds(timedelta, minutes=st.integers(0, 2 * 24 * 60)))
        )
        times.append(change + nudge if draw(st.booleans()) else change - nudge)
    return times


@FAST
@given(st.data(), st.sampled_from(TABLE_ZONES), st.booleans())
def test_the_table_gives_every_instant_its_own_local_key(
    data: st.DataObject, zone: str, hourly: bool
) -> None:
    """The table's key of an instant is the key of its own local time (as astimezone gives it), at,
    just before and just after changes of offset, for servers that make the table grow."""
    budget = 24 * 366
    floors = retention._Floors(retention.load_zone(zone), hourly, budget)
    rule = retention._CALENDAR_RULES[0 if hourly else 1]
    seen: list[datetime] = []
    for _ in range(data.draw(st.integers(1, 3))):
        times = sorted(data.draw(near_changes(zone)))
        seen += times
        keys = floors.keys_of(times)
        if keys is None:  # near an end of the calendar, or a span the budget does not probe
            until = retention._TABLE_UNTIL - rule_unit(hourly)
            inside = min(seen) >= retention._TABLE_FROM and max(seen) < until
            assert not inside or (max(seen) - min(seen)) / retention._PROBE > budget / 2
            continue
        assert keys == [rule.key(created.astimezone(floors.zone)) for created in times]


def rule_unit(hourly: bool) -> timedelta:
    return timedelta(hours=1) if hourly else timedelta(days=1)


def test_no_change_of_offset_hides_between_two_probes() -> None:
    """Every zone's changes of offset (in its file, and by its rule in later years) are at least two
    probes apart, so the table's probing sees each (a tzdata that breaks this fails here)."""
    import zoneinfo  # noqa: PLC0415

    gaps = []
    for zone in sorted(zoneinfo.available_timezones()):
        changes = _explicit_changes(zone)
        gaps += [(later - earlier, zone) for earlier, later in pairwise(changes)]
    closest = min(gaps)
    assert closest[0] >= 2 * retention._PROBE.total_seconds(), closest


@st.composite
def fleets_near_changes(draw: st.DrawFn, zone: str) -> tuple[list[Backup], tuple[int, ...]]:
    """Servers backed up around the same changes of ``zone``'s offset, to the second or a little apart
    (so that some share their buckets and some do not), in one listing."""
    base = draw(near_changes(zone, size=10))
    servers = tuple(range(1, draw(st.integers(1, 6)) + 1))
    listing: list[Backup] = []
    for server in servers:
        spread = draw(st.sampled_from([0, 1, 119, 3600]))
        for created in base:
            shifted = created + timedelta(seconds=draw(st.integers(0, spread)))
            listing.append(make(len(listing) + 1, shifted, server))
    return listing, servers


@FAST
@given(st.data(), st.sampled_from(TABLE_ZONES), policies(), st.sampled_from([0, 10**9]))
def test_plan_policy_around_changes_of_offset_is_the_reference_plan(
    data: st.DataObject, zone: str, subject: Policy, min_probes: int
) -> None:
    """plan_policy, whose servers' buckets come from the table (or, with too few probes allowed, from
    each candidate), gives every server the reference's plan around a zone's changes of offset."""
    listing, servers = data.draw(fleets_near_changes(zone))
    subject = Policy(subject.name, subject.retention, servers, zone, prune_unmanaged=subject.prune_unmanaged)
    now = max(item.created_at for item in listing) + timedelta(hours=data.draw(st.integers(0, 72)))
    with mock.patch.object(retention, "_MIN_PROBES", min_probes):
        fast = outcome(plan_policy, listing, subject, now)
    slow = outcome(reference.plan_policy, listing, reference_policy(subject), now)
    assert fast[0] == slow[0]
    if fast[0] == "plan":
        for plan, expected in zip(fast[1].servers, slow[1].servers, strict=True):
            assert_same(plan, expected)


@pytest.mark.parametrize("min_probes", [0, 10**9], ids=["few-probes", "many-probes"])
def test_a_table_that_grows_or_gives_up_changes_no_plan(min_probes: int) -> None:
    """Servers backed up further and further back (the table grows as they come, or gives up when it
    may not probe enough): every server's plan is the reference's."""
    listing = [
        make(server * 1000 + day, NOW - timedelta(days=day * server**3, seconds=server), server)
        for server in (1, 2, 3, 4, 5)
        for day in range(20)
    ]
    rules = Retention(keep_hourly=3, keep_daily=5, keep_weekly=2, keep_monthly=3)
    subject = Policy("nightly", rules, servers=(1, 2, 3, 4, 5), timezone="Europe/Berlin")
    with mock.patch.object(retention, "_MIN_PROBES", min_probes):
        fast = plan_policy(listing, subject, NOW)
    slow = reference.plan_policy(listing, reference_policy(subject), NOW)
    for plan, expected in zip(fast.servers, slow.servers, strict=True):
        assert_same(plan, expected)


def test_a_table_that_disagrees_with_a_candidates_own_local_time_is_given_up() -> None:
    """A table whose keys are wrong (as if its probes missed a change of offset) is found out at the
    first new answer, which is worked out from each candidate's own local time, and then no longer
    used: every server's plan is still the reference's."""
    listing = [
        make(server * 100 + day, NOW - timedelta(days=day * server, minutes=server), server)
        for server in (1, 2, 3)
        for day in range(20)
    ]
    subject = Policy(
        "nightly", Retention(keep_daily=5, keep_weekly=2), servers=(1, 2, 3), timezone="Europe/Berlin"
    )
    with mock.patch.object(retention, "_key_of", return_value=0):
        fast = plan_policy(listing, subject, NOW)
    slow = reference.plan_policy(listing, reference_policy(subject), NOW)
    for plan, expected in zip(fast.servers, slow.servers, strict=True):
        assert_same(plan, expected)


def test_a_plan_leaves_no_local_times_behind() -> None:
    """The table of local keys lives as long as one plan: the module holds no cache of local times."""
    assert not [name for name in vars(retention) if name.upper() == "_LOCALS"]


def test_the_collector_is_on_again_after_a_plan_and_stays_off_if_it_was() -> None:
    """Planning pauses the cyclic garbage collector and gives it back as it found it."""
    import gc  # noqa: PLC0415 (only this test touches it)

    listing = [make(1, NOW), make(2, NOW - timedelta(days=1))]
    subject = Policy("nightly", Retention(keep_last=1), servers=(SERVER,))
    assert gc.isenabled()
    plan_policy(listing, subject, NOW).delete  # noqa: B018 (built on first read)
    assert gc.isenabled()
    gc.disable()
    try:
        plan_server(listing, subject, NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_plan_leaves_what_others_froze_frozen() -> None:
    """A plan moves its own objects to the collector's oldest generation, but not by unfreezing what
    something else froze (a process that froze its objects before forking keeps them frozen)."""
    import gc  # noqa: PLC0415 (only these tests touch it)

    listing = [make(1, NOW), make(2, NOW - timedelta(days=1))]
    subject = Policy("nightly", Retention(keep_last=1), servers=(SERVER,))
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen
        plan_policy(listing, subject, NOW).delete  # noqa: B018 (built on first read)
        assert gc.get_freeze_count() == frozen
        assert gc.isenabled()
    finally:
        gc.unfreeze()
    plan_policy(listing, subject, NOW).delete  # noqa: B018
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_a_server_listed_in_several_runs_keeps_its_listing_order() -> None:
    """A server whose backups are not together in the account listing gets all of them, in order."""
    listing = [
        make(1, NOW - timedelta(days=3), 1),
        make(2, NOW - timedelta(days=2), 2),
        make(3, NOW - timedelta(days=3), 1),  # a same-second tie with backup 1
        make(4, NOW - timedelta(days=1), 2),
    ]
    subject = Policy("nightly", Retention(keep_last=1), servers=(2, 1))
    plan = plan_policy(listing, subject, NOW)
    assert [[d.backup.id for d in s.keep] for s in plan.servers] == [[4], [3]]
    assert [[b.id for b in s.deleted] for s in plan.servers] == [[2], [1]]


def test_servers_with_the_same_buckets_but_other_ages_get_their_own_answer() -> None:
    """Two servers whose backups share their days but not their age against ``keep_days``: each gets its
    own plan (the shared keep answer is keyed by where ``keep_days`` cuts too)."""
    inside = [make(n, NOW - timedelta(days=n, hours=-1), 1) for n in (1, 2, 3)]
    outside = [make(10 + n, NOW - timedelta(days=n, hours=1), 2) for n in (1, 2, 3)]
    for rules in (Retention(keep_days=2, keep_monthly=1), Retention(keep_days=2)):
        subject = Policy("nightly", rules, servers=(1, 2))
        fast = plan_policy([*inside, *outside], subject, NOW)
        slow = reference.plan_policy([*inside, *outside], reference_policy(subject), NOW)
        for plan, expected in zip(fast.servers, slow.servers, strict=True):
            assert_same(plan, expected)
        assert [len(plan.keep) for plan in fast.servers] == [2, 1]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Pacific/Chatham", "Antarctica/Casey"])
def test_the_jumping_engine_over_dense_years(zone: str) -> None:
    """Every six hours for two years (through the calendar's last years too): the jumping calendar rules
    (forced) plan what the reference plans, every rule on."""
    rules = Retention(
        keep_last=2, keep_hourly=30, keep_daily=20, keep_weekly=10, keep_monthly=14, keep_yearly=3
    )
    subject = Policy("nightly", rules, servers=(SERVER,), timezone=zone)
    for start in (datetime(2023, 1, 1, tzinfo=UTC), datetime(9997, 12, 31, tzinfo=UTC)):
        items = [make(n + 1, start + timedelta(hours=6 * n)) for n in range(4 * 730)]
        with engine(0, 0):
            fast = outcome(plan_server, items, subject, NOW)
        slow = outcome(reference_plan_server, items, reference_policy(subject), NOW)
        assert fast[0] == slow[0]
        if fast[0] == "plan":
            assert_same(fast[1], slow[1])


def test_the_delete_decisions_are_built_once() -> None:
    """A plan's delete decisions are built on first read and then the same tuple."""
    plan = plan_server([make(1, NOW), make(2, NOW - timedelta(days=1))], policy(keep_last=1), NOW)
    assert plan.delete is plan.delete
    assert isinstance(retention.ServerPlan.delete, retention._once)
