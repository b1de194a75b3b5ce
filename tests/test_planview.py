"""``rotator plan``'s data and renderings: the documented JSON and the human table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from test_retention import backup

from rotator.config import RotatorConfig
from rotator.errors import ConfigError
from rotator.planview import build_plans, plan_document, render_json, render_table
from rotator.retention import Policy, Retention

NOW = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
NIGHTLY = Policy("nightly", Retention(keep_last=1, keep_daily=1), servers=(12345,))

LISTING = [
    backup(501, "2025-01-16T03:00:00Z"),
    backup(480, "2024-11-02T03:00:00Z"),
    backup(499, "2025-01-14T10:30:00Z", backup_type="automatic", description="Automatic daily backup"),
    backup(777, "2025-01-14T10:30:00Z", server=999),
]


def test_the_documented_json() -> None:
    """The JSON of ``rotator plan --json`` is exactly the documented document."""
    plans = build_plans([NIGHTLY], LISTING, NOW)
    assert plan_document(plans) == {
        "policies": [
            {
                "policy": "nightly",
                "now": "2025-01-16T03:00:00Z",
                "servers": [
                    {
                        "server_id": 12345,
                        "keep": [
                            {
                                "id": 501,
                                "created_at": "2025-01-16T03:00:00Z",
                                "reasons": ["last", "daily 2025-01-16"],
                            }
                        ],
                        "delete": [{"id": 480, "created_at": "2024-11-02T03:00:00Z", "reasons": []}],
                        "untouched": [
                            {"id": 499, "created_at": "2025-01-14T10:30:00Z", "reason": "automatic"}
                        ],
                    }
                ],
            }
        ]
    }
    assert json.loads(render_json(plans)) == plan_document(plans)
    assert render_json(plans, indent=None).startswith('{"policies": [{"policy": "nightly", "now": ')


def test_the_table_lists_every_backup_newest_first() -> None:
    """One table per server: action, id, created_at, description, reasons."""
    text = render_table(build_plans([NIGHTLY], LISTING, NOW))
    lines = text.splitlines()
    assert lines[0] == (
        "policy nightly, server 12345 (server-12345) at 2025-01-16T03:00:00Z: keep 1, delete 1, untouched 1"
    )
    assert lines[1].split() == ["ACTION", "ID", "CREATED_AT", "DESCRIPTION", "REASONS"]
    assert [line.split()[:2] for line in lines[2:]] == [
        ["KEEP", "501"],
        ["UNTOUCHED", "499"],
        ["DELETE", "480"],
    ]
    assert lines[2].endswith("Nightly backup [rotator:nightly@2025-01-16T03:00Z]  last, daily 2025-01-16")
    assert lines[3].split("  ")[-1] == "automatic"
    assert len({len(line.split("  2025-")[0]) for line in lines[2:4]}) == 1  # columns aligned
    assert lines[4].endswith("  -")
    assert "777" not in text


def test_the_table_clips_long_descriptions_keeping_the_marker() -> None:
    """A long description is cut at the front: the marker at its end stays readable."""
    long_one = backup(1, "2025-01-15T00:00", description="x" * 100 + " [rotator:nightly]")
    text = render_table(build_plans([NIGHTLY], [long_one], NOW))
    assert "...xxx" in text
    assert "[rotator:nightly]  last" in text


def test_empty_server_and_no_policies() -> None:
    """A server without backups still gets its heading; no policies say so."""
    text = render_table(build_plans([NIGHTLY], [], NOW))
    assert text.splitlines()[1] == "  (no backups)"
    assert render_table(()) == "no policies to plan\n"


def test_filters_by_policy_and_server() -> None:
    """--policy and --server narrow the plans; unknown ones are ConfigErrors."""
    weekly = Policy("weekly", Retention(keep_weekly=4), servers=(12345, 67890))
    plans = build_plans([NIGHTLY, weekly], LISTING, NOW, policy="weekly", server=67890)
    assert [(plan.policy, [s.server_id for s in plan.servers]) for plan in plans] == [("weekly", [67890])]
    plans = build_plans([NIGHTLY, weekly], LISTING, NOW, server=12345)
    assert [plan.policy for plan in plans] == ["nightly", "weekly"]
    with pytest.raises(ConfigError, match="no policy named 'monthly' \\(known: nightly, weekly\\)"):
        build_plans([NIGHTLY, weekly], LISTING, NOW, policy="monthly")
    with pytest.raises(ConfigError, match="server 5 is not one of the servers of policy 'nightly'"):
        build_plans([NIGHTLY, weekly], LISTING, NOW, policy="nightly", server=5)


def test_takes_a_configuration() -> None:
    """build_plans accepts the loaded configuration as well as engine policies."""
    config = RotatorConfig(policies=[{"name": "nightly", "servers": [12345], "retention": {"keep_last": 1}}])
    (plan,) = build_plans(config, LISTING, NOW)
    assert [d.backup.id for d in plan.servers[0].delete] == [480]
