"""/metrics for a fleet of 100,000 servers: bytes, render time, and how long the event loop stalls.

Run: ``python bench/bench_metrics.py [--servers 100000] [--runs 5] [--output bench/METRICS.md]``.

One policy of ``--servers`` servers, each with a successful run recorded (its
last success set) and API traffic on a few routes, rendered in three set-ups,
each in a process of its own (prometheus_client's ``_created`` switch is
global to a process):

* ``before``: rotator's metrics module as it was before the fleet gauges (from
  git, ``--before-ref``, default ``main`` at the commit before them), with one
  ``rotator_last_success_timestamp_seconds`` series per server and the
  ``_created`` gauges;
* ``per_server``: today's module with ``metrics.per_server: true``;
* ``default``: today's module as configured by default: the per-policy gauges only.

For each: the text's size, its gzip size, the render time (median of
``--runs``, with min and max), and for today's module the longest stall of
the event loop while ``/metrics`` is scraped from the real listener on
loopback (a task that sleeps 1 ms in a loop measures the gaps), which shows
the render running beside the loop rather than on it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run_all import machine
from rotator.runner import Outcome, RunReport, ServerResult

ROOT = Path(__file__).resolve().parent.parent
SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
BEFORE_REF = "40e71f1"  # main just before the fleet gauges: the module the issue measured
SETUPS = ("before", "per_server", "default")


def old_module(ref: str) -> ModuleType:
    """``rotator/metrics.py`` as it was at ``ref``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{ref}:rotator/metrics.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "rotator_metrics_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("rotator_metrics_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(setup: str, servers: int, ref: str) -> Any:
    """The metrics of ``setup`` after one successful run of every server and some API traffic."""
    if setup == "before":
        metrics = old_module(ref).Metrics(wall_clock=lambda: 1_736_996_400.0)
    else:
        from rotator.metrics import Metrics, PolicyWatch  # noqa: PLC0415

        watch = PolicyWatch("fleet", tuple(range(1, servers + 1)), max_age=30 * 3600.0)
        metrics = Metrics(
            wall_clock=lambda: 1_736_996_400.0, per_server=setup == "per_server", policies=[watch]
        )
    results = [ServerResult(sid, outcome=Outcome.OK, created=1) for sid in range(1, servers + 1)]
    metrics.observe_run(RunReport("fleet", SLOT, False, results, duration=1800.0))
    for method, route, status in (
        ("GET", "/api/v1/backups/", "200"),
        ("POST", "/api/v1/backups/", "201"),
        ("DELETE", "/api/v1/backups/{id}/", "204"),
        ("GET", "/api/v1/backups/", "429"),
    ):
        for _ in range(10):
            metrics.observe_request(method, route, status, 0.2)
    metrics.set_authenticated(True)
    return metrics


async def loop_stall(metrics: Any, scrapes: int = 3) -> dict[str, float]:
    """The longest gap of a 1 ms ticker on the listener's loop while /metrics is fetched, gzip, by
    curl (another process, so that only the server's work is on this loop); the median over
    ``scrapes``, and the same ticker's longest gap over as long a time with no scrape (the machine's
    own noise)."""
    from rotator.health import HealthServer, HealthState  # noqa: PLC0415

    gaps: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def longest_gap(during: Any) -> tuple[float, float]:
        gaps.clear()
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        started = time.perf_counter()
        await during()
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return max(gaps), elapsed

    async with HealthServer("127.0.0.1:0", HealthState(), metrics) as server:
        url = f"http://127.0.0.1:{server.bound_port}/metrics"

        async def scrape() -> None:
            curl = await asyncio.create_subprocess_exec("curl", "-sf", "--compressed", "-o", "/dev/null", url)
            assert await curl.wait() == 0

        await scrape()  # the first starts the worker thread
        stalls, took = [], []
        for _ in range(scrapes):
            stall, elapsed = await longest_gap(scrape)
            stalls.append(stall)
            took.append(elapsed)
        quiet, _ = await longest_gap(lambda: asyncio.sleep(statistics.median(took)))
    return {
        "loop_stall_s": statistics.median(stalls),
        "idle_stall_s": quiet,
        "scrape_s": statistics.median(took),
    }


def measure(setup: str, servers: int, runs: int, ref: str) -> dict[str, Any]:
    started = time.perf_counter()
    metrics = build(setup, servers, ref)
    built = time.perf_counter() - started
    times = []
    body = b""
    for _ in range(runs):
        started = time.perf_counter()
        body = metrics.render()
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    packed = gzip.compress(body, compresslevel=6)
    gzip_s = time.perf_counter() - started
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    result: dict[str, Any] = {
        "setup": setup,
        "servers": servers,
        "bytes": len(body),
        "gzip_bytes": len(packed),
        "series": len(lines),
        "created_series": sum(
            1 for line in lines if line.split("{", 1)[0].split(" ")[0].endswith("_created")
        ),
        "render_s": times,
        "gzip_s": gzip_s,
        "build_s": built,
    }
    if setup != "before":
        result.update(asyncio.run(loop_stall(metrics)))
    return result


def measure_in_child(setup: str, servers: int, runs: int, ref: str) -> dict[str, Any]:
    """:func:`measure` in a process of its own (prometheus_client's ``_created`` switch is global)."""
    argv = [sys.executable, __file__, "--one", setup, "--servers", str(servers), "--runs", str(runs)]
    child = subprocess.run([*argv, "--before-ref", ref], capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"{setup} failed:\n{child.stderr}")
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])  # after any log line
    return result


def spread(values: list[float], scale: float = 1000.0, unit: str = " ms") -> str:
    median = statistics.median(values) * scale
    return f"{median:.1f}{unit} (min {min(values) * scale:.1f}, max {max(values) * scale:.1f})"


def size(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"


def report(results: list[dict[str, Any]], runs: int, ref: str, load: tuple[float, ...] | None = None) -> str:
    by = {result["setup"]: result for result in results}
    servers = results[0]["servers"]
    out = [
        "# /metrics at fleet scale",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/bench_metrics.py "
        f"--servers {servers} --runs {runs}`: one policy of {servers:,} servers, each with a "
        "successful run recorded, and API traffic on four routes. Render times are medians of "
        f"{runs} renders (min, max), each set-up in a process of its own.",
        "",
        "| set-up | text | gzip | series | of which `_created` | render | gzip time | loop stall (idle) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "before": f"before (`{ref}`: a series per server, `_created` on)",
        "per_server": "`metrics.per_server: true`",
        "default": "default (per-policy gauges)",
    }
    for setup in SETUPS:
        if setup not in by:
            continue
        r = by[setup]
        stall = (
            f"{r['loop_stall_s'] * 1000:.1f} ms ({r['idle_stall_s'] * 1000:.1f} ms)"
            if "loop_stall_s" in r
            else "the render: it ran on the loop"
        )
        out.append(
            f"| {names[setup]} | {size(r['bytes'])} | {size(r['gzip_bytes'])} | {r['series']:,} | "
            f"{r['created_series']:,} | {spread(r['render_s'])} | {r['gzip_s'] * 1000:.1f} ms | {stall} |"
        )
    if "before" in by and "default" in by:
        before, after = by["before"], by["default"]
        ratio = statistics.median(before["render_s"]) / statistics.median(after["render_s"])
        out += [
            "",
            f"Default against before: {size(before['bytes'])} -> {size(after['bytes'])} a scrape "
            f"({before['bytes'] / after['bytes']:,.0f} times smaller; {size(after['gzip_bytes'])} gzipped), "
            f"render {statistics.median(before['render_s']) * 1000:.0f} ms -> "
            f"{statistics.median(after['render_s']) * 1000:.1f} ms ({ratio:,.0f} times faster).",
        ]
    out += [
        "",
        "The loop stall is the longest gap seen by a task sleeping 1 ms in a loop on the listener's "
        "event loop while curl (another process) fetches `/metrics` gzip-compressed from the real "
        "listener on loopback (median of 3 scrapes); in brackets, the same task's longest gap over as "
        "long a time with no scrape: the machine's own noise. The render and the compression run in a "
        "worker thread, so the loop waits only for its turns at the GIL (switch interval 5 ms), not "
        "for the whole render as before, when the module rendered on the loop: its stall was the whole "
        "render time.",
        "",
        "## Machine",
        "",
    ]
    out += [f"- {key}: {value}" for key, value in machine().items()]
    if load is not None:
        before_load, after_load = load[:3], os.getloadavg()
        out.append(
            "- load average (1, 5, 15 min) before and after: "
            + ", ".join(f"{x:.2f}" for x in before_load)
            + " / "
            + ", ".join(f"{x:.2f}" for x in after_load)
            + f" on {os.cpu_count()} cores (the machine is shared: a loaded one makes every time worse)"
        )
    out += ["", "## Raw", "", "```json", json.dumps(results, indent=2), "```", ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before-ref", default=BEFORE_REF, help="git revision of the 'before' module")
    parser.add_argument("--output", type=Path, help="write the report there (e.g. bench/METRICS.md)")
    parser.add_argument("--one", choices=SETUPS, help=argparse.SUPPRESS)  # a child process: one set-up
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.servers, args.runs, args.before_ref)))
        return 0
    load = os.getloadavg()
    results = []
    for setup in SETUPS:
        try:
            result = measure_in_child(setup, args.servers, args.runs, args.before_ref)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        results.append(result)
        print(
            f"{setup}: {size(result['bytes'])} ({size(result['gzip_bytes'])} gzip), "
            f"{result['series']:,} series, render {spread(result['render_s'])}",
            flush=True,
        )
    text = report(results, args.runs, args.before_ref, load)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
