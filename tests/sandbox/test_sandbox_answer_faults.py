"""Faults of what the API says and who else acts: lying create answers, cut descriptions, a 401 that
echoes the token, and a third party deleting backups."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import httpx
import pytest

from rotator.sandbox import FaultOptions, Sandbox, SandboxOptions

BACKUPS = "/api/v1/backups/"
WEB = 12345


# -- lie_known_id_rate, lie_other_server_rate ------------------------------------------------


async def test_a_create_can_answer_with_an_older_backups_id(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """The backup is created, but the 201 names another backup of the server that already existed."""
    older = {b.id for b in sandbox.state.backups(server_id=WEB)}
    sandbox.update_faults(lie_known_id_rate=1.0)
    response = await sandbox_client.post(BACKUPS, json={"server_id": WEB, "description": "mine"})
    assert response.status_code == 201
    answer = response.json()
    (created,) = sandbox.state.events("created")
    real_id = created.backup["id"]
    assert answer["id"] != real_id
    assert answer["id"] in older
    assert {k: v for k, v in answer.items() if k not in ("id", "message")} == {
        k: v for k, v in created.backup.items() if k != "id"
    }  # only the id lies
    assert sandbox.state.backup(real_id).description == "mine"
    assert sandbox.injected()["lie_known_id"] == 1


@pytest.mark.parametrize(
    "sandbox_options",
    [SandboxOptions(seed=7, fleet="empty", servers=2)],
    ids=["empty"],
)
async def test_a_server_without_backups_gets_the_truth(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """No older backup to name: the first create answers its own id and counts no lie."""
    sandbox.update_faults(lie_known_id_rate=1.0)
    first = (await sandbox_client.post(BACKUPS, json={"server_id": 1})).json()
    assert first["id"] == sandbox.state.events("created")[0].backup["id"]
    assert sandbox.injected()["lie_known_id"] == 0
    second = (await sandbox_client.post(BACKUPS, json={"server_id": 1})).json()
    assert second["id"] == first["id"]  # now there is one to name
    assert sandbox.injected()["lie_known_id"] == 1


async def test_a_create_can_answer_naming_another_server(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """The backup is made for the server asked, but the 201's ``server`` is another existing server."""
    servers = {server.id: server.name for server in sandbox.state.servers()}
    sandbox.update_faults(lie_other_server_rate=1.0)
    answer = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    assert answer["server"]["id"] != WEB
    assert servers[answer["server"]["id"]] == answer["server"]["name"]
    assert sandbox.state.backup(answer["id"]).server_id == WEB
    assert sandbox.injected()["lie_other_server"] == 1


@pytest.mark.parametrize(
    "sandbox_options",
    [SandboxOptions(seed=7, fleet="empty", servers=1)],
    ids=["one-server"],
)
async def test_a_fleet_of_one_server_gets_the_truth(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """No other server to name: the answer names the right one."""
    sandbox.update_faults(lie_other_server_rate=1.0)
    answer = (await sandbox_client.post(BACKUPS, json={"server_id": 1})).json()
    assert answer["server"]["id"] == 1
    assert sandbox.injected()["lie_other_server"] == 0


async def test_lies_are_seeded_and_partial(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """About the asked share of answers lies, the same ones with the same seed."""

    async def liars() -> list[int]:
        sandbox.update_faults(lie_known_id_rate=0.3)
        lied = []
        for index in range(60):
            answer = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
            if answer["id"] != sandbox.state.events("created")[-1].backup["id"]:
                lied.append(index)
        return lied

    first = await liars()
    assert 6 <= len(first) <= 36
    assert sandbox.injected()["lie_known_id"] == len(first)
    sandbox.reset()
    assert await liars() == first


# -- description_max_length --------------------------------------------------------------------


async def test_a_long_description_is_cut_silently_when_a_limit_is_set(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """With a limit of 20, a 300-character description is stored and answered as its first 20."""
    sandbox.update_faults(description_max_length=20)
    description = "Nightly " + "x" * 280 + " [rotator:nightly@2025-01-16T02:00Z]"
    response = await sandbox_client.post(BACKUPS, json={"server_id": WEB, "description": description})
    assert response.status_code == 201
    assert response.json()["description"] == description[:20]
    assert sandbox.state.backup(response.json()["id"]).description == description[:20]
    short = await sandbox_client.post(BACKUPS, json={"server_id": WEB, "description": "short"})
    assert short.json()["description"] == "short"


async def test_a_limit_above_255_accepts_longer_descriptions(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """The limit replaces the 400 for more than 255 characters: 300 fit under a limit of 1000."""
    sandbox.update_faults(description_max_length=1000)
    description = "y" * 300
    response = await sandbox_client.post(BACKUPS, json={"server_id": WEB, "description": description})
    assert response.status_code == 201
    assert response.json()["description"] == description
    sandbox.update_faults(description_max_length=None)
    refused = await sandbox_client.post(BACKUPS, json={"server_id": WEB, "description": description})
    assert refused.status_code == 400


# -- auth_echo ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        (
            {"Authorization": "Bearer wrong-token"},
            "Invalid token. You sent: Authorization: Bearer wrong-token",
        ),
        (
            {"Authorization": "Token sandbox-token"},
            "Authentication credentials were not provided. You sent: Authorization: Token sandbox-token",
        ),
        ({}, "Authentication credentials were not provided."),
    ],
)
async def test_a_401_echoes_the_authorization_header_under_auth_echo(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, headers: dict[str, str], detail: str
) -> None:
    """The detail repeats the header as sent (nothing to repeat when none was sent)."""
    sandbox.update_faults(auth_echo=True)
    sandbox_client.headers.pop("Authorization")
    response = await sandbox_client.get(BACKUPS, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_auth_echo_leaves_good_tokens_alone(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """A right token is answered as ever; off, a 401 says only DRF's detail."""
    sandbox.update_faults(auth_echo=True)
    assert (await sandbox_client.get(BACKUPS)).status_code == 200
    sandbox.update_faults(auth_echo=False)
    response = await sandbox_client.get(BACKUPS, headers={"Authorization": "Bearer leaked"})
    assert response.json() == {"detail": "Invalid token."}


# -- third parties ---------------------------------------------------------------------------------


def newest_completed_manual(sandbox: Sandbox, server_id: int) -> int:
    """The id of a server's newest completed manual backup."""
    candidates = [
        b for b in sandbox.state.backups(server_id=server_id)
        if b.backup_type == "manual" and b.status == "completed"
    ]  # fmt: skip
    return max(candidates, key=lambda b: (b.created_at, b.id)).id


async def test_a_third_party_deletes_a_servers_newest_completed_manual_backup(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Rate 1: before each API request one server's newest completed manual backup goes, logged by
    the third party; the request itself is answered as usual."""
    sandbox.update_faults(third_party_delete_rate=1.0)
    newest = {server.id: newest_completed_manual(sandbox, server.id) for server in sandbox.state.servers()}
    response = await sandbox_client.get(BACKUPS, params={"server_id": WEB})
    assert response.status_code == 200
    (deleted,) = sandbox.state.events("deleted")
    event = deleted.to_json()
    assert event["by"] == "third_party"
    assert event["backup"]["id"] == newest[event["backup"]["server"]["id"]]
    assert not sandbox.state.exists(event["backup"]["id"])
    assert sandbox.injected()["third_party_delete"] == 1


async def test_a_third_party_acts_only_after_the_token_check(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Refused (401) requests do not reach the third party; nor do /_sandbox requests."""
    sandbox.update_faults(third_party_delete_rate=1.0)
    await sandbox_client.get(BACKUPS, headers={"Authorization": "Bearer nope"})
    await sandbox_client.get("/_sandbox/stats")
    assert sandbox.state.events("deleted") == []


@pytest.mark.parametrize(
    "sandbox_options",
    [SandboxOptions(seed=7, fleet="empty", servers=2)],
    ids=["empty"],
)
async def test_a_third_party_finds_nothing_to_delete_in_an_empty_fleet(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """No completed manual backup anywhere: nothing is deleted and nothing counted."""
    sandbox.update_faults(third_party_delete_rate=1.0)
    await sandbox_client.post(BACKUPS, json={"server_id": 1})  # in progress: not a candidate
    await sandbox_client.get(BACKUPS)
    assert sandbox.state.events("deleted") == []
    assert sandbox.injected()["third_party_delete"] == 0


async def test_a_third_party_delete_can_be_asked_for(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """POST /_sandbox/third-party/delete deletes that backup (no token), answering its ``deleted`` event."""
    sandbox_client.headers.pop("Authorization")
    victim = sandbox.state.backups(server_id=WEB)[0]
    response = await sandbox_client.post("/_sandbox/third-party/delete", json={"backup_id": victim.id})
    assert response.status_code == 200
    event = response.json()
    assert (event["kind"], event["by"], event["backup"]["id"]) == ("deleted", "third_party", victim.id)
    assert event == sandbox.state.events("deleted")[0].to_json()
    assert not sandbox.state.exists(victim.id)
    again = await sandbox_client.post("/_sandbox/third-party/delete", json={"backup_id": victim.id})
    assert again.status_code == 404
    for bad in ({}, {"backup_id": "1"}, {"backup_id": victim.id, "extra": 1}):
        assert (await sandbox_client.post("/_sandbox/third-party/delete", json=bad)).status_code == 400
    assert sandbox.stats()["total"] == 0  # control routes are not counted


def test_the_state_deletes_for_a_third_party(sandbox: Sandbox) -> None:
    """``delete_backup(..., by="third_party")`` logs ``by``; a plain one does not."""
    first, second = sandbox.state.backups(server_id=WEB)[:2]
    sandbox.state.delete_backup(first.id, by="third_party")
    sandbox.state.delete_backup(second.id)
    by_them, by_client = (event.to_json() for event in sandbox.state.events("deleted"))
    assert by_them["by"] == "third_party"
    assert "by" not in by_client


# -- the options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"api_clock_offset": math.inf},
        {"api_clock_offset": math.nan},
        {"api_clock_offset": "1h"},
        {"listing_lag": -1},
        {"listing_lag": None},
        {"create_answer_delay": -0.1},
        {"create_answer_delay": math.inf},
        {"page_shift_rate": 1.5},
        {"lie_known_id_rate": -0.1},
        {"lie_other_server_rate": 2},
        {"empty_page_rate": "all"},
        {"third_party_delete_rate": True},
        {"description_max_length": -1},
        {"description_max_length": 2.5},
        {"description_max_length": True},
        {"description_max_length": math.inf},
        {"auth_echo": 1},
        {"auth_echo": None},
    ],
)
def test_bad_values_of_the_new_faults_are_refused(sandbox: Sandbox, changes: dict[str, Any]) -> None:
    """Out of range or mistyped: ValueError or TypeError, and the faults in force stay as they were."""
    with pytest.raises((ValueError, TypeError)):
        sandbox.update_faults(**changes)
    assert sandbox.faults == FaultOptions()


def test_the_new_faults_are_checked_when_constructed() -> None:
    """``FaultOptions(...)`` refuses what ``updated`` refuses."""
    for bad in ({"listing_lag": -1.0}, {"description_max_length": -3}, {"empty_page_rate": 1.01}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FaultOptions(**bad)  # type: ignore[arg-type]


async def test_the_new_faults_are_set_over_http_and_the_json_only_grows(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """POST /_sandbox/faults takes every new option; GET shows the old keys and the new ones."""
    old_keys = {
        "latency", "error_rate", "rate_limit", "burst", "rate_limit_headers", "drop_rate",
        "fail_rate", "slow_rate", "slow_seconds",
    }  # fmt: skip
    changes = {
        "api_clock_offset": -90.5,
        "listing_lag": 3,
        "create_answer_delay": 0.5,
        "page_shift_rate": 0.1,
        "description_max_length": 64,
        "auth_echo": True,
        "lie_known_id_rate": 0.2,
        "lie_other_server_rate": 0.3,
        "empty_page_rate": 0.4,
        "third_party_delete_rate": 0.05,
    }
    response = await sandbox_client.post("/_sandbox/faults", json=changes)
    assert response.status_code == 200
    shown = response.json()
    assert old_keys | set(changes) == set(shown)
    assert {name: shown[name] for name in changes} == changes
    assert isinstance(shown["listing_lag"], float)
    assert sandbox.faults.description_max_length == 64
    cleared = await sandbox_client.post("/_sandbox/faults", json={"description_max_length": None})
    assert cleared.json()["description_max_length"] is None
    bad = await sandbox_client.post("/_sandbox/faults", json={"listing_lag": -5})
    assert bad.status_code == 400
    assert "listing_lag" in bad.json()["detail"]


def test_the_defaults_are_all_off(sandbox_now: datetime) -> None:
    """Every new fault is off in a default FaultOptions and SandboxOptions."""
    faults = SandboxOptions(frozen_clock=sandbox_now).faults
    assert faults == FaultOptions()
    assert (faults.description_max_length, faults.auth_echo) == (None, False)
    assert (faults.api_clock_offset, faults.listing_lag, faults.create_answer_delay) == (0.0, 0.0, 0.0)
    rates = (
        faults.page_shift_rate, faults.lie_known_id_rate, faults.lie_other_server_rate,
        faults.empty_page_rate, faults.third_party_delete_rate,
    )  # fmt: skip
    assert rates == (0.0,) * 5
