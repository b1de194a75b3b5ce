"""``make demo``: the sandbox with its demo fleet, and rotator's main job run against it.

It starts the sandbox on a free loopback port, points rotator at it with
``config.example.yaml``, and shows what a newcomer wants to see: the plan (and
the same as a dry run), one run that creates, waits and prunes with reasons
(checked to delete exactly what the plan said), the result, and the backup
commands (create and wait, delete, restore). Each step is the real
``rotator`` command in a subprocess, printed before it runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rotator.sandbox.options import SandboxOptions
from rotator.sandbox.server import running_sandbox

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config.example.yaml"


def _step(title: str, argv: Sequence[str], env: dict[str, str], *, show: bool = True) -> str:
    print(f"\n=== {title}\n$ rotator {shlex.join(argv)}", flush=True)
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "rotator", *argv], env=env, capture_output=True, text=True, check=False
    )
    sys.stdout.write(done.stdout if show else f"({len(done.stdout.splitlines())} lines of JSON)\n")
    sys.stdout.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"demo: 'rotator {shlex.join(argv)}' exited {done.returncode}")
    return done.stdout


def _manual_ids(env: dict[str, str]) -> set[int]:
    done = subprocess.run(
        [sys.executable, "-m", "rotator", "backups", "list", "--type", "manual", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {backup["id"] for backup in json.loads(done.stdout)["results"]}


def _agree(planned: dict[str, Any], deleted: set[int]) -> None:
    """The run deleted exactly what the plan said it would; the demo fails otherwise."""
    said = {item["id"] for policy in planned["policies"] for s in policy["servers"] for item in s["delete"]}
    if said != deleted:
        raise SystemExit(f"demo: the plan said delete {sorted(said)}, the run deleted {sorted(deleted)}")
    print(f"\n=== plan and run agree: the run deleted the {len(deleted)} backups the plan named", flush=True)


def main() -> int:
    config = Path(os.environ.get("ROTATOR_DEMO_CONFIG", CONFIG))
    options = SandboxOptions(seed=1, create_seconds=3.0)
    with running_sandbox(options) as sandbox:
        env = {
            **os.environ,
            "ROTATOR_API_URL": sandbox.api_url,
            "ROTATOR_API_TOKEN": sandbox.token,
            "ROTATOR_DAEMON__POLL_INTERVAL": "1s",  # the sandbox's backups take seconds, not minutes
            "ROTATOR_LOG__FORMAT": "console",
        }
        env.pop("ROTATOR_CONFIG", None)
        print(f"sandbox running at {sandbox.api_url} (demo fleet, token {sandbox.token!r})")
        _step(
            "The manual backups of server 12345",
            ["backups", "list", "--server", "12345", "--type", "manual"],
            env,
        )
        _step(
            "What a run of the nightly policy would do now (the backup it creates, the cap counted)",
            ["plan", "--config", str(config), "--server", "12345"],
            env,
        )
        planned = json.loads(
            _step("The same plan as JSON", ["plan", "--config", str(config), "--json"], env, show=False)
        )
        _step(
            "The same as a dry run (nothing created or deleted)",
            ["run-once", "--config", str(config), "--dry-run"],
            env,
        )
        before = _manual_ids(env)
        _step(
            "One run of every policy: create, wait, prune (with the reasons)",
            ["run-once", "--config", str(config), "--log-level", "info"],
            env,
        )
        _agree(planned, before - _manual_ids(env))
        _step("Server 12345 afterwards", ["backups", "list", "--server", "12345", "--type", "manual"], env)
        _step(
            "How the fleet stands (exit 0: nothing overdue or failing)",
            ["status", "--config", str(config)],
            env,
        )
        created = json.loads(
            _step(
                "A manual backup by hand, waiting for it",
                ["backups", "create", "12348", "--description", "Pre-update backup", "--wait", "--json"],
                env,
            )
        )
        _step("Deleting it again", ["backups", "delete", str(created["id"]), "--yes"], env)
        listing = json.loads(
            _step("Server 12345 as JSON", ["backups", "list", "--server", "12345", "--json"], env, show=False)
        )
        newest = max(
            (b for b in listing["results"] if b["status"] == "completed"),
            key=lambda b: (b["created_at"], b["id"]),
        )
        _step(
            "Restoring server 12345 from its newest backup",
            ["restore", "12345", str(newest["id"]), "--yes"],
            env,
        )
    print("\ndemo finished: the sandbox is stopped; nothing left this machine.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
