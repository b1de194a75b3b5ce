"""``check-config --check-api`` against the sandbox: the token, the servers, and nothing changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import stamina

from rotator.cli import main
from rotator.sandbox import RunningSandbox

DEMO_SERVERS = [12345, 12346, 12347, 12348]


pytestmark = pytest.mark.usefixtures("cli_at_sandbox")  # the CLI talks to the loopback sandbox


def write_config(tmp_path: Path, *groups: list[int]) -> Path:
    path = tmp_path / "rotator.yaml"
    policies = "".join(
        f"  - name: p{index}\n    servers: {servers}\n    retention: {{keep_last: 3}}\n"
        for index, servers in enumerate(groups)
    )
    path.write_text("policies:\n" + policies)
    return path


def check(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["check-config", "--config", str(config), "--check-api", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_good_token_and_every_server_known(
    sandbox_server: RunningSandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All servers listed: exit 0, one line saying so; the API was only read."""
    before = len(sandbox_server.state.events())
    code, out, err = check(capsys, write_config(tmp_path, DEMO_SERVERS[:2], DEMO_SERVERS[2:]))
    assert (code, err) == (0, "")
    assert "api: token accepted; 4 of 4 configured servers seen" in out.splitlines()
    assert len(sandbox_server.state.events()) == before  # nothing created, deleted or restored


def test_a_rejected_token_is_one_line_and_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token the API refuses: one line naming where tokens come from, exit 78, nothing on stdout."""
    monkeypatch.setenv("ROTATOR_API_TOKEN", "not-the-sandbox-token")
    code, out, err = check(capsys, write_config(tmp_path, DEMO_SERVERS))
    assert (code, out) == (78, "")
    (line,) = err.splitlines()
    assert line.startswith("rotator: the API rejected the token (401")
    assert "ROTATOR_API_TOKEN" in line
    assert "not-the-sandbox-token" not in err


def test_a_missing_server_is_named_with_its_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server the API lists nothing of: named under the check with its policies; one line on stderr, 78."""
    code, out, err = check(capsys, write_config(tmp_path, [12345, 99999], [99999]))
    assert code == 78
    assert "api: token accepted; 1 of 2 configured servers seen" in out
    (server_line,) = [line for line in out.splitlines() if "99999" in line]
    assert server_line.strip().startswith("server 99999 (p0, p1): no backups of it are listed")
    assert err.splitlines() == ["rotator: 1 configured server not seen by the API: 99999"]


def test_check_api_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json: the check's findings in the document, ``ok`` false when a server is missing, exit 78."""
    code, out, _ = check(capsys, write_config(tmp_path, [12345, 12348, 424242]), "--json")
    assert code == 78
    document = json.loads(out)
    assert document["ok"] is False
    found = document["api_check"]
    assert found["token"] == "accepted"
    assert found["servers_seen"] == [12345, 12348]
    assert found["servers_missing"] == [{"server_id": 424242, "policies": ["p0"]}]
    assert found["backups_listed"] > 0


@pytest.fixture(name="no_retries")
def fixture_no_retries() -> Iterator[None]:
    stamina.set_testing(True, attempts=1)
    yield
    stamina.set_testing(False)


@pytest.mark.usefixtures("no_retries")
def test_an_unreachable_api_is_one_line_and_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listening at the URL: one line asking whether the URL is right, exit 1."""
    monkeypatch.setenv("ROTATOR_API_URL", "http://127.0.0.1:9/api/v1")
    code, out, err = check(capsys, write_config(tmp_path, DEMO_SERVERS))
    assert (code, out) == (1, "")
    (line,) = err.splitlines()
    assert "is the API URL right and reachable?" in line


def test_without_check_api_no_request_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain check-config does not talk to the API (a bad token goes unnoticed, by design)."""
    monkeypatch.setenv("ROTATOR_API_TOKEN", "not-the-sandbox-token")
    assert main(["check-config", "--config", str(write_config(tmp_path, [99999]))]) == 0
    assert "token accepted" not in capsys.readouterr().out
