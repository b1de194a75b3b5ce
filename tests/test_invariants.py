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


def mark(policy: str, slot: datetime, attempt: int = 1) -> str:
    """A description ending with ``policy``'s marker for ``slot`` (seconds only when it has some; ``#N``
    for attempt N >= 2)."""
    utc = slot.astimezone(UTC)
    text = f"{policy} [rotator:{policy}@{utc:%Y-%m-%dT%H:%M}{utc:%S}Z]".replace(
        f"{utc:%M}{utc:%S}Z", f"{utc:%M}:{utc:%S}Z" if utc.second else f"{utc:%M}Z"
    )
    return text if attempt == 1 else f"{text[:-1]}#{attempt}]"


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

    def create(
        self, server: int, policy: str, slot: datetime, *, fail: bool = False, attempt: int = 1
    ) -> BackupRecord:
        return self.state.create_backup(server, mark(policy, slot, attempt), fail_rate=1.0 if fail else 0.0)

    def delete(self, record: BackupRecord) -> None:
        self.state.delete_backup(record.id)

    def third_party_delete(self, record: BackupRecord) -> None:
        self.state.delete_backup(record.id, by="third_party")

    def listed(self, server: int | None = None, backup_type: str | None = "manual", pages: int = 1) -> None:
        """A client read a listing (of the account, or of ``server``) now: the sandbox's ``listed`` event,
        written as the API writes it, after the listing settled the state."""
        count = len(self.state.listing(server_id=server, backup_type=backup_type))
        listing = {"server_id": server, "backup_type": backup_type, "count": count, "pages": pages}
        self.state.log_listing(listing)

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
    "victim", ["automatic", "hand-made", "another policy's", "a look-alike's", "in progress"]
)
def test_deleting_a_non_candidate_is_caught(victim: str) -> None:
    """Automatic, hand-made, another policy's, a look-alike marker, unfinished: never deletable."""
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


def test_min_keep_is_judged_even_before_it_was_reached() -> None:
    """A server that never had min_keep backups: a delete leaving fewer is below it (and rules keep it)."""
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
    world.delete(world.state.backups(server_id=3)[0])  # 1 left of min_keep 3
    assert kinds(world.check(policy)) == {"kept-by-rules", "below-min-keep"}


def test_two_backups_for_one_slot_are_caught() -> None:
    """A second create for (policy, server, slot): a duplicate, whatever happened to the first."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    made = todays_run(world, servers=(1,))
    world.at(DAY0 + timedelta(minutes=5))  # past the quiet period: a duplicate, not a quick second POST
    world.create(1, "daily", DAY0)
    report = world.check()
    assert kinds(report) == {"duplicate-slot"}
    (violation,) = report.violations
    assert made[1].id in {e["backup"]["id"] for e in violation.events}
    assert len(violation.events) == 2
    assert "attempt 1" in violation.message


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
        world.note(
            what="said", process=2, event="catch_up.superseded", policy="pulse", slot=latest.isoformat()
        )

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


def said(world: World, event: str, process: int = 2, **extra: Any) -> None:
    world.note(what="said", process=process, event=event, policy="pulse", **extra)


@pytest.mark.parametrize(
    ("word", "judged"),
    [
        pytest.param(None, False, id="no-word"),
        pytest.param("catch_up.started", True, id="started"),
        pytest.param("catch_up.superseded", True, id="superseded-too-soon"),
    ],
)
def test_a_catch_up_is_judged_once_rotator_decided_it(word: str | None, judged: bool) -> None:
    """A later slot's run ended, but the catch-up (which lists before it takes its turn) may still have been
    retrying its listing: with decision_grace 20 s and no word from rotator, not judged yet."""
    world, latest = daemon_world()
    if word is not None:
        world.at(latest + timedelta(seconds=3))
        said(world, word, slot=latest.isoformat())
    world.at(latest + timedelta(seconds=10, milliseconds=100))
    for server in (1, 2):
        world.create(server, "pulse", latest + timedelta(seconds=10))
    finished(world, 2, latest + timedelta(seconds=10))
    world.at(latest + timedelta(seconds=14))
    world.note(what="killed", process=2)
    report = check(world.events(), [PULSE], decision_grace=20)
    assert kinds(report) == ({"catch-up-missing"} if judged else set()), report.violations
    assert report.checked["catch-ups undecided when the daemon went down"] == (0 if judged else 2)


def test_a_session_up_past_the_grace_is_judged_without_a_word() -> None:
    """rotator says nothing when it finds nothing due: a session up 25 s (grace 20 s) is judged anyway."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=10, milliseconds=100))
    for server in (1, 2):
        world.create(server, "pulse", latest + timedelta(seconds=10))
    finished(world, 2, latest + timedelta(seconds=10))
    world.at(latest + timedelta(seconds=28))
    world.note(what="killed", process=2)
    report = check(world.events(), [PULSE], decision_grace=20)
    assert kinds(report) == {"catch-up-missing"}


@pytest.mark.parametrize("newer", [True, False], ids=["next-slot-made", "nothing-made"])
def test_a_catch_up_skipped_on_a_failed_listing_needs_the_next_slot(newer: bool) -> None:
    """rotator could not list at the start and skipped its catch-up: fine only if the next slot covered."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=3))
    said(world, "catch_up.listing_failed")
    world.at(latest + timedelta(seconds=10, milliseconds=100))
    for server in (1, 2) if newer else ():
        world.create(server, "pulse", latest + timedelta(seconds=10))
    finished(world, 2, latest + timedelta(seconds=10))
    world.at(latest + timedelta(seconds=14))
    world.note(what="killed", process=2)
    report = check(world.events(), [PULSE], decision_grace=20)
    assert kinds(report) == (set() if newer else {"catch-up-missing"}), report.violations
    if newer:
        assert report.checked["catch-ups skipped on a failed listing, the next slot made"] == 2


@pytest.mark.parametrize(
    ("reason", "accepted"), [("never listed", True), ("unmarked new backup", False), (None, False)]
)
def test_a_catch_up_whose_create_stayed_unknown_is_not_missing(reason: str | None, accepted: bool) -> None:
    """The catch-up's create met an API failure before the API acted (no backup) and was never listed:
    rotator's final word 'unknown, never listed' for that server accounts for it; nothing else does."""
    world, latest = daemon_world()
    world.at(latest + timedelta(seconds=3))
    said(world, "catch_up.started", slot=latest.isoformat())
    world.create(1, "pulse", latest)
    if reason is not None:
        said(world, "backup.create_unknown", slot=latest.isoformat(), server_id=2, reason=reason)
    world.at(latest + timedelta(seconds=10, milliseconds=100))
    for server in (1, 2):
        world.create(server, "pulse", latest + timedelta(seconds=10))
    finished(world, 2, latest + timedelta(seconds=10))
    world.at(latest + timedelta(seconds=14))
    world.note(what="killed", process=2)
    report = check(world.events(), [PULSE], decision_grace=20)
    assert kinds(report) == (set() if accepted else {"catch-up-missing"}), report.violations
    if accepted:
        assert report.checked["catch-ups whose create's outcome stayed unknown"] == 1


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


# -- attempts, failed attempts and third parties ------------------------------------------------


def started(world: World, process: int, now: datetime, **extra: Any) -> None:
    """The campaign's note that a run-once process for ``now`` started (on every server of the policies)."""
    world.note(what="started", process=process, mode="run-once", now=now.isoformat(), **extra)


def test_a_retried_slot_prunes_after_its_second_attempt_completed() -> None:
    """Attempt 1 failed, attempt 2 completed: the run's new backup is attempt 2; its deletes are fine."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0, fail=True)
    world.at(DAY0 + timedelta(minutes=1))
    world.create(1, "daily", DAY0, attempt=2)
    world.at(DAY0 + timedelta(minutes=2))
    world.delete(owned[1][0])
    world.delete(owned[1][1])
    report = world.check()
    assert report.ok, report.violations


def test_a_delete_while_the_retry_is_still_in_progress_is_caught() -> None:
    """Attempt 1 failed, attempt 2 in progress: no attempt of the slot completed, so no delete yet."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0, fail=True)
    world.at(DAY0 + timedelta(minutes=1))
    world.create(1, "daily", DAY0, attempt=2)
    world.at(DAY0 + timedelta(minutes=1, seconds=10))
    world.delete(owned[1][0])
    report = world.check()
    assert kinds(report) == {"delete-before-completed"}
    assert "attempts [1, 2]" in report.violations[0].message


def test_a_failed_attempt_is_deleted_once_a_later_backup_completed() -> None:
    """An owned failed attempt with a newer completed owned backup: 'failed, superseded', allowed."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    todays_run(world)
    world.delete(PROTECTED[1]["failed"])
    report = world.check()
    assert report.ok, report.violations
    assert report.checked["failed attempts deleted as superseded"] == 1


def test_a_failed_attempt_with_no_later_completed_backup_is_caught() -> None:
    """The newest owned backup of the server is a failed one: nothing supersedes it, it stays."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    todays_run(world, servers=(1,))
    world.at(DAY0 + timedelta(minutes=2))
    started(world, 7, DAY0 + timedelta(minutes=2))  # a run of today's slot, which completed
    failed = world.create(1, "daily", DAY0 + timedelta(days=1), fail=True)  # newer than every candidate
    world.at(DAY0 + timedelta(minutes=3))
    world.delete(failed)
    report = world.check()
    assert kinds(report) == {"not-a-candidate"}, report.violations
    assert "no later completed backup" in report.violations[0].message


def test_two_attempts_of_a_slot_are_not_a_duplicate_but_two_completed_are() -> None:
    """Attempts 1 (failed) and 2 (completed) of a slot are fine; a third attempt that completes too is not."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0, fail=True)
    world.at(DAY0 + timedelta(minutes=1))
    world.create(1, "daily", DAY0, attempt=2)
    world.at(DAY0 + timedelta(minutes=2))
    assert world.check().ok
    world.create(1, "daily", DAY0, attempt=3)
    world.at(DAY0 + timedelta(minutes=3))
    report = world.check()
    assert kinds(report) == {"duplicate-slot"}
    assert "two completed backups" in report.violations[0].message
    assert [e["kind"] for e in report.violations[0].events] == ["created", "completed"]


def test_a_slot_made_again_after_a_third_party_deleted_it_is_no_duplicate() -> None:
    """Someone else deleted the slot's backup: making it again is not rotator's duplicate."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    made = todays_run(world, servers=(1,))
    world.third_party_delete(made[1])
    world.at(DAY0 + timedelta(minutes=5))
    world.create(1, "daily", DAY0)
    world.at(DAY0 + timedelta(minutes=6))
    report = world.check()
    assert report.ok, report.violations
    assert report.checked["third-party deletes"] == 1


@pytest.mark.parametrize(
    ("gap", "found"),
    [
        pytest.param(timedelta(seconds=30), {"duplicate-slot", "second-post-in-quiet-period"}, id="30s"),
        # whole seconds: a gap of 119 s in the log is < 120 s for sure; one of 120 s may be 120.5 s
        pytest.param(timedelta(seconds=119), {"duplicate-slot", "second-post-in-quiet-period"}, id="119s"),
        pytest.param(timedelta(seconds=120), {"duplicate-slot"}, id="120s-not-provably-within"),
        pytest.param(timedelta(minutes=3), {"duplicate-slot"}, id="3min"),
    ],
)
def test_a_second_post_of_an_attempt_within_the_quiet_period_is_caught(
    gap: timedelta, found: set[str]
) -> None:
    """The same attempt created twice: a duplicate; within the quiet period (2 min) a second POST too."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    world.at(DAY0 + timedelta(seconds=5))
    first = world.create(1, "daily", DAY0)
    world.at(DAY0 + timedelta(seconds=5) + gap)
    world.create(1, "daily", DAY0)
    report = world.check()
    assert kinds(report) == found
    if "second-post-in-quiet-period" in found:
        (second,) = [v for v in report.violations if v.kind == "second-post-in-quiet-period"]
        assert second.events[0]["backup"]["id"] == first.id
        assert "quiet period 120s" in second.message


def test_the_next_attempt_soon_after_a_failure_is_no_second_post() -> None:
    """Attempt 2 seconds after attempt 1 failed: another attempt, not the same one sent again."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0, fail=True)
    world.at(DAY0 + timedelta(seconds=40))
    world.create(1, "daily", DAY0, attempt=2)
    assert world.check().ok


def test_third_party_deletes_are_not_rotators_and_rotator_is_judged_as_if_they_had_not_happened() -> None:
    """A third party deletes an automatic backup and the newest owned one (kept by keep_last 3); rotator's
    delete of the oldest, planned before, is still in the delete set with the third party's ghost."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    made = todays_run(world)
    world.third_party_delete(PROTECTED[1]["automatic"])
    world.third_party_delete(made[1])  # rotator's new backup: the newest completed manual one
    world.delete(owned[1][0])
    world.delete(owned[1][1])
    report = world.check()
    assert report.ok, report.violations
    assert report.checked["third-party deletes"] == 2


def test_rotator_must_not_delete_below_min_keep_after_a_third_party_lowered_the_count() -> None:
    """The third party left 2 of min_keep 2 (not a violation); rotator deleting one more is."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    made = todays_run(world, servers=(1,))
    for record in (made[1], owned[1][3], owned[1][2]):
        world.third_party_delete(record)
    assert world.check().ok
    world.delete(owned[1][1])
    report = world.check()
    assert "below-min-keep" in kinds(report)
    (below,) = [v for v in report.violations if v.kind == "below-min-keep"]
    assert "1 completed owned backups left" in below.message


# -- stale views -------------------------------------------------------------------------------


def test_a_prune_on_a_recent_listing_that_showed_the_new_backup_passes() -> None:
    """A listing 5 s after the new backup completed, the first DELETE 20 s later; a later one of the
    same batch may come later still."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)  # completed at 03:00:35; now 03:01:00
    world.at(DAY0 + timedelta(seconds=40))
    world.listed()  # the account's listing of manual backups
    world.at(DAY0 + timedelta(seconds=60))
    world.delete(owned[1][0])
    world.at(DAY0 + timedelta(seconds=200))  # the second DELETE of the batch: retried for a while
    world.delete(owned[1][1])
    report = world.check()
    assert report.ok, report.violations
    assert report.checked["delete batches judged for their view"] == 1


@pytest.mark.parametrize(
    ("listed_at", "first_delete", "why"),
    [
        pytest.param(40, 40 + 63, "after the latest listing", id="too-old"),
        pytest.param(20, 50, "before the run's new backup", id="before-completion"),
    ],
)
def test_a_prune_on_a_stale_listing_is_caught(listed_at: int, first_delete: int, why: str) -> None:
    """max_view_age 60 s (+2 s): a listing 63 s before the first DELETE is too old; one that began before
    the new backup completed cannot have shown it completed."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0)  # completes at 03:00:35
    world.at(DAY0 + timedelta(seconds=listed_at))
    world.listed(server=1)
    world.at(DAY0 + timedelta(seconds=first_delete))
    world.delete(owned[1][0])
    report = world.check()
    assert kinds(report) == {"stale-view"}
    (violation,) = report.violations
    assert why in violation.message
    assert violation.events[0]["kind"] == "listed"


def test_a_listing_of_several_pages_may_show_the_completion_on_a_later_page() -> None:
    """Only the first page of a listing is logged: the new backup (highest id, last page) may have been
    read completed on a later page, so a listing of several pages is not judged for the completion."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    world.at(DAY0 + timedelta(seconds=5))
    world.create(1, "daily", DAY0)  # completes at 03:00:35
    world.at(DAY0 + timedelta(seconds=34))
    world.listed(pages=3)
    world.at(DAY0 + timedelta(seconds=36))
    world.delete(owned[1][0])
    report = world.check()
    assert report.ok, report.violations


def test_a_listing_of_another_server_or_of_automatic_backups_does_not_cover_the_server() -> None:
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)
    world.at(DAY0 + timedelta(seconds=50))
    world.listed(server=1)
    world.at(DAY0 + timedelta(seconds=55))
    world.listed(server=2)
    world.listed(backup_type="automatic")
    world.at(DAY0 + timedelta(minutes=3))
    world.delete(owned[1][0])  # server 1's latest listing is 130 s old
    assert kinds(world.check()) == {"stale-view"}


def test_a_new_batch_and_a_moved_clock_are_judged_afresh() -> None:
    """A run's end ends its batch: the next run's first DELETE is judged; a moved clock forgets listings."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)
    world.at(DAY0 + timedelta(seconds=40))
    world.listed()
    world.at(DAY0 + timedelta(seconds=50))
    world.delete(owned[1][0])
    world.note(what="exited", process=1, code=0)  # a process the log did not start: every batch ends
    world.at(DAY0 + timedelta(minutes=5))
    world.delete(owned[2][0])  # another server: its own batch, 260 s after the listing
    report = world.check()
    assert kinds(report) == {"stale-view"}
    assert "server 2" in report.violations[0].message
    world.note(what="clock", now="x")
    world.delete(owned[1][1])  # a new batch (the exit ended server 1's), no listing since the clock moved
    report = world.check()
    assert [v.kind for v in report.violations] == ["stale-view", "stale-view"]
    assert "since the clock" in report.violations[1].message


def test_a_completion_before_the_clock_stepped_back_is_seen_by_a_later_listing() -> None:
    """The clock stepped back after the new backup completed: a listing now is after it in the log,
    though its instant is earlier (the log's order decides, not the instants)."""
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)
    world.note(what="clock", now="x")
    world.at(DAY0 - timedelta(minutes=30))
    world.listed()
    world.delete(owned[1][0])
    report = world.check()
    assert report.ok, report.violations


def test_a_log_without_listings_is_not_judged_for_stale_views() -> None:
    world = World(DAY0 - timedelta(hours=1))
    owned = history(world)
    todays_run(world)
    world.at(DAY0 + timedelta(hours=1))
    world.delete(owned[1][0])
    report = world.check()
    assert report.ok
    assert report.checked["delete batches judged for their view"] == 0


# -- retries ----------------------------------------------------------------------------------


def retried_run(world: World, failures: int, *, judged: bool = True, code: int = 1) -> None:
    """A judged run-once of today's slot on server 1 whose first ``failures`` attempts failed."""
    world.at(DAY0 + timedelta(seconds=2))
    started(world, 4, DAY0 + timedelta(seconds=2), policies=["daily"], servers=[1], retries_judged=judged)
    for attempt in range(1, failures + 1):
        world.at(DAY0 + timedelta(minutes=attempt))
        world.create(1, "daily", DAY0, fail=True, attempt=attempt)
    world.at(DAY0 + timedelta(minutes=10))
    world.note(what="exited", process=4, code=code)


@pytest.mark.parametrize("failures", [1, 2])
def test_a_slot_given_up_before_its_retries_were_used_is_caught(failures: int) -> None:
    """retries 2: a slot whose 1 or 2 attempts all failed in a run that ended normally was not retried."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    retried_run(world, failures)
    report = world.check()
    assert kinds(report) == {"retry-missing"}
    assert f"only {failures} of 3 were made" in report.violations[0].message


def test_a_slot_whose_every_attempt_failed_or_one_completed_passes() -> None:
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    retried_run(world, 3)
    report = world.check()
    assert report.ok, report.violations
    assert report.checked["slots given up after every attempt"] == 1


@pytest.mark.parametrize(("judged", "code"), [(False, 1), (True, 75)], ids=["not-judged", "abandoned"])
def test_retries_are_judged_only_where_a_run_had_every_chance(judged: bool, code: int) -> None:
    """A run under faults (API errors may stop a retry) or cut short is not judged for its retries."""
    world = World(DAY0 - timedelta(hours=1))
    history(world)
    retried_run(world, 1, judged=judged, code=code)
    assert world.check().ok


# -- catch-up by markers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "status", "owed"),
    [
        pytest.param(1, "failed", True, id="failed-with-attempts-left"),
        pytest.param(3, "failed", False, id="every-attempt-failed"),
        pytest.param(1, "in_progress", False, id="in-progress"),
    ],
)
def test_a_slot_is_due_at_a_start_by_its_markers(attempts: int, status: str, owed: bool) -> None:
    """Due: no attempt in progress or completed, and attempts left; no timestamp is compared."""
    world = World(DAY0 - timedelta(seconds=5))
    for attempt in range(1, attempts + 1):
        world.state.add_backup(1, description=mark("pulse", DAY0, attempt), status=status)
    world.state.snapshot()
    world.at(DAY0 + timedelta(seconds=2))
    world.note(what="ready", process=1, mode="daemon", policies=["pulse"])
    world.at(DAY0 + timedelta(seconds=11))
    world.create(2, "pulse", DAY0)  # server 2 is caught up
    world.create(1, "pulse", DAY0 + timedelta(seconds=10))
    world.create(2, "pulse", DAY0 + timedelta(seconds=10))
    finished(world, 1, DAY0 + timedelta(seconds=10))
    world.note(what="stopped", process=1, code=0)
    report = world.check(PULSE)
    assert kinds(report) == ({"catch-up-missing"} if owed else set()), report.violations
    assert report.checked["catch-ups owed"] == (2 if owed else 1)


def test_a_backup_made_long_after_the_slot_still_counts_as_its_backup() -> None:
    """The API's clock days behind: the slot's backup has an old created_at, but its marker says L."""
    world = World(DAY0 - timedelta(seconds=5))
    for server in (1, 2):
        world.state.add_backup(server, description=mark("pulse", DAY0), created_at=DAY0 - timedelta(days=2))
    world.state.snapshot()
    world.at(DAY0 + timedelta(seconds=2))
    world.note(what="ready", process=1, mode="daemon", policies=["pulse"])
    world.at(DAY0 + timedelta(seconds=11))
    for server in (1, 2):
        world.create(server, "pulse", DAY0 + timedelta(seconds=10))
    finished(world, 1, DAY0 + timedelta(seconds=10))
    world.note(what="stopped", process=1, code=0)
    report = world.check(PULSE)
    assert report.ok, report.violations
    assert report.checked["catch-ups owed"] == 0


# -- the pieces -------------------------------------------------------------------------------


def test_markers_are_read_independently() -> None:
    assert marker_of("x [rotator:daily@2025-01-16T03:00Z]") == ("daily", DAY0, 1)
    assert marker_of("x [rotator:p@2025-01-16T03:00:05Z]") == ("p", DAY0 + timedelta(seconds=5), 1)
    assert marker_of("x [rotator:daily@2025-01-16T03:00Z#2]") == ("daily", DAY0, 2)
    assert marker_of("x [rotator:p@2025-01-16T03:00:05Z#13]") == ("p", DAY0 + timedelta(seconds=5), 13)
    assert marker_of("[rotator:daily]") == ("daily", None, 1)
    assert mark("daily", DAY0, 3) == "daily [rotator:daily@2025-01-16T03:00Z#3]"
    for not_a_marker in (
        "[rotator:daily@2025-13-01T03:00Z]",
        "[Rotator:daily]",
        "[rotator:daily] x",
        "[rotator:daily@2025-01-16T03:00Z#1]",  # attempt 1 is spelled without '#'
        "[rotator:daily@2025-01-16T03:00Z#0]",
        "[rotator:daily#2]",  # only a slot has attempts
        None,
    ):
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
