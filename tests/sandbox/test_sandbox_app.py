"""The sandbox's API, in process: auth, listing, create, delete, restore, as the docs describe."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from rotator.sandbox import Sandbox, SandboxOptions, create_app, parse_instant

BACKUPS = "/api/v1/backups/"
WEB = 12345
DB = 12346


async def list_all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every result of a listing, following ``next`` links to the end."""
    results: list[dict[str, Any]] = []
    url: str | None = BACKUPS
    query: dict[str, Any] | None = params
    while url is not None:
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        results.extend(page["results"])
        url, query = page["next"], None
    return results


# -- authentication ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Authentication credentials were not provided."),
        ({"Authorization": "Token sandbox-token"}, "Authentication credentials were not provided."),
        ({"Authorization": "Bearer "}, "Authentication credentials were not provided."),
        ({"Authorization": "Bearer wrong-token"}, "Invalid token."),
    ],
)
async def test_every_api_route_needs_the_bearer_token(
    sandbox_client: httpx.AsyncClient, headers: dict[str, str], detail: str
) -> None:
    """Missing, malformed or wrong tokens get 401 with DRF's detail on every operation."""
    sandbox_client.headers.pop("Authorization")
    calls = [
        ("GET", BACKUPS, None),
        ("POST", BACKUPS, {"server_id": WEB}),
        ("DELETE", f"{BACKUPS}401/", None),
        ("POST", f"/api/v1/servers/{WEB}/restore/", {"backup_id": 401}),
    ]
    for method, url, body in calls:
        response = await sandbox_client.request(method, url, json=body, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"detail": detail}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_configured_token_replaces_the_default(sandbox_now: datetime) -> None:
    """``SandboxOptions(token=...)`` is the only token accepted."""
    app = create_app(SandboxOptions(token="s3cret", frozen_clock=sandbox_now))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
    ) as client:
        wrong = await client.get(BACKUPS, headers={"Authorization": "Bearer sandbox-token"})
        right = await client.get(BACKUPS, headers={"Authorization": "Bearer s3cret"})
    assert wrong.status_code == 401
    assert right.status_code == 200


def test_the_token_stays_out_of_reprs(sandbox_options: SandboxOptions) -> None:
    """Options never show the token."""
    assert sandbox_options.token not in repr(sandbox_options)


# -- listing ------------------------------------------------------------------------


async def test_listing_walks_every_page_with_absolute_links(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Pages of ``page_size`` carry absolute next/previous links on the request's host; count is total."""
    first = (await sandbox_client.get(BACKUPS)).json()
    expected = len(sandbox.state.backups())
    assert first["count"] == expected > 3 * sandbox.options.page_size
    assert first["previous"] is None
    assert first["next"] == "http://sandbox.test/api/v1/backups/?page=2"
    assert len(first["results"]) == sandbox.options.page_size

    second = (await sandbox_client.get(first["next"])).json()
    assert second["previous"] == "http://sandbox.test/api/v1/backups/"
    third = (await sandbox_client.get(second["next"])).json()
    assert third["previous"] == "http://sandbox.test/api/v1/backups/?page=2"

    everything = await list_all(sandbox_client)
    assert len(everything) == expected
    assert len({backup["id"] for backup in everything}) == expected


async def test_next_links_keep_the_filters(sandbox_client: httpx.AsyncClient) -> None:
    """A filtered listing's next link still filters."""
    page = (await sandbox_client.get(BACKUPS, params={"server_id": WEB, "backup_type": "manual"})).json()
    assert page["next"] is not None
    assert page["next"].startswith("http://sandbox.test/api/v1/backups/?")
    assert "server_id=12345" in page["next"]
    assert "backup_type=manual" in page["next"]
    assert "page=2" in page["next"]


async def test_the_last_page_has_no_next_and_page_last_works(sandbox_client: httpx.AsyncClient) -> None:
    """``page=last`` (as in DRF) is the final page, whose ``next`` is null."""
    last = (await sandbox_client.get(BACKUPS, params={"page": "last"})).json()
    assert last["next"] is None
    assert last["previous"] is not None
    assert 1 <= len(last["results"]) <= 10


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", "999"])
async def test_an_invalid_page_is_404(sandbox_client: httpx.AsyncClient, page: str) -> None:
    """Out-of-range or non-numeric pages answer DRF's 404 "Invalid page."."""
    response = await sandbox_client.get(BACKUPS, params={"page": page})
    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid page."}


async def test_an_empty_listing_is_one_empty_page(sandbox_client: httpx.AsyncClient) -> None:
    """A filter that matches nothing gives count 0 on page 1 (and page 2 is invalid)."""
    page = (await sandbox_client.get(BACKUPS, params={"server_id": 999})).json()
    assert page == {"count": 0, "next": None, "previous": None, "results": []}
    response = await sandbox_client.get(BACKUPS, params={"server_id": 999, "page": 2})
    assert response.status_code == 404


async def test_filters_by_server_and_type(sandbox_client: httpx.AsyncClient) -> None:
    """``server_id`` and ``backup_type`` filter, alone and together."""
    web = await list_all(sandbox_client, server_id=WEB)
    assert web
    assert {backup["server"]["id"] for backup in web} == {WEB}
    automatic = await list_all(sandbox_client, backup_type="automatic")
    assert {backup["backup_type"] for backup in automatic} == {"automatic"}
    web_manual = await list_all(sandbox_client, server_id=WEB, backup_type="manual")
    assert web_manual == [b for b in web if b["backup_type"] == "manual"]


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"server_id": "web"}, {"server_id": ["Enter a whole number."]}),
        (
            {"backup_type": "weekly"},
            {"backup_type": ["Select a valid choice. weekly is not one of the available choices."]},
        ),
    ],
)
async def test_bad_filter_values_are_400(
    sandbox_client: httpx.AsyncClient, params: dict[str, str], errors: dict[str, list[str]]
) -> None:
    """Filter values that cannot be read answer 400 with django-filter's field errors."""
    response = await sandbox_client.get(BACKUPS, params=params)
    assert response.status_code == 400
    assert response.json() == errors


async def test_results_are_in_id_order_which_is_not_time_order(sandbox_client: httpx.AsyncClient) -> None:
    """Listings come by id, stable across pages, and ids are not a clock."""
    everything = await list_all(sandbox_client)
    ids = [backup["id"] for backup in everything]
    assert ids == sorted(ids)
    created = [backup["created_at"] for backup in everything]
    assert created != sorted(created)
    assert await list_all(sandbox_client) == everything


async def test_a_backup_has_the_documented_shape(sandbox_client: httpx.AsyncClient) -> None:
    """Every field of the docs' example, with times as whole-second UTC with Z."""
    for backup in await list_all(sandbox_client):
        assert set(backup) == {
            "id",
            "server",
            "backup_type",
            "status",
            "size_mb",
            "created_at",
            "expires_at",
            "description",
        }
        assert set(backup["server"]) == {"id", "name"}
        assert backup["created_at"].endswith("Z")
        assert len(backup["created_at"]) == len("2025-01-16T03:00:00Z")
        if backup["backup_type"] == "automatic":
            expires = parse_instant(backup["expires_at"])
            assert expires - parse_instant(backup["created_at"]) == timedelta(days=30)
        else:
            assert backup["expires_at"] is None
        if backup["status"] == "completed":
            assert isinstance(backup["size_mb"], int)
        else:
            assert backup["size_mb"] is None


async def test_unknown_api_paths_and_methods(sandbox_client: httpx.AsyncClient) -> None:
    """Unknown paths are 404 and unsupported methods 405, both after the token check."""
    missing = await sandbox_client.get("/api/v1/snapshots/")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not found."}
    not_allowed = await sandbox_client.put(BACKUPS, json={})
    assert not_allowed.status_code == 405
    assert not_allowed.json() == {"detail": 'Method "PUT" not allowed.'}
    assert not_allowed.headers["Allow"] == "GET, POST"


# -- create ---------------------------------------------------------------------------


async def test_a_create_starts_in_progress_and_completes_when_the_clock_says(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_now: datetime
) -> None:
    """201 with the backup and a message; completed with a size after ``create_seconds``."""
    response = await sandbox_client.post(BACKUPS, json={"server_id": WEB, "description": "Pre-deploy"})
    assert response.status_code == 201
    created = response.json()
    assert created["status"] == "in_progress"
    assert created["backup_type"] == "manual"
    assert created["size_mb"] is None
    assert created["expires_at"] is None
    assert created["description"] == "Pre-deploy"
    assert created["server"] == {"id": WEB, "name": "web-server-01"}
    assert created["created_at"] == "2025-01-16T15:45:00Z"
    assert created["message"].startswith("Backup is being created.")

    async def current() -> dict[str, Any]:
        listed = await list_all(sandbox_client, server_id=WEB)
        return next(backup for backup in listed if backup["id"] == created["id"])

    sandbox.clock.advance(sandbox.options.create_seconds - 1)
    assert (await current())["status"] == "in_progress"
    sandbox.clock.advance(1)
    done = await current()
    assert done["status"] == "completed"
    assert isinstance(done["size_mb"], int)
    assert done["size_mb"] > 0


async def test_a_new_backup_gets_a_fresh_id(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """New ids are above every id the fleet ever used."""
    before = max(backup.id for backup in sandbox.state.backups())
    first = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    second = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    assert before < first["id"] < second["id"]
    assert first["description"] is None


@pytest.mark.parametrize(
    ("content", "errors"),
    [
        (b"{}", {"server_id": ["This field is required."]}),
        (b"", {"server_id": ["This field is required."]}),
        (b'{"description": "x"}', {"server_id": ["This field is required."]}),
        (b'{"server_id": "12345"}', {"server_id": ["A valid integer is required."]}),
        (b'{"server_id": 1.5}', {"server_id": ["A valid integer is required."]}),
        (b'{"server_id": true}', {"server_id": ["A valid integer is required."]}),
        (b'{"server_id": null}', {"server_id": ["This field may not be null."]}),
        (b'{"server_id": 12345, "description": 7}', {"description": ["Not a valid string."]}),
        (
            b'{"server_id": 12345, "description": "' + b"x" * 256 + b'"}',
            {"description": ["Ensure this field has no more than 255 characters."]},
        ),
        (b"[1, 2]", {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}),
    ],
)
async def test_a_malformed_create_is_400_with_field_errors(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, content: bytes, errors: dict[str, list[str]]
) -> None:
    """Missing or mistyped fields answer DRF-style field errors and create nothing."""
    before = len(sandbox.state.backups())
    response = await sandbox_client.post(
        BACKUPS, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == errors
    assert len(sandbox.state.backups()) == before


async def test_invalid_json_is_400_with_a_parse_error(sandbox_client: httpx.AsyncClient) -> None:
    """Unparseable JSON answers DRF's ``JSON parse error - ...`` detail."""
    response = await sandbox_client.post(
        BACKUPS, content=b"{server_id: 1", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error - ")


async def test_a_non_json_body_is_415(sandbox_client: httpx.AsyncClient) -> None:
    """DRF's JSON-only API refuses other media types."""
    response = await sandbox_client.post(
        BACKUPS, content=b"server_id=1", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415


async def test_a_create_for_an_unknown_server_is_404(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """An unknown server answers 404 "Not found." and no backup appears."""
    response = await sandbox_client.post(BACKUPS, json={"server_id": 999})
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert sandbox.state.events("created") == []


# -- delete ---------------------------------------------------------------------------


async def test_delete_removes_a_backup_for_good(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """204 with no body; afterwards it is gone from listings and a second delete is 404."""
    victim = sandbox.state.backups(server_id=DB, backup_type="manual")[0]
    response = await sandbox_client.delete(f"{BACKUPS}{victim.id}/")
    assert response.status_code == 204
    assert response.content == b""
    assert victim.id not in {b["id"] for b in await list_all(sandbox_client, server_id=DB)}
    again = await sandbox_client.delete(f"{BACKUPS}{victim.id}/")
    assert again.status_code == 404
    assert again.json() == {"detail": "Not found."}


@pytest.mark.parametrize("backup_id", ["999999", "abc", "0"])
async def test_deleting_an_unknown_backup_is_404(sandbox_client: httpx.AsyncClient, backup_id: str) -> None:
    """Unknown or non-numeric ids are 404."""
    response = await sandbox_client.delete(f"{BACKUPS}{backup_id}/")
    assert response.status_code == 404


# -- expiry -----------------------------------------------------------------------------


async def test_automatic_backups_vanish_once_expired(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """When the clock passes ``expires_at`` an automatic backup is gone from listings and events say so."""
    automatic = await list_all(sandbox_client, server_id=WEB, backup_type="automatic")
    oldest = min(automatic, key=lambda b: b["created_at"])
    sandbox.clock.set(parse_instant(oldest["expires_at"]) - timedelta(seconds=1))
    still = await list_all(sandbox_client, server_id=WEB, backup_type="automatic")
    assert oldest["id"] in {b["id"] for b in still}
    sandbox.clock.advance(1)
    after = await list_all(sandbox_client, server_id=WEB, backup_type="automatic")
    assert oldest["id"] not in {b["id"] for b in after}
    expired = sandbox.state.events("expired")
    assert [event.backup["id"] for event in expired] == [oldest["id"]]
    assert expired[0].at == parse_instant(oldest["expires_at"])
    deleting = await sandbox_client.delete(f"{BACKUPS}{oldest['id']}/")
    assert deleting.status_code == 404


async def test_manual_backups_never_expire(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """A year later every manual backup is still there; automatic ones keep being made daily."""
    manual = await list_all(sandbox_client, backup_type="manual")
    sandbox.clock.advance(timedelta(days=365))
    assert await list_all(sandbox_client, backup_type="manual") == manual
    automatic = await list_all(sandbox_client, server_id=WEB, backup_type="automatic")
    assert len(automatic) == 30
    assert all(b["status"] == "completed" for b in automatic)


# -- restore ----------------------------------------------------------------------------


def restore_url(server_id: int | str) -> str:
    """The Servers API's restore endpoint for ``server_id``."""
    return f"/api/v1/servers/{server_id}/restore/"


async def test_restore_from_a_completed_backup_of_the_server_is_accepted(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """202 with a small JSON body, and a ``restored`` event."""
    backup = next(b for b in sandbox.state.backups(server_id=WEB) if b.status == "completed")
    response = await sandbox_client.post(restore_url(WEB), json={"backup_id": backup.id})
    assert response.status_code == 202
    assert response.json()["backup_id"] == backup.id
    assert response.json()["server_id"] == WEB
    assert [event.backup["id"] for event in sandbox.state.events("restored")] == [backup.id]


async def test_restore_refuses_another_servers_backup(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """400 with a field error when the backup belongs to another server."""
    foreign = next(b for b in sandbox.state.backups(server_id=DB) if b.status == "completed")
    response = await sandbox_client.post(restore_url(WEB), json={"backup_id": foreign.id})
    assert response.status_code == 400
    assert list(response.json()) == ["backup_id"]


async def test_restore_refuses_an_unfinished_or_failed_backup(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """400 for an in-progress backup and for a failed one."""
    created = (await sandbox_client.post(BACKUPS, json={"server_id": WEB})).json()
    in_progress = await sandbox_client.post(restore_url(WEB), json={"backup_id": created["id"]})
    assert in_progress.status_code == 400
    assert "in_progress" in in_progress.json()["backup_id"][0]
    failed = next(b for b in sandbox.state.backups() if b.status == "failed")
    response = await sandbox_client.post(restore_url(failed.server_id), json={"backup_id": failed.id})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("server_id", "body", "status"),
    [
        (999, {"backup_id": 401}, 404),
        ("abc", {"backup_id": 401}, 404),
        (WEB, {"backup_id": 999999}, 404),
        (WEB, {}, 400),
        (WEB, {"backup_id": "401"}, 400),
    ],
)
async def test_restore_errors(
    sandbox_client: httpx.AsyncClient, server_id: int | str, body: dict[str, Any], status: int
) -> None:
    """Unknown server or backup: 404; a missing or mistyped backup_id: 400."""
    response = await sandbox_client.post(restore_url(server_id), json=body)
    assert response.status_code == status
    assert response.json()
