"""promtool for the tests: found on PATH, else Debian's ``prometheus`` package installed as root.

The package's service must not start (a Prometheus server on :9090 for the rest of the machine's
life): a ``policy-rc.d`` that answers 101 ("action forbidden") is in place while apt-get runs, and
removed after, when it was ours. Where apt cannot install it (not root, no apt-get, no package),
the caller skips with the reason :func:`find_promtool` gives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

PACKAGE: Final = "prometheus"
POLICY_RC_D: Final = Path("/usr/sbin/policy-rc.d")
PATH: Final = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin", "/bin", "/sbin"])
APT_TIMEOUT: Final = 900


class PromtoolMissing(Exception):
    """promtool is not here and could not be installed; the message says why."""


def _tail(text: str, lines: int = 3) -> str:
    return " ".join(text.strip().splitlines()[-lines:]) or "(no output)"


def _apt(*arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": PATH}
    # other processes on this machine may hold dpkg's lock for a while: wait for it, not fail
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=600", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False)


def install_promtool() -> str:
    """``apt-get install prometheus`` with services kept from starting; the path of promtool."""
    if not sys.platform.startswith("linux"):
        raise PromtoolMissing(f"promtool is not on PATH, and Debian's package cannot exist on {sys.platform}")
    if shutil.which("apt-get", path=PATH) is None:
        raise PromtoolMissing("promtool is not on PATH and cannot be installed here (no apt-get)")
    if os.geteuid() != 0:
        raise PromtoolMissing("promtool is not on PATH and cannot be installed here (apt-get needs root)")
    ours = not POLICY_RC_D.exists()
    if ours:
        POLICY_RC_D.write_text("#!/bin/sh\n# rotator's tests: install, start no service\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        install = ["install", "-y", "--no-install-recommends", PACKAGE]
        result = _apt(*install)
        if result.returncode != 0:  # the package lists may be missing or old: read them, try again
            _apt("update")
            result = _apt(*install)
        if result.returncode != 0:
            raise PromtoolMissing(f"apt-get install {PACKAGE} failed: {_tail(result.stderr)}")
    finally:
        if ours:
            POLICY_RC_D.unlink(missing_ok=True)
    found = shutil.which("promtool", path=PATH)
    if found is None:
        raise PromtoolMissing(f"apt-get install {PACKAGE} did not provide promtool")
    return found


def find_promtool() -> str:
    """promtool's path: on PATH, else installed; :class:`PromtoolMissing` with the reason otherwise."""
    return shutil.which("promtool", path=PATH) or install_promtool()


if __name__ == "__main__":  # `python -m tests.promtool`: install it ahead of the tests
    try:
        print(find_promtool())
    except PromtoolMissing as exc:
        print(f"promtool: {exc}", file=sys.stderr)
        sys.exit(1)
