"""``rotator plan`` and ``rotator check-config``: reading, printing, and refusing bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rotator.cli import main
from rotator.markers import make_marker
from tests.test_api import backup_json

CONFIG = """
policies:
  - name: nightly
    servers: [12345]
    retention: {keep_last: 2}
    schedule: {cron: "0 3 * * *"}
  - name: weekly
    servers: [777]
    timezone: Europe/Berlin
    retention: {keep_weekly: 4}
"""


def owned(backup_id: int, created: str, **extra: Any) -> dict[str, Any]:
    from rotator.cli import _instant  # noqa: PLC0415 - the CLI's own ISO parser

    return backup_json(
        backup_id, created, description=f"Nightly {make_marker('nightly', _instant(created))}", **extra
    )


LISTING = {
    "count": 5,
    "results": [
        owned(480, "2025-01-14T03:00:00Z"),
        backup_json(499, "2025-01-14T10:30:00Z"),
        owned(501, "2025-01-16T03:00:00Z"),
        owned(490, "2025-01-15T03:00:00Z"),
        owned(502, "2025-01-16T15:45:00Z", status="in_progress"),
    ],
}


@pytest.fixture(name="files")
def fixture_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A configuration and a listing file; no token anywhere (plan --from-file needs none)."""
    for name in ("ROTATOR_API_TOKEN", "ROTATOR_CONFIG", "CREDENTIALS_DIRECTORY", "ROTATOR_API_URL"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "rotator.yaml"
    config.write_text(CONFIG)
    listing = tmp_path / "listing.json"
    listing.write_text(json.dumps(LISTING))
    return config, listing


def test_plan_json_is_exactly_the_documented_shape(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The slot's action, keep, delete, held back and untouched per server, newest first, with reasons;
    nothing is deleted. The slot's backup (501, marked 03:00) is adopted: nothing would be created."""
    config, listing = files
    argv = ["plan", "--config", str(config), "--from-file", str(listing), "--policy", "nightly"]
    code = main([*argv, "--now", "2025-01-16T16:00:00Z", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "policies": [
            {
                "policy": "nightly",
                "now": "2025-01-16T16:00:00Z",
                "slot": "2025-01-16T03:00:00Z",
                "dry_run": False,
                "servers": [
                    {
                        "server_id": 12345,
                        "action": "adopt",
                        "would_create": None,
                        "keep": [
                            {"id": 501, "created_at": "2025-01-16T03:00:00Z", "reasons": ["last"]},
                            {"id": 490, "created_at": "2025-01-15T03:00:00Z", "reasons": ["last"]},
                        ],
                        "delete": [{"id": 480, "created_at": "2025-01-14T03:00:00Z", "reasons": []}],
                        "held_back": [],
                        "untouched": [
                            {"id": 502, "created_at": "2025-01-16T15:45:00Z", "reason": "in_progress"},
                            {"id": 499, "created_at": "2025-01-14T10:30:00Z", "reason": "not owned"},
                        ],
                    }
                ],
            }
        ]
    }


def test_plan_table_for_people(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The table says KEEP / DELETE / UNTOUCHED with reasons, for every policy's servers."""
    config, listing = files
    assert (
        main(["plan", "--config", str(config), "--from-file", str(listing), "--now", "2025-01-16T16:00Z"])
        == 0
    )
    out = capsys.readouterr().out
    assert "DELETE     480" in out
    assert "UNTOUCHED  499" in out
    assert "policy weekly, server 777" in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not a readable JSON file"),
        ('{"count": 9, "results": []}', "count says 9 but the file holds 0"),
        ('{"count": 1, "results": [{"id": 1}]}', "results.0.server: Field required"),
        ("[1, 2]", "not a listing in the API's shape"),
    ],
)
def test_plan_refuses_a_bad_listing_file(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    """A bad --from-file: exit 2 with one line naming what is wrong."""
    config, listing = files
    listing.write_text(content)
    code = main(["plan", "--config", str(config), "--from-file", str(listing)])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_plan_unknown_policy_names_the_known_ones(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--policy that does not exist is a configuration error listing the policies."""
    config, listing = files
    code = main(["plan", "--config", str(config), "--from-file", str(listing), "--policy", "hourly"])
    assert code == 78
    assert "known: nightly, weekly" in capsys.readouterr().err


def test_plan_without_configuration(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """No --config and no ROTATOR_CONFIG: exit 78 saying how to give one."""
    _, listing = files
    assert main(["plan", "--from-file", str(listing)]) == 78
    assert "--config" in capsys.readouterr().err


def test_plan_naive_now_is_a_usage_error(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--now must say its zone."""
    config, listing = files
    with pytest.raises(SystemExit) as caught:
        main(["plan", "--config", str(config), "--from-file", str(listing), "--now", "2025-01-16T16:00"])
    assert caught.value.code == 2
    assert "give a time zone" in capsys.readouterr().err


def test_check_config_prints_the_next_three_runs(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid: exit 0, each policy with its next three runs (or why it has none)."""
    config, _ = files
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "configuration OK: 2 policies" in out
    assert out.count("next run ") == 3
    assert "T03:00:00Z" in out
    assert "policy weekly" in out
    assert "no schedule" in out


def test_check_config_rejects_with_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every problem on its own line with its path; exit 78."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("keep_last: 2", "keep_lats: 2").replace("0 3 * * *", "0 25 * * *"))
    assert main(["check-config", "--config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "policies[0].retention.keep_lats: unknown key" in err
    assert "policies[0].schedule.cron: not a cron expression" in err
    assert "Traceback" not in err
