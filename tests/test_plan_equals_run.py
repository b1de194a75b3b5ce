"""plan = run: the deletes ``rotator plan`` shows are the deletes the next real run sends.

Differential, end to end against the sandbox: the plan is built as ``rotator
plan`` builds it (each server's manual listing through the client, then
:func:`rotator.planview.build_plans`), then a real run of the same job sends
its DELETEs to the same sandbox, and the two sets must be equal, server by
server, across the cap, the backup the run creates (or adopts, waits for, or
retries), calendar rules in a zone with DST, failed attempts and backups that
are not the policy's. Hypothesis draws the configurations and histories; two
fixed cases pin the cap and the new backup. The CLI's own ``plan --json`` and
``run-once`` against a sandbox on loopback are compared in
``test_the_cli_plan_names_what_run_once_deletes``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from rotator.markers import make_marker
from rotator.planview import PlannedJob, build_plans
from rotator.retention import RULE_NAMES, Policy, Retention
from rotator.runner import JobSpec
from rotator.sandbox import Sandbox, SandboxOptions, create_app, running_sandbox, sandbox_of
from rotator.sandbox.testing import ManualMonotonic, RecordingSleep
from tests.sandbox_clients import SandboxTime, sandbox_client, sandbox_runner
from tests.test_daemon_e2e import run_rotator, write_config

NOW = datetime(2025, 3, 30, 3, 0, 30, tzinfo=UTC)  # the spring DST night of Europe/Berlin just passed
SLOT = datetime(2025, 3, 30, 3, 0, tzinfo=UTC)
API_URL = "http://sandbox.test/api/v1"
SERVERS = (1, 2)


@dataclass(frozen=True)
class Past:
    """One backup put in place before the run."""

    server: int
    hours_ago: int
    kind: str  # owned | failed | unowned | other_policy | automatic


@dataclass(frozen=True)
class Scenario:
    retention: Retention
    timezone: str
    cap: int
    create: bool
    prune_unmanaged: bool
    slot_state: str  # none | completed | running | failed
    past: tuple[Past, ...]


def _retention(counts: dict[str, int], min_keep: int) -> Retention | None:
    if not any(counts.values()):
        return None
    return Retention(**counts, min_keep=min_keep)


retentions = st.builds(
    _retention,
    # most rules off, as in real policies: a few rules over a long history leave something to delete
    st.fixed_dictionaries({name: st.sampled_from([0, 0, 0, 1, 2, 3]) for name in RULE_NAMES}),
    st.integers(1, 3),
).filter(lambda r: r is not None)

scenarios = st.builds(
    Scenario,
    retention=retentions,
    timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    cap=st.integers(0, 15),
    create=st.sampled_from([True, True, False]),
    prune_unmanaged=st.booleans(),
    slot_state=st.sampled_from(["none", "none", "completed", "running", "failed"]),
    past=st.builds(
        lambda daily, extra: (*daily, *extra),
        # a nightly history of 0-60 days per server (hour 2 or 3: calendar buckets in any zone) ...
        st.tuples(st.integers(0, 60), st.integers(0, 60), st.sampled_from([1, 2])).map(
            lambda t: tuple(
                Past(sid, 24 * day + t[2] + sid, "owned")
                for sid, days in zip(SERVERS, t[:2], strict=True)
                for day in range(days)
            )
        ),
        # ... and whatever else a server collects
        st.lists(
            st.builds(
                Past,
                server=st.sampled_from(SERVERS),
                hours_ago=st.integers(1, 24 * 120),
                kind=st.sampled_from(
                    ["owned", "owned", "owned", "owned", "failed", "unowned", "other_policy", "automatic"]
                ),
            ),
            max_size=20,
        ).map(tuple),
    ),
)


def _job(scenario: Scenario) -> JobSpec:
    policy = Policy(
        "nightly",
        scenario.retention,
        servers=SERVERS,
        timezone=scenario.timezone,
        prune_unmanaged=scenario.prune_unmanaged,
    )
    return JobSpec(
        policy, create=scenario.create, max_deletes_per_run=scenario.cap, description="nightly {date}"
    )


def _seed(sandbox: Sandbox, scenario: Scenario) -> None:
    for past in scenario.past:
        created = NOW - timedelta(hours=past.hours_ago)
        marker = make_marker("nightly", created.replace(minute=0, second=0))
        kinds: dict[str, dict[str, Any]] = {
            "owned": {"description": f"nightly {marker}"},
            "failed": {"description": f"nightly {marker}", "status": "failed"},
            "unowned": {"description": "by hand before an upgrade"},
            "other_policy": {"description": f"weekly {make_marker('weekly', created)}"},
            "automatic": {"backup_type": "automatic", "description": "Automatic daily backup"},
        }
        sandbox.state.add_backup(past.server, created_at=created, **kinds[past.kind])
    for sid in SERVERS:
        description = f"nightly {make_marker('nightly', SLOT)}"
        if scenario.slot_state == "completed":
            sandbox.state.add_backup(sid, created_at=NOW - timedelta(seconds=20), description=description)
        elif scenario.slot_state == "running":
            sandbox.state.create_backup(sid, description)  # completes create_seconds later
        elif scenario.slot_state == "failed":
            sandbox.state.add_backup(
                sid, created_at=NOW - timedelta(seconds=20), status="failed", description=description
            )


async def plan_and_run(scenario: Scenario) -> tuple[dict[int, set[int]], dict[int, set[int]], Sandbox]:
    """What the plan says each server loses, and what a real run then deleted there."""
    options = SandboxOptions(
        fleet="uniform", servers=len(SERVERS), backups_per_server=0, frozen_clock=NOW, create_seconds=90
    )
    app = create_app(options, sleep=RecordingSleep(), monotonic=ManualMonotonic())
    sandbox = sandbox_of(app)
    _seed(sandbox, scenario)
    job = _job(scenario)
    time = SandboxTime(sandbox)
    async with sandbox_client(sandbox, API_URL, httpx.ASGITransport(app=app), time) as client:
        # as `rotator plan` reads and plans
        listings = await asyncio.gather(
            *(client.list_backups(server_id=sid, backup_type="manual") for sid in SERVERS)
        )
        backups = [b for listing in listings for b in listing.backups]
        plans = build_plans([PlannedJob(job, SLOT if job.create else None)], backups, NOW)
        planned = {
            run.server_id: {d.backup.id for d in run.actions.deletes}
            for run in plans[0].servers
            if run.actions is not None
        }
        await sandbox_runner(client, time).run(job, SLOT, now=NOW)
    deleted: dict[int, set[int]] = {sid: set() for sid in SERVERS}
    for event in sandbox.state.events("deleted"):
        deleted[event.backup["server"]["id"]].add(event.backup["id"])
    return planned, deleted, sandbox


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_the_plans_deletes_are_the_runs_deletes(scenario: Scenario) -> None:
    """Over drawn configurations and histories, the run deletes exactly what the plan showed."""
    planned, deleted, _ = asyncio.run(plan_and_run(scenario))
    assert planned == deleted
    gone = sum(len(ids) for ids in deleted.values())
    capped = gone == scenario.cap * len(SERVERS)
    note(f"deletes: {'none' if not gone else 'at the cap' if capped else 'some'}")
    note(f"slot: {scenario.slot_state if scenario.create else 'prune only'}")


def test_the_cap_and_the_new_backup_are_in_the_plan() -> None:
    """keep_daily 3 with 8 daily backups and a cap of 2: the plan counts the backup the run creates
    (it takes today's place, so one more old one goes) and holds back what the cap stops; the run agrees."""
    past = tuple(Past(sid, 24 * day + 1, "owned") for sid in SERVERS for day in range(8))
    scenario = Scenario(Retention(keep_daily=3), "Europe/Berlin", 2, True, False, "none", past)
    planned, deleted, sandbox = asyncio.run(plan_and_run(scenario))
    assert planned == deleted
    assert all(len(ids) == 2 for ids in deleted.values())
    for sid in SERVERS:
        owned = [
            b for b in sandbox.state.backups(server_id=sid) if "[rotator:nightly@" in (b.description or "")
        ]
        assert len(owned) == 8 + 1 - 2


def test_without_the_new_backup_the_plan_would_have_been_wrong() -> None:
    """keep_last 2 over 3 backups: the run creates one and deletes 2; a plan blind to it said 1."""
    past = tuple(Past(1, hours, "owned") for hours in (30, 54, 78))
    scenario = Scenario(Retention(keep_last=2), "UTC", 10, True, False, "none", past)
    planned, deleted, _ = asyncio.run(plan_and_run(scenario))
    assert planned == deleted
    assert len(deleted[1]) == 2


def test_the_cli_plan_names_what_run_once_deletes(tmp_path: Path) -> None:
    """``rotator plan --json`` then ``rotator run-once`` (real processes, a sandbox on loopback):
    the run deletes exactly the plan's ``delete`` lists, and the plan's ``held_back`` stay."""
    options = SandboxOptions(
        fleet="uniform", servers=2, backups_per_server=9, owner="nightly", create_seconds=0.3
    )
    with running_sandbox(options) as sandbox:
        config = write_config(
            tmp_path / "rotator.yaml",
            [
                {
                    "name": "nightly",
                    "servers": [1, 2],
                    "retention": {"keep_daily": 2, "keep_weekly": 2},
                    "max_deletes_per_run": 3,
                }
            ],
        )
        plan = run_rotator(sandbox, "plan", "--config", str(config), "--json")
        assert plan.returncode == 0, plan.stderr
        document = json.loads(plan.stdout)
        (policy,) = document["policies"]
        planned = {s["server_id"]: {d["id"] for d in s["delete"]} for s in policy["servers"]}
        held = {s["server_id"]: {d["id"] for d in s["held_back"]} for s in policy["servers"]}
        assert all(s["would_create"] is not None for s in policy["servers"])
        assert all(len(ids) == 3 for ids in planned.values())
        assert any(held.values())  # the cap holds some back
        dry = run_rotator(sandbox, "run-once", "--config", str(config), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "total: 2 servers, create 2, delete 6" in dry.stdout
        assert sandbox.state.events("deleted") == []
        once = run_rotator(sandbox, "run-once", "--config", str(config))
        assert once.returncode == 0, once.stderr
        deleted: dict[int, set[int]] = {1: set(), 2: set()}
        for event in sandbox.state.events("deleted"):
            deleted[event.backup["server"]["id"]].add(event.backup["id"])
        assert deleted == planned
        remaining = {b.id for b in sandbox.state.backups()}
        assert all(ids <= remaining for ids in held.values())


@pytest.mark.parametrize("state", ["completed", "running", "failed"])
def test_adopted_waited_for_and_retried_slots(state: str) -> None:
    """The slot's backup already done, still running, or failed (a retry): plan and run agree."""
    past = tuple(Past(sid, hours, "owned") for sid in SERVERS for hours in (25, 49, 73, 97))
    scenario = Scenario(Retention(keep_last=2), "UTC", 10, True, False, state, past)
    planned, deleted, _ = asyncio.run(plan_and_run(scenario))
    assert planned == deleted
    assert all(deleted.values())
