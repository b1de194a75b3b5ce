"""Slots across daylight saving changes: every zone's transitions 2000-2040, the Berlin nights, cron's
weekdays, and ``SlotTrigger`` as APScheduler calls it.

The oracle is an independent reading of the semantics documented in :mod:`rotator.slots`: a cron's
wall-clock matches are enumerated field by field, and each is placed in the zone by probing the zone's
offsets (its first occurrence; a wall time that does not occur, the gap's size later), never by the
search under test. Each search's cost is counted in the steps it takes through APScheduler's cron
trigger, not timed.
"""

from __future__ import annotations

import functools
import itertools
import pickle
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.markers import make_marker, parse_marker
from rotator.schedule import INTERVAL_ANCHOR, cron_trigger, crontab_weekdays, interval_trigger
from rotator.slots import _LOOKBACKS as LOOKBACKS  # how far latest_slot looks back, widening
from rotator.slots import SlotTrigger, latest_slot, next_slots, upcoming

# -- the zones' transitions ---------------------------------------------------------------------

WINDOW_START = datetime(2000, 1, 1, tzinfo=UTC)
WINDOW_END = datetime(2040, 1, 1, tzinfo=UTC)
# Offsets are sampled this often and a change is bisected to the second. The shortest stretch of one
# offset in the window is 7 days (Brazil's north-east, October 2000): a 6-day step cannot miss one.
SAMPLE_SECONDS = 6 * 86_400


def offset_at(zone: tzinfo, timestamp: int) -> timedelta:
    offset = datetime.fromtimestamp(timestamp, zone).utcoffset()
    assert offset is not None
    return offset


@dataclass(frozen=True)
class Transition:
    """A change of a zone's UTC offset: at ``at`` (UTC) from ``before`` to ``after``."""

    zone: str
    at: datetime
    before: timedelta
    after: timedelta

    @property
    def change(self) -> timedelta:
        return self.after - self.before

    @property
    def size(self) -> timedelta:
        return abs(self.change)

    @property
    def is_gap(self) -> bool:
        """Clocks jump forward: the wall times ``[at + before, at + after)`` do not occur."""
        return self.change > timedelta(0)

    @property
    def kind(self) -> tuple[bool, timedelta]:
        return self.is_gap, self.size

    @property
    def first_wall(self) -> datetime:
        """The first wall time that does not occur (gap) or occurs twice (fold)."""
        return (self.at + min(self.before, self.after)).replace(tzinfo=None)

    def __str__(self) -> str:
        what = "gap" if self.is_gap else "fold"
        return f"{self.zone} {what} of {self.size} at {self.at:%Y-%m-%dT%H:%MZ}"


@functools.cache
def transitions(name: str) -> tuple[Transition, ...]:
    """Every change of ``name``'s offset between 2000 and 2040."""
    zone = ZoneInfo(name)
    end = int(WINDOW_END.timestamp())
    here = int(WINDOW_START.timestamp())
    offset = offset_at(zone, here)
    found = []
    while here < end:
        there = min(here + SAMPLE_SECONDS, end)
        if offset_at(zone, there) == offset:
            here = there
            continue
        low, high = here, there  # offset(low) is the old one, offset(high) is not
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset_at(zone, middle) == offset else (low, middle)
        new = offset_at(zone, high)
        found.append(Transition(name, datetime.fromtimestamp(high, UTC), offset, new))
        here, offset = high, new
    return tuple(found)


ZONES = sorted(name for name in zoneinfo.available_timezones() if transitions(name))


def _tz_data(name: str) -> bytes | str:
    """The zone's TZif file, or its name when it is not read from a file on TZPATH."""
    for root in zoneinfo.TZPATH:
        path = Path(root) / name
        if path.is_file():
            return path.read_bytes()
    return name


SAME_DATA: dict[str, str] = {}
"""Each zone's first zone (in name order) with the very same TZif file: a link, such as US/Eastern
for America/New_York, is the same data under a second name, and is checked once."""
_FIRST_WITH: dict[bytes | str, str] = {}
for _name in ZONES:
    SAME_DATA[_name] = _FIRST_WITH.setdefault(_tz_data(_name), _name)


def representatives(name: str) -> list[Transition]:
    """The zone's first transition of each kind: a gap or a fold, and its size."""
    chosen: dict[tuple[bool, timedelta], Transition] = {}
    for transition in transitions(name):
        chosen.setdefault(transition.kind, transition)
    return list(chosen.values())


def test_transitions_are_found() -> None:
    """The transition table knows the nights these tests are about, and most of the world's zones."""
    berlin = {t.at: (t.before, t.after) for t in transitions("Europe/Berlin")}
    hour = timedelta(hours=1)
    assert berlin[datetime(2025, 3, 30, 1, tzinfo=UTC)] == (hour, 2 * hour)
    assert berlin[datetime(2025, 10, 26, 1, tzinfo=UTC)] == (2 * hour, hour)
    assert len(berlin) == 80
    (apia,) = [t for t in transitions("Pacific/Apia") if t.at.year == 2011 and t.size == timedelta(days=1)]
    assert apia.is_gap
    assert apia.at == datetime(2011, 12, 30, 10, tzinfo=UTC)
    sao_paulo = [t for t in transitions("America/Sao_Paulo") if t.at.year == 2018 and t.is_gap]
    assert [t.first_wall for t in sao_paulo] == [datetime(2018, 11, 4)]  # noqa: DTZ001 - a wall time
    assert transitions("UTC") == ()
    assert len(ZONES) > 300
    if isinstance(_tz_data("US/Eastern"), bytes):  # the system's tz files (not the tzdata package)
        assert SAME_DATA["US/Eastern"] == "America/New_York"
    assert len(set(SAME_DATA.values())) > 200


# -- the oracle ---------------------------------------------------------------------------------

_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _values(field: str, low: int, high: int, names: tuple[str, ...] = ()) -> set[int]:
    def number(text: str) -> int:
        return names.index(text.lower()) if text.lower() in names else int(text)

    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = number(start), number(end)
        else:
            first = number(span)
            last = high if step else first
        values.update(range(first, last + 1, int(step) if step else 1))
    return values


def wall_matches(expression: str, first: datetime, last: datetime) -> list[datetime]:
    """The naive wall-clock times in ``[first, last]`` that a crontab expression names."""
    minute, hour, day, month, weekday = expression.split()
    assert day == "*" or weekday == "*", "the oracle does not know cron's day-or-weekday rule"
    minutes = sorted(_values(minute, 0, 59))
    hours = sorted(_values(hour, 0, 23))
    days, months = _values(day, 1, 31), _values(month, 1, 12)
    weekdays = {value % 7 for value in _values(weekday, 0, 7, _WEEKDAY_NAMES)}  # 0 and 7 are Sunday
    found = []
    date = first.date()
    while date <= last.date():
        if date.day in days and date.month in months and date.isoweekday() % 7 in weekdays:
            for h in hours:
                for m in minutes:
                    moment = datetime(date.year, date.month, date.day, h, m)  # noqa: DTZ001 - a wall time
                    if first <= moment <= last:
                        found.append(moment)
        date += timedelta(days=1)
    return found


_PROBES = tuple(timedelta(hours=hours) for hours in (-15, -7, 0, 7, 13))


def slot_of_wall(wall: datetime, zone: tzinfo) -> datetime:
    """Where the documentation puts a cron's wall time: at its first occurrence; a wall time in a gap,
    the gap's size later."""
    guess = wall.replace(tzinfo=UTC)
    offsets = {offset_of(guess + probe, zone) for probe in _PROBES}  # the offsets in use around it
    occurrences = sorted(guess - offset for offset in offsets if local(guess - offset, zone) == wall)
    if occurrences:
        return occurrences[0]
    assert len(offsets) == 2, f"{wall} in {zone}: more than one transition near a gap ({offsets})"
    before = min(offsets)  # clocks went forward from the smaller offset
    return guess - before  # the instant whose wall time is ``wall`` + the gap


def local(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def offset_of(instant: datetime, zone: tzinfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def largest_change(name: str, low: datetime, high: datetime) -> timedelta:
    near = [t.size for t in transitions(name) if low - timedelta(days=2) <= t.at <= high + timedelta(days=2)]
    return max(near, default=timedelta(0))


def expected_slots(expression: str, name: str, low: datetime, high: datetime) -> list[datetime]:
    """The slots in ``(low, high]`` by the documentation, from the cron's wall times around them."""
    zone = ZoneInfo(name)
    margin = largest_change(name, low, high) + timedelta(minutes=1)
    walls = wall_matches(expression, local(low, zone) - margin, local(high, zone) + margin)
    return sorted({slot for wall in walls if low < (slot := slot_of_wall(wall, zone)) <= high})


# -- the cost of a search -----------------------------------------------------------------------


@contextmanager
def cron_steps() -> Iterator[list[int]]:
    """Counts the steps slot searches take: the calls of APScheduler's cron ``get_next_fire_time``."""
    steps = [0]
    original = CronTrigger.get_next_fire_time

    def counted(self: CronTrigger, previous: datetime | None, now: datetime) -> datetime | None:
        steps[0] += 1
        fire: datetime | None = original(self, previous, now)
        return fire

    with mock.patch.object(CronTrigger, "get_next_fire_time", counted):
        yield steps


def next_bound(expression: str, zone: tzinfo, after: datetime, found: datetime) -> int:
    """The most steps the search for the slot after ``after`` may take: the cron's wall times from a day
    before ``after`` (a search starts up to a gap earlier) to the slot found, and two more."""
    return 2 + len(wall_matches(expression, local(after, zone) - timedelta(days=1), local(found, zone)))


def latest_bound(expression: str, zone: tzinfo, now: datetime, found: datetime) -> int:
    """The most steps ``latest_slot`` may take: a search per look-back window tried and per slot in the
    window that holds one, each over at most a day's wall times (a search starts up to a gap earlier)."""
    window = next(lookback for lookback in LOOKBACKS if now - lookback <= found)
    in_window = wall_matches(expression, local(now - window, zone), local(now, zone))
    in_a_day = wall_matches(expression, local(now, zone) - timedelta(days=1), local(now, zone))
    return (len(LOOKBACKS) + 1 + len(in_window)) * (3 + len(in_a_day))


def slots_until(trigger: SlotTrigger, low: datetime, high: datetime) -> list[datetime]:
    """The slots in ``(low, high]`` from ``upcoming``; a slot that does not move on fails at once (the
    autumn-fold hang repeated one slot forever)."""
    found: list[datetime] = []
    for slot in upcoming(trigger, low):
        assert slot > (found[-1] if found else low), f"{slot} after {found[-1:] or low}: no progress"
        if slot > high:
            break
        found.append(slot)
        assert len(found) < 10_000, "no end to the slots"
    return found


# -- the properties, checked on one window ------------------------------------------------------


def check_cron_window(
    expression: str,
    name: str,
    low: datetime,
    high: datetime,
    probes: tuple[datetime, ...] = (),
    near: tuple[datetime, datetime] | None = None,
) -> list[datetime]:
    """Every property of a cron's slots in ``(low, high]``; returns them.

    * the slots are the documented ones (the oracle), strictly increasing, one per wall time;
    * each has its own marker, which reads back as the slot;
    * ``latest_slot`` at and just before each slot (those ``near`` a transition, when given), and at
      the ``probes``, is the slot at or before it, and the next slot after it is the first after it;
    * every search takes a number of steps bounded by the wall times it walks.
    """
    zone = ZoneInfo(name)
    trigger = cron_trigger(expression, name)
    slots = slots_until(trigger, low, high)
    where = f"{expression!r} in {name} ({low:%Y-%m-%dT%H:%MZ} .. {high:%Y-%m-%dT%H:%MZ})"
    assert slots == expected_slots(expression, name, low, high), where
    assert all(a < b for a, b in itertools.pairwise(slots)), where
    walls = [local(slot, zone) for slot in slots]
    assert len(set(walls)) == len(walls), f"two slots on one wall time: {where}"
    markers = [make_marker("p", slot) for slot in slots]
    assert len(set(markers)) == len(markers), where
    assert [marker.slot for marker in map(parse_marker, markers) if marker is not None] == slots, where

    for index, slot in enumerate(slots):
        if near is not None and not near[0] <= slot <= near[1]:
            continue
        check_latest(expression, trigger, zone, slot, slot)
        if index:
            check_latest(expression, trigger, zone, slot - timedelta(microseconds=1), slots[index - 1])
        if index + 1 < len(slots):
            check_next(expression, trigger, zone, slot, slots[index + 1])
    for probe in probes:
        if slots and slots[0] <= probe <= high:  # the slots before and after it are known
            before = [slot for slot in slots if slot <= probe]
            after = [slot for slot in slots if slot > probe]
            check_latest(expression, trigger, zone, probe, before[-1])
            if after:
                check_next(expression, trigger, zone, probe, after[0])
                check_next(expression, trigger, zone, before[-1], after[0])
    return slots


def check_latest(
    expression: str, trigger: SlotTrigger, zone: tzinfo, now: datetime, expected: datetime
) -> None:
    with cron_steps() as steps:
        found = latest_slot(trigger, now)
    assert found == expected, f"latest_slot({expression!r}, {now}) in {zone}"
    assert found <= now
    assert steps[0] <= latest_bound(expression, zone, now, found), f"{steps[0]} steps: latest at {now}"


def check_next(
    expression: str, trigger: SlotTrigger, zone: tzinfo, after: datetime, expected: datetime
) -> None:
    with cron_steps() as steps:
        found = next_slots(trigger, after, 1)
    assert found == [expected], f"next slot of {expression!r} after {after} in {zone}"
    assert steps[0] <= next_bound(expression, zone, after, expected), f"{steps[0]} steps after {after}"


# -- every zone: a deterministic table ----------------------------------------------------------


@pytest.mark.parametrize("name", ZONES)
def test_every_zones_transitions(name: str) -> None:
    """Around the first transition of each kind in every zone that has one: the documented slots of the
    nightly crons, of crons on the first and the middle wall time of its gap or fold, and hourly. A link
    to a zone checked under its own name has that zone's transitions."""
    if SAME_DATA[name] != name:
        same = transitions(SAME_DATA[name])
        assert [(t.at, t.before, t.after) for t in transitions(name)] == [
            (t.at, t.before, t.after) for t in same
        ]
        return
    for transition in representatives(name):
        check_transition(transition)


def check_transition(transition: Transition) -> None:
    name, at, size = transition.zone, transition.at, transition.size
    day_before, day_after = at - timedelta(days=1), at + size + timedelta(days=1)
    first = transition.first_wall
    middle = first + size / 2  # the middle of the gap or the fold, a wall time
    assert middle.second == 0, f"{transition}: not on a minute"
    for expression in ("30 2 * * *", "0 0 * * *"):
        check_cron_window(expression, name, day_before, day_after, (at,), (at, at))
    around = check_cron_window(
        f"{middle.minute} {middle.hour} * * *",
        name,
        day_before,
        day_after,
        (at - timedelta(microseconds=1), at + size / 2),
        (at - size, at + size),
    )
    hourly = f"{first.minute} * * * *"  # on the minute of the hour its wall times start: 0 for most
    probes = (at - timedelta(microseconds=1), at, at + size / 2)
    hours = timedelta(hours=2)
    check_cron_window(hourly, name, at - size - hours, at + size + hours, probes, (at - size, at + size))
    if transition.is_gap:
        # the middle of the gap runs once, shifted forward by the gap
        assert at + size / 2 in around, f"{transition}: no slot for the gap's middle"
        assert local(at + size / 2, ZoneInfo(name)) == middle + size
    else:
        # the middle of the fold runs once, at its first occurrence
        assert at - size / 2 in around, f"{transition}: no slot at the fold's first occurrence"
        assert at + size / 2 not in around, f"{transition}: a slot at the fold's second occurrence"


# -- random zones, crons and instants: Hypothesis -----------------------------------------------

CRONS = {
    "30 2 * * *": timedelta(days=4),
    "0 * * * *": timedelta(hours=8),
    "*/15 * * * *": timedelta(hours=3),
    "*/20 * * * *": timedelta(hours=3),  # in a 30-minute gap, wall times after it can come first
    "0 3 * * 0": timedelta(days=22),
    "0 0 * * *": timedelta(days=4),
    "0 2 1 * *": timedelta(days=70),
    "30 1 1 1 *": timedelta(days=800),
}
"""The crons of the property tests, and how long a window of each holds a few slots."""

PROPERTIES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WINDOW_MINUTES = int((WINDOW_END - WINDOW_START).total_seconds() // 60)


@st.composite
def instants(draw: st.DrawFn, name: str) -> datetime:
    """Near one of the zone's transitions (within two days, to the microsecond), or anywhere in 2000-2040."""
    if draw(st.booleans()):
        transition = draw(st.sampled_from(transitions(name)))
        seconds = draw(st.integers(-2 * 86_400, 2 * 86_400))
        base = transition.at + timedelta(seconds=seconds)
    else:
        base = WINDOW_START + timedelta(minutes=draw(st.integers(0, WINDOW_MINUTES)))
    return base + timedelta(microseconds=draw(st.sampled_from([0, 1, 999_999])))


@PROPERTIES
@given(st.data(), st.sampled_from(ZONES), st.sampled_from(sorted(CRONS)))
def test_cron_slots_anywhere(data: st.DataObject, name: str, expression: str) -> None:
    """For any zone, cron and instant: the documented slots, increasing, unique, bounded searches."""
    start = data.draw(instants(name), label="start")
    probe = start + data.draw(st.timedeltas(timedelta(0), CRONS[expression]), label="probe")
    check_cron_window(expression, name, start, start + CRONS[expression], (probe,))


INTERVALS = [timedelta(minutes=90), timedelta(days=1), timedelta(seconds=7), timedelta(hours=6)]


@contextmanager
def interval_steps() -> Iterator[list[int]]:
    """Counts the calls of APScheduler's interval ``get_next_fire_time`` (slots are arithmetic: none)."""
    steps = [0]
    original = IntervalTrigger.get_next_fire_time

    def counted(self: IntervalTrigger, previous: datetime | None, now: datetime) -> datetime | None:
        steps[0] += 1
        fire: datetime | None = original(self, previous, now)
        return fire

    with mock.patch.object(IntervalTrigger, "get_next_fire_time", counted):
        yield steps


@PROPERTIES
@given(st.data(), st.sampled_from(ZONES), st.sampled_from(INTERVALS))
def test_interval_slots_anywhere(data: st.DataObject, name: str, every: timedelta) -> None:
    """Interval slots count absolute time from 2000-01-01 in the zone: DST never moves them."""
    now = data.draw(instants(name), label="now")
    trigger = interval_trigger(every, name)
    anchor = INTERVAL_ANCHOR.replace(tzinfo=ZoneInfo(name)).astimezone(UTC)
    with interval_steps() as steps, cron_steps() as cron:
        slots = next_slots(trigger, now, 6)
        latest = latest_slot(trigger, now)
        again = next_slots(trigger, latest, 1) if latest is not None else []
    assert steps[0] == cron[0] == 0
    if now < anchor:  # no slot before the anchor
        assert latest is None
        assert slots[0] == anchor
        return
    assert latest is not None
    assert latest <= now < latest + every
    assert again == slots[:1]
    assert slots == [latest + every * (index + 1) for index in range(6)]
    assert all((slot - anchor) % every == timedelta(0) for slot in slots)
    assert latest_slot(trigger, slots[2]) == slots[2]
    assert latest_slot(trigger, slots[2] - timedelta(microseconds=1)) == slots[1]
    markers = [make_marker("p", slot) for slot in [latest, *slots]]
    assert len(set(markers)) == len(markers)


# -- Europe/Berlin, 2025: the autumn fold and the spring gap --------------------------------------

BERLIN = "Europe/Berlin"


def utc(text: str) -> datetime:
    """``"10-26T00:30"`` in 2025, or ``"2026-01-01T00:30"``, as an instant in UTC."""
    full = text if text.count("-") == 2 else f"2025-{text}"
    return datetime.fromisoformat(full).replace(tzinfo=UTC)


AUTUMN = (utc("10-25T21:00"), utc("10-26T04:00"))  # 23:00 CEST on the 25th to 05:00 CET on the 26th
SPRING = (utc("03-29T21:00"), utc("03-30T03:00"))  # 22:00 CET on the 29th to 05:00 CEST on the 30th

BERLIN_NIGHTS = [
    # the fold: 03:00 CEST is followed by 02:00 CET at 01:00Z; 02:00-02:59 happen twice
    ("30 2 * * *", AUTUMN, ["10-26T00:30"]),  # once, in summer time; not again at 01:30Z
    (
        "0 * * * *",
        AUTUMN,
        # 02:00 CEST at 00:00Z, but not 02:00 CET at 01:00Z
        ["10-25T22:00", "10-25T23:00", "10-26T00:00", "10-26T02:00", "10-26T03:00", "10-26T04:00"],
    ),
    (
        "*/15 * * * *",
        (utc("10-25T23:30"), utc("10-26T02:00")),
        # nothing from 01:00Z to 01:45Z (02:00 to 02:45 CET, the second time)
        ["10-25T23:45", "10-26T00:00", "10-26T00:15", "10-26T00:30", "10-26T00:45", "10-26T02:00"],
    ),
    ("0 3 * * 0", AUTUMN, ["10-26T02:00"]),  # a Sunday, 03:00 CET
    ("0 0 * * *", AUTUMN, ["10-25T22:00"]),  # midnight CEST
    ("0 2 * * *", AUTUMN, ["10-26T00:00"]),  # the fold's first wall time, first occurrence
    ("59 2 * * *", AUTUMN, ["10-26T00:59"]),  # and its last
    ("0 2 1 * *", (utc("10-25T21:00"), utc("2025-12-02T00:00")), ["11-01T01:00", "12-01T01:00"]),
    ("30 1 1 1 *", (AUTUMN[0], utc("2027-01-02T00:00")), ["2026-01-01T00:30", "2027-01-01T00:30"]),
    # the gap: 02:00 CET is followed by 03:00 CEST at 01:00Z; 02:00-02:59 do not happen
    ("30 2 * * *", SPRING, ["03-30T01:30"]),  # shifted forward by the gap: 03:30 CEST
    (
        "0 * * * *",
        SPRING,
        # 02:00 CET does not happen: shifted to 03:00 CEST, 01:00Z, which is one slot with 03:00's own
        ["03-29T22:00", "03-29T23:00", "03-30T00:00", "03-30T01:00", "03-30T02:00", "03-30T03:00"],
    ),
    (
        "*/15 * * * *",
        (utc("03-30T00:30"), utc("03-30T01:45")),
        ["03-30T00:45", "03-30T01:00", "03-30T01:15", "03-30T01:30", "03-30T01:45"],  # 02:15 is 03:15
    ),
    ("0 3 * * 0", SPRING, ["03-30T01:00"]),  # a Sunday, 03:00 CEST
    ("0 0 * * *", SPRING, ["03-29T23:00"]),  # midnight CET
    ("0 2 * * *", SPRING, ["03-30T01:00"]),  # the gap's first wall time is 03:00 CEST
    ("0 2 1 * *", (utc("03-29T21:00"), utc("05-02T00:00")), ["04-01T00:00", "05-01T00:00"]),
    ("30 1 1 1 *", (SPRING[0], utc("2026-01-02T00:00")), ["2026-01-01T00:30"]),
]


@pytest.mark.parametrize(("expression", "window", "expected"), BERLIN_NIGHTS)
def test_berlin_2025_nights(expression: str, window: tuple[datetime, datetime], expected: list[str]) -> None:
    """The exact slots of each cron on the nights Berlin's clocks change in 2025."""
    low, high = window
    slots = check_cron_window(expression, BERLIN, low, high, (utc("10-26T01:00"), utc("03-30T01:00")))
    assert slots == [utc(text) for text in expected]


@pytest.mark.parametrize(
    ("expression", "now", "latest", "following"),
    [
        ("30 2 * * *", "10-26T01:30", "10-26T00:30", "10-27T01:30"),  # the second 02:30 is no slot
        ("30 2 * * *", "10-26T00:30", "10-26T00:30", "10-27T01:30"),
        ("0 * * * *", "10-26T01:00", "10-26T00:00", "10-26T02:00"),  # 02:00 CET is no slot
        ("0 * * * *", "10-26T01:59:59", "10-26T00:00", "10-26T02:00"),
        ("*/15 * * * *", "10-26T01:45", "10-26T00:45", "10-26T02:00"),
        ("0 3 * * 0", "10-26T01:00", "10-19T01:00", "10-26T02:00"),
        ("0 0 * * *", "10-26T01:00", "10-25T22:00", "10-26T23:00"),
        ("0 2 1 * *", "10-26T01:00", "10-01T00:00", "11-01T01:00"),
        ("30 1 1 1 *", "10-26T01:00", "01-01T00:30", "2026-01-01T00:30"),
        ("30 2 * * *", "03-30T01:00", "03-29T01:30", "03-30T01:30"),
        ("30 2 * * *", "03-30T01:30", "03-30T01:30", "03-31T00:30"),
        ("0 * * * *", "03-30T01:00", "03-30T01:00", "03-30T02:00"),
        ("*/15 * * * *", "03-30T00:59", "03-30T00:45", "03-30T01:00"),
        ("0 0 * * *", "03-30T01:00", "03-29T23:00", "03-30T22:00"),
        ("0 2 1 * *", "03-30T01:00", "03-01T01:00", "04-01T00:00"),
    ],
)
def test_berlin_latest_and_next(expression: str, now: str, latest: str, following: str) -> None:
    """``latest_slot`` and ``next_slots`` in the middle of Berlin's 2025 fold and gap."""
    trigger = cron_trigger(expression, BERLIN)
    zone = ZoneInfo(BERLIN)
    check_latest(expression, trigger, zone, utc(now), utc(latest))
    check_next(expression, trigger, zone, utc(now), utc(following))
    check_next(expression, trigger, zone, utc(latest), utc(following))


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        # 2025-10-05: 02:00 LHST (+10:30) is followed by 02:30 LHDT (+11) at 15:30Z. 02:00 and 02:20 move
        # on by the gap to 02:30 and 02:50, so 02:40 (15:40Z) runs between them
        (
            (utc("10-04T14:30"), utc("10-04T16:00")),
            ["10-04T14:50", "10-04T15:10", "10-04T15:30", "10-04T15:40", "10-04T15:50", "10-04T16:00"],
        ),
        # 2025-04-06: 02:00 LHDT is followed by 01:30 LHST at 15:00Z: 01:40 runs in daylight time only
        (
            (utc("04-05T13:50"), utc("04-05T15:50")),
            ["04-05T14:00", "04-05T14:20", "04-05T14:40", "04-05T15:30", "04-05T15:50"],
        ),
    ],
)
def test_lord_howes_half_hour_changes(window: tuple[datetime, datetime], expected: list[str]) -> None:
    """Lord Howe Island moves its clocks by 30 minutes: a 20-minute cron through the gap and the fold."""
    slots = check_cron_window("*/20 * * * *", "Australia/Lord_Howe", *window, (utc("10-04T15:45"),))
    assert slots == [utc(text) for text in expected]


@pytest.mark.parametrize(
    ("every", "slots"),
    [
        # anchored at 2000-01-01 00:00 CET = 1999-12-31T23:00Z: absolute time, whatever the wall clock says
        (timedelta(days=1), ["10-25T23:00", "10-26T23:00"]),  # 01:00 CEST, then 00:00 CET
        (timedelta(minutes=90), ["10-26T00:30", "10-26T02:00", "10-26T03:30"]),
        (timedelta(seconds=7), ["10-26T01:00:04", "10-26T01:00:11", "10-26T01:00:18"]),
    ],
)
def test_berlin_intervals_across_the_fold(every: timedelta, slots: list[str]) -> None:
    """Interval slots step in absolute time through the fold (the wall clock's hour back moves nothing)."""
    trigger = interval_trigger(every, BERLIN)
    start = utc(slots[0]) - timedelta(seconds=1)
    assert next_slots(trigger, start, len(slots)) == [utc(text) for text in slots]
    assert latest_slot(trigger, utc(slots[1]) - timedelta(microseconds=1)) == utc(slots[0])


# -- cron's weekdays ----------------------------------------------------------------------------

MONDAY = datetime(2025, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "apscheduler", "days"),
    [
        ("0", "6", {0}),
        ("7", "6", {0}),
        ("0,7", "6", {0}),
        ("7-7", "6", {0}),
        ("sun", "6", {0}),
        ("SUN", "6", {0}),
        ("1", "0", {1}),
        ("1-5", "0,1,2,3,4", {1, 2, 3, 4, 5}),
        ("mon-fri", "0,1,2,3,4", {1, 2, 3, 4, 5}),
        ("Mon-Fri", "0,1,2,3,4", {1, 2, 3, 4, 5}),
        ("5-7", "4,5,6", {5, 6, 0}),
        ("6-7", "5,6", {6, 0}),
        ("*/2", "1,3,5,6", {0, 2, 4, 6}),
        ("1-5/2", "0,2,4", {1, 3, 5}),
        ("5-7/2", "4,6", {5, 0}),
        ("tue,thu", "1,3", {2, 4}),
        ("sat,0", "5,6", {6, 0}),
        ("0-7", "0,1,2,3,4,5,6", set(range(7))),
        ("*", "*", set(range(7))),
    ],
)
def test_cron_weekdays(field: str, apscheduler: str, days: set[int]) -> None:
    """Weekdays as cron counts them (0 and 7 are Sunday), written in APScheduler 3's numbering (0 is
    Monday), and the slots land on those days, in the policy's zone."""
    assert crontab_weekdays(field) == apscheduler
    for name in ("UTC", BERLIN, "Pacific/Kiritimati", "Pacific/Pago_Pago"):
        zone = ZoneInfo(name)
        slots = next_slots(cron_trigger(f"30 0 * * {field}", name), MONDAY, 2 * len(days))
        assert {slot.astimezone(zone).isoweekday() % 7 for slot in slots} == days
        assert all(local(slot, zone).time().isoformat() == "00:30:00" for slot in slots)


@pytest.mark.parametrize("field", ["8", "-1", "5-1", "7-1", "sat-sun", "*/0", "1/x", "funday", "mon-", ""])
def test_bad_weekdays_are_refused(field: str) -> None:
    """A day of the week cron would not read is a ValueError naming the expression."""
    with pytest.raises(ValueError, match="not a cron expression"):
        cron_trigger(f"0 3 * * {field}", "UTC")


def test_sunday_in_the_policys_zone() -> None:
    """``0 3 * * 0`` is 03:00 on Sunday in the policy's zone, whatever day it is in UTC then."""
    slot = next_slots(cron_trigger("0 3 * * 0", "Pacific/Auckland"), MONDAY, 1)[0]
    assert slot == datetime(2025, 1, 11, 14, 0, tzinfo=UTC)  # a Saturday in UTC
    assert slot.astimezone(ZoneInfo("Pacific/Auckland")).strftime("%a %H:%M") == "Sun 03:00"


# -- SlotTrigger as APScheduler calls it ---------------------------------------------------------


def fires_through(trigger: SlotTrigger, start: datetime, end: datetime, wake: timedelta) -> list[datetime]:
    """The fire times APScheduler computes for a job from ``start`` to ``end``, waking every ``wake`` (and
    at ``end``): the first from ``get_next_fire_time(None, now)``, each next one from the previous, as
    ``Job._get_run_times`` and ``_process_jobs`` call it (``now`` is the time of the wake-up)."""
    fires: list[datetime] = []
    following = trigger.get_next_fire_time(None, start)
    now = start
    while True:
        while following is not None and following <= now:
            assert not fires or following > fires[-1], f"{following} after {fires[-1]}"
            fires.append(following)
            following = trigger.get_next_fire_time(following, now)
            assert len(fires) < 10_000, "no end to the fire times"
        if now == end:
            return fires
        now = min(now + wake, end)


@pytest.mark.parametrize("jitter", [None, 1, 299])
@pytest.mark.parametrize("wake", [timedelta(seconds=1), timedelta(minutes=7), timedelta(hours=6)])
@pytest.mark.parametrize("expression", ["30 2 * * *", "0 * * * *", "*/15 * * * *", "0 2 * * *"])
@pytest.mark.parametrize("night", [AUTUMN, SPRING])
def test_slot_trigger_through_berlins_nights(
    expression: str, jitter: int | None, wake: timedelta, night: tuple[datetime, datetime]
) -> None:
    """Fire times never go back nor repeat, each is its slot plus at most the jitter, and there is one
    per slot: across the fold and the gap, whether APScheduler wakes every second or after six hours."""
    start, end = night
    schedule = cron_trigger(expression, BERLIN).schedule
    trigger = SlotTrigger(schedule, jitter)
    with cron_steps() as steps:
        fires = fires_through(trigger, start, end, wake)
    slots = slots_until(trigger, start - timedelta(microseconds=1), end)
    spread = timedelta(seconds=jitter or 0)
    assert len(fires) <= len(slots)
    assert all(slot + spread > end for slot in slots[len(fires) :])  # fires after the night's end
    for fire, slot in zip(fires, slots, strict=False):
        assert slot <= fire <= slot + spread
        assert latest_slot(trigger, fire) == slot
    assert steps[0] <= 16 * (len(fires) + 1)


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("30 2 * * *", "10-26T01:30", "10-27T01:30"),  # in the fold's second hour: today's slot is past
        ("30 2 * * *", "10-26T00:30", "10-26T00:30"),  # at or after now
        ("0 * * * *", "10-26T00:00:01", "10-26T02:00"),
        ("30 2 * * *", "03-30T00:59", "03-30T01:30"),
    ],
)
def test_slot_trigger_first_fire_time(expression: str, now: str, expected: str) -> None:
    """Without a previous fire time (a job added or resumed), the first slot at or after now."""
    trigger = cron_trigger(expression, BERLIN)
    assert trigger.get_next_fire_time(None, utc(now)) == utc(expected)


def test_slot_trigger_after_a_jittered_fire_time() -> None:
    """The previous fire time has its jitter added: the next slot is the first after it, never it."""
    trigger = cron_trigger("0 * * * *", BERLIN, timedelta(minutes=10))
    previous = utc("10-26T00:09:59")  # the 00:00Z slot, fired 9:59 late
    following = trigger.get_next_fire_time(previous, previous)
    assert following is not None
    assert utc("10-26T02:00") <= following <= utc("10-26T02:10")


def test_a_jittered_apscheduler_trigger_is_read_without_its_jitter() -> None:
    """APScheduler's own trigger with jitter, passed as is: its slots are the times before jitter."""
    jittered = CronTrigger(minute=0, timezone=ZoneInfo(BERLIN), jitter=1800)
    plain = CronTrigger(minute=0, timezone=ZoneInfo(BERLIN))
    assert next_slots(jittered, AUTUMN[0], 8) == next_slots(plain, AUTUMN[0], 8)
    assert latest_slot(jittered, utc("10-26T01:30")) == utc("10-26T00:00")
    assert jittered.jitter == 1800  # the caller's trigger is left as it was


def test_slot_trigger_pickles() -> None:
    """A job store may pickle the trigger: it comes back with the same slots and jitter."""
    trigger = cron_trigger("30 2 * * *", BERLIN, timedelta(minutes=5))
    copy = pickle.loads(pickle.dumps(trigger))
    assert copy.jitter == 300
    assert next_slots(copy, AUTUMN[0], 3) == next_slots(trigger, AUTUMN[0], 3)
    assert str(copy) == str(trigger)
    assert "jitter=300" in repr(copy)
