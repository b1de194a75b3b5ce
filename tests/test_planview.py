"""``rotator plan``'s data and renderings: a run's actions as the documented JSON and the human table."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from test_retention import backup

from rotator.errors import ConfigError
from rotator.markers import make_marker
from rotator.planner import Rail
from rotator.planview import (
    PlannedJob,
    build_plans,
    plan_document,
    plans_of_reports,
    render_json,
    render_table,
)
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec
from rotator.slots import Action

NOW = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
NIGHTLY = Policy("nightly", Retention(keep_last=1, keep_daily=1), servers=(12345,))
PRUNE_ONLY = JobSpec(NIGHTLY, create=False)

LISTING = [
    backup(501, "2025-01-16T03:00:00Z"),
    backup(480, "2024-11-02T03:00:00Z"),
    backup(499, "2025-01-14T10:30:00Z", backup_type="automatic", description="Automatic daily backup"),
    backup(498, "2025-01-14T09:30:00Z", description="by hand"),
    backup(777, "2025-01-14T10:30:00Z", server=999),
]


def planned(job: JobSpec = PRUNE_ONLY, slot: datetime | None = None) -> list[PlannedJob]:
    return [PlannedJob(job, slot)]


def test_the_documented_json() -> None:
    """The JSON of ``rotator plan --json`` is exactly the documented document."""
    plans = build_plans(planned(), LISTING, NOW)
    assert plan_document(plans) == {
        "policies": [
            {
                "policy": "nightly",
                "now": "2025-01-16T03:00:00Z",
                "slot": None,
                "dry_run": False,
                "servers": [
                    {
                        "server_id": 12345,
                        "action": None,
                        "would_create": None,
                        "keep": [
                            {
                                "id": 501,
                                "created_at": "2025-01-16T03:00:00Z",
                                "reasons": ["last", "daily 2025-01-16"],
                            }
                        ],
                        "delete": [{"id": 480, "created_at": "2024-11-02T03:00:00Z", "reasons": []}],
                        "held_back": [],
                        "untouched": [
                            {"id": 498, "created_at": "2025-01-14T09:30:00Z", "reason": "not owned"}
                        ],
                    }
                ],
            }
        ]
    }
    assert json.loads(render_json(plans)) == plan_document(plans)
    assert render_json(plans, indent=None).startswith('{"policies": [{"policy": "nightly", "now": ')


def test_the_json_names_the_backup_it_would_create_and_what_the_cap_holds_back() -> None:
    """A run that creates: would_create with its marker and reasons; the cap's deletes in held_back."""
    job = JobSpec(Policy("nightly", Retention(keep_last=2), servers=(12345,)), max_deletes_per_run=1)
    old = [backup(10 + day, f"2025-01-{day:02d}T03:00:00Z") for day in (11, 12, 13, 14, 15)]
    (plan,) = build_plans(planned(job, SLOT), old, NOW + timedelta(minutes=5))
    document = plan_document([plan])["policies"][0]
    assert document["slot"] == "2025-01-16T03:00:00Z"
    (server,) = document["servers"]
    assert server["action"] == "create"
    assert server["would_create"] == {
        "attempt": 1,
        "description": job.describe(SLOT, 1),
        "created_at": "2025-01-16T03:05:00Z",
        "reasons": ["last"],
    }
    assert [item["id"] for item in server["keep"]] == [25]  # with the new one: keep_last 2
    assert [item["id"] for item in server["delete"]] == [21]  # the oldest: the cap is 1
    assert server["held_back"] == [
        {"id": 24, "created_at": "2025-01-14T03:00:00Z", "reasons": [], "rail": "max_deletes_per_run"},
        {"id": 23, "created_at": "2025-01-13T03:00:00Z", "reasons": [], "rail": "max_deletes_per_run"},
        {"id": 22, "created_at": "2025-01-12T03:00:00Z", "reasons": [], "rail": "max_deletes_per_run"},
    ]


def test_the_table_lists_every_backup_newest_first() -> None:
    """One table per server: action, id, created_at, description, reasons; then the totals."""
    text = render_table(build_plans(planned(), LISTING, NOW))
    lines = text.splitlines()
    assert lines[0] == (
        "policy nightly, server 12345 (server-12345) at 2025-01-16T03:00:00Z: "
        "keep 1, delete 1, held back 0, untouched 1"
    )
    assert lines[1].split() == ["ACTION", "ID", "CREATED_AT", "DESCRIPTION", "REASONS"]
    assert [line.split()[:2] for line in lines[2:5]] == [
        ["KEEP", "501"],
        ["UNTOUCHED", "498"],
        ["DELETE", "480"],
    ]
    assert lines[2].endswith("Nightly backup [rotator:nightly@2025-01-16T03:00Z]  last, daily 2025-01-16")
    assert lines[3].endswith("  not owned")
    assert len({len(line.split("  2025-")[0]) for line in lines[2:4]}) == 1  # columns aligned
    assert lines[4].endswith("  -")
    assert lines[-1] == "total: 1 server, create 0, delete 1, held back 0"
    assert "777" not in text
    assert "499" not in text  # automatic backups are never a run's: a run does not list them


def test_the_table_shows_would_create_and_held_back() -> None:
    """WOULD CREATE first (newest), HELD BACK with the cap, the heading says create."""
    job = JobSpec(Policy("nightly", Retention(keep_last=1), servers=(12345,)), max_deletes_per_run=1)
    old = [backup(20 + day, f"2025-01-{day:02d}T03:00:00Z") for day in (13, 14, 15)]
    text = render_table(build_plans(planned(job, SLOT), old, NOW))
    lines = text.splitlines()
    assert lines[0].endswith("slot 2025-01-16T03:00:00Z: create, keep 0, delete 1, held back 2, untouched 0")
    assert [line.split()[:2] for line in lines[2:6]] == [
        ["WOULD", "CREATE"],
        ["HELD", "BACK"],
        ["HELD", "BACK"],
        ["DELETE", "33"],
    ]
    assert " new " in lines[2]
    assert lines[3].endswith("max_deletes_per_run (1 go this run)")
    assert lines[-1] == "total: 1 server, create 1, delete 1, held back 2"


def test_the_slots_backup_is_adopted_or_waited_for() -> None:
    """A completed backup of the slot is adopted; one in progress is waited for and counted as completed."""
    job = JobSpec(Policy("nightly", Retention(keep_last=1), servers=(12345,)))
    slot_backup = backup(50, "2025-01-16T03:00:10Z", description=f"x {make_marker('nightly', SLOT)}")
    old = backup(40, "2025-01-15T03:00:00Z")
    (plan,) = build_plans(planned(job, SLOT), [slot_backup, old], NOW)
    (server,) = plan.servers
    assert server.actions is not None
    assert (server.actions.slot_action, server.actions.would_create, server.actions.waits) == (
        Action.ADOPT,
        None,
        False,
    )
    assert "adopt 50" in render_table([plan])
    assert [d.backup.id for d in server.actions.deletes] == [40]
    running = slot_backup.model_copy(update={"status": "in_progress"})
    (plan,) = build_plans(planned(job, SLOT), [running, old], NOW)
    actions = plan.servers[0].actions
    assert actions is not None
    assert actions.waits
    assert [d.backup.id for d in actions.deletes] == [40]  # as once it completed
    assert "wait for 50 (in progress)" in render_table([plan])


def test_every_attempt_failed_deletes_nothing() -> None:
    """All attempts of the slot failed: the run gives up, and holds every delete back."""
    job = JobSpec(Policy("nightly", Retention(keep_last=1), servers=(12345,)), retries=0)
    failed = backup(
        50, "2025-01-16T03:00:10Z", status="failed", description=f"x {make_marker('nightly', SLOT)}"
    )
    old = [backup(40, "2025-01-15T03:00:00Z"), backup(41, "2025-01-14T03:00:00Z")]
    (plan,) = build_plans(planned(job, SLOT), [failed, *old], NOW)
    actions = plan.servers[0].actions
    assert actions is not None
    assert actions.slot_action is Action.GIVE_UP
    assert actions.deletes == ()
    assert {b.rail for b in actions.held_back} == {Rail.BACKUP_NOT_COMPLETED}
    assert "all 1 attempts failed: nothing deleted" in render_table([plan])


def test_the_table_clips_long_descriptions_keeping_the_marker() -> None:
    """A long description is cut at the front: the marker at its end stays readable."""
    long_one = backup(1, "2025-01-15T00:00", description="x" * 100 + " [rotator:nightly]")
    text = render_table(build_plans(planned(), [long_one], NOW))
    assert "...xxx" in text
    assert "[rotator:nightly]  last" in text


def test_empty_server_and_no_policies() -> None:
    """A server without backups still gets its heading; no policies say so."""
    text = render_table(build_plans(planned(), [], NOW))
    assert text.splitlines()[1] == "  (no backups)"
    assert render_table(()) == "no policies to plan\n"


def test_filters_by_policy_and_server() -> None:
    """--policy and --server narrow the plans; unknown ones are ConfigErrors."""
    weekly = PlannedJob(
        replace(PRUNE_ONLY, policy=Policy("weekly", Retention(keep_weekly=4), servers=(12345, 67890))), None
    )
    jobs = [*planned(), weekly]
    plans = build_plans(jobs, LISTING, NOW, policy="weekly", server=67890)
    assert [(plan.policy, [s.server_id for s in plan.servers]) for plan in plans] == [("weekly", [67890])]
    plans = build_plans(jobs, LISTING, NOW, server=12345)
    assert [plan.policy for plan in plans] == ["nightly", "weekly"]
    with pytest.raises(ConfigError, match="no policy named 'monthly' \\(known: nightly, weekly\\)"):
        build_plans(jobs, LISTING, NOW, policy="monthly")
    with pytest.raises(ConfigError, match="server 5 is not one of the servers of policy 'nightly'"):
        build_plans(jobs, LISTING, NOW, policy="nightly", server=5)


def test_a_dry_runs_reports_render_as_plans() -> None:
    """run-once --dry-run: each server's last actions as the plan shows them, or why there are none."""
    from rotator.planner import run_actions  # noqa: PLC0415 - what the runner stores on each result
    from rotator.runner import RunReport, ServerResult  # noqa: PLC0415

    job = JobSpec(Policy("nightly", Retention(keep_last=1), servers=(12345, 12346)))
    old = [backup(40, "2025-01-15T03:00:00Z"), backup(41, "2025-01-14T03:00:00Z")]
    planned = ServerResult(12345, actions=run_actions(old, job, SLOT, NOW, server_id=12345, dry_run=True))
    failed = ServerResult(12346)
    failed.fail("listing failed, nothing done: HTTP 503")
    report = RunReport("nightly", SLOT, dry_run=True, servers=[planned, failed])
    plans = plans_of_reports([report], NOW)
    text = render_table(plans)
    assert "create, keep 0, delete 2, held back 0" in text  # the new one keeps keep_last's place
    assert (
        "policy nightly, server 12346, slot 2025-01-16T03:00:00Z (dry run: nothing is created or deleted): "
        "nothing planned: listing failed" in text
    )
    assert text.splitlines()[-1] == "total: 2 servers, create 1, delete 2, held back 0, 1 failed"
    (document,) = plan_document(plans)["policies"]
    assert [s["delete"] for s in document["servers"]][1] == []
    assert document["servers"][1]["error"] == "listing failed, nothing done: HTTP 503"
    assert [d["id"] for d in document["servers"][0]["delete"]] == [40, 41]


def test_a_dry_run_policy_says_so() -> None:
    """dry_run: true: the plan shows what the run would delete, and that it deletes nothing."""
    job = JobSpec(Policy("nightly", Retention(keep_last=1), servers=(12345,)), create=False, dry_run=True)
    old = [backup(40, "2025-01-15T03:00:00Z"), backup(41, "2025-01-14T03:00:00Z")]
    plans = build_plans(planned(job), old, NOW)
    assert "(dry run: nothing is created or deleted)" in render_table(plans)
    (document,) = plan_document(plans)["policies"]
    assert document["dry_run"] is True
    assert [d["id"] for d in document["servers"][0]["delete"]] == [41]
