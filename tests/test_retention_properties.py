"""Properties of the retention engine that must hold for every listing, policy and zone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_retention import SERVER, backup

from rotator import retention
from rotator.models import Backup
from rotator.retention import RULE_NAMES, Policy, Retention, ServerPlan, plan_server

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # half-hour DST
    "America/Sao_Paulo",  # DST used to start at midnight
    "Antarctica/Troll",  # two-hour DST: a repeated local hour pair
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Pacific/Chatham",  # +13:45 -> +12:45 at 03:45: falls back into the middle of hour 02
    "Antarctica/Casey",  # 2010-03-05 02:00 +11 -> 03-04 23:00 +08: fell back across midnight
]
# Places where buckets are interesting: DST changes, ISO week 53, new years, a skipped day.
HOT_SPOTS = [
    datetime(2024, 3, 31, 1, tzinfo=UTC),
    datetime(2024, 10, 27, 1, tzinfo=UTC),
    datetime(2024, 11, 3, 6, tzinfo=UTC),
    datetime(2020, 12, 31, 12, tzinfo=UTC),
    datetime(2026, 12, 31, 12, tzinfo=UTC),
    datetime(2011, 12, 30, 10, tzinfo=UTC),
    datetime(2018, 11, 4, 3, tzinfo=UTC),
    datetime(2024, 4, 6, 14, tzinfo=UTC),
    datetime(2010, 3, 4, 15, tzinfo=UTC),
]
NOW = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)

near_hot_spot = st.builds(
    lambda spot, minutes: spot + timedelta(minutes=minutes),
    st.sampled_from(HOT_SPOTS),
    st.integers(-3 * 24 * 60, 3 * 24 * 60),
)
anywhere = st.builds(
    lambda minutes: datetime(2019, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
    st.integers(0, 7 * 366 * 24 * 60),
)
recent = st.builds(lambda minutes: NOW - timedelta(minutes=minutes), st.integers(-60, 20 * 24 * 60))
created_times = st.one_of(near_hot_spot, anywhere, recent)

KINDS: dict[str, dict[str, Any]] = {
    "owned": {},
    "owned-no-slot": {"description": "Ad-hoc [rotator:nightly]"},
    "automatic": {"backup_type": "automatic", "description": "Automatic daily backup"},
    "in_progress": {"status": "in_progress"},
    "failed": {"status": "failed"},
    "other-policy": {"policy": "weekly"},
    "unmarked": {"description": "Pre-update backup"},
}


@st.composite
def listings(draw: st.DrawFn, kinds: Iterable[str] = tuple(KINDS), max_size: int = 25) -> list[Backup]:
    times = draw(st.lists(created_times, max_size=max_size))
    # Some same-second ties on purpose.
    times += draw(st.lists(st.sampled_from(times), max_size=3)) if times else []
    ids = draw(st.permutations(range(1, len(times) + 1)))
    kind_names = sorted(kinds)
    return [
        backup(backup_id, created, **KINDS[draw(st.sampled_from(kind_names))])
        for backup_id, created in zip(ids, times, strict=True)
    ]


@st.composite
def retentions(draw: st.DrawFn) -> Retention:
    counts = {name: draw(st.integers(0, 4)) for name in RULE_NAMES}
    if not any(counts.values()):
        counts[draw(st.sampled_from(RULE_NAMES))] = draw(st.integers(1, 4))
    return Retention(**counts, min_keep=draw(st.integers(1, 3)))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    return Policy(
        name="nightly",
        servers=(SERVER,),
        timezone=draw(st.sampled_from(ZONES)),
        prune_unmanaged=draw(st.booleans()),
        retention=draw(retentions()),
    )


def ids(decisions: Iterable[Any]) -> set[int]:
    return {decision.backup.id for decision in decisions}


def is_candidate(item: Backup, policy: Policy) -> bool:
    if item.backup_type != "manual" or item.status != "completed":
        return False
    description = item.description or ""
    if description.endswith(("[rotator:nightly]", "Z]")) and "[rotator:nightly" in description:
        return True
    return policy.prune_unmanaged and "[rotator:" not in description


def newest_first(items: Iterable[Backup]) -> list[Backup]:
    return sorted(items, key=lambda item: (item.created_at, item.id), reverse=True)


def plan(items: list[Backup], policy: Policy, now: datetime = NOW) -> ServerPlan:
    return plan_server(items, policy, now, server_id=SERVER)


@FAST
@given(listings(), policies())
def test_only_candidates_are_deleted_and_the_plan_partitions_the_listing(
    items: list[Backup], policy: Policy
) -> None:
    """keep and delete partition the candidates (plus superseded failed attempts); the rest is untouched."""
    result = plan(items, policy)
    candidates = {item.id for item in items if is_candidate(item, policy)}
    newest = max((item.sort_key for item in items if item.id in candidates), default=None)
    superseded = {
        item.id
        for item in items
        if item.status == "failed"
        and "[rotator:nightly" in (item.description or "")
        and newest is not None
        and item.sort_key < newest
    }
    assert ids(result.keep) | {b.id for b in result.deleted} == candidates
    assert ids(result.delete) == {b.id for b in result.deleted} | superseded
    assert all(d.reasons == ("failed, superseded",) for d in result.delete if d.backup.id in superseded)
    assert not ids(result.keep) & ids(result.delete)
    assert ids(result.untouched) == {item.id for item in items} - candidates - superseded
    assert len(result.keep) + len(result.delete) + len(result.untouched) == len(items)
    assert all(decision.reasons for decision in result.keep)
    assert all(len(decision.reasons) == 1 for decision in result.untouched)


@FAST
@given(listings(), policies(), st.data())
def test_a_view_missing_backups_never_deletes_more_than_the_complete_view(
    items: list[Backup], policy: Policy, data: st.DataObject
) -> None:
    """Deletions planned on a view that skipped some backups are a subset of the complete view's.

    A page-number listing can skip a backup; this is why a plan on such a view
    is still safe (its danger is the other way: a view listing backups that are gone).
    """
    complete = plan(items, policy)
    view = data.draw(st.lists(st.sampled_from(items), unique_by=lambda b: b.id)) if items else []
    partial = plan(view, policy)
    assert ids(partial.delete) <= ids(complete.delete)
    kept_in_complete = ids(complete.keep) & {b.id for b in view}
    assert kept_in_complete <= ids(partial.keep)


@FAST
@given(listings(kinds=["owned"]), st.integers(1, 10), st.sampled_from(ZONES))
def test_keep_last_keeps_exactly_the_n_newest(items: list[Backup], count: int, zone: str) -> None:
    """``keep_last: N`` alone keeps the N newest candidates, no more, no fewer."""
    policy = Policy("nightly", Retention(keep_last=count), servers=(SERVER,), timezone=zone)
    result = plan(items, policy)
    assert [d.backup.id for d in result.keep] == [item.id for item in newest_first(items)[:count]]


@FAST
@given(listings(), policies(), st.sampled_from([*RULE_NAMES, "min_keep"]), st.integers(1, 5))
def test_raising_a_count_never_deletes_more(
    items: list[Backup], policy: Policy, rule: str, more: int
) -> None:
    """More retention keeps a superset: the deletes can only shrink."""
    richer = replace(
        policy, retention=replace(policy.retention, **{rule: getattr(policy.retention, rule) + more})
    )
    assert ids(plan(items, richer).delete) <= ids(plan(items, policy).delete)


@FAST
@given(listings(), policies())
def test_the_newest_min_keep_are_always_kept(items: list[Backup], policy: Policy) -> None:
    """Whatever the rules, the ``min_keep`` newest candidates survive."""
    result = plan(items, policy)
    candidates = newest_first(item for item in items if is_candidate(item, policy))
    assert {item.id for item in candidates[: policy.retention.min_keep]} <= ids(result.keep)
    if candidates:
        assert result.keep


@FAST
@given(listings(), policies())
def test_replanning_the_kept_set_deletes_nothing(items: list[Backup], policy: Policy) -> None:
    """A plan is a fixed point: what it keeps, a second run at the same ``now`` keeps too."""
    first = plan(items, policy)
    survivors = [d.backup for d in (*first.keep, *first.untouched)]
    assert plan(survivors, policy).delete == ()


@FAST
@given(listings(), policies(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(items: list[Backup], policy: Policy, rng: Any) -> None:
    """Shuffling the listing gives the very same plan."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    assert plan(shuffled, policy) == plan(items, policy)


@FAST
@given(listings(kinds=["owned"], max_size=40), policies(), recent)
def test_the_engine_matches_a_straightforward_reading_of_the_rules(
    items: list[Backup], policy: Policy, now: datetime
) -> None:
    """The bucket-jumping engine keeps what restic's one-candidate-at-a-time loop keeps."""
    rules = {name: getattr(policy.retention, name) for name in RULE_NAMES}
    expected = reference_keep(items, rules, ZoneInfo(policy.timezone), now, policy.retention.min_keep)
    assert ids(plan(items, policy, now).keep) == expected


def reference_keep(
    candidates: Iterable[Backup], rules: dict[str, int], zone: ZoneInfo, now: datetime, min_keep: int
) -> set[int]:
    """The ids the specification's words keep, read literally: one bucket per candidate."""
    floors = {
        "keep_hourly": lambda t: (t.year, t.month, t.day, t.hour),
        "keep_daily": lambda t: (t.year, t.month, t.day),
        "keep_weekly": lambda t: tuple(t.isocalendar())[:2],
        "keep_monthly": lambda t: (t.year, t.month),
        "keep_yearly": lambda t: (t.year,),
    }
    kept: set[int] = set()
    last: dict[str, object] = dict.fromkeys(floors)
    left = {name: rules[name] for name in floors}
    for position, candidate in enumerate(newest_first(candidates)):
        if position < max(rules["keep_last"], min_keep):
            kept.add(candidate.id)
        if rules["keep_days"] and candidate.created_at >= now - timedelta(days=rules["keep_days"]):
            kept.add(candidate.id)
        local = candidate.created_at.astimezone(zone)
        for name, floor in floors.items():
            if left[name] > 0 and floor(local) != last[name]:
                last[name] = floor(local)
                left[name] -= 1
                kept.add(candidate.id)
    return kept


@pytest.mark.parametrize("rule", ["keep_hourly", "keep_daily"])
@pytest.mark.parametrize("zone", ZONES)
def test_dense_hours_across_zone_changes(zone: str, rule: str) -> None:
    """Every 10 minutes for three days around each hot spot: the engine agrees with the reference.

    Every zone and rule, not a sample of them: a zone's oddity (Chatham's fall-back into the
    middle of an hour) shows only in that zone.
    """
    for spot in HOT_SPOTS:
        items = [backup(n + 1, spot + timedelta(minutes=10 * n - 36 * 60)) for n in range(3 * 24 * 6)]
        for count in (3, 10, 60):
            policy = Policy("nightly", Retention(**{rule: count}), servers=(SERVER,), timezone=zone)
            rules = {name: getattr(policy.retention, name) for name in RULE_NAMES}
            assert ids(plan(items, policy).keep) == reference_keep(items, rules, ZoneInfo(zone), NOW, 1)


def test_a_full_reason_cache_changes_no_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reasons' spelling is cached across a fleet and forgotten whole when full: with room for one
    reason only, every plan (keeps, deletes and their reasons) is the same as with room for all."""
    items = [backup(n + 1, NOW - timedelta(hours=5 * n)) for n in range(60)]
    policy = Policy("nightly", Retention(keep_daily=5, keep_weekly=3, keep_monthly=2), servers=(SERVER,))
    retention._REASONS.clear()
    roomy = plan(items, policy)
    retention._REASONS.clear()
    monkeypatch.setattr(retention, "_MAX_REASONS", 1)
    assert plan(items, policy) == roomy
    assert len(retention._REASONS) == 1
