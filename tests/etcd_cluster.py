"""A real three-member etcd cluster on loopback ports, for the coordination tests.

``etcd`` comes from the PATH, else from Debian's ``etcd-server`` package, which
:func:`find_etcd` installs as root with apt-get (a ``/usr/sbin/policy-rc.d``
that exits 101 keeps the package's own service from starting; a system etcd is
never started, stopped or spoken to). Where neither works, the tests that need
etcd are skipped with the reason.

Each cluster lives in its own temporary directory, on free loopback ports,
and is stopped at teardown. Members can be killed (SIGKILL), paused (SIGSTOP),
resumed and restarted on their own data directory. Every wait polls a
condition (``/health``, ``/v3/maintenance/status``) against a deadline.

:class:`TcpProxy` sits between one rotator and the cluster, so that a test can
cut that one replica off from etcd (and let it back) while the others still
reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.test_daemon_e2e import wait_until as poll_until

HEALTH_DEADLINE = 30.0  # seconds a cluster (or a restarted member) may take to become healthy
POLICY_RC = Path("/usr/sbin/policy-rc.d")
_install_lock = threading.Lock()
_install_result: list[str | None] = []  # one try per test session: the path, or None


def _apt_install() -> str | None:
    """Install etcd-server and etcd-client with apt-get as root; the path of ``etcd`` or None."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    if not POLICY_RC.exists():
        # the package would start a system etcd; 101 tells invoke-rc.d "not allowed"
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
        POLICY_RC.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "etcd-server", "etcd-client"]
    done = subprocess.run(command, env=env, capture_output=True, check=False, timeout=600)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False, timeout=600)
        subprocess.run(command, env=env, capture_output=True, check=False, timeout=600)
    return shutil.which("etcd")


def find_etcd() -> str | None:
    """The ``etcd`` binary: on the PATH, or installed from Debian's package now (once a session)."""
    found = shutil.which("etcd")
    if found is not None:
        return found
    with _install_lock:
        if not _install_result:
            _install_result.append(_apt_install())
        return _install_result[0]


def require_etcd() -> str:
    """The ``etcd`` binary, or skip the test saying why there is none."""
    found = find_etcd()
    if found is None:
        why = "not root" if os.geteuid() != 0 else "apt-get could not install etcd-server"
        pytest.skip(f"no etcd binary: not on the PATH, and {why}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports. Calls of :func:`free_port` one after the other may
    answer the same port twice (about one cluster's six in a thousand here): every probe is held open
    until all are chosen, so the kernel hands out distinct ones."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def wait_until(condition: Callable[[], Any], what: str, timeout: float = HEALTH_DEADLINE) -> Any:
    """The daemon tests' poll (:func:`tests.test_daemon_e2e.wait_until`), by etcd's health deadline."""
    return poll_until(condition, what, timeout)


def _post(url: str, body: dict[str, object], timeout: float = 1.0) -> dict[str, object] | None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            loaded: dict[str, object] = json.loads(answer.read())
            return loaded
    except (OSError, ValueError):
        return None


@dataclass
class EtcdMember:
    """One member: its ports, its data directory and its process (None while down)."""

    binary: str
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    initial_cluster: str
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    started_once: bool = False
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.with_suffix(".log")

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} already runs"
        env = {**os.environ}
        if platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64", "ppc64le", "s390x"):
            env["ETCD_UNSUPPORTED_ARCH"] = platform.machine()
        elif platform.machine() in ("aarch64", "arm64"):
            env["ETCD_UNSUPPORTED_ARCH"] = "arm64"  # etcd 3.4 supports arm64 only with this set
        command = [
            self.binary,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            self.initial_cluster,
            "--initial-cluster-token",
            f"rotator-test-{self.data_dir.parent.name}",
            "--initial-cluster-state",
            "existing" if self.started_once else "new",
            # a shared 2-core machine: slower heartbeats than the defaults, so load is not an election
            "--heartbeat-interval",
            "200",
            "--election-timeout",
            "2000",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.started_once = True
        self.paused = False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        if not self.running() or self.paused:
            return False
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1.0) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def status(self) -> dict[str, object] | None:
        """``/v3/maintenance/status``: this member's id and the leader's id as it sees it."""
        return _post(f"{self.client_url}/v3/maintenance/status", {})

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            if self.paused:
                self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.paused = False

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s)."""
        if self.process is not None and self.process.poll() is None:
            if self.paused:
                self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.paused = False

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        """Start again on the same data directory (after a kill or a stop), and wait until healthy."""
        self.kill()
        self.start()
        wait_until(self.healthy, f"etcd member {self.name} healthy again")


class MemberDied(AssertionError):
    """A member of a starting cluster exited (its port was taken)."""


class EtcdCluster:
    """Three (or ``size``) members in ``root``; :meth:`start` waits until every one is healthy."""

    def __init__(self, binary: str, root: Path, size: int = 3) -> None:
        self.root = root
        names = [f"m{index}" for index in range(size)]
        chosen = free_ports(2 * size)
        ports = {name: (chosen[2 * index], chosen[2 * index + 1]) for index, name in enumerate(names)}
        initial = ",".join(f"{name}=http://127.0.0.1:{ports[name][1]}" for name in names)
        self.members = [
            EtcdMember(binary, name, ports[name][0], ports[name][1], root / name, initial) for name in names
        ]

    @property
    def endpoints(self) -> list[str]:
        return [member.client_url for member in self.members]

    def start(self) -> None:
        """Start every member; each must be running once the cluster is healthy (a member that exits
        at start, its port taken by another process in the meantime, fails the start: the cluster
        would otherwise look healthy on the two others, and a test aimed at that member fail)."""
        for member in self.members:
            member.start()
        self.wait_healthy()
        dead = [member.name for member in self.members if not member.running()]
        if dead:
            raise MemberDied(f"etcd member(s) {', '.join(dead)} exited at start\n{self.logs()}")

    def wait_healthy(self, timeout: float = HEALTH_DEADLINE) -> None:
        """Every member that runs answers /health true, and they agree on a leader."""

        def ready() -> bool:
            up = [member for member in self.members if member.running() and not member.paused]
            return bool(up) and all(member.healthy() for member in up) and self.leader() is not None

        try:
            wait_until(ready, "the etcd cluster to be healthy", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def leader(self) -> EtcdMember | None:
        """The member that leads the raft group, as the running members see it (None: no leader)."""
        by_id: dict[str, EtcdMember] = {}
        leaders = set()
        for member in self.members:
            if not member.running() or member.paused:
                continue
            status = member.status()
            if status is None:
                continue
            header = status.get("header")
            assert isinstance(header, dict)
            by_id[str(header.get("member_id"))] = member
            leaders.add(str(status.get("leader")))
        if len(leaders) != 1:
            return None
        return by_id.get(leaders.pop())

    def member(self, name: str) -> EtcdMember:
        return next(member for member in self.members if member.name == name)

    def stop(self) -> None:
        for member in self.members:
            member.kill()

    def logs(self, lines: int = 15) -> str:
        parts = []
        for member in self.members:
            if member.log_path.exists():
                tail = member.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
                parts.append(f"--- {member.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


@contextlib.contextmanager
def etcd_cluster(root: Path, size: int = 3) -> Iterator[EtcdCluster]:
    """A started cluster in ``root`` (a fresh directory), stopped at the end. A member that exits at
    start (another process took its port between the choice and etcd's bind) costs a new cluster on
    new ports in a new directory, up to three tries."""
    binary = require_etcd()
    for attempt in range(3):
        where = root if attempt == 0 else root / f"retry-{attempt}"
        where.mkdir(parents=True, exist_ok=True)
        cluster = EtcdCluster(binary, where, size)
        try:
            cluster.start()
        except MemberDied:
            cluster.stop()
            if attempt == 2:
                raise
            continue
        except BaseException:
            cluster.stop()
            raise
        break
    try:
        yield cluster
    finally:
        cluster.stop()


class TcpProxy:
    """A loopback TCP relay to ``target_port``; :meth:`cut` drops every connection and refuses new ones
    (the replica behind it is cut off from etcd), :meth:`heal` lets them through again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.is_cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.is_cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)

    def cut(self) -> None:
        self.is_cut = True
        with self._lock:
            ends = list(self._open)
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def heal(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


@pytest.fixture(name="etcd")
def fixture_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A fresh three-member etcd cluster for one test (import this fixture into a test module)."""
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing etcd presents


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_tls_files(root: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (EC keys, one day), by openssl."""
    root.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", *key, "-keyout", str(root / f"{ca}.key"), "-out", str(root / f"{ca}.pem"),
            "-days", "1", "-subj", f"/CN=rotator test {ca}",
        )  # fmt: skip
    # the server certificate is also a client one: etcd's gateway dials its own gRPC server with it
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        _openssl(
            "req", *key, "-keyout", str(root / f"{name}.key"), "-out", str(root / f"{name}.csr"),
            "-subj", f"/CN={name}",
        )  # fmt: skip
        extensions = root / f"{name}.ext"
        extensions.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n", encoding="utf-8")
        _openssl(
            "x509", "-req", "-in", str(root / f"{name}.csr"), "-CA", str(root / "ca.pem"),
            "-CAkey", str(root / "ca.key"), "-CAcreateserial", "-out", str(root / f"{name}.pem"),
            "-days", "1", "-extfile", str(extensions),
        )  # fmt: skip
    return TlsFiles(root / "ca.pem", root / "client.pem", root / "client.key", root / "other-ca.pem")


@contextlib.contextmanager
def tls_etcd(root: Path) -> Iterator[tuple[str, TlsFiles]]:
    """One etcd member serving clients over https with client certificates required; its URL."""
    binary = require_etcd()
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make the test certificates")
    files = make_tls_files(root / "pki")
    client_port, peer_port = free_ports(2)
    url = f"https://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    command = [
        binary, "--name", "tls", "--data-dir", str(root / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"tls={peer}",
        "--cert-file", str(root / "pki" / "server.pem"), "--key-file", str(root / "pki" / "server.key"),
        "--trusted-ca-file", str(files.ca), "--client-cert-auth",
    ]  # fmt: skip
    log = (root / "tls.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.client_cert), str(files.client_key))

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0, context=context) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    try:
        wait_until(healthy, "the TLS etcd member to be healthy")
        yield url, files
    finally:
        process.kill()
        process.wait(10)
