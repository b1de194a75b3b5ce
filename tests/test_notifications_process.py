"""Notifications from ``rotator`` as a real process: ``run-once`` notifying a JSON webhook on loopback
through Apprise's ``json://``, and ``check-config`` without apprise installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.child_env import clean_env
from rotator import errors
from rotator.sandbox import RunningSandbox, SandboxOptions
from tests.test_notifications import SECRET, TOKEN, fixture_webhook, json_url, payloads, write_config  # noqa: F401
from tests.test_pings import Monitor


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """The demo fleet on a clock that follows real time; backups complete in 0.3 s."""
    return SandboxOptions(seed=5, create_seconds=0.3)


def test_run_once_notifies_as_a_real_process(
    sandbox_server: RunningSandbox, webhook: Monitor, tmp_path: Path
) -> None:
    """``rotator run-once`` with a policy's notify: the webhook gets the run's summary, the log never
    the URL's secrets, even at debug (Apprise's own log, which prints URLs, is kept out)."""
    servers = sorted({b.server_id for b in sandbox_server.state.backups()})[:2]
    document = {
        "policies": [
            {
                "name": "nightly",
                "servers": servers,
                "retention": {"keep_last": 30},
                "wait_timeout": "1m",
                "notify": {"urls": [json_url(webhook)], "on": ["success", "failure"]},
            }
        ],
        "daemon": {"poll_interval": "1s"},
    }
    config = tmp_path / "rotator.yaml"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "rotator", "--log-level", "debug", "run-once", "--config", str(config)],
        env=clean_env(ROTATOR_API_URL=sandbox_server.api_url, ROTATOR_API_TOKEN=sandbox_server.token),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    (sent,) = payloads(webhook)
    assert sent["title"] == "rotator: policy nightly ok"
    assert sent["message"].startswith("policy nightly ok: 2 servers, 2 created")
    assert SECRET not in output
    assert TOKEN not in output
    events = [json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")]
    assert "notification.sent" in events


@pytest.mark.parametrize("command", ["check-config", "run-once", "run"])
def test_notify_without_apprise_is_one_line(tmp_path: Path, command: str) -> None:
    """A policy with notify and no apprise installed: one line on stderr, exit 78, no traceback, before
    any request (the API URL points nowhere)."""
    config = write_config(tmp_path / "c.yaml", {"urls": [f"json://127.0.0.1/{TOKEN}"]})
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "apprise.py").write_text("raise ImportError('no apprise here')\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "rotator", command, "--config", str(config)],
        env=clean_env(
            PYTHONPATH=str(blocker), ROTATOR_API_URL="http://127.0.0.1:9/api/v1", ROTATOR_API_TOKEN="t" * 20
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == errors.EXIT_CONFIG, done.stderr
    assert done.stderr.strip().splitlines() == [
        "rotator: policies[0].notify: notifications need the 'notify' extra: pip install 'rotator[notify]'"
    ]
    assert TOKEN not in done.stdout + done.stderr


def test_apprise_is_loaded_only_for_a_policy_that_notifies() -> None:
    """Importing rotator's commands loads neither Apprise nor requests: a daemon without notify pays
    nothing for the extra."""
    probe = "import sys, rotator.cli; print('apprise' in sys.modules, 'requests' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=clean_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False"]
