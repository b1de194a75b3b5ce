"""Listings held packed (models.Backups): what is read back is what the API listed, field for field,
grouped by server as the inventory asks, and a backup listed twice is still found."""

from __future__ import annotations

import dataclasses
import struct
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.api import _repeated, _Tally
from rotator.inventory import Inventory
from rotator.markers import make_marker, mark_description
from rotator.models import EMPTY, Backup, BackupPage, Backups, Grouped, ServerRef, Table, find, ids_of
from rotator.sandbox import Sandbox, SandboxOptions
from rotator.slots import decide, slot_backups
from tests.sandbox_clients import SandboxTime, sandbox_client

NOW = datetime(2025, 1, 16, 3, 30, tzinfo=UTC)
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """3 servers with 10 owned backups each, 20 a page: the account listing takes 2 pages, fewer than 3."""
    return SandboxOptions(
        seed=3, fleet="uniform", servers=3, backups_per_server=10, frozen_clock=NOW, page_size=20
    )


def validated(raw: list[dict[str, object]]) -> list[Backup]:
    return [Backup.from_api(item) for item in raw]


async def test_a_listing_reads_back_what_the_api_listed(
    sandbox: Sandbox, sandbox_transport: httpx.ASGITransport, sandbox_api_url: str
) -> None:
    """Every field of every backup, in the API's order, equal to the backups validated one by one."""
    new = sandbox.state.create_backup(2, None)
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, SandboxTime(sandbox)) as client:
        listing = await client.list_backups()
    assert isinstance(listing.backups, Backups)
    expected = validated([sandbox.state.to_json(record) for record in sandbox.state.listing()])
    assert len(expected) == 31
    assert list(listing.backups) == expected
    assert listing.backups == expected
    assert listing.backups == tuple(expected)
    assert [b.to_api() for b in listing.backups] == [b.to_api() for b in expected]
    assert listing.backups[-1] == expected[-1]
    assert listing.backups[3] == expected[3]
    assert listing.backups[1:3] == tuple(expected[1:3])
    assert listing.backups.ids() == [b.id for b in expected]
    assert next(b for b in listing.backups if b.id == new.id).description is None
    for held in (listing.backups, tuple(expected)):
        assert ids_of(held) == [b.id for b in expected]
        assert find(held, new.id) == next(b for b in expected if b.id == new.id)
        assert find(held, expected[7].id) == expected[7]
        assert find(held, max(b.id for b in expected) + 1) is None
    with pytest.raises(IndexError):
        listing.backups[31]


async def test_a_grouped_listing_holds_each_server_apart(
    sandbox: Sandbox, sandbox_transport: httpx.ASGITransport, sandbox_api_url: str
) -> None:
    """Each server's backups in the listing's order, no other server's; server order overall."""
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, SandboxTime(sandbox)) as client:
        plain = await client.list_backups(backup_type="manual")
        grouped = await client.list_backups(backup_type="manual", grouped=True)
    assert isinstance(grouped.backups, Grouped)
    assert (grouped.count, grouped.pages) == (plain.count, plain.pages) == (30, 2)
    for sid in (1, 2, 3):
        mine = [b for b in plain.backups if b.server_id == sid]
        assert len(mine) == 10
        assert list(grouped.of_server(sid)) == mine
        assert list(plain.of_server(sid)) == mine
    assert grouped.of_server(4) == ()
    assert list(grouped.backups) == sorted(plain.backups, key=lambda b: b.server_id)
    assert len(grouped.backups) == 30


async def test_the_inventory_views_are_the_servers_listings(
    sandbox: Sandbox, sandbox_transport: httpx.ASGITransport, sandbox_api_url: str
) -> None:
    """An account read and per-server reads give each server the same backups; a re-read sees changes."""
    async with sandbox_client(sandbox, sandbox_api_url, sandbox_transport, SandboxTime(sandbox)) as client:
        inventory = Inventory(client)
        views, failed = await inventory.read([1, 2, 3])
        assert not failed
        assert {v.source for v in views.values()} == {"account"}
        own = {sid: await client.list_backups(server_id=sid, backup_type="manual") for sid in (1, 2, 3)}
        for sid, view in views.items():
            assert view.backups == own[sid].backups
            assert view.ids == {b.id for b in own[sid].backups}
        gone = views[1].backups[0]
        sandbox.state.delete_backup(gone.id)
        new = sandbox.state.create_backup(2, "new one")
        again, _ = await inventory.read([1, 2, 3])
        single, _ = await inventory.read([2])
    assert gone.id not in again[1].ids
    assert len(again[1].backups) == 9
    assert new.id in again[2].ids
    assert single[2].source == "server"
    assert single[2].backups == again[2].backups
    assert next(b for b in again[2].backups if b.id == new.id).status == "in_progress"


texts = st.none() | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
times = st.datetimes(min_value=EARLIEST.replace(tzinfo=None), max_value=LATEST.replace(tzinfo=None)).map(
    lambda t: t.replace(tzinfo=UTC)
)
backups = st.builds(
    lambda id_, sid, name, kind, status, size, created, expires, description: Backup.model_construct(
        id=id_,
        server=ServerRef(id=sid, name=name),
        backup_type=kind,
        status=status,
        size_mb=size,
        created_at=created,
        expires_at=expires,
        description=description,
    ),
    st.integers(1, 2**63 - 1),
    st.integers(1, 2**63 - 1),
    st.sampled_from(["web-1", "db", ""]),
    st.sampled_from(["manual", "automatic", "snapshot"]),
    st.sampled_from(["completed", "in_progress", "failed", "odd"]),
    st.none() | st.integers(0, 2**63 - 1),
    times,
    st.none() | times,
    texts,
)


@given(st.lists(backups, max_size=20))
def test_packing_keeps_every_field(listed: list[Backup]) -> None:
    """Any backup the API could list reads back equal, field for field (None, "" and the extremes too)."""
    packed = Backups.of(listed)
    assert len(packed) == len(listed)
    read = list(packed)
    assert read == listed
    for back, backup in zip(read, listed, strict=True):
        assert back.to_api() == backup.to_api()
        assert back.created_at.tzinfo is UTC
        assert (back.description is None) == (backup.description is None)
        assert (back.size_mb is None) == (backup.size_mb is None)


def test_a_table_holds_each_value_once() -> None:
    """Equal values share one entry (and so one instance); None is entry 0."""
    table = Table()
    assert table.index(None) == 0
    one, two = table.index("nightly"), table.index("".join(["night", "ly"]))
    assert one == two == 1
    assert table.index(ServerRef(id=1, name="a")) == table.index(ServerRef(id=1, name="a")) == 2
    assert table.index("") == 3
    assert EMPTY == ()
    assert list(EMPTY) == []


@given(st.lists(st.integers(1, 2**63 - 1), max_size=60), st.data())
def test_a_repeated_id_is_found_wherever_it_is(ids: list[int], data: st.DataObject) -> None:
    """In one group or two, next to each other or not, and only when it is there."""
    cut = data.draw(st.integers(0, len(ids)))
    server = ServerRef(id=1, name="a")

    def packed(some: list[int]) -> Backups:
        return Backups.of(
            Backup.model_construct(
                id=i, server=server, backup_type="manual", status="completed", created_at=NOW
            )
            for i in some
        )

    groups = [packed(ids[:cut]), packed(ids[cut:])]
    twice = _repeated(groups, len(ids))
    if len(set(ids)) == len(ids):
        assert twice is None
    else:
        assert twice is not None
        assert ids.count(twice) >= 2


def test_ids_that_share_a_bit_are_not_a_repeat() -> None:
    """Ids 16 x count apart fall on one bit of the bitmap: counted exactly, they are not a repeat."""
    server = ServerRef(id=1, name="a")
    make = lambda i: Backup.model_construct(  # noqa: E731
        id=i, server=server, backup_type="manual", status="completed", created_at=NOW
    )
    assert _repeated([Backups.of(map(make, [5, 5 + 16 * 3, 7]))], 3) is None
    assert _repeated([Backups.of(map(make, [5, 5 + 16 * 3])), Backups.of(map(make, [5]))], 3) == 5


SLOT = datetime(2025, 1, 16, 2, 0, tzinfo=UTC)
descriptions = st.sampled_from(
    [
        None,
        "",
        "hand made",
        mark_description("nightly", "nightly", SLOT, 1),
        mark_description("nightly", "nightly", SLOT, 2),
        mark_description("again", "nightly", SLOT, 1),
        mark_description("nightly", "nightly", SLOT.replace(day=15), 1),
        mark_description("other", "weekly", SLOT, 1),
        make_marker("nightly", SLOT, 3)[:-3],
    ]
)


@given(
    st.lists(
        st.tuples(
            st.integers(1, 10**6), st.sampled_from(["completed", "in_progress", "failed"]), descriptions
        ),
        max_size=12,
        unique_by=lambda t: t[0],
    ),
    st.booleans(),
    st.none() | st.integers(1, 3),
)
def test_a_slot_is_decided_alike_on_packed_backups(
    listed: list[tuple[int, str, str | None]], confirmed: bool, unknown: int | None
) -> None:
    """The slot's backups (found by their descriptions before they are read back) and the decision on
    them are those of the same backups unpacked."""
    server = ServerRef(id=1, name="a")
    plain = [
        Backup.model_construct(
            id=id_, server=server, backup_type="manual", status=status, created_at=NOW, description=text
        )
        for id_, status, text in listed
    ]
    packed = Backups.of(plain)
    assert slot_backups(packed, "nightly", SLOT) == slot_backups(plain, "nightly", SLOT)
    assert decide(
        packed, "nightly", SLOT, attempts=3, confirmed=confirmed, unknown_attempt=unknown
    ) == decide(plain, "nightly", SLOT, attempts=3, confirmed=confirmed, unknown_attempt=unknown)
    assert list(packed.described("nightly")) == [b for b in plain if "nightly" in (b.description or "")]


@given(st.lists(st.lists(backups, max_size=12), max_size=4))
def test_a_page_packed_at_once_is_packed_backup_by_backup(pages: list[list[Backup]]) -> None:
    """Table.pack_all (one struct call a page) gives the very bytes, and the very table entries in
    the same order, as packing each backup by itself; ids() reads the ids as unpacking each row does."""
    fast, slow = Table(), Table()
    rows_fast, rows_slow = b"", b""
    for page in pages:
        rows_fast += fast.pack_all(page)
        rows_slow += b"".join(map(slow.pack, page))
    assert rows_fast == rows_slow
    assert fast.values == slow.values
    held = Backups(rows_fast, fast)
    assert held.ids() == [row[0] for row in struct.iter_unpack("<qqqqIIII", rows_slow)]
    assert held.ids() == [backup.id for page in pages for backup in page]
    assert list(held) == [backup for page in pages for backup in page]


@given(st.lists(st.lists(backups, min_size=1, max_size=8), max_size=4))
def test_a_grouped_tally_packs_as_backup_by_backup(pages: list[list[Backup]]) -> None:
    """_Tally's grouped rows, cut out of a page packed at once, equal each server's backups packed
    one by one (ids made unique: repeats are refused elsewhere)."""
    unique = [
        [dataclasses.replace(b, id=(n * 100 + i + 1)) for i, b in enumerate(page)]
        for n, page in enumerate(pages)
    ]
    count = sum(map(len, unique))
    tally = _Tally("/backups/", count, grouped=True)
    slow = Table()
    expected: dict[int, bytearray] = {}
    for page in unique:
        tally.add(BackupPage.model_construct(count=count, next=None, previous=None, results=page))
        for backup in page:
            expected.setdefault(backup.server.id, bytearray()).extend(slow.pack(backup))
    assert tally.rows == expected
    assert tally.table.values == slow.values
