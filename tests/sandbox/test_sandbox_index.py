"""The sandbox's sorted id index and the paged listings read through it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.sandbox import Clock, SandboxState, fleet
from rotator.sandbox.index import CHUNK, SortedIds

NOW = datetime(2025, 1, 16, 15, 45, tzinfo=UTC)

operations = st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3 * CHUNK)), max_size=400)


@settings(max_examples=60, deadline=None)
@given(initial=st.sets(st.integers(min_value=0, max_value=3 * CHUNK), max_size=2 * CHUNK), steps=operations)
def test_sorted_ids_behave_like_a_sorted_set(initial: set[int], steps: list[tuple[bool, int]]) -> None:
    """Adds and discards in any order leave the same ids, order and windows as a sorted set."""
    index = SortedIds(initial)
    model = set(initial)
    for add, value in steps:
        if add:
            index.add(value)
            model.add(value)
        else:
            index.discard(value)
            model.discard(value)
    ordered = sorted(model)
    assert list(index) == ordered
    assert len(index) == len(ordered)
    for start, stop in [
        (0, 1),
        (0, 100),
        (CHUNK - 3, CHUNK + 3),
        (len(ordered) - 5, len(ordered) + 5),
        (7, 3),
    ]:
        assert index.window(start, stop) == ordered[max(0, start) : max(0, stop)]
    assert all(value in index for value in ordered[:50])
    assert -1 not in index
    assert "1" not in index


def test_new_ids_beyond_the_last_split_chunks_as_they_grow() -> None:
    """Ever larger ids (new backups) keep every chunk within its bound and every window right."""
    index = SortedIds()
    for value in range(5 * CHUNK):
        index.add(value)
    assert index.window(2 * CHUNK - 1, 2 * CHUNK + 2) == [2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1]
    index.discard(2 * CHUNK)
    assert index.window(2 * CHUNK - 1, 2 * CHUNK + 1) == [2 * CHUNK - 1, 2 * CHUNK + 1]


def _state(lag: float = 0.0) -> tuple[SandboxState, Clock]:
    clock = Clock(NOW)
    state = SandboxState(
        fleet.uniform(servers=40, backups_per_server=30, now=NOW), clock=clock, create_seconds=5
    )
    state.configure(api_clock_offset=0, listing_lag=lag)
    return state, clock


@pytest.mark.parametrize("lag", [0.0, 20.0], ids=["no-lag", "lagging"])
def test_a_listing_read_by_windows_is_the_whole_listing_sliced(lag: float) -> None:
    """Through creates, completions, deletes and a lag, each window is the listing's slice by id."""
    state, clock = _state(lag)
    for step in range(30):
        if step % 3 == 0:
            state.create_backup(1 + step % 40, f"new {step}")
        elif step % 3 == 1:
            state.delete_backup(state.backups(server_id=1 + step % 40)[0].id)
        else:
            state.add_backup(2, backup_type="automatic")
        clock.advance(4)
        for backup_type in (None, "manual", "automatic"):
            whole = state.listing(backup_type=backup_type)
            listed = state.listed(backup_type=backup_type)
            assert listed.count == len(whole)
            for start in (0, 100, len(whole) - 7):
                assert listed.window(start, start + 100) == whole[max(0, start) : start + 100]
        mine = state.listed(server_id=3, backup_type="manual")
        assert mine.window(0, 100) == state.listing(server_id=3, backup_type="manual")


def test_an_account_page_reads_only_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of the account listing never walks every id (a probe makes a full walk fail)."""
    state, _ = _state()
    state.create_backup(1, "new")
    expected = state.listing(backup_type="manual")[1100:1200]

    def no_full_walk(self: SortedIds) -> None:
        raise AssertionError("the whole index was walked for one page")

    monkeypatch.setattr(SortedIds, "__iter__", no_full_walk)
    listed = state.listed(backup_type="manual")
    assert listed.count == 40 * 30 + 1
    assert listed.window(1100, 1200) == expected
    assert len(state.listed().window(0, 100)) == 100
