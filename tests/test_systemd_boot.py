"""systemd itself, as PID 1 of private namespaces, runs the real systemd/rotator.service.

The strongest check of the unit: not a parse (test_systemd_unit.py) nor a fake
notify socket (test_notify_process.py), but Debian's systemd booted in a private
PID, mount, cgroup, UTS and IPC namespace over a throw-away overlay of ``/``
(tests/systemd_boot/boot.sh), with the unit installed as the docs say and the
token as a credential. The network namespace is the host's, so the sandbox API
the test serves on 127.0.0.1 is the provider the daemon talks to. The test
drives systemd with ``systemctl`` and ``journalctl`` run inside the namespaces
(nsenter) and checks, on systemd's own word:

- start: the unit is active (running) only after systemd got ``READY=1`` from
  the main process (Type=notify), and ``StatusText`` names the next run; the
  catch-up run goes through the API with the token from ``LoadCredential=``;
- the hardening is in effect on the process: a dynamic non-root user in its own
  user namespace, no capabilities at all, ``NoNewPrivs``, a seccomp filter, a
  read-only system, private /tmp, /root and /home hidden, a pid-only /proc;
- the watchdog (WatchdogSec shortened to 4 s by a drop-in): systemd records a
  ``WATCHDOG=1`` about every 2 s and the same process lives on for 10 s, while
  a frozen process is killed for it (``Result=watchdog``);
- ``systemctl reload``: a new configuration is read, the daemon logs
  ``config.reloaded``, systemd goes back from reloading to running, same PID;
- ``systemctl stop``: ``STOPPING=1``, then exit status 0 and ``Result=success``;
- journald priorities: ``journalctl -p warning -u rotator`` finds the warning the
  daemon logs at start (a policy without a schedule) at PRIORITY=4, and none of
  its info lines; those are stored at 6; rotator's lines carry no timestamp of
  their own (journald stamps them).

Where the machine cannot do this (not root, no util-linux tools or cgroup v2,
overlayfs refused, systemd missing and not installable, systemd not booting
here), the tests skip and say which step failed. Every wait has a deadline and
the whole module a budget; the namespaces are torn down whatever happens (PID 1
killed, which takes every process of the namespace with it; the cgroup killed
and removed; the mounts only ever existed in the private mount namespace).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.sandbox import RunningSandbox, SandboxOptions, running_sandbox

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "rotator.service"
BOOT_SCRIPT = Path(__file__).resolve().parent / "systemd_boot" / "boot.sh"
INSTALLED_BINARY = "/usr/local/bin/rotator"
SERVICE = "rotator.service"
SYSTEMD = Path("/lib/systemd/systemd")
TOOLS = ("sh", "unshare", "nsenter", "setpriv", "mount", "umount", "pivot_root", "cp", "ldconfig")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEADLINE = 30.0  # seconds any one condition may take
BUDGET = 90.0  # seconds for the whole module, boot included (it takes about 20 when it runs)
POLL = 0.2
WATCHDOG_SEC = 4  # the drop-in's WatchdogSec=: rotator pings every 2 s
ALIVE_FOR = 10.0  # seconds the daemon must outlive WatchdogSec with its pings
DYNAMIC_UIDS = range(61184, 65520)  # systemd's DynamicUser= range
HIDDEN_BY_PROTECT_HOME = (Path("/root"), Path("/home"), Path("/run/user"))
# PrivateTmp= gives the service an empty /tmp (and the booted system has its own): a checkout
# there (a CI job's clone, mktemp -d) cannot be the installed rotator the unit starts
HIDDEN_BY_PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))
CGROUP_PREFIX = "rotator-boot-"
PYTHON_HOME = Path("/opt/rotator-python")  # where boot.sh binds an interpreter hidden by ProtectHome=

BOOT_TARGET = """\
[Unit]
Description=rotator boot test: basic.target and nothing else
Wants=basic.target
After=basic.target
# keeps rotator.service loaded once stopped, so that its exit status can be read
Before=rotator.service
"""
DROP_IN = f"""\
[Service]
# shortened so that a test sees the watchdog at work in seconds (the unit says 60s)
WatchdogSec={WATCHDOG_SEC}s
"""
JOURNALD = """\
[Journal]
# systemd logs at debug level here (the notification messages): keep every line
RateLimitIntervalSec=0
"""
FAST_API = {"requests_per_second": 200, "burst": 100, "max_concurrency": 8}
FAST_DAEMON = {"poll_interval": "0.2s", "poll_max_interval": "0.5s", "shutdown_grace": "20s"}


# -- deadlines ------------------------------------------------------------------------


class Budget:
    """The module's total time: every wait and every command gets at most what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def timeout(self, wanted: float = DEADLINE) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the module's budget of {self.seconds:.0f}s is spent")
        return min(wanted, left)


def wait_until(
    condition: Callable[[], Any],
    what: str,
    budget: Budget,
    timeout: float = DEADLINE,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + budget.timeout(timeout)
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(POLL)


# -- the machine: preconditions, payload, boot, teardown ------------------------------


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def failed_step(log: Path) -> str:
    """The command boot.sh (``set -x``) stopped at and what it printed, from its output."""
    lines = log.read_text(errors="replace").strip().splitlines()
    last = max((i for i, line in enumerate(lines) if line.startswith("+ ")), default=None)
    if last is None:
        return tail("\n".join(lines))
    said = " ".join(line.strip() for line in lines[last + 1 :]) or "(no message)"
    return f"at `{lines[last][2:]}`: {said}"


def under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def ensure_systemd() -> None:
    """systemd present, or Debian's package installed as test_systemd_unit.py does; else skip."""
    if SYSTEMD.is_file():
        return
    if shutil.which("apt-get", path=PATH) is None:
        pytest.skip(f"{SYSTEMD} is missing and cannot be installed here (no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "systemd"],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            pytest.skip(f"{SYSTEMD} is missing and {' '.join(command)} failed: {tail(result.stderr, 3)}")
    if not SYSTEMD.is_file():
        pytest.skip(f"apt-get install systemd did not provide {SYSTEMD}")


def check_preconditions() -> None:
    """Skip, saying why, where booting systemd in namespaces cannot work."""
    if not sys.platform.startswith("linux"):
        pytest.skip(f"systemd cannot run on {sys.platform}")
    if os.geteuid() != 0:
        pytest.skip("booting systemd in private namespaces needs root (mounts, pivot_root, cgroups)")
    missing = [tool for tool in TOOLS if shutil.which(tool, path=PATH) is None]
    if missing:
        pytest.skip(f"missing tools to boot systemd in namespaces: {', '.join(missing)}")
    ensure_systemd()
    for tool in ("systemctl", "journalctl"):
        if shutil.which(tool, path=PATH) is None:
            pytest.skip(f"{tool} is missing although {SYSTEMD} is there")


def cgroup2_mount() -> Path:
    """Where the unified cgroup hierarchy is mounted (pure v2 or hybrid), or skip."""
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        before, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            return Path(before.split(" ")[4])
    pytest.skip("no cgroup2 hierarchy is mounted: systemd as PID 1 needs one to delegate to it")


def make_cgroup() -> Path:
    """A fresh cgroup under ours, which becomes the namespace's cgroup root."""
    mount = cgroup2_mount()
    own = next(
        (
            line[3:]
            for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
            if line.startswith("0::")
        ),
        "/",
    )
    parent = mount / own.strip("/")
    remove_stale_cgroups(parent)
    path = parent / f"{CGROUP_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup for systemd ({path}): {exc}")
    return path


def remove_stale_cgroups(parent: Path) -> None:
    """Empty cgroups left by a test process that was killed (-9) before its teardown.

    That case leaves no process behind (setpriv --pdeathsig and unshare
    --kill-child end the namespace), only the empty cgroup; one whose test
    process still runs (a concurrent session) is left alone.
    """
    for stale in parent.glob(f"{CGROUP_PREFIX}*"):
        owner = stale.name.removeprefix(CGROUP_PREFIX).split("-", 1)[0]
        try:
            if Path(f"/proc/{owner}").exists() or "populated 0" not in (stale / "cgroup.events").read_text():
                continue
            remove_tree(stale)
        except OSError:
            continue


def remove_cgroup(path: Path, budget: Budget) -> None:
    """Kill whatever is left in ``path`` and remove it with its children."""
    if not path.exists():
        return
    kill = path / "cgroup.kill"
    if kill.exists():
        kill.write_text("1", encoding="utf-8")
    else:  # Linux < 5.14
        for procs in path.rglob("cgroup.procs"):
            for pid in procs.read_text(encoding="utf-8").split():
                os.kill(int(pid), signal.SIGKILL)
    events = path / "cgroup.events"

    def empty() -> bool:
        return "populated 0" in events.read_text(encoding="utf-8")

    try:
        wait_until(empty, f"cgroup {path} to empty", budget, timeout=10)
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (cgroupfs removes their files itself)."""
    for directory in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        directory.rmdir()
    path.rmdir()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text(encoding="utf-8")
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), None)
        if ppid == str(pid):
            found.append(int(entry.name))
    return found


def venv_payload(payload: Path) -> str:
    """Make this venv's interpreter reachable under ProtectHome=; the interpreter's home for boot.sh.

    The unit's ExecStart is this venv's ``rotator``. When the venv's base
    interpreter lives under /root or /home (pyenv, uv), ProtectHome=yes hides it
    from the service, as it would in production: boot.sh binds it at
    /opt/rotator-python, and the payload points the venv's ``pyvenv.cfg`` and
    ``bin/python*`` links there and registers its ``lib`` with ldconfig (a
    shared libpython is found through RUNPATH otherwise). The host's files are
    untouched: the payload is copied into the overlay.
    """
    venv = Path(os.path.realpath(sys.prefix))
    if under(venv, HIDDEN_BY_PROTECT_HOME) or under(ROOT, HIDDEN_BY_PROTECT_HOME):
        pytest.skip(f"the project or its venv ({ROOT}, {venv}) is under a path ProtectHome=yes hides")
    real_root = Path(os.path.realpath(ROOT))
    if under(venv, HIDDEN_BY_PRIVATE_TMP) or under(real_root, HIDDEN_BY_PRIVATE_TMP):
        pytest.skip(
            f"the project or its venv ({ROOT}, {venv}) is under /tmp, which PrivateTmp=yes and the "
            "booted system's own /tmp hide from the service: run from a checkout elsewhere"
        )
    base = Path(os.path.realpath(sys.base_prefix))
    if not under(base, HIDDEN_BY_PROTECT_HOME):
        return ""
    config = (venv / "pyvenv.cfg").read_text(encoding="utf-8")
    for spelling in {sys.base_prefix, str(base)}:
        config = config.replace(spelling, str(PYTHON_HOME))
    write(payload / venv.relative_to("/") / "pyvenv.cfg", config)
    for link in (venv / "bin").iterdir():
        target = Path(os.path.realpath(link))
        if link.is_symlink() and under(target, (base,)):
            copy = payload / link.relative_to("/")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.symlink_to(PYTHON_HOME / target.relative_to(base))
    write(payload / "etc/ld.so.conf.d/rotator-python.conf", f"{PYTHON_HOME / 'lib'}\n")
    return str(base)


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def config_document(sandbox: RunningSandbox, extra_policies: list[dict[str, Any]] | None = None) -> str:
    policies: list[dict[str, Any]] = [
        {"name": "nightly", "servers": [1], "schedule": {"cron": "0 3 * * *"}, "retention": {"keep_last": 3}},
        # no schedule: the daemon warns at start (policy.unscheduled), which journald must store as one
        {"name": "adhoc", "servers": [1], "retention": {"keep_last": 3}},
    ]
    document = {
        "api": {"url": sandbox.api_url, **FAST_API},
        "daemon": FAST_DAEMON,
        "policies": policies + (extra_policies or []),
        "log": {"format": "json", "level": "info"},
    }
    return yaml.safe_dump(document, sort_keys=False)


def build_payload(payload: Path, sandbox: RunningSandbox) -> str:
    """The files installed into the booted system; returns the interpreter's home for boot.sh."""
    rotator = Path(sys.executable).parent / "rotator"
    assert rotator.is_file(), f"{rotator} is missing: is the package installed?"
    units = payload / "etc/systemd/system"
    write(units / SERVICE, UNIT.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(rotator)))
    write(units / f"{SERVICE}.d/10-test-watchdog.conf", DROP_IN)
    write(units / "rotator-boot.target", BOOT_TARGET)
    write(payload / "etc/systemd/journald.conf.d/10-test.conf", JOURNALD)
    write(payload / "etc/rotator/config.yaml", config_document(sandbox))
    write(payload / "etc/rotator/api-token", sandbox.token, mode=0o600)
    python_home = venv_payload(payload)
    for directory in [payload, *(p for p in payload.rglob("*") if p.is_dir() and not p.is_symlink())]:
        directory.chmod(0o755)  # cp copies the modes, of / and /etc too
    return python_home


@dataclass
class Machine:
    """systemd booted as PID 1 in namespaces: run commands inside, read its state, tear it down."""

    budget: Budget
    cgroup: Path
    log: Path
    console: Path
    process: subprocess.Popen[bytes] | None = None
    pid: int = 0  # systemd's PID on the host

    @property
    def root(self) -> Path:
        """The booted system's / seen from the host."""
        return Path(f"/proc/{self.pid}/root")

    def run(
        self, *argv: str, check: bool = True, timeout: float = DEADLINE
    ) -> subprocess.CompletedProcess[str]:
        command = ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--root", "--wd", *argv]
        env = {"PATH": PATH, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        result = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.budget.timeout(timeout),
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}\n{self.diagnostics()}"
            )
        return result

    def systemctl(self, *args: str) -> str:
        return self.run("systemctl", *args).stdout

    def show(self, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", *(f"--property={p}" for p in properties), SERVICE)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, invocation: str) -> list[tuple[str, str]]:
        """``(pid, message)`` of one invocation of the unit: systemd's lines about it and its output."""
        out = self.run(
            "journalctl", "--no-pager", "--output=json",
            f"INVOCATION_ID={invocation}", "+", f"_SYSTEMD_INVOCATION_ID={invocation}",
        ).stdout  # fmt: skip
        entries = []
        for line in out.splitlines():
            entry = json.loads(line)
            message = entry.get("MESSAGE", "")
            if isinstance(message, list):  # not UTF-8: journalctl gives the bytes
                message = bytes(message).decode(errors="replace")
            entries.append((str(entry.get("_PID", "")), str(message)))
        return entries

    def entries(self, *matches: str) -> list[dict[str, Any]]:
        """The journal's entries (all their fields) that ``journalctl`` selects with ``matches``."""
        out = self.run("journalctl", "--no-pager", "--output=json", *matches).stdout
        return [json.loads(line) for line in out.splitlines()]

    def diagnostics(self) -> str:
        """What systemd says about the unit, for a failure message."""
        if self.process is None or self.process.poll() is not None:
            return f"systemd is gone; its output:\n{tail(self.log.read_text(errors='replace'), 30)}"
        try:
            status = self.run(
                "systemctl", "status", "--no-pager", "--full", "--lines=0", SERVICE, check=False
            )
            journal = self.run("journalctl", "--no-pager", "--lines=40", f"--unit={SERVICE}", check=False)
        except (subprocess.TimeoutExpired, AssertionError) as exc:
            return f"(no diagnostics: {exc})"
        return f"{status.stdout}\n{tail(journal.stdout, 40)}"

    def boot(self, work: Path, payload: Path, python_home: str) -> None:
        """Start boot.sh as PID 1 of new namespaces, in our cgroup, and wait for systemd; skip if it fails."""
        shell = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
        command = [
            # if pytest dies, unshare is killed and --kill-child takes systemd (and its namespace) along
            "setpriv", "--pdeathsig", "KILL", "--",
            "sh", "-c", shell, "sh", str(self.cgroup),
            "unshare", "--pid", "--fork", "--kill-child", "--mount", "--cgroup", "--uts", "--ipc",
            "--propagation", "private",
            "sh", str(BOOT_SCRIPT), str(work), str(payload), str(self.console), python_home,
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, env={"PATH": PATH}, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        process = self.process

        def started() -> int | None:
            if process.poll() is not None:
                pytest.skip(
                    "systemd did not boot in private namespaces here: "
                    f"boot.sh exited {process.returncode} {failed_step(self.log)}"
                )
            children = children_of(process.pid)
            return children[0] if children else None

        self.pid = wait_until(started, "unshare to fork PID 1", self.budget, timeout=10)

        seen = {"state": "PID 1 not yet systemd"}

        def booted() -> str | None:
            if process.poll() is not None:
                pytest.skip(
                    f"systemd as PID 1 exited {process.returncode} while booting:\n"
                    f"{tail(self.log.read_text(errors='replace'))}\n{tail(self.console.read_text(errors='replace'))}"
                )
            try:
                comm = Path(f"/proc/{self.pid}/comm").read_text(encoding="utf-8").strip()
            except OSError:
                return None  # gone: poll() says so next time
            if comm != "systemd":
                seen["state"] = f"PID 1 is still {comm!r}"
                return None
            try:
                result = self.run("systemctl", "is-system-running", check=False, timeout=5)
            except subprocess.TimeoutExpired:
                seen["state"] = "systemctl is-system-running does not answer"
                return None
            state = result.stdout.strip()
            seen["state"] = f"is-system-running says {state or result.stderr.strip()!r}"
            return state if state in ("running", "degraded") else None

        try:
            wait_until(booted, "systemd to boot", self.budget)
        except AssertionError as exc:
            pytest.skip(
                f"systemd as PID 1 did not finish booting here: {exc} ({seen['state']}); "
                f"its output: {tail(self.log.read_text(errors='replace'), 3)!r}"
            )

    def shutdown(self) -> None:
        """Kill PID 1 (the kernel then kills every process of its namespace), reap, remove the cgroup."""
        budget = Budget(30)  # teardown has its own time, even when the module's budget is spent
        try:
            if self.process is not None and self.process.poll() is None:
                if self.pid:
                    os.kill(self.pid, signal.SIGKILL)  # unshare reaps it and exits with its status
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            remove_cgroup(self.cgroup, budget)


@pytest.fixture(name="budget", scope="module")
def fixture_budget() -> Budget:
    """Skip unless this machine can boot systemd in namespaces; then the module's time starts."""
    check_preconditions()
    return Budget(BUDGET)


@pytest.fixture(name="sandbox", scope="module")
def fixture_sandbox() -> Iterator[RunningSandbox]:
    """The provider's API on a loopback port, reachable from the namespaces (same network namespace)."""
    options = SandboxOptions(fleet="empty", servers=1, create_seconds=0.5)
    with running_sandbox(options) as running:
        yield running


@pytest.fixture(name="machine", scope="module")
def fixture_machine(
    budget: Budget, sandbox: RunningSandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Machine]:
    """systemd booted as PID 1 with rotator.service installed (not started); torn down in any case."""
    base = tmp_path_factory.mktemp("systemd-boot")
    payload, work = base / "payload", base / "work"
    work.mkdir()
    python_home = build_payload(payload, sandbox)
    machine = Machine(budget, make_cgroup(), base / "boot.log", base / "console")
    machine.console.touch()
    try:
        machine.boot(work, payload, python_home)
        yield machine
    finally:
        machine.shutdown()


# -- helpers on the unit --------------------------------------------------------------


def start(machine: Machine) -> dict[str, str]:
    """``systemctl start`` (not blocking) and wait until active; the unit's properties then."""
    machine.systemctl("start", "--no-block", SERVICE)

    def active() -> dict[str, str] | None:
        shown = machine.show("ActiveState", "SubState", "MainPID", "InvocationID", "NRestarts", "Result")
        if shown["ActiveState"] == "failed" or shown["SubState"] == "auto-restart":
            raise AssertionError(f"{SERVICE} failed to start: {shown}\n{machine.diagnostics()}")
        return shown if shown["ActiveState"] == "active" else None

    return wait_until(active, f"{SERVICE} to be active", machine.budget, context=machine.diagnostics)


def messages(machine: Machine, invocation: str, pid: str | None = None) -> list[str]:
    return [message for sender, message in machine.journal(invocation) if pid is None or sender == pid]


def daemon_events(machine: Machine, invocation: str, name: str) -> list[dict[str, Any]]:
    """rotator's JSON log events ``name`` in the journal of one invocation."""
    found = []
    for message in messages(machine, invocation):
        if message.startswith("{"):
            event = json.loads(message)
            if event.get("event") == name:
                found.append(event)
    return found


def seen_in_journal(machine: Machine, invocation: str, *needles: str, pid: str | None = None) -> list[str]:
    """Wait until every needle is in some journal message; the messages."""

    def seen() -> list[str] | None:
        lines = messages(machine, invocation, pid)
        return lines if all(any(n in line for line in lines) for n in needles) else None

    return wait_until(seen, f"{needles} in the journal", machine.budget, context=machine.diagnostics)


def seen_in_order(machine: Machine, invocation: str, *needles: str, pid: str | None = None) -> None:
    """Wait until journal messages contain ``needles`` one after the other (others in between)."""

    def in_order() -> bool:
        lines = iter(messages(machine, invocation, pid))
        return all(any(needle in line for line in lines) for needle in needles)  # consumes in order

    wait_until(
        in_order, f"{' then '.join(needles)} in the journal", machine.budget, context=machine.diagnostics
    )


def index_of(lines: list[str], needle: str) -> int:
    return next(i for i, line in enumerate(lines) if needle in line)


def proc_status(machine: Machine, pid: str) -> dict[str, str]:
    out = machine.run("cat", f"/proc/{pid}/status").stdout
    return {key: value.strip() for key, _, value in (line.partition(":") for line in out.splitlines())}


def mounts_of(machine: Machine, pid: str) -> dict[str, tuple[str, str, str]]:
    """The service's mount table: ``{mount point: (root within its filesystem, options, fs type)}``."""
    table = {}
    for line in machine.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split(" ")
        table[fields[4]] = (fields[3], fields[5], after.split(" ")[0])
    return table


# -- the tests ------------------------------------------------------------------------


def test_the_real_unit_under_systemd(machine: Machine, sandbox: RunningSandbox) -> None:
    """Start (READY, status), hardening, watchdog, reload and stop of rotator.service under systemd."""
    budget = machine.budget

    # -- start: active only once systemd got READY=1 from the main process
    shown = start(machine)
    pid, invocation = shown["MainPID"], shown["InvocationID"]
    assert shown["SubState"] == "running"
    lines = seen_in_journal(machine, invocation, "READY=1", "Changed start -> running", pid="1")
    ready = index_of(lines, "READY=1")
    assert f"Got notification message from PID {pid} (READY=1" in lines[ready], lines[ready]
    assert ready < index_of(lines, "Changed start -> running"), "running before READY=1"
    wait_until(lambda: daemon_events(machine, invocation, "daemon.started"), "daemon.started", budget)

    # StatusText= names the next run; once the catch-up run (through the API, with the
    # token from the credential) is done, the last run too
    status = machine.show("StatusText")["StatusText"]
    assert status.startswith("next run nightly 20"), status
    wait_until(
        lambda: "last run nightly ok" in machine.show("StatusText")["StatusText"],
        "StatusText to report the catch-up run",
        budget,
        context=machine.diagnostics,
    )
    stats = sandbox.sandbox.stats()
    assert stats["total"] > 0
    outcomes = {outcome for counts in stats["requests"].values() for outcome in counts}
    assert "401" not in outcomes, stats
    created = [
        event
        for event in sandbox.state.events("created")
        if "[rotator:nightly@" in event.backup["description"]
    ]
    assert created, "the catch-up run created no backup"

    # -- journald priorities: -p warning finds the daemon's warning and none of its info lines
    def warnings_of_rotator() -> list[dict[str, Any]]:
        found = machine.entries("-p", "warning", f"--unit={SERVICE}", f"_SYSTEMD_INVOCATION_ID={invocation}")
        return [entry for entry in found if entry.get("_PID") == pid]

    warned = wait_until(warnings_of_rotator, "journalctl -p warning to find rotator's warning", budget)
    assert {entry["PRIORITY"] for entry in warned} <= {"0", "1", "2", "3", "4"}, warned
    unscheduled = [json.loads(entry["MESSAGE"]) for entry in warned if entry["PRIORITY"] == "4"]
    assert [event["event"] for event in unscheduled] == ["policy.unscheduled"], warned
    assert unscheduled[0]["policy"] == "adhoc"
    assert unscheduled[0]["level"] == "warning"
    assert "timestamp" not in unscheduled[0], "journald stamps the line: rotator writes no time"
    everything = [
        entry for entry in machine.entries(f"_SYSTEMD_INVOCATION_ID={invocation}") if entry.get("_PID") == pid
    ]
    started = [entry for entry in everything if '"daemon.started"' in str(entry.get("MESSAGE"))]
    assert [entry["PRIORITY"] for entry in started] == ["6"], started
    assert not any(str(entry.get("MESSAGE")).startswith("<") for entry in everything), "a prefix was stored"

    # -- the hardening, as the kernel sees the process
    proc = proc_status(machine, pid)
    uids, gids = proc["Uid"].split(), proc["Gid"].split()
    assert len(set(uids)) == 1, f"real, effective, saved and fs Uid differ: {uids}"
    assert int(uids[0]) in DYNAMIC_UIDS, f"not a dynamic user: Uid {uids}"
    assert len(set(gids)) == 1, f"real, effective, saved and fs Gid differ: {gids}"
    assert int(gids[0]) in DYNAMIC_UIDS, f"not a dynamic group: Gid {gids}"
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(proc[capabilities], 16) == 0, f"{capabilities}: {proc[capabilities]}"
    assert proc["NoNewPrivs"] == "1"
    assert proc["Seccomp"] == "2", "no seccomp filter (SystemCallFilter=)"
    uid_map = machine.run("cat", f"/proc/{pid}/uid_map").stdout.split()
    assert uid_map == ["0", "0", "1", uids[0], uids[0], "1"], f"PrivateUsers=: uid_map {uid_map}"
    mounts = mounts_of(machine, pid)
    assert "ro" in mounts["/"][1].split(","), f"ProtectSystem=strict: / is {mounts['/']}"
    for hidden in ("/root", "/home", "/run/user"):
        assert hidden in mounts, f"ProtectHome=: {hidden} is not hidden"
        assert "ro" in mounts[hidden][1].split(","), f"ProtectHome=: {hidden} is {mounts[hidden]}"
    assert "systemd-private-" in mounts["/tmp"][0], f"PrivateTmp=: /tmp is {mounts['/tmp']}"
    assert mounts["/proc"][2] == "proc"
    environ = machine.run("cat", f"/proc/{pid}/environ").stdout.split("\0")
    assert f"WATCHDOG_USEC={WATCHDOG_SEC * 1_000_000}" in environ, "the watchdog drop-in is not in effect"
    assert f"CREDENTIALS_DIRECTORY=/run/credentials/{SERVICE}" in environ
    assert not any(sandbox.token in variable for variable in environ), "the token is in the environment"

    # -- the watchdog: pings recorded by systemd, the same process alive well past WatchdogSec
    assert machine.show("WatchdogUSec")["WatchdogUSec"] == f"{WATCHDOG_SEC}s"
    pings: list[int] = []
    until = time.monotonic() + budget.timeout(ALIVE_FOR)
    while time.monotonic() < until:
        now = machine.show("ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert (now["ActiveState"], now["MainPID"], now["NRestarts"]) == ("active", pid, "0"), (
            f"{now}\n{machine.diagnostics()}"
        )
        stamp = int(now["WatchdogTimestampMonotonic"])
        if not pings or stamp != pings[-1]:
            pings.append(stamp)
        time.sleep(POLL)
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(pings)]
    assert len(pings) >= ALIVE_FOR / (WATCHDOG_SEC / 2) - 1, f"too few WATCHDOG=1 in {ALIVE_FOR}s: {gaps}"
    assert max(gaps) < WATCHDOG_SEC, f"a gap between WATCHDOG=1 reached WatchdogSec: {gaps}"
    assert not any("Watchdog timeout" in line for line in messages(machine, invocation, "1"))

    # -- reload: a new policy is read, systemd goes reloading -> running, same process
    extra = {
        "name": "weekly",
        "servers": [1],
        "schedule": {"cron": "0 4 * * 1"},
        "retention": {"keep_last": 2},
        "catch_up": False,
    }
    write(machine.root / "etc/rotator/config.yaml", config_document(sandbox, [extra]))
    # With Type=notify and ExecReload=kill -HUP, systemd (252 here) ends the reload job when
    # kill exits: `systemctl reload` may return before the daemon has reloaded. The daemon's
    # RELOADING=1 puts the unit back in "reloading" until its READY=1; so wait for that.
    machine.systemctl("reload", SERVICE)
    seen_in_order(machine, invocation, "RELOADING=1", "READY=1", "Changed reload -> running", pid="1")
    reloaded = wait_until(
        lambda: daemon_events(machine, invocation, "config.reloaded"), "config.reloaded", budget
    )
    assert reloaded[-1]["policies"] == ["adhoc", "nightly", "weekly"]

    def running_again() -> dict[str, str] | None:
        shown = machine.show("ActiveState", "SubState", "MainPID", "StatusText")
        return shown if shown["SubState"] == "running" else None

    now = wait_until(running_again, "the unit back to running after the reload", budget)
    assert (now["ActiveState"], now["MainPID"]) == ("active", pid), now
    first, when = min(reloaded[-1]["next_runs"].items(), key=lambda item: item[1])
    assert now["StatusText"].startswith(f"next run {first} {when}"), now["StatusText"]

    # -- stop: STOPPING=1, exit status 0, Result=success
    machine.systemctl("stop", SERVICE)  # returns once the unit is stopped
    now = machine.show("ActiveState", "InvocationID", "ExecMainCode", "ExecMainStatus", "Result")
    assert now["InvocationID"] == invocation, "the unit was unloaded: its exit status is lost"
    assert now["ActiveState"] == "inactive"
    assert (now["ExecMainCode"], now["ExecMainStatus"], now["Result"]) == ("1", "0", "success"), now
    lines = seen_in_journal(machine, invocation, "STOPPING=1", "status=0/SUCCESS", pid="1")
    assert f"Got notification message from PID {pid} (STOPPING=1" in lines[index_of(lines, "STOPPING=1")]
    wait_until(lambda: daemon_events(machine, invocation, "daemon.stopped"), "daemon.stopped", budget)


def test_a_frozen_daemon_is_caught_by_the_watchdog(machine: Machine) -> None:
    """The watchdog is live: a daemon that stops pinging (SIGSTOP) ends with Result=watchdog."""
    shown = start(machine)
    pid, invocation = shown["MainPID"], shown["InvocationID"]
    machine.run("kill", "-STOP", pid)
    wait_until(
        lambda: machine.show("Result")["Result"] == "watchdog",
        "Result=watchdog",
        machine.budget,
        timeout=WATCHDOG_SEC + 10,
        context=machine.diagnostics,
    )
    seen_in_journal(machine, invocation, "Watchdog timeout", pid="1")
    # systemd sent WatchdogSignal (SIGABRT), which waits on the stopped process: end it
    machine.systemctl("kill", "--signal=SIGKILL", SERVICE)
    machine.systemctl("stop", SERVICE)  # also cancels the restart Restart=on-failure scheduled
    now = machine.show("ActiveState", "SubState", "MainPID", "Result")
    assert now["ActiveState"] in ("inactive", "failed"), now
    assert (now["SubState"], now["MainPID"], now["Result"]) in {
        ("dead", "0", "watchdog"),
        ("failed", "0", "watchdog"),
    }, now
