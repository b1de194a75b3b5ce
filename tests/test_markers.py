"""Ownership markers: written and read back, and nothing else mistaken for one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.markers import (
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


def test_make_marker_refuses_naive_slots() -> None:
    """A slot without a zone is ambiguous."""
    with pytest.raises(ValueError, match="aware"):
        make_marker("nightly", datetime(2025, 1, 16))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Nightly backup [rotator:nightly@2025-01-16T03:00Z]", Marker("nightly", SLOT)),
        ("[rotator:nightly]", Marker("nightly")),
        ("x [rotator:a]  [rotator:b]", Marker("b")),
        ("[rotator:nightly] copied", None),
        ("[rotator:nightly] ", None),
        ("[rotator:nightly@2025-01-16T03:00]", None),
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
@given(names, st.none() | slots, st.text(max_size=30))
def test_markers_round_trip(name: str, slot: datetime | None, text: str) -> None:
    """What make_marker writes at the end of any description, parse_marker reads back."""
    description = mark_description(text, name, slot)
    expected_slot = None if slot is None else slot.replace(microsecond=0)
    assert parse_marker(description) == Marker(name, expected_slot)
    assert str(Marker(name, expected_slot)) == make_marker(name, slot)
    assert mentions_marker(description)


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
