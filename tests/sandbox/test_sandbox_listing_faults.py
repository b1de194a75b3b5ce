"""Faults of listings: pages shifted by a third party between reads, empty pages, and listings logged."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from rotator.sandbox import Sandbox, SandboxOptions

BACKUPS = "/api/v1/backups/"
PAGE_SIZE = 10
PER_SERVER = 15  # two pages a server
SERVERS = 3


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options(sandbox_now: datetime) -> SandboxOptions:
    """Three servers with 15 completed manual backups each, ten to a page."""
    return SandboxOptions(
        seed=7,
        frozen_clock=sandbox_now,
        fleet="uniform",
        servers=SERVERS,
        backups_per_server=PER_SERVER,
        page_size=PAGE_SIZE,
    )


async def read_pages(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, following ``next`` to the end, as answered."""
    pages: list[dict[str, Any]] = []
    url: str | None = BACKUPS
    query: dict[str, Any] | None = params
    while url is not None:
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url, query = pages[-1]["next"], None
    return pages


def ids_of(pages: list[dict[str, Any]]) -> list[int]:
    """The ids of every result of ``pages``, in order."""
    return [backup["id"] for page in pages for backup in page["results"]]


# -- page_shift_rate ------------------------------------------------------------------------


async def test_a_shifted_page_skips_its_first_backup_and_keeps_the_count(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Page 2 of a server's listing: a backup of page 1 is deleted and a new one made, so count stays,
    no id repeats, and the page's first backup in the old order slid onto page 1, unseen but there."""
    sandbox.update_faults(page_shift_rate=1.0)
    old_order = [b.id for b in sandbox.state.backups(server_id=1)]
    pages = await read_pages(sandbox_client, server_id=1)
    assert [page["count"] for page in pages] == [PER_SERVER, PER_SERVER]
    seen = ids_of(pages)
    assert len(seen) == len(set(seen)) == PER_SERVER
    now_there = {b.id for b in sandbox.state.backups(server_id=1)}
    assert len(now_there) == PER_SERVER
    assert now_there - set(seen) == {old_order[PAGE_SIZE]}

    (deleted,) = sandbox.state.events("deleted")
    assert deleted.by == "third_party"
    assert deleted.to_json()["by"] == "third_party"
    assert deleted.backup["id"] in old_order[:PAGE_SIZE]
    assert deleted.backup["id"] in seen  # read on page 1, gone since
    (created,) = sandbox.state.events("created")
    assert created.to_json()["by"] == "third_party"
    new = created.backup
    assert (new["server"]["id"], new["backup_type"], new["status"]) == (1, "manual", "completed")
    assert new["description"] == "third party backup"
    assert isinstance(new["size_mb"], int)
    assert new["id"] == seen[-1]  # the newest id sorts last
    assert sandbox.injected()["page_shift"] == 1


async def test_a_shifted_listing_read_to_the_end_misses_one_backup_per_later_page(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Unfiltered, five pages: four shifts, count never moves, no repeats, four backups never seen (those
    a later shift did not delete in turn still exist)."""
    sandbox.update_faults(page_shift_rate=1.0)
    total = SERVERS * PER_SERVER
    before = {b.id for b in sandbox.state.backups()}
    pages = await read_pages(sandbox_client)
    assert len(pages) == 5
    assert {page["count"] for page in pages} == {total}
    seen = ids_of(pages)
    assert len(seen) == len(set(seen)) == total
    made = {event.backup["id"] for event in sandbox.state.events("created")}
    gone = {event.backup["id"] for event in sandbox.state.events("deleted")}
    unseen = (before | made) - set(seen)
    assert len(unseen) == 4
    assert {b.id for b in sandbox.state.backups()} - set(seen) == unseen - gone
    assert sandbox.injected()["page_shift"] == 4
    for deleted, created in zip(
        sandbox.state.events("deleted"), sandbox.state.events("created"), strict=True
    ):
        assert created.backup["server"] == deleted.backup["server"]  # matches the listing's filters


async def test_page_one_and_listings_of_automatic_backups_are_never_shifted(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox, sandbox_now: datetime
) -> None:
    """A first page is never shifted; nor a listing of automatic backups (a manual one could not match)."""
    sandbox.update_faults(page_shift_rate=1.0)
    for day in range(12):
        sandbox.state.add_backup(
            1, backup_type="automatic", created_at=sandbox_now - timedelta(days=day, hours=1)
        )
    for _ in range(5):
        await sandbox_client.get(BACKUPS)
    automatic = await read_pages(sandbox_client, backup_type="automatic")
    assert len(automatic) == 2
    assert len(ids_of(automatic)) == 12
    assert sandbox.state.events() == []
    assert sandbox.injected()["page_shift"] == 0


async def test_a_shift_keeps_to_the_listings_filters(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """server_id and backup_type=manual: the deleted and the new backup are that server's, manual."""
    sandbox.update_faults(page_shift_rate=1.0)
    pages = await read_pages(sandbox_client, server_id=2, backup_type="manual")
    assert [page["count"] for page in pages] == [PER_SERVER, PER_SERVER]
    (deleted,) = sandbox.state.events("deleted")
    (created,) = sandbox.state.events("created")
    for event in (deleted, created):
        assert event.backup["server"]["id"] == 2
        assert event.backup["backup_type"] == "manual"


async def test_api_deletes_carry_no_by(sandbox_client: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """A DELETE through the API logs today's JSON, without a ``by`` key."""
    victim = sandbox.state.backups(server_id=1)[0]
    assert (await sandbox_client.delete(f"{BACKUPS}{victim.id}/")).status_code == 204
    (deleted,) = sandbox.state.events("deleted")
    assert set(deleted.to_json()) == {"seq", "kind", "at", "backup"}


# -- empty_page_rate --------------------------------------------------------------------------


async def test_empty_pages_keep_count_and_links_but_not_on_the_last_page(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Every page but the last comes back with no results; count, next and previous are as without it."""
    honest = await read_pages(sandbox_client)
    sandbox.update_faults(empty_page_rate=1.0)
    emptied = await read_pages(sandbox_client)
    assert len(emptied) == len(honest) == 5
    for lie, truth in zip(emptied[:-1], honest[:-1], strict=True):
        assert lie == {**truth, "results": []}
    assert emptied[-1] == honest[-1]
    assert sandbox.injected()["empty_page"] == 4


async def test_a_one_page_listing_is_never_emptied(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """The only page of a listing is its last one: answered in full."""
    sandbox.state.add_backup(1)
    sandbox.update_faults(empty_page_rate=1.0)
    page = (await sandbox_client.get(BACKUPS, params={"server_id": 1, "page": 2})).json()
    assert len(page["results"]) == PER_SERVER + 1 - PAGE_SIZE
    assert sandbox.injected()["empty_page"] == 0


# -- log_listings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sandbox_options",
    [SandboxOptions(seed=7, fleet="uniform", servers=2, backups_per_server=15, log_listings=True)],
    ids=["log_listings"],
)
async def test_the_first_page_of_every_listing_is_logged_when_asked(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """log_listings: a ``listed`` event per first page read (filters, count, pages, exact instant); later
    pages and refused requests write none."""
    sandbox.clock.freeze()
    first = (await sandbox_client.get(BACKUPS, params={"server_id": 1, "backup_type": "manual"})).json()
    await sandbox_client.get(first["next"])
    await sandbox_client.get(BACKUPS, params={"page": "last"})
    await sandbox_client.get(BACKUPS, params={"server_id": 99, "page": "last"})
    await sandbox_client.get(BACKUPS, params={"page": 9})
    await sandbox_client.get(BACKUPS, params={"backup_type": "weekly"})
    await sandbox_client.get(BACKUPS, headers={"Authorization": "Bearer nope"})
    events = [event.to_json() for event in sandbox.state.events("listed")]
    assert [event["listing"] for event in events] == [
        {"server_id": 1, "backup_type": "manual", "count": 15, "pages": 2},
        {"server_id": 99, "backup_type": None, "count": 0, "pages": 1},
    ]
    exact = sandbox.clock.now().isoformat(timespec="microseconds").replace("+00:00", "Z")
    for event in events:
        assert set(event) == {"seq", "kind", "at", "exact", "listing"}
        assert event["kind"] == "listed"
        assert event["exact"] == exact
        assert event["at"] == exact[:19] + "Z"


async def test_listings_are_not_logged_by_default(
    sandbox_client: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Without log_listings the event log does not change with reads."""
    assert sandbox.options.log_listings is False
    await read_pages(sandbox_client)
    assert sandbox.state.events() == []


def test_log_listings_stays_in_the_repr() -> None:
    """The option shows in the options' repr (the token does not)."""
    options = replace(SandboxOptions(), log_listings=True)
    assert "log_listings=True" in repr(options)
