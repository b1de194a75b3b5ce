"""Faults of time: an API clock that is off, listings that lag the writes, create answers held back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from rotator.sandbox import Sandbox, SandboxOptions, create_app, parse_instant, running_sandbox, sandbox_of
from rotator.sandbox.testing import RecordingSleep

BACKUPS = "/api/v1/backups/"
WEB = 12345
NOW = datetime(2025, 1, 16, 15, 45, tzinfo=UTC)


async def listed(client: httpx.AsyncClient, **params: Any) -> dict[int, dict[str, Any]]:
    """Every backup of a listing read to its end, by id."""
    backups: dict[int, dict[str, Any]] = {}
    url: str | None = BACKUPS
    query: dict[str, Any] | None = params
    while url is not None:
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        backups.update((backup["id"], backup) for backup in page["results"])
        url, query = page["next"], None
    return backups


# -- api_clock_offset ---------------------------------------------------------------------


async def test_a_clock_behind_writes_created_at_behind_but_finishes_on_the_sandbox_clock(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_now: datetime
) -> None:
    """An hour behind: created_at says 14:45 at 15:45; the create still completes create_seconds later."""
    sandbox.update_faults(api_clock_offset=-3600)
    created = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    assert created["created_at"] == "2025-01-16T14:45:00Z"
    assert sandbox.state.events("created")[0].at == sandbox_now
    sandbox.clock.advance(sandbox.options.create_seconds)
    backup = (await listed(sandbox_client, server_id=WEB))[created["id"]]
    assert backup["status"] == "completed"
    assert backup["created_at"] == "2025-01-16T14:45:00Z"


async def test_automatic_backups_are_stamped_by_the_api_clock_and_expire_on_the_sandbox_clock(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Two minutes ahead: the 03:00 automatic backup says 03:02 (expiring 30 days after that), and it
    vanishes 30 days after 03:00 on the sandbox clock, before the expires_at it shows."""
    sandbox.update_faults(api_clock_offset=120)
    sandbox.clock.set(datetime(2025, 1, 17, 3, 0, tzinfo=UTC))
    (event,) = [e for e in sandbox.state.events("created") if e.backup["server"]["id"] == WEB]
    assert event.at == datetime(2025, 1, 17, 3, 0, tzinfo=UTC)
    assert event.backup["created_at"] == "2025-01-17T03:02:00Z"
    assert event.backup["expires_at"] == "2025-02-16T03:02:00Z"
    backup_id = event.backup["id"]
    sandbox.clock.set(datetime(2025, 2, 16, 2, 59, 59, tzinfo=UTC))
    assert backup_id in await listed(sandbox_client, server_id=WEB)
    sandbox.clock.advance(1)
    assert backup_id not in await listed(sandbox_client, server_id=WEB)
    (expired,) = [e for e in sandbox.state.events("expired") if e.backup["id"] == backup_id]
    assert expired.at == datetime(2025, 2, 16, 3, 0, tzinfo=UTC)
    assert parse_instant(expired.backup["expires_at"]) > expired.at


# -- listing_lag --------------------------------------------------------------------------


async def test_a_lagging_listing_shows_a_new_backup_late_and_its_completion_later(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Lag 60 s, creates take 30 s: unlisted until 60 s, in progress until 90 s, then completed."""
    sandbox.update_faults(listing_lag=60)
    created = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    assert sandbox.state.backup(created["id"]).status == "in_progress"  # the truth, at once
    sandbox.clock.advance(59)
    assert created["id"] not in await listed(sandbox_client, server_id=WEB)
    sandbox.clock.advance(1)
    seen = (await listed(sandbox_client, server_id=WEB))[created["id"]]
    assert (seen["status"], seen["size_mb"]) == ("in_progress", None)
    sandbox.clock.advance(29)
    assert (await listed(sandbox_client, server_id=WEB))[created["id"]]["status"] == "in_progress"
    sandbox.clock.advance(1)
    done = (await listed(sandbox_client, server_id=WEB))[created["id"]]
    assert done["status"] == "completed"
    assert done["size_mb"] == sandbox.state.backup(created["id"]).size_mb


async def test_a_lagging_listing_keeps_a_deleted_backup_until_the_lag_passed(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """A deleted backup is listed (and counted) for the lag; a DELETE of it meanwhile is 404."""
    sandbox.update_faults(listing_lag=60)
    before = await listed(sandbox_client, server_id=WEB)
    victim = next(b for b in sandbox.state.backups(server_id=WEB) if b.backup_type == "manual")
    assert (await sandbox_client.delete(f"{BACKUPS}{victim.id}/")).status_code == 204
    sandbox.clock.advance(59)
    still = await listed(sandbox_client, server_id=WEB)
    assert still == before
    first = (await sandbox_client.get(BACKUPS, params={"server_id": WEB})).json()
    assert first["count"] == len(before)
    assert (await sandbox_client.delete(f"{BACKUPS}{victim.id}/")).status_code == 404
    sandbox.clock.advance(1)
    after = await listed(sandbox_client, server_id=WEB)
    assert set(after) == set(before) - {victim.id}
    assert sandbox.state.remembered == 0  # the graveyard is empty once the lag passed


async def test_a_backup_not_listed_yet_can_be_deleted(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """DELETE acts on the true state: a backup too new to be listed is deleted (204) and never shows."""
    sandbox.update_faults(listing_lag=60)
    created = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    sandbox.clock.advance(10)
    assert (await sandbox_client.delete(f"{BACKUPS}{created['id']}/")).status_code == 204
    for _ in range(3):
        assert created["id"] not in await listed(sandbox_client, server_id=WEB)
        sandbox.clock.advance(30)


async def test_a_lagging_listing_filters_the_graveyard_too(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """A lingering deleted manual backup shows in manual listings of its server, not in automatic ones."""
    sandbox.update_faults(listing_lag=30)
    victim = next(b for b in sandbox.state.backups(server_id=WEB) if b.backup_type == "manual")
    sandbox.state.delete_backup(victim.id)
    assert victim.id in await listed(sandbox_client, server_id=WEB, backup_type="manual")
    assert victim.id in await listed(sandbox_client, backup_type="manual")
    assert victim.id not in await listed(sandbox_client, backup_type="automatic")
    assert victim.id not in await listed(sandbox_client, server_id=12346)


async def test_no_lag_remembers_nothing(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """Without a lag no history is kept and listings are the truth; turning a lag off forgets it."""
    created = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    assert created["id"] in await listed(sandbox_client, server_id=WEB)
    victim = sandbox.state.backups(server_id=WEB)[0]
    await sandbox_client.delete(f"{BACKUPS}{victim.id}/")
    sandbox.clock.advance(sandbox.options.create_seconds)
    assert sandbox.state.remembered == 0
    sandbox.update_faults(listing_lag=600)
    await sandbox_client.post(BACKUPS, json={"server_id": WEB})
    assert sandbox.state.remembered == 1
    sandbox.update_faults(listing_lag=0)
    assert sandbox.state.remembered == 0
    assert (await listed(sandbox_client, server_id=WEB)).keys() == {
        b.id for b in sandbox.state.backups(server_id=WEB)
    }


# -- create_answer_delay --------------------------------------------------------------------


class CountingCreatesSleep:
    """A sleep that returns at once, noting how long it was asked and how many backups were created then."""

    def __init__(self) -> None:
        self.sandbox: Sandbox | None = None
        self.calls: list[tuple[float, int]] = []

    async def __call__(self, seconds: float) -> None:
        assert self.sandbox is not None
        self.calls.append((seconds, len(self.sandbox.state.events("created"))))


async def test_a_delayed_answer_is_held_after_the_backup_was_created(sandbox_now: datetime) -> None:
    """The sleep comes after the create (the backup exists while the answer waits), for the given seconds."""
    sleep = CountingCreatesSleep()
    app = create_app(SandboxOptions(seed=7, frozen_clock=sandbox_now), sleep=sleep)
    sandbox = sleep.sandbox = sandbox_of(app)
    sandbox.update_faults(create_answer_delay=2.5)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sandbox.test",
        headers={"Authorization": f"Bearer {sandbox.token}"},
    ) as client:
        response = await client.post(BACKUPS, json={"server_id": WEB})
        assert (await client.get(BACKUPS)).status_code == 200
    assert response.status_code == 201
    assert response.json()["id"] == sandbox.state.events("created")[0].backup["id"]
    assert sleep.calls == [(2.5, 1)]  # once, with the backup already there; listings are not held
    assert sandbox.injected()["delayed"] == 1


async def test_the_delay_uses_the_sandbox_sleep(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_sleep: RecordingSleep
) -> None:
    """Each create is held ``create_answer_delay`` through the injected sleep, after any latency."""
    sandbox.update_faults(create_answer_delay=1.5, latency=0.1)
    for _ in range(2):
        assert (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).status_code == 201
    assert sandbox_sleep.calls == [0.1, 1.5, 0.1, 1.5]
    assert sandbox.injected()["delayed"] == 2


def test_a_delayed_answer_outlasts_a_clients_read_timeout_over_a_socket(sandbox_now: datetime) -> None:
    """Over loopback a 0.2 s read timeout fires on a 1 s delay, and the backup exists all the same."""
    options = SandboxOptions(seed=7, frozen_clock=sandbox_now)
    with running_sandbox(options) as running:
        running.sandbox.update_faults(create_answer_delay=1.0)
        timeout = httpx.Timeout(5.0, read=0.2)
        headers = {"Authorization": f"Bearer {running.token}"}
        started = time.monotonic()
        with httpx.Client(headers=headers, timeout=timeout) as client, pytest.raises(httpx.ReadTimeout):
            client.post(f"{running.api_url}/backups/", json={"server_id": WEB, "description": "unseen"})
        assert time.monotonic() - started < 0.9
        (created,) = running.state.events("created")
        assert created.backup["description"] == "unseen"
        assert running.sandbox.injected()["delayed"] == 1


def test_time_faults_are_off_by_default_and_can_be_turned_off(sandbox: Sandbox) -> None:
    """Offset, lag and delay default to 0, and 0 turns each off again."""
    faults = sandbox.faults
    assert (faults.api_clock_offset, faults.listing_lag, faults.create_answer_delay) == (0.0, 0.0, 0.0)
    changed = sandbox.update_faults(api_clock_offset=-30, listing_lag=5, create_answer_delay=3)
    assert (changed.api_clock_offset, changed.listing_lag, changed.create_answer_delay) == (-30.0, 5.0, 3.0)
    back = sandbox.update_faults(api_clock_offset=0, listing_lag=0, create_answer_delay=0)
    assert back == type(faults)()
