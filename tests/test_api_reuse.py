"""A listing read again holds one copy of what it shares with the read before (the fleet's memory)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from rotator.inventory import Inventory
from rotator.models import Backup, ServerRef
from rotator.sandbox import Sandbox, SandboxOptions
from tests.sandbox_clients import SandboxTime, sandbox_client

NOW = datetime(2025, 1, 16, 3, 30, tzinfo=UTC)


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """3 servers with 10 owned backups each, 20 a page: the account listing takes 2 pages, fewer than 3."""
    return SandboxOptions(
        seed=3, fleet="uniform", servers=3, backups_per_server=10, frozen_clock=NOW, page_size=20
    )


def earlier_if_equal(earlier: dict[int, Backup], backup: Backup) -> Backup:
    """The earlier instance of ``backup`` if it is equal, else ``backup`` itself."""
    old = earlier.get(backup.id)
    return old if old is not None and old == backup else backup


async def test_a_reread_shares_unchanged_backups_and_not_changed_ones(
    sandbox: Sandbox, sandbox_transport: httpx.ASGITransport, sandbox_api_url: str
) -> None:
    """Equal backups come back as the earlier instances; a changed or new one as itself."""
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, SandboxTime(sandbox)) as client:
        first = await client.list_backups(backup_type="manual")
        victim, changed = first.backups[0], first.backups[1]
        sandbox.state.delete_backup(victim.id)
        new = sandbox.state.create_backup(2, "new one")
        earlier = {b.id: b for b in first.backups}
        # an earlier copy that differs (another status) is not taken for the one listed now
        earlier[changed.id] = Backup(**{**earlier[changed.id].to_api(), "status": "in_progress"})
        again = await client.list_backups(backup_type="manual", share=lambda b: earlier_if_equal(earlier, b))
    by_id = {b.id: b for b in again.backups}
    assert victim.id not in by_id
    assert by_id[new.id].status == "in_progress"
    assert by_id[changed.id] == changed
    assert by_id[changed.id] is not earlier[changed.id]
    shared = [b for b in again.backups if b.id not in (new.id, changed.id)]
    assert len(shared) == 28
    assert all(b is earlier[b.id] for b in shared)


async def test_the_inventory_shares_within_a_run_and_forgets_after(
    sandbox: Sandbox, sandbox_transport: httpx.ASGITransport, sandbox_api_url: str
) -> None:
    """A second account read of the inventory holds the first read's instances; forgetting drops them."""
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, SandboxTime(sandbox)) as client:
        inventory = Inventory(client)
        views, _ = await inventory.read([1, 2, 3])
        again, _ = await inventory.read([1, 2, 3])
        assert all(
            a is b for sid in views for a, b in zip(views[sid].backups, again[sid].backups, strict=True)
        )
        inventory.forget_backups()
        fresh, _ = await inventory.read([1, 2, 3])
    assert fresh[1].backups == views[1].backups
    assert all(a is not b for a, b in zip(views[1].backups, fresh[1].backups, strict=True))


def test_servers_of_equal_refs_are_one_instance() -> None:
    """Two validated backups of one server hold the same ServerRef."""
    data = {"server": {"id": 9, "name": "db-9"}, "backup_type": "manual", "status": "completed"}
    one = Backup.from_api({**data, "id": 1, "created_at": "2025-01-01T00:00:00Z"})
    two = Backup.from_api({**data, "id": 2, "created_at": "2025-01-02T00:00:00+02:00"})
    assert one.server is two.server
    assert one.server == ServerRef(id=9, name="db-9")
    assert two.created_at.tzinfo is UTC


def test_a_backup_built_or_copied_from_trusted_values_is_not_validated() -> None:
    """model_construct takes a plan's would-be id 0; model_copy changes only what it is told."""
    server = ServerRef(id=9, name="db-9")
    when = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
    planned = Backup.model_construct(
        id=0, server=server, backup_type="manual", status="completed", created_at=when
    )
    assert (planned.id, planned.size_mb, planned.description) == (0, None, None)
    running = planned.model_copy(update={"status": "in_progress"})
    assert running.status == "in_progress"
    assert running.server is server
    assert planned.status == "completed"
    with pytest.raises(TypeError, match="created_at"):
        Backup.model_construct(id=1, server=server, backup_type="manual", status="completed")


async def test_the_inventory_shares_across_a_listing_that_moved(
    sandbox: Sandbox, sandbox_transport: httpx.ASGITransport, sandbox_api_url: str
) -> None:
    """Backups gone, new and in another order since the last read: each equal one is still shared,
    a new one is itself, and none is taken for another."""
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, SandboxTime(sandbox)) as client:
        inventory = Inventory(client)
        views, _ = await inventory.read([1, 2, 3])
        gone = views[1].backups[0]
        sandbox.state.delete_backup(gone.id)
        new = sandbox.state.create_backup(2, "new one")
        again, _ = await inventory.read([1, 2, 3])
        earlier = {b.id: b for view in views.values() for b in view.backups}
        for sid, view in again.items():
            for backup in view.backups:
                assert backup.server_id == sid
                if backup.id == new.id:
                    assert all(backup is not old for old in earlier.values())
                else:
                    assert backup is earlier[backup.id]
        assert gone.id not in {b.id for b in again[1].backups}
        # the same backups listed in reverse: still the same instances
        share = inventory._sharer()
        listed = [b for sid in (3, 2, 1) for b in reversed(again[sid].backups)]
        copies = [Backup(**b.to_api()) for b in listed]
        assert all(share(copy) is b for copy, b in zip(copies, listed, strict=True))
