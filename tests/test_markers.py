"""Ownership markers: written and read back, and nothing else mistaken for one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.markers import (
    MAX_ATTEMPT,
    Marker,
    make_marker,
    mark_description,
    mentions_marker,
    owned_marker_pattern,
    parse_marker,
)

SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)


def test_make_marker() -> None:
    """``[rotator:POLICY]`` and ``[rotator:POLICY@YYYY-MM-DDTHH:MMZ]``, the slot in UTC."""
    assert make_marker("nightly") == "[rotator:nightly]"
    assert make_marker("nightly", SLOT) == "[rotator:nightly@2025-01-16T03:00Z]"
    berlin = SLOT.astimezone(timezone(timedelta(hours=1)))
    assert make_marker("db.eu-1_a", berlin) == "[rotator:db.eu-1_a@2025-01-16T03:00Z]"
    # only sub-minute interval slots carry seconds; fractions of a second never
    assert make_marker("n", SLOT.replace(second=59)) == "[rotator:n@2025-01-16T03:00:59Z]"
    assert make_marker("n", SLOT.replace(microsecond=5)) == "[rotator:n@2025-01-16T03:00Z]"


@pytest.mark.parametrize("name", ["", "a b", "a]", "a@b", "ä", "a:b"])
def test_make_marker_refuses_bad_names(name: str) -> None:
    """Only letters, digits, ``-``, ``_``, ``.`` make a policy name."""
    with pytest.raises(ValueError, match="not a policy name"):
        make_marker(name)


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: Python counts such a datetime as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_make_marker_refuses_naive_slots() -> None:
    """A slot without a zone is ambiguous, and so is one whose tzinfo gives no offset."""
    with pytest.raises(ValueError, match="aware"):
        make_marker("nightly", datetime(2025, 1, 16))  # noqa: DTZ001
    with pytest.raises(ValueError, match="aware"):
        make_marker("nightly", datetime(2025, 1, 16, tzinfo=_NoOffset()))


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, "[rotator:nightly@2025-01-16T03:00Z]"),
        (2, "[rotator:nightly@2025-01-16T03:00Z#2]"),
        (10, "[rotator:nightly@2025-01-16T03:00Z#10]"),
        (MAX_ATTEMPT, "[rotator:nightly@2025-01-16T03:00Z#999]"),
    ],
)
def test_make_marker_spells_the_attempt(attempt: int, expected: str) -> None:
    """The first attempt has no ``#``; the N-th (2 to 999) ends its slot with ``#N``."""
    assert make_marker("nightly", SLOT, attempt) == expected
    assert str(Marker("nightly", SLOT, attempt)) == expected
    assert mark_description("Nightly", "nightly", SLOT, attempt) == f"Nightly {expected}"


@pytest.mark.parametrize("attempt", [0, -1, MAX_ATTEMPT + 1, True, False])
def test_make_marker_refuses_attempts_it_cannot_spell(attempt: int) -> None:
    """An attempt is a whole number from 1 to 999 (a bool is not one)."""
    message = rf"^an attempt is a whole number from 1 to 999, not {attempt!r}$"
    with pytest.raises(ValueError, match=message):
        make_marker("nightly", SLOT, attempt)


@pytest.mark.parametrize("attempt", [2, MAX_ATTEMPT])
def test_only_a_slots_marker_has_attempts(attempt: int) -> None:
    """``[rotator:POLICY]`` (no slot) is a single backup: it has no second attempt."""
    with pytest.raises(ValueError, match=r"^only a slot's marker has attempts$"):
        make_marker("nightly", None, attempt)
    with pytest.raises(ValueError, match=r"^only a slot's marker has attempts$"):
        mark_description("Ad-hoc", "nightly", None, attempt)


@pytest.fixture(name="host_zone")
def fixture_host_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local zone is Asia/Kathmandu (+05:45), as on a host that is not on UTC."""
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    yield "Asia/Kathmandu"
    monkeypatch.undo()
    time.tzset()


def test_markers_do_not_depend_on_the_hosts_zone(host_zone: str) -> None:
    """A marker spells its slot in UTC whatever zone the host runs in, and reads back in UTC."""
    assert datetime(2025, 1, 16, tzinfo=UTC).astimezone().utcoffset() == timedelta(hours=5, minutes=45)
    berlin = SLOT.astimezone(timezone(timedelta(hours=1)))
    assert make_marker("nightly", berlin, 2) == "[rotator:nightly@2025-01-16T03:00Z#2]"
    parsed = parse_marker("x [rotator:nightly@2025-01-16T03:00Z#2]")
    assert parsed == Marker("nightly", SLOT, 2)
    assert parsed is not None
    assert parsed.slot is not None
    assert parsed.slot.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Nightly backup [rotator:nightly@2025-01-16T03:00Z]", Marker("nightly", SLOT)),
        ("[rotator:nightly]", Marker("nightly")),
        ("x [rotator:a]  [rotator:b]", Marker("b")),
        ("[rotator:nightly] copied", None),
        ("[rotator:nightly] ", None),
        ("[rotator:nightly@2025-01-16T03:00]", None),
        ("x [rotator:nightly@2025-01-16T03:00Z#2]", Marker("nightly", SLOT, 2)),
        ("x [rotator:nightly@2025-01-16T03:00Z#10]", Marker("nightly", SLOT, 10)),
        ("x [rotator:nightly@2025-01-16T03:00:30Z#999]", Marker("nightly", SLOT.replace(second=30), 999)),
        ("x [rotator:nightly@2025-01-16T03:00Z#1]", None),
        ("x [rotator:nightly@2025-01-16T03:00Z#02]", None),
        ("x [rotator:nightly@2025-01-16T03:00Z#1000]", None),
        ("x [rotator:nightly@2025-01-16T03:00Z#]", None),
        ("x [rotator:nightly#2]", None),
        ("[rotator:nightly@2025-02-30T03:00Z]", None),
        ("[rotator:nightly@2025-01-16T24:00Z]", None),
        ("[rotator:night ly]", None),
        ("[rotator:]", None),
        ("Pre-update backup", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_marker(description: str | None, expected: Marker | None) -> None:
    """Only a well-formed marker at the very end counts."""
    assert parse_marker(description) == expected


names = st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True)
slots = st.datetimes(
    min_value=datetime(1970, 1, 1),  # noqa: DTZ001
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@settings(max_examples=200)
@given(names, st.none() | slots, st.text(max_size=30), st.integers(1, MAX_ATTEMPT))
def test_markers_round_trip(name: str, slot: datetime | None, text: str, attempt: int) -> None:
    """What make_marker writes at the end of any description, parse_marker reads back."""
    attempt = 1 if slot is None else attempt
    description = mark_description(text, name, slot, attempt)
    expected_slot = None if slot is None else slot.replace(microsecond=0)
    assert parse_marker(description) == Marker(name, expected_slot, attempt)
    assert str(Marker(name, expected_slot, attempt)) == make_marker(name, slot, attempt)
    assert mentions_marker(description)


@pytest.mark.parametrize(
    "slot",
    [
        "0000-01-01T00:00Z",
        "\u0660\u0660\u0660\u0660-01-01T00:00Z",  # ARABIC-INDIC DIGIT ZERO: int() reads the year 0
        "\u0662\u0660\u0662\u0665-01-01T00:00Z#\u0662",
        "2025-\u0660\u0661-01T00:00Z",
    ],
)
def test_the_fast_ownership_test_takes_no_year_zero_and_no_other_digits(slot: str) -> None:
    """A year 0000 in any digits is no marker (parse_marker refuses it); other digits go to parse_marker."""
    description = f"[rotator:n@{slot}]"
    assert owned_marker_pattern("n").search(description) is None
    assert owned_marker_pattern("n").search("[rotator:n@2025-01-01T00:00Z#2]") is not None


@settings(max_examples=200)
@given(names, st.text(max_size=60))
def test_the_fast_ownership_test_never_claims_more_than_parse_marker(name: str, text: str) -> None:
    """owned_marker_pattern matches only what parse_marker reads as the policy's marker."""
    for description in (text, f"{text}[rotator:{name}]", f"{text}[rotator:{name}@{text[:17]}Z]"):
        if owned_marker_pattern(name).search(description):
            parsed = parse_marker(description)
            assert parsed is not None
            assert parsed.policy == name


def test_mentions_marker_is_case_insensitive() -> None:
    """Anything that looks like rotator's handwriting is never "unmanaged"."""
    assert mentions_marker("copy of [ROTATOR:nightly] backup")
    assert not mentions_marker("Pre-update backup")
    assert not mentions_marker(None)


def test_mark_description() -> None:
    """The marker is appended after a space, or alone."""
    assert mark_description("Nightly", "n", SLOT) == "Nightly [rotator:n@2025-01-16T03:00Z]"
    assert mark_description("", "n") == "[rotator:n]"
