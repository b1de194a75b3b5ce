"""``/_sandbox``: stats, events, clock, faults and reset, without a token."""

from __future__ import annotations

import httpx
import pytest

from rotator.sandbox import Sandbox

BACKUPS = "/api/v1/backups/"
WEB = 12345


@pytest.fixture(name="anonymous")
def fixture_anonymous(sandbox_client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The in-process client without its token (control routes need none)."""
    sandbox_client.headers.pop("Authorization")
    return sandbox_client


async def test_stats_count_requests_by_route_template_and_status(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Templates, not concrete paths; control routes are not counted."""
    await sandbox_client.get(BACKUPS)
    await sandbox_client.get(BACKUPS, params={"page": 2})
    await sandbox_client.get(BACKUPS, headers={"Authorization": "Bearer nope"})
    await sandbox_client.delete(f"{BACKUPS}999999/")
    await sandbox_client.delete(f"{BACKUPS}888888/")
    await sandbox_client.get("/api/v1/nothing/here/")
    stats = (await sandbox_client.get("/_sandbox/stats")).json()
    assert stats == {
        "requests": {
            "DELETE /api/v1/backups/{backup_id}/": {"404": 2},
            "GET /api/v1/backups/": {"200": 2, "401": 1},
            "GET /api/v1/{unknown}": {"404": 1},
        },
        "total": 6,
    }


async def test_events_log_every_kind_with_clock_times(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """created, completed, failed, deleted, restored, expired: each with its clock time and backup."""
    first = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    sandbox.update_faults(fail_rate=1.0)
    second = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    await sandbox_client.post("/_sandbox/clock", json={"advance": sandbox.options.create_seconds})
    await sandbox_client.post(f"/api/v1/servers/{WEB}/restore/", json={"backup_id": first["id"]})
    await sandbox_client.delete(f"{BACKUPS}{second['id']}/")
    await sandbox_client.post("/_sandbox/clock", json={"advance": 86400})

    log = (await sandbox_client.get("/_sandbox/events")).json()
    kinds = [event["kind"] for event in log["events"]]
    assert log["count"] == len(kinds)
    assert kinds[:6] == ["created", "created", "completed", "failed", "restored", "deleted"]
    assert {"expired", "created"} <= set(kinds[6:])
    assert log["events"][0]["at"] == "2025-01-16T15:45:00Z"
    assert log["events"][2]["at"] == "2025-01-16T15:45:30Z"
    assert log["events"][5]["backup"]["id"] == second["id"]
    assert log["events"][5]["backup"]["status"] == "failed"
    assert [event["seq"] for event in log["events"]] == list(range(1, len(kinds) + 1))
    deleted = (await sandbox_client.get("/_sandbox/events", params={"kind": "deleted"})).json()
    assert deleted["count"] == 1


async def test_the_clock_can_be_read_set_frozen_and_advanced(anonymous: httpx.AsyncClient) -> None:
    """GET shows it; POST freeze/set/advance moves it."""
    assert (await anonymous.get("/_sandbox/clock")).json() == {
        "now": "2025-01-16T15:45:00Z",
        "frozen": True,
    }
    moved = await anonymous.post("/_sandbox/clock", json={"set": "2025-02-01T00:00:00+01:00"})
    assert moved.json()["now"] == "2025-01-31T23:00:00Z"
    advanced = await anonymous.post("/_sandbox/clock", json={"advance": 3600})
    assert advanced.json()["now"] == "2025-02-01T00:00:00Z"
    unfrozen = await anonymous.post("/_sandbox/clock", json={"freeze": False})
    assert unfrozen.json()["frozen"] is False
    refrozen = await anonymous.post("/_sandbox/clock", json={"freeze": True, "set": "2025-03-01T00:00:00Z"})
    assert refrozen.json() == {"now": "2025-03-01T00:00:00Z", "frozen": True}


@pytest.mark.parametrize(
    "body", [{"set": "yesterday"}, {"set": "2025-01-01T00:00:00"}, {"advance": "1h"}, {"freeze": 1}, {"x": 1}]
)
async def test_bad_clock_changes_are_400(anonymous: httpx.AsyncClient, body: dict[str, object]) -> None:
    """Unreadable instants, non-numbers and unknown fields are refused."""
    response = await anonymous.post("/_sandbox/clock", json=body)
    assert response.status_code == 400
    assert "detail" in response.json()


async def test_faults_can_be_changed_at_runtime(anonymous: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """POST /_sandbox/faults changes the named options and shows them all."""
    response = await anonymous.post("/_sandbox/faults", json={"error_rate": 0.5, "rate_limit": 5})
    assert response.status_code == 200
    assert response.json()["error_rate"] == 0.5
    assert sandbox.faults.rate_limit == 5.0
    assert (await anonymous.get("/_sandbox/faults")).json() == response.json()
    bad = await anonymous.post("/_sandbox/faults", json={"error_rate": 2})
    assert bad.status_code == 400
    assert sandbox.faults.error_rate == 0.5


async def test_reset_restores_the_starting_fleet(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """Reset forgets creates, deletes, events, stats and changed faults."""
    before = [b.id for b in sandbox.state.backups()]
    await sandbox_client.post(BACKUPS, json={"server_id": WEB})
    await sandbox_client.delete(f"{BACKUPS}{before[0]}/")
    sandbox.update_faults(latency=1.0)
    response = await sandbox_client.post("/_sandbox/reset")
    assert response.status_code == 200
    assert [b.id for b in sandbox.state.backups()] == before
    assert sandbox.state.events() == []
    assert sandbox.stats() == {"requests": {}, "total": 0}
    assert sandbox.faults.latency == 0.0
