"""How fast the retention engine plans one server's candidates.

Run: ``python bench/bench_planner.py [--runs 5] [--sizes 100000 1000000] [--fleet 100000]``.
Prints the machine, then per size the median (and min/max) of the runs, against
the targets: 0.3 s for 100,000 candidates and 2 s for 1,000,000 (CPU time of this
process, ``time.process_time``, judged so on a shared machine; the wall time beside it; the
garbage collector off as timeit does); then the fleet plan: ``plan_policy`` over
``--fleet`` servers x 30 owned daily backups (3,000,000 for 100,000 servers, in one
listing as an account listing gives them), against 5 s of CPU (``time.process_time``).
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
from rotator.retention import Policy, Retention, plan_policy, plan_server

TARGETS = {100_000: 0.3, 1_000_000: 2.0}
FLEET_TARGET = 5.0  # seconds of CPU to plan 100,000 servers x 30 backups
FLEET_BACKUPS = 30
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


def make_fleet(servers: int, per_server: int = FLEET_BACKUPS) -> tuple[Policy, list[Backup]]:
    """A policy of ``servers`` servers keeping 14 daily and 4 weekly, and ``per_server`` owned daily
    backups of each (ids shuffled over the fleet, as the API's are), in one account-wide listing."""
    policy = Policy(
        name="nightly",
        servers=tuple(range(1, servers + 1)),
        timezone="Europe/Berlin",
        retention=Retention(keep_daily=14, keep_weekly=4, min_keep=3),
    )
    rng = random.Random(7)
    ids = list(range(1, servers * per_server + 1))
    rng.shuffle(ids)
    slots = [NOW - timedelta(days=day) for day in range(per_server)]
    descriptions = [f"nightly {slot:%Y-%m-%d} {make_marker('nightly', slot)}" for slot in slots]
    backups: list[Backup] = []
    position = 0
    for sid in range(1, servers + 1):
        server = ServerRef(id=sid, name=f"server-{sid}")
        for day, slot in enumerate(slots):
            backups.append(
                Backup(
                    id=ids[position],
                    server=server,
                    backup_type="manual",
                    status="completed",
                    size_mb=2048,
                    # each backup its own instant, as a real fleet's (minutes apart, to the microsecond)
                    created_at=slot + timedelta(microseconds=rng.randrange(900_000_000)),
                    description=descriptions[day],
                )
            )
            position += 1
    return policy, backups


def fleet_plan(servers: int, runs: int) -> bool:
    """Time ``plan_policy`` over the fleet; True when the median CPU is within the target."""
    policy, backups = make_fleet(servers)
    cpu: list[float] = []
    plan = None
    for _ in range(max(runs, 1)):
        plan = None  # the previous run's plan freed before the clock starts, not within it
        gc.collect()
        started = time.process_time()
        plan = plan_policy(backups, policy, NOW)
        deletes = len(plan.delete)
        cpu.append(time.process_time() - started)
    median = statistics.median(cpu)
    target = FLEET_TARGET * servers / 100_000
    met = median <= target
    print(
        f"fleet plan: {servers:,} servers x {FLEET_BACKUPS} = {len(backups):,} backups: median CPU "
        f"{median:.2f} s (min {min(cpu):.2f}, max {max(cpu):.2f}, {len(cpu)} runs; target {target:g} s)"
        f"{' OK' if met else ' SLOW'}; {deletes:,} to delete"
    )
    return met


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
    parser.add_argument("--fleet", type=int, default=100_000, help="servers of the fleet plan (0: none)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"policy:  {POLICY.retention}")
    failed = False
    for size in args.sizes:
        backups = make_candidates(size)
        timings: list[float] = []
        walls: list[float] = []
        materialised: list[float] = []
        plan = None
        for _ in range(max(args.runs, 1)):
            plan = None  # the previous run's plan freed before the clock starts, not within it
            gc.collect()
            gc.disable()  # as timeit does: time the engine, not a collection of the input
            started, cpu = time.perf_counter(), time.process_time()
            plan = plan_server(backups, POLICY, NOW)
            timings.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - started)
            _ = plan.delete  # the delete decisions, built on first use
            materialised.append(time.process_time() - cpu)
            kept, deleted = len(plan.keep), len(plan.delete)
            gc.enable()
        median = statistics.median(timings)
        target = TARGETS.get(size)
        verdict = "" if target is None else (" OK" if median <= target else " SLOW")
        failed |= target is not None and median > target
        print(
            f"{size:>9,} candidates: median {median:.3f} s CPU "
            f"(min {min(timings):.3f}, max {max(timings):.3f}, {len(timings)} runs; "
            f"target {target if target is not None else '-'} s){verdict}; wall median "
            f"{statistics.median(walls):.3f} s; keep {kept}, delete {deleted}"
        )
        print(f"{'':>9}   with the delete decisions: median {statistics.median(materialised):.3f} s CPU")
        del backups, plan
    if args.fleet:
        failed |= not fleet_plan(args.fleet, min(args.runs, 3))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
