"""rotator's calendar rules against restic's ``forget``, on cases restic itself answered.

``tests/data/restic_forget.json`` is written by ``bench/restic_cases.py``, which
runs ``restic forget --dry-run --json`` over real snapshots (with the process's
``TZ`` set to the case's zone). Here each case is replayed through the engine;
restic is not needed. ``keep_days`` is not compared: restic's ``--keep-within``
counts from the newest snapshot, rotator's from ``now``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_retention import backup

from rotator.retention import Policy, Retention, plan_server

DATA = Path(__file__).resolve().parent / "data" / "restic_forget.json"
DOCUMENT = json.loads(DATA.read_text())
CASES: list[dict[str, Any]] = DOCUMENT["cases"]
NOW = datetime(2030, 1, 1, tzinfo=UTC)  # after every snapshot; keep_days is never on here
RESTIC_REASONS = {
    "last snapshot": "last",
    "hourly snapshot": "hourly",
    "daily snapshot": "daily",
    "weekly snapshot": "weekly",
    "monthly snapshot": "monthly",
    "yearly snapshot": "yearly",
}


def test_the_cases_cover_what_the_issue_asks() -> None:
    """Dozens of cases: every calendar rule and keep_last, alone and combined, UTC and not."""
    assert len(CASES) >= 30
    rules = {name for case in CASES for name in case["rules"]}
    assert rules == {"keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"}
    assert any(len(case["rules"]) > 1 for case in CASES)
    assert {case["timezone"] for case in CASES} >= {"UTC", "Europe/Berlin", "America/New_York"}
    stamps = {snap["created_at"] for case in CASES for snap in case["snapshots"]}
    assert {"2020-12-31T23:59:59Z", "2021-01-04T00:00:01Z"} <= stamps  # ISO week 53 -> week 1


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_rotator_keeps_what_restic_keeps(case: dict[str, Any]) -> None:
    """Same snapshots, same rules, same zone: the same ones kept, for the same rules."""
    backups = [backup(snap["id"], snap["created_at"]) for snap in case["snapshots"]]
    policy = Policy("nightly", Retention(**case["rules"]), servers=(12345,), timezone=case["timezone"])
    plan = plan_server(backups, policy, NOW)

    assert sorted(d.backup.id for d in plan.keep) == case["keep"]
    assert sorted(d.backup.id for d in plan.delete) == case["remove"]
    ours = {str(d.backup.id): sorted(reason.split(" ")[0] for reason in d.reasons) for d in plan.keep}
    theirs = {
        number: sorted(RESTIC_REASONS[match] for match in matches)
        for number, matches in case["reasons"].items()
    }
    assert ours == theirs
