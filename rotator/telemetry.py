"""What the daemon tells its observers: metrics, the health state and monitoring pings, in one place.

:class:`Telemetry` is the API client's :class:`~rotator.api.ApiObserver`
(requests, retries and 429s into the metrics; 401/403 into readiness), and
:func:`reported_run` wraps one run of a policy with its pings and its metrics,
for ``rotator run`` and ``rotator run-once`` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rotator.health import HealthState
from rotator.metrics import Metrics, route_of
from rotator.pings import Pinger
from rotator.runner import JobSpec, Runner, RunReport


@dataclass
class Telemetry:
    """Metrics and the health state, fed by the API client and by finished runs."""

    metrics: Metrics = field(default_factory=Metrics)
    health: HealthState = field(default_factory=HealthState)

    def on_response(self, method: str, path: str, status: int | None, seconds: float) -> None:
        label = str(status) if status is not None else "transport_error"
        self.metrics.observe_request(method, route_of(path), label, seconds)
        if status is not None:
            self.health.record_auth(status)
            self.metrics.set_authenticated(status not in (401, 403))

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
    servers: Sequence[int] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    retry_in_run: bool = True,
) -> RunReport:
    """One run with its monitoring: ``/start`` ping, the run, its metrics, then the success or fail ping.

    A dry run sends no ping: it made no backup, and monitoring should not believe it did.
    """
    ping = pinger is not None and pings_url is not None and not (dry_run or spec.dry_run)
    if ping:
        assert pinger is not None
        await pinger.start(pings_url, f"policy {spec.name}: run of slot {slot.isoformat()} started")
    report = await runner.run(
        spec, slot, servers=servers, dry_run=dry_run, now=now, retry_in_run=retry_in_run
    )
    if metrics is not None:
        metrics.observe_run(report)
    if ping:
        assert pinger is not None
        await pinger.finished(pings_url, report)
    return report
