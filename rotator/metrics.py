"""Prometheus metrics, fed from one place: runs' events (:meth:`Metrics.observe`), API exchanges,
and the API's listing at start.

Each :class:`Metrics` owns its :class:`~prometheus_client.CollectorRegistry`
(never the global one), so every test and every daemon has its own counts.

Counters (``dry_run`` is ``"true"`` for a dry run, which never creates or deletes):

=================================================  =========  ==============================
metric                                             type       labels
=================================================  =========  ==============================
``rotator_runs_total``                             counter    policy, outcome (ok, failed,
                                                              abandoned), dry_run
``rotator_run_duration_seconds``                   histogram  policy, dry_run
``rotator_backups_created_total``                  counter    policy
``rotator_backups_adopted_total``                  counter    policy
``rotator_backups_deleted_total``                  counter    policy
``rotator_backups_failed_total``                   counter    policy (servers failed or unknown)
``rotator_backups_blocked_total``                  counter    policy, rail, dry_run
``rotator_api_requests_total``                     counter    method, route, status
``rotator_api_request_duration_seconds``           histogram  method, route
``rotator_api_retries_total``                      counter    method
``rotator_api_rate_limited_total``                 counter    (none)
=================================================  =========  ==============================

Gauges of the fleet's state, one series per policy however many servers it has:

=================================================  ==============================================
``rotator_servers``                                servers in the policy
``rotator_servers_overdue``                        servers whose newest completed backup is older
                                                   than the policy's ``max_age`` (or that have
                                                   none); scheduled policies that create only
``rotator_servers_failing``                        servers whose latest run (or, at start, latest
                                                   attempt in the API) failed
``rotator_oldest_last_success_timestamp_seconds``  the oldest of the servers' last successes
                                                   (Unix time; 0 while a server has none)
``rotator_policy_max_age_seconds``                 how old a server's newest completed backup may
                                                   get: the schedule's longest gap plus a grace
``rotator_deletes_held_back``                      deletes a safety rail held back in each
                                                   server's latest real run, by ``rail``
``rotator_api_authenticated``                      1 if the API accepted the token at its last
                                                   answer, 0 after a 401/403; absent before one
``rotator_last_success_timestamp_seconds``         per ``server_id``: only with
                                                   ``metrics.per_server: true``
=================================================  ==============================================

**Restart-safe.** The counters of every policy, outcome and rail start at 0, so ``increase()``
sees the first failure after a start; the last successes, and which servers are failing, are
read from the API when the daemon starts (:meth:`Metrics.seed`: each server's newest completed
backup of the policy, judged by its marker), so the alerts of ``deploy/prometheus`` keep firing
across a restart. Until that reading (or a real run), a policy's overdue, failing and oldest
gauges are absent: nothing is claimed that was not read. A dry run never moves the last
successes, the failing servers or the held-back deletes: it made no backup and deleted nothing.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    push_to_gateway,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from rotator.events import Event, Outcome, RunFinished
from rotator.markers import parse_marker
from rotator.models import COMPLETED, MANUAL, Backup
from rotator.models import FAILED as BACKUP_FAILED

if TYPE_CHECKING:  # only the type: api.py may import this module without a cycle through runner.py
    from rotator.runner import RunReport

# the outcome labels are the events' own values (rotator.events.Outcome), not copies of them
OK: Final = Outcome.OK.value
FAILED: Final = Outcome.FAILED.value
ABANDONED: Final = Outcome.ABANDONED.value
UNKNOWN: Final = Outcome.UNKNOWN.value
RUN_OUTCOMES: Final = (OK, FAILED, ABANDONED)

# planner.Rail's values, so that every rail's counter starts at 0 (a test keeps the two equal)
RAILS: Final = (
    "dry_run",
    "max_deletes_per_run",
    "not_candidate",
    "partial_listing",
    "backup_not_completed",
    "new_backup",
)

CONTENT_TYPE: Final[str] = _CONTENT_TYPE
"""The Content-Type of :meth:`Metrics.render`'s output (Prometheus' text format)."""

_NUMERIC_SEGMENT = re.compile(r"/\d+(?=/|$)")


def route_of(path: str) -> str:
    """A request path as a low-cardinality route: numeric segments become ``{id}``, the query goes.

    ``/api/v1/backups/123/?x=1`` -> ``/api/v1/backups/{id}/``.
    """
    return _NUMERIC_SEGMENT.sub("/{id}", path.split("?", 1)[0])


def run_outcome(report: RunReport | RunFinished) -> str:
    """The run's outcome as one label: ``failed`` (a server failed or its create's outcome is
    unknown), else ``abandoned`` (a shutdown cut it short) or ``ok``."""
    status = str(report.status)
    return FAILED if status in (FAILED, UNKNOWN) else status


def _flag(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True, slots=True)
class PolicyWatch:
    """What the metrics know of a policy beside its runs (built by :func:`rotator.telemetry.policy_watch`)."""

    name: str
    servers: tuple[int, ...]
    max_age: float | None = None
    """Seconds a server's newest completed backup may be old; ``None``: not watched for age (a
    policy that only prunes, or has no schedule)."""
    dry_run: bool = False
    """Its runs are dry runs (the policy's setting or ``--dry-run``): the label its counters start at."""


@dataclass(slots=True)
class _PolicyState:
    """A policy's servers' state; every table holds configured servers only (the watch's)."""

    watch: PolicyWatch
    configured: frozenset[int] = frozenset()
    last_success: dict[int, float] = field(default_factory=dict)
    failing: set[int] = field(default_factory=set)
    observed: set[int] = field(default_factory=set)  # servers a run reported on: a seed may not undo it
    held_back: dict[int, Tally[str]] = field(default_factory=dict)
    adhoc: bool = False  # not watched: a run told of it first, and its servers are those it ran on
    known: bool = False  # the API's listing (or a real run) told its servers' state: until then, no claim


def newest_success(backups: Iterable[Backup], policy: str) -> float | None:
    """When the newest completed backup that ``policy`` owns was made, as Unix time: its marker's slot
    (on rotator's clock, as the schedule is), else the API's ``created_at``; ``None`` if there is none."""
    newest: float | None = None
    for backup in backups:
        if backup.status != COMPLETED or backup.backup_type != MANUAL:
            continue
        marker = parse_marker(backup.description)
        if marker is None or marker.policy != policy:
            continue
        when = (marker.slot or backup.created_at).timestamp()
        newest = when if newest is None else max(newest, when)
    return newest


def latest_attempt_failed(backups: Iterable[Backup], policy: str) -> bool:
    """Whether the newest attempt that ``policy`` owns (by slot, then attempt) is a failed backup."""
    latest: tuple[datetime, int, str] | None = None
    for backup in backups:
        marker = parse_marker(backup.description)
        if marker is None or marker.policy != policy or backup.backup_type != MANUAL:
            continue
        key = (marker.slot or backup.created_at, marker.attempt, backup.status)
        if latest is None or key[:2] > latest[:2]:
            latest = key
    return latest is not None and latest[2] == BACKUP_FAILED


class Metrics:
    """rotator's metrics in a registry of their own; ``render()`` for ``/metrics`` and the textfile.

    ``per_server`` adds ``rotator_last_success_timestamp_seconds{policy,server_id}``: one series
    per server, for small fleets (100,000 servers render about 9 MB instead of 9 kB).
    The state behind the gauges is read under a lock, so :meth:`render` may run in a thread while
    the event loop records runs.
    """

    def __init__(
        self,
        *,
        wall_clock: Callable[[], float] = time.time,
        per_server: bool = False,
        policies: Sequence[PolicyWatch] = (),
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the _created gauges double the series and no alert reads them
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_server = per_server
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._policies: dict[str, _PolicyState] = {}
        self._authenticated: Callable[[], bool | None] = lambda: None
        r = self.registry
        self.runs = Counter(
            "rotator_runs", "Runs of a policy, by outcome.", ["policy", "outcome", "dry_run"], registry=r
        )
        self.run_duration = Histogram(
            "rotator_run_duration_seconds",
            "How long a run of a policy took, waits included.",
            ["policy", "dry_run"],
            buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400),
            registry=r,
        )
        self.created = Counter("rotator_backups_created", "Manual backups created.", ["policy"], registry=r)
        self.adopted = Counter(
            "rotator_backups_adopted",
            "Backups of a run's slot found already made (by a crashed run or another instance) and adopted.",
            ["policy"],
            registry=r,
        )
        self.deleted = Counter(
            "rotator_backups_deleted", "Backups deleted by pruning.", ["policy"], registry=r
        )
        self.failed = Counter(
            "rotator_backups_failed",
            "Servers whose run failed (backup failed, timed out, an API error) or whose create's outcome "
            "stayed unknown; dry and abandoned runs are not counted.",
            ["policy"],
            registry=r,
        )
        self.blocked = Counter(
            "rotator_backups_blocked",
            "Deletes the retention plan asked for and a safety rail refused, by rail.",
            ["policy", "rail", "dry_run"],
            registry=r,
        )
        self.requests = Counter(
            "rotator_api_requests",
            "Requests to the provider's API, by route and status (or transport_error).",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "rotator_api_request_duration_seconds",
            "Duration of requests to the provider's API.",
            ["method", "route"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.retries = Counter("rotator_api_retries", "Requests retried, by method.", ["method"], registry=r)
        self.rate_limited = Counter(
            "rotator_api_rate_limited", "Answers 429 Too Many Requests from the API.", registry=r
        )
        self.leader = Gauge(
            "rotator_leader",
            "1 while this instance may act (the leader, or the only instance), 0 while it stands by.",
            registry=r,
        )
        self.coordination_reachable = Gauge(
            "rotator_coordination_reachable",
            "1 while the coordination backend (etcd) answers, 0 while it cannot be reached.",
            registry=r,
        )
        self._leading: bool | None = None
        self.leader_changes = Counter(
            "rotator_leader_changes", "Times this instance became or stopped being the leader.", registry=r
        )
        r.register(_StateCollector(self))
        self.watch(policies)

    # -- what the metrics watch ------------------------------------------------

    def watch(self, policies: Iterable[PolicyWatch]) -> None:
        """Track these policies (at start and after a reload): their gauges, and counters at 0.

        A policy no longer configured stops being reported; one kept keeps its state.
        """
        policies = list(policies)
        with self._lock:
            states = {}
            for policy in policies:
                state = self._policies.get(policy.name) or _PolicyState(policy)
                state.watch, state.adhoc = policy, False
                state.configured = keep = frozenset(policy.servers)
                # servers that left the policy leave its gauges
                for table in (state.last_success, state.held_back):
                    for sid in [s for s in table if s not in keep]:
                        del table[sid]
                state.failing &= keep
                state.observed &= keep
                states[policy.name] = state
            self._policies = states
        for policy in policies:
            self._zero(policy.name, policy.dry_run)

    def _zero(self, policy: str, dry_run: bool) -> None:
        """Every counter of ``policy`` present at 0, so ``increase()`` sees the first event after a start."""
        dry = _flag(dry_run)
        for outcome in RUN_OUTCOMES:
            self.runs.labels(policy, outcome, dry)
        self.run_duration.labels(policy, dry)
        for counter in (self.created, self.adopted, self.deleted, self.failed):
            counter.labels(policy)
        for rail in RAILS:
            self.blocked.labels(policy, rail, dry)

    def seed(self, policy: str, backups_by_server: Mapping[int, Sequence[Backup]]) -> None:
        """What the API says of ``policy``'s servers, read when the daemon starts (or after run-once):
        each one's last success (its newest completed owned backup) and whether its newest attempt
        failed. A run's own report, when already recorded, wins over this reading."""
        with self._lock:
            state = self._policies.get(policy)
            if state is None:
                return
            state.known = True
            for sid, backups in backups_by_server.items():
                if sid not in state.configured:
                    continue
                newest = newest_success(backups, policy)
                if newest is not None:
                    state.last_success[sid] = max(newest, state.last_success.get(sid, newest))
                if sid not in state.observed:
                    if latest_attempt_failed(backups, policy):
                        state.failing.add(sid)
                    else:
                        state.failing.discard(sid)

    # -- what happened ---------------------------------------------------------

    def observe(self, event: Event) -> None:
        """The metrics as an observer of runs' events (:mod:`rotator.events`): each finished run counted."""
        if isinstance(event, RunFinished):
            self.observe_run(event)

    def observe_run(self, report: RunReport | RunFinished) -> None:
        """Count one finished run of a policy and update its servers' state (real runs only)."""
        policy = report.policy
        dry = _flag(report.dry_run)
        totals = report.totals()
        self.runs.labels(policy, run_outcome(report), dry).inc()
        self.run_duration.labels(policy, dry).observe(report.duration)
        for result in report.servers:
            for blocked in result.blocked:
                self.blocked.labels(policy, str(blocked.rail), dry).inc()
        if report.dry_run:
            return
        self.created.labels(policy).inc(totals["created"])
        self.adopted.labels(policy).inc(totals["adopted"])
        self.deleted.labels(policy).inc(totals["deleted"])
        self.failed.labels(policy).inc(totals["failed"] + totals["unknown"])
        finished = self._wall_clock()
        with self._lock:
            state = self._policies.get(policy)
            if state is None:
                state = self._policies[policy] = _PolicyState(PolicyWatch(policy, ()), adhoc=True)
            state.known = True
            if state.adhoc:
                servers = tuple(sorted({*state.configured, *(r.server_id for r in report.servers)}))
                state.watch = PolicyWatch(policy, servers)
                state.configured = frozenset(servers)
            for result in report.servers:
                sid = result.server_id
                # abandoned: neither done nor failed, the next run finishes the slot
                if result.outcome == ABANDONED or sid not in state.configured:
                    continue
                state.observed.add(sid)
                if result.outcome == OK:
                    state.last_success[sid] = finished
                    state.failing.discard(sid)
                else:
                    state.failing.add(sid)
                held = Tally(str(blocked.rail) for blocked in result.blocked)
                if held:
                    state.held_back[sid] = held
                else:
                    state.held_back.pop(sid, None)

    def observe_request(self, method: str, route: str, status: str, seconds: float) -> None:
        """Count one exchange with the API; ``route`` as from :func:`route_of`, ``status`` e.g. ``"200"``."""
        self.requests.labels(method, route, status).inc()
        self.request_duration.labels(method, route).observe(seconds)

    def observe_retry(self, method: str) -> None:
        self.retries.labels(method).inc()

    def observe_rate_limited(self) -> None:
        self.rate_limited.inc()

    def set_authenticated(self, ok: bool) -> None:
        """The token's acceptance as one value (tests, a process without a health state)."""
        self._authenticated = lambda: ok

    def authenticated_from(self, source: Callable[[], bool | None]) -> None:
        """Read the token's acceptance from ``source`` at each scrape (``None``: no answer yet, no series)."""
        self._authenticated = source

    # -- output ----------------------------------------------------------------

    def set_role(self, leading: bool, reachable: bool) -> None:
        """The coordination role: acting or standing by, and whether the backend answers."""
        if self._leading is not None and self._leading != leading:
            self.leader_changes.inc()
        self._leading = leading
        self.leader.set(1 if leading else 0)
        self.coordination_reachable.set(1 if reachable else 0)

    def render(self) -> bytes:
        """Every metric in Prometheus' text format (serve with :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def render_gzip(self) -> bytes:
        """:meth:`render`, gzip-compressed (for a scraper that sends ``Accept-Encoding: gzip``)."""
        return gzip.compress(self.render(), compresslevel=6)

    def _state_families(self) -> Iterator[Metric]:
        now = self._wall_clock()
        with self._lock:  # a copy of what the loop may change meanwhile; the text is built outside
            authenticated = self._authenticated()
            snapshot = [
                (
                    state.watch,
                    dict(state.last_success) if self.per_server else None,
                    _Summary.of(state, now) if state.known else None,
                )
                for state in self._policies.values()
            ]
        servers = _gauge("rotator_servers", "Servers in the policy.")
        overdue = _gauge(
            "rotator_servers_overdue",
            "Servers whose newest completed backup is older than the policy's max age, or that have none.",
        )
        failing = _gauge(
            "rotator_servers_failing", "Servers whose latest run (or, at start, latest attempt) failed."
        )
        oldest = _gauge(
            "rotator_oldest_last_success_timestamp_seconds",
            "The oldest last success of the policy's servers (Unix time; 0 while a server has none).",
        )
        max_age = _gauge(
            "rotator_policy_max_age_seconds",
            "How old a server's newest completed backup may get: the schedule's longest gap and a grace.",
        )
        held = _gauge(
            "rotator_deletes_held_back",
            "Deletes a safety rail held back in each server's latest real run, by rail.",
            ["policy", "rail"],
        )
        per_server = _gauge(
            "rotator_last_success_timestamp_seconds",
            "When a run last succeeded for a server (Unix time; at start, its newest completed backup's "
            "slot); dry runs excluded.",
            ["policy", "server_id"],
        )
        for watch, last_success, summary in snapshot:
            name = watch.name
            servers.add_metric([name], len(watch.servers))
            if watch.max_age is not None:
                max_age.add_metric([name], watch.max_age)
            held_back = summary.held_back if summary is not None else {}
            for rail in RAILS:
                held.add_metric([name, rail], held_back.get(rail, 0))
            if summary is None:
                continue  # not read from the API yet (the start's listing is under way): no claim
            failing.add_metric([name], summary.failing)
            if watch.servers:
                oldest.add_metric([name], summary.oldest)
            if watch.max_age is not None:
                overdue.add_metric([name], summary.overdue)
            if last_success is not None:
                for sid, when in last_success.items():
                    per_server.add_metric([name, str(sid)], when)
        yield from (servers, overdue, failing, oldest, max_age, held)
        if self.per_server:
            yield per_server
        auth = _gauge(
            "rotator_api_authenticated",
            "1 if the API accepted the token at its last answer, 0 if it rejected it (401/403).",
        )
        if authenticated is not None:
            auth.add_metric([], 1 if authenticated else 0)
        yield auth


def write_textfile(metrics: Metrics, path: Path) -> None:
    """:meth:`Metrics.render` into ``path`` for node_exporter's textfile collector, atomically: a
    temporary file in the same directory (a name the collector ignores), synced, then renamed over
    ``path``, so a scrape never reads half a file. Readable by all (node_exporter runs as its own user).
    """
    body = metrics.render()
    directory = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp makes it 0600
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def push(metrics: Metrics, gateway: str, *, grouping_key: Mapping[str, str] | None = None) -> None:
    """Every metric to a Prometheus Pushgateway, replacing the group ``job="rotator"`` (and
    ``grouping_key``) as a whole (prometheus_client's ``push_to_gateway``: an HTTP PUT)."""
    push_to_gateway(
        gateway, job="rotator", registry=metrics.registry, grouping_key=dict(grouping_key or {}), timeout=10
    )


def _gauge(name: str, documentation: str, labels: Sequence[str] = ("policy",)) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


@dataclass(frozen=True, slots=True)
class _Summary:
    """A policy's fleet gauges, computed from its servers' state at one instant."""

    failing: int
    oldest: float
    overdue: int
    held_back: Mapping[str, int]

    @classmethod
    def of(cls, state: _PolicyState, now: float) -> _Summary:
        watch = state.watch
        known = state.last_success.values()  # configured servers only
        never = len(state.configured) - len(known)
        oldest = 0.0 if never or not known else min(known)
        overdue = 0
        if watch.max_age is not None:
            limit = now - watch.max_age
            overdue = never + sum(1 for when in known if when < limit)
        held: Tally[str] = Tally()
        for tally in state.held_back.values():
            held.update(tally)
        return cls(failing=len(state.failing), oldest=oldest, overdue=overdue, held_back=dict(held))


class _StateCollector:
    """The gauges computed from :class:`Metrics`' state at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._state_families()

    def describe(self) -> list[Metric]:
        return []  # names are not checked against the other collectors': they are distinct by design
