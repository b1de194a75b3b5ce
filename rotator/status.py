"""What ``rotator status`` shows: per policy and server, how its backups stand, from the API alone.

Pure: :func:`fleet_status` takes the policies to watch, a listing of the
servers' manual backups and ``now``, and returns each server's standing; the
renderers turn it into a table or JSON. Nothing here reads a clock, a file or
the network: the API is the state, and the caller lists it.

For each server of each policy: the newest completed backup the policy owns
(by its marker) and its age, how many completed owned backups there are and
their total ``size_mb``, the failed attempts since that newest one, and the
next slot. A server is

* **OVERDUE** when the latest slot whose grace has passed (a slot at or before
  ``now - grace``) has no completed owned backup: none whose marker names that
  slot or a later one. The grace (``status_grace``) defaults to how long a run
  of that slot may legitimately take: the schedule's jitter, every attempt's
  ``wait_timeout`` and the ``retry_delay`` before each retry.
* **FAILING** when its most recent owned attempt ended ``failed`` (a retry may
  still fix it), or when its listing could not be read.

A policy without a schedule is never overdue (nothing says when it should
have run). :attr:`FleetStatus.ok` is what ``rotator status`` exits 0 on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from apscheduler.triggers.base import BaseTrigger

from rotator.config import RotatorConfig
from rotator.errors import ConfigError
from rotator.markers import parse_marker
from rotator.models import COMPLETED, FAILED, IN_PROGRESS, MANUAL, Backup, format_timestamp
from rotator.slots import latest_slot, next_slots

OVERDUE: Final = "OVERDUE"
FAILING: Final = "FAILING"


def default_grace(
    *, wait_timeout: timedelta, retries: int, retry_delay: timedelta, jitter: timedelta | None = None
) -> timedelta:
    """How long after its slot a backup may still be missing: the jitter, each attempt's wait and
    each retry's delay."""
    return (jitter or timedelta(0)) + (1 + retries) * wait_timeout + retries * retry_delay


@dataclass(frozen=True, slots=True)
class WatchedPolicy:
    """What status needs of a policy: its name, servers, schedule (None: none) and grace."""

    name: str
    servers: tuple[int, ...]
    trigger: BaseTrigger | None
    grace: timedelta


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One server of one policy, as the listing shows it at ``now``."""

    policy: str
    server_id: int
    server_name: str | None
    newest: Backup | None  # the newest completed backup the policy owns
    age: timedelta | None
    owned: int  # completed owned backups
    size_mb: int  # their total size
    failed_since: int  # failed owned attempts newer than ``newest``
    in_progress: int  # owned backups in progress
    due_slot: datetime | None  # the latest slot whose grace has passed
    next_slot: datetime | None
    overdue: bool
    failing: bool
    error: str | None = None  # the listing of this server could not be read

    @property
    def ok(self) -> bool:
        return not (self.overdue or self.failing)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(word for word, on in ((OVERDUE, self.overdue), (FAILING, self.failing)) if on)

    @property
    def state(self) -> str:
        return ", ".join(self.problems) or "ok"


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    policy: str
    grace: timedelta
    latest_slot: datetime | None
    due_slot: datetime | None
    next_slot: datetime | None
    servers: tuple[ServerStatus, ...]


@dataclass(frozen=True, slots=True)
class FleetStatus:
    now: datetime
    policies: tuple[PolicyStatus, ...] = field(default=())

    @property
    def servers(self) -> tuple[ServerStatus, ...]:
        return tuple(server for policy in self.policies for server in policy.servers)

    @property
    def ok(self) -> bool:
        return all(server.ok for server in self.servers)

    def summary(self) -> dict[str, int]:
        servers = self.servers
        return {
            "policies": len(self.policies),
            "servers": len(servers),
            "ok": sum(1 for s in servers if s.ok),
            "overdue": sum(1 for s in servers if s.overdue),
            "failing": sum(1 for s in servers if s.failing),
            "owned": sum(s.owned for s in servers),
            "size_mb": sum(s.size_mb for s in servers),
        }

    def summary_line(self) -> str:
        """One line for the whole fleet."""
        t = self.summary()
        verdict = "ok" if self.ok else "NOT OK"
        return (
            f"fleet {verdict}: {_count(t['servers'], 'server')} in {_count(t['policies'], 'policy')}: "
            f"{t['ok']} ok, "
            f"{t['overdue']} overdue, {t['failing']} failing; {t['owned']} owned backups, "
            f"{format_size(t['size_mb'])}"
        )


def _count(number: int, noun: str) -> str:
    if number == 1:
        return f"1 {noun}"
    return f"{number} {noun[:-1]}ies" if noun.endswith("y") else f"{number} {noun}s"


def fleet_status(
    policies: Iterable[WatchedPolicy],
    backups: Iterable[Backup],
    now: datetime,
    *,
    errors: Mapping[int, str] | None = None,
) -> FleetStatus:
    """Each watched policy's servers as ``backups`` (their manual backups) show them at ``now``.

    ``errors``: servers whose listing could not be read, with why (they are failing).
    """
    by_server: dict[int, list[Backup]] = {}
    for backup in backups:
        if backup.backup_type == MANUAL:
            by_server.setdefault(backup.server_id, []).append(backup)
    unread = errors or {}
    result = []
    for policy in policies:
        latest = due = following = None
        if policy.trigger is not None:
            latest = latest_slot(policy.trigger, now)
            due = latest_slot(policy.trigger, now - policy.grace)
            following = next(iter(next_slots(policy.trigger, now, 1)), None)
        servers = tuple(
            _server_status(policy, sid, by_server.get(sid, []), now, due, following, unread.get(sid))
            for sid in policy.servers
        )
        result.append(PolicyStatus(policy.name, policy.grace, latest, due, following, servers))
    return FleetStatus(now, tuple(result))


def _server_status(  # noqa: PLR0917 - private, called once with everything it judges
    policy: WatchedPolicy,
    server_id: int,
    backups: Sequence[Backup],
    now: datetime,
    due: datetime | None,
    following: datetime | None,
    error: str | None,
) -> ServerStatus:
    owned = [
        (b, marker)
        for b in backups
        if (marker := parse_marker(b.description)) and marker.policy == policy.name
    ]
    completed = [(b, m) for b, m in owned if b.status == COMPLETED]
    newest = max((b for b, _ in completed), key=lambda b: b.sort_key, default=None)
    failed_since = sum(
        1 for b, _ in owned if b.status == FAILED and (newest is None or b.sort_key > newest.sort_key)
    )
    latest_attempt = max((b for b, _ in owned), key=lambda b: b.sort_key, default=None)
    overdue = False
    if due is not None and error is None:
        # the due slot is covered by a completed backup of it or of a later slot (by its marker, never
        # by comparing the API's clock with ours; a marker without a slot is judged by its time)
        overdue = not any((m.slot if m.slot is not None else b.created_at) >= due for b, m in completed)
    names = {b.server.name for b in backups}
    return ServerStatus(
        policy=policy.name,
        server_id=server_id,
        server_name=names.pop() if len(names) == 1 else None,
        newest=newest,
        age=now - newest.created_at if newest is not None else None,
        owned=len(completed),
        size_mb=sum(b.size_mb or 0 for b, _ in completed),
        failed_since=failed_since,
        in_progress=sum(1 for b, _ in owned if b.status == IN_PROGRESS),
        due_slot=due,
        next_slot=following,
        overdue=overdue,
        failing=error is not None or (latest_attempt is not None and latest_attempt.status == FAILED),
        error=error,
    )


# --- rendering ----------------------------------------------------------------------------------


def format_size(mb: int) -> str:
    """``512 MiB``, ``4.2 GiB``, ``1.3 TiB``."""
    if mb >= 1024 * 1024:
        return f"{mb / (1024 * 1024):.1f} TiB"
    if mb >= 1024:
        return f"{mb / 1024:.1f} GiB"
    return f"{mb} MiB"


def format_age(age: timedelta) -> str:
    """An age to the minute for people: ``45m``, ``3h12m``, ``2d4h``."""
    minutes = max(int(age.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


def render_table(status: FleetStatus) -> str:
    """One row per server of each policy, a note for each problem, then the fleet's line."""
    header = ("POLICY", "SERVER", "STATE", "NEWEST", "AGE", "OWNED", "SIZE", "FAILED", "NEXT SLOT")
    rows = [header]
    notes: list[str] = []
    for policy in status.policies:
        for server in policy.servers:
            newest = server.newest
            name = f"{server.server_id} {server.server_name}" if server.server_name else str(server.server_id)
            rows.append(
                (
                    policy.policy,
                    name,
                    server.state,
                    f"{newest.id} {format_timestamp(newest.created_at)}" if newest is not None else "-",
                    format_age(server.age) if server.age is not None else "-",
                    str(server.owned),
                    format_size(server.size_mb),
                    str(server.failed_since),
                    format_timestamp(server.next_slot) if server.next_slot is not None else "-",
                )
            )
            notes.extend(_notes(policy, server))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    if len(rows) == 1:
        lines = ["no policies to watch"]
    return "\n".join([*lines, *notes, status.summary_line()]) + "\n"


def _notes(policy: PolicyStatus, server: ServerStatus) -> list[str]:
    where = f"policy {policy.policy}, server {server.server_id}"
    notes = []
    if server.error is not None:
        notes.append(f"{where}: FAILING: its listing could not be read: {server.error}")
    elif server.failing:
        notes.append(
            f"{where}: FAILING: its latest attempt failed "
            f"({server.failed_since} failed since the newest completed backup)"
        )
    if server.overdue and server.due_slot is not None:
        notes.append(
            f"{where}: OVERDUE: no completed backup of the slot {format_timestamp(server.due_slot)} "
            f"or later, {format_age(policy.grace)} (status_grace) after it"
        )
    return notes


def status_document(status: FleetStatus) -> dict[str, Any]:
    """The document ``rotator status --json`` prints."""
    return {
        "now": format_timestamp(status.now),
        "ok": status.ok,
        "summary": status.summary(),
        "policies": [
            {
                "policy": policy.policy,
                "grace_s": policy.grace.total_seconds(),
                "latest_slot": _instant(policy.latest_slot),
                "due_slot": _instant(policy.due_slot),
                "next_slot": _instant(policy.next_slot),
                "servers": [_server_document(server) for server in policy.servers],
            }
            for policy in status.policies
        ],
    }


def _server_document(server: ServerStatus) -> dict[str, Any]:
    newest = server.newest
    return {
        "server_id": server.server_id,
        "server_name": server.server_name,
        "state": server.state,
        "overdue": server.overdue,
        "failing": server.failing,
        "newest": None
        if newest is None
        else {
            "id": newest.id,
            "created_at": format_timestamp(newest.created_at),
            "size_mb": newest.size_mb,
            "description": newest.description,
        },
        "age_s": server.age.total_seconds() if server.age is not None else None,
        "owned": server.owned,
        "size_mb": server.size_mb,
        "failed_since": server.failed_since,
        "in_progress": server.in_progress,
        "next_slot": _instant(server.next_slot),
        "error": server.error,
    }


def _instant(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


def render_json(status: FleetStatus, *, indent: int | None = 2) -> str:
    return json.dumps(status_document(status), indent=indent, ensure_ascii=False)


def watched_policies(
    config: RotatorConfig,
    triggers: Mapping[str, BaseTrigger | None],
    *,
    policy: str | None = None,
    server: int | None = None,
) -> list[WatchedPolicy]:
    """The configured policies to watch (or only ``policy``), on their servers (or only ``server``).

    ``triggers``: each policy's schedule by name. An unknown policy, or a server
    no chosen policy has, is a :class:`ConfigError`.
    """
    chosen = [config.policy(policy)] if policy is not None else list(config.policies)
    if server is not None:
        chosen = [item for item in chosen if server in item.servers]
        if not chosen:
            scope = f"policy {policy!r}" if policy is not None else "any policy"
            raise ConfigError(f"server {server} is not one of the servers of {scope}")
    watched = []
    for item in chosen:
        grace = item.status_grace or default_grace(
            wait_timeout=item.wait_timeout,
            retries=item.retries,
            retry_delay=item.retry_delay,
            jitter=item.schedule.jitter if item.schedule is not None else None,
        )
        servers = tuple(sid for sid in item.servers if server in (None, sid))
        watched.append(WatchedPolicy(item.name, servers, triggers.get(item.name), grace))
    return watched
