"""The safety rails between a retention plan and the deletes a run sends (pure, no mocks)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.markers import make_marker
from rotator.planner import PLANNED_ID, Rail, nothing_to_prune, prune_actions, run_actions
from rotator.retention import Policy, ServerPlan, plan_server
from rotator.runner import JobSpec
from rotator.slots import Action
from tests.test_retention import NOW, SERVER, backup, policy, timeline

DAYS = [f"2025-01-{day:02d}T03:00" for day in range(1, 16)]


def plan_for(keep_last: int) -> tuple[ServerPlan, Policy]:
    rules = policy(keep_last=keep_last)
    return plan_server(timeline(*DAYS), rules, NOW), rules


def test_deletes_go_oldest_first() -> None:
    """The plan lists deletes newest first; the rails send the oldest first."""
    plan, rules = plan_for(5)
    actions = prune_actions(plan, rules, max_deletes=100, dry_run=False)
    ids = [d.backup.id for d in actions.delete]
    assert ids == list(range(1, 11))
    assert actions.blocked == ()


def test_the_cap_deletes_the_oldest_and_blocks_the_rest() -> None:
    """max_deletes_per_run: 3 of 10 deletes are sent, the 7 newer ones reported."""
    plan, rules = plan_for(5)
    actions = prune_actions(plan, rules, max_deletes=3, dry_run=False)
    assert [d.backup.id for d in actions.delete] == [1, 2, 3]
    assert [(b.decision.backup.id, b.rail) for b in actions.blocked] == [
        (i, Rail.MAX_DELETES) for i in range(4, 11)
    ]


def test_dry_run_sends_nothing() -> None:
    """Every delete of a dry run is reported, none sent."""
    plan, rules = plan_for(5)
    actions = prune_actions(plan, rules, max_deletes=100, dry_run=True)
    assert actions.delete == ()
    assert {b.rail for b in actions.blocked} == {Rail.DRY_RUN}
    assert len(actions.blocked) == 10


def test_a_non_candidate_in_the_plan_is_refused() -> None:
    """Belt and braces: were a plan ever to list an automatic backup for deletion, it is blocked."""
    plan, rules = plan_for(5)
    automatic = backup(99, "2024-12-01T03:00", backup_type="automatic")
    other_policy = backup(98, "2024-12-02T03:00", policy="weekly")
    forged = replace(plan, deleted=(*plan.deleted, automatic, other_policy))
    actions = prune_actions(forged, rules, max_deletes=100, dry_run=False)
    assert {b.decision.backup.id for b in actions.blocked if b.rail is Rail.NOT_CANDIDATE} == {98, 99}
    assert 98 not in {d.backup.id for d in actions.delete}


def test_the_new_backup_is_never_deleted() -> None:
    """The backup this run made is refused even if a plan said delete."""
    plan, rules = plan_for(5)
    actions = prune_actions(plan, rules, max_deletes=100, dry_run=False, new_backup_id=1)
    assert [(b.decision.backup.id, b.rail) for b in actions.blocked] == [(1, Rail.NEW_BACKUP)]


def test_nothing_to_prune_blocks_every_delete_with_the_reason() -> None:
    """A failed new backup or a partial listing turns every delete into a report, with that rail."""
    plan, _ = plan_for(5)
    for rail in (Rail.BACKUP_NOT_COMPLETED, Rail.PARTIAL_LISTING):
        actions = nothing_to_prune(plan, rail)
        assert actions.server_id == SERVER
        assert actions.delete == ()
        assert [(b.decision, b.rail) for b in actions.blocked] == [(d, rail) for d in plan.delete]
        assert [b.decision.backup.id for b in actions.blocked] == list(range(10, 0, -1))


def test_the_actions_name_their_server() -> None:
    """The deletes to send are for the plan's server, and say so."""
    plan, rules = plan_for(5)
    assert prune_actions(plan, rules, max_deletes=100, dry_run=False).server_id == SERVER
    assert prune_actions(plan, rules, max_deletes=0, dry_run=True).server_id == SERVER


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 15), st.integers(0, 20), st.booleans())
def test_rails_partition_the_plans_deletes(keep_last: int, cap: int, dry: bool) -> None:
    """Sent and blocked together are exactly the plan's deletes; never more than the cap is sent."""
    if keep_last == 0:
        keep_last = 1
    plan, rules = plan_for(keep_last)
    actions = prune_actions(plan, rules, max_deletes=cap, dry_run=dry)
    sent = [d.backup.id for d in actions.delete]
    blocked = [b.decision.backup.id for b in actions.blocked]
    assert sorted(sent + blocked) == sorted(d.backup.id for d in plan.delete)
    assert len(sent) <= (0 if dry else cap)
    if sent:
        assert max(sent) < min(blocked, default=max(sent) + 1)  # the oldest go first


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 15), st.integers(0, 20), st.booleans())
def test_a_dry_run_would_delete_what_a_real_run_deletes(keep_last: int, cap: int, create: bool) -> None:
    """run_actions: a dry run's would-deletes are the real run's deletes, the cap's rest held back in both;
    the backup a run would create is kept, never deleted, and never sent."""
    job = JobSpec(policy(keep_last=keep_last), create=create, max_deletes_per_run=cap)
    slot = datetime(2025, 1, 16, 3, tzinfo=UTC)
    real = run_actions(timeline(*DAYS), job, slot, NOW, server_id=SERVER)
    dry = run_actions(timeline(*DAYS), job, slot, NOW, server_id=SERVER, dry_run=True)
    assert [d.backup.id for d in dry.deletes] == [d.backup.id for d in real.prune.delete]
    assert dry.prune.delete == ()
    assert [b.decision.backup.id for b in dry.held_back] == [b.decision.backup.id for b in real.held_back]
    assert {b.rail for b in real.held_back} <= {Rail.MAX_DELETES}
    assert len(real.prune.delete) <= cap
    assert PLANNED_ID not in {d.backup.id for d in real.prune.delete}
    if create:
        assert real.would_create is not None
        assert real.slot_action is Action.CREATE
        # the would-be backup takes one of keep_last's places: one more old backup goes than without it
        assert len(real.deletes) + len(real.held_back) == max(len(DAYS) + 1 - keep_last, 0)
    else:
        assert (real.would_create, real.slot_action, real.slot) == (None, None, None)
        assert len(real.deletes) + len(real.held_back) == max(len(DAYS) - keep_last, 0)


def test_the_runners_own_backup_is_protected_and_nothing_is_made_up() -> None:
    """Given the runner's new backup (listed completed), run_actions adds no would-be backup and
    holds that one back should the plan want it deleted (an API clock that stamped it as the oldest)."""
    slot = datetime(2025, 1, 16, 3, tzinfo=UTC)
    job = JobSpec(policy(keep_last=2), max_deletes_per_run=100)
    old = timeline(*DAYS)
    new = backup(99, "2024-12-01T03:00", description=f"n {make_marker(job.name, slot)}")
    actions = run_actions([*old, new], job, slot, NOW, server_id=SERVER, new_backup=new)
    assert actions.would_create is None
    assert actions.new_backup == new
    assert [(b.decision.backup.id, b.rail) for b in actions.held_back] == [(99, Rail.NEW_BACKUP)]
    assert all(d.backup.id != PLANNED_ID for d in actions.plan.keep)
