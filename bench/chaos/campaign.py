"""The fault campaign: rotator as real processes against a faulty sandbox, killed at random moments.

Two phases run side by side, each on its own sandbox served on a loopback port
(in this process, in a thread), each judged afterwards by
:mod:`bench.chaos.invariants` from that sandbox's event log alone:

1. **days**: ``rotator run-once --now`` about twice a simulated day, the
   sandbox clock set before each tick, so that weeks of runs pass in
   minutes; the simulated days may lie in the past or the future of real
   time, and a share of the ticks steps the clock *back* a few hours (a host
   clock corrected). Two policies on the same servers of one account: a GFS
   ``nightly`` in Europe/Berlin (``keep_daily/weekly/monthly``, ``min_keep:
   3``, at most 4 deletes a run) and a ``twice``-a-day one (``keep_last``,
   ``keep_days``). The servers are split into lanes; each lane runs one
   rotator process *per policy*, started together, so that one policy's
   process deletes while the other's lists (as two hosts' cron jobs would).
   A share of the runs is stopped at a random moment, mostly with SIGKILL,
   sometimes with SIGTERM (an abandoned run exits 75), and started again for
   the same slot. Some ticks come minutes after the last (the same slots
   again: adopted, never duplicated), some a day or more later (missed runs).
   A share of the ticks is *clean*: no fault but backups that fail often, the
   policies run one after the other, and a long wait, so that a slot whose
   attempts all failed before its retries were used is a violation.
2. **daemon**: ``rotator run`` on a short interval schedule in real time,
   killed with SIGKILL at random moments, kept down across zero, one or two
   slots and started again well clear of a slot boundary, so that a slot
   missed while down is caught up at the restart (or not) and the checker can
   tell. The last start is stopped with SIGTERM after it ran a scheduled slot.

The sandboxes inject, on every tick and daemon start: 5xx answers, connections
dropped after a create was processed, backups that end ``failed`` (retried with
the next attempt's marker), slow creates that outlast the policy's
``wait_timeout``; and on a share of them: a rate limit tighter than rotator's
pace (429s), an API clock hours ahead or days behind (``api_clock_offset``),
listings that lag the writes by seconds (``listing_lag``, shorter than the
configured ``create_quiet_period``; days phase only), create answers held past
rotator's ``api.timeout`` (``create_answer_delay``), pages shifted or answered
empty (``page_shift_rate``, ``empty_page_rate``; on those ticks of the days
phase with a smaller page size, so that a server's own listing has pages after
the first, where these faults act), create answers that lie
about the id or the server, and a third party deleting the newest backup of
a random server (``third_party_delete_rate``). ``auth_echo`` is always on (a
401 would echo the token; rotator's token is right, so none comes).
``description_max_length`` would fail every create by design (a cut
description loses its marker), so it is left to a short deterministic
scenario (``tests/test_chaos.py``). Every listing's first page is logged
(``log_listings``), for the checker's ``stale-view``.

The driver writes notes into the sandbox's event log (a process started, with
its policies, servers and ``now``; was ready, was killed, stopped, exited with
its code; the clock was moved; which faults a tick runs under; what rotator
claimed about a skipped catch-up), so that the log alone tells the whole story.
Every backup the sandbox starts with, including old non-candidates first in
line for a careless rule (automatic, failed, stuck, hand-made, another
policy's, look-alike markers), is in a ``snapshot`` note.

Every random choice comes from generators seeded by the campaign's seed (the
sandboxes' faults too), so a failing campaign can be run again with its seed;
the interleaving of concurrent requests, and so exactly which request meets
which fault, still varies from run to run.
"""

from __future__ import annotations

import json
import math
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import yaml

from bench.chaos.invariants import PolicySpec, Report, check
from bench.child_env import clean_env
from rotator.sandbox import Clock, FaultOptions, RunningSandbox, SandboxOptions, running_sandbox
from rotator.sandbox.state import BackupType, SandboxState

ROTATOR = (sys.executable, "-m", "rotator")
BERLIN = ZoneInfo("Europe/Berlin")
ANCHOR = datetime(2000, 1, 1, tzinfo=UTC).timestamp()  # rotator's interval slots count from here (UTC)
START_WINDOW = (0.1, 0.25)  # a daemon starts this far into a slot period (fractions of the interval)
SUMMARY = re.compile(
    r"^policy (?P<policy>\S+) (?P<state>ok|[A-Z]+)[^:]*: (?P<servers>\d+) servers, (?P<created>\d+) created, "
    r"(?P<adopted>\d+) adopted, (?P<deleted>\d+) deleted"
)
FAULT_KINDS = (
    "server_error",
    "rate_limited",
    "dropped",
    "failed",
    "slow",
    "delayed",
    "page_shift",
    "empty_page",
    "lie_known_id",
    "lie_other_server",
    "third_party_delete",
)
FAULT_NAMES = {
    "server_error": "5xx answers",
    "rate_limited": "429 answers",
    "dropped": "connections dropped after a create",
    "failed": "backups that failed",
    "slow": "slow creates outlasting wait_timeout",
    "delayed": "create answers held past api.timeout",
    "page_shift": "pages shifted by a third party",
    "empty_page": "pages answered empty",
    "lie_known_id": "create answers naming an older backup",
    "lie_other_server": "create answers naming another server",
    "third_party_delete": "newest backups deleted by a third party",
}
MODE_KINDS = ("storm", "clock ahead", "clock behind", "listing lag", "clock stepped back", "clean")
MODE_NAMES = {
    "storm": "under a rate limit",
    "clock ahead": "with the API's clock ahead",
    "clock behind": "with the API's clock behind",
    "listing lag": "with lagging listings",
    "clock stepped back": "with the clock stepped back",
    "clean": "clean (retries judged)",
}
PROCESS_DEADLINE = 180.0  # seconds a run-once may take before the campaign calls it hung
TERM_DEADLINE = 30.0  # seconds a run-once may take to stop after SIGTERM
API = {"requests_per_second": 60, "burst": 30, "max_concurrency": 8}  # faster than a storm allows
EXIT_ABANDONED = 75  # run-once cut short by SIGTERM


@dataclass(frozen=True)
class Settings:
    """What a campaign does; :meth:`long` and :meth:`short` are the two used."""

    seed: int
    # the days phase: run-once on a fast-forwarded clock
    ticks: int = 55  # each tick runs every lane once (a process per policy on every server of the lane)
    lanes: int = 4
    lane_servers: int = 5
    days_page_size: int = 50  # the sandbox's page size in the days phase (a server's listing in one page)
    kill_rate: float = 0.25  # share of run-once runs stopped at a random moment (again on a restart)
    term_share: float = 0.3  # of those stops, the share by SIGTERM rather than SIGKILL
    # the daemon phase, in real time
    daemon_servers: int = 4
    daemon_cycles: int = 10  # starts that end in a SIGKILL (then one last start, stopped with SIGTERM)
    interval: int = 5  # seconds between the daemon policy's slots
    max_up: float = 4.0  # a daemon is killed within this many intervals of its start
    decision_grace: float = 20.0  # a session up this long decided its catch-up (see invariants)
    # the sandboxes' faults, on every tick and daemon start
    error_rate: float = 0.10
    drop_rate: float = 0.05
    fail_rate: float = 0.03
    slow_rate: float = 0.04
    # ... and on a share of them
    storm_rate: float = 0.3  # share of ticks (daemon starts) under a rate limit tighter than rotator's pace
    storm_limit: float = 20.0  # requests per second in a storm (burst: a third of it)
    offset_share: float = 0.3  # the API's clock off (half of them ahead, half behind)
    lag_share: float = 0.15  # listings lagging 1-3 s (days phase only)
    delay_share: float = 0.15  # create answers held past rotator's api.timeout
    shift_share: float = 0.3
    page_shift_rate: float = 0.02
    empty_share: float = 0.3
    empty_page_rate: float = 0.03
    lie_share: float = 0.2
    lie_rate: float = 0.03  # each of lie_known_id_rate and lie_other_server_rate
    third_party_share: float = 0.3
    third_party_rate: float = 0.002  # per API request
    clean_share: float = 0.1  # clean ticks: only failing backups, retries judged
    clean_fail_rate: float = 0.35
    back_share: float = 0.06  # ticks that step the clock back 1-6 hours
    view_tolerance: float = 5.0  # seconds a first DELETE may take beyond max_view_age (pacing, retries)
    # the short version makes sure of each kind: the first run-once is killed and another stopped with
    # SIGTERM, the first ticks and daemon starts carry every fault, and the daemon's last restart comes
    # after a missed slot
    force_each: bool = False

    @classmethod
    def long(cls, seed: int) -> Settings:
        """``make chaos``: 2,200 server-runs of run-once over about four simulated weeks, 10 daemon kills."""
        return cls(seed=seed)

    @classmethod
    def short(cls, seed: int) -> Settings:
        """The ``make test`` version: every fault at least once, in under a minute."""
        return cls(
            seed=seed,
            ticks=4,
            lanes=2,
            lane_servers=3,
            days_page_size=30,  # so few servers list cheaper by the account, in pages to shift
            kill_rate=0.3,
            daemon_servers=3,
            daemon_cycles=2,
            max_up=1.5,
            error_rate=0.12,
            drop_rate=0.3,
            fail_rate=0.2,
            slow_rate=0.2,
            force_each=True,
        )

    @property
    def days_servers(self) -> int:
        return self.lanes * self.lane_servers


# -- what happened --------------------------------------------------------------------------


@dataclass
class Tally:
    """A phase's figures (added up for the campaign)."""

    runs: Counter[str] = field(default_factory=Counter)
    server_runs: Counter[str] = field(default_factory=Counter)  # per phase, runs that ran to their end
    faults: Counter[str] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)  # ticks and daemon starts by fault mode
    kills: Counter[str] = field(default_factory=Counter)
    backups: Counter[str] = field(default_factory=Counter)  # created / completed / failed / deleted
    rotator_said: Counter[str] = field(default_factory=Counter)  # from rotator's own logs and summaries
    errors: list[str] = field(default_factory=list)  # the campaign's own troubles (a hung or crashed rotator)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, other: Tally) -> None:
        with self._lock:
            for name in ("runs", "server_runs", "faults", "modes", "kills", "backups", "rotator_said"):
                getattr(self, name).update(getattr(other, name))
            self.errors.extend(other.errors)


@dataclass
class Result:
    settings: Settings
    tally: Tally
    reports: dict[str, Report]
    seconds: float
    started: datetime
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(len(report.violations) for report in self.reports.values())

    @property
    def ok(self) -> bool:
        return self.violations == 0 and not self.tally.errors

    def render(self) -> str:
        t = self.tally
        s = self.settings
        lines = [
            f"chaos campaign, seed {s.seed}: {self.started:%Y-%m-%d %H:%M}Z, took {self.seconds:.0f}s",
            f"  days phase:   {t.runs['run-once finished']} run-once runs ran to their end "
            f"({t.runs['run-once started']} started, {t.kills['run-once']} killed with SIGKILL and "
            f"{t.kills['run-once SIGTERM']} stopped with SIGTERM, then started again) over {s.ticks} ticks "
            f"({t.runs['simulated days']} simulated days from {t.runs['days from now']:+d} days), "
            f"{t.server_runs['days']} server-runs ({s.days_servers} servers x 2 policies per tick)",
            f"  daemon phase: {t.runs['daemon started']} daemon starts ({t.kills['daemon']} killed with "
            f"SIGKILL, {t.runs['daemon stopped']} stopped with SIGTERM), {t.runs['daemon runs finished']} "
            f"runs finished, {t.server_runs['daemon']} server-runs (interval {s.interval}s, "
            f"{s.daemon_servers} servers)",
            f"  server-runs:  {sum(t.server_runs.values())}",
            "  faults:       " + ", ".join(f"{t.faults[k]} {FAULT_NAMES[k]}" for k in FAULT_KINDS),
            "  ticks/starts: " + ", ".join(f"{t.modes[k]} {MODE_NAMES[k]}" for k in MODE_KINDS),
            f"  kills:        {t.kills['run-once'] + t.kills['daemon']} SIGKILL ({t.kills['run-once']} "
            f"run-once, {t.kills['daemon']} daemon), {t.kills['run-once SIGTERM']} SIGTERM to run-once",
            f"  backups:      {t.backups['created']} created, {t.backups['completed']} completed, "
            f"{t.backups['failed']} failed, {t.backups['deleted']} deleted "
            f"(+ {t.backups['deleted by a third party']} deleted and {t.backups['created by a third party']} "
            "created by a third party)",
            "  rotator said: " + ", ".join(f"{n} {k}" for k, n in sorted(t.rotator_said.items())),
        ]
        for phase, report in self.reports.items():
            checked = ", ".join(f"{n} {k}" for k, n in sorted(report.checked.items()))
            lines.append(f"  checked ({phase}): {checked}")
        lines.append(f"  violations:   {self.violations}")
        for phase, report in self.reports.items():
            for violation in report.violations:
                lines.append(f"[{phase}] {violation}")
        for error in t.errors:
            lines.append(f"campaign error: {error}")
        return "\n".join(lines)


# -- rotator as a process ---------------------------------------------------------------------


class Rotator:
    """One rotator process; its stderr JSON lines are read (and kept in ``log``) as they come."""

    def __init__(
        self,
        sandbox: RunningSandbox,
        argv: list[str],
        number: int,
        log: Path,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.number = number
        self._on_event = on_event
        self._log = log
        env = clean_env(ROTATOR_API_URL=sandbox.api_url, ROTATOR_API_TOKEN=sandbox.token)
        self.process = subprocess.Popen(
            [*ROTATOR, *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._changed = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []  # stderr lines that are not JSON (a traceback would be here)
        self.stdout = ""
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        with self._log.open("w", encoding="utf-8") as log:
            for line in self.process.stderr:
                log.write(line)
                self._take(line)
        with self._changed:
            self._changed.notify_all()

    def _take(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and self._on_event is not None:
            self._on_event(event)
        with self._changed:
            if isinstance(event, dict):
                self.events.append(event)
            else:
                self.other.append(line.rstrip("\n"))
            self._changed.notify_all()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [event for event in self.events if event.get("event") == name]

    def wait_for(self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """Until ``condition(events)`` holds, the process ends, or ``timeout`` passes; whether it held."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.events):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    return condition(self.events)
                self._changed.wait(min(left, 0.1))
            return True

    def finish(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code

    def reap(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL to this one process, which the campaign started
        self.finish()


class Processes:
    """Numbers the rotator processes of a campaign and notes their lives in a sandbox's log."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._lock = threading.Lock()
        self._count = 0

    def start(self, sandbox: RunningSandbox, argv: list[str], mode: str, **note: Any) -> Rotator:
        with self._lock:
            self._count += 1
            number = self._count
        sandbox.state.note({"what": "started", "process": number, "mode": mode, **note})

        def claims(event: dict[str, Any]) -> None:
            # rotator's word, the moment it says it, for the checker to weigh: that it skipped a
            # catch-up for a newer slot, and that a run ended (after which a catch-up was decided)
            if mode == "daemon" and event.get("event") in (
                "catch_up.started",
                "catch_up.superseded",
                "catch_up.listing_failed",
                "run.finished",
                "backup.create_unknown",
            ):
                if event["event"] == "backup.create_unknown" and event.get("reason") != "never listed":
                    return  # only a server's final word counts
                said = {"what": "said", "process": number, "event": event["event"]}
                said.update(policy=event.get("policy"), slot=event.get("slot"))
                if event.get("server_id") is not None:
                    said["server_id"] = event["server_id"]
                if event.get("reason") is not None:
                    said["reason"] = event["reason"]
                sandbox.state.note({**said, "logged_at": event.get("timestamp")})

        return Rotator(sandbox, argv, number, self.workdir / f"rotator-{number}.log", on_event=claims)


def judge_process(
    tally: Tally, rotator: Rotator, what: str, code: int, *, killed: bool, terminated: bool = False
) -> None:
    """rotator's own troubles, beyond the invariants: a traceback, a crashed run, an unexpected exit."""
    for event in rotator.events:
        name = str(event.get("event", ""))
        if name in (
            "run.crashed",
            "catch_up.started",
            "catch_up.superseded",
            "catch_up.listing_failed",
            "retry.scheduled",
            "backup.retry_waiting",
            "backup.given_up",
            "backup.create_invalid",
            "backup.create_unknown",
        ):
            tally.rotator_said[name] += 1
        if name == "run.crashed":
            tally.errors.append(f"{what} process {rotator.number}: {json.dumps(event)}")
    if any("Traceback" in line for line in rotator.other):
        tally.errors.append(
            f"{what} process {rotator.number} wrote a traceback:\n" + "\n".join(rotator.other[-20:])
        )
    if terminated:
        # 75: the run was cut short (abandoned); 0 or 1: it ended before the signal took hold;
        # -15: the signal came before rotator had its handlers in place (still importing)
        expected = {0, 1, EXIT_ABANDONED, -signal.SIGTERM}
    else:
        expected = {0, 1} if what == "run-once" else {0}
    if not killed and code not in expected:
        tally.errors.append(
            f"{what} process {rotator.number} exited {code}:\n" + "\n".join(rotator.other[-20:])
        )


# -- the sandboxes' starting points ---------------------------------------------------------------


PROTECTED: tuple[tuple[BackupType, str, str], ...] = (
    # (backup_type, status, description): the oldest backups of every server, first in line for a
    # rule that forgot ownership, type or status
    ("automatic", "completed", "Automatic daily backup"),
    ("manual", "failed", "failed long ago [rotator:{policy}@{slot}]"),
    ("manual", "in_progress", "stuck [rotator:{policy}@{slot}]"),
    ("manual", "completed", "made by hand"),
    ("manual", "completed", "another tool's [rotator:other@{slot}]"),
    ("manual", "completed", "a longer name [rotator:{policy}2@{slot}]"),
    ("manual", "completed", "a bad slot [rotator:{policy}@2024-13-01T03:00Z]"),
    ("manual", "completed", "another case [Rotator:{policy}@{slot}]"),
    ("manual", "completed", "not at the end [rotator:{policy}@{slot}] copy"),
)


def _slot_text(slot: datetime) -> str:
    utc = slot.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ" if utc.second else "%Y-%m-%dT%H:%MZ")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_protected(state: SandboxState, server_id: int, policy: str, newest: datetime) -> None:
    for index, (backup_type, status, description) in enumerate(PROTECTED):
        slot = newest - timedelta(hours=index)
        state.add_backup(
            server_id,
            backup_type=backup_type,
            status=status,
            created_at=slot,
            description=description.format(policy=policy, slot=_slot_text(slot)),
        )


def seed_owned(
    state: SandboxState, server_id: int, policy: str, slots: list[datetime], *, spread: int = 80
) -> None:
    """Completed backups of ``policy`` for ``slots``, each made up to ``spread`` seconds after its slot."""
    for index, slot in enumerate(slots):
        state.add_backup(
            server_id,
            created_at=slot + timedelta(seconds=(server_id * 7 + index * 13) % spread),
            description=f"{policy} {slot:%Y-%m-%d} [rotator:{policy}@{_slot_text(slot)}]",
        )


def write_config(path: Path, policies: list[dict[str, Any]], **sections: Any) -> None:
    document = {"policies": policies, "log": {"format": "json", "level": "info"}, **sections}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def events_of(state: SandboxState) -> list[dict[str, Any]]:
    return [event.to_json() for event in state.events()]


# -- the faults of a tick or a daemon start ------------------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    """The sandbox's faults for one tick (or daemon start), and the modes they make it count in."""

    faults: dict[str, Any]
    modes: tuple[str, ...]
    clean: bool = False  # only failing backups: a run has no reason not to use its retries
    page_size: int | None = None  # the sandbox's page size on this tick (None: as it started)

    @property
    def lag(self) -> float:
        return float(self.faults.get("listing_lag", 0.0))


FORCE_KINDS = (
    "storm",
    "clock ahead",
    "clock behind",
    "listing lag",
    "delay",
    "shift",
    "empty",
    "lie",
    "third party",
    "clean",
)


def plan_faults(
    settings: Settings,
    rng: random.Random,
    *,
    delay: tuple[float, float],
    lag: bool,
    force: frozenset[str] = frozenset(),
    back: bool = False,
    small_pages: int | None = None,
) -> FaultPlan:
    """Draw a tick's faults: the always-on ones, and each of the others on its share of the ticks.

    Every draw is made whatever comes of it, so that one choice does not shift the seed's others.
    ``force`` names kinds (:data:`FORCE_KINDS`, and ``slow``) that happen on this tick for sure, at rates high
    enough to be met in a short run. ``lag``: whether listings may lag in this phase; ``back``: the
    clock steps back on this tick (listings do not lag then, since they would show the past).
    ``small_pages``: the page size on a tick with shifted or empty pages (which act on the pages after
    the first), so that a server's own listing has several.
    """
    s = settings
    draws = {kind: rng.random() for kind in (*FORCE_KINDS, "headers", "side")}
    offset_ahead = rng.uniform(60, 6 * 3600)
    offset_behind = rng.uniform(60, 3 * 86400)
    lag_seconds = rng.uniform(1.0, 3.0)
    delay_seconds = rng.uniform(*delay)
    faults: dict[str, Any] = {
        "error_rate": s.error_rate,
        "drop_rate": s.drop_rate,
        "fail_rate": s.fail_rate,
        "slow_rate": s.slow_rate,
        "rate_limit": None,
        "burst": None,
        "rate_limit_headers": True,
        "api_clock_offset": 0.0,
        "listing_lag": 0.0,
        "create_answer_delay": 0.0,
        "page_shift_rate": 0.0,
        "empty_page_rate": 0.0,
        "lie_known_id_rate": 0.0,
        "lie_other_server_rate": 0.0,
        "third_party_delete_rate": 0.0,
        "auth_echo": True,
    }
    clean = lag and not back and ("clean" in force or (not force and draws["clean"] < s.clean_share))
    if clean:
        faults.update(error_rate=0.0, drop_rate=0.0, slow_rate=0.0, fail_rate=s.clean_fail_rate)
        return FaultPlan(faults, ("clean",), clean=True)
    modes: list[str] = []

    def on(kind: str, share: float) -> bool:
        return kind in force or draws[kind] < share

    if on("storm", s.storm_rate):
        limit = s.storm_limit
        headers = "storm" not in force and draws["headers"] < 0.5
        faults.update(rate_limit=limit, burst=max(1, round(limit / 3)), rate_limit_headers=headers)
        modes.append("storm")
    ahead = "clock ahead" in force or ("clock behind" not in force and draws["side"] < 0.5)
    if "clock ahead" in force or "clock behind" in force or draws["clock ahead"] < s.offset_share:
        faults["api_clock_offset"] = offset_ahead if ahead else -offset_behind
        modes.append("clock ahead" if ahead else "clock behind")
    if lag and not back and on("listing lag", s.lag_share):
        faults["listing_lag"] = lag_seconds
        modes.append("listing lag")
    if on("delay", s.delay_share):
        faults["create_answer_delay"] = delay_seconds
    strong = bool(force)  # a short run meets a fault only if it is frequent
    if "slow" in force:  # a base rate, not drawn per tick: forced without a draw, so seeds stay as they were
        faults["slow_rate"] = max(s.slow_rate, 0.5)
    if on("shift", s.shift_share):
        faults["page_shift_rate"] = 0.2 if strong else s.page_shift_rate
    if on("empty", s.empty_share):
        faults["empty_page_rate"] = 0.2 if strong else s.empty_page_rate
    if on("lie", s.lie_share):
        rate = 0.5 if strong else s.lie_rate
        faults.update(lie_known_id_rate=rate, lie_other_server_rate=rate)
    if on("third party", s.third_party_share):
        faults["third_party_delete_rate"] = 0.02 if strong else s.third_party_rate
    if back:
        modes.append("clock stepped back")
    paged = faults["page_shift_rate"] > 0 or faults["empty_page_rate"] > 0
    return FaultPlan(faults, tuple(modes), page_size=small_pages if paged else None)


def apply_plan(sandbox: RunningSandbox, plan: FaultPlan, tally: Tally, **note: Any) -> None:
    """Put the plan's faults (and page size) in force and note them in the log (and the tally)."""
    sandbox.sandbox.update_faults(**plan.faults)
    inner = sandbox.sandbox
    # the page size is an option the sandbox started with, read at every listing: between ticks (no
    # process running) it may change like the faults do
    inner.options = replace(inner.options, page_size=plan.page_size or inner.options.page_size)
    page_size = inner.options.page_size
    sandbox.state.note(
        {"what": "faults", **note, "modes": list(plan.modes), "page_size": page_size, **plan.faults}
    )
    tally.modes.update(plan.modes)


def finish_phase(tally: Tally, sandbox: RunningSandbox) -> list[dict[str, Any]]:
    for kind, count in sandbox.sandbox.injected().items():
        tally.faults[kind] += count
    events = events_of(sandbox.state)
    for event in events:
        if event["kind"] in ("created", "completed", "failed", "deleted"):
            by = " by a third party" if event.get("by") else ""
            tally.backups[event["kind"] + by] += 1
    return events


def _run_started(events: list[dict[str, Any]]) -> bool:
    return any(event.get("event") == "run.started" for event in events)


# -- the days phase ----------------------------------------------------------------------------


class Days:
    """run-once, lane by lane and policy by policy, tick by tick, on a sandbox clock set before each tick."""

    WAIT_TIMEOUT = 6.0  # longer than the quiet period, which is longer than any listing lag
    CLEAN_WAIT_TIMEOUT = 20.0  # on clean ticks: no wait ends before the backup's outcome is seen
    API_CONFIG: ClassVar[dict[str, Any]] = {
        **API,
        "timeout": "2s",  # create answers are held 3-4 s on a share of the ticks
        "create_quiet_period": "4s",  # listings lag 1-3 s on a share of the ticks
        "max_view_age": "5s",
    }
    # the short run's ticks, each sure to carry these kinds
    FORCED: ClassVar[tuple[frozenset[str], ...]] = (
        frozenset({"storm", "clock ahead", "delay", "shift", "empty", "lie", "third party", "slow"}),
        frozenset({"listing lag", "clock behind", "shift", "lie", "third party", "slow"}),
        frozenset({"clean"}),
        frozenset({"back"}),
    )

    def __init__(self, settings: Settings, processes: Processes, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.processes = processes
        self.say = say
        self.rng = random.Random(f"{settings.seed}:days")
        self.tally = Tally()
        self.forced_stops = ["KILL", "TERM"] if settings.force_each else []

    def policies(self, servers: list[int], *, wait: float) -> list[dict[str, Any]]:
        wait_timeout = f"{wait:g}s"
        common = {"wait_timeout": wait_timeout, "retries": 2, "retry_delay": "0.5s"}
        return [
            {
                "name": "nightly",
                "servers": servers,
                "timezone": "Europe/Berlin",
                "schedule": {"cron": "0 3 * * *"},
                "retention": {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 3, "min_keep": 3},
                "max_deletes_per_run": 4,
                **common,
            },
            {
                "name": "twice",
                "servers": servers,
                "schedule": {"cron": "0 1,13 * * *"},
                "retention": {"keep_last": 6, "keep_days": 4, "min_keep": 2},
                **common,
            },
        ]

    def run(self) -> tuple[Report, list[dict[str, Any]]]:
        s = self.settings
        lanes = [
            list(range(1 + lane * s.lane_servers, 1 + (lane + 1) * s.lane_servers)) for lane in range(s.lanes)
        ]
        names = [policy["name"] for policy in self.policies([1], wait=1)]
        configs: dict[tuple[int, bool], Path] = {}
        for index, servers in enumerate(lanes):
            for clean in (False, True):
                config = self.processes.workdir / f"days-lane-{index + 1}{'-clean' if clean else ''}.yaml"
                wait = self.CLEAN_WAIT_TIMEOUT if clean else self.WAIT_TIMEOUT
                write_config(
                    config,
                    self.policies(servers, wait=wait),
                    api=self.API_CONFIG,
                    daemon={"poll_interval": "0.2s", "poll_max_interval": "0.5s"},
                )
                configs[(index, clean)] = config
        # Simulated days in the past or the future of real time (rotator's clock is its --now, the
        # API's the sandbox's): nothing of rotator may depend on the two agreeing with the host's.
        from_now = self.rng.randint(-400, 400)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today + timedelta(days=from_now)
        self.tally.runs["days from now"] = from_now
        clock = Clock()
        clock.set(start)
        options = SandboxOptions(
            fleet="empty",
            servers=s.days_servers,
            page_size=s.days_page_size,
            seed=s.seed,
            create_seconds=0.3,
            faults=FaultOptions(slow_seconds=self.WAIT_TIMEOUT + 4),
            log_listings=True,
        )
        with running_sandbox(options, clock=clock) as sandbox:
            state = sandbox.state
            days = [start.date() - timedelta(days=k) for k in range(1, 26)]
            nightly = [datetime.combine(day, time_of_day(3, 0), BERLIN) for day in days]
            twice = [start - timedelta(hours=11 + 12 * k) for k in range(8)]  # 13:00 and 01:00 UTC
            for sid in range(1, s.days_servers + 1):
                seed_protected(state, sid, "nightly", start - timedelta(days=40))
                seed_owned(state, sid, "nightly", nightly)
                seed_owned(state, sid, "twice", twice)
            state.snapshot(phase="days")
            moment = start
            with ThreadPoolExecutor(max_workers=2 * s.lanes, thread_name_prefix="lane") as pool:
                for tick in range(s.ticks):
                    forced = self.FORCED[tick] if s.force_each and tick < len(self.FORCED) else frozenset()
                    roll = self.rng.random()
                    back = tick > 0 and "clean" not in forced and ("back" in forced or roll < s.back_share)
                    moment = self._next_moment(moment, back=back)
                    plan = plan_faults(
                        s,
                        self.rng,
                        delay=(3.0, 4.0),
                        lag=True,
                        force=forced,
                        back=back,
                        small_pages=min(20, s.days_page_size),
                    )
                    if plan.page_size is None:
                        plan = replace(plan, page_size=s.days_page_size)
                    clock.set(moment)
                    state.note({"what": "clock", "now": _iso(moment), "tick": tick})
                    apply_plan(sandbox, plan, self.tally, tick=tick)
                    jobs = [(lane, name) for lane in range(s.lanes) for name in names]
                    stops = {job: self._stops() for job in jobs}
                    began = time.monotonic()

                    def one(
                        job: tuple[int, str],
                        plan: FaultPlan = plan,
                        tick: int = tick,
                        stops: dict[tuple[int, str], list[tuple[float, str]]] = stops,
                    ) -> int:
                        lane, name = job
                        config = configs[(lane, plan.clean)]
                        return self._lane(sandbox, config, name, lanes[lane], tick, stops[job], plan)

                    if plan.clean:  # one policy after the other: the other's deletes do not unsettle a view
                        groups = [[(lane, name) for name in names] for lane in range(s.lanes)]
                        per_lane = pool.map(lambda group: [one(job) for job in group], groups)
                        results = [code for codes in per_lane for code in codes]
                    else:
                        results = list(pool.map(one, jobs))
                    codes = ", ".join(str(code) for code in results)
                    modes = ", ".join(plan.modes) or "-"
                    self.say(
                        f"  days: tick {tick + 1}/{s.ticks} at {_iso(moment)} ({modes}): exits {codes} "
                        f"({time.monotonic() - began:.1f}s)"
                    )
            self.tally.runs["simulated days"] = math.ceil(abs((moment - start).total_seconds()) / 86400)
            events = finish_phase(self.tally, sandbox)
        merged = self.policies(list(range(1, s.days_servers + 1)), wait=self.WAIT_TIMEOUT)
        # a run lasts seconds (PROCESS_DEADLINE at most); a tick that lands just before a slot may see
        # its deletes come after that slot's time: ten minutes of grace, against slots 12 h apart
        specs = [PolicySpec.from_config(policy, api=self.API_CONFIG, run_window=600.0) for policy in merged]
        return check(events, specs, view_tolerance=s.view_tolerance), events

    def _next_moment(self, moment: datetime, *, back: bool) -> datetime:
        roll = self.rng.random()
        hours = self.rng.uniform(1, 6)
        if back:
            return moment - timedelta(hours=hours)  # a host clock set right, or a VM restored
        if roll < 0.08:
            step = timedelta(minutes=self.rng.uniform(5, 40))  # again soon: the same slots, adopted
        elif roll < 0.18:
            step = timedelta(hours=self.rng.uniform(20, 40))  # runs missed
        else:
            step = timedelta(hours=12, minutes=self.rng.uniform(-50, 50))
        return moment + step

    def _stops(self) -> list[tuple[float, str]]:
        """When and how to stop this job's attempts (seconds after each start, KILL or TERM), decided up
        front from the seed."""
        stops: list[tuple[float, str]] = []
        while len(stops) < 3:
            roll, when, how = self.rng.random(), self.rng.uniform(0.05, 3.5), self.rng.random()
            if self.forced_stops:
                # a forced stop must not miss the run (nor a SIGTERM its signal handlers)
                kind = self.forced_stops.pop(0)
                stops.append((self.rng.uniform(0.1, 0.5) if kind == "TERM" else min(when, 1.5), kind))
                continue
            if roll >= self.settings.kill_rate:
                break
            term = how < self.settings.term_share
            stops.append((when / 3 if term else when, "TERM" if term else "KILL"))  # TERM: after run.started
        return stops

    def _lane(
        self,
        sandbox: RunningSandbox,
        config: Path,
        policy: str,
        servers: list[int],
        tick: int,
        stops: list[tuple[float, str]],
        plan: FaultPlan,
    ) -> int:
        tally = Tally()
        try:
            attempts = iter(stops)
            while True:
                now = sandbox.clock.now().replace(microsecond=0)
                argv = ["run-once", "--config", str(config), "--policy", policy, "--now", _iso(now)]
                note = {"now": _iso(now), "tick": tick, "policies": [policy], "servers": servers}
                rotator = self.processes.start(sandbox, argv, "run-once", **note, retries_judged=plan.clean)
                tally.runs["run-once started"] += 1
                stop = next(attempts, None)
                how: str | None = None
                if stop is not None and stop[1] == "TERM":
                    # a SIGTERM before rotator has its handlers in place (it is still importing) is no
                    # test of a shutdown: wait for its run to start, then stop it at a random moment
                    rotator.wait_for(_run_started, timeout=PROCESS_DEADLINE)
                try:
                    rotator.process.wait(stop[0] if stop is not None else PROCESS_DEADLINE)
                except subprocess.TimeoutExpired:
                    how = stop[1] if stop is not None else "hung"
                    if how == "TERM":
                        rotator.process.terminate()  # SIGTERM, the process this lane started
                        try:
                            rotator.process.wait(TERM_DEADLINE)
                        except subprocess.TimeoutExpired:
                            tally.errors.append(
                                f"run-once {rotator.number} ignored SIGTERM for {TERM_DEADLINE}s"
                            )
                            rotator.process.kill()
                    else:
                        rotator.process.kill()  # SIGKILL, the process this lane started
                code = rotator.finish()
                if how == "hung":
                    sandbox.state.note({"what": "killed", "process": rotator.number})
                    judge_process(tally, rotator, "run-once", code, killed=True)
                    tally.errors.append(f"run-once {rotator.number} hung: killed after {PROCESS_DEADLINE}s")
                    return code
                if how is not None:
                    if how == "TERM":
                        sandbox.state.note({"what": "stopped", "process": rotator.number, "code": code})
                        tally.kills["run-once SIGTERM"] += 1
                        tally.rotator_said[f"run-once exit {code} after SIGTERM"] += 1
                    else:
                        sandbox.state.note({"what": "killed", "process": rotator.number})
                        tally.kills["run-once"] += 1
                    judge_process(tally, rotator, "run-once", code, killed=how == "KILL", terminated=True)
                    if plan.lag:
                        # a restart sooner would list before the stopped run's create shows: it cannot
                        # know of it (see CHAOS.md), as no process can
                        time.sleep(plan.lag + 0.5)
                    continue
                judge_process(tally, rotator, "run-once", code, killed=False)
                sandbox.state.note({"what": "exited", "process": rotator.number, "code": code})
                tally.runs["run-once finished"] += 1
                for line in rotator.stdout.splitlines():
                    match = SUMMARY.match(line)
                    if match is not None:
                        tally.server_runs["days"] += int(match["servers"])
                        tally.rotator_said[
                            "policy runs ok" if match["state"] == "ok" else f"policy runs {match['state']}"
                        ] += 1
                return code
        finally:
            self.tally.add(tally)


# -- the daemon phase --------------------------------------------------------------------------


class DaemonPhase:
    """``rotator run`` in real time: killed, kept down across slots, started again; stopped at the end."""

    WAIT_TIMEOUT = 3.0  # longer than the quiet period, and than a create answer held past api.timeout
    API_CONFIG: ClassVar[dict[str, Any]] = {
        **API,
        "timeout": "1.5s",  # create answers are held 2-2.5 s on a share of the starts
        "create_quiet_period": "2.5s",
        "max_view_age": "4s",
    }
    # the short run's starts, each sure to carry these kinds
    FORCED: ClassVar[tuple[frozenset[str], ...]] = (
        frozenset({"storm", "clock behind", "delay", "shift", "empty", "lie", "third party", "slow"}),
        frozenset({"clock ahead", "lie", "third party", "slow"}),
    )

    def __init__(self, settings: Settings, processes: Processes, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.processes = processes
        self.say = say
        self.rng = random.Random(f"{settings.seed}:daemon")
        self.tally = Tally()

    def run(self) -> tuple[Report, list[dict[str, Any]]]:
        s = self.settings
        servers = list(range(1, s.daemon_servers + 1))
        policy: dict[str, Any] = {
            "name": "pulse",
            "servers": servers,
            "schedule": {"interval": f"{s.interval}s"},
            "retention": {"keep_last": 4, "min_keep": 2},
            "wait_timeout": f"{self.WAIT_TIMEOUT:g}s",
            "max_deletes_per_run": 10,
            "catch_up": True,
            "retries": 2,
            "retry_delay": "1s",  # the daemon schedules the retry run
        }
        config = self.processes.workdir / "daemon.yaml"
        write_config(
            config,
            [policy],
            api=self.API_CONFIG,
            daemon={"poll_interval": "0.2s", "poll_max_interval": "0.5s", "shutdown_grace": "15s"},
        )
        options = SandboxOptions(
            fleet="empty",
            servers=s.daemon_servers,
            page_size=20,  # a server's listing in one page, the account's in several (shifted, empty)
            seed=s.seed + 1,
            create_seconds=0.3,
            faults=FaultOptions(slow_seconds=self.WAIT_TIMEOUT + 3),
            log_listings=True,
        )
        with running_sandbox(options) as sandbox:  # its clock is real time, as the daemon's is
            state = sandbox.state
            latest = self._slot_before(time.time())
            owned = [datetime.fromtimestamp(latest - s.interval * k, UTC) for k in range(8, 14)]
            for sid in servers:
                seed_protected(state, sid, "pulse", datetime.fromtimestamp(latest - 3600, UTC))
                seed_owned(state, sid, "pulse", owned, spread=2)
            state.snapshot(phase="daemon")
            argv = ["run", "--config", str(config)]
            for cycle in range(s.daemon_cycles):
                self._session(sandbox, argv, cycle)
                self._down(last=cycle == s.daemon_cycles - 1)
            # The last start runs until a scheduled slot's run ended, then gets SIGTERM. The short
            # campaign wants its catch-up judged: a start that got ready too near a slot boundary
            # (a slow start on a busy machine) cannot be, so it goes down and starts again.
            for again in range(3):
                clear = self._session(sandbox, argv, s.daemon_cycles + again, last=True)
                if clear or not s.force_each:
                    break
                self._down(last=True)
            events = finish_phase(self.tally, sandbox)
        # A run's deletes come after its listing, creates and wait (at most wait_timeout); the rest
        # is the API's answers under faults (retries with backoff, 429 pauses): a minute is ample.
        spec = PolicySpec.from_config(policy, api=self.API_CONFIG, run_window=60.0)
        verdict = check(events, [spec], view_tolerance=s.view_tolerance, decision_grace=s.decision_grace)
        return verdict, events

    def _slot_before(self, moment: float) -> float:
        interval = self.settings.interval
        return ANCHOR + interval * math.floor((moment - ANCHOR) / interval)

    def _phase(self) -> float:
        """How far into its slot period the present is, as a fraction of the interval."""
        interval = self.settings.interval
        return ((time.time() - ANCHOR) % interval) / interval

    def _sleep_into_window(self, boundaries: int) -> None:
        """Sleep past ``boundaries`` slot boundaries (0: the current period) into the start window."""
        interval = self.settings.interval
        target = self._slot_before(time.time()) + interval * (boundaries + self.rng.uniform(*START_WINDOW))
        time.sleep(max(0.0, target - time.time()))

    def _down(self, *, last: bool) -> None:
        """Stay down across 0, 1 or 2 slots, then until a start window well clear of a boundary."""
        roll = self.rng.random()
        crossings = 0 if roll < 0.3 else 1 if roll < 0.8 else 2
        if last and self.settings.force_each:
            crossings = 1  # the last start must find a slot missed while down
        time.sleep(self.rng.uniform(0.1, 0.5))
        if crossings == 0 and self._phase() < START_WINDOW[1]:
            return  # started again within the same slot period: nothing missed
        self._sleep_into_window(max(crossings, 1))

    def _session(self, sandbox: RunningSandbox, argv: list[str], cycle: int, *, last: bool = False) -> bool:
        """One start of the daemon; whether it got ready well clear of a slot boundary."""
        s = self.settings
        clear = False
        if self._phase() > START_WINDOW[1]:  # the first start, or a restart that came late
            self._sleep_into_window(1)
        forced = self.FORCED[cycle] if s.force_each and cycle < len(self.FORCED) else frozenset()
        # No listing lag here: a restart would read a lagging listing that hides what the process before
        # it did in its last seconds (and the catch-up judges the state the restart finds). See CHAOS.md.
        plan = plan_faults(s, self.rng, delay=(2.0, 2.5), lag=False, force=forced)
        apply_plan(sandbox, plan, self.tally, start=cycle + 1)
        started = time.monotonic()
        rotator = self.processes.start(sandbox, argv, "daemon", policies=["pulse"])
        self.tally.runs["daemon started"] += 1
        up = None if last else self.rng.uniform(0.3, s.max_up * s.interval)

        def ready(events: list[dict[str, Any]]) -> bool:
            return any(event.get("event") == "daemon.started" for event in events)

        try:
            if rotator.wait_for(ready, timeout=up if up is not None else 30.0):
                (started_event,) = rotator.named("daemon.started")
                note = {"what": "ready", "process": rotator.number, "mode": "daemon", "policies": ["pulse"]}
                sandbox.state.note({**note, "logged_at": started_event.get("timestamp")})
                logged = datetime.fromisoformat(str(started_event["timestamp"]).replace("Z", "+00:00"))
                into = ((logged.timestamp() - ANCHOR) % s.interval) / s.interval
                clear = 0.1 < into < 0.8
            elif rotator.process.poll() is not None or up is None:
                self.tally.errors.append(f"daemon process {rotator.number} never logged daemon.started")
            if up is not None:
                time.sleep(max(0.0, started + up - time.monotonic()))
                rotator.process.kill()  # SIGKILL, the process this phase started
                code = rotator.finish()
                sandbox.state.note({"what": "killed", "process": rotator.number})
                self.tally.kills["daemon"] += 1
                judge_process(self.tally, rotator, "daemon", code, killed=True)
                self.say(f"  daemon: start {cycle + 1}, killed after {up:.1f}s")
            else:
                self._stop(sandbox, rotator)
        finally:
            rotator.reap()
            finished = rotator.named("run.finished")
            self.tally.runs["daemon runs finished"] += len(finished)
            self.tally.server_runs["daemon"] += sum(int(event.get("servers", 0)) for event in finished)
        return clear

    def _stop(self, sandbox: RunningSandbox, rotator: Rotator) -> None:
        """Up past the next slot and through its run, then SIGTERM: a clean stop exits 0."""
        next_slot = self._slot_before(time.time()) + self.settings.interval

        def ran_next_slot(events: list[dict[str, Any]]) -> bool:
            return any(
                event.get("event") == "run.finished"
                and datetime.fromisoformat(str(event.get("slot")).replace("Z", "+00:00")).timestamp()
                >= next_slot
                for event in events
            )

        if not rotator.wait_for(ran_next_slot, timeout=20 * self.settings.interval):
            self.tally.errors.append("the last daemon start ran no scheduled slot in time")
        rotator.process.terminate()  # SIGTERM
        code = rotator.finish()
        sandbox.state.note({"what": "stopped", "process": rotator.number, "code": code})
        self.tally.runs["daemon stopped"] += 1
        judge_process(self.tally, rotator, "daemon", code, killed=False)
        self.say(f"  daemon: last start stopped with SIGTERM, exit {code}")


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="rotator-chaos-") as name:
        yield Path(name)


def run_campaign(
    settings: Settings, *, workdir: Path | None = None, say: Callable[[str], None] = lambda _: None
) -> Result:
    """Run both phases (side by side) and check them; a violation is in the result, never raised."""
    began = time.monotonic()
    started = datetime.now(UTC)
    say(f"chaos campaign, seed {settings.seed}")
    with _workdir(workdir) as where:
        processes = Processes(where)
        days = Days(settings, processes, say)
        daemon = DaemonPhase(settings, processes, say)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="phase") as pool:
            days_run = pool.submit(days.run)
            daemon_run = pool.submit(daemon.run)
            days_report, days_events = days_run.result()
            daemon_report, daemon_events = daemon_run.result()
    tally = Tally()
    tally.add(days.tally)
    tally.add(daemon.tally)
    return Result(
        settings=settings,
        tally=tally,
        reports={"days": days_report, "daemon": daemon_report},
        seconds=time.monotonic() - began,
        started=started,
        events={"days": days_events, "daemon": daemon_events},
    )


__all__ = ["Result", "Settings", "Tally", "run_campaign"]
