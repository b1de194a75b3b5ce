"""The fault campaign's invariant checker, on hand-made event logs: each violation found, clean logs pass.

The logs are written through a :class:`SandboxState` on a frozen clock, so they
have exactly the sandbox's shape; nothing here runs rotator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.chaos.invariants import PolicySpec, Report, Schedule, check, marker_of, seconds_of
from rotator.sandbox import Clock, SandboxState
from rotator.sandbox.fleet import empty
from rotator.sandbox.state import BackupRecord

DAY0 = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)  # the slot of today's run
DAILY = PolicySpec.from_config(
    {
        "name": "daily",
        "servers": [1, 2],
        "schedule": {"cron": "0 3 * * *"},
        "retention": {"keep_last": 3, "min_keep": 2},
    }
)
PULSE = PolicySpec.from_config(
    {"name": "pulse", "servers": [1, 2], "schedule": {"interval": "10s"}, "retention": {"keep_last": 5}},
    run_window=30,
)


def mark(policy: str, slot: datetime) -> str:
    """A description ending with ``policy``'s marker for ``slot`` (seconds only when it has some)."""
    utc = slot.astimezone(UTC)
    return f"{policy} [rotator:{policy}@{utc:%Y-%m-%dT%H:%M}{utc:%S}Z]".replace(
        f"{utc:%M}{utc:%S}Z", f"{utc:%M}:{utc:%S}Z" if utc.second else f"{utc:%M}Z"
    )


class World:
    """A sandbox state on a frozen clock, and the log it writes."""

    def __init__(self, start: datetime, servers: int = 2) -> None:
        self.clock = Clock(start)
        self.state = SandboxState(empty(servers=servers), clock=self.clock, create_seconds=30)

    def at(self, moment: datetime) -> None:
        self.clock.set(moment)

    def owned(self, server: int, policy: str, slot: datetime, **kwargs: Any) -> BackupRecord:
        kwargs.setdefault("created_at", slot + timedelta(seconds=20))
        return self.state.add_backup(server, description=mark(policy, slot), **kwargs)

    def create(self, server: int, policy: str, slot: datetime, *, fail: bool = False) -> BackupRecord:
        return self.state.create_backup(server, mark(policy, slot), fail_rate=1.0 if fail else 0.0)

    def delete(self, record: BackupRecord) -> None:
        self.state.delete_backup(record.id)

    def note(self, **note: Any) -> None:
        self.state.note(note)

    def events(self) -> list[dict[str, Any]]:
        return [event.to_json() for event in self.state.events()]

    def check(self, *policies: PolicySpec) -> Report:
        return check(self.events(), list(policies) or [DAILY])


PROTECTED: dict[int, dict[str, BackupRecord]] = {}


def history(world: World) -> dict[int, list[BackupRecord]]:
    """Four days of daily backups per server, non-candidates older still; the snapshot note."""
    old = DAY0 - timedelta(days=10)
    owned: dict[int, list[BackupRecord]] = {}
    for server in (1, 2):
        add = world.state.add_backup
        PROTECTED[server] = {
            "automatic": add(server, backup_type="automatic", created_at=old, description="Automatic"),
            "hand-made": add(server, created_at=old, description="made by hand"),
            "another policy's": add(server, created_at=old, description=mark("other", old)),
            "a look-alike's": add(server, created_at=old, description=mark("daily2", old)),
            "in progress": world.owned(server, "daily", old - timedelta(days=1), status="in_progress"),
            "failed": world.owned(server, "daily", old - timedelta(days=2), status="failed"),
        }
        owned[server] = [world.owned(server, "daily", DAY0 - timedelta(days=k)) for k in (4, 3, 2, 1)]
    world.state.snapshot()
    return owned


def todays_run(world: World, *, servers: tuple[int, ...] = (1, 2)) -> dict[int, BackupRecord]:
    """Create today's backups at 03:00:05 and let them complete (at 03:00:35)."""
    world.at(DAY0 + timedelta(seconds=5))
    made = {server: world.create(server, "daily", DAY0) for server in servers}
    world.at(DAY0 + timedelta(minutes=1))
    return made


def kinds(report: Report) -> set[str]:
    return {violation.kind for violation in report.violations}


def seqs(report: Report, kind: str) -> set[int]:
    return {int(e["seq"]) for v in report.violations if v.kind == kind for e in v.events}


# -- a clean log ----------------------------------------------------------------------------


def test_a_correct_run_passes() -> None:
    """Create, wait, delete the two oldest per server (keep_last 3 of 5): no violation."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)
    for server in (1, 2):
        world.delete(owned[server][0])
        world.delete(owned[server][1])
    report = world.check()
    assert report.ok, "\n".join(map(str, report.violations))
    assert report.checked["deletes planned"] == 4
    assert report.checked["deleted"] == 4


def test_a_run_after_a_restart_adopting_its_backup_passes() -> None:
    """The same slot run twice (a crash between): one backup, then the prune of the second run."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world, servers=(1,))
    world.note(what="killed", process=1)
    world.at(DAY0 + timedelta(minutes=5))
    world.delete(owned[1][0])
    assert world.check().ok


# -- each violation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "victim", ["automatic", "hand-made", "another policy's", "a look-alike's", "in progress", "failed"]
)
def test_deleting_a_non_candidate_is_caught(victim: str) -> None:
    """Automatic, hand-made, another policy's, a look-alike marker, unfinished, failed: never deletable."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    todays_run(world)
    world.delete(PROTECTED[1][victim])
    report = world.check()
    assert kinds(report) == {"not-a-candidate"}, report.violations
    deleted = world.state.events("deleted")[0]
    assert deleted.seq in seqs(report, "not-a-candidate")


def test_deleting_what_the_rules_keep_is_caught() -> None:
    """The newest old backup is one of the 3 newest: kept by keep_last."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)
    world.delete(owned[1][-1])
    report = world.check()
    assert kinds(report) == {"kept-by-rules"}
    (violation,) = report.violations
    assert "last" in violation.message
    assert [e["kind"] for e in violation.events] == ["snapshot", "deleted"]


@pytest.mark.parametrize(("seconds", "kept"), [(45, True), (60, False)])
def test_keep_days_is_judged_at_the_moment_of_the_delete(seconds: int, kept: bool) -> None:
    """keep_days counts back from the delete's time: kept until it ages out, deletable after."""
    policy = PolicySpec.from_config(
        {"name": "daily", "servers": [1], "schedule": {"cron": "0 3 * * *"}, "retention": {"keep_days": 2}}
    )
    world = World(DAY0 - timedelta(hours=1))
    two_days = world.owned(
        1, "daily", DAY0 - timedelta(days=2), created_at=DAY0 - timedelta(days=2, seconds=-50)
    )
    world.owned(1, "daily", DAY0 - timedelta(days=1))
    world.state.snapshot()
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0)
    world.at(DAY0 + timedelta(seconds=seconds))  # completed at 03:00:35; the backup is 2 days old at 03:00:50
    world.delete(two_days)
    assert kinds(world.check(policy)) == ({"kept-by-rules"} if kept else set())


def test_falling_below_min_keep_is_caught() -> None:
    """Once a server had min_keep completed owned backups, a delete leaving fewer is caught."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)
    for record in owned[2]:
        world.delete(record)
    report = world.check()
    assert "below-min-keep" in kinds(report)
    below = [v for v in report.violations if v.kind == "below-min-keep"]
    assert len(below) == 1
    assert "1 completed owned backups left" in below[0].message


def test_min_keep_counts_only_after_it_was_reached() -> None:
    """A server that never had min_keep backups is not 'below' it; the delete is judged by the rules."""
    policy = PolicySpec.from_config(
        {
            "name": "daily",
            "servers": [3],
            "schedule": {"cron": "0 3 * * *"},
            "retention": {"keep_last": 1, "min_keep": 3},
        }
    )
    world = World(DAY0 - timedelta(hours=1), servers=3)
    world.owned(3, "daily", DAY0 - timedelta(days=1))
    world.state.snapshot()
    todays_run(world, servers=(3,))
    world.delete(world.state.backups(server_id=3)[0])  # 2 of min_keep 3: kept, but never "fell below"
    assert kinds(world.check(policy)) == {"kept-by-rules"}


def test_two_backups_for_one_slot_are_caught() -> None:
    """A second create for (policy, server, slot): a duplicate, whatever happened to the first."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    made = todays_run(world, servers=(1,))
    world.create(1, "daily", DAY0)
    report = world.check()
    assert kinds(report) == {"duplicate-slot"}
    (violation,) = report.violations
    assert made[1].id in {e["backup"]["id"] for e in violation.events}
    assert len(violation.events) == 2


def test_a_seeded_backup_and_a_create_for_one_slot_are_a_duplicate() -> None:
    """The snapshot counts: a create for a slot that already had a backup is caught too."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(2, "daily", DAY0 - timedelta(days=1))
    assert kinds(world.check()) == {"duplicate-slot"}


@pytest.mark.parametrize("fail", [False, True], ids=["in-progress", "failed"])
def test_a_delete_before_the_new_backup_completed_is_caught(fail: bool) -> None:
    """The run's new backup still in progress, or failed: no delete on that server."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0, fail=fail)
    if fail:
        world.at(DAY0 + timedelta(minutes=1))
    world.delete(owned[1][0])
    report = world.check()
    assert kinds(report) == {"delete-before-completed"}
    (violation,) = report.violations
    shown = [e["kind"] for e in violation.events]
    assert shown == (["created", "failed", "deleted"] if fail else ["created", "deleted"])


def test_a_delete_in_a_run_that_made_no_backup_is_caught() -> None:
    """Today's slot has no backup on the server (its create failed): its prune must not happen."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world, servers=(2,))
    world.delete(owned[1][0])
    report = world.check()
    assert kinds(report) == {"delete-without-new-backup"}
    assert "slot 2025-01-16T03:00:00Z or later" in report.violations[0].message


def test_a_daemon_run_may_delete_within_its_run_window() -> None:
    """An interval policy's run deletes some seconds after its slot (within run_window): fine."""
    world = World(DAY0 - timedelta(seconds=1))
    old = [world.owned(1, "pulse", DAY0 - timedelta(seconds=10 * k)) for k in range(6, 0, -1)]
    world.state.snapshot()
    world.at(DAY0 + timedelta(seconds=1))
    world.create(1, "pulse", DAY0)
    world.at(DAY0 + timedelta(seconds=35))  # three slots later, still within the 30 s window
    world.delete(old[0])
    assert world.check(PULSE).ok
    world.at(DAY0 + timedelta(seconds=75))  # past it: a run deleting now is for a later slot
    world.delete(old[1])
    assert kinds(world.check(PULSE)) == {"delete-without-new-backup"}


# -- catch-up ---------------------------------------------------------------------------------


def finished(world: World, process: int, slot: datetime) -> None:
    """The campaign's note that the daemon logged the end of a run of ``slot``."""
    world.at(slot + timedelta(seconds=2))
    world.note(what="said", process=process, event="run.finished", policy="pulse", slot=slot.isoformat())


def daemon_world() -> tuple[World, datetime]:
    """pulse every 10 s; servers 1 and 2 last backed up at slot -30 s; the daemon down since then."""
    world = World(DAY0 - timedelta(seconds=40))
    for server in (1, 2):
        for k in (6, 5, 4, 3):
            world.owned(
                server,
                "pulse",
                DAY0 - timedelta(seconds=10 * k),
                created_at=DAY0 - timedelta(seconds=10 * k - 1),
            )
    world.state.snapshot()
    world.note(what="killed", process=1)
    latest = DAY0  # the daemon comes back at 03:00:02, after the slots -20 s, -10 s and 0 passed
    world.at(latest + timedelta(seconds=2))
    world.note(what="started", process=2, mode="daemon", policies=["pulse"])
    world.at(latest + timedelta(seconds=2, milliseconds=700))
    world.note(what="ready", process=2, mode="daemon", policies=["pulse"])
    return world, latest


def test_a_caught_up_slot_passes() -> None:
    """Both servers get the missed latest slot once after the restart, then the next slot as usual."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=3))
    for server in (1, 2):
        world.create(server, "pulse", latest)
    world.at(latest + timedelta(seconds=11))
    for server in (1, 2):
        world.create(server, "pulse", latest + timedelta(seconds=10))
    finished(world, 2, latest + timedelta(seconds=10))
    world.at(latest + timedelta(seconds=15))
    world.note(what="stopped", process=2, code=0)
    report = world.check(PULSE)
    assert report.ok, report.violations
    assert report.checked["catch-ups owed"] == 2


def test_a_slot_missed_while_down_and_not_caught_up_is_caught() -> None:
    """Up past the next slot, and server 2 never got the missed slot: caught, with the notes."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=3))
    world.create(1, "pulse", latest)
    world.at(latest + timedelta(seconds=11))
    for server in (1, 2):
        world.create(server, "pulse", latest + timedelta(seconds=10))
    finished(world, 2, latest + timedelta(seconds=10))
    world.at(latest + timedelta(seconds=14))
    world.note(what="killed", process=2)
    report = world.check(PULSE)
    assert kinds(report) == {"catch-up-missing"}
    (violation,) = report.violations
    assert "server 2" in violation.message
    assert [e["note"]["what"] for e in violation.events] == ["ready", "killed"]


def test_a_daemon_killed_before_a_later_run_ended_is_judged_at_its_next_start() -> None:
    """Killed past the next slot but before any run ended: not judged then; the next start owes it."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=11))
    world.create(1, "pulse", latest + timedelta(seconds=10))  # the next slot's run, cut short
    world.note(what="killed", process=2)
    assert world.check(PULSE).ok
    world.at(latest + timedelta(seconds=13))
    world.note(what="ready", process=3, mode="daemon", policies=["pulse"])
    world.at(latest + timedelta(seconds=21))
    world.create(1, "pulse", latest + timedelta(seconds=20))
    world.create(2, "pulse", latest + timedelta(seconds=20))
    finished(world, 3, latest + timedelta(seconds=20))
    world.note(what="stopped", process=3, code=0)
    report = world.check(PULSE)
    assert kinds(report) == {"catch-up-missing"}  # server 2 missed slot +10 and never got it
    assert "server 2" in report.violations[0].message
    assert report.checked["catch-ups cut short by a kill"] == 2


def test_a_start_too_near_a_slot_boundary_is_not_judged() -> None:
    """Ready 0.1 s before a slot: the daemon may have seen either slot as the latest."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=9, milliseconds=900))
    world.note(what="ready", process=3, mode="daemon", policies=["pulse"])
    world.at(latest + timedelta(seconds=30))
    world.note(what="stopped", process=3, code=0)
    report = world.check(PULSE)
    assert report.checked["catch-up starts too near a slot to judge"] == 1


@pytest.mark.parametrize(("claimed_after", "ok"), [(12.5, True), (5, False)])
def test_an_overtaken_catch_up_is_accepted_only_when_plausible(claimed_after: float, ok: bool) -> None:
    """rotator's word that a newer slot overtook the catch-up counts only after that slot's time."""
    world, latest = daemon_world()

    def claim() -> None:
        world.at(latest + timedelta(seconds=claimed_after))
        world.note(what="said", process=2, event="catch_up.superseded", policy="pulse", slot="x")

    if claimed_after < 10:
        claim()  # before the next slot came: no slot could have overtaken the latest one yet
    world.at(latest + timedelta(seconds=10, milliseconds=100))
    for server in (1, 2):
        world.create(server, "pulse", latest + timedelta(seconds=10))
    finished(world, 2, latest + timedelta(seconds=10))
    if claimed_after >= 10:
        claim()
    world.at(latest + timedelta(seconds=14))
    world.note(what="stopped", process=2, code=0)
    report = world.check(PULSE)
    assert report.ok is ok, report.violations
    if ok:
        assert report.checked["catch-ups overtaken by the next slot"] == 2
    else:
        assert kinds(report) == {"catch-up-missing"}


def test_replaying_an_older_slot_after_a_restart_is_caught() -> None:
    """Missed runs are coalesced into the latest slot, never replayed one by one."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=3))
    for server in (1, 2):
        world.create(server, "pulse", latest)
    world.create(1, "pulse", latest - timedelta(seconds=10))
    world.at(latest + timedelta(seconds=5))
    world.note(what="stopped", process=2, code=0)
    assert kinds(world.check(PULSE)) == {"catch-up-stale-slot"}


def test_only_servers_still_missing_the_slot_are_owed_at_the_next_start() -> None:
    """Killed after server 1's catch-up create: the next start owes only server 2 (1's is adopted)."""
    world = World(DAY0 - timedelta(seconds=5))
    world.state.snapshot()
    world.at(DAY0 + timedelta(seconds=1))
    world.note(what="ready", process=1, mode="daemon", policies=["pulse"])
    world.create(1, "pulse", DAY0)
    world.at(DAY0 + timedelta(seconds=3))
    world.note(what="killed", process=1)
    world.at(DAY0 + timedelta(seconds=4))
    world.note(what="ready", process=2, mode="daemon", policies=["pulse"])
    world.at(DAY0 + timedelta(seconds=12))
    world.create(1, "pulse", DAY0 + timedelta(seconds=10))
    world.create(2, "pulse", DAY0 + timedelta(seconds=10))
    world.note(what="said", process=2, event="run.finished", policy="pulse", slot="2025-01-16T03:00:10Z")
    world.at(DAY0 + timedelta(seconds=15))
    world.note(what="stopped", process=2, code=0)
    report = world.check(PULSE)
    assert kinds(report) == {"catch-up-missing"}
    assert "server 2" in report.violations[0].message  # server 1 had its slot; server 2 never did


# -- the pieces -------------------------------------------------------------------------------


def test_markers_are_read_independently() -> None:
    assert marker_of("x [rotator:daily@2025-01-16T03:00Z]") == ("daily", DAY0)
    assert marker_of("x [rotator:p@2025-01-16T03:00:05Z]") == ("p", DAY0 + timedelta(seconds=5))
    assert marker_of("[rotator:daily]") == ("daily", None)
    for not_a_marker in ("[rotator:daily@2025-13-01T03:00Z]", "[Rotator:daily]", "[rotator:daily] x", None):
        assert marker_of(not_a_marker) is None


def test_schedules_give_the_latest_and_the_next_slot() -> None:
    daily = Schedule(cron="0 3 * * *", timezone="Europe/Berlin")
    assert daily.latest(DAY0) == datetime(2025, 1, 16, 2, 0, tzinfo=UTC)
    assert daily.after(datetime(2025, 1, 16, 2, 0, tzinfo=UTC)) == datetime(2025, 1, 17, 2, 0, tzinfo=UTC)
    pulse = Schedule(interval=7)
    slot = pulse.latest(DAY0)
    assert slot is not None
    assert (slot.timestamp() - datetime(2000, 1, 1, tzinfo=UTC).timestamp()) % 7 == 0
    assert slot <= DAY0 < pulse.after(slot)
    assert seconds_of("1h30m") == 5400
    assert seconds_of(2.5) == 2.5
    with pytest.raises(ValueError, match="not a duration"):
        seconds_of("soon")


def test_a_ready_note_is_placed_by_the_time_rotator_logged_it() -> None:
    """A driver that noted 'ready' late (just before a slot) is judged by the daemon's own log time."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=9, milliseconds=950))  # noted late, 50 ms before the next slot
    logged = (latest + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    world.note(what="ready", process=3, mode="daemon", policies=["pulse"], logged_at=logged)
    world.at(latest + timedelta(seconds=25))
    world.note(what="stopped", process=3, code=0)
    report = world.check(PULSE)
    assert report.checked["catch-up starts judged"] == 2
    assert report.checked["catch-up starts too near a slot to judge"] == 0


def test_a_violation_prints_with_its_events() -> None:
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    todays_run(world)
    world.delete(PROTECTED[1]["automatic"])
    (violation,) = world.check().violations
    lines = str(violation).splitlines()
    assert lines[0].startswith("not-a-candidate: backup")
    assert "(automatic, completed, 'Automatic') was deleted, but no configured policy owns it" in lines[0]
    assert lines[-1].lstrip().startswith(f"#{world.state.events('deleted')[0].seq} ")
