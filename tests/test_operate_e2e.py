"""Operating rotator: the daemon's health listener, metrics and pings, and ``rotator healthcheck``,
with real processes against the sandbox on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.sandbox import RunningSandbox, SandboxOptions
from tests.test_daemon_e2e import (
    DEADLINE,
    Rotator,
    fixture_launch,  # noqa: F401 - pytest finds fixtures by name
    fixture_serve,  # noqa: F401
    hourly_cron,
    minute_slot,
    rotator_env,
    run_rotator,
    write_config,
)
from tests.test_pings import Monitor

SERVERS = [1, 2, 3]


@pytest.fixture(name="monitor")
def fixture_monitor() -> Iterator[Monitor]:
    """A healthchecks.io stand-in on loopback."""
    monitor = Monitor()
    yield monitor
    monitor.close()


def policy(monitor: Monitor) -> dict[str, object]:
    """A policy whose latest slot (two minutes ago) was missed: the daemon catches it up at start."""
    return {
        "name": "hourly",
        "servers": SERVERS,
        "schedule": {"cron": hourly_cron(minute_slot(2))},
        "retention": {"keep_last": 2},
        "pings": {"url": f"{monitor.url}/ping/hourly-check"},
    }


def healthcheck(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", "healthcheck", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def listening_port(process: Rotator) -> int:
    (listening,) = process.wait_for("health.listening")
    return int(listening["port"])


def test_the_daemon_serves_health_metrics_and_pings(
    serve: Callable[[SandboxOptions], RunningSandbox],
    launch: Callable[..., Rotator],
    monitor: Monitor,
    tmp_path: Path,
) -> None:
    """A run (the start's catch-up) shows in /metrics and in pings; healthcheck follows the daemon's life."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=4, owner="hourly", create_seconds=0.3)
    )
    config = write_config(
        tmp_path / "rotator.yaml",
        [policy(monitor)],
        http={"listen": "127.0.0.1:0"},
        metrics={"per_server": True},
    )
    daemon = launch(sandbox, "run", "--config", str(config))
    port = listening_port(daemon)
    url = f"http://127.0.0.1:{port}"
    (finished,) = daemon.wait_for("run.finished")
    assert finished["ok"], daemon.tail()

    checked = healthcheck("--url", url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("healthy: /healthz 200")
    # the container's way: the listen address from the environment, as the Dockerfile sets it
    from_env = healthcheck(env={**rotator_env(sandbox), "ROTATOR_HTTP__LISTEN": f"0.0.0.0:{port}"})
    assert from_env.returncode == 0, from_env.stdout + from_env.stderr

    metrics = samples(httpx.get(f"{url}/metrics", timeout=DEADLINE).text)
    hourly = frozenset({("policy", "hourly")})
    assert metrics[("rotator_runs_total", hourly | {("outcome", "ok"), ("dry_run", "false")})] == 1
    assert metrics[("rotator_servers", hourly)] == len(SERVERS)
    assert metrics[("rotator_servers_overdue", hourly)] == 0
    assert metrics[("rotator_servers_failing", hourly)] == 0
    assert metrics[("rotator_backups_created_total", frozenset({("policy", "hourly")}))] == 3
    # 4 owned + 1 new each, keep_last 2: three deletes per server
    assert metrics[("rotator_backups_deleted_total", frozenset({("policy", "hourly")}))] == 9
    creates = frozenset({("method", "POST"), ("route", "/api/v1/backups/"), ("status", "201")})
    assert metrics[("rotator_api_requests_total", creates)] == 3
    deletes = frozenset({("method", "DELETE"), ("route", "/api/v1/backups/{id}/"), ("status", "204")})
    assert metrics[("rotator_api_requests_total", deletes)] == 9
    assert metrics[("rotator_api_authenticated", frozenset())] == 1
    for server in SERVERS:
        key = (
            "rotator_last_success_timestamp_seconds",
            frozenset({("policy", "hourly"), ("server_id", str(server))}),
        )
        assert metrics[key] > 0

    paths = [ping.path for ping in monitor.pings]
    assert paths == ["/ping/hourly-check/start", "/ping/hourly-check"]
    assert "policy hourly ok" in monitor.pings[1].body

    assert daemon.stop() == 0
    after = healthcheck("--url", url)
    assert after.returncode == 1
    assert after.stdout.startswith("unhealthy: cannot ask")


def test_a_revoked_token_makes_the_daemon_not_ready(
    serve: Callable[[SandboxOptions], RunningSandbox],
    launch: Callable[..., Rotator],
    monitor: Monitor,
    tmp_path: Path,
) -> None:
    """The API answers 401: /readyz fails naming the token, /healthz stays up, healthcheck exits 1."""
    sandbox = serve(SandboxOptions(fleet="uniform", servers=3, backups_per_server=2, owner="hourly"))
    sandbox = RevokedToken(sandbox)
    config = write_config(tmp_path / "rotator.yaml", [policy(monitor)], http={"listen": "127.0.0.1:0"})
    daemon = launch(sandbox, "run", "--config", str(config))
    port = listening_port(daemon)
    daemon.wait_for("catch_up.listing_failed")
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/healthz", timeout=DEADLINE).status_code == 200
    ready = httpx.get(f"{url}/readyz", timeout=DEADLINE)
    assert ready.status_code == 503
    assert ready.json()["checks"]["api_auth"] == "token rejected"
    checked = healthcheck("--url", url)
    assert checked.returncode == 1
    assert "token rejected" in checked.stdout
    assert "rotator_api_authenticated 0.0" in httpx.get(f"{url}/metrics", timeout=DEADLINE).text
    assert daemon.stop() == 0


class RevokedToken:
    """A running sandbox as rotator sees it with a token the API no longer accepts."""

    def __init__(self, running: RunningSandbox) -> None:
        self.api_url = running.api_url
        self.token = "revoked-" + running.token
        self.sandbox = running.sandbox


def test_run_once_pings_and_a_dry_run_does_not(
    serve: Callable[[SandboxOptions], RunningSandbox], monitor: Monitor, tmp_path: Path
) -> None:
    """run-once (a CronJob's run) pings start and success; --dry-run pings nothing."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=2, owner="hourly", create_seconds=0.3)
    )
    config = write_config(tmp_path / "rotator.yaml", [policy(monitor)])
    dry = run_rotator(sandbox, "run-once", "--config", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert monitor.pings == []
    once = run_rotator(sandbox, "run-once", "--config", str(config))
    assert once.returncode == 0, once.stderr
    assert [ping.path for ping in monitor.pings] == ["/ping/hourly-check/start", "/ping/hourly-check"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_once_stopped_while_it_waits_is_abandoned(
    serve: Callable[[SandboxOptions], RunningSandbox],
    launch: Callable[..., Rotator],
    monitor: Monitor,
    tmp_path: Path,
    signum: int,
) -> None:
    """A stop during the wait: exit 75, the summary says abandoned, /start was pinged and no /fail."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=2, owner="hourly", create_seconds=3600)
    )
    config = write_config(tmp_path / "rotator.yaml", [policy(monitor)])
    once = launch(sandbox, "run-once", "--config", str(config))
    once.wait_for("backup.created", count=len(SERVERS))  # every server's backup runs: the wait began
    assert [ping.path for ping in monitor.pings] == ["/ping/hourly-check/start"]

    code = once.stop(signum)
    assert code == 75, once.tail()
    (summary,) = once.stdout.splitlines()
    assert summary.startswith(
        "policy hourly ABANDONED: 3 servers, 3 created, 0 adopted, 0 deleted, 0 kept, 0 blocked, "
        "0 failed, 0 unknown, 3 abandoned in "
    ), summary
    (finished,) = once.events("run.finished")
    assert (finished["status"], finished["ok"], finished["abandoned"]) == ("abandoned", False, 3)
    assert once.events("ping.skipped", reason="run abandoned by a shutdown")
    assert [ping.path for ping in monitor.pings] == ["/ping/hourly-check/start"]
    assert sandbox.state.events("deleted") == []
    assert "Traceback" not in "\n".join(once.lines)


def test_healthcheck_without_a_listener_is_a_configuration_error(tmp_path: Path) -> None:
    """No --url, no ROTATOR_HTTP__LISTEN and no http.listen: exit 78 naming what to set."""
    config = write_config(
        tmp_path / "rotator.yaml", [{"name": "n", "servers": [1], "retention": {"keep_last": 1}}]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
    checked = healthcheck("--config", str(config), env=env)
    assert checked.returncode == 78
    assert "http.listen" in checked.stderr
    assert "Traceback" not in checked.stderr
