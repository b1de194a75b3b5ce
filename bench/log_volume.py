"""Log volume of a fleet run: the lines and bytes ``rotator run-once`` writes at info for 1,000 servers.

Run: ``python bench/log_volume.py [--servers 1000] [--runs 1] [--checkout DIR ...] [--json out.json]``.

The fleet of bench/bench_fleet.py (a ``uniform`` sandbox on loopback, 30
completed owned backups per server, ``keep_last: 30``: one create, one wait, 30
keeps and one delete per server), without its latency and rate limit, which
change how long the run takes but not what it says. rotator runs as a real
process with ``log: {format: json, level: info}``; every line it writes to
stderr is counted, by event, and the child's CPU time (user + system) is
reported beside (the sandbox runs in this process, so it is not in it).

``--checkout DIR`` measures the rotator package of another checkout (say, an
earlier commit exported with ``git archive COMMIT rotator | tar -x -C DIR``) in
the same invocation, so before and after are measured on the same machine and
sandbox: the child puts DIR first on its path (and sets aside the editable
install's finder, which would otherwise win), and the package it imported is
reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_fleet import DOCUMENTED, RUN_TIMEOUT, FleetSetup, fleet_sandbox, write_config
from bench.child_env import clean_env

ROOT = Path(__file__).resolve().parent.parent
SETUP = FleetSetup(latency=0.0, rate_limit=100_000.0, create_seconds=2.0)
# ``python -m rotator`` from the checkout named by argv[1]: its package, not the editable install's
CHILD = r"""
import runpy, sys
checkout = sys.argv.pop(1)
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path.insert(0, checkout)
if sys.argv[1:2] == ["--where"]:
    import rotator
    print(rotator.__file__)
    raise SystemExit(0)
sys.argv[0] = "rotator"
runpy.run_module("rotator", run_name="__main__", alter_sys=True)
"""
CHOICE = replace(DOCUMENTED, requests_per_second=5_000, burst=100, max_concurrency=16, poll_interval="2s")


@dataclass
class Volume:
    """One run's log: lines, bytes, and lines by event."""

    checkout: str
    package: str
    exit_code: int
    cpu_s: float = 0.0  # the child's user + system CPU time
    lines: int = 0
    bytes: int = 0
    by_event: Counter[str] = field(default_factory=Counter)
    bytes_by_event: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkout": self.checkout,
            "package": self.package,
            "exit_code": self.exit_code,
            "cpu_s": round(self.cpu_s, 2),
            "lines": self.lines,
            "bytes": self.bytes,
            "by_event": dict(self.by_event.most_common()),
            "bytes_by_event": dict(self.bytes_by_event.most_common()),
        }


def imported_package(checkout: Path) -> str:
    """Where the child's ``rotator`` comes from for ``checkout``."""
    answer = subprocess.run(
        [sys.executable, "-c", CHILD, str(checkout), "--where"],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return answer.stdout.strip()


def measure(checkout: Path, servers: int, workdir: Path) -> Volume:
    """One ``run-once`` of ``checkout``'s rotator against a fresh sandbox; its stderr counted."""
    setup = replace(SETUP, servers=servers)
    config = write_config(workdir / "fleet.yaml", setup, CHOICE, servers)
    log_path = workdir / "run.log"
    with fleet_sandbox(setup) as (running, _access), log_path.open("wb") as log_file:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = subprocess.run(
            [sys.executable, "-c", CHILD, str(checkout), "run-once", "--config", str(config)],
            env=clean_env(ROTATOR_API_URL=running.api_url, ROTATOR_API_TOKEN=running.token),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    volume = Volume(str(checkout), imported_package(checkout), process.returncode, cpu_s=cpu)
    for raw in log_path.read_bytes().splitlines(keepends=True):
        volume.lines += 1
        volume.bytes += len(raw)
        try:
            event = str(json.loads(raw).get("event", "?"))
        except ValueError:
            event = "(not JSON)"
        volume.by_event[event] += 1
        volume.bytes_by_event[event] += len(raw)
    return volume


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def describe(volume: Volume, top: int = 8) -> str:
    head = (
        f"{volume.checkout}: {volume.lines:,} lines, {volume.bytes / 1e6:.2f} MB "
        f"in {volume.cpu_s:.1f} s of CPU (exit {volume.exit_code}; rotator from {volume.package})"
    )
    rows = [
        f"    {event:<24} {count:>7,} lines {volume.bytes_by_event[event] / 1e6:>7.2f} MB"
        for event, count in volume.by_event.most_common(top)
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="runs per checkout (the median is reported)")
    parser.add_argument(
        "--checkout",
        type=Path,
        action="append",
        default=[],
        help="another checkout's rotator to measure first (repeatable); this one is always measured last",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine(), "servers": args.servers, "checkouts": []}
    for checkout in [*args.checkout, ROOT]:
        volumes = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="rotator-logs-") as tmp:
                volumes.append(measure(checkout.resolve(), args.servers, Path(tmp)))
        median = sorted(volumes, key=lambda v: v.lines)[len(volumes) // 2]
        print(describe(median), flush=True)
        results["checkouts"].append(
            {
                **median.to_json(),
                "runs": [{"lines": v.lines, "bytes": v.bytes, "cpu_s": round(v.cpu_s, 2)} for v in volumes],
                "median_cpu_s": round(statistics.median(v.cpu_s for v in volumes), 2),
                "median_lines": statistics.median(v.lines for v in volumes),
            }
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if all(c["exit_code"] == 0 for c in results["checkouts"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
