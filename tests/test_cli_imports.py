"""What a ``rotator run-once`` process imports: not the daemon's scheduler, nor what other commands use.

Each process pays for its imports in CPU (issue 13: a fleet run's CPU per server-run counts the
process's start). APScheduler's scheduler (with its executors: ``concurrent.futures``'s process pool,
``multiprocessing``) is only the daemon's; the etcd client only a configured ``coordination``'s; the
plan's view only ``plan``'s and a dry run's; the status view only ``status``'s; the
metrics (prometheus_client) only the daemon's and a run-once's that hands them on. The slot arithmetic
(APScheduler's triggers) stays: a run is named by its slot. The run is a real process against the
loopback sandbox, whose ``sys.modules`` this one's imports cannot pollute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.child_env import clean_env
from rotator.sandbox import RunningSandbox, SandboxOptions

DAEMON_ONLY = ("apscheduler.schedulers", "apscheduler.executors", "multiprocessing")
NOT_ASKED_FOR = (
    "rotator.coordination.etcd",
    "rotator.planview",
    "rotator.status",
    "rotator.metrics",
    "rotator.metrics_export",
    "prometheus_client",
)


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """The demo fleet on a clock that follows real time; backups complete in 0.3 s."""
    return SandboxOptions(seed=5, create_seconds=0.3)


def run_once_modules(sandbox: RunningSandbox, config: Path, *argv: str) -> tuple[int, set[str], str]:
    """``rotator run-once`` in a fresh interpreter: its exit code, the modules it held at the end, stderr."""
    code = (
        "import json, sys\n"
        "from rotator.cli import main\n"
        f"code = main(['run-once', '--config', {str(config)!r}, *{list(argv)!r}])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(ROTATOR_API_URL=sandbox.api_url, ROTATOR_API_TOKEN=sandbox.token),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, set(json.loads(done.stdout.splitlines()[-1])), done.stderr


def config_file(path: Path) -> Path:
    document = {
        "policies": [
            {
                "name": "nightly",
                "servers": [12345, 12346],
                "schedule": {"cron": "0 3 * * *"},
                "timezone": "Europe/Berlin",
                "retention": {"keep_last": 3},
            }
        ]
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_run_once_loads_no_daemon_scheduler(sandbox_server: RunningSandbox, tmp_path: Path) -> None:
    """A scheduled policy's run-once: its slot from the cron trigger, its runs made; no scheduler."""
    code, modules, stderr = run_once_modules(sandbox_server, config_file(tmp_path / "rotator.yaml"))
    assert code == 0, stderr
    # the run did run: the runner, and the triggers its slot is computed by
    assert {"rotator.runner", "apscheduler.triggers.cron", "rotator.cli"} <= modules
    assert loaded(modules, DAEMON_ONLY) == []
    assert loaded(modules, NOT_ASKED_FOR) == []


def test_a_dry_run_loads_the_plan_view_but_no_scheduler(
    sandbox_server: RunningSandbox, tmp_path: Path
) -> None:
    """--dry-run prints the plan's table (its view is loaded for it); still no scheduler."""
    config = config_file(tmp_path / "rotator.yaml")
    code, modules, stderr = run_once_modules(sandbox_server, config, "--dry-run")
    assert code == 0, stderr
    assert "rotator.planview" in modules
    assert loaded(modules, DAEMON_ONLY) == []


def test_the_daemon_still_loads_its_scheduler() -> None:
    """The other side: building the daemon imports APScheduler's scheduler (the checks above can fail)."""
    code = (
        "import sys\n"
        "from rotator.scheduler import Daemon\n"
        "assert 'apscheduler.schedulers.asyncio' not in sys.modules\n"
        "from unittest.mock import Mock\n"
        "Daemon([], Mock())\n"
        "print('apscheduler.schedulers.asyncio' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
