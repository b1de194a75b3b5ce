"""The replicas mode of the fault campaign: three ``rotator run`` on one configuration, coordinated by
a real three-member etcd cluster, against a faulty sandbox, while a nemesis strikes.

Every few seconds the nemesis picks one of: SIGKILL of the leader (started again a little later),
SIGSTOP of the leader past its lease TTL (then SIGCONT), SIGTERM of the leader (a clean handover,
started again), the leader cut off from etcd (its TCP proxies refuse, then let it back), the etcd
raft leader member killed, or another etcd member killed (each started again on its data). The
sandbox meanwhile answers 5xx, drops create answers, fails and slows backups.

Judged afterwards from the sandbox's event log alone by :mod:`bench.chaos.invariants` (every
invariant that needs no process notes: duplicate-slot, second-post-in-quiet-period,
not-a-candidate, kept-by-rules, below-min-keep, delete-before-completed,
delete-without-new-backup, stale-view) and by the sandbox's request counts: no DELETE answered
404, since nobody else deletes, so no backup was deleted twice. Failover times (the nemesis's
strike to the leader key naming another replica) are measured and bounded by ``lease_ttl + 1 s``.

Needs the ``etcd`` binary (Debian's etcd-server, installed by ``tests/etcd_cluster.py`` as root).
"""

from __future__ import annotations

import base64
import json
import random
import signal
import statistics
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml

from bench.chaos.campaign import API, Rotator, events_of, seed_owned, seed_protected
from bench.chaos.invariants import PolicySpec, Report, check
from rotator.sandbox import FaultOptions, RunningSandbox, SandboxOptions, running_sandbox
from tests.etcd_cluster import EtcdCluster, TcpProxy, find_etcd

PREFIX = "/rotator/chaos/"
STRIKES = (
    "SIGKILL leader",
    "SIGSTOP leader",
    "SIGTERM leader",
    "cut leader",
    "kill etcd leader",
    "kill etcd member",
)


@dataclass(frozen=True)
class ReplicaSettings:
    seed: int
    seconds: float = 300.0  # how long the nemesis strikes
    replicas: int = 3
    servers: int = 12
    interval: int = 3  # seconds between the policy's slots
    lease_ttl: float = 4.0  # the test cluster's minimum lease TTL is 3 s (election timeout 2 s)
    error_rate: float = 0.05
    drop_rate: float = 0.03
    fail_rate: float = 0.03
    slow_rate: float = 0.02


@dataclass
class ReplicaResult:
    settings: ReplicaSettings
    report: Report
    seconds: float
    started: datetime
    server_runs: int = 0
    runs: int = 0
    strikes: Counter[str] = field(default_factory=Counter)
    failovers: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    deletes_refused: int = 0
    backups: Counter[str] = field(default_factory=Counter)
    faults: dict[str, int] = field(default_factory=dict)
    said: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return len(self.report.violations) + self.deletes_refused

    @property
    def ok(self) -> bool:
        return self.violations == 0 and not self.errors

    def render(self) -> str:
        s = self.settings
        lines = [
            f"chaos campaign (replicas), seed {s.seed}: {self.started:%Y-%m-%d %H:%M}Z, "
            f"took {self.seconds:.0f}s",
            f"  replicas:     {s.replicas} x rotator run (interval {s.interval}s, {s.servers} servers, "
            f"lease_ttl {s.lease_ttl:g}s) on a 3-member etcd; {self.runs} runs finished, "
            f"{self.server_runs} server-runs",
            "  strikes:      " + ", ".join(f"{self.strikes[k]} {k}" for k in STRIKES),
            "  failover (s): "
            + ", ".join(
                f"{what} n={len(times)} median {statistics.median(times):.2f} max {max(times):.2f}"
                for what, times in sorted(self.failovers.items())
                if times
            ),
            "  faults:       " + ", ".join(f"{n} {k}" for k, n in sorted(self.faults.items())),
            f"  backups:      {self.backups['created']} created, {self.backups['completed']} completed, "
            f"{self.backups['failed']} failed, {self.backups['deleted']} deleted",
            "  rotator said: " + ", ".join(f"{n} {k}" for k, n in sorted(self.said.items())),
            "  checked:      " + ", ".join(f"{n} {k}" for k, n in sorted(self.report.checked.items())),
            f"  DELETEs answered 404 (a backup deleted twice): {self.deletes_refused}",
            f"  violations:   {self.violations}",
        ]
        lines += [f"[replicas] {violation}" for violation in self.report.violations]
        lines += [f"campaign error: {error}" for error in self.errors]
        return "\n".join(lines)


def leader_name(cluster: EtcdCluster) -> str | None:
    key = base64.b64encode(f"{PREFIX}leader".encode()).decode()
    for member in cluster.members:
        if not member.running() or member.paused:
            continue
        request = urllib.request.Request(
            f"{member.client_url}/v3/kv/range", data=json.dumps({"key": key}).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as answer:
                kvs = json.loads(answer.read()).get("kvs")
        except (OSError, ValueError):
            continue
        if not kvs:
            return None
        return str(json.loads(base64.b64decode(kvs[0]["value"]))["name"])
    return None


class Replicas:
    API_CONFIG: ClassVar[dict[str, Any]] = {
        **API,
        "timeout": "1.5s",
        "create_quiet_period": "2.5s",
        "max_view_age": "4s",
    }
    WAIT_TIMEOUT = 3.0

    def __init__(self, settings: ReplicaSettings, workdir: Path, say: Callable[[str], None]) -> None:
        self.s = settings
        self.workdir = workdir
        self.say = say
        self.rng = random.Random(f"{settings.seed}:replicas")
        self.processes: dict[str, Rotator] = {}
        self.finished: list[Rotator] = []
        self.routes: dict[str, list[TcpProxy]] = {}
        self.number = 0

    def policy(self) -> dict[str, Any]:
        return {
            "name": "pulse",
            "servers": list(range(1, self.s.servers + 1)),
            "schedule": {"interval": f"{self.s.interval}s"},
            "retention": {"keep_last": 4, "min_keep": 2},
            "wait_timeout": f"{self.WAIT_TIMEOUT:g}s",
            "max_deletes_per_run": 10,
            "catch_up": True,
            "retries": 2,
            "retry_delay": "1s",
        }

    def config(self, name: str) -> Path:
        path = self.workdir / f"{name}.yaml"
        document = {
            "policies": [self.policy()],
            "api": self.API_CONFIG,
            "daemon": {"poll_interval": "0.2s", "poll_max_interval": "0.5s", "shutdown_grace": "15s"},
            "log": {"format": "json", "level": "info"},
            "coordination": {
                "backend": "etcd",
                "name": name,
                "etcd": {
                    "endpoints": [proxy.url for proxy in self.routes[name]],
                    "prefix": PREFIX,
                    "lease_ttl": f"{self.s.lease_ttl:g}s",
                },
            },
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    def start(self, sandbox: RunningSandbox, name: str) -> None:
        self.number += 1
        log = self.workdir / f"{name}-{self.number}.log"
        self.processes[name] = Rotator(sandbox, ["run", "--config", str(self.config(name))], self.number, log)

    def gone(self, name: str) -> None:
        rotator = self.processes.pop(name)
        rotator.finish()
        self.finished.append(rotator)

    def run(self) -> ReplicaResult:
        s = self.s
        began, started = time.monotonic(), datetime.now(UTC)
        binary = find_etcd()
        if binary is None:
            raise SystemExit("the replicas mode needs etcd: install Debian's etcd-server (as root)")
        cluster = EtcdCluster(binary, self.workdir / "etcd")
        (self.workdir / "etcd").mkdir(exist_ok=True)
        options = SandboxOptions(
            fleet="empty",
            servers=s.servers,
            page_size=20,
            seed=s.seed + 2,
            create_seconds=0.3,
            faults=FaultOptions(slow_seconds=self.WAIT_TIMEOUT + 3),
            log_listings=True,
        )
        result: ReplicaResult | None = None
        cluster.start()
        try:
            with running_sandbox(options) as sandbox:
                sandbox.sandbox.update_faults(
                    error_rate=s.error_rate,
                    drop_rate=s.drop_rate,
                    fail_rate=s.fail_rate,
                    slow_rate=s.slow_rate,
                )
                state = sandbox.state
                latest = time.time() - time.time() % s.interval
                owned = [datetime.fromtimestamp(latest - s.interval * k, UTC) for k in range(8, 14)]
                for sid in range(1, s.servers + 1):
                    seed_protected(state, sid, "pulse", datetime.fromtimestamp(latest - 3600, UTC))
                    seed_owned(state, sid, "pulse", owned, spread=2)
                state.snapshot(phase="replicas")
                names = [f"r{index}" for index in range(s.replicas)]
                for name in names:
                    self.routes[name] = [TcpProxy(member.client_port) for member in cluster.members]
                    self.start(sandbox, name)
                result = ReplicaResult(s, Report(), 0.0, started)
                self.strike_until(cluster, sandbox, result, began + s.seconds)
                for name in list(self.processes):
                    rotator = self.processes[name]
                    if rotator.process.poll() is None:
                        rotator.process.send_signal(signal.SIGCONT)
                        rotator.process.terminate()
                    code = rotator.process.wait(30)
                    if code != 0:
                        result.errors.append(f"{name} exited {code} on SIGTERM")
                    self.gone(name)
                events = events_of(state)
                result.faults = dict(sandbox.sandbox.injected())
                requests = sandbox.sandbox.stats()["requests"]
                result.deletes_refused = sum(
                    counts.get("404", 0) for route, counts in requests.items() if route.startswith("DELETE")
                )
        finally:
            for proxies in self.routes.values():
                for proxy in proxies:
                    proxy.close()
            for rotator in self.processes.values():
                rotator.reap()
            cluster.stop()
        assert result is not None
        for event in events:
            if event["kind"] in ("created", "completed", "failed", "deleted"):
                result.backups[event["kind"]] += 1
        for rotator in self.finished:
            finished = rotator.named("run.finished")
            result.runs += len(finished)
            result.server_runs += sum(int(event.get("servers", 0)) for event in finished)
            for event in rotator.events:
                if event.get("event") in (
                    "run.skipped",
                    "backup.not_created",
                    "prune.not_leader",
                    "coordination.unreachable",
                ):
                    result.said[str(event["event"])] += 1
            traces = [line for line in rotator.other if "Traceback" in line]
            if traces:
                result.errors.append(f"process {rotator.number}: a traceback: {traces[0]}")
            crashed = rotator.named("run.crashed")
            if crashed:
                result.errors.append(f"process {rotator.number}: run.crashed {crashed[0]}")
        spec = PolicySpec.from_config(self.policy(), api=self.API_CONFIG, run_window=60.0)
        result.report = check(events, [spec], view_tolerance=5.0, decision_grace=20.0)
        result.seconds = time.monotonic() - began
        for what, times in result.failovers.items():
            if what == "SIGTERM leader":
                continue  # a clean stop first lets its runs finish (shutdown_grace), then hands over
            late = [took for took in times if took > s.lease_ttl + 1.0]
            if late:
                result.errors.append(f"failover after {what} took {max(late):.2f}s > lease_ttl + 1s")
        return result

    def wait_leader(self, cluster: EtcdCluster, other_than: str | None, within: float) -> str | None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            name = leader_name(cluster)
            if name is not None and name != other_than:
                return name
            time.sleep(0.02)
        return None

    def strike_until(
        self, cluster: EtcdCluster, sandbox: RunningSandbox, result: ReplicaResult, until: float
    ) -> None:
        s = self.s
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(3.0, 8.0))
            leader = self.wait_leader(cluster, None, s.lease_ttl + 15)
            if leader is None:
                result.errors.append("no leader for lease_ttl + 15 s")
                continue
            strike = self.rng.choice(STRIKES)
            result.strikes[strike] += 1
            self.say(f"  {strike} ({leader})")
            rotator = self.processes.get(leader)
            struck = time.monotonic()
            if strike == "SIGKILL leader" and rotator is not None:
                rotator.process.kill()
                self.measure(cluster, result, strike, leader, struck)
                self.gone(leader)
                time.sleep(self.rng.uniform(0.5, 3.0))
                self.start(sandbox, leader)
            elif strike == "SIGTERM leader" and rotator is not None:
                rotator.process.terminate()
                self.measure(cluster, result, strike, leader, struck)
                if rotator.process.wait(30) != 0:
                    result.errors.append(f"{leader} exited {rotator.process.returncode} on SIGTERM")
                self.gone(leader)
                self.start(sandbox, leader)
            elif strike == "SIGSTOP leader" and rotator is not None:
                rotator.process.send_signal(signal.SIGSTOP)
                self.measure(cluster, result, strike, leader, struck)
                time.sleep(self.rng.uniform(0.5, 2.0))
                rotator.process.send_signal(signal.SIGCONT)
            elif strike == "cut leader":
                for proxy in self.routes[leader]:
                    proxy.cut()
                self.measure(cluster, result, strike, leader, struck)
                time.sleep(self.rng.uniform(0.5, s.lease_ttl))
                for proxy in self.routes[leader]:
                    proxy.heal()
            else:
                raft = cluster.leader()
                member = raft
                if strike == "kill etcd member":
                    member = self.rng.choice([m for m in cluster.members if m is not raft])
                if member is None:
                    continue
                member.kill()
                try:
                    cluster.wait_healthy()
                except AssertionError as exc:
                    result.errors.append(f"etcd did not recover from {strike}: {exc}")
                time.sleep(self.rng.uniform(1.0, 4.0))
                member.restart()
                cluster.wait_healthy()

    def measure(
        self, cluster: EtcdCluster, result: ReplicaResult, strike: str, old: str, struck: float
    ) -> None:
        new = self.wait_leader(cluster, old, self.s.lease_ttl + 15)
        if new is None:
            result.errors.append(f"no other leader within lease_ttl + 15 s after {strike}")
            return
        result.failovers[strike].append(time.monotonic() - struck)


def run_replicas(settings: ReplicaSettings, workdir: Path, say: Callable[[str], None]) -> ReplicaResult:
    return Replicas(settings, workdir, say).run()
