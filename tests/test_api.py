"""The API client against respx: every documented status and every open point of the API notes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
import structlog

from rotator import errors
from rotator.api import BackupsClient, ClientSettings, DeleteOutcome
from rotator.models import Backup
from rotator.secrets import ApiToken
from rotator.telemetry import Telemetry
from tests.clock import FakeTime

API = "https://api.test/api/v1"
TOKEN = "tok-3e5a9c1f-SECRET"


def backup_json(
    backup_id: int,
    created_at: str,
    *,
    server_id: int = 12345,
    backup_type: str = "manual",
    status: str = "completed",
    description: str | None = "Pre-update backup",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": backup_id,
        "server": {"id": server_id, "name": f"web-{server_id}"},
        "backup_type": backup_type,
        "status": status,
        "size_mb": 4456 if status == "completed" else None,
        "created_at": created_at,
        "expires_at": None,
        "description": description,
        **extra,
    }


# The documentation's own example listing: unsorted, ids are not a clock.
DOC_EXAMPLE = [
    backup_json(501, "2025-01-16T03:00:00Z", backup_type="automatic", description="Automatic daily backup"),
    backup_json(499, "2025-01-14T10:30:00Z"),
    backup_json(495, "2025-01-15T03:00:00Z", backup_type="automatic", description="Automatic daily backup"),
]


def page(
    results: list[dict[str, Any]], count: int | None = None, next_url: str | None = None
) -> httpx.Response:
    body = {"count": len(results) if count is None else count, "next": next_url, "previous": None}
    body["results"] = results
    return httpx.Response(200, json=body)


@pytest.fixture(name="clock")
def fixture_clock() -> FakeTime:
    """Time that moves only when the client sleeps."""
    return FakeTime()


@pytest.fixture(name="make_client")
async def fixture_make_client(clock: FakeTime) -> AsyncIterator[Callable[..., BackupsClient]]:
    """Builds clients on the fake clock with retry waits of zero; closes them afterwards."""
    made: list[BackupsClient] = []

    def make(**overrides: Any) -> BackupsClient:
        settings = ClientSettings(
            base_url=API,
            retry_attempts=overrides.pop("retry_attempts", 4),
            retry_wait_initial=0,
            retry_wait_max=0,
            retry_wait_jitter=0,
            lean_transport=overrides.pop("lean_transport", False),  # respx mocks httpx's own transport
            **overrides,
        )
        client = BackupsClient(
            ApiToken(TOKEN, "test"),
            settings,
            wall_clock=clock.now,
            monotonic=clock.monotonic,
            sleep=clock.sleep,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture(name="client")
def fixture_client(make_client: Callable[..., BackupsClient]) -> BackupsClient:
    """A client with the default test settings."""
    return make_client()


@pytest.fixture(name="api")
def fixture_api() -> respx.MockRouter:
    """respx routes for the API's origin; any unrouted request fails the test."""
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


# -- listing -----------------------------------------------------------------


async def test_list_documented_example_keeps_order_and_types(
    client: BackupsClient, api: respx.MockRouter
) -> None:
    """The documented example parses; the client keeps the API's order and sorts nothing."""
    route = api.get("/backups/", params={"server_id": "12345"}).mock(return_value=page(DOC_EXAMPLE))
    listing = await client.list_backups(server_id=12345)
    assert [b.id for b in listing.backups] == [501, 499, 495]
    assert listing.count == 3
    assert listing.backups[0].created_at == datetime(2025, 1, 16, 3, tzinfo=UTC)
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_list_follows_next_links_to_the_end(client: BackupsClient, api: respx.MockRouter) -> None:
    """Three pages, absolute and relative next links, merged in order."""
    items = [backup_json(i, f"2025-01-{i:02d}T03:00:00Z") for i in range(1, 8)]
    api.get("/backups/", params={"backup_type": "manual", "page": "2"}).mock(
        return_value=page(items[3:6], 7, "/api/v1/backups/?backup_type=manual&page=3")
    )
    api.get("/backups/", params={"backup_type": "manual", "page": "3"}).mock(return_value=page(items[6:], 7))
    api.get("/backups/", params={"backup_type": "manual"}).mock(
        return_value=page(items[:3], 7, f"{API}/backups/?backup_type=manual&page=2")
    )
    listing = await client.list_backups(backup_type="manual")
    assert [b.id for b in listing.backups] == list(range(1, 8))
    assert listing.to_api()["count"] == 7


async def test_list_count_disagreeing_with_pages_raises(client: BackupsClient, api: respx.MockRouter) -> None:
    """count says 5, the pages hold 3: an IncompleteListing, never a partial view."""
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE, count=5))
    with pytest.raises(errors.IncompleteListing, match="count says 5"):
        await client.list_backups()


async def test_list_repeated_items_across_pages_raise(client: BackupsClient, api: respx.MockRouter) -> None:
    """Items that shift between pages (a backup deleted mid-listing) make the listing untrustworthy."""
    api.get("/backups/", params={"page": "2"}).mock(return_value=page(DOC_EXAMPLE[1:], 3))
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE[:2], 3, f"{API}/backups/?page=2"))
    with pytest.raises(
        errors.IncompleteListing, match=r"does not add up: count says 3, the pages hold more \(4 in 2 pages\)"
    ):
        await client.list_backups()


@pytest.mark.parametrize("count", [1, 2])
async def test_list_next_links_past_the_count_are_refused_at_once(
    client: BackupsClient, api: respx.MockRouter, count: int
) -> None:
    """Count N, N pages of one backup each, and the last still links on: refused after page N,
    though the page it links to would be empty and the backups add up."""
    if count == 1:
        api.get("/backups/", params={"page": "2"}).mock(return_value=page([], 1))
        api.get("/backups/").mock(return_value=page(DOC_EXAMPLE[:1], 1, f"{API}/backups/?page=2"))
        with pytest.raises(
            errors.IncompleteListing, match=r"next links go on past its count \(1 backups, 1 pages"
        ):
            await client.list_backups()
        return
    api.get("/backups/", params={"page": "3"}).mock(return_value=page([], 2))
    api.get("/backups/", params={"page": "2"}).mock(
        return_value=page(DOC_EXAMPLE[1:2], 2, f"{API}/backups/?page=3")
    )
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE[:1], 2, f"{API}/backups/?page=2"))
    with pytest.raises(
        errors.IncompleteListing, match=r"next links go on past its count \(2 backups, 2 pages"
    ):
        await client.list_backups()


@pytest.mark.parametrize("grouped", [False, True])
async def test_an_empty_listing_holds_no_backups(
    client: BackupsClient, api: respx.MockRouter, grouped: bool
) -> None:
    """Count 0, no results: an empty sequence of backups, plain or grouped."""
    api.get("/backups/").mock(return_value=page([], 0))
    listing = await client.list_backups(grouped=grouped)
    assert listing.count == 0
    assert len(listing.backups) == 0
    assert list(listing.backups) == []
    assert listing.of_server(1) == ()


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("other_server", [False, True])
async def test_list_a_backup_repeated_on_a_later_page_raises_though_the_count_adds_up(
    client: BackupsClient, api: respx.MockRouter, grouped: bool, other_server: bool
) -> None:
    """Page 2 repeats page 1's second backup where the third should be (it was skipped): caught at the
    end, held in one list or by server, and also when the repeat names another server."""
    repeat = dict(DOC_EXAMPLE[1])
    if other_server:
        repeat["server"] = {"id": 777, "name": "elsewhere"}
    api.get("/backups/", params={"page": "2"}).mock(return_value=page([repeat], 3))
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE[:2], 3, f"{API}/backups/?page=2"))
    twice = DOC_EXAMPLE[1]["id"]
    with pytest.raises(errors.IncompleteListing, match=f"backup {twice} is listed twice .on two of its 2"):
        await client.list_backups(grouped=grouped)


async def test_list_count_changing_between_pages_raises(client: BackupsClient, api: respx.MockRouter) -> None:
    """A count that changes mid-listing means the view is not one moment's truth."""
    api.get("/backups/", params={"page": "2"}).mock(return_value=page(DOC_EXAMPLE[2:], 4))
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE[:2], 3, f"{API}/backups/?page=2"))
    with pytest.raises(errors.IncompleteListing, match="changed while it was read"):
        await client.list_backups()


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.test/api/v1/backups/?page=2",
        "http://api.test/api/v1/backups/?page=2",
        "https://api.test:8443/api/v1/backups/?page=2",
    ],
    ids=["other-host", "other-scheme", "other-port"],
)
async def test_list_refuses_next_link_to_another_origin(
    client: BackupsClient, api: respx.MockRouter, link: str
) -> None:
    """The token is never sent anywhere but the API's own origin."""
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE[:1], 2, link))
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as other:
        foreign = other.route(url__startswith=link.split("/api", maxsplit=1)[0]).mock(return_value=page([]))
        with pytest.raises(errors.InvalidResponse, match="another origin"):
            await client.list_backups()
        assert not foreign.called


async def test_list_endless_next_loop_raises(client: BackupsClient, api: respx.MockRouter) -> None:
    """A next link that points back to itself is detected, not followed forever."""
    api.get("/backups/", params={"page": "2"}).mock(
        return_value=page(DOC_EXAMPLE[:1], 3, f"{API}/backups/?page=2")
    )
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE[:1], 3, f"{API}/backups/?page=2"))
    with pytest.raises(errors.InvalidResponse, match="loop"):
        await client.list_backups()


class PagedApi:
    """A listing of ``total`` backups, ``size`` a page, linked by ``link(number)``; counts how many
    requests were on their way at once (each answer yields to the event loop a few times first)."""

    def __init__(self, total: int, size: int, link: Callable[[int], str | None]) -> None:
        self.items = [backup_json(i, f"2025-01-01T03:{i % 60:02d}:00Z") for i in range(1, total + 1)]
        self.size = size
        self.link = link
        self.in_flight = 0
        self.most = 0
        self.broken_page: int | None = None  # this page claims to be the last

    def number(self, request: httpx.Request) -> int:
        raw = request.url.params.get("page") or request.url.params.get("cursor", "c1")[1:]
        return int(raw)

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        self.in_flight -= 1
        number = self.number(request)
        last = -(-len(self.items) // self.size)
        following = None if number in (last, self.broken_page) else self.link(number + 1)
        window = self.items[(number - 1) * self.size : number * self.size]
        return page(window, len(self.items), following)


async def test_list_reads_page_number_pages_ahead_within_the_concurrency_cap(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """DRF page-number links: pages 2 to the last (known from count) are asked for several at once,
    never more than the concurrency cap, and merged in order."""
    client = make_client(max_concurrency=4, requests_per_second=1000, burst=100)
    fake = PagedApi(40, 4, lambda n: f"{API}/backups/?backup_type=manual&page={n}")
    route = api.get("/backups/").mock(side_effect=fake.answer)
    listing = await client.list_backups(backup_type="manual")
    assert [b.id for b in listing.backups] == list(range(1, 41))
    assert route.call_count == 10
    assert 1 < fake.most <= 4


async def test_list_other_links_are_followed_one_by_one(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """Links that are not page numbers (a cursor) cannot be guessed: each page is read after the last."""
    client = make_client(max_concurrency=4, requests_per_second=1000, burst=100)
    fake = PagedApi(12, 4, lambda n: f"{API}/backups/?cursor=c{n}")
    api.get("/backups/").mock(side_effect=fake.answer)
    listing = await client.list_backups()
    assert [b.id for b in listing.backups] == list(range(1, 13))
    assert fake.most == 1


async def test_list_read_ahead_refuses_a_chain_that_breaks(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """A page that ends the listing before its count's last page: the listing is refused, whole."""
    client = make_client(max_concurrency=4, requests_per_second=1000, burst=100)
    fake = PagedApi(20, 4, lambda n: f"{API}/backups/?page={n}")
    fake.broken_page = 3
    api.get("/backups/").mock(side_effect=fake.answer)
    with pytest.raises(
        errors.IncompleteListing, match=r"changed while it was read \(page 3 of 5 is the last\)"
    ):
        await client.list_backups()


SPELLINGS: dict[str, Callable[[int], str]] = {
    "as the page's own URL": lambda n: f"{API}/backups/?backup_type=manual&page={n}",
    "relative": lambda n: f"/api/v1/backups/?backup_type=manual&page={n}",
    "parameters reordered": lambda n: f"{API}/backups/?page={n}&backup_type=manual",
}


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize(
    ("target", "outcome"),
    [
        (lambda n: n, None),
        (lambda n: 2 if n == 4 else n, "loop"),  # page 3 links back to page 2
        (lambda n: n + 1 if n == 3 else n, r"changed while it was read \(page 2 of 5 links to"),
    ],
)
async def test_list_read_ahead_judges_each_link_whatever_its_spelling(
    make_client: Callable[..., BackupsClient],
    api: respx.MockRouter,
    spelling: str,
    target: Callable[[int], int],
    outcome: str | None,
) -> None:
    """A next link written as the next page's own URL, relatively or with its parameters in another
    order leads to the same page; a link to a page already read, or past the next, is refused alike."""
    client = make_client(max_concurrency=4, requests_per_second=1000, burst=100)
    spell = SPELLINGS[spelling]
    fake = PagedApi(20, 4, lambda n: spell(target(n)))
    api.get("/backups/").mock(side_effect=fake.answer)
    if outcome is None:
        listing = await client.list_backups(backup_type="manual")
        assert [b.id for b in listing.backups] == list(range(1, 21))
        return
    error = errors.InvalidResponse if outcome == "loop" else errors.IncompleteListing
    with pytest.raises(error, match=outcome):
        await client.list_backups(backup_type="manual")


async def test_unknown_fields_ignored_and_unknown_status_kept(
    client: BackupsClient, api: respx.MockRouter
) -> None:
    """Fields may grow; a status we do not know stays as it came and is never completed."""
    item = backup_json(7, "2025-01-14T10:30:00+02:00", status="verifying", region="fra1", tags=["x"])
    api.get("/backups/").mock(return_value=page([item]))
    (backup,) = (await client.list_backups()).backups
    assert backup.status == "verifying"
    assert not backup.is_completed
    assert backup.created_at == datetime(2025, 1, 14, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(200, text="<html>Bad gateway</html>", headers={"content-type": "text/html"}),
            "not JSON",
        ),
        (httpx.Response(200, json={"results": []}), "count"),
        (httpx.Response(200, json={"count": 1, "results": [{"id": 1}]}), "results.0"),
        (httpx.Response(200, json=page([backup_json(-4, "2025-01-01T00:00:00Z")]).json()), "results.0.id"),
        (httpx.Response(200, json=page([backup_json(4, "2025-01-01T00:00:00")]).json()), "created_at"),
        (httpx.Response(200, json=[1, 2]), "documented shape"),
    ],
    ids=["html", "no-count", "missing-fields", "negative-id", "naive-time", "list-body"],
)
async def test_malformed_listing_raises_invalid_response(
    client: BackupsClient, api: respx.MockRouter, response: httpx.Response, message: str
) -> None:
    """Whatever is wrong with an answer is named in one line."""
    api.get("/backups/").mock(return_value=response)
    with pytest.raises(errors.InvalidResponse, match=message) as caught:
        await client.list_backups()
    assert "\n" not in str(caught.value)


# -- statuses and retries ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (401, {"detail": "Invalid token."}, errors.Unauthorized, "Invalid token."),
        (403, {"detail": "Forbidden."}, errors.Unauthorized, "Forbidden."),
        (
            400,
            {"server_id": ["This field is required."]},
            errors.BadRequest,
            "server_id: This field is required.",
        ),
        (404, {"detail": "Not found."}, errors.NotFound, "Not found."),
        (418, None, errors.UnexpectedStatus, "I'm a teapot"),
    ],
)
async def test_error_statuses_map_to_the_error_tree(
    client: BackupsClient,
    api: respx.MockRouter,
    status: int,
    body: Any,
    error: type[errors.ApiError],
    message: str,
) -> None:
    """Each status is one error class carrying status, method, path and the server's message."""
    route = api.get("/backups/").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(error) as caught:
        await client.list_backups()
    assert caught.value.status == status
    assert caught.value.method == "GET"
    assert caught.value.path == "/api/v1/backups/"
    assert message in str(caught.value)
    assert route.call_count == 1  # none of these is retried


async def test_500_is_retried_for_get_and_delete(client: BackupsClient, api: respx.MockRouter) -> None:
    """Both are safe to repeat: a DELETE whose 500 hid a success answers 404 next, counted as done."""
    get = api.get("/backups/").mock(side_effect=[httpx.Response(500), page(DOC_EXAMPLE)])
    assert (await client.list_backups()).count == 3
    assert get.call_count == 2
    gone = api.delete("/backups/7/").mock(side_effect=[httpx.Response(500), httpx.Response(404)])
    assert await client.delete_backup(7) is DeleteOutcome.ALREADY_GONE
    assert gone.call_count == 2
    failing = api.delete("/backups/8/").mock(return_value=httpx.Response(500, json={"detail": "Oops"}))
    with pytest.raises(errors.ServerError, match="Oops"):
        await client.delete_backup(8)
    assert failing.call_count == 4  # retry_attempts, then reported


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_transient_statuses_are_retried(
    client: BackupsClient, api: respx.MockRouter, status: int
) -> None:
    """502/503/504 are retried, and the retry's answer is used."""
    route = api.get("/backups/").mock(side_effect=[httpx.Response(status), page(DOC_EXAMPLE)])
    listing = await client.list_backups()
    assert listing.count == 3
    assert route.call_count == 2
    assert client.stats.retries == 1


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset")]
)
async def test_transport_errors_are_retried_for_get(
    client: BackupsClient, api: respx.MockRouter, exc: Exception
) -> None:
    """Connect errors, timeouts and lost connections are retried on a GET."""
    route = api.get("/backups/").mock(side_effect=[exc, page(DOC_EXAMPLE)])
    assert (await client.list_backups()).count == 3
    assert route.call_count == 2


async def test_retry_exhaustion_raises_the_last_error(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """Bounded attempts: an API that stays down gives a ServerError after exactly N tries."""
    client = make_client(retry_attempts=3)
    route = api.get("/backups/").mock(return_value=httpx.Response(503, json={"detail": "maintenance"}))
    with pytest.raises(errors.ServerError, match="maintenance"):
        await client.list_backups()
    assert route.call_count == 3


async def test_transport_error_exhaustion_is_a_transport_error(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """A timeout that never clears is reported as one line naming what happened."""
    client = make_client(retry_attempts=2)
    api.get("/backups/").mock(side_effect=httpx.ConnectTimeout("x"))
    with pytest.raises(errors.TransportError, match="timed out connecting") as caught:
        await client.list_backups()
    assert not caught.value.request_sent


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_honours_retry_after_in_both_forms(
    client: BackupsClient, api: respx.MockRouter, clock: FakeTime, form: str
) -> None:
    """The client waits what Retry-After says (delta seconds or an HTTP date), then retries."""
    value = "7" if form == "seconds" else format_datetime(clock.now() + timedelta(seconds=7), usegmt=True)
    route = api.get("/backups/").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": value}, json={"detail": "slow down"}),
            page([]),
        ]
    )
    before = clock.monotonic()
    assert (await client.list_backups()).count == 0
    assert route.call_count == 2
    assert clock.monotonic() - before >= 7
    assert client.stats.rate_limited == 1


async def test_429_pauses_every_caller(client: BackupsClient, api: respx.MockRouter, clock: FakeTime) -> None:
    """One caller's 429 holds back the others until Retry-After, not only itself."""
    starts: list[tuple[str, float]] = []

    def listing(request: httpx.Request) -> httpx.Response:
        starts.append((request.url.params.get("server_id", ""), clock.monotonic()))
        if len(starts) == 1:
            return httpx.Response(429, headers={"Retry-After": "10"})
        return page([])

    api.get("/backups/").mock(side_effect=listing)
    await client.list_backups(server_id=1)  # 429, then its retry after the pause
    await client.list_backups(server_id=2)
    assert starts[1][1] >= 10
    # a second caller arriving during the pause waits for it too
    client.budget.pause(5)
    paused_at = clock.monotonic()
    await client.list_backups(server_id=3)
    assert starts[-1][1] >= paused_at + 5


async def test_429_with_retry_after_beyond_the_bound_is_not_waited_for(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """A Retry-After of an hour is reported as RateLimited instead of hanging the run."""
    client = make_client(retry_timeout=60)
    route = api.get("/backups/").mock(return_value=httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(errors.RateLimited) as caught:
        await client.list_backups()
    assert caught.value.retry_after == 3600
    assert route.call_count == 1


async def test_ratelimit_headers_slow_down_before_a_429(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter, clock: FakeTime
) -> None:
    """RateLimit-Remaining: 0 holds the next request until RateLimit-Reset."""
    client = make_client(requests_per_second=100, burst=100)
    headers = {"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "4"}
    api.get("/backups/").mock(
        side_effect=[httpx.Response(200, json=page([]).json(), headers=headers), page([])]
    )
    await client.list_backups()
    before = clock.monotonic()
    await client.list_backups()
    assert clock.monotonic() - before >= 4


# -- delete ------------------------------------------------------------------


async def test_delete_204(client: BackupsClient, api: respx.MockRouter) -> None:
    """A plain delete."""
    route = api.delete("/backups/480/").mock(return_value=httpx.Response(204))
    assert await client.delete_backup(480) is DeleteOutcome.DELETED
    assert route.call_count == 1


async def test_delete_404_on_first_attempt_is_not_found(client: BackupsClient, api: respx.MockRouter) -> None:
    """A backup that was never there is NotFound (the caller decides what that means)."""
    api.delete("/backups/480/").mock(return_value=httpx.Response(404, json={"detail": "Not found."}))
    with pytest.raises(errors.NotFound):
        await client.delete_backup(480)


@pytest.mark.parametrize("first", [httpx.Response(502), httpx.ReadTimeout("lost")], ids=["502", "timeout"])
async def test_delete_404_after_an_uncertain_attempt_counts_as_deleted(
    client: BackupsClient, api: respx.MockRouter, first: Any
) -> None:
    """The first attempt may have deleted it; the retry's 404 confirms it is gone."""
    api.delete("/backups/480/").mock(side_effect=[first, httpx.Response(404, json={"detail": "Not found."})])
    assert await client.delete_backup(480) is DeleteOutcome.ALREADY_GONE


async def test_delete_404_after_a_429_is_still_not_found(
    client: BackupsClient, api: respx.MockRouter
) -> None:
    """A 429 was not processed, so a 404 after it is a real NotFound."""
    api.delete("/backups/480/").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(404)]
    )
    with pytest.raises(errors.NotFound):
        await client.delete_backup(480)


async def test_a_delete_is_not_sent_once_its_view_is_stale(
    client: BackupsClient, api: respx.MockRouter
) -> None:
    """``fresh`` answering False before the first attempt: TooLate, and nothing reaches the API."""
    route = api.delete("/backups/480/").mock(return_value=httpx.Response(204))
    with pytest.raises(errors.TooLate, match="too old"):
        await client.delete_backup(480, fresh=lambda: False)
    assert route.call_count == 0


async def test_a_throttled_delete_is_not_retried_past_its_views_age(
    client: BackupsClient, api: respx.MockRouter, clock: FakeTime
) -> None:
    """A 429 with Retry-After 40 s: the retry is due when the view (fresh for 30 s) is stale, so it is
    not sent; the client's own retries would otherwise send it on that view."""
    route = api.delete("/backups/480/").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "40"}), httpx.Response(204)]
    )
    started = clock.monotonic()
    with pytest.raises(errors.TooLate):
        await client.delete_backup(480, fresh=lambda: clock.monotonic() - started <= 30)
    assert route.call_count == 1
    # while the view is fresh the same retry goes through
    route.side_effect = [httpx.Response(429, headers={"Retry-After": "40"}), httpx.Response(204)]
    started = clock.monotonic()
    assert (
        await client.delete_backup(480, fresh=lambda: clock.monotonic() - started <= 60)
        is DeleteOutcome.DELETED
    )
    assert route.call_count == 3


# -- create: never two backups -------------------------------------------------


class FakeServerBackups:
    """A server's manual backups that POST adds to, for the lost-answer cases."""

    def __init__(self, clock: FakeTime, *, lose: int = 0, status: int = 201, skew: float = 0.0) -> None:
        self.clock = clock
        self.lose = lose  # how many creates are processed but their answer lost
        self.status = status
        self.skew = skew  # the API's clock minus ours, in seconds
        self.items: list[dict[str, Any]] = []
        self.next_id = 900

    def post(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        api_now = self.clock.now() + timedelta(seconds=self.skew)
        created = backup_json(
            self.next_id,
            api_now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            server_id=body["server_id"],
            status="in_progress",
            description=body.get("description"),
        )
        self.next_id += 1
        self.items.append(created)
        if self.lose > 0:
            self.lose -= 1
            raise httpx.ReadTimeout("answer lost", request=request)
        return httpx.Response(self.status, json={**created, "message": "Backup is being created."})

    def listing(self, request: httpx.Request) -> httpx.Response:
        return page(list(self.items))


@pytest.fixture(name="server_backups")
def fixture_server_backups(api: respx.MockRouter, clock: FakeTime) -> FakeServerBackups:
    """Routes POST and GET /backups/ to one stateful fake."""
    fake = FakeServerBackups(clock)
    api.post("/backups/").mock(side_effect=fake.post)
    api.get("/backups/").mock(side_effect=fake.listing)
    return fake


async def test_create_returns_the_in_progress_backup(
    client: BackupsClient, server_backups: FakeServerBackups
) -> None:
    """201 parses into the created backup with its message."""
    created = await client.create_backup(12345, "Pre-deployment backup")
    assert created.status == "in_progress"
    assert created.message == "Backup is being created."
    assert created.description == "Pre-deployment backup"


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ReadTimeout("answer lost"), id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("connection lost"), id="dropped"),
        pytest.param(httpx.Response(500), id="500"),
        pytest.param(httpx.Response(502), id="502"),
        pytest.param(httpx.Response(503), id="503"),
        pytest.param(httpx.Response(504), id="504"),
    ],
)
async def test_a_create_that_may_have_reached_the_api_is_never_sent_again(
    client: BackupsClient, api: respx.MockRouter, server_backups: FakeServerBackups, failure: Any
) -> None:
    """A timeout, a lost connection or a 5xx after sending: outcome unknown, exactly one POST, no listing."""
    post = api.post("/backups/").mock(side_effect=[failure, server_backups.post])
    listing = api.get("/backups/").mock(side_effect=server_backups.listing)
    with pytest.raises(errors.CreateOutcomeUnknown, match="outcome is unknown"):
        await client.create_backup(12345, "nightly [rotator:nightly@2025-01-16T03:00Z]")
    assert post.call_count == 1
    assert not listing.called


async def test_create_connect_error_is_retried_without_listing(
    client: BackupsClient, api: respx.MockRouter, clock: FakeTime
) -> None:
    """A request that never reached the API cannot have created anything: it is sent again."""
    fake = FakeServerBackups(clock)
    post = api.post("/backups/").mock(side_effect=[httpx.ConnectError("refused"), fake.post])
    listing = api.get("/backups/").mock(side_effect=fake.listing)
    assert (await client.create_backup(12345, "d")).id == 900
    assert post.call_count == 2
    assert not listing.called


async def test_create_refused_with_429_is_sent_again(
    client: BackupsClient, api: respx.MockRouter, clock: FakeTime
) -> None:
    """A 429 did nothing: the create is sent again after the wait, once."""
    fake = FakeServerBackups(clock)
    post = api.post("/backups/").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "0"}), fake.post]
    )
    assert (await client.create_backup(12345, "d")).id == 900
    assert post.call_count == 2
    assert len(fake.items) == 1


async def test_create_answer_naming_another_server_is_invalid(
    client: BackupsClient, api: respx.MockRouter, clock: FakeTime
) -> None:
    """An answer about another server's backup is not this create's answer."""
    api.post("/backups/").mock(
        return_value=httpx.Response(201, json=backup_json(77, "2025-01-16T15:45:00Z", server_id=999))
    )
    with pytest.raises(errors.InvalidResponse, match="backup of server 999, not of server 12345"):
        await client.create_backup(12345, "d")


async def test_create_400_and_404_are_not_retried(client: BackupsClient, api: respx.MockRouter) -> None:
    """A rejected create is final."""
    route = api.post("/backups/").mock(
        side_effect=[
            httpx.Response(404, json={"detail": "Not found."}),
            httpx.Response(400, json={"server_id": ["bad"]}),
        ]
    )
    with pytest.raises(errors.NotFound):
        await client.create_backup(999, "x")
    with pytest.raises(errors.BadRequest, match="server_id: bad"):
        await client.create_backup(999, "x")
    assert route.call_count == 2


# -- restore -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(202, json={"detail": "Restore started"}), {"detail": "Restore started"}),
        (httpx.Response(200, text="ok"), "ok"),
        (httpx.Response(204), None),
    ],
)
async def test_restore_accepts_any_2xx_and_shows_the_body(
    client: BackupsClient, api: respx.MockRouter, response: httpx.Response, expected: Any
) -> None:
    """The restore answer is undocumented: any 2xx is success, the body is passed on."""
    route = api.post("/servers/12345/restore/").mock(return_value=response)
    assert await client.restore_server(12345, 501) == expected
    assert json.loads(route.calls.last.request.content) == {"backup_id": 501}


async def test_restore_answer_nested_too_deep_is_shown_as_text(
    client: BackupsClient, api: respx.MockRouter
) -> None:
    """A 2xx restore answer that is JSON too deep to read comes back as its text, not a RecursionError."""
    deep = "[" * 100_000 + "]" * 100_000
    api.post("/servers/12345/restore/").mock(return_value=httpx.Response(202, text=deep))
    assert await client.restore_server(12345, 499) == deep


async def test_restore_is_never_retried(client: BackupsClient, api: respx.MockRouter) -> None:
    """Restoring overwrites a server: a failed restore is reported, not repeated."""
    route = api.post("/servers/12345/restore/").mock(return_value=httpx.Response(503))
    with pytest.raises(errors.ServerError):
        await client.restore_server(12345, 501)
    assert route.call_count == 1


# -- the token ---------------------------------------------------------------


async def test_token_never_in_logs_errors_or_reprs(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """Drive every failure path with logging captured; the token shows up nowhere."""
    client = make_client(retry_attempts=2)
    api.get("/backups/", params={"server_id": "5"}).mock(side_effect=httpx.ReadTimeout("t"))
    api.get("/backups/").mock(return_value=httpx.Response(401, json={"detail": "Invalid token."}))
    api.post("/backups/").mock(side_effect=httpx.RemoteProtocolError("reset"))
    api.delete("/backups/1/").mock(return_value=httpx.Response(500, json={"detail": "boom"}))
    seen: list[str] = [
        repr(client),
        repr(client.settings),
        repr(ApiToken(TOKEN, "x")),
        str(ApiToken(TOKEN, "x")),
    ]
    with structlog.testing.capture_logs() as logs:
        for call in (
            client.list_backups(),
            client.list_backups(server_id=5),
            client.create_backup(1, "d"),
            client.delete_backup(1),
        ):
            with pytest.raises(errors.ApiError) as caught:
                await call
            seen += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]
    seen += [json.dumps(entry, default=repr) for entry in logs]
    assert logs, "the failures were logged"
    assert not [text for text in seen if TOKEN in text]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"detail": f"Invalid token. You sent: Authorization: Bearer {TOKEN}"}, id="detail"),
        pytest.param({"authorization": [f"Bearer {TOKEN} is not valid"]}, id="field-errors"),
    ],
)
async def test_a_401_echoing_the_token_is_scrubbed(
    client: BackupsClient, api: respx.MockRouter, body: dict[str, Any]
) -> None:
    """An API that quotes the Authorization header back does not get the token into rotator's words."""
    api.get("/backups/").mock(return_value=httpx.Response(401, json=body))
    with structlog.testing.capture_logs() as logs, pytest.raises(errors.Unauthorized) as caught:
        await client.list_backups()
    assert TOKEN not in str(caught.value)
    assert "********" in str(caught.value)
    assert not [entry for entry in logs if TOKEN in json.dumps(entry, default=repr)]


async def test_an_empty_page_with_backups_left_is_refused_at_once(
    client: BackupsClient, api: respx.MockRouter
) -> None:
    """Page 2 holds nothing while the count says 8 more remain: an error now, not after 100,000 pages."""
    first = [backup_json(i, "2025-01-16T03:00:00Z") for i in range(1, 3)]
    route = api.get("/backups/").mock(
        side_effect=[
            page(first, count=10, next_url=f"{API}/backups/?cursor=b"),
            page([], count=10, next_url=f"{API}/backups/?cursor=c"),
            page([], count=10, next_url=f"{API}/backups/?cursor=d"),
        ]
    )
    with pytest.raises(errors.IncompleteListing, match=r"page 2 of the listing is empty .* 8 more backups"):
        await client.list_backups()
    assert route.call_count == 2


async def test_token_is_not_sent_with_a_foreign_request(client: BackupsClient) -> None:
    """The auth flow adds the header only for the API's origin."""
    with respx.mock() as router:
        route = router.get("https://elsewhere.test/x").mock(return_value=httpx.Response(200))
        await client._http.get("https://elsewhere.test/x")
    assert "authorization" not in route.calls.last.request.headers


async def test_concurrency_cap_is_shared(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """No more than max_concurrency requests are on the wire at once, whoever sends them."""
    client = make_client(max_concurrency=2, requests_per_second=1000, burst=1000)
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return page([])

    api.get("/backups/").mock(side_effect=slow)
    await asyncio.gather(*(client.list_backups(server_id=i) for i in range(1, 9)))
    assert peak == 2


def test_backup_model_round_trips_the_api_shape() -> None:
    """to_api() writes the API's own shape back (timestamps with Z)."""
    backup = Backup.from_api(DOC_EXAMPLE[1])
    assert backup.to_api() == DOC_EXAMPLE[1]


# -- observer ------------------------------------------------------------------


async def test_every_attempt_reaches_the_observer(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter
) -> None:
    """Each attempt (with its status, or as a transport error), each retry and each 429 is told to the
    observer; a 401 marks the token rejected, the next accepted call marks it good again."""
    telemetry = Telemetry()
    client = make_client()
    client.stats.observer = telemetry
    api.get("/backups/").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(429, headers={"Retry-After": "1"}),
            page([]),
            httpx.Response(401, json={"detail": "Invalid token."}),
        ]
    )
    await client.list_backups()
    assert telemetry.health.last_auth_ok is True
    with pytest.raises(errors.Unauthorized):
        await client.list_backups()
    text = telemetry.metrics.render().decode()
    route = 'method="GET",route="/api/v1/backups/"'
    for status in ("transport_error", "429", "200", "401"):
        assert f'rotator_api_requests_total{{{route},status="{status}"}} 1.0' in text
    assert 'rotator_api_retries_total{method="GET"} 2.0' in text
    assert "rotator_api_rate_limited_total 1.0" in text
    assert "rotator_api_authenticated 0.0" in text
    assert telemetry.health.last_auth_ok is False


# -- the client's own request path (straight to its transport) ----------------------------------


async def test_requests_carry_what_httpx_client_would_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built by the client itself, a request has the headers httpx's client builds (and the token, for
    the API's origin only); with a proxy configured it goes through httpx's client, with the same."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    client = BackupsClient(
        ApiToken(TOKEN, "test"), ClientSettings(base_url=API), transport=httpx.MockTransport(record)
    )
    await client.delete_backup(7)
    expected = client._http.build_request("DELETE", f"{API}/backups/7/")
    (sent,) = seen
    assert sent.url == expected.url
    assert {**expected.headers, "authorization": f"Bearer {TOKEN}"} == dict(sent.headers)
    assert sent.extensions["timeout"] == expected.extensions["timeout"]
    foreign = client._request("GET", httpx.URL("https://elsewhere.test/x"), None, None)
    assert "authorization" not in foreign.headers
    await client.aclose()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    proxied = BackupsClient(ApiToken(TOKEN, "test"), ClientSettings(base_url=API))
    assert proxied._transport is None
    request = proxied._request("DELETE", httpx.URL(f"{API}/backups/7/"), None, None)
    assert dict(request.headers) == dict(expected.headers)  # the token is added by the client's auth flow
    await proxied.aclose()


@pytest.mark.parametrize("failures", [0, 1, 2])
async def test_a_failed_first_attempt_is_retried_as_before(
    make_client: Callable[..., BackupsClient], api: respx.MockRouter, failures: int
) -> None:
    """The first attempt runs outside stamina; a failure of it is retried (and counted) as stamina did."""
    route = api.get("/backups/").mock(
        side_effect=[httpx.Response(503)] * failures + [page([backup_json(1, "2025-01-16T03:00:00Z")])]
    )
    client = make_client()
    listing = await client.list_backups()
    assert listing.count == 1
    assert route.call_count == failures + 1
    assert client.stats.retries == failures
