"""Several rotator processes on one configuration, coordinated by a real three-member etcd, against
the sandbox on loopback: one acts, the others stand by, and no slot gets two backups.

Judged from the sandbox's own records (its event log and request counts) and the leader key in
etcd; every wait polls a condition against a deadline. Failover times are measured and bounded:
from the leader's SIGKILL (or its SIGSTOP, or the cut of its way to etcd) to the leader key naming
another replica.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.sandbox import RunningSandbox, SandboxOptions
from tests.etcd_cluster import EtcdCluster, TcpProxy, _post, fixture_etcd, free_port
from tests.test_daemon_e2e import (
    FAST_API,
    FAST_DAEMON,
    Rotator,
    fixture_launch,
    fixture_serve,
    rotator_env,
    server_of,
    wait_until,
)

__all__ = ["fixture_etcd", "fixture_launch", "fixture_serve"]

pytestmark = pytest.mark.slow

TTL = 4.0  # the test cluster's minimum lease TTL is 3 s
EXIT_DECLINED = 73
EXIT_CONFIG = 78
MARKER = re.compile(r"\[rotator:(?P<policy>[A-Za-z0-9._-]+)@(?P<slot>[0-9T:Z-]+)(?:#(?P<attempt>\d+))?\]\Z")
FAILOVERS: dict[str, float] = {}  # what the replicas test measured, printed at its end


def coordinated(
    path: Path,
    endpoints: list[str],
    name: str,
    policies: list[dict[str, Any]],
    **etcd: Any,
) -> Path:
    document = {
        "policies": policies,
        "api": FAST_API,
        "daemon": FAST_DAEMON,
        "log": {"format": "json", "level": "info"},
        "coordination": {
            "backend": "etcd",
            "name": name,
            "etcd": {"endpoints": endpoints, "prefix": "/rotator/test/", "lease_ttl": f"{TTL:g}s", **etcd},
        },
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def leader_name(etcd: EtcdCluster, prefix: str = "/rotator/test/") -> str | None:
    """Who the leader key names now (read from any member that answers), or None."""
    key = base64.b64encode(f"{prefix}leader".encode()).decode()
    for member in etcd.members:
        if not member.running() or member.paused:
            continue
        answer = _post(f"{member.client_url}/v3/kv/range", {"key": key})
        if answer is None:
            continue
        kvs = answer.get("kvs")
        if not kvs:
            return None
        assert isinstance(kvs, list)
        value: dict[str, Any] = json.loads(base64.b64decode(kvs[0]["value"]))
        return str(value["name"])
    return None


def attempt_keys(sandbox: RunningSandbox) -> Counter[tuple[str, int, str, int]]:
    """Backups created for each (policy, server, slot, attempt)."""
    keys: Counter[tuple[str, int, str, int]] = Counter()
    for event in sandbox.sandbox.state.events("created"):
        match = MARKER.search(event.backup["description"] or "")
        if match:
            keys[(match["policy"], server_of(event), match["slot"], int(match["attempt"] or 1))] += 1
    return keys


def deletes_refused(sandbox: RunningSandbox) -> int:
    """DELETEs answered 404: a backup deleted twice (nobody else deletes in these tests)."""
    requests = sandbox.sandbox.stats()["requests"]
    return sum(counts.get("404", 0) for route, counts in requests.items() if route.startswith("DELETE"))


POLICY = {
    "name": "ha",
    "servers": [1, 2, 3, 4],
    "schedule": {"interval": "3s"},
    "retention": {"keep_last": 3},
}


@pytest.fixture(name="proxies")
def fixture_proxies() -> Iterator[list[TcpProxy]]:
    made: list[TcpProxy] = []
    yield made
    for proxy in made:
        proxy.close()


def test_three_replicas_one_backup_per_attempt_through_kills_stops_and_cuts(
    etcd: EtcdCluster,
    serve: Callable[[SandboxOptions], RunningSandbox],
    launch: Callable[..., Rotator],
    proxies: list[TcpProxy],
    tmp_path: Path,
) -> None:
    """Three `rotator run` replicas, runs every 3 s: the leader SIGKILLed, then SIGSTOPped past its TTL
    and resumed, the etcd raft leader killed, a leader cut off from etcd; failover each time within
    lease_ttl + 1 s; exactly one backup per (policy, server, slot, attempt), no DELETE sent twice."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=4, backups_per_server=3, owner="ha", create_seconds=0.5)
    )
    replicas: dict[str, Rotator] = {}
    routes: dict[str, list[TcpProxy]] = {}

    def start(name: str) -> None:
        routes[name] = [TcpProxy(member.client_port) for member in etcd.members]
        proxies.extend(routes[name])
        config = coordinated(tmp_path / f"{name}.yaml", [p.url for p in routes[name]], name, [POLICY])
        replicas[name] = launch(sandbox, "run", "--config", str(config))

    for name in ("r0", "r1", "r2"):
        start(name)

    def runs_by(name: str) -> int:
        return len(replicas[name].events("run.finished"))

    def new_leader(old: str) -> Callable[[], str | None]:
        def changed() -> str | None:
            now = leader_name(etcd)
            return now if now not in (None, old) else None

        return changed

    def fail_over(what: str, act: Callable[[], None], old: str) -> str:
        started = time.monotonic()
        act()
        taken = str(wait_until(new_leader(old), f"another leader after {what}", timeout=TTL + 15))
        FAILOVERS[what] = time.monotonic() - started
        return taken

    first = str(wait_until(lambda: leader_name(etcd), "a leader"))
    before = runs_by(first)
    wait_until(lambda: runs_by(first) >= before + 2, "two runs by the first leader", timeout=30)
    others = [name for name in replicas if name != first]
    assert all(runs_by(name) == 0 for name in others)
    wait_until(
        lambda: all(replicas[name].events("run.skipped") for name in others),
        "the standbys to skip a scheduled run",
        timeout=15,
    )
    assert all(runs_by(name) == 0 for name in others)

    # 1. kill -9 of the leader
    second = fail_over("SIGKILL of the leader", replicas[first].process.kill, first)
    before = runs_by(second)
    wait_until(lambda: runs_by(second) >= before + 2, "two runs by the second leader", timeout=30)

    # 2. SIGSTOP of the leader past its TTL, then SIGCONT: it must not act on waking
    third = fail_over("SIGSTOP of the leader", lambda: replicas[second].send(signal.SIGSTOP), second)
    before = runs_by(third)
    wait_until(lambda: runs_by(third) >= before + 1, "a run by the third leader", timeout=30)
    standing = len(replicas[second].events("coordination.role", role="standby"))
    replicas[second].send(signal.SIGCONT)
    replicas[second].wait_for("coordination.role", standing + 1, role="standby", timeout=TTL + 10)

    # 3. the etcd raft leader member killed
    raft = etcd.leader()
    assert raft is not None
    raft.kill()
    etcd.wait_healthy()
    leader = str(wait_until(lambda: leader_name(etcd), "a leader after the etcd leader's death"))
    before = runs_by(leader)
    wait_until(lambda: runs_by(leader) >= before + 1, "a run after the etcd leader's death", timeout=40)
    raft.restart()

    # 4. the leader cut off from etcd (its proxies refuse): another takes over, it stands by
    cut = leader

    def cut_off() -> None:
        for proxy in routes[cut]:
            proxy.cut()

    said = len(replicas[cut].events("coordination.unreachable"))
    back = len(replicas[cut].events("coordination.reachable"))
    fourth = fail_over("leader cut off from etcd", cut_off, cut)
    replicas[cut].wait_for("coordination.unreachable", said + 1, timeout=TTL + 10)
    before = runs_by(fourth)
    wait_until(lambda: runs_by(fourth) >= before + 2, "two runs by the fourth leader", timeout=30)
    for proxy in routes[cut]:
        proxy.heal()
    replicas[cut].wait_for("coordination.reachable", back + 1, timeout=TTL + 10)

    for name, replica in replicas.items():
        if replica.process.poll() is None:
            assert replica.stop() == 0, replica.tail()
        elif name != first:
            raise AssertionError(f"{name} died: {replica.tail()}")

    keys = attempt_keys(sandbox)
    assert len({slot for _, _, slot, _ in keys}) >= 8, "many slots were run"
    twice = [key for key, count in keys.items() if count > 1]
    assert not twice, f"two backups for one (policy, server, slot, attempt): {twice}"
    assert deletes_refused(sandbox) == 0, "a DELETE was sent twice"
    deleted = [event.backup["id"] for event in sandbox.sandbox.state.events("deleted")]
    assert deleted
    assert len(deleted) == len(set(deleted))
    print("\nfailover times:", {what: round(took, 2) for what, took in FAILOVERS.items()})
    for what, took in FAILOVERS.items():
        assert took <= TTL + 1.0, f"failover after {what} took {took:.2f}s"


def test_two_run_once_at_once_one_acts_the_other_declines(
    etcd: EtcdCluster,
    serve: Callable[[SandboxOptions], RunningSandbox],
    tmp_path: Path,
) -> None:
    """Two `run-once` started together: one holds the lease and acts (exit 0), the other declines with
    exit 73 and one line; one backup per server."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=2, owner="once", create_seconds=6)
    )
    policy = {"name": "once", "servers": [1, 2, 3], "retention": {"keep_last": 3}}
    launched = []
    for name in ("a", "b"):
        config = coordinated(tmp_path / f"{name}.yaml", etcd.endpoints, name, [policy])
        launched.append(
            subprocess.Popen(
                [sys.executable, "-m", "rotator", "run-once", "--config", str(config)],
                env=rotator_env(sandbox),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [process.communicate(timeout=60) for process in launched]
    codes = sorted(process.returncode for process in launched)
    assert codes == [0, EXIT_DECLINED], results
    declined = next(err for process, (_, err) in zip(launched, results, strict=True) if process.returncode)
    lines = [line for line in declined.splitlines() if line.startswith("rotator:")]
    assert lines == [lines[0]]
    assert "holds the coordination lease; nothing done" in lines[0]
    keys = attempt_keys(sandbox)
    assert sorted(sid for _, sid, _, _ in keys) == [1, 2, 3]
    assert max(keys.values()) == 1
    assert leader_name(etcd) is None, "the lease was released at the end of the run"


# -- bad input: one clear line, no action ------------------------------------------------------------


SMALL = SandboxOptions(fleet="uniform", servers=4, backups_per_server=1, owner="ha", create_seconds=0.3)


def _run(sandbox: RunningSandbox, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rotator", *argv],
        env=rotator_env(sandbox),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["run", "run-once"])
def test_etcd_unreachable_at_start(
    serve: Callable[[SandboxOptions], RunningSandbox], tmp_path: Path, command: str
) -> None:
    """No etcd at the endpoints: one line naming them, exit 1, not one API request."""
    sandbox = serve(SMALL)
    port = free_port()
    config = coordinated(tmp_path / "c.yaml", [f"http://127.0.0.1:{port}"], "a", [POLICY])
    done = _run(sandbox, command, "--config", str(config))
    assert done.returncode == 1
    assert _one_line(done).startswith(f"rotator: no etcd endpoint answered: http://127.0.0.1:{port}: ")
    assert sandbox.sandbox.stats()["total"] == 0


def test_wrong_credentials_are_refused(
    etcd: EtcdCluster, serve: Callable[[SandboxOptions], RunningSandbox], tmp_path: Path
) -> None:
    """Auth enabled, a wrong password: one line naming the user (not the password), exit 78, no action."""
    ctl = ["etcdctl", "--endpoints", ",".join(etcd.endpoints)]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    for step in (["user", "add", "root:right-pw-42"], ["auth", "enable"]):
        assert subprocess.run([*ctl, *step], env=env, capture_output=True, check=False).returncode == 0
    sandbox = serve(SMALL)
    secret = tmp_path / "etcd-password"
    secret.write_text("wrong-pw-17\n", encoding="utf-8")
    config = coordinated(
        tmp_path / "c.yaml", etcd.endpoints, "a", [POLICY], username="root", password_file=str(secret)
    )
    done = _run(sandbox, "run-once", "--config", str(config))
    assert done.returncode == EXIT_CONFIG
    line = _one_line(done)
    assert "rejected the credentials of user 'root'" in line
    assert "wrong-pw-17" not in done.stderr + done.stdout
    assert sandbox.sandbox.stats()["total"] == 0
    secret.write_text("right-pw-42\n", encoding="utf-8")
    done = _run(sandbox, "run-once", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout


def test_another_configuration_on_the_same_prefix_is_refused(
    etcd: EtcdCluster,
    serve: Callable[[SandboxOptions], RunningSandbox],
    launch: Callable[..., Rotator],
    tmp_path: Path,
) -> None:
    """A daemon leads the prefix; an instance with other policies on it: one line, exit 78, no action."""
    sandbox = serve(SMALL)
    config = coordinated(tmp_path / "a.yaml", etcd.endpoints, "a", [POLICY])
    leader = launch(sandbox, "run", "--config", str(config))
    leader.wait_for("run.finished", timeout=30)
    requests = sandbox.sandbox.stats()["total"]
    other = {**POLICY, "servers": [1, 2]}
    stranger = coordinated(tmp_path / "b.yaml", etcd.endpoints, "b", [other])
    for command in ("run", "run-once"):
        done = _run(sandbox, command, "--config", str(stranger))
        assert done.returncode == EXIT_CONFIG, done.stderr
        assert "etcd prefix '/rotator/test/' is in use by another configuration" in _one_line(done)
    assert leader.stop() == 0
    assert sandbox.sandbox.stats()["total"] >= requests  # only the leader's own runs


def test_tls_misconfigured(
    etcd: EtcdCluster, serve: Callable[[SandboxOptions], RunningSandbox], tmp_path: Path
) -> None:
    """A missing CA file (exit 78), and https to an etcd that speaks http (exit 1): one line each."""
    sandbox = serve(SMALL)
    https = [url.replace("http://", "https://") for url in etcd.endpoints]
    missing = coordinated(tmp_path / "a.yaml", https, "a", [POLICY], ca_file=str(tmp_path / "nope.pem"))
    done = _run(sandbox, "run-once", "--config", str(missing))
    assert done.returncode == EXIT_CONFIG
    assert "coordination.etcd.ca_file: no such file" in _one_line(done)
    plain = coordinated(tmp_path / "b.yaml", https[:1], "a", [POLICY])
    done = _run(sandbox, "run-once", "--config", str(plain))
    assert done.returncode == 1
    assert "TLS handshake failed" in _one_line(done)
    assert sandbox.sandbox.stats()["total"] == 0


def test_a_new_leader_adopts_the_slot_in_flight_and_prunes_once(
    etcd: EtcdCluster,
    serve: Callable[[SandboxOptions], RunningSandbox],
    launch: Callable[..., Rotator],
    tmp_path: Path,
) -> None:
    """The leader SIGKILLed while its backups are in progress: the standby takes over within
    lease_ttl + 1 s, its catch-up adopts each backup by its marker (no second create), waits for it
    and prunes once."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=4, owner="slow", create_seconds=8)
    )
    policy = {
        "name": "slow",
        "servers": [1, 2, 3],
        "schedule": {"interval": "1h"},
        "retention": {"keep_last": 3},
    }
    first = launch(
        sandbox, "run", "--config", str(coordinated(tmp_path / "a.yaml", etcd.endpoints, "a", [policy]))
    )
    first.wait_for("backup.created", 3, timeout=30)  # its catch-up of the latest slot, in progress
    second = launch(
        sandbox, "run", "--config", str(coordinated(tmp_path / "b.yaml", etcd.endpoints, "b", [policy]))
    )
    wait_until(lambda: any(line.startswith("{") for line in second.lines), "the second replica to log")
    assert leader_name(etcd) == "a"
    struck = time.monotonic()
    first.process.kill()
    wait_until(lambda: leader_name(etcd) == "b", "b to lead", timeout=TTL + 10)
    took = time.monotonic() - struck
    second.wait_for("catch_up.started", timeout=10)
    adopted = second.wait_for("backup.adopted", 3, timeout=30)
    assert sorted(event["server_id"] for event in adopted) == [1, 2, 3]
    second.wait_for("run.finished", timeout=30)
    assert second.stop() == 0, second.tail()
    assert not second.events("backup.created")
    keys = attempt_keys(sandbox)
    assert sorted(keys.values()) == [1, 1, 1]
    deleted = [event.backup["id"] for event in sandbox.sandbox.state.events("deleted")]
    assert len(deleted) == 3 * 2  # 4 + 1 down to keep_last 3 on each server, once
    assert len(set(deleted)) == len(deleted)
    assert deletes_refused(sandbox) == 0
    print(f"\nfailover with backups in flight: {took:.2f}s")
    assert took <= TTL + 1.0
