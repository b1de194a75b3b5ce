"""Injected faults: latency, 5xx, rate limit, dropped creates, failed backups; all off by default."""

from __future__ import annotations

import httpx
import pytest

from rotator.sandbox import DroppedConnection, FaultOptions, Sandbox
from rotator.sandbox.testing import ManualMonotonic, RecordingSleep

BACKUPS = "/api/v1/backups/"
WEB = 12345


async def test_no_fault_is_on_by_default(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_sleep: RecordingSleep
) -> None:
    """Default options inject nothing and send no RateLimit headers."""
    assert sandbox.faults == FaultOptions()
    for _ in range(50):
        response = await sandbox_client.get(BACKUPS)
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers
    assert sandbox_sleep.calls == []


async def test_latency_is_added_to_every_api_request(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_sleep: RecordingSleep
) -> None:
    """Each API request sleeps ``latency`` through the injected sleep; /_sandbox does not."""
    sandbox.update_faults(latency=0.25)
    await sandbox_client.get(BACKUPS)
    await sandbox_client.post(BACKUPS, json={"server_id": WEB})
    await sandbox_client.get("/_sandbox/stats")
    assert sandbox_sleep.calls == [0.25, 0.25]


async def test_the_error_rate_answers_random_5xx_before_processing(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """With rate 1 every request is a 500/502/503/504 and nothing is created."""
    sandbox.update_faults(error_rate=1.0)
    statuses = set()
    for _ in range(40):
        response = await sandbox_client.post(BACKUPS, json={"server_id": WEB})
        statuses.add(response.status_code)
    assert statuses == {500, 502, 503, 504}
    assert sandbox.state.events("created") == []


async def test_a_partial_error_rate_is_seeded(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """About the asked share fails, the same way on every run with one seed."""
    sandbox.update_faults(error_rate=0.3)
    statuses = [(await sandbox_client.get(BACKUPS)).status_code for _ in range(200)]
    failures = sum(status >= 500 for status in statuses)
    assert 30 <= failures <= 90
    sandbox.reset()
    sandbox.update_faults(error_rate=0.3)
    assert [(await sandbox_client.get(BACKUPS)).status_code for _ in range(200)] == statuses


async def test_the_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_monotonic: ManualMonotonic
) -> None:
    """Beyond the burst: 429, whole-second Retry-After, a detail; headers on every answer; refills in time."""
    sandbox.update_faults(rate_limit=1.0, burst=3)
    answers = [await sandbox_client.get(BACKUPS) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["RateLimit-Limit"] == "3" for a in answers)
    assert all(a.headers["RateLimit-Reset"].isdigit() for a in answers)
    throttled = answers[3]
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json() == {"detail": "Request was throttled. Expected available in 1 second."}
    sandbox_monotonic.advance(1.0)
    assert (await sandbox_client.get(BACKUPS)).status_code == 200
    stats = sandbox.stats()["requests"]["GET /api/v1/backups/"]
    assert stats == {"200": 4, "429": 1}


async def test_rate_limit_headers_come_on_errors_too(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """A 401 or 404 also carries the RateLimit headers when a limit is set."""
    sandbox.update_faults(rate_limit=10.0)
    response = await sandbox_client.delete(f"{BACKUPS}999999/")
    assert response.status_code == 404
    assert response.headers["RateLimit-Limit"] == "10"
    unauthenticated = await sandbox_client.get(BACKUPS, headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    assert "RateLimit-Remaining" in unauthenticated.headers


async def test_a_dropped_create_still_creates_the_backup(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """In process the client gets DroppedConnection, yet the backup exists and completes."""
    sandbox.update_faults(drop_rate=1.0)
    with pytest.raises(DroppedConnection):
        await sandbox_client.post(BACKUPS, json={"server_id": WEB, "description": "lost answer"})
    created = sandbox.state.events("created")
    assert len(created) == 1
    assert created[0].backup["description"] == "lost answer"
    listed = (await sandbox_client.get(BACKUPS, params={"server_id": WEB, "page": "last"})).json()
    assert listed["results"][-1]["id"] == created[0].backup["id"]
    assert sandbox.stats()["requests"]["POST /api/v1/backups/"] == {"dropped": 1}


async def test_drops_only_hit_creates(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """Listing, deleting and restoring are never dropped."""
    sandbox.update_faults(drop_rate=1.0)
    assert (await sandbox_client.get(BACKUPS)).status_code == 200
    victim = sandbox.state.backups(server_id=WEB, backup_type="manual")[0]
    assert (await sandbox_client.delete(f"{BACKUPS}{victim.id}/")).status_code == 204


async def test_the_fail_rate_makes_creates_end_failed(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """With fail rate 1 a create is accepted, then ends ``failed`` without a size."""
    sandbox.update_faults(fail_rate=1.0)
    created = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    assert created["status"] == "in_progress"
    sandbox.clock.advance(sandbox.options.create_seconds)
    record = sandbox.state.backup(created["id"])
    assert record.status == "failed"
    assert record.size_mb is None


@pytest.mark.parametrize(
    "changes",
    [
        {"error_rate": 1.5},
        {"latency": -1},
        {"rate_limit": 0},
        {"burst": 0},
        {"loss": 0.1},
        {"drop_rate": "x"},
    ],
)
def test_bad_fault_options_are_refused(sandbox: Sandbox, changes: dict[str, object]) -> None:
    """Out-of-range, mistyped or unknown fault options raise and change nothing."""
    with pytest.raises((ValueError, TypeError)):
        sandbox.update_faults(**changes)
    assert sandbox.faults == FaultOptions()
