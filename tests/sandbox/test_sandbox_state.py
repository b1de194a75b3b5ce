"""The sandbox's pure parts: clock, fleets, lazy state transitions, token bucket."""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from rotator.sandbox import Clock, SandboxState, fleet, format_instant, parse_instant
from rotator.sandbox.ratelimit import TokenBucket
from rotator.sandbox.testing import ManualMonotonic

NOW = datetime(2025, 1, 16, 15, 45, tzinfo=UTC)
MARKER = re.compile(r"\[rotator:(?P<owner>[^@\]]+)@(?P<slot>\d{4}-\d\d-\d\dT\d\d:\d\dZ)\]$")


def marker_of(description: str | None) -> re.Match[str]:
    """The ownership marker at the end of ``description`` (which must have one)."""
    match = MARKER.search(description or "")
    assert match is not None, description
    return match


# -- clock ------------------------------------------------------------------------------


def test_a_frozen_clock_moves_only_when_told() -> None:
    """``set`` and ``advance`` move a frozen clock; nothing else does."""
    clock = Clock(NOW)
    assert clock.frozen
    assert clock.now() == NOW
    assert clock.advance(90) == NOW + timedelta(seconds=90)
    assert clock.set(NOW + timedelta(days=2)) == NOW + timedelta(days=2)
    assert clock.now() == NOW + timedelta(days=2)


def test_an_unfrozen_clock_follows_its_wall_plus_offset() -> None:
    """Unfrozen, now is wall + offset; set and advance shift the offset; freeze stops it."""
    wall = [NOW]
    clock = Clock(wall=lambda: wall[0])
    assert not clock.frozen
    clock.advance(timedelta(hours=1))
    wall[0] += timedelta(minutes=5)
    assert clock.now() == NOW + timedelta(hours=1, minutes=5)
    clock.set(NOW)
    wall[0] += timedelta(minutes=1)
    assert clock.now() == NOW + timedelta(minutes=1)
    frozen_at = clock.freeze()
    wall[0] += timedelta(hours=3)
    assert clock.now() == frozen_at
    clock.freeze(False)
    wall[0] += timedelta(seconds=10)
    assert clock.now() == frozen_at + timedelta(seconds=10)


def test_the_clock_refuses_naive_datetimes() -> None:
    """Naive instants are refused (DTZ: no naive datetimes inside)."""
    with pytest.raises(ValueError, match="aware"):
        Clock(datetime(2025, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="time zone"):
        parse_instant("2025-01-01T00:00:00")


def test_instants_are_written_as_the_provider_writes_them() -> None:
    """Whole seconds, UTC, ``Z``; any offset is read."""
    assert format_instant(NOW + timedelta(microseconds=500)) == "2025-01-16T15:45:00Z"
    assert parse_instant("2025-01-16T17:45:00+02:00") == NOW
    assert parse_instant("2025-01-16T15:45:00Z") == NOW


# -- fleets -------------------------------------------------------------------------------


def test_the_demo_fleet_looks_like_the_docs() -> None:
    """Three or four named servers, recent automatic backups only, ad-hoc and nightly manual ones."""
    demo = fleet.demo(now=NOW, seed=3)
    assert 3 <= len(demo.servers) <= 4
    assert all(server.name for server in demo.servers)
    automatic = [b for b in demo.backups if b.backup_type == "automatic"]
    assert automatic
    assert all(b.expires_at == b.created_at + timedelta(days=30) for b in automatic)
    assert all(b.expires_at is not None and b.expires_at > NOW for b in automatic)
    assert any(b.created_at < NOW - timedelta(days=29) for b in automatic)
    descriptions = {b.description for b in demo.backups if b.backup_type == "manual"}
    assert "Pre-update backup" in descriptions
    nightly = [b for b in demo.backups if b.description and MARKER.search(b.description)]
    assert len(nightly) >= 40
    for backup in nightly:
        match = MARKER.search(backup.description or "")
        assert match is not None
        assert match["owner"] == "nightly"
        slot = parse_instant(match["slot"])
        assert slot.hour == 2
        assert slot.minute == 0
        assert slot <= backup.created_at < slot + timedelta(minutes=5)
    assert any(b.status == "failed" for b in nightly)
    assert all(b.created_at <= NOW for b in demo.backups)


def test_the_demo_fleet_is_seeded() -> None:
    """The same seed gives the same ids; another seed shuffles them differently."""

    def ids(seed: int) -> list[tuple[int, datetime]]:
        return [(b.id, b.created_at) for b in fleet.demo(now=NOW, seed=seed).backups]

    assert ids(1) == ids(1)
    assert ids(1) != ids(2)


def test_demo_ids_are_not_a_clock() -> None:
    """Sorted by id, the history is not sorted by time."""
    backups = sorted(fleet.demo(now=NOW).backups, key=lambda b: b.id)
    created = [b.created_at for b in backups]
    assert created != sorted(created)


def test_the_uniform_fleet_has_one_marked_backup_a_day_per_server() -> None:
    """N servers x K completed manual backups, marked for the owner with consecutive daily slots."""
    uniform = fleet.uniform(servers=5, backups_per_server=7, owner="hourly-ish", now=NOW)
    assert len(uniform.servers) == 5
    assert len(uniform.backups) == 35
    assert len({b.id for b in uniform.backups}) == 35
    assert uniform.next_id == 36
    for server in uniform.servers:
        mine = [b for b in uniform.backups if b.server_id == server.id]
        slots = sorted(parse_instant(marker_of(b.description)["slot"]) for b in mine)
        assert [later - earlier for earlier, later in itertools.pairwise(slots)] == [timedelta(days=1)] * 6
        assert all(b.status == "completed" and b.backup_type == "manual" for b in mine)
        assert all(marker_of(b.description)["owner"] == "hourly-ish" for b in mine)
        assert all(b.created_at < NOW for b in mine)


def test_a_thousand_server_fleet_builds_fast() -> None:
    """1,000 servers x 30 backups build and load in well under a second."""
    started = time.perf_counter()
    uniform = fleet.uniform(servers=1000, backups_per_server=30, now=NOW)
    state = SandboxState(uniform, clock=Clock(NOW))
    assert len(state.backups(server_id=500)) == 30
    assert time.perf_counter() - started < 2.0


# -- state --------------------------------------------------------------------------------


def test_fail_rate_one_makes_every_create_fail() -> None:
    """A certain failure ends ``failed`` without a size, and the events say so."""
    clock = Clock(NOW)
    state = SandboxState(fleet.empty(servers=1), clock=clock, create_seconds=60)
    record = state.create_backup(1, "x", fail_rate=1.0)
    clock.advance(60)
    assert state.backup(record.id).status == "failed"
    assert state.backup(record.id).size_mb is None
    assert [event.kind for event in state.events()] == ["created", "failed"]
    assert state.events()[1].at == NOW + timedelta(seconds=60)


def test_events_keep_the_snapshot_of_a_deleted_backup() -> None:
    """A deletion's event holds the backup as it was."""
    clock = Clock(NOW)
    state = SandboxState(fleet.empty(servers=1), clock=clock, create_seconds=10)
    record = state.create_backup(1, "keep me in the log")
    clock.advance(10)
    state.delete_backup(record.id)
    deleted = state.events("deleted")[0]
    assert deleted.backup["description"] == "keep me in the log"
    assert deleted.backup["status"] == "completed"
    assert deleted.to_json()["at"] == "2025-01-16T15:45:10Z"


def test_a_backup_deleted_while_in_progress_never_completes() -> None:
    """No completion event for a backup that no longer exists."""
    clock = Clock(NOW)
    state = SandboxState(fleet.empty(servers=1), clock=clock, create_seconds=10)
    record = state.create_backup(1)
    state.delete_backup(record.id)
    clock.advance(3600)
    assert [event.kind for event in state.events()] == ["created", "deleted"]


def test_added_backups_are_in_place_without_events() -> None:
    """``add_backup`` seeds a backup for a test; an automatic one gets its 30-day expiry."""
    clock = Clock(NOW)
    state = SandboxState(fleet.empty(servers=1), clock=clock)
    record = state.add_backup(1, backup_type="automatic", created_at=NOW - timedelta(days=1))
    assert record.expires_at == NOW + timedelta(days=29)
    assert record.size_mb is not None
    assert state.events() == []


# -- token bucket ---------------------------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    """``burst`` at once, then one more per ``1/rate`` seconds of the injected monotonic clock."""
    monotonic = ManualMonotonic()
    bucket = TokenBucket(2.0, 3, monotonic=monotonic)
    decisions = [bucket.take() for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].retry_after == 1
    assert decisions[3].headers()["Retry-After"] == "1"
    assert decisions[3].reset == 2
    monotonic.advance(0.5)
    assert bucket.take().allowed
    assert not bucket.take().allowed


def test_a_slow_bucket_asks_for_a_longer_wait() -> None:
    """At 0.2 requests per second an empty bucket asks for 5 whole seconds."""
    bucket = TokenBucket(0.2, 1, monotonic=ManualMonotonic())
    assert bucket.take().allowed
    refused = bucket.take()
    assert not refused.allowed
    assert refused.retry_after == 5
