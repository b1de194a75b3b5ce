"""How fast the retention engine plans one server's candidates.

Run: ``python bench/bench_planner.py [--runs 5] [--sizes 100000 1000000]``.
Prints the machine, then per size the median (and min/max) of the runs, against
the targets: 0.3 s for 100,000 candidates and 3 s for 1,000,000.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rotator.markers import make_marker
from rotator.models import Backup, ServerRef
from rotator.retention import Policy, Retention, plan_server

TARGETS = {100_000: 0.3, 1_000_000: 3.0}
NOW = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
POLICY = Policy(
    name="nightly",
    servers=(12345,),
    timezone="UTC",
    retention=Retention(
        keep_last=5,
        keep_days=7,
        keep_hourly=48,
        keep_daily=14,
        keep_weekly=8,
        keep_monthly=12,
        keep_yearly=5,
        min_keep=3,
    ),
)


def make_candidates(count: int, seed: int = 1) -> list[Backup]:
    """``count`` owned manual completed backups of one server, one every 1-19 minutes back from NOW.

    The listing is in random order (the API's order is not a clock), and each
    backup is built in listing order, as a parsed API answer would be.
    """
    rng = random.Random(seed)
    server = ServerRef(id=12345, name="web-server-01")
    ages = list(itertools.accumulate(rng.randint(60, 1140) for _ in range(count)))
    order = list(range(count))
    rng.shuffle(order)
    backups = []
    for number in order:
        created = NOW - timedelta(seconds=ages[number])
        backups.append(
            Backup(
                id=count - number,  # the newer, the higher the id
                server=server,
                backup_type="manual",
                status="completed",
                size_mb=4500,
                created_at=created,
                expires_at=None,
                description=f"Nightly backup {make_marker('nightly', created)}",
            )
        )
    return backups


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.python_implementation()} {platform.python_version()} on {platform.system()} "
        f"{platform.release()} ({platform.machine()}), {cpu}, {os.cpu_count()} CPUs"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(TARGETS))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"policy:  {POLICY.retention}")
    failed = False
    for size in args.sizes:
        backups = make_candidates(size)
        timings: list[float] = []
        materialised: list[float] = []
        for _ in range(max(args.runs, 1)):
            gc.collect()
            gc.disable()  # as timeit does: time the engine, not a collection of the input
            started = time.perf_counter()
            plan = plan_server(backups, POLICY, NOW)
            timings.append(time.perf_counter() - started)
            _ = plan.delete  # the delete decisions, built on first use
            materialised.append(time.perf_counter() - started)
            gc.enable()
        median = statistics.median(timings)
        target = TARGETS.get(size)
        verdict = "" if target is None else (" OK" if median < target else " SLOW")
        failed |= target is not None and median >= target
        print(
            f"{size:>9,} candidates: median {median:.3f} s "
            f"(min {min(timings):.3f}, max {max(timings):.3f}, {len(timings)} runs; "
            f"target {target if target is not None else '-'} s){verdict}; "
            f"keep {len(plan.keep)}, delete {len(plan.delete)}"
        )
        print(f"{'':>9}   with the delete decisions built: median {statistics.median(materialised):.3f} s")
        del backups, plan
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
