"""The shipped alerting rules against Prometheus' own promtool, and a live /metrics that promtool accepts.

promtool comes from Debian's ``prometheus`` package, installed by :mod:`tests.promtool` where it is
missing (skipped, saying why, only where apt cannot install it).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.sandbox import RunningSandbox, SandboxOptions
from tests.promtool import PromtoolMissing, find_promtool
from tests.test_daemon_e2e import (
    Rotator,
    fixture_launch,
    fixture_serve,
    hourly_cron,
    minute_slot,
    wait_until,
    write_config,
)

__all__ = ["fixture_launch", "fixture_serve"]  # the daemon tests' fixtures, used here

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "rotator-rules.yaml"
RULE_TESTS = RULES_DIR / "rotator-rules.test.yaml"
DASHBOARD = RULES_DIR / "rotator-dashboard.json"


@pytest.fixture(name="promtool", scope="module")
def fixture_promtool() -> str:
    """promtool's path (installed from Debian's package where missing)."""
    try:
        return find_promtool()
    except PromtoolMissing as exc:
        pytest.skip(str(exc))


def promtool_run(promtool: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=RULES_DIR,
    )


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules(promtool: str) -> None:
    """The rules file is valid for Prometheus (expressions parse, fields known)."""
    result = promtool_run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules_with_restarts(promtool: str) -> None:
    """The rules' unit tests pass: each alert fires when it should, through a restart of rotator."""
    result = promtool_run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_rule_without_keep_firing_for_would_not_survive_the_restart(promtool: str, tmp_path: Path) -> None:
    """The restart cases are real: without keep_firing_for, the overdue and failing alerts drop."""
    weakened = RULES.read_text(encoding="utf-8").replace("keep_firing_for: 15m", "keep_firing_for: 0s")
    (tmp_path / RULES.name).write_text(weakened, encoding="utf-8")
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    for alert in ("RotatorBackupOverdue", "RotatorServerBackupOverdue", "RotatorRunsFailing"):
        assert f"alertname: {alert}" in result.stdout + result.stderr


def test_every_alert_has_for_severity_and_annotations_and_a_firing_test() -> None:
    """Each rule waits (``for:``), names its severity, says what and why; each fires in a unit test."""
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == {
        "RotatorBackupOverdue",
        "RotatorServerBackupOverdue",
        "RotatorRunsFailing",
        "RotatorDeletesHeldBack",
        "RotatorTokenRejected",
        "RotatorDown",
        "RotatorAbsent",
        "RotatorNoLeader",
        "RotatorEtcdUnreachable",
        "RotatorLeaderFlapping",
    }
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert rule["alert"] in fired, f"{rule['alert']} never fires in {RULE_TESTS.name}"


def test_the_dashboard_reads_only_metrics_rotator_serves() -> None:
    """The Grafana dashboard is JSON whose queries name rotator's metrics (or up), none made up."""
    dashboard = yaml.safe_load(DASHBOARD.read_text(encoding="utf-8"))  # JSON is YAML
    known = {
        "rotator_servers",
        "rotator_servers_overdue",
        "rotator_servers_failing",
        "rotator_oldest_last_success_timestamp_seconds",
        "rotator_policy_max_age_seconds",
        "rotator_deletes_held_back",
        "rotator_api_authenticated",
        "rotator_runs_total",
        "rotator_run_duration_seconds_bucket",
        "rotator_backups_created_total",
        "rotator_backups_deleted_total",
        "rotator_backups_failed_total",
        "rotator_backups_blocked_total",
        "rotator_api_requests_total",
        "rotator_api_rate_limited_total",
        "rotator_api_request_duration_seconds_bucket",
        "up",
    }
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\b(rotator_[a-z_]+|up)\b", expr))
        assert names, expr
        assert names <= known, f"{expr}: {names - known}"


# -- a live /metrics --------------------------------------------------------------------------


def scrape(port: int) -> str:
    """/metrics as Prometheus asks for it (gzip); httpx decodes it."""
    response = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10, trust_env=False
    )
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    return response.text


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def listening_port(daemon: Rotator) -> int:
    (event,) = daemon.wait_for("health.listening")
    return int(event["port"])


def test_a_live_daemon_passes_promtool_check_metrics_and_restarts_with_its_state(
    promtool: str,
    serve: Callable[[SandboxOptions], RunningSandbox],
    launch: Callable[..., Rotator],
    tmp_path: Path,
) -> None:
    """``rotator run`` on loopback: its /metrics passes ``promtool check metrics``; after a restart,
    before any run, the fleet gauges and per-server series say what they said (read from the API)."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=2, owner="nightly", create_seconds=0.3)
    )
    slot = minute_slot(1)
    policy = {
        "name": "nightly",
        "servers": [1, 2, 3],
        "schedule": {"cron": hourly_cron(slot)},
        "retention": {"keep_last": 2},
    }
    config = write_config(
        tmp_path / "rotator.yaml",
        [policy],
        http={"listen": "127.0.0.1:0"},
        metrics={"per_server": True},
    )
    first = launch(sandbox, "run", "--config", str(config))
    port = listening_port(first)
    first.wait_for("run.finished")  # the catch-up of the slot a minute ago
    text = scrape(port)
    check = promtool_run(promtool, "check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr
    before = samples(text)
    nightly = frozenset({("policy", "nightly")})
    assert before[("rotator_servers", nightly)] == 3
    assert before[("rotator_servers_overdue", nightly)] == 0
    assert before[("rotator_servers_failing", nightly)] == 0
    assert before[("rotator_api_authenticated", frozenset())] == 1
    assert not [name for name, _ in before if name.endswith("_created")]
    assert first.stop() == 0, first.tail()

    second = launch(sandbox, "run", "--config", str(config))
    port = listening_port(second)
    oldest = ("rotator_oldest_last_success_timestamp_seconds", nightly)

    def seeded() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        found = samples(scrape(port))
        return found if found.get(oldest, 0) > 0 else None

    after = wait_until(seeded, "the restarted daemon's last successes, read from the API")
    assert after[oldest] == slot.timestamp()  # the newest completed backup's slot, by its marker
    assert after[("rotator_servers_overdue", nightly)] == 0
    assert after[("rotator_servers_failing", nightly)] == 0
    for sid in ("1", "2", "3"):
        key = ("rotator_last_success_timestamp_seconds", nightly | {("server_id", sid)})
        assert after[key] == slot.timestamp()
    failed = nightly | {("outcome", "failed"), ("dry_run", "false")}
    assert after[("rotator_runs_total", failed)] == 0  # present at 0: increase() sees the next failure
    assert not second.events("run.finished")  # no run told it: the API did
    check = promtool_run(promtool, "check", "metrics", stdin=scrape(port))
    assert check.returncode == 0, check.stdout + check.stderr
    assert second.stop() == 0, second.tail()
