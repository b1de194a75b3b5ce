"""A closed stdout ends rotator quietly: ``rotator backups list | head -1`` exits 0, its work done.

rotator runs as a child process against the sandbox on a loopback port, writing into a real pipe
whose reader goes away; the outputs are well beyond a pipe's capacity (64 KiB), so the writer
surely meets the closed end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.child_env import clean_env
from rotator.sandbox import RunningSandbox, SandboxOptions

SERVERS = 30
PER_SERVER = 60


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """A uniform fleet of 1,800 owned backups, 100 a page, on a frozen clock."""
    return SandboxOptions(
        fleet="uniform",
        servers=SERVERS,
        backups_per_server=PER_SERVER,
        page_size=100,
        frozen_clock=datetime(2025, 1, 16, 15, 45, tzinfo=UTC),
    )


@pytest.fixture(name="env")
def fixture_env(sandbox_server: RunningSandbox, tmp_path: Path) -> dict[str, str]:
    """A child's environment pointing at the sandbox, with a configuration owning every server."""
    config = tmp_path / "rotator.yaml"
    servers = ", ".join(str(i) for i in range(1, SERVERS + 1))
    config.write_text(
        f"policies:\n  - name: nightly\n    servers: [{servers}]\n    retention: {{keep_daily: 7}}\n"
    )
    return clean_env(
        ROTATOR_API_URL=sandbox_server.api_url,
        ROTATOR_API_TOKEN=sandbox_server.token,
        ROTATOR_CONFIG=str(config),
    )


ROTATOR = [sys.executable, "-m", "rotator"]


def test_list_into_head_under_pipefail_exits_0(env: dict[str, str]) -> None:
    """``set -o pipefail; rotator backups list | head -1``: the header line, exit 0, nothing on stderr."""
    command = " ".join(ROTATOR) + " backups list | head -1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.split() == [
        "ID",
        "SERVER",
        "TYPE",
        "POLICY",
        "STATUS",
        "SIZE",
        "CREATED",
        "EXPIRES",
        "DESCRIPTION",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["backups", "list"], id="list"),
        pytest.param(["backups", "list", "--json"], id="list-json"),
        pytest.param(["plan"], id="plan"),
        pytest.param(["plan", "--json"], id="plan-json"),
        pytest.param(["--help"], id="help"),
    ],
)
def test_reader_gone_after_one_line(argv: list[str], env: dict[str, str]) -> None:
    """The reader takes one line and closes the pipe: rotator exits 0 and says nothing on stderr."""
    with subprocess.Popen(
        [*ROTATOR, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        first = child.stdout.readline()
        child.stdout.close()
        err = child.stderr.read()
        code = child.wait(timeout=120)
    assert first.strip()
    assert (code, err) == (0, b"")


def test_the_whole_output_is_beyond_a_pipe(env: dict[str, str]) -> None:
    """The outputs above are well beyond a pipe's 64 KiB (else the reader could not miss any)."""
    for argv in (["backups", "list"], ["plan"]):
        out = subprocess.run([*ROTATOR, *argv], capture_output=True, env=env, check=True, timeout=120).stdout
        assert len(out) > 2 * 65536


def test_a_closed_stdout_does_not_cut_deletes_short(
    sandbox_server: RunningSandbox, env: dict[str, str]
) -> None:
    """``backups delete --yes`` into a pipe already closed: every backup asked for is deleted, exit 0."""
    doomed = sorted(b.id for b in sandbox_server.state.backups() if b.server_id == 1)
    assert len(doomed) == PER_SERVER
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write meets a closed pipe
    try:
        result = subprocess.run(
            [*ROTATOR, "backups", "delete", "--yes", "--force", *map(str, doomed)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, b"")
    left = {b.id for b in sandbox_server.state.backups()}
    assert left.isdisjoint(doomed)
