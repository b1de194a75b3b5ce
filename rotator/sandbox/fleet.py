"""Seeded starting fleets: a small, lifelike ``demo`` and a large, regular ``uniform``.

Ids are handed out in a shuffled (seeded) order over each history, so, as the
provider's own example shows, an id says nothing about a backup's age.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from rotator.sandbox.options import SandboxOptions
from rotator.sandbox.state import (
    AUTOMATIC_DESCRIPTION,
    AUTOMATIC_LIFETIME,
    BackupRecord,
    BackupType,
    Fleet,
    Server,
    whole_seconds,
)

NIGHTLY_AT = time(2, 0)
DEMO_FIRST_ID = 401
DEMO_AUTOMATIC_DAYS = 42
DEMO_NIGHTLY_DAYS = 21


def marker(owner: str, slot: datetime) -> str:
    """The ownership marker rotator appends to a description: ``[rotator:OWNER@YYYY-MM-DDTHH:MMZ]``."""
    return f"[rotator:{owner}@{slot.astimezone(UTC):%Y-%m-%dT%H:%MZ}]"


@dataclass(frozen=True, slots=True)
class _Planned:
    server_id: int
    backup_type: BackupType
    status: str
    created_at: datetime
    size_mb: int | None
    description: str | None


def demo(*, now: datetime, seed: int = 0, owner: str = "nightly") -> Fleet:
    """Four servers with about six weeks of history at ``now``.

    Daily automatic backups (three servers; each expires 30 days after it was
    made, so only the recent ones are left, and one of them failed), a few
    ad-hoc manual ones ("Pre-update backup", ...), and for three servers a
    nightly history of manual backups marked ``[rotator:OWNER@SLOT]`` with a
    02:00 UTC slot (one failed, one night missing) for a policy to prune. The
    latest night at ``now`` has no backup yet: that one is the policy's to make.
    """
    rng = random.Random(f"{seed}:demo")  # noqa: S311 -- seeded simulation, not secrets
    servers = [
        Server(12345, "web-server-01", 4500, time(3, 0)),
        Server(12346, "db-server-01", 12800, time(3, 30)),
        Server(12347, "mail-server-01", 2300, time(4, 0)),
        Server(12348, "staging-01", 1800, None),
    ]
    by_id = {server.id: server for server in servers}
    now = whole_seconds(now)
    today = now.date()

    def at(days_ago: int, hour: int, minute: int, second: int = 0) -> datetime:
        return datetime.combine(today - timedelta(days=days_ago), time(hour, minute, second), tzinfo=UTC)

    def size(server_id: int) -> int:
        return round(by_id[server_id].size_mb * rng.uniform(0.95, 1.02))

    planned: list[_Planned] = []
    for server in servers:
        if server.automatic_at is None:
            continue
        for days_ago in range(DEMO_AUTOMATIC_DAYS + 1):
            created = at(days_ago, server.automatic_at.hour, server.automatic_at.minute)
            if created > now:
                continue
            failed = server.id == 12345 and days_ago == 9
            planned.append(
                _Planned(
                    server.id,
                    "automatic",
                    "failed" if failed else "completed",
                    created,
                    None if failed else size(server.id),
                    AUTOMATIC_DESCRIPTION,
                )
            )
    for server_id, created, description in (
        (12345, at(20, 10, 30), "Pre-update backup"),
        (12345, at(3, 15, 45), "Pre-deployment backup"),
        (12346, at(12, 22, 10), "Before PostgreSQL 16 upgrade"),
        (12346, at(33, 8, 5), None),
        (12348, at(5, 9, 12), "Pre-update backup"),
    ):
        if created <= now:
            planned.append(_Planned(server_id, "manual", "completed", created, size(server_id), description))
    # The latest night is left to rotator: a run now creates its backup, waits for it, then prunes.
    latest_night = 0 if at(0, NIGHTLY_AT.hour, NIGHTLY_AT.minute) <= now else 1
    for server_id in (12345, 12346, 12347):
        for days_ago in range(latest_night + 1, latest_night + 1 + DEMO_NIGHTLY_DAYS):
            if server_id == 12347 and days_ago == latest_night + 4:
                continue  # a night the scheduler did not run
            slot = at(days_ago, NIGHTLY_AT.hour, NIGHTLY_AT.minute)
            created = slot + timedelta(seconds=rng.randint(3, 90))
            if created > now:
                continue
            failed = server_id == 12346 and days_ago == latest_night + 6
            planned.append(
                _Planned(
                    server_id,
                    "manual",
                    "failed" if failed else "completed",
                    created,
                    None if failed else size(server_id),
                    f"Nightly backup {marker(owner, slot)}",
                )
            )

    ids = list(range(DEMO_FIRST_ID, DEMO_FIRST_ID + len(planned)))
    rng.shuffle(ids)
    backups: list[BackupRecord] = []
    for backup_id, plan in zip(ids, planned, strict=True):
        expires = plan.created_at + AUTOMATIC_LIFETIME if plan.backup_type == "automatic" else None
        if expires is not None and expires <= now:
            continue  # the provider removed it long ago; its id stays used
        backups.append(
            BackupRecord(
                id=backup_id,
                server_id=plan.server_id,
                backup_type=plan.backup_type,
                status=plan.status,
                created_at=plan.created_at,
                size_mb=plan.size_mb,
                expires_at=expires,
                description=plan.description,
            )
        )
    return Fleet(servers=servers, backups=backups, next_id=DEMO_FIRST_ID + len(planned))


def uniform(
    *,
    servers: int,
    backups_per_server: int,
    owner: str = "nightly",
    now: datetime,
    seed: int = 0,
    slot_at: time = NIGHTLY_AT,
    first_server_id: int = 1,
    size_mb: int = 2048,
) -> Fleet:
    """``servers`` servers, each with ``backups_per_server`` completed manual backups, one a day.

    Each backup is marked ``[rotator:OWNER@SLOT]`` for the daily slot at
    ``slot_at`` UTC, the newest slot being the last one at least ten minutes
    before ``now``. No automatic backups. Built in well under a second for
    1,000 x 30 backups.
    """
    now = whole_seconds(now)
    latest = datetime.combine(now.date(), slot_at, tzinfo=UTC)
    while latest > now - timedelta(minutes=10):
        latest -= timedelta(days=1)
    slots = [latest - timedelta(days=k) for k in range(backups_per_server)]
    descriptions = [f"{owner} backup {marker(owner, slot)}" for slot in slots]
    fleet_servers = [
        Server(first_server_id + index, f"server-{index + 1:04d}", size_mb) for index in range(servers)
    ]
    ids = list(range(1, servers * backups_per_server + 1))
    random.Random(f"{seed}:uniform").shuffle(ids)  # noqa: S311 -- seeded simulation
    backups: list[BackupRecord] = []
    position = 0
    for index, server in enumerate(fleet_servers):
        for k, slot in enumerate(slots):
            backups.append(
                BackupRecord(
                    id=ids[position],
                    server_id=server.id,
                    backup_type="manual",
                    status="completed",
                    created_at=slot + timedelta(seconds=5 + (index * 7 + k * 13) % 120),
                    size_mb=size_mb + (index + k) % 64,
                    description=descriptions[k],
                )
            )
            position += 1
    return Fleet(servers=fleet_servers, backups=backups, next_id=len(ids) + 1)


def empty(*, servers: int = 4, first_server_id: int = 1) -> Fleet:
    """``servers`` servers without a single backup."""
    return Fleet(
        servers=[Server(first_server_id + index, f"server-{index + 1:04d}", 2048) for index in range(servers)]
    )


def build(options: SandboxOptions, now: datetime) -> Fleet:
    """The fleet ``options`` ask for, as of ``now``."""
    if options.fleet == "demo":
        return demo(now=now, seed=options.seed, owner=options.owner)
    if options.fleet == "uniform":
        return uniform(
            servers=options.servers,
            backups_per_server=options.backups_per_server,
            owner=options.owner,
            now=now,
            seed=options.seed,
        )
    return empty(servers=options.servers)
