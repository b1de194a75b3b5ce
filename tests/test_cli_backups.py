"""The backup commands by hand against the sandbox: whose backups they are, and deleting them with care."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys

import pytest

from bench.child_env import clean_env
from rotator.cli import main
from rotator.markers import make_marker
from rotator.sandbox import RunningSandbox
from rotator.sandbox.state import BackupRecord
from tests.conftest import SANDBOX_NOW

SERVER = 12348  # staging-01: no automatic backups in the demo fleet


pytestmark = pytest.mark.usefixtures("cli_at_sandbox")  # the CLI talks to the loopback sandbox


@pytest.fixture(name="kinds")
def fixture_kinds(sandbox_server: RunningSandbox) -> dict[str, BackupRecord]:
    """One backup of each kind on SERVER: owned by nightly, by weekly, ad hoc; one automatic on 12345."""
    state = sandbox_server.state
    return {
        "nightly": state.add_backup(SERVER, description=f"Nightly {make_marker('nightly', SANDBOX_NOW)}"),
        "weekly": state.add_backup(SERVER, description=f"Weekly {make_marker('weekly')}"),
        "adhoc": state.add_backup(SERVER, description="Pre-deployment backup"),
        "automatic": state.add_backup(12345, backup_type="automatic", description="Automatic daily backup"),
    }


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> dict[int, list[str]]:
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:5] == ["ID", "SERVER", "TYPE", "POLICY", "STATUS"]
    return {int(line.split()[0]): line.split() for line in lines[1:]}


# -- POLICY column and --policy ---------------------------------------------------------------------


def test_list_shows_each_backups_policy(
    kinds: dict[str, BackupRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    """The POLICY column names the policy of the marker; '-' for ad-hoc and automatic backups."""
    code, out, _ = cli(capsys, "backups", "list")
    assert code == 0
    table = rows(out)
    # columns: ID, SERVER (id and name), TYPE, POLICY
    assert table[kinds["nightly"].id][4] == "nightly"
    assert table[kinds["weekly"].id][4] == "weekly"
    assert table[kinds["adhoc"].id][4] == "-"
    assert table[kinds["automatic"].id][4] == "-"


def test_list_policy_keeps_only_that_policys_backups(
    sandbox_server: RunningSandbox, kinds: dict[str, BackupRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--policy weekly`` lists exactly the backups whose marker names weekly."""
    code, out, _ = cli(capsys, "backups", "list", "--policy", "weekly")
    assert code == 0
    assert set(rows(out)) == {kinds["weekly"].id}
    code, out, _ = cli(capsys, "backups", "list", "--policy", "nightly", "--json")
    assert code == 0
    listing = json.loads(out)
    expected = {
        b.id
        for b in sandbox_server.state.backups(backup_type="manual")
        if "[rotator:nightly" in (b.description or "")
    }
    assert len(expected) > 10  # the demo fleet's nightly history, and the one added
    assert {b["id"] for b in listing["results"]} == expected
    assert listing["count"] == len(expected)


def test_list_policy_with_no_backups_says_so(
    kinds: dict[str, BackupRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy that owns nothing: 'no backups', exit 0."""
    code, out, _ = cli(capsys, "backups", "list", "--policy", "monthly")
    assert (code, out) == (0, "no backups\n")


def test_list_refuses_a_policy_name_no_marker_can_hold(capsys: pytest.CaptureFixture[str]) -> None:
    """``--policy 'a b'``: one line, exit 2."""
    with pytest.raises(SystemExit) as stopped:
        main(["backups", "list", "--policy", "a b"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not a policy name" in err


# -- deleting by hand: owned and automatic backups are called out; --yes alone does not cover them --


class Terminal(io.StringIO):
    """A stdin that is a terminal, answering what it was given."""

    def isatty(self) -> bool:
        return True


def ids(records: list[BackupRecord]) -> list[str]:
    return [str(r.id) for r in records]


def remaining(sandbox_server: RunningSandbox) -> set[int]:
    return {b.id for b in sandbox_server.state.backups()}


def test_delete_ad_hoc_with_yes_needs_no_force(
    sandbox_server: RunningSandbox, kinds: dict[str, BackupRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    """An ad-hoc manual backup: --yes deletes it, no warning."""
    code, out, _ = cli(capsys, "backups", "delete", str(kinds["adhoc"].id), "--yes")
    assert code == 0
    assert "warning" not in out
    assert kinds["adhoc"].id not in remaining(sandbox_server)


@pytest.mark.parametrize("kind", ["nightly", "automatic"])
def test_delete_owned_or_automatic_with_yes_alone_is_refused(
    kind: str,
    sandbox_server: RunningSandbox,
    kinds: dict[str, BackupRecord],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--yes without --force: the warning, one line naming --force, exit 2, nothing deleted at all."""
    before = remaining(sandbox_server)
    code, out, err = cli(capsys, "backups", "delete", str(kinds["adhoc"].id), str(kinds[kind].id), "--yes")
    assert code == 2
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert str(kinds[kind].id) in warning
    assert ("policy 'nightly'" if kind == "nightly" else "automatic backup") in warning
    assert len(err.strip().splitlines()) == 1
    assert "--force" in err
    assert "nothing was deleted" in err
    assert remaining(sandbox_server) == before


def test_delete_owned_with_yes_and_force(
    sandbox_server: RunningSandbox, kinds: dict[str, BackupRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    """--yes --force: owned and automatic backups go, each warned about first."""
    doomed = [kinds["nightly"], kinds["weekly"], kinds["automatic"]]
    code, out, _ = cli(capsys, "backups", "delete", *ids(doomed), "--yes", "--force")
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    assert remaining(sandbox_server).isdisjoint(r.id for r in doomed)


def test_delete_owned_on_a_terminal_says_so_and_asks(
    sandbox_server: RunningSandbox,
    kinds: dict[str, BackupRecord],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal the warning comes before the question; 'n' keeps it, 'y' deletes it (no --force)."""
    target = str(kinds["weekly"].id)
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, _ = cli(capsys, "backups", "delete", target)
    assert code == 0
    assert out.index("owned by policy 'weekly'") < out.index("[y/N]")
    assert "nothing deleted" in out
    assert kinds["weekly"].id in remaining(sandbox_server)
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, _ = cli(capsys, "backups", "delete", target)
    assert code == 0
    assert f"deleted backup {target}" in out
    assert kinds["weekly"].id not in remaining(sandbox_server)


# -- ^C during backups create --wait --------------------------------------------------------------


def test_interrupting_create_wait_says_the_backup_goes_on(sandbox_server: RunningSandbox) -> None:
    """SIGINT while waiting: one line with the backup's id saying it goes on at the provider, exit 130;
    the backup is still there, in progress."""
    sandbox_server.sandbox.update_faults(slow_rate=1.0, slow_seconds=3600.0)
    env = clean_env(
        ROTATOR_API_URL=sandbox_server.api_url, ROTATOR_API_TOKEN=sandbox_server.token, PYTHONUNBUFFERED="1"
    )
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotator",
            "backups",
            "create",
            str(SERVER),
            "--description",
            "slow",
            "--wait",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        started = child.stdout.readline()  # printed once the API accepted the create: now it waits
        match = re.fullmatch(rf"backup (\d+) of server {SERVER} started \(in_progress\)\n", started)
        assert match, started
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=60)
        err = child.stderr.read()
    backup_id = int(match.group(1))
    assert code == 130
    assert err.splitlines() == [
        f"rotator: interrupted: backup {backup_id} of server {SERVER} goes on at the provider (rotator only "
        f"stopped waiting); see how it ends with 'rotator backups list --server {SERVER}'"
    ]
    assert sandbox_server.state.backup(backup_id).status == "in_progress"


def test_the_refusal_names_every_such_backup_in_one_line(
    sandbox_server: RunningSandbox, kinds: dict[str, BackupRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    """An owned and an automatic backup with --yes: one line naming both ids and both kinds."""
    doomed = [kinds["nightly"], kinds["automatic"]]
    code, _, err = cli(capsys, "backups", "delete", *ids(doomed), "--yes")
    assert code == 2
    assert err.strip() == (
        f"rotator: backups {doomed[0].id}, {doomed[1].id} are owned by a policy or automatic: --yes alone "
        "does not delete such backups, add --force; nothing was deleted"
    )
