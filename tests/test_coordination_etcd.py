"""EtcdCoordinator against a real three-member etcd cluster on loopback ports.

Election, fencing after the lease is lost, claims, the local end of acting at
``lease_ttl / 2`` (an injected clock), failover when the leader stops renewing
(measured), an etcd member killed under the leader, a replica cut off from
etcd, and the bad inputs: unreachable, wrong credentials, TLS, a prefix shared
by two configurations. Waits poll with deadlines; no fixed sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rotator import errors
from rotator.coordination import Fence, Role, pinned_term
from rotator.coordination.etcd import EtcdCoordinator, EtcdSettings
from tests.etcd_cluster import (
    EtcdCluster,
    MemberDied,
    TcpProxy,
    _post,
    etcd_cluster,
    fixture_etcd,
    free_port,
    free_ports,
    require_etcd,
    tls_etcd,
)

__all__ = ["fixture_etcd"]

SLOT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
TTL = 4.0  # above the test cluster's minimum lease TTL (1.5 election timeouts: 3 s)
DEADLINE = 20.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def eventually(condition: Callable[[], object], what: str, within: float = DEADLINE) -> float:
    """Poll until ``condition()`` is truthy; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture(name="make")
async def fixture_make(etcd: EtcdCluster) -> AsyncIterator[Callable[..., EtcdCoordinator]]:
    """Coordinators on the cluster (closed at the end): ``make(name, fingerprint=..., **settings)``."""
    made: list[EtcdCoordinator] = []

    def make(name: str, fingerprint: str = "f" * 16, **options: object) -> EtcdCoordinator:
        settings: dict[str, object] = {"endpoints": tuple(etcd.endpoints), "prefix": "/t/", "lease_ttl": TTL}
        settings.update(options)
        clock = settings.pop("monotonic", time.monotonic)
        coordinator = EtcdCoordinator(
            EtcdSettings(**settings),  # type: ignore[arg-type]
            name=name,
            fingerprint=fingerprint,
            monotonic=clock,  # type: ignore[arg-type]
        )
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        await coordinator.aclose()


async def test_one_of_two_wins_the_election(make: Callable[..., EtcdCoordinator]) -> None:
    """The first acquire wins; the second sees who leads and stands by; a release hands over."""
    first, second = make("a"), make("b")
    await first.start()
    await second.start()
    assert await first.acquire()
    assert not await second.acquire()
    assert (first.is_leader(), second.is_leader(), second.holder) == (True, False, "a")
    await first.release()
    assert await second.acquire()
    assert second.is_leader()
    assert not first.is_leader()


async def test_a_lost_lease_fails_the_fence_and_the_claim(
    make: Callable[..., EtcdCoordinator], etcd: EtcdCluster
) -> None:
    """With its lease revoked behind its back (as if paused past its TTL), the old leader, still
    believing it leads, fails its fence and its claim; the new leader's claim goes through."""
    old, new = make("old"), make("new")
    await old.acquire()
    await old.claim("p", 1, SLOT, 1)
    assert _post(f"{etcd.endpoints[0]}/v3/lease/revoke", {"ID": str(old._lease)}) is not None
    assert await new.acquire()
    assert old.is_leader()  # its own clock has not run out yet
    with pytest.raises(errors.NotLeader, match="no longer the leader"):
        await old.fence()
    with pytest.raises(errors.NotLeader):
        await old.claim("p", 1, SLOT, 2)
    assert not old.is_leader()
    await new.claim("p", 1, SLOT, 1)  # the old claim went with the old lease
    await new.fence()


async def test_a_claim_is_made_once(make: Callable[..., EtcdCoordinator], etcd: EtcdCluster) -> None:
    """The leader's own claim may be made again (a create sent again after an unknown outcome), one
    held under another lease is ClaimTaken, and a standby claims nothing."""
    leader, standby = make("a"), make("b")
    await leader.acquire()
    await standby.acquire()
    await leader.claim("p", 7, SLOT, 1)
    await leader.claim("p", 7, SLOT, 1)
    grant = _post(f"{etcd.endpoints[0]}/v3/lease/grant", {"TTL": 30})
    assert grant is not None
    key = "/t/claims/p/7/2026-12-02T03:00:00Z/2"
    put = {
        "key": base64.b64encode(key.encode()).decode(),
        "value": base64.b64encode(b'{"name": "intruder"}').decode(),
        "lease": grant["ID"],
    }
    assert _post(f"{etcd.endpoints[0]}/v3/kv/put", put) is not None
    with pytest.raises(errors.ClaimTaken, match="claimed by intruder"):
        await leader.claim("p", 7, SLOT, 2)
    with pytest.raises(errors.NotLeader, match="standby"):
        await standby.claim("p", 7, SLOT, 3)


async def test_acting_ends_at_half_the_ttl_without_a_renewal(make: Callable[..., EtcdCoordinator]) -> None:
    """Its clock past lease_ttl/2 since the last confirmed renewal, a leader stops acting at once,
    before any request: no claim, no fence, and the runner's guard says so."""
    clock = FakeClock()
    leader = make("a", monotonic=clock)
    assert await leader.acquire()
    clock.now += TTL / 2 - 0.01
    assert leader.is_leader()
    clock.now += 0.02
    assert not leader.is_leader()
    with pytest.raises(errors.NotLeader, match="not confirmed"):
        await leader.claim("p", 1, SLOT, 1)
    assert not Fence(leader).may_act()


async def test_a_run_acts_only_under_the_leadership_it_began_under(
    make: Callable[..., EtcdCoordinator], etcd: EtcdCluster
) -> None:
    """Leadership lost and won again is another term: the run begun under the first is refused."""
    leader = make("a")
    await leader.acquire()
    fence = Fence(leader)
    with pinned_term(leader):
        await fence.before_create("p", 1, SLOT, 1)
        assert _post(f"{etcd.endpoints[0]}/v3/lease/revoke", {"ID": str(leader._lease)}) is not None
        assert await leader.acquire()  # a new lease, a new term
        with pytest.raises(errors.NotLeader, match="began under"):
            await fence.before_deletes(1, [5])
        assert not fence.may_act()
    await fence.before_deletes(1, [5])  # a run begun now may act


async def test_failover_within_the_ttl_and_a_second(make: Callable[..., EtcdCoordinator]) -> None:
    """The leader stops renewing (dead); the standby, watching the key, leads within lease_ttl + 1 s."""
    dead, standby = make("dead"), make("standby")
    roles: list[Role] = []
    assert await dead.acquire()
    died = time.monotonic()  # its last renewal: from here on, no keepalive, no release
    watcher = asyncio.create_task(standby.campaign(roles.append))
    try:
        await eventually(standby.is_leader, "the standby to take over")
        took = time.monotonic() - died
        assert TTL / 2 <= took <= TTL + 1.0, f"failover took {took:.2f}s"
        assert roles[-1] is Role.LEADER
        with pytest.raises(errors.NotLeader):
            await dead.fence()
    finally:
        watcher.cancel()


async def test_leadership_survives_the_etcd_leader_member_killed(
    make: Callable[..., EtcdCoordinator], etcd: EtcdCluster
) -> None:
    """The raft leader killed under a leading coordinator (ttl 6 s): after etcd's own election the
    same coordinator leads (its lease kept, or won again) and its fence passes; nobody else led."""
    leader = make("a", lease_ttl=6.0)
    other = make("b", lease_ttl=6.0)
    roles: list[Role] = []
    assert await leader.acquire()  # a leads first; b only watches
    keeping = asyncio.create_task(leader.campaign(roles.append))
    watching = asyncio.create_task(other.campaign(lambda role: None))
    try:
        raft_leader = etcd.leader()
        assert raft_leader is not None
        raft_leader.kill()
        await asyncio.to_thread(etcd.wait_healthy)
        await eventually(leader.is_leader, "a to lead again", within=30)
        await leader.fence()
        assert not other.is_leader()
        raft_leader.restart()
    finally:
        keeping.cancel()
        watching.cancel()


async def test_a_replica_cut_off_stops_within_half_the_ttl(
    make: Callable[..., EtcdCoordinator], etcd: EtcdCluster
) -> None:
    """Behind a proxy that is cut, the leader says 'unreachable' and stops acting within
    lease_ttl/2 of its last renewal; a replica that still reaches etcd takes over; healed, the
    cut-off one stands by."""
    proxy = TcpProxy(etcd.members[0].client_port)
    try:
        cut_off = make("cut", endpoints=(proxy.url,))
        other = make("other")
        roles: list[Role] = []
        keeping = asyncio.create_task(cut_off.campaign(roles.append))
        await eventually(cut_off.is_leader, "cut to lead")
        watching = asyncio.create_task(other.campaign(lambda role: None))
        proxy.cut()
        took = await eventually(lambda: not cut_off.is_leader(), "cut to stop acting")
        assert took <= TTL / 2 + 0.1
        await eventually(lambda: cut_off.role is Role.UNREACHABLE, "cut to say it is unreachable")
        await eventually(other.is_leader, "other to take over")
        proxy.heal()
        await eventually(lambda: cut_off.role is Role.STANDBY, "cut to stand by once healed")
        assert other.is_leader()
        keeping.cancel()
        watching.cancel()
    finally:
        proxy.close()


async def test_another_configuration_on_the_prefix_is_refused(make: Callable[..., EtcdCoordinator]) -> None:
    """An instance with another fingerprint on a led prefix: one line naming the prefix and the fix."""
    leader = make("a", fingerprint="1" * 16)
    await leader.acquire()
    stranger = make("b", fingerprint="2" * 16)
    with pytest.raises(errors.CoordinationRefused) as caught:
        await stranger.start()
    message = str(caught.value)
    assert "'/t/' is in use by another configuration" in message
    assert "\n" not in message
    assert caught.value.exit_code == errors.EXIT_CONFIG
    with pytest.raises(errors.CoordinationRefused):
        await stranger.acquire()
    same = make("c", fingerprint="1" * 16)
    await same.start()  # the same configuration is welcome
    elsewhere = make("d", fingerprint="2" * 16, prefix="/other/")
    await elsewhere.start()


async def test_etcd_unreachable_at_start(make: Callable[..., EtcdCoordinator]) -> None:
    """No endpoint answers: one line naming each endpoint."""
    port = free_port()
    lonely = make("a", endpoints=(f"http://127.0.0.1:{port}",))
    with pytest.raises(errors.CoordinationUnavailable) as caught:
        await lonely.start()
    assert str(caught.value).startswith(f"no etcd endpoint answered: http://127.0.0.1:{port}: ")
    assert "\n" not in str(caught.value)


async def test_https_to_a_plain_etcd_says_tls(
    make: Callable[..., EtcdCoordinator], etcd: EtcdCluster
) -> None:
    """An https endpoint where etcd speaks plain http: the line says the TLS handshake failed."""
    url = etcd.endpoints[0].replace("http://", "https://")
    confused = make("a", endpoints=(url,))
    with pytest.raises(errors.CoordinationUnavailable, match="TLS handshake failed"):
        await confused.start()


def test_a_ca_file_that_is_no_certificate_is_a_config_error(tmp_path: Path) -> None:
    """A CA file that holds no certificate: a ConfigError naming coordination.etcd.ca_file."""
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n", encoding="utf-8")
    settings = EtcdSettings(endpoints=("https://127.0.0.1:2379",), ca_file=bogus)
    with pytest.raises(errors.ConfigError, match=r"coordination\.etcd\.ca_file: cannot load"):
        EtcdCoordinator(settings, name="a", fingerprint="f" * 16)


async def test_credentials(make: Callable[..., EtcdCoordinator], etcd: EtcdCluster) -> None:
    """With auth enabled: the wrong password is refused in one line that holds no password; the right
    one works; none at all is told to configure them."""
    ctl = ["etcdctl", "--endpoints", ",".join(etcd.endpoints)]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    for command in (["user", "add", "root:s3cret-pw"], ["auth", "enable"]):
        done = await asyncio.to_thread(
            subprocess.run, [*ctl, *command], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    wrong = make("a", username="root", password="wrong-pw-123")
    with pytest.raises(errors.CoordinationRefused) as caught:
        await wrong.start()
    assert "rejected the credentials of user 'root'" in str(caught.value)
    assert "wrong-pw-123" not in str(caught.value)
    assert "wrong-pw-123" not in repr(wrong.settings)
    anonymous = make("b")
    with pytest.raises(errors.CoordinationRefused, match="requires authentication"):
        await anonymous.start()
    right = make("c", username="root", password="s3cret-pw")
    await right.start()
    assert await right.acquire()
    await right.claim("p", 1, SLOT, 1)
    await right.fence()


async def test_tls_with_client_certificates(tmp_path: Path) -> None:
    """etcd over https requiring client certificates: with the CA and a client certificate rotator
    leads and claims; without the certificate, or trusting another CA, one line says TLS."""
    with tls_etcd(tmp_path) as (url, files):
        good = EtcdCoordinator(
            EtcdSettings(
                endpoints=(url,),
                prefix="/t/",
                ca_file=files.ca,
                cert_file=files.client_cert,
                key_file=files.client_key,
            ),
            name="a",
            fingerprint="f" * 16,
        )
        await good.start()
        assert await good.acquire()
        await good.claim("p", 1, SLOT, 1)
        await good.aclose()
        for settings in (
            EtcdSettings(endpoints=(url,), ca_file=files.ca),
            EtcdSettings(
                endpoints=(url,),
                ca_file=files.other_ca,
                cert_file=files.client_cert,
                key_file=files.client_key,
            ),
        ):
            bad = EtcdCoordinator(settings, name="b", fingerprint="f" * 16)
            with pytest.raises(errors.CoordinationUnavailable, match="TLS handshake") as caught:
                await bad.start()
            assert "\n" not in str(caught.value)
            await bad.aclose()


def test_the_harness_chooses_distinct_ports() -> None:
    """Probes closed one after the other may answer one port twice; the cluster's are distinct."""
    ports = free_ports(64)
    assert len(set(ports)) == 64


def test_the_harness_refuses_a_cluster_with_a_member_that_died_at_start(tmp_path: Path) -> None:
    """A member whose port another process took exits at once; the two others would still look
    healthy, so the start says which member died, and :func:`etcd_cluster` retries on new ports."""
    (tmp_path / "taken").mkdir()
    cluster = EtcdCluster(require_etcd(), tmp_path / "taken")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", cluster.members[0].client_port))
        squatter.listen(1)
        try:
            with pytest.raises(MemberDied, match="etcd member\\(s\\) m0 exited at start"):
                cluster.start()
        finally:
            cluster.stop()
    calls: list[Path] = []
    real_start = EtcdCluster.start

    def start_failing_once(self: EtcdCluster) -> None:
        calls.append(self.root)
        if len(calls) == 1:
            raise MemberDied("m0 exited at start")
        real_start(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EtcdCluster, "start", start_failing_once)
        with etcd_cluster(tmp_path / "retried") as retried:
            assert all(member.running() for member in retried.members)
    assert calls == [tmp_path / "retried", tmp_path / "retried" / "retry-1"]
