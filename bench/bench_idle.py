"""Idle daemon: ``rotator run`` with 100 policies of 1,000 servers each, doing nothing for a minute.

Run: ``python bench/bench_idle.py [--runs 3] [--idle 60] [--quick] [--json out.json]``.

The configuration is generated into a temporary directory: 100 policies of
1,000 servers each (100,000 servers, no two policies sharing one), each on a
daily cron twelve hours away from now (so nothing fires during the
measurement) with ``catch_up: false`` (so the start does not list anything).
rotator still gets an API to talk to: an empty sandbox on loopback, whose
request count afterwards shows that the idle daemon sent nothing.

Measured, per run, on the real process:

* time to ready: from just before the process is started to the arrival of
  ``READY=1`` on a notify socket the benchmark listens on (``NOTIFY_SOCKET``,
  a unix datagram socket, as systemd provides): interpreter start, imports, the
  configuration read and checked, the scheduler started;
* resident memory: ``VmRSS`` from ``/proc/PID/status`` at the end of the idle
  minute (the target) and ``VmHWM``, the peak since the start;
* CPU time: ``utime + stime`` from ``/proc/PID/stat`` over the idle minute,
  as a share of that minute (the target), and the CPU spent until ready.

Targets: RSS <= 80 MB, CPU <= 1 % of the minute. Medians of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.child_env import clean_env
from bench.notify_socket import NotifySocket
from rotator.sandbox import SandboxOptions, running_sandbox

TARGETS = {"rss_mb": 80.0, "cpu_share": 0.01}
READY_TIMEOUT = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_config(path: Path, policies: int, servers: int, now: datetime) -> Path:
    """``policies`` policies of ``servers`` servers each, on a daily cron twelve hours from ``now``."""
    far = now + timedelta(hours=12)
    document = {
        "policies": [
            {
                "name": f"fleet-{index:03d}",
                "servers": list(range(index * servers + 1, (index + 1) * servers + 1)),
                "schedule": {"cron": f"{far.minute} {far.hour} * * *"},
                "retention": {"keep_daily": 7, "keep_weekly": 4, "min_keep": 3},
                "catch_up": False,
            }
            for index in range(policies)
        ],
        "api": {"requests_per_second": 100, "burst": 10, "max_concurrency": 8},
        "log": {"format": "json", "level": "info"},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=None), encoding="utf-8")
    return path


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def proc_memory(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` in MiB (the kernel's kB / 1024; the 80 MB target is read as 80 MiB)."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


@dataclass
class IdleRun:
    ready_s: float
    startup_cpu_s: float
    idle_s: float
    idle_cpu_s: float
    cpu_share: float
    rss_mb: float
    hwm_mb: float
    rss_samples_max_mb: float
    api_requests: int
    exit_code: int
    status: str


def run_once(config: Path, idle: float) -> IdleRun:
    notify = NotifySocket()
    with running_sandbox(SandboxOptions(fleet="empty", servers=1)) as sandbox:
        env = clean_env(
            NOTIFY_SOCKET=notify.path, ROTATOR_API_URL=sandbox.api_url, ROTATOR_API_TOKEN=sandbox.token
        )
        env.pop("WATCHDOG_USEC", None)
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "rotator", "run", "--config", str(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = started + READY_TIMEOUT
            while (ready := notify.first("READY")) is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rotator run sent no READY=1 (exit {process.poll()})")
                time.sleep(0.002)
            ready_at, fields = ready.at, ready.fields
            cpu_at_ready = proc_cpu(process.pid)
            idle_from = time.monotonic()
            cpu_from = proc_cpu(process.pid)
            samples: list[float] = []
            while (left := idle_from + idle - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                samples.append(proc_memory(process.pid)["VmRSS"])
            cpu_to = proc_cpu(process.pid)
            idle_to = time.monotonic()
            memory = proc_memory(process.pid)
            requests = int(sandbox.sandbox.stats()["total"])
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            notify.close()
    status = fields.get("STATUS", "")
    errors = [line for line in stderr.splitlines() if '"level": "error"' in line or "Traceback" in line]
    if errors:
        print(f"  rotator logged errors: {errors[:3]}", file=sys.stderr)
    return IdleRun(
        ready_s=ready_at - started,
        startup_cpu_s=cpu_at_ready,
        idle_s=idle_to - idle_from,
        idle_cpu_s=cpu_to - cpu_from,
        cpu_share=(cpu_to - cpu_from) / (idle_to - idle_from),
        rss_mb=memory["VmRSS"],
        hwm_mb=memory["VmHWM"],
        rss_samples_max_mb=max(samples, default=memory["VmRSS"]),
        api_requests=requests,
        exit_code=process.returncode,
        status=status,
    )


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idling measured (default 60)")
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--servers", type=int, default=1000, help="servers per policy")
    parser.add_argument("--quick", action="store_true", help="one run of 10 s")
    parser.add_argument("--json", type=Path, help="write the runs and the summary here")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.idle = 1, 10.0
    runs: list[IdleRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        config = write_config(Path(tmp) / "rotator.yaml", args.policies, args.servers, datetime.now(UTC))
        size_kb = config.stat().st_size / 1024
        print(
            f"rotator run: {args.policies} policies x {args.servers} servers "
            f"(config {size_kb:.0f} kB), idle {args.idle:g} s, {args.runs} runs"
        )
        for index in range(args.runs):
            run = run_once(config, args.idle)
            runs.append(run)
            print(
                f"  run {index + 1}: ready in {run.ready_s:.2f} s ({run.startup_cpu_s:.2f} s CPU); idle "
                f"{run.idle_s:.1f} s: CPU {run.idle_cpu_s:.3f} s ({100 * run.cpu_share:.3f} %), "
                f"RSS {run.rss_mb:.1f} MiB (peak {run.hwm_mb:.1f}); API requests {run.api_requests}; "
                f"exit {run.exit_code}; status {run.status!r}",
                flush=True,
            )
    summary = {
        "runs": len(runs),
        "idle_s": args.idle,
        "policies": args.policies,
        "servers_per_policy": args.servers,
        "config_kb": size_kb,
        "ready_s": spread([r.ready_s for r in runs]),
        "startup_cpu_s": spread([r.startup_cpu_s for r in runs]),
        "cpu_share": spread([r.cpu_share for r in runs]),
        "rss_mb": spread([r.rss_mb for r in runs]),
        "hwm_mb": spread([r.hwm_mb for r in runs]),
        "api_requests": sum(r.api_requests for r in runs),
        "all_exit_0": all(r.exit_code == 0 for r in runs),
    }
    verdicts = {
        name: (summary[name]["median"], target, summary[name]["median"] <= target)
        for name, target in TARGETS.items()
    }
    s = summary
    print(
        f"idle: time to ready median {s['ready_s']['median']:.2f} s (min {s['ready_s']['min']:.2f}, "
        f"max {s['ready_s']['max']:.2f}); RSS median {s['rss_mb']['median']:.1f} MiB "
        f"(peak {s['hwm_mb']['median']:.1f}); "
        f"CPU median {100 * s['cpu_share']['median']:.3f} % of the minute; "
        f"API requests {s['api_requests']}"
    )
    for name, (value, target, met) in verdicts.items():
        print(f"  target {name} <= {target:g}: {value:.4g} {'MET' if met else 'MISSED'}")
    if args.json is not None:
        document = {"runs": [asdict(r) for r in runs], "summary": summary, "verdicts": verdicts}
        args.json.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return 0 if all(met for _, _, met in verdicts.values()) and summary["all_exit_0"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
