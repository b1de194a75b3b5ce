"""The runner against an API that lags, shifts and lies: the sandbox's faults, one promise each.

Each test names the promise it breaks on rotator 0.1 (the fault campaign of an independent
emulator found them) and shows it kept: no second backup for a slot, never a prune on a stale or
shifted view, no trust in a create answer that cannot be right, a failed backup retried within its
slot, catch-up by marker. Time is the sandbox's clock, driven by the runner's own sleeps.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog

from rotator.api import BackupsClient
from rotator.markers import make_marker, parse_marker
from rotator.planner import Rail
from rotator.retention import Policy, Retention
from rotator.runner import JobSpec, Outcome, Runner, Status
from rotator.sandbox import RunningSandbox, Sandbox, SandboxOptions, running_sandbox
from rotator.schedule import cron_trigger
from rotator.scheduler import Daemon, ScheduledJob
from tests.sandbox_clients import SandboxTime, sandbox_client, sandbox_runner
from tests.test_runner import owned

NOW = datetime(2025, 1, 16, 3, 0, 30, tzinfo=UTC)
SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
SLOT_MARKER = make_marker("nightly", SLOT)


def job(servers: tuple[int, ...] = (1, 2), **changes: Any) -> JobSpec:
    retention = changes.pop("retention", Retention(keep_last=3))
    policy = Policy("nightly", retention, servers=servers)
    return replace(JobSpec(policy, description="nightly {date}"), **changes)


def slot_backups(sandbox: Sandbox, server_id: int, slot: datetime = SLOT) -> list[Any]:
    """Server ``server_id``'s backups carrying the policy's marker of ``slot`` (any attempt)."""
    found = []
    for record in sandbox.state.backups(server_id=server_id):
        marker = parse_marker(record.description)
        if marker is not None and marker.policy == "nightly" and marker.slot == slot:
            found.append(record)
    return found


def api_deletes(sandbox: Sandbox) -> list[dict[str, Any]]:
    """Deletes rotator sent (a third party's are marked ``by``)."""
    return [e.backup for e in sandbox.state.events("deleted") if "by" not in e.to_json()]


def posts(sandbox: Sandbox) -> int:
    """Creates that reached the API (answered or not), from the sandbox's event log."""
    return sum(1 for e in sandbox.state.events("created") if "by" not in e.to_json())


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options() -> SandboxOptions:
    """2 servers with 10 owned nightly backups each in one page, clock frozen just after the slot."""
    return SandboxOptions(
        seed=11,
        fleet="uniform",
        servers=2,
        backups_per_server=10,
        owner="nightly",
        frozen_clock=NOW,
        create_seconds=90,
        page_size=50,
    )


@pytest.fixture(name="time")
def fixture_time(sandbox: Sandbox) -> SandboxTime:
    return SandboxTime(sandbox)


class Hooked(httpx.AsyncBaseTransport):
    """The sandbox, with ``before(request)`` run before each request reaches it (a third party acting)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, now: Callable[[], datetime]) -> None:
        self.inner = inner
        self.now = now
        self.before: list[Callable[[httpx.Request], None]] = []
        # answers in the API's place when it returns one (a 429 the sandbox would not give)
        self.answer: Callable[[httpx.Request], httpx.Response | None] = lambda request: None
        self.sent: list[tuple[str, str, datetime]] = []  # (method, path, sandbox time) that reached the API

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for hook in list(self.before):
            hook(request)
        answer = self.answer(request)
        if answer is not None:
            return answer
        self.sent.append((request.method, request.url.path, self.now()))
        return await self.inner.handle_async_request(request)


@pytest.fixture(name="hooked")
def fixture_hooked(sandbox_transport: httpx.ASGITransport, sandbox: Sandbox) -> Hooked:
    return Hooked(sandbox_transport, sandbox.clock.now)


@pytest.fixture(name="client")
async def fixture_client(
    hooked: Hooked, sandbox_api_url: str, sandbox: Sandbox, time: SandboxTime
) -> AsyncIterator[BackupsClient]:
    async with sandbox_client(sandbox, sandbox_api_url, hooked, time) as client:
        yield client


@pytest.fixture(name="runner")
def fixture_runner(client: BackupsClient, time: SandboxTime) -> Runner:
    return sandbox_runner(client, time, poll_max=60)


# -- 2: every prune on a fresh view -----------------------------------------------------------


async def test_a_server_is_pruned_as_soon_as_its_backup_completed_not_after_the_others(
    runner: Runner, sandbox: Sandbox
) -> None:
    """Server 1's backup completes in 90 s; server 2 adopts one that never does: 1 is pruned at once."""
    sandbox.state.add_backup(2, status="in_progress", description=f"stuck {SLOT_MARKER}")
    report = await runner.run(job(wait_timeout=timedelta(hours=2)), SLOT)
    deletes = [e for e in sandbox.state.events("deleted") if e.backup["server"]["id"] == 1]
    assert len(deletes) == 8  # 10 + 1 new, keep 3
    assert max(e.at for e in deletes) < NOW + timedelta(minutes=15)  # not two hours later
    by_server = {r.server_id: r for r in report.servers}
    assert by_server[1].outcome is Outcome.OK
    assert "wait_timeout" in (by_server[2].error or "")


async def test_a_view_grown_old_is_read_again_before_the_prune(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """While server 1 prunes (one server at a time, its deletes taking 30 s), a third party deletes
    server 2's two newest old backups: server 2's plan is made on a listing read again (on the old
    one it would keep the two that are gone and leave one backup), and it keeps keep_last."""
    runner.workers = 1
    runner.max_view_age = 5.0
    done: list[int] = []

    def third_party(request: httpx.Request) -> None:
        if request.method == "DELETE" and not done:
            newest = sorted(
                (b for b in owned(sandbox, 2) if SLOT_MARKER not in (b.description or "")),
                key=lambda b: b.created_at,
            )[-2:]
            for backup in newest:
                sandbox.state.delete_backup(backup.id, by="third_party")
                done.append(backup.id)
            sandbox.clock.advance(timedelta(seconds=30))  # server 1's deletes take their time

    hooked.before.append(third_party)
    report = await runner.run(job(), SLOT)
    assert report.ok, report.summary_line()
    assert len(done) == 2
    left = owned(sandbox, 2)
    assert len(left) == 3, [b.description for b in left]  # the new one and the two newest remaining
    assert any(SLOT_MARKER in (b.description or "") for b in left)
    assert runner.views_read >= 1


async def test_a_delete_throttled_past_its_views_age_is_not_sent_on_it(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """The API throttles server 1's first DELETE (429, Retry-After 40 s) twice, and meanwhile a third
    party deletes its two newest old backups. The retry is not sent on the view, by then 80 s old
    (``max_view_age`` 60 s): the server is read again and planned anew, and keeps keep_last. Sent on
    the old view (as the client's retries once did), the deletes would leave the new backup alone."""
    runner.max_view_age = 60.0
    throttled: list[str] = []
    attempts: list[datetime] = []

    def answer(request: httpx.Request) -> httpx.Response | None:
        if request.method != "DELETE" or len(throttled) >= 2:
            return None
        if not throttled:
            newest = sorted(
                (b for b in owned(sandbox, 1) if SLOT_MARKER not in (b.description or "")),
                key=lambda b: b.created_at,
            )[-2:]
            for backup in newest:
                sandbox.state.delete_backup(backup.id, by="third_party")
        throttled.append(request.url.path)
        attempts.append(sandbox.clock.now())
        return httpx.Response(429, headers={"Retry-After": "40"}, json={"detail": "Request was throttled."})

    hooked.answer = answer
    report = await runner.run(job(servers=(1,)), SLOT)
    assert report.ok, report.summary_line()
    assert len(throttled) == 2
    left = owned(sandbox, 1)
    assert len(left) == 3, [b.description for b in left]  # the new one and the two newest remaining
    assert any(SLOT_MARKER in (b.description or "") for b in left)
    # every DELETE that reached the API went within max_view_age of a listing read before it
    listings = [at for method, path, at in hooked.sent if method == "GET"]
    deletes = [at for method, path, at in hooked.sent if method == "DELETE"]
    assert len(deletes) == 11 - 2 - 3
    for at in deletes + attempts:
        read = max(t for t in listings if t <= at)
        assert at - read <= timedelta(seconds=60), (at, read)


async def test_a_prune_whose_views_keep_going_stale_keeps_the_rest(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """Every DELETE is throttled for longer than ``max_view_age``: none is sent on a stale view; after
    a bounded number of fresh plans the server fails with the rest kept, and the run ends."""
    runner.max_view_age = 30.0
    attempts: list[datetime] = []

    def answer(request: httpx.Request) -> httpx.Response | None:
        if request.method != "DELETE":
            return None
        attempts.append(sandbox.clock.now())
        return httpx.Response(429, headers={"Retry-After": "40"}, json={"detail": "Request was throttled."})

    hooked.answer = answer
    report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert "fresh" in (result.error or "")
    assert result.deleted == []
    listings = [at for method, path, at in hooked.sent if method == "GET"]
    assert len(attempts) == 3  # one per fresh plan, none repeated on a view grown stale
    for at in attempts:
        assert at - max(t for t in listings if t <= at) <= timedelta(seconds=30)
    assert len(owned(sandbox, 1)) == 11
    assert api_deletes(sandbox) == []


async def test_no_prune_when_the_new_backup_is_gone_from_the_fresh_view(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """A third party deletes server 2's new backup while server 1 prunes: server 2 deletes nothing
    (on the stale view it would have kept the new backup that is gone and deleted the rest)."""
    runner.workers = 1
    runner.max_view_age = 5.0

    def third_party(request: httpx.Request) -> None:
        if request.method == "DELETE" and slot_backups(sandbox, 2):
            for backup in slot_backups(sandbox, 2):
                sandbox.state.delete_backup(backup.id, by="third_party")
            sandbox.clock.advance(timedelta(seconds=30))

    hooked.before.append(third_party)
    report = await runner.run(job(), SLOT)
    by_server = {r.server_id: r for r in report.servers}
    assert by_server[1].outcome is Outcome.OK
    assert by_server[2].outcome is Outcome.FAILED
    assert "not listed as completed" in (by_server[2].error or "")
    assert [d for d in api_deletes(sandbox) if d["server"]["id"] == 2] == []
    assert len(owned(sandbox, 2)) == 10


async def test_the_new_backup_is_never_deleted_even_when_the_rules_would(
    runner: Runner, sandbox: Sandbox
) -> None:
    """An owned backup stamped later than the new one (another clock) is what keep_last 1 keeps;
    the new backup is held back by its rail, not deleted."""
    sandbox.state.add_backup(1, created_at=NOW + timedelta(hours=3), description="later [rotator:nightly]")
    report = await runner.run(job(servers=(1,), retention=Retention(keep_last=1)), SLOT)
    result = report.servers[0]
    assert result.backup is not None
    assert [b.id for b in slot_backups(sandbox, 1)] == [result.backup.id]
    assert any(blocked.rail is Rail.NEW_BACKUP for blocked in result.blocked)
    assert result.backup.id not in [d["id"] for d in api_deletes(sandbox)]


async def test_a_wait_never_ends_before_the_wait_timeout(runner: Runner, sandbox: Sandbox) -> None:
    """A backup that stays in progress is waited for the whole wait_timeout, measured on the API's clock."""
    sandbox.update_faults(slow_rate=1.0, slow_seconds=10_000)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,), wait_timeout=timedelta(minutes=20)), SLOT)
    assert report.servers[0].outcome is Outcome.FAILED
    created_at = sandbox.state.events("created")[-1].at
    assert sandbox.clock.now() - created_at >= timedelta(minutes=20)
    assert any(e.get("status") == "wait_timeout" for e in logs if e["event"] == "backup.failed")
    assert api_deletes(sandbox) == []


# -- 3: a shifted listing is not a proof of absence ---------------------------------------------


@pytest.fixture(name="shifted")
def fixture_shifted(sandbox: Sandbox) -> Sandbox:
    """Servers 1-3; server 3's slot backup sits first on page 2 of the account listing (20 a page):
    under page shifts it is the backup a page-by-page reader skips."""
    state = sandbox.state
    assert state.backups() == []
    for server in (1, 2):
        for day in range(10):
            created = SLOT - timedelta(days=10 - day)
            state.add_backup(server, created_at=created, description=f"n {make_marker('nightly', created)}")
    state.add_backup(3, created_at=NOW, description=f"nightly {SLOT_MARKER}")
    for day in range(9):
        created = SLOT - timedelta(days=9 - day)
        state.add_backup(3, created_at=created, description=f"n {make_marker('nightly', created)}")
    return sandbox


THREE_SERVERS = SandboxOptions(
    seed=5, fleet="empty", servers=3, frozen_clock=NOW, create_seconds=90, page_size=20
)


@pytest.mark.parametrize("sandbox_options", [THREE_SERVERS])
async def test_a_slot_backup_skipped_by_a_page_shift_is_not_made_again(
    runner: Runner, shifted: Sandbox, hooked: Hooked
) -> None:
    """Page shifts with the count kept hide server 3's slot backup from the account listing: the
    create is decided only on a confirmed view, which finds it; one backup for the slot."""
    shifted.update_faults(page_shift_rate=1.0)
    gets: list[str] = []

    def shift_the_first_listing_only(request: httpx.Request) -> None:
        if request.method == "GET":
            gets.append(str(request.url))
            if len(gets) == 3:  # pages 1 and 2 of the first account listing were read
                shifted.update_faults(page_shift_rate=0.0)

    hooked.before.append(shift_the_first_listing_only)
    report = await runner.run(job(servers=(1, 2, 3)), SLOT)
    assert shifted.injected()["page_shift"] == 1
    assert "page=2" in gets[1]
    assert len(slot_backups(shifted, 3)) == 1
    assert posts(shifted) == 2
    assert {r.server_id: r.adopted for r in report.servers}[3] is True


# -- 4: a slow or lost create answer is not sent again ------------------------------------------


@pytest.fixture(name="served")
def fixture_served() -> Iterator[RunningSandbox]:
    """The sandbox on a loopback socket (where an answer can really be late or lost)."""
    options = SandboxOptions(
        seed=2,
        fleet="uniform",
        servers=2,
        backups_per_server=5,
        frozen_clock=NOW,
        create_seconds=90,
        page_size=50,
    )
    with running_sandbox(options) as running:
        yield running


async def served_run(served: RunningSandbox, spec: JobSpec, **client_settings: Any) -> Any:
    time = SandboxTime(served.sandbox)
    async with sandbox_client(
        served.sandbox, served.api_url, httpx.AsyncHTTPTransport(), time, **client_settings
    ) as client:
        runner = sandbox_runner(client, time)
        return await runner.run(spec, SLOT)


async def test_a_create_answer_slower_than_the_timeout_is_adopted_not_repeated(
    served: RunningSandbox,
) -> None:
    """The POST's answer comes after the client gave up (0.3 s timeout, 1 s delay): one backup per slot."""
    served.sandbox.update_faults(create_answer_delay=1.0)
    report = await served_run(served, job(), read_timeout=0.3)
    assert report.ok, report.summary_line()
    assert posts(served.sandbox) == 2
    for server in (1, 2):
        assert len(slot_backups(served.sandbox, server)) == 1
    assert report.totals()["adopted"] == 0  # it is this run's own create, found by its marker
    assert report.totals()["created"] == 2


async def test_a_lost_answer_under_listing_lag_is_waited_for_not_repeated(served: RunningSandbox) -> None:
    """The connection drops after the create, and listings lag 45 s: no second POST in the quiet period."""
    served.sandbox.update_faults(drop_rate=1.0, listing_lag=45.0)
    report = await served_run(served, job())
    assert report.ok, report.summary_line()
    assert posts(served.sandbox) == 2
    for server in (1, 2):
        assert len(slot_backups(served.sandbox, server)) == 1


async def test_a_create_that_never_shows_is_unknown_not_ok(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """Every create answer is lost and nothing is ever listed: the result is unknown, nothing pruned."""

    sent: list[datetime] = []

    def lose(request: httpx.Request) -> None:
        if request.method == "POST":
            sent.append(sandbox.clock.now())
            raise httpx.ReadTimeout("lost", request=request)

    hooked.before.append(lose)
    report = await runner.run(job(servers=(1,), wait_timeout=timedelta(minutes=10)), SLOT)
    assert report.status is Status.UNKNOWN
    assert report.servers[0].outcome is Outcome.UNKNOWN
    assert api_deletes(sandbox) == []
    # sent again only after a whole quiet period in which nothing showed up
    assert len(sent) >= 2
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert all(gap >= timedelta(seconds=runner.quiet_period) for gap in gaps), gaps


# -- 5: answers that cannot be right -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ("lie_known_id_rate", "already listed"),
        ("lie_other_server_rate", "not of server"),
    ],
)
async def test_a_create_answer_that_cannot_be_right_fails_the_server(
    runner: Runner, sandbox: Sandbox, fault: str, why: str
) -> None:
    """An answer naming a backup already listed, or another server: the server fails, nothing pruned."""
    sandbox.update_faults(**{fault: 1.0})
    report = await runner.run(job(), SLOT)
    assert all(r.outcome is Outcome.FAILED and why in (r.error or "") for r in report.servers)
    assert api_deletes(sandbox) == []
    assert posts(sandbox) == 2  # and no second create for either


async def test_a_description_cut_by_the_api_fails_loudly_and_creates_no_more(
    runner: Runner, sandbox: Sandbox
) -> None:
    """The API cuts descriptions at 30 characters: the marker is lost, the server fails, one POST each."""
    sandbox.update_faults(description_max_length=30)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(), SLOT)
    assert all(r.outcome is Outcome.FAILED and "losing its marker" in (r.error or "") for r in report.servers)
    assert posts(sandbox) == 2
    assert api_deletes(sandbox) == []
    assert [e for e in logs if e["event"] == "backup.marker_lost"]


async def test_empty_pages_with_backups_left_stop_the_run_at_once(runner: Runner, sandbox: Sandbox) -> None:
    """Pages that come back empty while the count says more: every server fails, nothing deleted."""
    sandbox.update_faults(empty_page_rate=1.0)
    for server in (1, 2):
        for _ in range(50):
            sandbox.state.add_backup(server, created_at=NOW - timedelta(days=400), description="old by hand")
    report = await runner.run(job(), SLOT)
    assert not report.ok
    assert all("empty" in (r.error or "") for r in report.servers), report.summary_line()
    assert api_deletes(sandbox) == []
    assert posts(sandbox) == 0


# -- 6: a failed backup does not block its slot ---------------------------------------------------


async def test_a_failed_attempt_is_retried_within_the_run_and_superseded(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """Attempt 1 fails: after retry_delay attempt #2 is made, completes, and the failed one is pruned."""
    sandbox.update_faults(fail_rate=1.0)
    sent: list[str] = []

    def count_posts(request: httpx.Request) -> None:
        if request.method == "POST":
            sent.append(request.content.decode())
            if len(sent) == 3:
                sandbox.update_faults(fail_rate=0.0)  # the first attempts are doomed, the next are not

    hooked.before.append(count_posts)
    report = await runner.run(job(retry_delay=timedelta(minutes=10)), SLOT)
    assert report.ok, report.summary_line()
    for server in (1, 2):
        mine = slot_backups(sandbox, server)
        assert [b.status for b in mine] == ["completed"]  # the failed attempt was pruned
        assert mine[0].description.endswith(f"{make_marker('nightly', SLOT, 2)}")
        assert mine[0].description.endswith("Z#2]")
    deleted_failed = [d for d in api_deletes(sandbox) if d["status"] == "failed"]
    assert len(deleted_failed) == 2
    assert posts(sandbox) == 4


async def test_the_daemons_run_leaves_the_retry_to_the_daemon(runner: Runner, sandbox: Sandbox) -> None:
    """Without retries in the run, a failed attempt fails the server with its retry due."""
    sandbox.update_faults(fail_rate=1.0)
    report = await runner.run(job(), SLOT, retry_in_run=False)
    assert report.retry == [1, 2]
    assert all("attempt 2 is due" in (r.error or "") for r in report.servers)
    assert posts(sandbox) == 2


async def test_a_failed_backup_carrying_the_marker_does_not_block_the_slot(
    runner: Runner, sandbox: Sandbox
) -> None:
    """A person's failed backup with the slot's marker: attempt #2 is made at once, nothing adopted."""
    sandbox.state.add_backup(1, status="failed", created_at=NOW, description=f"by hand {SLOT_MARKER}")
    report = await runner.run(job(servers=(1,)), SLOT)
    assert report.ok, report.summary_line()
    assert report.servers[0].attempt == 2
    assert not report.servers[0].adopted


async def test_every_attempt_failed_gives_up_and_prunes_nothing(runner: Runner, sandbox: Sandbox) -> None:
    """Three attempts, all failed: the server fails, its backups all stay."""
    sandbox.update_faults(fail_rate=1.0)
    report = await runner.run(job(servers=(1,), retries=2, retry_delay=timedelta(minutes=1)), SLOT)
    assert "all 3 attempts" in (report.servers[0].error or "")
    assert posts(sandbox) == 3
    assert api_deletes(sandbox) == []


# -- 7: catch-up by marker, whatever the API's clock says -----------------------------------------


async def test_catch_up_runs_a_missed_slot_whatever_the_apis_clock_says(
    runner: Runner, sandbox: Sandbox
) -> None:
    """The API's clock runs 5 minutes ahead: an owned backup made just before the slot is stamped
    after it; catch-up still sees that the slot has no backup and runs it."""
    for server in (1, 2):
        sandbox.state.add_backup(
            server, created_at=SLOT + timedelta(minutes=3), description="ad hoc [rotator:nightly]"
        )
    spec = job()
    scheduled = ScheduledJob(spec, cron_trigger("0 3 * * *", "UTC"))
    daemon = Daemon([scheduled], runner, wall_clock=sandbox.clock.now)
    await daemon.catch_up(scheduled)
    for server in (1, 2):
        assert len(slot_backups(sandbox, server)) == 1


# -- 8: a shutdown is not a failure ----------------------------------------------------------------


async def test_a_shutdown_during_the_wait_is_abandoned_not_failed(runner: Runner, sandbox: Sandbox) -> None:
    """The abandon event during the wait: every server abandoned, the run's status abandoned."""
    sleep = runner._sleep

    async def stop_at_the_first_poll(seconds: float) -> None:
        runner.abandon.set()
        await sleep(seconds)

    runner._sleep = stop_at_the_first_poll
    report = await runner.run(job(), SLOT)
    assert report.status is Status.ABANDONED
    assert all(r.outcome is Outcome.ABANDONED for r in report.servers)
    assert api_deletes(sandbox) == []
    assert "ABANDONED" in report.summary_line()
