"""``check-config --check-api``: does the API accept the token, and does it know every configured server?

The Backups API has no call that names a server without acting on it (a create would start a
backup), so a server is known by its backups: one listing of the whole account (read like any
listing, to its last page) shows which servers have any backup, manual or automatic. A configured
server with none is reported as not seen: a mistyped id, a server of another account, or one that
has no backup yet (a new server with automatic backups off). Nothing is created or changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rotator.api import BackupsClient
from rotator.config import PolicyConfig


@dataclass(frozen=True, slots=True)
class ApiCheck:
    """What the API showed: the configured servers it lists backups of, and those it does not."""

    url: str
    backups_listed: int
    seen: tuple[int, ...]
    missing: dict[int, tuple[str, ...]]  # server id -> the policies that name it

    @property
    def ok(self) -> bool:
        return not self.missing

    def document(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "token": "accepted",
            "backups_listed": self.backups_listed,
            "servers_seen": list(self.seen),
            "servers_missing": [
                {"server_id": server_id, "policies": list(policies)}
                for server_id, policies in self.missing.items()
            ],
        }

    def lines(self) -> list[str]:
        """For people: one line for the token, one per server not seen."""
        total = len(self.seen) + len(self.missing)
        lines = [f"api: token accepted; {len(self.seen)} of {total} configured servers seen"]
        lines += [
            f"  server {server_id} ({', '.join(policies)}): no backups of it are listed: not a server of "
            "this account (a typo?), or one with no backup yet"
            for server_id, policies in self.missing.items()
        ]
        return lines

    def failure(self) -> str:
        """The one line for stderr when servers are missing."""
        ids = ", ".join(str(server_id) for server_id in self.missing)
        count = len(self.missing)
        return f"{count} configured server{'s' if count != 1 else ''} not seen by the API: {ids}"


async def check_api(client: BackupsClient, policies: Sequence[PolicyConfig]) -> ApiCheck:
    """List the account's backups once (a rejected token raises :class:`~rotator.errors.Unauthorized`)."""
    listing = await client.list_backups()
    listed = {backup.server_id for backup in listing.backups}
    named: dict[int, list[str]] = {}
    for policy in policies:
        for server_id in policy.servers:
            named.setdefault(server_id, []).append(policy.name)
    return ApiCheck(
        url=client.settings.base_url,
        backups_listed=listing.count,
        seen=tuple(sorted(server_id for server_id in named if server_id in listed)),
        missing={
            server_id: tuple(names) for server_id, names in sorted(named.items()) if server_id not in listed
        },
    )
