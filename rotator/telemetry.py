"""What the daemon tells its observers: metrics, the health state and monitoring pings, in one place.

:class:`Telemetry` is the API client's :class:`~rotator.api.ApiObserver`
(requests, retries and 429s into the metrics; 401/403 into readiness), and
:func:`reported_run` subscribes one run of a policy's metrics and pings (and
any other observer) to its events, for ``rotator run`` and ``rotator run-once``
alike. Whether the API accepts the token is recorded once, in the health state;
the ``rotator_api_authenticated`` gauge reads it from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rotator.events import Observer
from rotator.health import HealthState
from rotator.metrics import Metrics, route_of
from rotator.pings import Pinger, RunPings
from rotator.runner import JobSpec, Runner, RunReport


@dataclass
class Telemetry:
    """Metrics and the health state, fed by the API client and by finished runs."""

    metrics: Metrics = field(default_factory=Metrics)
    health: HealthState = field(default_factory=HealthState)

    def __post_init__(self) -> None:
        health = self.health
        # one record of the token's acceptance: readiness and the gauge cannot disagree
        self.metrics.authenticated.set_function(lambda: 1.0 if health.last_auth_ok else 0.0)

    def on_response(self, method: str, path: str, status: int | None, seconds: float) -> None:
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
