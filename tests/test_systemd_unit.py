"""systemd/rotator.service: systemd-analyze verify prints nothing, security exposure <= 1.5, key settings.

``systemd-analyze verify`` exits 0 even on unknown keys and bad values (it
only prints a warning), so the test fails on any output at all. It runs on a
copy of the unit whose ExecStart names this environment's ``rotator`` (verify
checks that the binary exists). When ``systemd-analyze`` is missing and we are
root on a Debian-like system, the test installs Debian's ``systemd`` package;
otherwise it skips, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "rotator.service"
INSTALLED_BINARY = "/usr/local/bin/rotator"
MAX_EXPOSURE = 1.5
EX_CONFIG = 78


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}``; systemd keys may repeat, so every value is kept."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        key, _, value = line.partition("=")
        sections[current][key.strip()].append(value.strip())
    return sections


@pytest.fixture(name="unit", scope="module")
def fixture_unit() -> dict[str, dict[str, list[str]]]:
    """The unit file, parsed."""
    return parse_unit(UNIT.read_text(encoding="utf-8"))


@pytest.fixture(name="systemd_analyze", scope="module")
def fixture_systemd_analyze() -> str:
    """The path of systemd-analyze, installing Debian's systemd package if need be and allowed."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if not sys.platform.startswith("linux"):
        pytest.skip(f"systemd-analyze cannot exist on {sys.platform}")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("systemd-analyze is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "systemd"],
    ):
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    found = shutil.which("systemd-analyze")
    assert found, "apt-get install systemd did not provide systemd-analyze"
    return found


def installed_copy(directory: Path, text: str | None = None) -> Path:
    """The unit as verify should see it: ExecStart pointing at this environment's rotator."""
    rotator = Path(sys.executable).parent / "rotator"
    assert rotator.is_file(), f"{rotator} is missing: is the package installed?"
    content = (text if text is not None else UNIT.read_text(encoding="utf-8")).replace(
        INSTALLED_BINARY, str(rotator)
    )
    copy = directory / "rotator.service"
    copy.write_text(content, encoding="utf-8")
    return copy


def analyze(systemd_analyze: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


def test_verify_prints_nothing(systemd_analyze: str, tmp_path: Path) -> None:
    """systemd-analyze verify: exit 0 and not one line of output."""
    result = analyze(systemd_analyze, "verify", str(installed_copy(tmp_path)))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_mistake(systemd_analyze: str, tmp_path: Path) -> None:
    """The check above means something: a misspelt key only warns (exit 0), and the warning is seen."""
    text = UNIT.read_text(encoding="utf-8").replace("ProtectHome=yes", "ProtectHom=yes")
    result = analyze(systemd_analyze, "verify", str(installed_copy(tmp_path, text)))
    assert "Unknown key" in result.stdout + result.stderr


def test_security_exposure(systemd_analyze: str, tmp_path: Path) -> None:
    """systemd-analyze security --offline=true: overall exposure 1.5 or less."""
    result = analyze(
        systemd_analyze, "security", "--offline=true", "--no-pager", str(installed_copy(tmp_path))
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for rotator\.service:\s*([0-9.]+)", output)
    assert match, output
    exposure = float(match[1])
    print(f"systemd-analyze security: overall exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, output


def test_notify_and_restart_settings(unit: dict[str, dict[str, list[str]]]) -> None:
    """Type=notify with a watchdog; restart on failure but never on a configuration error (78)."""
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == [str(EX_CONFIG)]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"] == [f"{INSTALLED_BINARY} run --config /etc/rotator/config.yaml"]
    # longer than the daemon's default shutdown_grace (5m), so runs finish before SIGKILL
    assert service["TimeoutStopSec"] == ["6min"]


def test_the_token_is_a_credential(unit: dict[str, dict[str, list[str]]]) -> None:
    """The token comes in as the api-token credential, never in Environment= or the command line."""
    service = unit["Service"]
    assert service["LoadCredential"] == ["api-token:/etc/rotator/api-token"]
    assert not any("TOKEN" in value for value in service["Environment"])
    assert "token" not in service["ExecStart"][0].lower()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
    ],
)
def test_hardening_the_issue_asks_for(unit: dict[str, dict[str, list[str]]], key: str, value: str) -> None:
    """Each hardening setting the issue names is there with its value."""
    assert value in unit["Service"][key]


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def test_the_interpreter_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes does not break rotator: it runs with the kernel's W^X (PR_SET_MDWE).

    systemd enforces MemoryDenyWriteExecute= with seccomp (and, since 256, with
    the same prctl where the kernel has it). The child sets PR_SET_MDWE, which
    is inherited across exec, then runs rotator's daemon modules, TLS included.
    """
    probe = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
        "    sys.exit(77)\n"
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])\n"
    )
    work = (
        "import ssl, asyncio, json, ctypes\n"
        "import rotator.cli, rotator.scheduler, rotator.api, rotator.health, rotator.metrics\n"
        "import rotator.notify, rotator.pings, pydantic, yaml, httpx\n"
        "ssl.create_default_context()\n"
        "from rotator.config import RotatorConfig\n"
        "RotatorConfig(policies=[{'name': 'n', 'servers': [1], 'retention': {'keep_last': 1},\n"
        "              'schedule': {'cron': '0 3 * * *'}}])\n"
        "rotator.metrics.Metrics().render()\n"
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    print('W^X enforced')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, work], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3): MemoryDenyWriteExecute= is untested here")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "W^X enforced", "the probe ran without W^X: it proves nothing"
