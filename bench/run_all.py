"""Every benchmark, one after the other, then ``bench/RESULTS.md`` from what they measured.

Run: ``python bench/run_all.py [--quick] [--output bench/RESULTS.md]`` (``make bench``).

The benchmarks run as separate processes (planner, fleet, idle), each printing
what it measures as it goes; the fleet and idle benchmarks also hand their runs
over as JSON. The report records the date, the machine and its load (the
machine may be shared: a loaded machine makes every figure worse), each
benchmark's medians with min and max, and each target met or missed.
``--quick`` runs everything small and once, to try the machinery.

Exit code: 0 when every benchmark ran to its end and the report was written,
whether or not its targets were met (the report says which); 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({affinity} usable by this process)",
        "RAM": memory,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "platform": platform.platform(),
    }


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def run(command: list[str]) -> tuple[int, str, float]:
    """Run a benchmark, echoing its output as it comes; its exit code, output and duration."""
    print(f"$ {' '.join(command)}", flush=True)
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=BENCH.parent
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines), time.monotonic() - started


def spread(values: dict[str, float], fmt: str = "{:.2f}", scale: float = 1.0, unit: str = "") -> str:
    """``median`` with its unit, then (min, max)."""
    median, low, high = (values[k] * scale for k in ("median", "min", "max"))
    if low == high:
        return f"{fmt.format(median)}{unit}"
    return f"{fmt.format(median)}{unit} (min {fmt.format(low)}, max {fmt.format(high)})"


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def phase_line(run: dict[str, Any]) -> str:
    return "; ".join(f"{name} {a:.1f}-{b:.1f} s" for name, (a, b) in run["phases"].items())


SCENARIO_TITLES = {
    "documented": "documented limit (rotator configured for the real 100 requests/s)",
    "unknown": "unknown limit (rotator configured for 400 requests/s, 4x what the sandbox allows)",
    "subset": "rotator on the subset, for the cron-script comparison",
    "naive": "the cron script (bench/naive_rotate.py) on the subset",
}


def fleet_section(fleet: dict[str, Any], code: int) -> list[str]:
    setup = fleet["setup"]
    out = ["## Fleet run (`bench/bench_fleet.py`)", ""]
    out.append(
        f"The sandbox on 127.0.0.1 (uvicorn in a thread of the benchmark's process): a uniform fleet of "
        f"{setup['servers']:,} servers, each with {setup['backups_per_server']} completed backups owned by "
        f"the policy, {setup['page_size']} backups a page, {setup['latency'] * 1000:.0f} ms added to every "
        f"request, a token bucket of {setup['rate_limit']:g} requests/s holding {setup['bucket']} "
        f"(the sandbox's default burst: one second's worth; 429 with Retry-After beyond it, "
        f"RateLimit-Limit/-Remaining/-Reset on every answer), creates completing after "
        f"{setup['create_seconds']:g} s. A fresh sandbox for every run. rotator is a real process, "
        f"`python -m rotator run-once --config ...`, for one policy with `keep_last: {setup['keep_last']}` "
        f"(one create, one wait and one delete per server); its wall time is from just before the "
        f"process starts to its exit."
    )
    out.append("")
    out.append("rotator's configuration, as a user would write it for a documented limit of 100 requests/s:")
    out.append("")
    for name, choice in fleet["choices"].items():
        out.append(
            f"- {name}: `api: {{requests_per_second: {choice['requests_per_second']:g}, burst: "
            f"{choice['burst']}, max_concurrency: {choice['max_concurrency']}}}`, `daemon: {{poll_interval: "
            f"{choice['poll_interval']}, poll_max_interval: {choice['poll_max_interval']}}}`, "
            f"log level {choice['log_level']}"
        )
    out.append("")
    out.append(
        "**Lower bound** = minimum requests / rate limit. The minimum is one create and one delete per "
        "server plus two complete listings, each at the cheaper of the two ways to list (the account's "
        "manual backups, or every server's own): one before the creates (a slot's backup that already "
        "exists is adopted, never duplicated) and one after the last backup completed, which also serves "
        "every prune plan. For 1,000 servers: 30,000 backups are 300 account pages (per server: 1,000), "
        "31,000 are 310 (per server: 1,000), so 1,000 + 1,000 + 300 + 310 = 2,610 requests, 26.1 s. It "
        "leaves out the time the last backup takes to complete (2 s) and the process start, which no run "
        "avoids; on the 100-server subset those dominate the 4-s bound."
    )
    out.append("")
    for name, summary in fleet["summaries"].items():
        runs = fleet["runs"][name]
        middle = median_run(runs)
        out.append(f"### {name}: {SCENARIO_TITLES.get(name, name)}")
        out.append("")
        out.append(
            f"- servers: {summary['servers']:,}; runs: {summary['runs']}; all exited 0: {summary['all_ok']}"
        )
        out.append(f"- wall time: median {spread(summary['wall_s'], unit=' s')}")
        if name != "naive":
            duration = spread(summary["run_duration_s"], unit=" s")
            out.append(f"- rotator's own run duration (`run.finished`): {duration}")
        out.append(
            f"- minimum requests {summary['minimum']['total']:,} ({summary['minimum']}) -> lower bound "
            f"{summary['lower_bound_s']:.2f} s; **ratio** wall / bound: median {spread(summary['ratio'])}"
        )
        out.append(
            f"- requests: median {spread(summary['total_requests'], '{:.0f}')}, per server "
            f"{spread(summary['requests_per_server'])}; 429s received: "
            f"{spread(summary['rate_limited'], '{:.0f}')}, "
            f"{spread(summary['rate_limited_share'], '{:.2f}', 100, ' %')} of the requests"
        )
        for target, (value, limit, met) in fleet["verdicts"].get(name, {}).items():
            out.append(f"- target {target} <= {limit:g}: median {value:.3g} — {verdict(met)}")
        out.append(f"- the median run by route and status: `{json.dumps(middle['requests'])}`")
        out.append(
            f"- its listing pages: {middle['listing_pages']} in listings {middle['listings']}; phases "
            f"(seconds from the process start): {phase_line(middle)}"
        )
        out.append("")
    if "subset" in fleet["summaries"] and "naive" in fleet["summaries"]:
        rot = fleet["summaries"]["subset"]["wall_s"]["median"]
        naive = fleet["summaries"]["naive"]["wall_s"]["median"]
        servers = fleet["summaries"]["naive"]["servers"]
        per_server = naive / servers
        full = fleet["summaries"].get("documented", {}).get("wall_s", {}).get("median", float("nan"))
        out.append("### The cron script beside rotator")
        out.append("")
        out.append(
            f"Measured in this invocation, on servers 1-{servers} of the same {setup['servers']:,}-server "
            f"sandbox: the cron script took **{naive:.1f} s**, rotator **{rot:.1f} s** "
            f"({naive / rot:.0f}x faster). rotator's full {setup['servers']:,}-server run (measured, "
            f"above): {full:.1f} s. "
            f"The script's {per_server:.2f} s a server (a create, a poll a second until it completed, a "
            f"listing and a delete, one server after the other) extrapolates linearly to "
            f"{per_server * setup['servers'] / 60:.0f} minutes for {setup['servers']:,} servers: "
            "extrapolated, not measured."
        )
        out.append("")
    if code not in (0, 1):
        out.append(f"(bench_fleet.py exited {code}: see its output)")
        out.append("")
    return out


def idle_section(idle: dict[str, Any]) -> list[str]:
    s = idle["summary"]
    out = ["## Idle daemon (`bench/bench_idle.py`)", ""]
    out.append(
        f"`rotator run` with {s['policies']} policies of {s['servers_per_policy']:,} servers each "
        f"(a generated configuration of {s['config_kb']:.0f} kB; daily crons twelve hours away, "
        f"`catch_up: false`), idle for {s['idle_s']:g} s, {s['runs']} runs. rotator was given an empty "
        f"sandbox as its API: it received {s['api_requests']} requests in all the runs."
    )
    out.append("")
    out.append(
        f"- time from process start to `READY=1` on NOTIFY_SOCKET: median {spread(s['ready_s'], unit=' s')}"
    )
    out.append(f"- CPU until ready: median {spread(s['startup_cpu_s'], unit=' s')}")
    rss = spread(s["rss_mb"], "{:.1f}", unit=" MiB")
    out.append(f"- resident memory (VmRSS) at the end of the idle time: median {rss}")
    out.append(f"- peak resident memory (VmHWM): median {spread(s['hwm_mb'], '{:.1f}', unit=' MiB')}")
    cpu = spread(s["cpu_share"], "{:.3f}", 100, " %")
    out.append(f"- CPU (user + system) while idle: median {cpu} of the time")
    for target, (value, limit, met) in idle["verdicts"].items():
        shown = f"{value * 100:.3f} %" if target == "cpu_share" else f"{value:.1f} MiB"
        limit_shown = f"{limit * 100:g} %" if target == "cpu_share" else f"{limit:g} MiB"
        out.append(f"- target {target} <= {limit_shown}: {shown} — {verdict(met)}")
    out.append("")
    return out


def summary_table(
    fleet: dict[str, Any] | None, idle: dict[str, Any] | None, planner_ok: bool | None
) -> list[str]:
    rows = ["| benchmark | measured (median) | target | |", "|---|---|---|---|"]
    if fleet is not None:
        for name, targets in fleet["verdicts"].items():
            for target, (value, limit, met) in targets.items():
                if target == "rate_limited_share":
                    shown, limit_shown = f"{value * 100:.2f} % 429s", f"<= {limit * 100:g} %"
                elif target == "rate_limited":
                    shown, limit_shown = f"{value:.0f} 429s", f"{limit:g}"
                elif target == "ratio":
                    wall = fleet["summaries"][name]["wall_s"]["median"]
                    shown, limit_shown = f"{value:.2f} ({wall:.1f} s)", f"<= {limit:g}"
                else:
                    shown, limit_shown = f"{value:.2f}", f"<= {limit:g}"
                rows.append(f"| fleet {name}: {target} | {shown} | {limit_shown} | {verdict(met)} |")
    if idle is not None:
        for target, (value, limit, met) in idle["verdicts"].items():
            if target == "cpu_share":
                rows.append(f"| idle: CPU | {value * 100:.3f} % | <= {limit * 100:g} % | {verdict(met)} |")
            else:
                rows.append(f"| idle: RSS | {value:.1f} MiB | <= {limit:g} MiB | {verdict(met)} |")
        rows.append(f"| idle: time to READY=1 | {idle['summary']['ready_s']['median']:.2f} s | - | |")
    if planner_ok is not None:
        rows.append(f"| planner (see below) | | 0.3 s / 3 s | {verdict(planner_ok)} |")
    return rows


def chaos_section() -> list[str]:
    """The long fault campaign's figures, as recorded in CHAOS.md by the last ``make chaos`` (it runs
    about six minutes and is judged by its own exit status, so ``make bench`` does not repeat it)."""
    text = (BENCH / "CHAOS.md").read_text(encoding="utf-8")
    start = text.find("## The long run")
    end = text.find("The short version", start)
    if start < 0 or end < 0:
        return ["## Fault campaign", "", "No long run recorded in `bench/CHAOS.md`.", ""]
    body = text[start + len("## The long run") : end].strip()
    return [
        "## Fault campaign (`make chaos`, the long run recorded in `bench/CHAOS.md`)",
        "",
        body,
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="everything small and once (a try-out)")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args(argv)
    python = sys.executable
    started = datetime.now(UTC)
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        fleet_json, idle_json = Path(tmp) / "fleet.json", Path(tmp) / "idle.json"
        planner_cmd = [python, "bench/bench_planner.py"] + (["--runs", "1"] if args.quick else [])
        fleet_cmd = [python, "bench/bench_fleet.py", "--json", str(fleet_json)]
        if args.quick:
            fleet_cmd += ["--runs", "1", "--servers", "200", "--subset", "10"]
        idle_cmd = [python, "bench/bench_idle.py", "--json", str(idle_json)] + (
            ["--quick"] if args.quick else []
        )
        planner_code, planner_out, planner_s = run(planner_cmd)
        fleet_code, fleet_out, fleet_s = run(fleet_cmd)
        idle_code, idle_out, idle_s = run(idle_cmd)
        fleet = json.loads(fleet_json.read_text()) if fleet_json.exists() else None
        idle = json.loads(idle_json.read_text()) if idle_json.exists() else None
    finished = datetime.now(UTC)
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`bench/run_all.py`{' --quick' if args.quick else ''}) on "
        f"{started:%Y-%m-%d}, {started:%H:%M}-{finished:%H:%M} UTC. Medians of the runs, with (min to max).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine().items()),
        f"| load average (1/5/15 min) | {load_before} before, {load()} after |",
        "",
        "A shared machine: other work running at the same time makes every figure here worse than it "
        "would be on a quiet one.",
        "",
        "## Targets",
        "",
        *summary_table(fleet, idle, None if planner_code not in (0, 1) else planner_code == 0),
        "",
    ]
    if fleet is not None:
        lines += fleet_section(fleet, fleet_code)
    else:
        lines += [
            "## Fleet run",
            "",
            f"bench_fleet.py failed (exit {fleet_code}):",
            "",
            "```",
            fleet_out[-3000:],
            "```",
            "",
        ]
    if idle is not None:
        lines += idle_section(idle)
    else:
        lines += [
            "## Idle daemon",
            "",
            f"bench_idle.py failed (exit {idle_code}):",
            "",
            "```",
            idle_out[-3000:],
            "```",
            "",
        ]
    lines += chaos_section()
    lines += [
        "## Planner (`bench/bench_planner.py`)",
        "",
        "```",
        planner_out.rstrip(),
        "```",
        "",
        "## Raw output",
        "",
        f"`bench_fleet.py` ({fleet_s / 60:.1f} min):",
        "",
        "```",
        fleet_out.rstrip(),
        "```",
        "",
        f"`bench_idle.py` ({idle_s / 60:.1f} min):",
        "",
        "```",
        idle_out.rstrip(),
        "```",
        "",
    ]
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.output} (planner {planner_s:.0f} s, fleet {fleet_s:.0f} s, idle {idle_s:.0f} s)")
    missed = [code for code in (planner_code, fleet_code, idle_code) if code == 1]
    if missed:
        print(f"{len(missed)} benchmark(s) missed a target: see {args.output}")
    ran = fleet is not None and idle is not None and planner_code in (0, 1)
    return 0 if ran else 1


if __name__ == "__main__":
    raise SystemExit(main())
