"""Generate the differential cases of ``tests/test_retention_restic.py`` with restic itself.

For each timeline below, build a temporary restic repository, make one snapshot
per time (``restic backup --time`` of a tiny file, one host and one path, so all
snapshots are one group), then ask ``restic forget --dry-run --json`` what it
would keep under several policies. The snapshots' times as restic recorded them
and restic's answers are written to ``tests/data/restic_forget.json``; the test
replays them against rotator's engine without needing restic.

restic buckets snapshots by the process's local time zone: each timeline runs
with its own ``TZ``. restic's ``--keep-within`` counts from the newest snapshot,
rotator's ``keep_days`` from ``now``: it is left out here.

Run: ``python bench/restic_cases.py`` (needs ``restic`` on PATH; about two minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "restic_forget.json"
HOST = "rotator-differential"
PASSWORD = "differential-test-only"  # a throwaway repository in a temporary directory

# restic's reason for each option, and rotator's reason prefix for it.
OPTIONS = {
    "keep_last": ("--keep-last", "last snapshot"),
    "keep_hourly": ("--keep-hourly", "hourly snapshot"),
    "keep_daily": ("--keep-daily", "daily snapshot"),
    "keep_weekly": ("--keep-weekly", "weekly snapshot"),
    "keep_monthly": ("--keep-monthly", "monthly snapshot"),
    "keep_yearly": ("--keep-yearly", "yearly snapshot"),
}

POLICIES: list[dict[str, int]] = [
    {"keep_last": 3},
    {"keep_hourly": 6},
    {"keep_daily": 7},
    {"keep_weekly": 4},
    {"keep_monthly": 6},
    {"keep_yearly": 3},
    {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6},
    {
        "keep_last": 2,
        "keep_hourly": 3,
        "keep_daily": 3,
        "keep_weekly": 2,
        "keep_monthly": 2,
        "keep_yearly": 2,
    },
]


@dataclass(frozen=True)
class Timeline:
    name: str
    timezone: str
    times: tuple[datetime, ...]  # aware, UTC; distinct


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _around(centre: datetime, before: timedelta, after: timedelta, step: timedelta) -> Iterator[datetime]:
    moment = centre - before
    while moment <= centre + after:
        yield moment
        moment += step


def timelines() -> list[Timeline]:
    rng = random.Random(20250116)
    year_end = [_utc(2020, 12, day, 3) for day in range(20, 32)] + [
        _utc(2021, 1, day, 3) for day in range(1, 13)
    ]
    year_end += [_utc(2020, 12, 27, 15), _utc(2020, 12, 31, 23, 59, 59), _utc(2021, 1, 3, 23, 59)]
    year_end += [_utc(2021, 1, 4, 0, 0, 1), _utc(2021, 1, 10, 12)]
    hours = sorted({_utc(2024, 6, 1) + timedelta(minutes=rng.randint(0, 2 * 24 * 60)) for _ in range(36)})
    years = [_utc(2016, 1, 1) + timedelta(minutes=rng.randint(0, 9 * 366 * 24 * 60)) for _ in range(26)]
    years += [_utc(2019, 12, 31, 23, 59, 59), _utc(2020, 1, 1), _utc(2022, 1, 1, 0, 0, 1)]
    years += [_utc(2022, 12, 31, 23), _utc(2025, 12, 29, 12), _utc(2026, 1, 2, 12)]
    berlin = [
        *_around(_utc(2024, 3, 31, 1), timedelta(hours=5), timedelta(hours=5), timedelta(minutes=50)),
        *_around(_utc(2024, 10, 27, 1), timedelta(hours=5), timedelta(hours=5), timedelta(minutes=35)),
        _utc(2024, 3, 30, 22, 30),
        _utc(2024, 12, 31, 23, 30),
        _utc(2025, 1, 1, 0, 30),
    ]
    new_york = [
        *_around(_utc(2024, 11, 3, 6), timedelta(hours=6), timedelta(hours=4), timedelta(minutes=40)),
        *_around(_utc(2025, 1, 1, 3), timedelta(hours=6), timedelta(hours=6), timedelta(hours=2)),
        _utc(2024, 12, 30, 4, 30),
        _utc(2024, 12, 29, 23),
    ]
    kathmandu = [_utc(2023, 1, 1) + timedelta(minutes=rng.randint(0, 3 * 366 * 24 * 60)) for _ in range(30)]
    kathmandu += [_utc(2024, 12, 31, 18, 14), _utc(2024, 12, 31, 18, 16), _utc(2025, 1, 1, 18, 15)]
    return [
        Timeline("utc-new-year-iso-week-53", "UTC", tuple(sorted(set(year_end)))),
        Timeline("utc-hours", "UTC", tuple(hours)),
        Timeline("utc-years", "UTC", tuple(sorted(set(years)))),
        Timeline("berlin-dst", "Europe/Berlin", tuple(sorted(set(berlin)))),
        Timeline("new-york-dst-new-year", "America/New_York", tuple(sorted(set(new_york)))),
        Timeline("kathmandu-quarter-hours", "Asia/Kathmandu", tuple(sorted(set(kathmandu)))),
    ]


def _restic(workdir: Path, timezone: str, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "TZ": timezone,
        "RESTIC_REPOSITORY": str(workdir / "repo"),
        "RESTIC_PASSWORD": PASSWORD,
        "RESTIC_CACHE_DIR": str(workdir / "cache"),
    }
    done = subprocess.run(
        ["restic", "--no-lock", *args] if args[0] == "forget" else ["restic", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"restic {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _parse_time(text: str) -> datetime:
    # Go writes nanoseconds; Python takes microseconds. The cases use whole seconds.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        text = head + tail[len(digits) :]
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def run_timeline(timeline: Timeline, workdir: Path) -> list[dict[str, Any]]:
    zone = ZoneInfo(timeline.timezone)
    _restic(workdir, timeline.timezone, "init", "--quiet")
    (workdir / "data.txt").write_text("tiny\n")
    for moment in timeline.times:
        local = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        _restic(workdir, timeline.timezone, "backup", "--quiet", "--host", HOST, "--time", local, "data.txt")
    snapshots = json.loads(_restic(workdir, timeline.timezone, "snapshots", "--json"))
    # Number snapshots 1, 2, ... oldest first, by the time restic recorded.
    ordered = sorted(snapshots, key=lambda snap: _parse_time(snap["time"]))
    numbers = {snap["id"]: number for number, snap in enumerate(ordered, start=1)}
    recorded = [
        {"id": numbers[snap["id"]], "created_at": _stamp(_parse_time(snap["time"]))} for snap in ordered
    ]
    if len({item["created_at"] for item in recorded}) != len(recorded):
        raise RuntimeError(f"{timeline.name}: two snapshots share a time; restic's order would be arbitrary")

    cases = []
    for rules in POLICIES:
        flags = [arg for name, count in rules.items() for arg in (OPTIONS[name][0], str(count))]
        answer = json.loads(_restic(workdir, timeline.timezone, "forget", "--dry-run", "--json", *flags))
        if len(answer) != 1:
            raise RuntimeError(f"{timeline.name}: expected one snapshot group, got {len(answer)}")
        group = answer[0]
        # restic 0.14 leaves the id out of the snapshots in "reasons": match them by time.
        by_time = {_parse_time(snap["time"]): numbers[snap["id"]] for snap in ordered}
        reasons = {
            str(by_time[_parse_time(item["snapshot"]["time"])]): sorted(item["matches"])
            for item in group.get("reasons") or []
        }
        cases.append(
            {
                "name": f"{timeline.name}:" + ",".join(f"{name}={count}" for name, count in rules.items()),
                "timezone": timeline.timezone,
                "rules": rules,
                "snapshots": recorded,
                "keep": sorted(numbers[snap["id"]] for snap in group.get("keep") or []),
                "remove": sorted(numbers[snap["id"]] for snap in group.get("remove") or []),
                "reasons": reasons,
            }
        )
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if shutil.which("restic") is None:
        print("restic is not installed (apt-get install restic)", file=sys.stderr)
        return 1
    version = subprocess.run(["restic", "version"], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="restic-cases-") as scratch:
        chosen = timelines()
        workdirs = [Path(scratch) / timeline.name for timeline in chosen]
        for workdir in workdirs:
            workdir.mkdir()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_timeline, chosen, workdirs))
    cases = [case for result in results for case in result]
    document = {
        "generated_by": version,
        "generator": "bench/restic_cases.py",
        "note": "restic forget --dry-run --json; snapshot ids are numbered oldest first",
        "options": {name: restic for name, (restic, _) in OPTIONS.items()},
        "reason_names": {name: reason for name, (_, reason) in OPTIONS.items()},
        "cases": cases,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(cases)} cases from {version} written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
