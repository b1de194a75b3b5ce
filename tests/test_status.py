"""``rotator status``: the pure judgement over a listing and a clock, and the command against the sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_retention import backup

from rotator.cli import main
from rotator.config import RotatorConfig
from rotator.errors import ConfigError
from rotator.markers import make_marker
from rotator.models import Backup
from rotator.sandbox import RunningSandbox, SandboxOptions
from rotator.schedule import cron_trigger
from rotator.status import (
    WatchedPolicy,
    default_grace,
    fleet_status,
    format_age,
    render_table,
    status_document,
    watched_policies,
)

DAILY = cron_trigger("0 3 * * *", "UTC")
GRACE = timedelta(hours=2)
NIGHTLY = WatchedPolicy("nightly", (1, 2), DAILY, GRACE)


def slot(day: int) -> datetime:
    return datetime(2025, 1, day, 3, 0, tzinfo=UTC)


def of_slot(backup_id: int, day: int, server: int = 1, **extra: Any) -> Backup:
    """The nightly policy's backup of the 03:00 slot of 2025-01-``day``, made a minute after it."""
    description = f"nightly {make_marker('nightly', slot(day), extra.pop('attempt', 1))}"
    return backup(
        backup_id, slot(day) + timedelta(minutes=1), server=server, description=description, **extra
    )


def test_a_server_with_the_due_slots_backup_is_ok() -> None:
    """At 04:00 the 03:00 slot is within its grace: yesterday's backup is enough."""
    listing = [of_slot(10, 14), of_slot(11, 15), of_slot(20, 15, server=2)]
    status = fleet_status([NIGHTLY], listing, datetime(2025, 1, 16, 4, 0, tzinfo=UTC))
    first, second = status.servers
    assert (first.ok, second.ok, status.ok) == (True, True, True)
    assert first.newest is not None
    assert first.newest.id == 11
    assert first.age == timedelta(hours=24, minutes=59)
    assert (first.owned, first.size_mb, first.failed_since) == (2, 200, 0)
    assert first.due_slot == slot(15)
    assert first.next_slot == datetime(2025, 1, 17, 3, 0, tzinfo=UTC)
    assert status.policies[0].latest_slot == slot(16)


def test_overdue_once_the_slot_plus_grace_passed_without_its_backup() -> None:
    """At 05:00:01 the 03:00 slot's grace (2h) is over: a server without its backup is OVERDUE."""
    listing = [of_slot(11, 15), of_slot(12, 16), of_slot(20, 15, server=2)]
    at_edge = fleet_status([NIGHTLY], listing, datetime(2025, 1, 16, 5, 0, tzinfo=UTC))
    assert [s.overdue for s in at_edge.servers] == [False, True]  # 05:00 is the slot plus the grace
    before = fleet_status([NIGHTLY], listing, datetime(2025, 1, 16, 4, 59, 59, tzinfo=UTC))
    assert [s.overdue for s in before.servers] == [False, False]
    assert not at_edge.ok
    assert at_edge.summary() == {
        "policies": 1,
        "servers": 2,
        "ok": 1,
        "overdue": 1,
        "failing": 0,
        "owned": 3,
        "size_mb": 300,
    }
    text = render_table(at_edge)
    assert "policy nightly, server 2: OVERDUE: no completed backup of the slot 2025-01-16T03:00:00Z" in text
    assert text.splitlines()[-1] == (
        "fleet NOT OK: 2 servers in 1 policy: 1 ok, 1 overdue, 0 failing; 3 owned backups, 300 MiB"
    )


def test_only_completed_owned_backups_count() -> None:
    """Another policy's, an unmarked, an automatic or an in-progress backup of the slot do not cover it."""
    marked_weekly = backup(30, slot(16), description=f"w {make_marker('weekly', slot(16))}")
    listing = [
        of_slot(11, 15),
        marked_weekly,
        backup(31, slot(16), description="by hand"),
        backup(32, slot(16), backup_type="automatic", description="Automatic daily backup"),
        of_slot(33, 16, status="in_progress"),
    ]
    (server,) = fleet_status(
        [WatchedPolicy("nightly", (1,), DAILY, GRACE)], listing, datetime(2025, 1, 16, 6, tzinfo=UTC)
    ).servers
    assert server.overdue
    assert (server.owned, server.in_progress, server.failing) == (1, 1, False)
    assert server.newest is not None
    assert server.newest.id == 11


def test_a_failed_latest_attempt_is_failing_until_a_later_one_completes() -> None:
    """Failed attempts after the newest completed backup are counted; the latest one failed: FAILING."""
    failed = [of_slot(12, 16, status="failed"), of_slot(13, 16, status="failed", attempt=2)]
    failed[1] = failed[1].model_copy(update={"created_at": slot(16) + timedelta(minutes=20)})
    now = datetime(2025, 1, 16, 4, tzinfo=UTC)
    watched = [WatchedPolicy("nightly", (1,), DAILY, GRACE)]
    (server,) = fleet_status(watched, [of_slot(11, 15), *failed], now).servers
    assert (server.failing, server.failed_since, server.state) == (True, 2, "FAILING")
    retried = of_slot(14, 16, attempt=3).model_copy(update={"created_at": slot(16) + timedelta(minutes=40)})
    (server,) = fleet_status(watched, [of_slot(11, 15), *failed, retried], now).servers
    assert (server.failing, server.failed_since, server.ok) == (False, 0, True)


def test_no_schedule_is_never_overdue_and_an_unread_listing_is_failing() -> None:
    """A policy without a schedule has no due slot; a server whose listing failed is FAILING with why."""
    unscheduled = WatchedPolicy("nightly", (1, 2), None, GRACE)
    status = fleet_status([unscheduled], [], datetime(2030, 1, 1, tzinfo=UTC), errors={2: "HTTP 503"})
    first, second = status.servers
    assert (first.ok, first.due_slot, first.next_slot) == (True, None, None)
    assert (second.failing, second.error) == (True, "HTTP 503")
    assert "server 2: FAILING: its listing could not be read: HTTP 503" in render_table(status)


def test_the_default_grace_is_a_runs_longest_legitimate_time() -> None:
    """The jitter, then each of the attempts' wait_timeout, and the retry_delay before each retry."""
    grace = default_grace(
        wait_timeout=timedelta(hours=2),
        retries=2,
        retry_delay=timedelta(minutes=10),
        jitter=timedelta(minutes=10),
    )
    assert grace == timedelta(hours=6, minutes=30)
    assert default_grace(
        wait_timeout=timedelta(hours=1), retries=0, retry_delay=timedelta(minutes=10)
    ) == timedelta(hours=1)


def test_watched_policies_from_the_configuration() -> None:
    """status_grace when set, else the default; --policy and --server narrow; unknown ones are refused."""
    config = RotatorConfig(
        policies=[
            {"name": "nightly", "servers": [1, 2], "retention": {"keep_last": 3}, "status_grace": "90m"},
            {
                "name": "weekly",
                "servers": [2],
                "retention": {"keep_last": 3},
                "wait_timeout": "1h",
                "retries": 0,
            },
        ]
    )
    watched = watched_policies(config, {"nightly": DAILY})
    assert [(w.name, w.servers, w.grace, w.trigger) for w in watched] == [
        ("nightly", (1, 2), timedelta(minutes=90), DAILY),
        ("weekly", (2,), timedelta(hours=1), None),
    ]
    assert [(w.name, w.servers) for w in watched_policies(config, {}, server=2)] == [
        ("nightly", (2,)),
        ("weekly", (2,)),
    ]
    with pytest.raises(ConfigError, match="no policy named 'monthly'"):
        watched_policies(config, {}, policy="monthly")
    with pytest.raises(ConfigError, match="server 1 is not one of the servers of policy 'weekly'"):
        watched_policies(config, {}, policy="weekly", server=1)


def test_the_json_document() -> None:
    """Every field a monitoring script reads, with times in the API's spelling."""
    now = datetime(2025, 1, 16, 6, tzinfo=UTC)
    document = status_document(fleet_status([NIGHTLY], [of_slot(11, 16)], now))
    assert document["ok"] is False
    (policy,) = document["policies"]
    assert (policy["due_slot"], policy["next_slot"], policy["grace_s"]) == (
        "2025-01-16T03:00:00Z",
        "2025-01-17T03:00:00Z",
        7200.0,
    )
    first, second = policy["servers"]
    assert first == {
        "server_id": 1,
        "server_name": "server-1",
        "state": "ok",
        "overdue": False,
        "failing": False,
        "newest": {
            "id": 11,
            "created_at": "2025-01-16T03:01:00Z",
            "size_mb": 100,
            "description": f"nightly {make_marker('nightly', slot(16))}",
        },
        "age_s": 3.0 * 3600 - 60,
        "owned": 1,
        "size_mb": 100,
        "failed_since": 0,
        "in_progress": 0,
        "next_slot": "2025-01-17T03:00:00Z",
        "error": None,
    }
    assert (second["state"], second["newest"], second["age_s"]) == ("OVERDUE", None, None)


@pytest.mark.parametrize(
    ("minutes", "text"),
    [(0, "0m"), (45, "45m"), (60, "1h"), (192, "3h12m"), (2 * 1440 + 240, "2d4h"), (1440, "1d")],
)
def test_ages_for_people(minutes: int, text: str) -> None:
    """Ages to the minute, the two largest units."""
    assert format_age(timedelta(minutes=minutes)) == text


# -- the command, against the sandbox on loopback ---------------------------------------------------

FROZEN = datetime(2025, 1, 16, 15, 45, tzinfo=UTC)


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """3 servers, 5 nightly backups each (slots at 02:00 UTC, the newest today), the clock frozen at 15:45."""
    return SandboxOptions(
        fleet="uniform", servers=3, backups_per_server=5, owner="nightly", frozen_clock=FROZEN
    )


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_server: RunningSandbox) -> Path:
    """A configuration of the nightly policy on the sandbox's servers; the sandbox's URL and token."""
    monkeypatch.setenv("ROTATOR_API_URL", sandbox_server.api_url)
    monkeypatch.setenv("ROTATOR_API_TOKEN", sandbox_server.token)
    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "rotator.yaml"
    path.write_text(
        "policies:\n"
        "  - name: nightly\n"
        "    servers: [1, 2, 3]\n"
        "    retention: {keep_last: 7}\n"
        '    schedule: {cron: "0 2 * * *"}\n'
        "    wait_timeout: 1h\n"
        "    retries: 0\n"
    )
    return path


def status(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["status", "--config", str(config), "--now", FROZEN.isoformat(), *extra])
    return code, capsys.readouterr().out


def test_status_of_a_healthy_fleet_exits_0(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every server has today's 02:00 backup: ok, exit 0, one row per server and the fleet's line."""
    code, out = status(config, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "POLICY",
        "SERVER",
        "STATE",
        "NEWEST",
        "AGE",
        "OWNED",
        "SIZE",
        "FAILED",
        "NEXT",
        "SLOT",
    ]
    assert len(lines) == 5
    assert all(" ok " in line and "2025-01-17T02:00:00Z" in line for line in lines[1:4])
    assert lines[-1].startswith(
        "fleet ok: 3 servers in 1 policy: 3 ok, 0 overdue, 0 failing; 15 owned backups"
    )


def test_status_finds_the_overdue_and_the_failing(
    config: Path, capsys: pytest.CaptureFixture[str], sandbox_server: RunningSandbox
) -> None:
    """Server 2 lost today's backup (overdue past 02:00 + 1h); server 3's latest attempt failed: exit 1."""
    state = sandbox_server.state
    today = next(
        b
        for b in state.backups(server_id=2)
        if b.description and b.description.endswith("@2025-01-16T02:00Z]")
    )
    state.delete_backup(today.id)
    state.add_backup(
        3,
        status="failed",
        created_at=FROZEN - timedelta(hours=1),
        description=f"nightly {make_marker('nightly', datetime(2025, 1, 16, 2, tzinfo=UTC), 2)}",
    )
    code, out = status(config, capsys, "--json")
    assert code == 1
    document = json.loads(out)
    states = {s["server_id"]: s["state"] for s in document["policies"][0]["servers"]}
    assert states == {1: "ok", 2: "OVERDUE", 3: "FAILING"}
    assert document["summary"]["overdue"] == 1
    assert document["summary"]["failing"] == 1
    code, out = status(config, capsys, "--server", "1")
    assert code == 0
    assert "fleet ok: 1 server in 1 policy" in out


def test_status_refuses_an_unknown_server(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--server of no policy: one line, the configuration exit code, nothing listed."""
    code = main(["status", "--config", str(config), "--server", "99"])
    err = capsys.readouterr().err
    assert code == 78
    assert err.strip() == "rotator: server 99 is not one of the servers of any policy"
