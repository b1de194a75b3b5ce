"""What the daemon tells its observers: metrics, the health state and monitoring pings, in one place.

:class:`Telemetry` is the API client's :class:`~rotator.api.ApiObserver`
(requests, retries and 429s into the metrics; 401/403 into readiness), and
:func:`reported_run` subscribes one run of a policy's metrics and pings (and
any other observer) to its events, for ``rotator run`` and ``rotator run-once``
alike. Whether the API accepts the token is recorded once, in the health state;
the ``rotator_api_authenticated`` gauge reads it from there. :func:`policy_watch`
says how old a policy's backups may get, and :func:`seed_metrics` reads each
server's last success from the API, so the metrics survive a restart.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from apscheduler.triggers.base import BaseTrigger

from rotator import errors
from rotator.events import Observer
from rotator.health import HealthState
from rotator.inventory import Inventory
from rotator.pings import Pinger, RunPings
from rotator.runner import JobSpec, Runner, RunReport
from rotator.slots import latest_slot, next_slots

if TYPE_CHECKING:
    from rotator.metrics import Metrics, PolicyWatch

log = structlog.get_logger("rotator.telemetry")


def _new_metrics() -> Metrics:
    # rotator.metrics (and prometheus_client under it) only where metrics are kept: the daemon, or a
    # run-once that hands them on; a plain run-once does not load them
    from rotator.metrics import Metrics  # noqa: PLC0415

    return Metrics()


GAP_SAMPLE = 32
"""Slots after now whose gaps give a schedule's longest one (a weekday cron's weekend among them)."""


@dataclass
class Telemetry:
    """Metrics and the health state, fed by the API client and by finished runs."""

    metrics: Metrics = field(default_factory=_new_metrics)
    health: HealthState = field(default_factory=HealthState)

    def __post_init__(self) -> None:
        health = self.health
        # one record of the token's acceptance: readiness and the gauge cannot disagree (and before
        # the first answer, the gauge is absent, as readiness gives the token the benefit of the doubt)
        self.metrics.authenticated_from(lambda: health.last_auth_ok)

    def on_response(self, method: str, path: str, status: int | None, seconds: float) -> None:
        from rotator.metrics import route_of  # noqa: PLC0415 - loaded with self.metrics: at hand

        label = str(status) if status is not None else "transport_error"
        self.metrics.observe_request(method, route_of(path), label, seconds)
        if status is not None:
            self.health.record_auth(status)

    def on_retry(self, method: str) -> None:
        self.metrics.observe_retry(method)

    def on_rate_limited(self) -> None:
        self.metrics.observe_rate_limited()


async def reported_run(
    runner: Runner,
    spec: JobSpec,
    slot: datetime,
    *,
    pings_url: str | None = None,
    pinger: Pinger | None = None,
    metrics: Metrics | None = None,
    observers: Sequence[Observer] = (),
    servers: Sequence[int] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    retry_in_run: bool = True,
) -> RunReport:
    """One run with its monitoring subscribed to its events: metrics, the policy's pings, ``observers``.

    A dry run sends no ping (:class:`~rotator.pings.RunPings`): it made no backup, and monitoring
    should not believe it did.
    """
    subscribers: list[Observer] = []
    if metrics is not None:
        subscribers.append(metrics.observe)
    if pinger is not None and pings_url is not None:
        subscribers.append(RunPings(pinger, pings_url))
    subscribers += observers
    return await runner.run(
        spec,
        slot,
        servers=servers,
        dry_run=dry_run,
        now=now,
        retry_in_run=retry_in_run,
        observers=subscribers,
    )


def default_grace_of(spec: JobSpec, trigger: BaseTrigger | None) -> timedelta:
    """How long after its slot a server's backup may still be on its way, as ``rotator status``
    counts it by default (:func:`rotator.status.default_grace`): the schedule's jitter, every
    attempt's wait and the delays between them."""
    from rotator.status import default_grace  # noqa: PLC0415 - status's module, not loaded by a run

    jitter = getattr(trigger, "jitter", None)
    return default_grace(
        wait_timeout=spec.wait_timeout,
        retries=spec.retries,
        retry_delay=spec.retry_delay,
        jitter=timedelta(seconds=jitter) if jitter else None,
    )


def longest_gap(trigger: BaseTrigger, now: datetime) -> timedelta | None:
    """The longest time between two consecutive slots around ``now``; ``None`` for fewer than two."""
    slots = next_slots(trigger, now, GAP_SAMPLE)
    latest = latest_slot(trigger, now)
    if latest is not None:
        slots.insert(0, latest)
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    return max(gaps) if gaps else None


def policy_watch(
    spec: JobSpec,
    trigger: BaseTrigger | None,
    *,
    now: datetime,
    dry_run: bool = False,
    grace: timedelta | None = None,
) -> PolicyWatch:
    """What the metrics watch of a policy: its servers, and, when it creates backups on a schedule,
    ``max_age``: the longest gap between its slots plus its grace (``status_grace``, ``grace`` here;
    by default :func:`default_grace_of`). A server whose newest completed backup is older than that
    is overdue."""
    max_age: float | None = None
    if spec.create and trigger is not None:
        gap = longest_gap(trigger, now)
        if gap is not None:
            late = grace if grace is not None else default_grace_of(spec, trigger)
            max_age = (gap + late).total_seconds()
    from rotator.metrics import PolicyWatch  # noqa: PLC0415 - see _new_metrics

    return PolicyWatch(spec.name, tuple(spec.policy.servers), max_age, dry_run or spec.dry_run)


async def seed_metrics(metrics: Metrics, inventory: Inventory, watches: Iterable[PolicyWatch]) -> None:
    """Each watched policy's last successes and failing servers, as the API lists them now, in one
    read for all their servers (an account listing where that is cheaper).

    A listing that fails is logged and leaves those servers as they were (their gauges say
    "never succeeded" until a run or the next start tells better).
    """
    watches = list(watches)
    servers = sorted({sid for watch in watches for sid in watch.servers})
    if not servers:
        return
    try:
        views, failed = await inventory.read(servers)
    except errors.ApiError as exc:
        log.warning("metrics.seed_failed", policies=[w.name for w in watches], error=str(exc))
        return
    if failed:
        log.warning("metrics.seed_failed", servers=sorted(failed))
    for watch in watches:
        metrics.seed(watch.name, {sid: views[sid].backups for sid in watch.servers if sid in views})
