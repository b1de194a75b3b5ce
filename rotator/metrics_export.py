"""``run-once`` metrics for cron and Kubernetes CronJobs: a textfile for node_exporter, or a push.

A process that runs once has no ``/metrics`` to be scraped, so it hands its
metrics on when its runs are done: ``--metrics-file PATH.prom`` writes them
for node_exporter's textfile collector (atomically), ``--pushgateway URL``
pushes them to a Prometheus Pushgateway. Before that, the servers' last
successes are read from the API (:func:`~rotator.telemetry.seed_metrics`), so
the fleet gauges (servers overdue, the oldest last success) describe every
server of the policies run, not only those this run touched.

Failing to hand them on is said on stderr and in the log (``metrics.export_failed``)
and does not change the exit code: the runs are done, and a file or group that
stops being updated shows as an overdue policy in the shipped alerts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from rotator import errors
from rotator.config import RotatorConfig
from rotator.inventory import Inventory
from rotator.metrics import Metrics, PolicyWatch, push, write_textfile
from rotator.scheduler import ScheduledJob
from rotator.secrets import scrub
from rotator.telemetry import Telemetry, policy_watch, seed_metrics

log = structlog.get_logger("rotator.metrics")


def check_metrics_file(path: Path) -> Path:
    """``path`` if node_exporter can be given it: a ``*.prom`` name in a writable directory."""
    if path.suffix != ".prom":
        raise errors.UsageError(
            f"--metrics-file {path}: node_exporter's textfile collector reads only *.prom files "
            "(e.g. rotator.prom)"
        )
    directory = path.parent
    if not directory.is_dir():
        raise errors.UsageError(f"--metrics-file {path}: no such directory: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise errors.UsageError(f"--metrics-file {path}: the directory {directory} is not writable")
    if path.is_dir():
        raise errors.UsageError(f"--metrics-file {path}: is a directory")
    return path


def check_pushgateway(url: str) -> str:
    """``url`` if it is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.UsageError(f"--pushgateway: not an http(s) URL such as http://pushgateway:9091: {url!r}")
    return url


@dataclass
class MetricsExport:
    """What ``run-once`` hands its metrics to, and the metrics themselves."""

    telemetry: Telemetry
    watches: Sequence[PolicyWatch]
    metrics_file: Path | None = None
    pushgateway: str | None = None
    grouping_key: dict[str, str] | None = None

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, config: RotatorConfig, jobs: Sequence[ScheduledJob], now: datetime
    ) -> MetricsExport:
        """Checked before any run starts: a bad path or URL is a usage error, and nothing is done."""
        path = check_metrics_file(args.metrics_file) if args.metrics_file is not None else None
        gateway = check_pushgateway(args.pushgateway) if args.pushgateway is not None else None
        watches = [
            policy_watch(job.spec, job.trigger, now=now, dry_run=args.dry_run, grace=job.status_grace)
            for job in jobs
        ]
        metrics = Metrics(per_server=config.metrics.per_server, policies=watches)
        # a CronJob per policy pushes to a group of its own: a push replaces its whole group
        grouping = {"policy": args.policy} if args.policy is not None else None
        return cls(Telemetry(metrics=metrics), watches, path, gateway, grouping)

    @property
    def metrics(self) -> Metrics:
        return self.telemetry.metrics

    async def seed(self, inventory: Inventory) -> None:
        await seed_metrics(self.metrics, inventory, self.watches)

    def write(self) -> bool:
        """Write the file and push; ``False`` (said on stderr) if either failed."""
        ok = True
        if self.metrics_file is not None:
            try:
                write_textfile(self.metrics, self.metrics_file)
            except OSError as exc:
                ok = self._failed(f"--metrics-file {self.metrics_file}", exc)
        if self.pushgateway is not None:
            try:
                push(self.metrics, self.pushgateway, grouping_key=self.grouping_key)
            except OSError as exc:  # urllib's errors (refused, HTTP 4xx/5xx, timeouts) are OSErrors
                ok = self._failed(f"--pushgateway {_host(self.pushgateway)}", exc)
        return ok

    @staticmethod
    def _failed(target: str, exc: OSError) -> bool:
        reason = scrub(f"{type(exc).__name__}: {exc}")
        log.error("metrics.export_failed", target=target, error=reason)
        print(f"rotator: metrics not handed on to {target}: {reason}", file=sys.stderr)
        return False


def _host(url: str) -> str:
    """The URL without user information or path (a gateway's URL may hold credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
