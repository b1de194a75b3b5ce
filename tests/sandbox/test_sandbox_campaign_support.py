"""What the fault campaign needs of the sandbox: slow creates, counts of injected faults, a rate limit
without RateLimit-* headers, and notes and snapshots written into the event log."""

from __future__ import annotations

import argparse
from datetime import timedelta

import httpx
import pytest

from rotator.sandbox import DroppedConnection, FaultOptions, Sandbox
from rotator.sandbox.app import INJECTED_KINDS
from rotator.sandbox.cli import add_arguments, options_from_args
from rotator.sandbox.testing import ManualMonotonic

BACKUPS = "/api/v1/backups/"
WEB = 12345


async def test_slow_creates_take_slow_seconds(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """With slow_rate 1 a create is still in progress after create_seconds and ends after slow_seconds."""
    sandbox.update_faults(slow_rate=1.0, slow_seconds=600)
    created = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    sandbox.clock.advance(sandbox.options.create_seconds)
    assert sandbox.state.backup(created["id"]).status == "in_progress"
    sandbox.clock.advance(600 - sandbox.options.create_seconds)
    assert sandbox.state.backup(created["id"]).status == "completed"
    (completed,) = sandbox.state.events("completed")
    assert completed.at - sandbox.state.events("created")[0].at == timedelta(seconds=600)
    assert sandbox.injected()["slow"] == 1


async def test_a_partial_slow_rate_is_seeded(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """About the asked share is slow, the same creates on every run with one seed."""

    async def slow_ones() -> list[int]:
        sandbox.update_faults(slow_rate=0.3, slow_seconds=600)
        ids = [(await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()["id"] for _ in range(60)]
        sandbox.clock.advance(sandbox.options.create_seconds)
        return [i for i in ids if sandbox.state.backup(i).status == "in_progress"]

    first = await slow_ones()
    assert 6 <= len(first) <= 36
    assert sandbox.injected()["slow"] == len(first)
    sandbox.reset()
    assert await slow_ones() == first


async def test_injected_faults_are_counted_by_kind(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_monotonic: ManualMonotonic
) -> None:
    """5xx, 429, dropped creates and creates set to fail, each counted; reset forgets them."""
    nothing = dict.fromkeys(INJECTED_KINDS, 0)
    assert sandbox.injected() == nothing
    sandbox.update_faults(error_rate=1.0)
    await sandbox_client.get(BACKUPS)
    sandbox.update_faults(error_rate=0.0, drop_rate=1.0, fail_rate=1.0)
    with pytest.raises(DroppedConnection):
        await sandbox_client.post(BACKUPS, json={"server_id": WEB})
    sandbox.update_faults(drop_rate=0.0, rate_limit=1.0, burst=1)
    assert [(await sandbox_client.get(BACKUPS)).status_code for _ in range(2)] == [200, 429]
    assert sandbox.injected() == {**nothing, "server_error": 1, "rate_limited": 1, "dropped": 1, "failed": 1}
    assert (await sandbox_client.get("/_sandbox/injected")).json() == sandbox.injected()
    sandbox.reset()
    assert sum(sandbox.injected().values()) == 0


async def test_a_rate_limit_without_headers_still_says_retry_after(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """rate_limit_headers false: no RateLimit-* on any answer; a 429 keeps its Retry-After."""
    sandbox.update_faults(rate_limit=1.0, burst=1, rate_limit_headers=False)
    allowed, refused = [await sandbox_client.get(BACKUPS) for _ in range(2)]
    assert allowed.status_code == 200
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    for response in (allowed, refused):
        assert not [name for name in response.headers if name.lower().startswith("ratelimit-")]


@pytest.mark.parametrize(
    "changes", [{"slow_rate": 1.5}, {"slow_seconds": -1}, {"slow_seconds": "1h"}, {"rate_limit_headers": 1}]
)
def test_bad_campaign_fault_options_are_refused(sandbox: Sandbox, changes: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        sandbox.update_faults(**changes)
    assert sandbox.faults == FaultOptions()


def test_notes_and_snapshots_land_in_the_event_log_in_order(sandbox: Sandbox) -> None:
    """A note comes after every change due before it; a snapshot lists the backups present then."""
    state = sandbox.state
    record = state.create_backup(WEB, "new")
    sandbox.clock.advance(sandbox.options.create_seconds)
    note = state.note({"what": "killed", "process": 3})
    snapshot = state.snapshot(phase="one")
    kinds = [event.kind for event in state.events()]
    assert kinds == ["created", "completed", "note", "note"]
    assert note.to_json()["note"] == {"what": "killed", "process": 3}
    assert note.to_json()["exact"].endswith(".000000Z")
    assert "backup" not in note.to_json()
    listed = {b["id"]: b for b in snapshot.to_json()["note"]["backups"]}
    assert snapshot.to_json()["note"]["what"] == "snapshot"
    assert snapshot.to_json()["note"]["phase"] == "one"
    assert listed[record.id]["status"] == "completed"
    assert set(listed) == {b.id for b in state.backups()}
    assert [event.kind for event in state.events("note")] == ["note", "note"]


async def test_notes_can_be_written_over_http(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """POST /_sandbox/events: a note, or a snapshot; anything else is a 400 and writes nothing."""
    sandbox_client.headers.pop("Authorization")
    written = await sandbox_client.post("/_sandbox/events", json={"note": {"what": "started", "process": 1}})
    assert written.status_code == 201
    assert written.json()["note"] == {"what": "started", "process": 1}
    snapshot = await sandbox_client.post("/_sandbox/events", json={"snapshot": True, "note": {"phase": "x"}})
    assert snapshot.status_code == 201
    assert len(snapshot.json()["note"]["backups"]) == len(sandbox.state.backups())
    for bad in ({}, {"note": []}, {"note": {}}, {"snapshot": "yes"}, {"other": 1}):
        response = await sandbox_client.post("/_sandbox/events", json=bad)
        assert response.status_code == 400, bad
    log = (await sandbox_client.get("/_sandbox/events", params={"kind": "note"})).json()
    assert log["count"] == 2


def test_the_cli_sets_the_campaign_faults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--slow-rate", "0.04", "--slow-seconds", "90", "--no-rate-limit-headers"])
    faults = options_from_args(args).faults
    assert (faults.slow_rate, faults.slow_seconds, faults.rate_limit_headers) == (0.04, 90.0, False)
    defaults = options_from_args(parser.parse_args([])).faults
    assert (defaults.slow_rate, defaults.rate_limit_headers) == (0.0, True)
