"""Coordination without etcd: the configuration section, the fingerprint, the daemon's roles, the
runner's guard, and what metrics and /readyz say (the real cluster is in test_coordination_etcd.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import respx
import structlog
import yaml

from rotator import errors
from rotator.config import ConfigError, load_config
from rotator.coordination import Fence, NoCoordination, OnChange, Role, claim_path
from rotator.coordination.etcd import EtcdCoordinator, EtcdSettings
from rotator.health import HealthState
from rotator.leadership import config_fingerprint, coordinator_from_config
from rotator.metrics import Metrics
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Runner, RunReport
from rotator.schedule import interval_trigger
from rotator.scheduler import Daemon, ScheduledJob
from rotator.telemetry import Telemetry
from tests.sandbox_clients import SandboxTime, sandbox_client, sandbox_runner

SLOT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
POLICY = {"name": "p", "servers": [1], "retention": {"keep_last": 2}}


def write(tmp_path: Path, coordination: Any, policies: Any = None) -> Path:
    path = tmp_path / "rotator.yaml"
    document = {"policies": policies or [POLICY], "coordination": coordination}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


# -- configuration -------------------------------------------------------------------


def test_no_coordination_by_default(tmp_path: Path) -> None:
    """Without the section: backend none, named after the host; the coordinator is NoCoordination."""
    config = load_config(write(tmp_path, None))
    assert config.coordination.backend == "none"
    assert config.coordination.name
    coordinator = coordinator_from_config(config, "http://127.0.0.1/api/v1")
    assert isinstance(coordinator, NoCoordination)
    assert coordinator.is_leader()


def test_the_etcd_section_with_its_defaults(tmp_path: Path) -> None:
    """backend etcd: endpoints, prefix /rotator/, lease_ttl 15s."""
    config = load_config(write(tmp_path, {"backend": "etcd", "name": "a", "etcd": {}}))
    assert config.coordination.etcd is not None
    assert config.coordination.etcd.endpoints == ["http://127.0.0.1:2379"]
    assert config.coordination.etcd.prefix == "/rotator/"
    assert config.coordination.etcd.lease_ttl == timedelta(seconds=15)
    coordinator = coordinator_from_config(config, "http://127.0.0.1/api/v1")
    assert isinstance(coordinator, EtcdCoordinator)
    assert coordinator.name == "a"


@pytest.mark.parametrize(
    ("coordination", "message"),
    [
        ({"backend": "etcd"}, "coordination: Value error, backend etcd needs an etcd section"),
        ({"backend": "zookeeper"}, "coordination.backend: Input should be 'none' or 'etcd'"),
        ({"backend": "etcd", "etcd": {"endpoints": ["etcd:2379"]}}, "is not an etcd client URL"),
        ({"backend": "etcd", "etcd": {"prefix": "rotator"}}, "coordination.etcd.prefix: must start and end"),
        (
            {"backend": "etcd", "etcd": {"lease_ttl": "1s"}},
            "coordination.etcd.lease_ttl: must be at least 2s",
        ),
        ({"backend": "etcd", "etcd": {"username": "root"}}, "username and password_file go together"),
        ({"backend": "etcd", "etcd": {"cert_file": "/c.pem"}}, "cert_file and key_file go together"),
        (
            {"backend": "etcd", "etcd": {"ca_file": "/ca.pem"}},
            "ca_file/cert_file are for https endpoints",
        ),
        (
            {
                "backend": "etcd",
                "etcd": {"endpoints": ["http://etcd.example:2379"], "username": "u", "password_file": "/p"},
            },
            "the etcd password would travel in clear",
        ),
        ({"backend": "etcd", "name": "a b", "etcd": {}}, "coordination.name: String should match pattern"),
        ({"backend": "etcd", "etcd": {"lease": "15s"}}, "coordination.etcd.lease: unknown key"),
    ],
)
def test_a_bad_section_names_its_key(tmp_path: Path, coordination: Any, message: str) -> None:
    """Each mistake: one line naming the key's path."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, coordination))
    assert message.replace("Value error, ", "") in str(caught.value)


def test_a_password_file_that_cannot_be_read(tmp_path: Path) -> None:
    """A password file that is missing: one line naming coordination.etcd.password_file."""
    section = {"backend": "etcd", "etcd": {"username": "u", "password_file": str(tmp_path / "gone")}}
    config = load_config(write(tmp_path, section))
    with pytest.raises(ConfigError, match=r"coordination\.etcd\.password_file: cannot read .*gone"):
        coordinator_from_config(config, "http://127.0.0.1/api/v1")


def test_the_fingerprint_is_the_api_and_the_policies(tmp_path: Path) -> None:
    """Two replicas' names do not change it; another policy or another API does."""
    first = load_config(write(tmp_path, {"backend": "etcd", "name": "a", "etcd": {}}))
    second = load_config(write(tmp_path, {"backend": "etcd", "name": "b", "etcd": {"lease_ttl": "9s"}}))
    url = "https://api.example/api/v1"
    assert config_fingerprint(first, url) == config_fingerprint(second, url)
    assert len(config_fingerprint(first, url)) == 16
    assert config_fingerprint(first, url) != config_fingerprint(first, "https://other.example/api/v1")
    other = load_config(write(tmp_path, None, [{**POLICY, "servers": [1, 2]}]))
    assert config_fingerprint(other, url) != config_fingerprint(first, url)


def test_claim_paths() -> None:
    """A claim's key: policy, server, the slot in UTC to the second, the attempt."""
    assert claim_path("p", 12, SLOT, 2) == "claims/p/12/2026-12-02T03:00:00Z/2"


# -- the gateway's answers, mapped (respx) ----------------------------------------------


@respx.mock
async def test_an_unavailable_member_passes_to_the_next() -> None:
    """A member answering 'unavailable' (no raft leader) or not answering: the next one is asked."""
    respx.post("http://e1:2379/v3/kv/txn").mock(
        return_value=httpx.Response(503, json={"code": 14, "message": "etcdserver: no leader"})
    )
    respx.post("http://e2:2379/v3/kv/txn").mock(side_effect=httpx.ConnectError("refused"))
    respx.post("http://e3:2379/v3/kv/txn").mock(return_value=httpx.Response(200, json={"header": {}}))
    coordinator = EtcdCoordinator(
        EtcdSettings(endpoints=("http://e1:2379", "http://e2:2379", "http://e3:2379")),
        name="a",
        fingerprint="f" * 16,
    )
    await coordinator.start()
    assert coordinator.gateway.endpoint == "http://e3:2379"
    await coordinator.aclose()


@respx.mock
async def test_no_member_answers() -> None:
    """Every member down: CoordinationUnavailable naming each, in one line."""
    respx.post("http://e1:2379/v3/kv/txn").mock(
        return_value=httpx.Response(503, json={"code": 14, "message": "etcdserver: no leader"})
    )
    respx.post("http://e2:2379/v3/kv/txn").mock(return_value=httpx.Response(200, text="<html>"))
    coordinator = EtcdCoordinator(
        EtcdSettings(endpoints=("http://e1:2379", "http://e2:2379")), name="a", fingerprint="f" * 16
    )
    with pytest.raises(errors.CoordinationUnavailable) as caught:
        await coordinator.start()
    assert str(caught.value) == (
        "no etcd endpoint answered: http://e1:2379: etcdserver: no leader; "
        "http://e2:2379: answered something that is not JSON"
    )
    await coordinator.aclose()


@respx.mock
async def test_permission_denied_names_the_prefix() -> None:
    """A user without rights on the prefix: CoordinationRefused (exit 78) naming user and prefix."""
    respx.post("http://e1:2379/v3/auth/authenticate").mock(
        return_value=httpx.Response(200, json={"token": "tok.1"})
    )
    denied = respx.post("http://e1:2379/v3/kv/txn").mock(
        return_value=httpx.Response(403, json={"code": 7, "message": "etcdserver: permission denied"})
    )
    coordinator = EtcdCoordinator(
        EtcdSettings(endpoints=("http://e1:2379",), username="bob", password="pw-never-shown"),
        name="a",
        fingerprint="f" * 16,
    )
    with pytest.raises(errors.CoordinationRefused, match="grant user 'bob' read-write on the prefix"):
        await coordinator.start()
    assert denied.calls.last.request.headers["Authorization"] == "tok.1"
    assert "pw-never-shown" not in repr(coordinator.settings)
    await coordinator.aclose()


# -- the runner's guard ----------------------------------------------------------------------


class Refusing:
    """A coordinator that is not the leader."""

    name = "x"
    term = None
    role = Role.STANDBY

    async def claim(self, *args: Any) -> None:
        raise errors.NotLeader("x may not act: it is a standby")

    async def fence(self) -> None:
        raise errors.NotLeader("x may not act: it is a standby")

    def is_leader(self) -> bool:
        return False


async def test_a_refused_claim_creates_nothing_and_a_refused_fence_deletes_nothing(
    sandbox: Any, sandbox_api_url: str, sandbox_transport: httpx.ASGITransport
) -> None:
    """Not the leader: no POST and no DELETE reach the API; the servers are abandoned, not failed."""
    time = SandboxTime(sandbox)
    servers = tuple(server.id for server in sandbox.state.servers())[:2]
    policy = Policy("nightly", Retention(keep_last=1), servers=servers)
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, time) as client:
        runner = sandbox_runner(client, time, guard=Fence(cast(Any, Refusing())))
        with structlog.testing.capture_logs() as logs:
            report = await runner.run(JobSpec(policy), SLOT)
        assert report.status.value == "abandoned"
        assert "backup.not_created" in {entry["event"] for entry in logs}
        with structlog.testing.capture_logs() as logs:
            report = await runner.run(JobSpec(policy, create=False), SLOT)
        assert report.status.value == "abandoned"
        assert "prune.not_leader" in {entry["event"] for entry in logs}
    sent = sandbox.stats()["requests"]
    assert sent, "the runs listed the servers"
    assert not any(route.startswith(("POST", "DELETE")) for route in sent), sent


# -- the daemon's roles ------------------------------------------------------------------------


class Recording:
    def __init__(self) -> None:
        self.slots: list[datetime] = []

    async def run(self, spec: JobSpec, slot: datetime, **_: Any) -> RunReport:
        self.slots.append(slot)
        return RunReport(spec.name, slot, dry_run=False, servers=[])


class Scripted:
    """A coordinator whose role the test sets."""

    name = "me"

    def __init__(self) -> None:
        self.leading = False
        self.on_change: OnChange | None = None

    @property
    def role(self) -> Role:
        return Role.LEADER if self.leading else Role.STANDBY

    @property
    def term(self) -> int | None:
        return 1 if self.leading else None

    def is_leader(self) -> bool:
        return self.leading

    def become(self, leading: bool) -> None:
        self.leading = leading
        assert self.on_change is not None
        self.on_change(self.role)


async def test_a_standby_runs_nothing_and_a_new_leader_catches_up() -> None:
    """Scheduled runs are skipped while standing by; becoming the leader starts catch-up; metrics and
    /readyz carry the role."""
    now = datetime(2025, 1, 16, 3, 0, 10, tzinfo=UTC)
    policy = Policy("hourly", Retention(keep_last=3), servers=(1,))
    job = ScheduledJob(JobSpec(policy), interval_trigger(timedelta(hours=1), "UTC"))
    runner = Recording()
    coordinator = Scripted()
    telemetry = Telemetry()
    daemon = Daemon(
        [job],
        cast(Runner, runner),
        wall_clock=lambda: now,
        coordinator=cast(Any, coordinator),
        telemetry=telemetry,
    )
    coordinator.on_change = daemon._on_role
    spawned: list[str] = []
    daemon._spawn = lambda coro, name: (spawned.append(name), coro.close())  # type: ignore[method-assign,func-returns-value]
    coordinator.become(False)
    with structlog.testing.capture_logs() as logs:
        await daemon._scheduled_run("hourly")
    assert runner.slots == []
    assert [entry["event"] for entry in logs] == ["run.skipped"]
    assert telemetry.health.readiness() == (
        False,
        {"config": "not loaded", "scheduler": "not running", "api_auth": "no call yet", "role": "standby"},
    )
    assert b"rotator_leader 0.0" in telemetry.metrics.render()
    coordinator.become(True)
    assert spawned == ["catch-up"]
    await daemon._scheduled_run("hourly")
    assert runner.slots == [job.slot_for(now)]
    assert b"rotator_leader 1.0" in telemetry.metrics.render()
    assert b"rotator_leader_changes_total 1.0" in telemetry.metrics.render()
    coordinator.become(True)
    assert spawned == ["catch-up"], "no second catch-up while still leading"


def test_metrics_and_readiness_of_an_unreachable_standby() -> None:
    """etcd unreachable: rotator_leader 0, rotator_coordination_reachable 0, /readyz names the role."""
    metrics = Metrics()
    metrics.set_role(False, reachable=False)
    text = metrics.render()
    assert b"rotator_leader 0.0" in text
    assert b"rotator_coordination_reachable 0.0" in text
    state = HealthState(config_ok=True, scheduler_running=True, role=Role.UNREACHABLE.value)
    assert state.readiness() == (
        True,
        {"config": "ok", "scheduler": "ok", "api_auth": "no call yet", "role": "standby (etcd unreachable)"},
    )


@respx.mock
async def test_a_refused_claim_is_not_leading() -> None:
    """etcd refusing the claim's transaction for another reason: NotLeader (the server is abandoned,
    the run does not crash), logged once."""
    respx.post("http://e1:2379/v3/lease/grant").mock(
        return_value=httpx.Response(200, json={"ID": "77", "TTL": "15"})
    )
    respx.post("http://e1:2379/v3/kv/txn").mock(
        side_effect=[
            httpx.Response(200, json={"header": {"revision": "5"}, "succeeded": True}),
            httpx.Response(400, json={"code": 3, "message": "etcdserver: too many operations in txn"}),
        ]
    )
    coordinator = EtcdCoordinator(EtcdSettings(endpoints=("http://e1:2379",)), name="a", fingerprint="f" * 16)
    assert await coordinator.acquire()
    assert coordinator.term == 5
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(errors.NotLeader, match="too many operations"),
    ):
        await coordinator.claim("p", 1, SLOT, 1)
    assert [entry["event"] for entry in logs] == ["coordination.fence_refused"]
    await coordinator.aclose()
