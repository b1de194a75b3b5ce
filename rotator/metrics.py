"""Prometheus metrics, fed from one place: runs' events (:meth:`Metrics.observe`) and API exchanges.

Each :class:`Metrics` owns its :class:`~prometheus_client.CollectorRegistry`
(never the global one), so every test and every daemon has its own counts.

=================================================  =========  ==============================
metric                                             type       labels
=================================================  =========  ==============================
``rotator_runs_total``                             counter    policy, outcome (ok, failed,
                                                              abandoned)
``rotator_run_duration_seconds``                   histogram  policy
``rotator_backups_created_total``                  counter    policy
``rotator_backups_adopted_total``                  counter    policy
``rotator_backups_deleted_total``                  counter    policy
``rotator_backups_failed_total``                   counter    policy (servers failed or unknown)
``rotator_backups_blocked_total``                  counter    policy, rail
``rotator_last_success_timestamp_seconds``         gauge      policy, server_id
``rotator_api_requests_total``                     counter    method, route, status
``rotator_api_request_duration_seconds``           histogram  method, route
``rotator_api_retries_total``                      counter    method
``rotator_api_rate_limited_total``                 counter    (none)
``rotator_api_authenticated``                      gauge      (none): 1 if the last call was
                                                              authenticated, 0 after a 401/403
=================================================  =========  ==============================

A dry run counts in ``rotator_runs_total`` and its would-be deletes in
``rotator_backups_blocked_total{rail="dry_run"}``, but never moves
``rotator_last_success_timestamp_seconds``: it made no backup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from prometheus_client import CONTENT_TYPE_LATEST as _CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rotator.events import Event, Outcome, RunFinished

if TYPE_CHECKING:  # only the type: api.py may import this module without a cycle through runner.py
    from rotator.runner import RunReport

# the outcome labels are the events' own values (rotator.events.Outcome), not copies of them
OK: Final = Outcome.OK.value
FAILED: Final = Outcome.FAILED.value
ABANDONED: Final = Outcome.ABANDONED.value
UNKNOWN: Final = Outcome.UNKNOWN.value

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


class Metrics:
    """rotator's metrics in a registry of their own; ``render()`` for ``/metrics``."""

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall_clock = wall_clock
        r = self.registry
        self.runs = Counter(
            "rotator_runs", "Runs of a policy, by outcome.", ["policy", "outcome"], registry=r
        )
        self.run_duration = Histogram(
            "rotator_run_duration_seconds",
            "How long a run of a policy took, waits included.",
            ["policy"],
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
            "stayed unknown; abandoned runs are not counted.",
            ["policy"],
            registry=r,
        )
        self.blocked = Counter(
            "rotator_backups_blocked",
            "Deletes the retention plan asked for and a safety rail refused, by rail.",
            ["policy", "rail"],
            registry=r,
        )
        self.last_success = Gauge(
            "rotator_last_success_timestamp_seconds",
            "When a run last succeeded for a server (Unix time); dry runs excluded.",
            ["policy", "server_id"],
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
        self.authenticated = Gauge(
            "rotator_api_authenticated",
            "1 if the API accepted the token at the last call, 0 if it rejected it (401/403).",
            registry=r,
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

    def observe(self, event: Event) -> None:
        """The metrics as an observer of runs' events (:mod:`rotator.events`): each finished run counted."""
        if isinstance(event, RunFinished):
            self.observe_run(event)

    def observe_run(self, report: RunReport | RunFinished) -> None:
        """Count one finished run of a policy."""
        policy = report.policy
        totals = report.totals()
        self.runs.labels(policy, run_outcome(report)).inc()
        self.run_duration.labels(policy).observe(report.duration)
        self.created.labels(policy).inc(totals["created"])
        self.adopted.labels(policy).inc(totals["adopted"])
        self.deleted.labels(policy).inc(totals["deleted"])
        self.failed.labels(policy).inc(totals["failed"] + totals["unknown"])
        for result in report.servers:
            for blocked in result.blocked:
                self.blocked.labels(policy, str(blocked.rail)).inc()
        if report.dry_run:
            return
        finished = self._wall_clock()
        for result in report.servers:
            if result.outcome == OK:
                self.last_success.labels(policy, str(result.server_id)).set(finished)

    def observe_request(self, method: str, route: str, status: str, seconds: float) -> None:
        """Count one exchange with the API; ``route`` as from :func:`route_of`, ``status`` e.g. ``"200"``."""
        self.requests.labels(method, route, status).inc()
        self.request_duration.labels(method, route).observe(seconds)

    def observe_retry(self, method: str) -> None:
        self.retries.labels(method).inc()

    def observe_rate_limited(self) -> None:
        self.rate_limited.inc()

    def set_authenticated(self, ok: bool) -> None:
        self.authenticated.set(1 if ok else 0)

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
