"""The configuration stands on the models: importing or loading it loads no client, metrics or scheduler.

STYLE.md's table: ``config.py`` imports models and durations (and the pure
modules above them); the listener's address parsing lives in
:mod:`rotator.addresses`, the schedule's triggers are built by the daemon
(:func:`rotator.scheduler.policy_trigger`). Each check runs in a fresh
interpreter, whose ``sys.modules`` this process's imports cannot pollute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from rotator.config import PolicyConfig
from rotator.schedule import cron_trigger, interval_trigger
from rotator.scheduler import policy_trigger
from rotator.slots import next_slots

HEAVY = ("httpx", "httpcore", "prometheus_client", "apscheduler", "structlog", "starlette", "uvicorn")
# what rotator.config may stand on: the value types and the pure modules above it in STYLE.md's table
ALLOWED = {
    "rotator",
    "rotator.addresses",
    "rotator.config",
    "rotator.durations",
    "rotator.errors",
    "rotator.markers",
    "rotator.models",
    "rotator.retention",
}
REPORT = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


def test_importing_the_configuration_loads_no_client_metrics_or_scheduler() -> None:
    """``import rotator.config`` loads none of httpx, prometheus_client, APScheduler (nor structlog)."""
    modules = loaded_after("import rotator.config")
    assert "rotator.config" in modules
    assert heavy(modules) == []
    assert sorted(name for name in modules if name.split(".")[0] == "rotator") == sorted(ALLOWED)


def test_loading_a_configuration_loads_none_of_them_either(tmp_path: Path) -> None:
    """load_config of a file with an interval schedule and a listener stays as light."""
    path = tmp_path / "config.yaml"
    document = {
        "policies": [
            {"name": "often", "servers": [1], "schedule": {"interval": "6h"}, "retention": {"keep_last": 3}}
        ],
        "http": {"listen": "127.0.0.1:9188"},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    modules = loaded_after(
        f"from rotator.config import load_config; load_config({str(path)!r}).engine_policies()"
    )
    assert heavy(modules) == []


def test_the_health_listener_still_checks_its_address() -> None:
    """http.listen is still refused when it is not HOST:PORT (rotator.addresses, not the listener)."""
    from rotator.config import HttpConfig  # noqa: PLC0415

    with pytest.raises(ValueError, match="write an IPv6 address in brackets"):
        HttpConfig(listen="::1:9188")


def policy(schedule: dict[str, object] | None) -> PolicyConfig:
    return PolicyConfig(
        name="nightly",
        servers=[1],
        timezone="Europe/Berlin",
        retention={"keep_last": 3},  # type: ignore[arg-type]
        schedule=schedule,  # type: ignore[arg-type]
    )


NOW = datetime(2026, 3, 28, 12, tzinfo=UTC)  # the day before Berlin's spring change


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        pytest.param(
            {"cron": "30 2 * * *", "jitter": "5m"},
            cron_trigger("30 2 * * *", "Europe/Berlin", timedelta(minutes=5)),
            id="cron",
        ),
        pytest.param(
            {"interval": "6h", "jitter": "1m"},
            interval_trigger(timedelta(hours=6), "Europe/Berlin", timedelta(minutes=1)),
            id="interval",
        ),
    ],
)
def test_the_daemon_builds_the_policys_trigger(schedule: dict[str, object], expected: object) -> None:
    """policy_trigger: the schedule's kind, the policy's zone and its jitter, as in rotator.schedule."""
    trigger = policy_trigger(policy(schedule))
    assert trigger is not None
    assert next_slots(trigger, NOW, 4) == next_slots(expected, NOW, 4)  # type: ignore[arg-type]
    assert trigger.jitter == expected.jitter  # type: ignore[attr-defined]


def test_no_schedule_no_trigger() -> None:
    """A policy without a schedule runs only with run-once: no trigger."""
    assert policy_trigger(policy(None)) is None
