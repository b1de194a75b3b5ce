"""Debian programs some tests run (zsh, fish, groff): found on PATH, else installed with apt-get as root,
else the test is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

APT_TIMEOUT = 600


def _apt_get(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=APT_TIMEOUT,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def require_program(program: str, package: str) -> str:
    """The path of ``program``, installing Debian's ``package`` when it is missing (root only)."""
    found = shutil.which(program)
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(
            f"{program} is not installed and apt-get cannot install {package} here (not root or no apt)"
        )
    installed = _apt_get("install", "-y", "--no-install-recommends", package)
    if installed.returncode != 0:  # an old package list: refresh it once and try again
        _apt_get("update")
        installed = _apt_get("install", "-y", "--no-install-recommends", package)
    found = shutil.which(program)
    if not found:
        last = (installed.stderr or installed.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"{program}: apt-get install {package} failed: {last[0]}")
    return found
