"""Every benchmark, one after the other, then ``bench/RESULTS.md`` from what they measured.

Run: ``python bench/run_all.py [--quick] [--output bench/RESULTS.md]`` (``make bench``).

The benchmarks run as separate processes (planner, fleet, idle, and the fleet at
scale: ``bench/bench_scale.py``, 10,000 and 50,000 servers, 500 requests/s, the fleet
plan; it takes most of the hour), each printing
what it measures as it goes; the fleet and idle benchmarks also hand their runs
over as JSON. The report records the date, the machine and its load (the
machine may be shared: a loaded machine makes every figure worse), each
benchmark's medians with min and max, and each target met or missed.
``--quick`` runs everything small and once, to try the machinery.

``--only fleet`` runs the fleet benchmark alone (``--fleet-scenarios``, and
``--naive-runs 0`` to leave out the cron script, which takes about ten minutes)
and rewrites only what it measured: the other sections, their targets and their
raw output are kept from the report already at ``--output``, and the table under
"When" says when each part was measured. ``--fleet-json`` and ``--fleet-log``
render a fleet run already made (``bench_fleet.py --json``, and its output)
instead of running one.

Exit code: 0 when every benchmark ran to its end and the report was written,
whether or not its targets were met (the report says which); 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
PURPOSE_WORDS = {
    "initial": "the views at the start",
    "confirm": "the confirming second read before creates",
    "poll": "the poll rounds",
    "reread": "fresh-view re-reads (a view older than max_view_age before a prune, or before a retry)",
}


def bound_paragraph(setup: dict[str, Any], summary: dict[str, Any]) -> str:
    m, burst, rate = summary["minimum"], summary["burst"], summary["rate_limit"]
    servers = summary["servers"]
    return (
        "**Lower bounds.** The minimum number of requests is one create and one delete per server plus two "
        "complete listings, each at the cheaper of the two ways to list (the account's manual backups, or "
        "every server's own): one before the creates (a slot's backup that already exists is adopted, never "
        "duplicated) and one after the last backup completed, which also serves every prune plan. For "
        f"{servers:,} servers: {m['creates']:,} + {m['deletes']:,} + {m['listing_before']} + "
        f"{m['listing_after']} = {m['total']:,} requests. The sandbox's token bucket starts full: its first "
        f"{burst} requests go through at once, and only the rest wait for the rate, so the **honest bound** "
        f"is ({m['total']:,} - {burst}) / {rate:g} = {summary['honest_bound_s']:.2f} s; the old bound, "
        f"{m['total']:,} / {rate:g} = {summary['lower_bound_s']:.2f} s, ignored the burst and flattered "
        "every ratio (the targets are judged on the honest one; both ratios are given). Neither counts "
        "rotator's own safety reads (below), the time the last backup takes to complete "
        f"({setup['create_seconds']:g} s) or the process start, which no run avoids; on the 100-server "
        "subset those dominate."
    )


def breakdown_lines(name: str, summary: dict[str, Any], middle: dict[str, Any]) -> list[str]:
    """Requests per server by method, the GETs by why rotator sent them, and the run without its
    safety reads (rotator's scenarios only: the purposes are counted inside its process)."""
    per = summary["per_server"]
    if name == "naive" or "GET initial" not in per:
        return []

    def med(key: str) -> str:
        return spread(per[key], "{:.3f}")

    rate = summary["rate_limit"]
    safety = summary["safety_requests"]["median"]
    return [
        f"- requests per server, medians: POST {med('POST')}, DELETE {med('DELETE')}, GET pages "
        f"{med('GET')}; total {med('total')}",
        "- the GETs per server by why rotator sent them: "
        + "; ".join(
            f"{PURPOSE_WORDS[p]} {med('GET ' + p)}" for p in ("initial", "confirm", "poll", "reread")
        ),
        f"- **rotator's safety reads** (the confirming re-read and the fresh-view re-reads): "
        f"{med('safety')} per server, {safety:.0f} requests, {safety / rate:.1f} s at the sandbox's rate; "
        f"the same run without them: {med('without_safety')} requests per server "
        f"({summary['requests_without_safety']['median']:.0f}; a subtraction, not a measured run)",
        f"- the median run's own counters: `inventory.reads` {middle['inventory_reads']} (listings read: "
        f"account, per server, and confirmation rounds), `views_read` {middle['views_read']} (prunes whose "
        f"view had to be read again); reads that failed, by purpose: {middle.get('failed_reads') or 'none'} "
        "(a poll round whose account listing changed while it was read, the creates going on, fails; "
        "its pages are spent and the next round reads again)",
    ]


def fleet_section(
    fleet: dict[str, Any], code: int, kept_naive: tuple[list[str], float, str] | None = None
) -> list[str]:
    """The fleet section; ``kept_naive``: the cron script's subsection from an earlier report, its
    median wall time and when it was measured (``--only fleet`` without the cron script)."""
    setup = fleet["setup"]
    out = ["## Fleet run (`bench/bench_fleet.py`)", ""]
    out.append(
        f"The sandbox on 127.0.0.1 (uvicorn in a thread of the benchmark's process): a uniform fleet of "
        f"{setup['servers']:,} servers, each with {setup['backups_per_server']} completed backups owned by "
        f"the policy, {setup['page_size']} backups a page, {setup['latency'] * 1000:.0f} ms added to every "
        f"request, a token bucket of {setup['rate_limit']:g} requests/s holding {setup['bucket']} "
        f"(the sandbox's default burst: one second's worth; it starts full; 429 with Retry-After beyond it, "
        f"RateLimit-Limit/-Remaining/-Reset on every answer), creates completing after "
        f"{setup['create_seconds']:g} s. A fresh sandbox for every run. rotator is a real process running "
        f"`rotator.cli.main` (`run-once --config ...`) for one policy with `keep_last: {setup['keep_last']}` "
        f"(one create, one wait and one delete per server), started as `python -c COUNTING_CHILD` instead of "
        f"`python -m rotator` so that it can say why it sent each GET (bench_fleet.py's docstring); its wall "
        f"time is from just before the process starts to its exit."
    )
    out.append("")
    out.append("rotator's configuration, as a user would write it for a documented limit of 100 requests/s:")
    out.append("")
    for name, choice in fleet["choices"].items():
        out.append(
            f"- {name}: `api: {{requests_per_second: {choice['requests_per_second']:g}, burst: "
            f"{choice['burst']}, max_concurrency: {choice['max_concurrency']}}}`, `daemon: {{poll_interval: "
            f"{choice['poll_interval']}, poll_max_interval: {choice['poll_max_interval']}}}`, "
            f"log level {choice['log_level']}; `max_view_age` and `create_quiet_period` at their defaults"
        )
    out.append("")
    summaries = fleet["summaries"]
    full = next((summaries[n] for n in ("documented", "unknown") if n in summaries), None)
    if full is not None:
        out.append(bound_paragraph(setup, full))
        out.append("")
    for name, summary in summaries.items():
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
        m = summary["minimum"]
        out.append(
            f"- minimum requests {m['total']:,} ({m}); honest bound ({m['total']:,} - {summary['burst']}) / "
            f"{summary['rate_limit']:g} = {summary['honest_bound_s']:.2f} s: **ratio** wall / honest bound: "
            f"median {spread(summary['ratio_honest'])}; against the old bound "
            f"{summary['lower_bound_s']:.2f} s (no burst): {spread(summary['ratio'])}"
        )
        out.append(
            f"- requests: median {spread(summary['total_requests'], '{:.0f}')}, per server "
            f"{spread(summary['requests_per_server'])}; 429s received: "
            f"{spread(summary['rate_limited'], '{:.0f}')}, "
            f"{spread(summary['rate_limited_share'], '{:.2f}', 100, ' %')} of the requests"
        )
        out += breakdown_lines(name, summary, middle)
        for target, (value, limit, met) in fleet["verdicts"].get(name, {}).items():
            out.append(f"- target {target} <= {limit:g}: median {value:.3g} — {verdict(met)}")
        out.append(f"- the median run by route and status: `{json.dumps(middle['requests'])}`")
        out.append(
            f"- its listing pages: {middle['listing_pages']} in listings {middle['listings']} (a listing: a "
            f"first page); when each kind of request was sent (seconds from the process start): "
            f"{phase_line(middle)}"
        )
        out.append("")
    naive_when = ""
    if "naive" in summaries:
        naive = summaries["naive"]["wall_s"]["median"]
        servers = summaries["naive"]["servers"]
    elif kept_naive is not None and "subset" in summaries:
        lines, naive, naive_when = kept_naive
        servers = summaries["subset"]["servers"]
        out += lines
    else:
        naive = None
    if naive is not None and "subset" in summaries:
        rot = summaries["subset"]["wall_s"]["median"]
        per_server = naive / servers
        full_wall = summaries.get("documented", {}).get("wall_s", {}).get("median", float("nan"))
        when = (
            f"The cron script measured {naive_when} (kept, not re-run), rotator in this invocation"
            if naive_when
            else "Measured in this invocation"
        )
        out.append("### The cron script beside rotator")
        out.append("")
        out.append(
            f"{when}, on servers 1-{servers} of the same {setup['servers']:,}-server "
            f"sandbox: the cron script took **{naive:.1f} s**, rotator **{rot:.1f} s** "
            f"({naive / rot:.0f}x faster). rotator's full {setup['servers']:,}-server run (measured, "
            f"above): {full_wall:.1f} s. "
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
                elif target in ("ratio", "ratio_honest"):
                    summary = fleet["summaries"][name]
                    wall, bound = summary["wall_s"]["median"], summary["honest_bound_s"]
                    old_ratio = summary["ratio"]["median"]
                    shown = f"{value:.2f} ({wall:.1f} s / {bound:.1f} s; old bound: {old_ratio:.2f})"
                    limit_shown = f"<= {limit:g}"
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


# -- an earlier report, for --only fleet --------------------------------------------------------

PARTS = {
    "fleet": "fleet run, rotator (`bench_fleet.py`: documented, unknown, subset)",
    "naive": "fleet run, the cron script (`bench_fleet.py`: naive)",
    "idle": "idle daemon (`bench_idle.py`)",
    "planner": "planner (`bench_planner.py`)",
}


def split_sections(text: str, marker: str = "## ") -> dict[str, list[str]]:
    """The text's sections by their heading line (without the marker), each as its lines after it."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(marker):
            current = sections.setdefault(line[len(marker) :].strip(), [])
        elif current is not None:
            current.append(line)
    return sections


def section(sections: dict[str, list[str]], prefix: str) -> list[str] | None:
    return next((body for title, body in sections.items() if title.startswith(prefix)), None)


def previous_when(text: str, sections: dict[str, list[str]]) -> dict[str, str]:
    """When each part of an earlier report was measured: its "When" table, or (a report of a whole
    ``make bench``) the date and times of its first line, with its load."""
    table = section(sections, "When")
    if table is not None:
        rows = [line.strip("|").split("|") for line in table if line.startswith("| ") and "---" not in line]
        by_title = {cells[0].strip(): cells[1].strip() for cells in rows if len(cells) >= 2}
        return {part: by_title[title] for part, title in PARTS.items() if title in by_title}
    stamp = re.search(r"on (\d{4}-\d\d-\d\d), (\d\d:\d\d)-(\d\d:\d\d) UTC", text)
    if stamp is None:
        return {}
    load_row = re.search(r"\| load average \(1/5/15 min\) \| ([^|]+) \|", text)
    cpu_row = re.search(r"\| CPU \| ([^|]+) \|", text)
    when = f"{stamp[1]} {stamp[2]}-{stamp[3]} UTC, `make bench`"
    if cpu_row is not None:
        when += f" on {cpu_row[1].strip()}"
    if load_row is not None:
        when += f"; load {load_row[1].strip()}"
    return dict.fromkeys(PARTS, when)


def scenario_figures(body: list[str]) -> dict[str, float]:
    """A fleet scenario's medians as a report (this one or an older one) wrote them."""
    text = "\n".join(body)
    patterns = {
        "wall_s": r"wall time: median ([\d.]+) s",
        "ratio": r"(?:\*\*ratio\*\* wall / bound|against the old bound [\d.]+ s \(no burst\)): "
        r"(?:median )?([\d.]+)",
        "requests_per_server": r"per server ([\d.]+)",
        "rate_limited": r"429s received: ([\d.]+)",
        "minimum": r"minimum requests ([\d,]+)",
    }
    found = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, text)
        if match is not None:
            found[name] = float(match[1].replace(",", ""))
    return found


def before_after(old_fleet: list[str], old_when: str, fleet: dict[str, Any]) -> list[str]:
    """The rotator scenarios beside the same scenarios of the earlier report."""
    old = split_sections("\n".join(old_fleet), "### ")
    rows = []
    for name, summary in fleet["summaries"].items():
        if name == "naive":
            continue
        body = section(old, f"{name}:")
        figures = scenario_figures(body) if body is not None else {}
        if "wall_s" not in figures or figures.get("minimum") != summary["minimum"]["total"]:
            continue
        honest = summary["honest_bound_s"]
        rows.append(
            f"| {name} | {figures['wall_s']:.2f} s -> {summary['wall_s']['median']:.2f} s | "
            f"{figures.get('ratio', float('nan')):.2f} -> {summary['ratio']['median']:.2f} | "
            f"{figures['wall_s'] / honest:.2f} -> {summary['ratio_honest']['median']:.2f} | "
            f"{figures.get('requests_per_server', float('nan')):.2f} -> "
            f"{summary['requests_per_server']['median']:.2f} "
            f"(safety reads {summary['per_server']['safety']['median']:.2f}) | "
            f"{figures.get('rate_limited', float('nan')):.0f} -> {summary['rate_limited']['median']:.0f} |"
        )
    if not rows:
        return []
    return [
        "### Before and after",
        "",
        f"The same scenarios in the earlier report (measured {old_when}) -> this one. The earlier wall times "
        "are also set against the honest bound here (the same setup, so the same bound).",
        "",
        "| scenario | wall (median) | ratio, old bound | ratio, honest bound | requests per server | 429s |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def raw_blocks(body: list[str]) -> dict[str, list[str]]:
    """The raw output section's blocks by benchmark (``bench_idle.py`` ...), each with its title line."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body:
        found = re.match(r"`(bench_\w+\.py)`", line)
        if found:
            current = blocks.setdefault(found[1], [])
        if current is not None:
            current.append(line)
    return blocks


def kept_naive_section(fleet_body: list[str], when: str) -> tuple[list[str], float, str] | None:
    """The cron script's subsection of an earlier fleet section, marked as kept, and its median."""
    subsections = split_sections("\n".join(fleet_body), "### ")
    body = section(subsections, "naive")
    if body is None:
        return None
    median = re.search(r"wall time: median ([\d.]+) s", "\n".join(body))
    if median is None:
        return None
    title = next(t for t in subsections if t.startswith("naive"))
    body = [line for line in body if not line.startswith("Kept from the earlier report")]
    while body and not body[0].strip():
        body = body[1:]
    while body and not body[-1].strip():
        body = body[:-1]
    lines = [
        f"### {title}",
        "",
        f"Kept from the earlier report (measured {when}): the cron script was not run again here.",
        "",
        *body,
        "",
    ]
    return lines, float(median[1]), when


# -- the report ----------------------------------------------------------------------------------


def when_table(when: dict[str, str]) -> list[str]:
    rows = ["## When", "", "| part | measured |", "|---|---|"]
    rows += [f"| {PARTS[part]} | {when[part]} |" for part in PARTS if part in when]
    return [*rows, ""]


def machine_lines(load_line: str) -> list[str]:
    return [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine().items()),
        load_line,
        "",
        "A shared machine: other work running at the same time makes every figure here worse than it "
        "would be on a quiet one.",
        "",
    ]


def raw_section(blocks: list[list[str]]) -> list[str]:
    out = ["## Raw output", ""]
    for block in blocks:
        out += block
    return out


def raw_block(name: str, seconds: float, output: str, note: str = "") -> list[str]:
    return [f"`{name}` ({seconds / 60:.1f} min{note}):", "", "```", output.rstrip(), "```", ""]


def failed_section(title: str, name: str, code: int, output: str) -> list[str]:
    return [f"## {title}", "", f"{name} failed (exit {code}):", "", "```", output[-3000:], "```", ""]


def fleet_only(args: argparse.Namespace) -> int:
    """``--only fleet``: the fleet run alone, everything else kept from the report at ``--output``."""
    old_text = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    old = split_sections(old_text)
    when = previous_when(old_text, old)
    if args.fleet_json is not None:
        fleet = json.loads(args.fleet_json.read_text(encoding="utf-8"))
        fleet_out = args.fleet_log.read_text(encoding="utf-8") if args.fleet_log else "(no output kept)"
        fleet_code = int(fleet.get("exit_code", 0))
        started = datetime.fromisoformat(fleet["when"]["started"])
        finished = datetime.fromisoformat(fleet["when"]["finished"])
        load_before, load_after = fleet["when"]["load_before"], fleet["when"]["load_after"]
        fleet_s = (finished - started).total_seconds()
    else:
        started, load_before = datetime.now(UTC), load()
        with tempfile.TemporaryDirectory(prefix="bench-fleet-only-") as tmp:
            fleet_json = Path(tmp) / "fleet.json"
            command = [sys.executable, "bench/bench_fleet.py", "--json", str(fleet_json)]
            command += ["--scenarios", *args.fleet_scenarios]
            if args.naive_runs is not None:
                command += ["--naive-runs", str(args.naive_runs)]
            fleet_code, fleet_out, fleet_s = run(command)
            fleet = json.loads(fleet_json.read_text()) if fleet_json.exists() else None
        finished, load_after = datetime.now(UTC), load()
    old_fleet_when = when.get("fleet")
    stamp = f"{started:%Y-%m-%d} {started:%H:%M}-{finished:%H:%M} UTC, `run_all.py --only fleet`"
    when["fleet"] = f"{stamp}; load {load_before} before, {load_after} after"
    if fleet is not None and "naive" in fleet["summaries"]:
        when["naive"] = when["fleet"]
    fleet_body = section(old, "Fleet run") or []
    kept = None
    if fleet is not None and "naive" not in fleet["summaries"] and "naive" in when:
        kept = kept_naive_section(fleet_body, when["naive"])
    if kept is None and (fleet is None or "naive" not in fleet["summaries"]):
        when.pop("naive", None)
    old_targets = [
        line
        for line in section(old, "Targets") or []
        if line.startswith(("| idle", "| planner", "| fleet naive"))
    ]
    targets = summary_table(fleet, None, None) + old_targets
    lines = [
        "# Benchmark results",
        "",
        f"The fleet run re-measured by `bench/run_all.py --only fleet` on {started:%Y-%m-%d}; the other "
        "parts are kept from the earlier report (see When). Medians of the runs, with (min to max).",
        "",
        *when_table(when),
        *machine_lines(
            f"| load average (1/5/15 min), the fleet run | {load_before} before, {load_after} after |"
        ),
        "## Targets",
        "",
        *targets,
        "",
    ]
    if fleet is not None:
        lines += fleet_section(fleet, fleet_code, kept)
        if args.before_after and old_fleet_when:
            lines += before_after(fleet_body, old_fleet_when, fleet)
    else:
        lines += failed_section("Fleet run", "bench_fleet.py", fleet_code, fleet_out)
    for title in ("Idle daemon",):
        body = section(old, title)
        if body is not None:
            heading = next(t for t in old if t.startswith(title))
            lines += [f"## {heading}", *body]
    lines += chaos_section()
    planner = section(old, "Planner")
    if planner is not None:
        lines += ["## " + next(t for t in old if t.startswith("Planner")), *planner]
    old_raw = raw_blocks(section(old, "Raw output") or [])
    blocks = [raw_block("bench_fleet.py", fleet_s, fleet_out)]
    if kept is not None:
        blocks.append(
            [f"The cron script's raw output is in the report of {kept[2]} (this file's git history).", ""]
        )
    blocks += [old_raw[name] for name in ("bench_idle.py",) if name in old_raw]
    lines += raw_section(blocks)
    while lines and not lines[-1].strip():
        lines.pop()
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.output} (fleet {fleet_s:.0f} s; other parts kept)")
    return 0 if fleet is not None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="everything small and once (a try-out)")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--only", choices=["fleet"], help="run this benchmark alone; keep the rest")
    parser.add_argument(
        "--fleet-scenarios",
        nargs="+",
        default=["documented", "unknown", "subset"],
        help="with --only fleet: bench_fleet.py's --scenarios",
    )
    parser.add_argument("--naive-runs", type=int, help="with --only fleet: runs of the cron script")
    parser.add_argument(
        "--fleet-json", type=Path, help="with --only fleet: render this bench_fleet.py --json"
    )
    parser.add_argument("--fleet-log", type=Path, help="with --fleet-json: that run's output")
    parser.add_argument(
        "--no-before-after",
        dest="before_after",
        action="store_false",
        help="with --only fleet: no table of the earlier report's fleet figures beside the new ones",
    )
    args = parser.parse_args(argv)
    if args.only == "fleet":
        return fleet_only(args)
    if args.fleet_json is not None:
        parser.error("--fleet-json goes with --only fleet")
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
        scale_md = Path(tmp) / "scale.md"
        scale_cmd = [python, "bench/bench_scale.py", "--dir", str(Path(tmp) / "scale")]
        scale_cmd += ["--section", str(scale_md)] + (["--quick"] if args.quick else [])
        planner_code, planner_out, planner_s = run(planner_cmd)
        fleet_code, fleet_out, fleet_s = run(fleet_cmd)
        idle_code, idle_out, idle_s = run(idle_cmd)
        scale_code, scale_out, scale_s = run(scale_cmd)
        scale = scale_md.read_text(encoding="utf-8").splitlines() if scale_md.exists() else None
        fleet = json.loads(fleet_json.read_text()) if fleet_json.exists() else None
        idle = json.loads(idle_json.read_text()) if idle_json.exists() else None
    finished = datetime.now(UTC)
    load_after = load()
    stamp = f"{started:%Y-%m-%d} {started:%H:%M}-{finished:%H:%M} UTC, `make bench`"
    when = dict.fromkeys(
        PARTS, f"{stamp}{' --quick' if args.quick else ''}; load {load_before} before, {load_after} after"
    )
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`bench/run_all.py`{' --quick' if args.quick else ''}) on "
        f"{started:%Y-%m-%d}, {started:%H:%M}-{finished:%H:%M} UTC. Medians of the runs, with (min to max).",
        "",
        *when_table(when),
        *machine_lines(f"| load average (1/5/15 min) | {load_before} before, {load_after} after |"),
        "## Targets",
        "",
        *summary_table(fleet, idle, None if planner_code not in (0, 1) else planner_code == 0),
        "",
    ]
    if fleet is not None:
        lines += fleet_section(fleet, fleet_code)
    else:
        lines += failed_section("Fleet run", "bench_fleet.py", fleet_code, fleet_out)
    if idle is not None:
        lines += idle_section(idle)
    else:
        lines += failed_section("Idle daemon", "bench_idle.py", idle_code, idle_out)
    if scale is not None:
        lines += [*scale, ""]
    else:
        lines += failed_section("Fleet at scale", "bench_scale.py", scale_code, scale_out)
    lines += chaos_section()
    lines += [
        "## Planner (`bench/bench_planner.py`)",
        "",
        "```",
        planner_out.rstrip(),
        "```",
        "",
    ]
    lines += raw_section(
        [raw_block("bench_fleet.py", fleet_s, fleet_out), raw_block("bench_idle.py", idle_s, idle_out)]
    )
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(
        f"wrote {args.output} (planner {planner_s:.0f} s, fleet {fleet_s:.0f} s, idle {idle_s:.0f} s, "
        f"scale {scale_s:.0f} s)"
    )
    missed = [code for code in (planner_code, fleet_code, idle_code) if code == 1]
    if missed:
        print(f"{len(missed)} benchmark(s) missed a target: see {args.output}")
    ran = fleet is not None and idle is not None and scale is not None and planner_code in (0, 1)
    return 0 if ran else 1


if __name__ == "__main__":
    raise SystemExit(main())
