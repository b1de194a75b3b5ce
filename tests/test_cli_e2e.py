"""The CLI end to end against the sandbox served on a loopback port, faults included."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stamina
import yaml

from bench.child_env import clean_env
from rotator.cli import main
from rotator.sandbox import RunningSandbox, SandboxOptions


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """The demo fleet on a clock that follows real time; backups complete in 0.3 s."""
    return SandboxOptions(seed=5, create_seconds=0.3)


pytestmark = pytest.mark.usefixtures("cli_at_sandbox")  # the CLI talks to the loopback sandbox


@pytest.fixture(name="no_retry_waits")
def fixture_no_retry_waits() -> Iterator[None]:
    """Retries happen, their backoff does not (the budget's Retry-After pause still does)."""
    stamina.set_testing(True, attempts=10)
    yield
    stamina.set_testing(False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_reads_every_page(
    sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """All pages of the sandbox (10 a page) merged, exactly the sandbox's backups."""
    code, out, _ = cli(capsys, "backups", "list", "--json")
    assert code == 0
    listing = json.loads(out)
    expected = {b.id for b in sandbox_server.state.backups()}
    assert len(expected) > 10 * 3  # several pages
    assert listing["count"] == len(expected)
    assert {b["id"] for b in listing["results"]} == expected


def test_create_wait_then_delete(sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """create --wait returns once completed; delete --yes removes it."""
    code, out, _ = cli(capsys, "backups", "create", "12348", "--description", "e2e", "--wait", "--json")
    assert code == 0
    created = json.loads(out)
    assert created["status"] == "completed"
    assert created["size_mb"] is not None
    code, out, _ = cli(capsys, "backups", "delete", str(created["id"]), "--yes")
    assert code == 0
    assert created["id"] not in {b.id for b in sandbox_server.state.backups()}


def test_create_wait_on_a_failing_backup_exits_1(
    sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backup that fails: the wait reports it and exits 1."""
    sandbox_server.sandbox.update_faults(fail_rate=1.0)
    code, out, _ = cli(capsys, "backups", "create", "12348", "--description", "doomed", "--wait")
    assert code == 1
    assert "failed" in out


def test_restore_checks_then_restores(
    sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another server's backup is refused; the server's own completed one is restored."""
    own = next(b for b in sandbox_server.state.backups(server_id=12345) if b.status == "completed")
    foreign = next(b for b in sandbox_server.state.backups(server_id=12346) if b.status == "completed")
    code, _, err = cli(capsys, "restore", "12345", str(foreign.id), "--yes")
    assert code == 1
    assert "not a backup of server 12345" in err
    assert sandbox_server.state.events("restored") == []
    code, _, _ = cli(capsys, "restore", "12345", str(own.id), "--yes")
    assert code == 0
    assert len(sandbox_server.state.events("restored")) == 1


@pytest.mark.usefixtures("no_retry_waits")
def test_listing_survives_server_errors(
    sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 30 % 5xx rate is retried away; the listing is still whole."""
    sandbox_server.sandbox.update_faults(error_rate=0.3)
    code, out, err = cli(capsys, "backups", "list", "--json")
    assert code == 0, err
    assert json.loads(out)["count"] == len(sandbox_server.state.backups())
    statuses = sandbox_server.sandbox.stats()["requests"]["GET /api/v1/backups/"]
    assert any(status.startswith("5") for status in statuses)


@pytest.mark.usefixtures("no_retry_waits")
def test_dropped_create_answer_is_not_posted_again(
    sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """The create went through, its answer was dropped: one POST, exit 1, and where to look before another."""
    sandbox_server.sandbox.update_faults(drop_rate=1.0)
    code, out, err = cli(capsys, "backups", "create", "12348", "--description", "lost answer", "--json")
    assert code == 1
    assert out == ""
    assert "the create's outcome is unknown" in err
    assert "check 'rotator backups list --server ID' before creating another" in err
    assert len([line for line in err.splitlines() if not line.startswith("{")]) == 1  # beside log events
    created = [e for e in sandbox_server.state.events("created") if e.backup["server"]["id"] == 12348]
    assert len(created) == 1
    assert len(sandbox_server.sandbox.stats()["requests"]["POST /api/v1/backups/"]) == 1


def test_rate_limit_is_waited_out(sandbox_server: RunningSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """429 with Retry-After: the CLI pauses and finishes the listing."""
    sandbox_server.sandbox.update_faults(rate_limit=4, burst=1)
    code, out, _ = cli(capsys, "backups", "list", "--server", "12348", "--json")
    assert code == 0
    code, out, _ = cli(capsys, "backups", "list", "--server", "12348", "--json")
    assert code == 0
    assert json.loads(out)["count"] == len(sandbox_server.state.backups(server_id=12348))


def test_wrong_token_as_a_real_process(sandbox_server: RunningSandbox) -> None:
    """A real process with a rejected token: exit 1, one line, no traceback, no token."""
    env = {
        "PATH": "/usr/bin:/bin",
        "ROTATOR_API_URL": sandbox_server.api_url,
        "ROTATOR_API_TOKEN": "wrong-Tok3n",
    }
    done = subprocess.run(
        [sys.executable, "-m", "rotator", "backups", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("rotator: the API rejected the token (401")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "wrong-Tok3n" not in done.stdout + done.stderr


WRONG_TOKEN = "wrong-Tok3n-4f9a0c"


def echo_config(path: Path) -> Path:
    """A policy of two demo servers, logging every event as JSON at debug level."""
    document = {
        "policies": [{"name": "echo", "servers": [12345, 12346], "retention": {"keep_last": 3}}],
        "log": {"format": "json", "level": "debug"},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["backups", "list"], id="list"),
        pytest.param(["backups", "create", "12348"], id="create"),
        pytest.param(["backups", "create", "12348", "--wait", "--json"], id="create-wait"),
        pytest.param(["backups", "delete", "1", "--yes"], id="delete"),
        pytest.param(["run-once", "--config", "{config}"], id="run-once"),
        pytest.param(["plan", "--config", "{config}"], id="plan"),
        pytest.param(["status", "--config", "{config}"], id="status"),
        pytest.param(["status", "--config", "{config}", "--server", "12345"], id="status-one-server"),
    ],
)
def test_an_echoed_wrong_token_never_shows(
    sandbox_server: RunningSandbox, tmp_path: Path, argv: list[str]
) -> None:
    """A 401 quoting the Authorization header back: the token is masked on stdout, stderr and every
    debug log line; exit 1."""
    sandbox_server.sandbox.update_faults(auth_echo=True)
    echoed = httpx.get(
        f"{sandbox_server.api_url}/backups/", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}, timeout=10
    )
    assert echoed.status_code == 401
    assert WRONG_TOKEN in echoed.text  # the API does give it away: rotator has to hide it
    config = str(echo_config(tmp_path / "rotator.yaml"))
    done = subprocess.run(
        [sys.executable, "-m", "rotator", "--log-level", "debug", *(a.format(config=config) for a in argv)],
        env=clean_env(ROTATOR_API_URL=sandbox_server.api_url, ROTATOR_API_TOKEN=WRONG_TOKEN),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert WRONG_TOKEN not in output
    assert "Bearer ********" in output  # the echo arrived, masked
    assert done.returncode == 1, output
    assert "Traceback" not in output
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(event.get("status") == 401 for event in events if event["event"] == "api.request")
    said = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    if argv[0] == "run-once":
        assert said == []
        assert done.stdout.startswith("policy echo FAILED: 2 servers, 0 created")
        (finished,) = [event for event in events if event["event"] == "run.finished"]
        assert finished["status"] == "failed"
    else:
        assert len(said) == 1, said
        assert said[0].startswith("rotator: the API rejected the token (401: ")
        assert said[0].endswith("check ROTATOR_API_TOKEN, --token-file or the api-token credential")
    assert not sandbox_server.state.events("created")
