"""Fleet run: ``rotator run-once`` of a 1,000-server policy against the sandbox on loopback.

Run: ``python bench/bench_fleet.py [--runs 3] [--servers 1000] [--subset 100] [--json out.json]``.

The setup (issue 6, "Benchmarks"): the sandbox as a real server on 127.0.0.1,
in a thread of this process, with a ``uniform`` fleet of 1,000 servers each
holding 30 completed backups owned by the policy, 100 backups a page, 20 ms of
latency added to every request, a token-bucket rate limit of 100 requests/s
(bucket of 100, the sandbox's default of one second's worth; 429 with
``Retry-After`` beyond it; ``RateLimit-Limit/-Remaining/-Reset`` on every
answer) and creates completing 2 s after they were accepted. rotator runs as a
real process (``python -m rotator run-once --config ...``) for a policy with
``retention: {keep_last: 30}``: one create, one wait and one delete per server.
Each run gets a fresh sandbox.

Scenarios:

* ``documented``: rotator configured as a user would for a documented limit of
  100 requests/s (see :data:`DOCUMENTED`);
* ``unknown``: the same, but configured for 400 requests/s, four times what the
  sandbox allows: rotator has to find the real budget from the ``RateLimit-*``
  headers and 429s;
* ``subset`` and ``naive``: rotator and the reference cron script
  (``bench/naive_rotate.py``) on the first ``--subset`` servers of the same
  1,000-server sandbox, measured in the same invocation (1,000 servers one at a
  time would take the script about 35 minutes);
* ``floor``: ``bench/floor_client.py``, a plain asyncio + httpx client making the
  requests of rotator's cheapest run (three account listings, a create and a
  delete a server) at the same rate and concurrency, after each of rotator's
  runs: the CPU a request costs on this machine without anything of rotator's.

The lower bound of a run is ``minimum requests / rate limit``, where the minimum
is one create and one delete per server plus two complete listings at the
cheaper of the two ways to list (the account's manual backups, or each server's
own): one before the creates (a slot's backup that already exists is adopted,
never duplicated) and one after the last backup completed, which also serves the
prune plans. The sandbox's token bucket starts full, so its first ``burst``
requests go through at once: the honest bound is ``(minimum - burst) / rate``,
and the benchmark reports the ratio against both (the targets are judged on the
honest one). Both leave out the 2 s that the last backup takes to complete and
the process start, so no real run reaches them. What each request was is taken
from the sandbox's access log (route, query, status, time).

What rotator's own safety reads cost is counted inside its process: rotator runs
as ``python -c COUNTING_CHILD run-once --config ...``, which is ``python -m
rotator run-once`` (the same ``rotator.cli.main``) with every GET it sends tagged
by why it was sent: ``initial`` (the views at the start), ``confirm`` (the second
read that confirms a multi-page view before a create), ``poll`` (the rounds while
backups are in progress) and ``reread`` (a view read again because it was older
than ``api.max_view_age`` before a prune, or before a retry); and it writes the
runner's ``inventory.reads`` and ``views_read`` counters to a file on its way out.
The tags add up to the sandbox's GET count (checked by ``tests/test_bench_smoke.py``);
the reads that raised are counted too (a poll round whose account listing changed
while it was read fails, and the next round reads again).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.child_env import clean_env
from rotator.sandbox import FaultOptions, RunningSandbox, SandboxOptions, running_sandbox

ROOT = Path(__file__).resolve().parent.parent
NAIVE_SCRIPT = ROOT / "bench" / "naive_rotate.py"
FLOOR_SCRIPT = ROOT / "bench" / "floor_client.py"
RUN_TIMEOUT = 900.0  # seconds one process may take before the benchmark gives up on it
TARGETS = {  # the ratios judged against the honest bound, (minimum - burst) / rate
    "documented": {"ratio_honest": 1.2, "rate_limited": 0, "requests_per_server": 3.0},
    "unknown": {"ratio_honest": 1.3, "rate_limited_share": 0.01},
}
PURPOSES = ("initial", "confirm", "poll", "reread")  # why rotator sent a GET (see COUNTING_CHILD)
SAFETY_READS = ("confirm", "reread")  # the reads rotator's safety rails add to the minimum


@dataclass(frozen=True)
class FleetSetup:
    """The sandbox side of a run."""

    servers: int = 1000
    backups_per_server: int = 30
    page_size: int = 100
    latency: float = 0.02
    rate_limit: float = 100.0
    burst: int | None = None  # None: the sandbox's default bucket, one second's worth of requests
    create_seconds: float = 2.0
    owner: str = "fleet"
    keep_last: int = 30

    @property
    def faults(self) -> FaultOptions:
        return FaultOptions(latency=self.latency, rate_limit=self.rate_limit, burst=self.burst)

    def sandbox_options(self) -> SandboxOptions:
        return SandboxOptions(
            fleet="uniform",
            servers=self.servers,
            backups_per_server=self.backups_per_server,
            owner=self.owner,
            page_size=self.page_size,
            create_seconds=self.create_seconds,
            faults=self.faults,
        )


@dataclass(frozen=True)
class RotatorChoice:
    """rotator's side: its ``api`` and ``daemon`` settings."""

    requests_per_second: float
    burst: int
    max_concurrency: int
    poll_interval: str
    poll_max_interval: str = "1m"
    log_level: str = "info"
    max_view_age: str | None = None  # None: rotator's default (60s)


# A documented limit of 100 requests/s: rotator may use all of it, with a small burst (the documentation
# promises the rate, not a bucket size) and the default concurrency (8, where ~3 keep 100/s going at
# 20-30 ms a request). The first poll comes 2 s after the creates, the time a backup takes here.
DOCUMENTED = RotatorChoice(requests_per_second=100, burst=10, max_concurrency=8, poll_interval="2s")
UNKNOWN = replace(DOCUMENTED, requests_per_second=400)


# ``python -m rotator`` (the same ``rotator.cli.main``), with each GET of a listing that rotator sends
# tagged by why it was sent and the runner's read counters written to $BENCH_COUNTS on the way out. Only
# counting: the wrappers set a context variable around the runner's own methods, count the reads that
# raised (a poll round whose account listing changed while it was read fails, and its pages are spent),
# and count each GET as the client hands it to its transport (a page asked for but cancelled while it
# waited for the budget, when its listing failed, never reaches the API and is not counted).
COUNTING_CHILD = r"""
import contextvars, json, os, resource, sys, time
from collections import Counter

import rotator.cli as cli
from rotator.api import BackupsClient
from rotator.inventory import Inventory
from rotator.runner import Runner

purpose = contextvars.ContextVar("bench_purpose", default="reread")  # run.reads: before a prune or a retry
gets = Counter()
failed = Counter()
spans = {}
runners = []


def tagged(name, method):
    async def wrapper(*args, **kwargs):
        token = purpose.set(name)
        try:
            return await method(*args, **kwargs)
        except Exception:
            failed[name] += 1
            raise
        finally:
            purpose.reset(token)
    return wrapper


Runner._read_all = tagged("initial", Runner._read_all)
Inventory.confirm = tagged("confirm", Inventory.confirm)
Inventory.poll = tagged("poll", Inventory.poll)
send = BackupsClient._exchange  # every request of the client is sent here, proxied or not


async def counted_send(self, request, *args, **kwargs):
    if request.method == "GET" and request.url.path.endswith("/backups/"):
        name, now = purpose.get(), time.monotonic()
        gets[name] += 1
        spans.setdefault(name, [now, now])[1] = now
    return await send(self, request, *args, **kwargs)


BackupsClient._exchange = counted_send
make_runner = cli._runner


def counted_runner(client, config):
    runner = make_runner(client, config)
    runners.append(runner)
    return runner


cli._runner = counted_runner
code = 1


def own_peak_rss_kb(maxrss):
    # Linux keeps ru_maxrss across execve: a child started by vfork (as subprocess starts it) reports
    # the benchmark's own RSS (its sandbox of every backup) when that was larger. VmHWM is this
    # process image's own high-water mark.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return maxrss


ready = resource.getrusage(resource.RUSAGE_SELF)  # after the imports: what the run itself costs from here
try:
    code = cli.main(sys.argv[1:])
finally:
    counts = {
        "gets": dict(gets),
        "failed_reads": dict(failed),
        "spans": spans,
        "reads": [dict(r.inventory.reads) for r in runners],
        "views_read": [r.views_read for r in runners],
    }
    done = resource.getrusage(resource.RUSAGE_SELF)
    counts["rusage"] = {
        "cpu_s": done.ru_utime + done.ru_stime,
        "cpu_run_s": done.ru_utime + done.ru_stime - ready.ru_utime - ready.ru_stime,
        "peak_rss_kb": own_peak_rss_kb(done.ru_maxrss),
    }
    with open(os.environ["BENCH_COUNTS"], "w", encoding="utf-8") as out:
        json.dump(counts, out)
raise SystemExit(code)
"""


def minimum_requests(setup: FleetSetup, servers: int) -> dict[str, int]:
    """The fewest requests a run of ``servers`` of the fleet can take, by kind (see the module's doc)."""
    per_page = setup.page_size
    account_before = math.ceil(setup.servers * setup.backups_per_server / per_page)
    per_server_before = servers * math.ceil(setup.backups_per_server / per_page)
    account_after = math.ceil((setup.servers * setup.backups_per_server + servers) / per_page)
    per_server_after = servers * math.ceil((setup.backups_per_server + 1) / per_page)
    minimum = {
        "creates": servers,
        "deletes": servers,
        "listing_before": min(account_before, per_server_before),
        "listing_after": min(account_after, per_server_after),
    }
    minimum["total"] = sum(minimum.values())
    return minimum


# -- the sandbox's access log ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic() when the answer started
    method: str
    path: str
    query: dict[str, str]
    status: int

    @property
    def kind(self) -> str:
        if self.method == "POST":
            return "create"
        if self.method == "DELETE":
            return "delete"
        if self.method == "GET" and self.path.endswith("/backups/"):
            return "server_page" if "server_id" in self.query else "account_page"
        return "other"


class AccessLog(logging.Handler):
    """Collects uvicorn's access log records (``client - "METHOD PATH HTTP/x" status``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.requests: list[Request] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return
        _, method, target, _, status = args
        parts = urlsplit(str(target))
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        request = Request(time.monotonic(), str(method), parts.path, query, int(str(status)))
        with self._guard:
            self.requests.append(request)

    def snapshot(self) -> list[Request]:
        with self._guard:
            return list(self.requests)


@contextmanager
def fleet_sandbox(setup: FleetSetup) -> Iterator[tuple[RunningSandbox, AccessLog]]:
    """A fresh sandbox for ``setup`` on loopback, with its access log collected."""
    access = AccessLog()
    logger = logging.getLogger("uvicorn.access")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(access)
    try:
        with running_sandbox(setup.sandbox_options(), access_log=True) as running:
            yield running, access
    finally:
        logger.removeHandler(access)
        logger.setLevel(level)
        logger.propagate = propagate


# -- rotator -----------------------------------------------------------------------------------


def write_config(path: Path, setup: FleetSetup, choice: RotatorChoice, servers: int) -> Path:
    document = {
        "policies": [
            {
                "name": setup.owner,
                "servers": list(range(1, servers + 1)),
                "retention": {"keep_last": setup.keep_last},
                "description": "{policy} {date}",
                "wait_timeout": "10m",
            }
        ],
        "api": {
            "requests_per_second": choice.requests_per_second,
            "burst": choice.burst,
            "max_concurrency": choice.max_concurrency,
            **({"max_view_age": choice.max_view_age} if choice.max_view_age else {}),
        },
        "daemon": {"poll_interval": choice.poll_interval, "poll_max_interval": choice.poll_max_interval},
        "log": {"format": "json", "level": choice.log_level},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class RunResult:
    """One measured process: what it was, how long it took, what the sandbox saw."""

    tool: str
    scenario: str
    servers: int
    wall_s: float
    exit_code: int
    summary: str
    requests: dict[str, dict[str, int]]
    total_requests: int
    creates: int
    deletes: int
    listing_pages: dict[str, int]
    listings: dict[str, int]
    rate_limited: int
    rate_limited_by_kind: dict[str, int]
    other_statuses: dict[str, int]
    requests_per_server: float
    minimum: dict[str, int]
    lower_bound_s: float
    ratio: float
    honest_bound_s: float  # (minimum - the bucket's initial burst) / rate
    ratio_honest: float
    by_method: dict[str, int]  # every request, whatever its status
    phases: dict[str, list[float]] = field(default_factory=dict)
    run_duration_s: float | None = None
    rate_limit: float = 0.0
    burst: int = 0
    gets_by_purpose: dict[str, int] = field(default_factory=dict)  # rotator only: why each GET was sent
    inventory_reads: dict[str, int] = field(default_factory=dict)  # the runner's inventory.reads
    views_read: int | None = None  # the runner's views_read: prunes whose view had to be read again
    failed_reads: dict[str, int] = field(default_factory=dict)  # reads that raised, by purpose
    cpu_s: float | None = None  # rotator's process: user + system CPU, start to exit
    cpu_run_s: float | None = None  # the same without the interpreter's start and the imports
    peak_rss_mb: float | None = None  # rotator's process: peak resident set size
    sandbox_cpu_s: float | None = None  # this process (the sandbox's thread, its access log) meanwhile

    @property
    def cpu_ms_per_server(self) -> float | None:
        """rotator's CPU for one server-run (the whole process, start included), in ms."""
        return None if self.cpu_s is None else 1000 * self.cpu_s / self.servers

    @property
    def cpu_ms_per_request(self) -> float | None:
        """rotator's CPU (after its imports) per request it sent, in ms."""
        if self.cpu_run_s is None or not self.total_requests:
            return None
        return 1000 * self.cpu_run_s / self.total_requests

    @property
    def rate_limited_share(self) -> float:
        return self.rate_limited / self.total_requests if self.total_requests else 0.0

    @property
    def safety_requests(self) -> int:
        """GETs that rotator's safety rails add: the confirming second read, the fresh-view re-reads."""
        return sum(self.gets_by_purpose.get(name, 0) for name in SAFETY_READS)

    @property
    def requests_without_safety(self) -> int:
        return self.total_requests - self.safety_requests

    def per_server(self) -> dict[str, float]:
        """Requests per server, by method and (GETs) by why they were sent; and without the safety reads."""
        n = self.servers
        out = {method: count / n for method, count in sorted(self.by_method.items())}
        out |= {f"GET {name}": self.gets_by_purpose.get(name, 0) / n for name in PURPOSES}
        out["total"] = self.total_requests / n
        out["safety"] = self.safety_requests / n
        out["without_safety"] = self.requests_without_safety / n
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate_limited_share"] = self.rate_limited_share
        data["safety_requests"] = self.safety_requests
        data["requests_without_safety"] = self.requests_without_safety
        data["per_server"] = self.per_server()
        data["cpu_ms_per_server"] = self.cpu_ms_per_server
        data["cpu_ms_per_request"] = self.cpu_ms_per_request
        return data


def timeline(
    log: list[Request], started: float, get_spans: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """When each kind of request was sent, first to last, in seconds from the process start: creates,
    deletes and 429s from the access log; the GETs by why rotator sent them (``get_spans``, from its
    process, on the same monotonic clock), or all together (the cron script)."""
    done = [r for r in log if r.status != 429]
    spans: dict[str, list[float]] = {}

    def span(name: str, times: list[float]) -> None:
        if times:
            spans[name] = [round(min(times) - started, 2), round(max(times) - started, 2)]

    if get_spans is not None:
        for name in PURPOSES:
            if name in get_spans:
                span(f"GET {name}", get_spans[name])
    else:
        span("listings", [r.at for r in done if r.kind.endswith("_page")])
    span("creates", [r.at for r in done if r.kind == "create"])
    span("deletes", [r.at for r in done if r.kind == "delete"])
    span("429", [r.at for r in log if r.status == 429])
    return dict(sorted(spans.items(), key=lambda item: tuple(item[1])))


def account(
    tool: str,
    scenario: str,
    setup: FleetSetup,
    servers: int,
    running: RunningSandbox,
    access: AccessLog,
    started: float,
    wall: float,
    exit_code: int,
    summary: str,
    child: dict[str, Any] | None = None,
) -> RunResult:
    """The request accounting of one run, from the sandbox's stats and its access log, and (rotator)
    the counts its process wrote (see :data:`COUNTING_CHILD`)."""
    stats = running.sandbox.stats()
    requests: dict[str, dict[str, int]] = stats["requests"]
    log = access.snapshot()
    statuses: Counter[str] = Counter()
    for counts in requests.values():
        statuses.update(counts)
    rate_limited = statuses["429"]
    ok = {"200", "201", "204"}
    other = {status: n for status, n in statuses.items() if status not in ok and status != "429"}
    pages = Counter(r.kind for r in log if r.status == 200 and r.kind.endswith("_page"))
    listings = Counter(
        r.kind.removesuffix("_page")
        for r in log
        if r.kind.endswith("_page") and r.query.get("page", "1") == "1"
    )
    by_kind = Counter(r.kind for r in log if r.status == 429)
    phases = timeline(log, started, None if child is None else child.get("spans", {}))
    minimum = minimum_requests(setup, servers)
    lower_bound = minimum["total"] / setup.rate_limit
    burst = setup.faults.bucket_size
    honest_bound = max(0, minimum["total"] - burst) / setup.rate_limit
    total = int(stats["total"])
    by_method: Counter[str] = Counter()
    for route, counts_by_status in requests.items():
        by_method[route.split(" ", 1)[0]] += sum(counts_by_status.values())
    reads: Counter[str] = Counter()
    for runner_reads in (child or {}).get("reads", []):
        reads.update(runner_reads)
    views_read = sum(child["views_read"]) if child is not None and child.get("views_read") else None
    return RunResult(
        tool=tool,
        scenario=scenario,
        servers=servers,
        wall_s=wall,
        exit_code=exit_code,
        summary=summary,
        requests=requests,
        total_requests=total,
        creates=requests.get("POST /api/v1/backups/", {}).get("201", 0),
        deletes=requests.get("DELETE /api/v1/backups/{backup_id}/", {}).get("204", 0),
        listing_pages=dict(pages),
        listings=dict(listings),
        rate_limited=rate_limited,
        rate_limited_by_kind=dict(by_kind),
        other_statuses=other,
        requests_per_server=total / servers,
        minimum=minimum,
        lower_bound_s=lower_bound,
        ratio=wall / lower_bound,
        honest_bound_s=honest_bound,
        ratio_honest=wall / honest_bound if honest_bound else math.inf,
        by_method=dict(by_method),
        phases=phases,
        rate_limit=setup.rate_limit,
        burst=burst,
        gets_by_purpose=dict((child or {}).get("gets", {})),
        inventory_reads=dict(reads),
        views_read=views_read,
        failed_reads=dict((child or {}).get("failed_reads", {})),
    )


def run_rotator(
    setup: FleetSetup,
    choice: RotatorChoice,
    *,
    scenario: str,
    servers: int | None = None,
    workdir: Path,
    profile: Path | None = None,
    timeout: float = RUN_TIMEOUT,
) -> RunResult:
    """One ``rotator run-once`` against a fresh sandbox; the process's wall time, start to exit.

    ``profile``: run it under ``py-spy record`` (the ``profile`` extra), collapsed stacks written there.
    """
    count = setup.servers if servers is None else servers
    config = write_config(workdir / f"{scenario}.yaml", setup, choice, count)
    log_path = workdir / f"{scenario}.log"
    counts_path = workdir / f"{scenario}.counts.json"
    counts_path.unlink(missing_ok=True)
    with fleet_sandbox(setup) as (running, access), log_path.open("w", encoding="utf-8") as log_file:
        env = clean_env(
            ROTATOR_API_URL=running.api_url, ROTATOR_API_TOKEN=running.token, BENCH_COUNTS=str(counts_path)
        )
        command = [sys.executable, "-c", COUNTING_CHILD, "run-once", "--config", str(config)]
        if profile is not None:
            spy = ["py-spy", "record", "--format", "raw", "--rate", "250", "--nonblocking", "-o"]
            command = [*spy, str(profile), "--", *command]
        started, sandbox_cpu = time.monotonic(), time.process_time()
        process = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            timeout=timeout,
            check=False,
        )
        wall, sandbox_cpu = time.monotonic() - started, time.process_time() - sandbox_cpu
        result = account(
            "rotator",
            scenario,
            setup,
            count,
            running,
            access,
            started,
            wall,
            process.returncode,
            process.stdout.strip(),
            json.loads(counts_path.read_text(encoding="utf-8")) if counts_path.exists() else None,
        )
    result.run_duration_s = _run_duration(log_path)
    result.sandbox_cpu_s = sandbox_cpu
    usage = (
        json.loads(counts_path.read_text(encoding="utf-8")).get("rusage") if counts_path.exists() else None
    )
    if usage:
        result.cpu_s, result.cpu_run_s = usage["cpu_s"], usage["cpu_run_s"]
        result.peak_rss_mb = usage["peak_rss_kb"] / 1024
    return result


def _run_duration(log_path: Path) -> float | None:
    """rotator's own duration of the run (``run.finished``), without the process start."""
    duration = None
    with log_path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("{") and '"run.finished"' in line:
                duration = json.loads(line).get("duration_s")
    return duration


def run_script(
    setup: FleetSetup, tool: str, servers: int, script: Path, args: list[str], *, timeout: float
) -> tuple[RunResult, subprocess.CompletedProcess[str], float]:
    """A reference script (``script --api-url URL *args``, the token in ``API_TOKEN``) against a fresh
    sandbox: its accounted run, its process, and the sandbox's CPU meanwhile."""
    with fleet_sandbox(setup) as (running, access):
        env = clean_env(API_TOKEN=running.token)
        started, sandbox_cpu = time.monotonic(), time.process_time()
        process = subprocess.run(
            [sys.executable, str(script), "--api-url", running.api_url, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        wall, sandbox_cpu = time.monotonic() - started, time.process_time() - sandbox_cpu
        summary = process.stdout.strip() or process.stderr.strip()[-500:]
        result = account(
            tool, tool, setup, servers, running, access, started, wall, process.returncode, summary
        )
    return result, process, sandbox_cpu


def run_naive(setup: FleetSetup, servers: int, *, poll: float = 1.0) -> RunResult:
    """The reference cron script on servers 1..``servers`` of a fresh sandbox."""
    args = ["--servers", f"1-{servers}", "--owner", setup.owner, "--keep", str(setup.keep_last)]
    result, _, _ = run_script(
        setup, "naive", servers, NAIVE_SCRIPT, [*args, "--poll", str(poll)], timeout=RUN_TIMEOUT * 4
    )
    return result


def run_floor(setup: FleetSetup, servers: int, *, concurrency: int) -> RunResult:
    """The plain asyncio + httpx client (``bench/floor_client.py``) making rotator's requests, on
    servers 1..``servers`` of a fresh sandbox at the same rate and concurrency: the CPU a request
    costs on this machine without anything of rotator's."""
    args = ["--servers", str(servers), "--rate", f"{setup.rate_limit:g}", "--concurrency", str(concurrency)]
    args += ["--wait", f"{setup.create_seconds:g}"]
    result, process, sandbox_cpu = run_script(
        setup, "floor", servers, FLOOR_SCRIPT, args, timeout=RUN_TIMEOUT
    )
    result.sandbox_cpu_s = sandbox_cpu
    if process.returncode == 0:
        usage = json.loads(process.stdout)
        result.cpu_s, result.cpu_run_s = usage["cpu_s"], usage["cpu_run_s"]
    return result


# -- reporting -----------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(results: list[RunResult]) -> dict[str, Any]:
    """Medians (and min/max) of a scenario's runs."""
    return {
        "runs": len(results),
        "servers": results[0].servers,
        "wall_s": spread([r.wall_s for r in results]),
        "run_duration_s": spread([r.run_duration_s or 0.0 for r in results]),
        "total_requests": spread([float(r.total_requests) for r in results]),
        "requests_per_server": spread([r.requests_per_server for r in results]),
        "rate_limited": spread([float(r.rate_limited) for r in results]),
        "rate_limited_share": spread([r.rate_limited_share for r in results]),
        "ratio": spread([r.ratio for r in results]),
        "ratio_honest": spread([r.ratio_honest for r in results]),
        "lower_bound_s": results[0].lower_bound_s,
        "honest_bound_s": results[0].honest_bound_s,
        "burst": results[0].burst,
        "rate_limit": results[0].rate_limit,
        "minimum": results[0].minimum,
        "per_server": {
            name: spread([r.per_server().get(name, 0.0) for r in results]) for name in results[0].per_server()
        },
        "safety_requests": spread([float(r.safety_requests) for r in results]),
        "requests_without_safety": spread([float(r.requests_without_safety) for r in results]),
        "all_ok": all(r.exit_code == 0 for r in results),
        **{
            name: spread([value for r in results if (value := getattr(r, name)) is not None])
            for name in (
                "cpu_s",
                "cpu_run_s",
                "peak_rss_mb",
                "sandbox_cpu_s",
                "cpu_ms_per_server",
                "cpu_ms_per_request",
            )
            if all(getattr(r, name) is not None for r in results)
        },
    }


def verdicts(scenario: str, summary: dict[str, Any]) -> dict[str, tuple[float, float, bool]]:
    """Each target of ``scenario``: (median measured, target, met)."""
    found: dict[str, tuple[float, float, bool]] = {}
    for name, target in TARGETS.get(scenario, {}).items():
        value = float(summary[name]["median"])
        found[name] = (value, float(target), value <= target)
    return found


def describe_run(result: RunResult) -> str:
    pages = ", ".join(f"{k} {v}" for k, v in sorted(result.listing_pages.items())) or "none"
    listings = ", ".join(f"{k} {v}" for k, v in sorted(result.listings.items())) or "none"
    phases = "; ".join(f"{k} {a:.1f}-{b:.1f}s" for k, (a, b) in result.phases.items())
    duration = f", run {result.run_duration_s:.1f} s" if result.run_duration_s is not None else ""
    return (
        f"  {result.tool} {result.scenario} {result.servers} servers: wall {result.wall_s:.1f} s{duration}, "
        f"exit {result.exit_code}; requests {result.total_requests} "
        f"({result.requests_per_server:.2f}/server): creates {result.creates}, deletes {result.deletes}, "
        f"pages [{pages}] in listings [{listings}], 429 {result.rate_limited} "
        f"({100 * result.rate_limited_share:.2f} %"
        + (f", {result.rate_limited_by_kind}" if result.rate_limited else "")
        + ")"
        + (f", other {result.other_statuses}" if result.other_statuses else "")
        + f"; min {result.minimum['total']} -> bound {result.lower_bound_s:.2f} s, ratio {result.ratio:.2f}; "
        f"honest bound ({result.minimum['total']} - {result.burst}) / {result.rate_limit:g} = "
        f"{result.honest_bound_s:.2f} s, ratio {result.ratio_honest:.2f}"
        + (f"\n    {describe_breakdown(result)}" if result.gets_by_purpose else "")
        + (f"\n    {describe_cost(result)}" if result.cpu_s is not None else "")
        + f"\n    phases: {phases}\n    {result.summary[:300]}"
    )


def describe_cost(result: RunResult) -> str:
    """rotator's CPU and peak memory, and the sandbox's CPU beside it."""
    return (
        f"cost: {result.tool} CPU {result.cpu_s:.2f} s ({result.cpu_ms_per_server:.2f} ms/server-run; "
        f"{result.cpu_run_s:.2f} s after its imports, {result.cpu_ms_per_request:.2f} ms/request)"
        + (f", peak RSS {result.peak_rss_mb:.1f} MB" if result.peak_rss_mb is not None else "")
        + f"; sandbox CPU {result.sandbox_cpu_s:.2f} s"
    )


def describe_breakdown(result: RunResult) -> str:
    """Requests by method, the GETs by why they were sent, and the run without the safety reads."""
    methods = ", ".join(f"{m} {n}" for m, n in sorted(result.by_method.items()))
    gets = ", ".join(f"{name} {result.gets_by_purpose.get(name, 0)}" for name in PURPOSES)
    return (
        f"by method [{methods}]; GETs by purpose [{gets}]; safety reads {result.safety_requests} "
        f"({result.safety_requests / result.servers:.2f}/server, "
        f"{result.safety_requests / result.rate_limit:.1f} s at the limit); "
        f"without them {result.requests_without_safety} "
        f"({result.requests_without_safety / result.servers:.2f}/server); "
        f"inventory.reads {result.inventory_reads}, views_read {result.views_read}, "
        f"failed reads {result.failed_reads or 0}"
    )


def describe_summary(scenario: str, summary: dict[str, Any]) -> str:
    w, r, h = summary["wall_s"], summary["ratio"], summary["ratio_honest"]
    per = summary["per_server"]
    lines = [
        f"{scenario}: {summary['servers']} servers, {summary['runs']} runs: wall median {w['median']:.2f} s "
        f"(min {w['min']:.2f}, max {w['max']:.2f}); ratio median {h['median']:.2f} "
        f"(min {h['min']:.2f}, max {h['max']:.2f}) to the honest bound {summary['honest_bound_s']:.2f} s "
        f"(({summary['minimum']['total']} - {summary['burst']}) / {summary['rate_limit']:g}), "
        f"{r['median']:.2f} (min {r['min']:.2f}, max {r['max']:.2f}) to the old bound "
        f"{summary['lower_bound_s']:.2f} s ({summary['minimum']['total']} requests: {summary['minimum']}); "
        f"requests/server {summary['requests_per_server']['median']:.2f}; "
        f"429s {summary['rate_limited']['median']:.0f} "
        f"({100 * summary['rate_limited_share']['median']:.2f} %)"
    ]
    if per.get("GET initial", {}).get("max", 0):
        shown = ", ".join(
            f"{name} {values['median']:.3f}" for name, values in per.items() if name not in ("total",)
        )
        lines.append(f"  per server (medians): {shown}")
    for name, (value, target, met) in verdicts(scenario, summary).items():
        lines.append(f"  target {name} <= {target:g}: {value:.3g} {'MET' if met else 'MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario (default 3)")
    parser.add_argument("--servers", type=int, default=1000, help="servers in the fleet (default 1000)")
    parser.add_argument("--subset", type=int, default=100, help="servers for rotator vs the cron script")
    parser.add_argument(
        "--naive-runs", type=int, default=None, help="runs of the cron script (default --runs)"
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=["documented", "unknown", "subset"], help="which to run"
    )
    parser.add_argument("--json", type=Path, help="write every run and the summaries here")
    parser.add_argument("--rate-limit", type=float, default=100.0, help="the sandbox's requests/s (100)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to each request (0.02)")
    parser.add_argument(
        "--profile", type=Path, help="py-spy each rotator run (collapsed stacks into this folder)"
    )
    parser.add_argument("--max-concurrency", type=int, default=8, help="rotator's api.max_concurrency (8)")
    parser.add_argument("--max-view-age", help="rotator's api.max_view_age (default: rotator's, 60s)")
    parser.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT, help=f"seconds a run may take ({RUN_TIMEOUT:g})"
    )
    args = parser.parse_args(argv)
    setup = FleetSetup(servers=args.servers, rate_limit=args.rate_limit, latency=args.latency)
    # rotator configured for the documented limit, or four times it (the limit unknown)
    documented = replace(
        DOCUMENTED,
        requests_per_second=args.rate_limit,
        max_concurrency=args.max_concurrency,
        max_view_age=args.max_view_age,
    )
    unknown = replace(documented, requests_per_second=4 * args.rate_limit)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    began, load_before = datetime.now(UTC), _load()
    print(
        f"sandbox: {setup.servers} servers x {setup.backups_per_server} owned backups, page size "
        f"{setup.page_size}, latency {setup.latency * 1000:.0f} ms, rate limit {setup.rate_limit:g}/s "
        f"(bucket {setup.faults.bucket_size}), creates complete after {setup.create_seconds:g} s"
    )
    print(f"rotator documented: {asdict(documented)}")
    print(f"rotator unknown:    {asdict(unknown)}")
    results: dict[str, list[RunResult]] = {}
    naive_runs = args.runs if args.naive_runs is None else args.naive_runs
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(tmp)
        for index in range(args.runs):
            plan: list[tuple[str, Callable[[], RunResult]]] = []
            for scenario, choice in (("documented", documented), ("unknown", unknown)):
                if scenario in args.scenarios:
                    spy = None if args.profile is None else args.profile / f"{scenario}-{index + 1}.txt"
                    run = partial(
                        run_rotator,
                        setup,
                        choice,
                        scenario=scenario,
                        workdir=workdir,
                        profile=spy,
                        timeout=args.timeout,
                    )
                    plan.append((scenario, run))
            if "subset" in args.scenarios:
                plan.append(
                    (
                        "subset",
                        partial(
                            run_rotator,
                            setup,
                            documented,
                            scenario="subset",
                            servers=args.subset,
                            workdir=workdir,
                        ),
                    )
                )
                if index < naive_runs:
                    plan.append(("naive", partial(run_naive, setup, args.subset)))
            if "floor" in args.scenarios:
                floor = partial(run_floor, setup, setup.servers, concurrency=args.max_concurrency)
                plan.append(("floor", floor))
            for name, run in plan:
                result = run()
                results.setdefault(name, []).append(result)
                print(f"run {index + 1}/{args.runs}:")
                print(describe_run(result), flush=True)
    summaries = {name: summarise(runs) for name, runs in results.items()}
    print()
    for name, summary in summaries.items():
        print(describe_summary(name, summary))
    if "subset" in summaries and "naive" in summaries:
        rot, naive = summaries["subset"]["wall_s"]["median"], summaries["naive"]["wall_s"]["median"]
        per_server = naive / args.subset
        print(
            f"naive vs rotator on {args.subset} servers: {naive:.1f} s vs {rot:.1f} s "
            f"({naive / rot:.1f}x); the script's {per_server:.2f} s a server extrapolates to "
            f"{per_server * setup.servers / 60:.1f} min for {setup.servers} servers (not measured)"
        )
    if "documented" in summaries and "floor" in summaries:
        ours, floor = summaries["documented"], summaries["floor"]
        request = ours["cpu_ms_per_request"]["median"], floor["cpu_ms_per_request"]["median"]
        run = ours["cpu_ms_per_server"]["median"], floor["cpu_ms_per_server"]["median"]
        print(
            "CPU a request after the imports, rotator vs the plain asyncio + httpx client: "
            f"{request[0]:.2f} ms vs {request[1]:.2f} ms ({request[0] / request[1]:.2f}x); "
            f"a server-run {run[0]:.2f} ms vs {run[1]:.2f} ms"
        )
    failed = any(not met for name, s in summaries.items() for _, _, met in verdicts(name, s).values())
    code = 1 if failed or not all(s["all_ok"] for s in summaries.values()) else 0
    if args.json is not None:
        document = {
            "setup": asdict(setup) | {"bucket": setup.faults.bucket_size},
            "choices": {"documented": asdict(documented), "unknown": asdict(unknown)},
            "runs": {name: [r.to_json() for r in runs] for name, runs in results.items()},
            "summaries": summaries,
            "verdicts": {name: verdicts(name, s) for name, s in summaries.items()},
            "when": {
                "started": began.isoformat(),
                "finished": datetime.now(UTC).isoformat(),
                "load_before": load_before,
                "load_after": _load(),
            },
            "exit_code": code,
        }
        args.json.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return code


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
