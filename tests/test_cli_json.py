"""``--json`` of the commands that act (run-once, check-config, backups delete, restore), against the sandbox.

Each document is checked against what the sandbox holds afterwards, and stdout holds the document alone
(the table, warnings and questions for people go to stderr).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from rotator.cli import main
from rotator.sandbox import RunningSandbox, SandboxOptions

SERVER = 12345


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """The demo fleet on a clock that follows real time; backups complete in 0.3 s."""
    return SandboxOptions(seed=5, create_seconds=0.3)


pytestmark = pytest.mark.usefixtures("cli_at_sandbox")  # the CLI talks to the loopback sandbox


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(
        f"""
policies:
  - name: nightly
    servers: [{SERVER}]
    retention: {{keep_last: 3}}
    schedule: {{cron: "0 3 * * *"}}
    max_deletes_per_run: 100
    wait_timeout: 1m
  - name: adhoc
    servers: [12348]
    retention: {{keep_last: 5}}
    create: false
daemon: {{poll_interval: 1s, poll_max_interval: 1s}}
"""
    )
    return path


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_run_once_json_is_each_runs_report(
    sandbox_server: RunningSandbox, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run-once --json: one report per policy whose created backup and deletes are what the sandbox saw."""
    code, document, _ = cli_json(capsys, "run-once", "--config", str(config), "--policy", "nightly", "--json")
    assert code == 0
    assert document["exit_code"] == 0
    (run,) = document["runs"]
    assert (run["policy"], run["status"], run["dry_run"]) == ("nightly", "ok", False)
    assert run["slot"].endswith("T03:00:00Z")
    (server,) = run["servers"]
    assert server["server_id"] == SERVER
    assert server["outcome"] == "ok"
    created = sandbox_server.state.backup(server["backup"]["id"])
    assert (created.server_id, created.status, server["backup"]["status"]) == (
        SERVER,
        "completed",
        "completed",
    )
    assert server["deleted"]
    left = {b.id for b in sandbox_server.state.backups()}
    assert left.isdisjoint(server["deleted"])
    assert run["totals"]["deleted"] == len(server["deleted"])
    assert run["totals"]["created"] == server["created"] == 1
    assert server["kept"] == run["totals"]["kept"] >= 3


def test_run_once_dry_run_json_shows_what_was_held_back(
    sandbox_server: RunningSandbox, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run-once --dry-run --json: nothing deleted, every would-be delete blocked by the dry_run rail."""
    before = {b.id for b in sandbox_server.state.backups()}
    code, document, _ = cli_json(capsys, "run-once", "--config", str(config), "--dry-run", "--json")
    assert code == 0
    assert {b.id for b in sandbox_server.state.backups()} == before
    runs = {run["policy"]: run for run in document["runs"]}
    assert set(runs) == {"nightly", "adhoc"}
    assert all(run["dry_run"] for run in runs.values())
    blocked = [b for s in runs["nightly"]["servers"] for b in s["blocked"]]
    assert blocked
    assert {b["rail"] for b in blocked} == {"dry_run"}
    assert {b["id"] for b in blocked} <= before


def test_check_config_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config --json: every policy with its servers, flags and the next three runs (or null)."""
    code, document, _ = cli_json(capsys, "check-config", "--config", str(config), "--json")
    assert code == 0
    assert document["ok"] is True
    nightly, adhoc = document["policies"]
    assert nightly["name"] == "nightly"
    assert nightly["servers"] == [SERVER]
    assert len(nightly["next_runs"]) == 3
    assert all(stamp.endswith("T03:00:00Z") for stamp in nightly["next_runs"])
    assert nightly["warnings"] == []
    assert (adhoc["create"], adhoc["next_runs"]) == (False, None)


def test_check_config_json_on_a_bad_file_is_one_line_and_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad configuration with --json: nothing on stdout, the error on stderr, exit 78."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: []\n")
    code = main(["check-config", "--config", str(bad), "--json"])
    out, err = capsys.readouterr()
    assert (code, out) == (78, "")
    assert "policies" in err


def test_delete_json(sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """backups delete --json: the ids deleted, stdout the document alone; the table on stderr."""
    mine = [sandbox_server.state.add_backup(12348, description=f"ad hoc {i}") for i in range(2)]
    code, document, err = cli_json(capsys, "backups", "delete", *(str(b.id) for b in mine), "--yes", "--json")
    assert code == 0
    assert document == {"deleted": [b.id for b in mine], "already_gone": [], "failed": []}
    assert "These backups will be deleted for good" in err
    assert not {b.id for b in mine} & {b.id for b in sandbox_server.state.backups()}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_delete_json_answered_no_is_an_empty_document(
    sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked on a terminal (the question on stderr) and answered no: an empty document, nothing deleted."""
    mine = sandbox_server.state.add_backup(12348, description="ad hoc")
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, document, err = cli_json(capsys, "backups", "delete", str(mine.id), "--json")
    assert code == 0
    assert document == {"deleted": [], "already_gone": [], "failed": []}
    assert "[y/N]" in err
    assert sandbox_server.state.exists(mine.id)


def test_restore_json(sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """restore --yes --json: the API's answer, accepted; the sandbox logged the restore."""
    backup = next(b for b in sandbox_server.state.backups(server_id=12348) if b.status == "completed")
    code, document, err = cli_json(capsys, "restore", "12348", str(backup.id), "--yes", "--json")
    assert code == 0
    assert (document["server_id"], document["backup_id"], document["accepted"]) == (12348, backup.id, True)
    assert "will be overwritten" in err
    assert document["answer"] is not None
    assert len(sandbox_server.state.events("restored")) == 1
