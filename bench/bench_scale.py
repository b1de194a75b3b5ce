"""Fleet runs at scale (issue 13): 10,000 and 50,000 servers, 500 requests/s, the CPU of a server-run,
and the plan of a 100,000-server fleet, each against its target.

Run: ``python bench/bench_scale.py [--only NAME ...] [--runs N] [--dir DIR] [--from DIR]
[--section FILE] [--write bench/RESULTS.md] [--quick]``.

Each fleet scenario is ``bench/bench_fleet.py --scenarios documented`` (fleet-1k and rate-500 with
``floor`` too: a plain asyncio + httpx client's CPU beside rotator's; rotator as a process against
the sandbox on loopback, with its rate limit and latency; the honest bound counts the token bucket's
initial burst) with the scenario's fleet, rate, latency and rotator settings, its runs' JSON kept in
``--dir``; ``--from DIR`` renders runs already made there instead. The fleet plan is
``bench/bench_planner.py --sizes 1000000 --fleet 100000`` (CPU time of ``plan_server`` over one
server's 1,000,000 candidates and of ``plan_policy`` over 100,000 servers x 30 backups).

The section written (``--section``, or between ``<!-- scale -->`` markers in ``--write``) has a
targets table (median of the runs, min to max, met or missed) and each scenario's figures: requests
per server by why they were sent, rotator's CPU per server-run and per request and its peak RSS, and
the sandbox's CPU beside it. The machine is shared (2 cores, other work on it): the load average
before and after is recorded, and the figures are only as steady as it was.

Exit code: 0 when every part ran, whether or not its targets were met; 1 when one failed to run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    servers: int
    rate: float
    latency: float
    runs: int = 3
    max_concurrency: int = 8
    max_view_age: str | None = None
    timeout: float = 900.0  # seconds one run may take
    floor: bool = False  # also run the plain asyncio + httpx client (bench/floor_client.py), run by run
    # metric of bench_fleet's summary -> (target, label); a run meets it when the median is <= target
    targets: dict[str, tuple[float, str]] = field(default_factory=dict)

    def command(self, out: Path, runs: int) -> list[str]:
        command = [
            sys.executable,
            str(BENCH / "bench_fleet.py"),
            "--scenarios",
            "documented",
            *(["floor"] if self.floor else []),
            "--runs",
            str(runs),
            "--servers",
            str(self.servers),
            "--rate-limit",
            str(self.rate),
            "--latency",
            str(self.latency),
            "--max-concurrency",
            str(self.max_concurrency),
            "--json",
            str(out),
            "--timeout",
            str(self.timeout),
        ]
        return command + (["--max-view-age", self.max_view_age] if self.max_view_age else [])


SCENARIOS = (
    Scenario(
        "fleet-1k",
        "1,000 servers x 30 at 100 requests/s, 20 ms: rotator's CPU per server-run",
        1000,
        100,
        0.02,
        floor=True,
        targets={"cpu_ms_per_server": (4.0, "CPU per server-run (ms, whole process)")},
    ),
    Scenario(
        "rate-500",
        "1,000 servers x 30 at 500 requests/s, 5 ms: rate-bound",
        1000,
        500,
        0.005,
        floor=True,
        targets={"ratio_honest": (1.2, "ratio to the honest bound")},
    ),
    Scenario(
        "fleet-10k",
        "10,000 servers x 30 at 100 requests/s, 20 ms (api.max_view_age 5m)",
        10_000,
        100,
        0.02,
        max_view_age="5m",
        targets={
            "ratio_honest": (1.10, "ratio to the honest bound"),
            "rate_limited": (0, "429s"),
            "requests_per_server": (2.7, "requests per server"),
            "peak_rss_mb": (150, "peak RSS (MB)"),
        },
    ),
    Scenario(
        "fleet-50k",
        "50,000 servers x 30 at 500 requests/s, 5 ms (api.max_concurrency 16, api.max_view_age 10m)",
        50_000,
        500,
        0.005,
        runs=1,
        max_concurrency=16,
        max_view_age="10m",
        timeout=3600.0,
        targets={"peak_rss_mb": (400, "peak RSS (MB)")},
    ),
)
PLAN_TARGETS = {
    "plan_1m": (2.0, "1,000,000 candidates of one server (s CPU)"),
    "plan_fleet": (5.0, "100,000 servers x 30 (s CPU)"),
}
_PLAN_LINES = {
    "plan_1m": re.compile(r"1,000,000 candidates: median ([\d.]+) s CPU \(min ([\d.]+), max ([\d.]+)"),
    "plan_fleet": re.compile(
        r"fleet plan: 100,000 servers .*?median CPU ([\d.]+) s \(min ([\d.]+), max ([\d.]+)"
    ),
}


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def run(command: list[str]) -> tuple[int, str]:
    """Run a benchmark as ``make bench`` runs each, echoing its output; its exit code and output."""
    sys.path.insert(0, str(BENCH))
    from run_all import run as run_timed  # noqa: PLC0415 -- the same runner as the rest of the report

    code, output, _ = run_timed(command)
    return code, output


def spread(values: dict[str, float], fmt: str) -> str:
    median, low, high = values["median"], values["min"], values["max"]
    if low == high:
        return fmt.format(median)
    return f"{fmt.format(median)} ({fmt.format(low)}-{fmt.format(high)})"


def fmt_of(metric: str) -> str:
    return "{:.0f}" if metric in ("rate_limited", "peak_rss_mb") else "{:.2f}"


def fleet_rows(scenario: Scenario, document: dict[str, Any]) -> list[str]:
    summary = document["summaries"]["documented"]
    rows = []
    for metric, (target, label) in scenario.targets.items():
        values = summary.get(metric)
        if values is None:
            rows.append(f"| {scenario.name}: {label} | not measured | <= {target:g} | **missed** |")
            continue
        met = values["median"] <= target
        rows.append(
            f"| {scenario.name}: {label} | {spread(values, fmt_of(metric))} of {summary['runs']} | "
            f"<= {target:g} | {'met' if met else '**missed**'} |"
        )
    return rows


def fleet_details(scenario: Scenario, document: dict[str, Any]) -> list[str]:
    summary = document["summaries"]["documented"]
    per = summary["per_server"]
    parts = ", ".join(
        f"{name} {per[name]['median']:.2f}"
        for name in ("POST", "DELETE", "GET initial", "GET confirm", "GET poll", "GET reread")
        if name in per
    )

    def med(metric: str, fmt: str = "{:.2f}") -> str:
        return spread(summary[metric], fmt) if metric in summary else "-"

    return [
        f"### {scenario.name}: {scenario.title}",
        "",
        f"- {summary['runs']} run(s); wall {med('wall_s', '{:.1f}')} s against the honest bound "
        f"{summary['honest_bound_s']:.1f} s (({summary['minimum']['total']} - {summary['burst']}) / "
        f"{summary['rate_limit']:g}): ratio {med('ratio_honest')}; 429s {med('rate_limited', '{:.0f}')}.",
        f"- requests per server {med('requests_per_server')}: {parts}; without the safety reads "
        f"(the confirming read, fresh-view re-reads) {per['without_safety']['median']:.2f}.",
        f"- rotator: CPU {med('cpu_s', '{:.1f}')} s ({med('cpu_ms_per_server')} ms a server-run; "
        f"{med('cpu_ms_per_request')} ms a request after its imports), "
        f"peak RSS {med('peak_rss_mb', '{:.0f}')} MB; the sandbox (its thread of the bench process, "
        f"with the access log): CPU {med('sandbox_cpu_s', '{:.1f}')} s.",
        *floor_line(document),
        "",
    ]


def floor_line(document: dict[str, Any]) -> list[str]:
    """The plain asyncio + httpx client beside rotator: its CPU, and rotator's over it run by run."""
    floor, runs = document["summaries"].get("floor"), document.get("runs", {})
    pairs = zip(runs.get("documented", []), runs.get("floor", []), strict=False)
    ratios = [
        ours["cpu_ms_per_request"] / theirs["cpu_ms_per_request"]
        for ours, theirs in pairs
        if ours.get("cpu_ms_per_request") and theirs.get("cpu_ms_per_request")
    ]
    if floor is None or not ratios or "cpu_ms_per_server" not in floor:
        return []
    ratio = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return [
        f"- the plain asyncio + httpx client (`bench/floor_client.py`: the same three listings, creates "
        f"and deletes, {floor['requests_per_server']['median']:.2f} requests a server, at the same rate "
        f"and concurrency, run after each of rotator's runs): CPU "
        f"{spread(floor['cpu_ms_per_server'], '{:.2f}')} ms a server-run, "
        f"{spread(floor['cpu_ms_per_request'], '{:.2f}')} ms a request after its imports; rotator's CPU "
        f"a request over the client's, run by run: {spread(ratio, '{:.2f}')}."
    ]


def plan_figures(output: str) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for name, pattern in _PLAN_LINES.items():
        match = pattern.search(output)
        if match:
            median, low, high = (float(g) for g in match.groups())
            found[name] = {"median": median, "min": low, "max": high}
    return found


def plan_rows(figures: dict[str, dict[str, float]]) -> list[str]:
    rows = []
    for name, (target, label) in PLAN_TARGETS.items():
        values = figures.get(name)
        if values is None:
            rows.append(f"| plan: {label} | not measured | <= {target:g} | **missed** |")
            continue
        met = values["median"] <= target
        verdict = "met" if met else "**missed**"
        rows.append(f"| plan: {label} | {spread(values, '{:.2f}')} | <= {target:g} | {verdict} |")
    return rows


def calibrate(runs: int = 3) -> float:
    """CPU seconds of a fixed pure-Python loop (10,000,000 additions), the median of ``runs``: how fast
    this machine runs Python, so that reports from different machines can be compared."""
    times = []
    for _ in range(runs):
        started, total = time.process_time(), 0
        for number in range(10_000_000):
            total += number
        times.append(time.process_time() - started)
    return statistics.median(times)


def machine_line() -> str:
    sys.path.insert(0, str(BENCH))
    from run_all import machine  # noqa: PLC0415 -- the same description as the rest of the report

    facts = machine()
    return f"{facts['CPU']}, {facts['cores']}, {facts['RAM']}, {facts['Python']}, {facts['OS']}"


def section(
    documents: dict[str, dict[str, Any]],
    plan_out: str | None,
    began: datetime,
    loads: tuple[str, str],
    calibration: float | None = None,
) -> list[str]:
    finished = datetime.now(UTC)
    whens = [document["when"] for document in documents.values() if "when" in document]
    if whens:  # the runs' own times and loads (rendered later with --from, or run now)
        first = min(whens, key=lambda when: when["started"])
        last = max(whens, key=lambda when: when["finished"])
        began = min(began, datetime.fromisoformat(first["started"]))
        finished = datetime.fromisoformat(last["finished"])
        loads = (first["load_before"], last["load_after"])
    lines = [
        BEGIN,
        "## Fleet at scale (`bench/bench_scale.py`)",
        "",
        f"Measured {began:%Y-%m-%d} {began:%H:%M}-{finished:%H:%M} UTC on {machine_line()}; load average "
        f"(1/5/15 min) {loads[0]} before, {loads[1]} after. The machine's 2 cores are shared with other "
        "work: every figure here is noisy, the CPU and wall figures the most (peak RSS and request "
        "counts hardly move). Medians of the runs (min-max); ratios are measured in the same run."
        + (
            f" Calibration: a loop of 10,000,000 Python additions took {calibration:.2f} s of CPU here "
            "(`calibrate()`; the slower the machine, the higher), to compare with other machines' reports."
            if calibration is not None
            else ""
        ),
        "",
        "| target | measured | target | |",
        "|---|---|---|---|",
    ]
    for scenario in SCENARIOS:
        document = documents.get(scenario.name)
        if document is not None:
            lines += fleet_rows(scenario, document)
    figures = plan_figures(plan_out) if plan_out is not None else {}
    if plan_out is not None:
        lines += plan_rows(figures)
    lines.append("")
    for scenario in SCENARIOS:
        document = documents.get(scenario.name)
        if document is not None:
            lines += fleet_details(scenario, document)
    if plan_out is not None:
        lines += ["### fleet plan (`bench/bench_planner.py --sizes 1000000 --fleet 100000`)", "", "```"]
        lines += [line for line in plan_out.strip().splitlines() if not line.startswith("$")]
        lines += ["```", ""]
    lines += ["Profiles (py-spy) before and after: [bench/PROFILE.md](PROFILE.md).", "", END]
    return lines


def write_into(path: Path, lines: list[str]) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [s.name for s in SCENARIOS] + ["plan"]
    parser.add_argument("--only", nargs="+", choices=names, default=names, help="which parts")
    parser.add_argument("--runs", type=int, help="runs of each fleet scenario (default: its own)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-scale"), help="where the runs' JSON go")
    parser.add_argument("--from", dest="source", type=Path, help="render the runs already in this folder")
    parser.add_argument("--plan-log", type=Path, help="with --from: bench_planner.py's output to render")
    parser.add_argument("--section", type=Path, help="write the section to this file")
    parser.add_argument("--write", type=Path, help="put the section into this report (between markers)")
    parser.add_argument("--quick", action="store_true", help="a tenth of each fleet, once (a try-out)")
    args = parser.parse_args(argv)
    began, load_before = datetime.now(UTC), load()
    calibration_file = (args.source or args.dir) / "calibration.json"
    if args.source is None:
        calibration: float | None = calibrate()
        args.dir.mkdir(parents=True, exist_ok=True)
        calibration_file.write_text(json.dumps({"loop_s": calibration}), encoding="utf-8")
    else:
        known = calibration_file.exists()
        calibration = json.loads(calibration_file.read_text(encoding="utf-8"))["loop_s"] if known else None
    documents: dict[str, dict[str, Any]] = {}
    plan_out: str | None = None
    failed = False
    folder = args.source or args.dir
    folder.mkdir(parents=True, exist_ok=True)
    for scenario in SCENARIOS:
        if scenario.name not in args.only:
            continue
        out = folder / f"{scenario.name}.json"
        if args.source is None:
            chosen = scenario
            if args.quick:
                chosen = Scenario(**{**scenario.__dict__, "servers": max(50, scenario.servers // 10)})
            code, _ = run(chosen.command(out, 1 if args.quick else args.runs or scenario.runs))
            failed |= code not in (0, 1)
        if out.exists():
            documents[scenario.name] = json.loads(out.read_text(encoding="utf-8"))
        else:
            failed = True
    if "plan" in args.only:
        if args.source is not None:
            plan_out = args.plan_log.read_text(encoding="utf-8") if args.plan_log else None
        else:
            command = [sys.executable, str(BENCH / "bench_planner.py"), "--sizes", "1000000"]
            command += ["--fleet", "10000" if args.quick else "100000", "--runs", "1" if args.quick else "3"]
            code, plan_out = run(command)
            failed |= code not in (0, 1)
            (folder / "plan.log").write_text(plan_out, encoding="utf-8")
    lines = section(documents, plan_out, began, (load_before, load()), calibration)
    print("\n".join(lines))
    if args.section is not None:
        args.section.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.write is not None:
        write_into(args.write, lines)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
