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
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    assert report.ok, report.summary_line()
    assert len(throttled) == 2
    (replanned,) = [e for e in logs if e["event"] == "prune.replanned"]
    assert (replanned["log_level"], replanned["server_id"]) == ("warning", 1)
    assert f"/{replanned['backup_id']}/" in throttled[0]
    assert replanned["view_age_s"] > runner.max_view_age
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
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert result.error == "no view of the server stayed fresh long enough to prune on; the rest kept"
    assert [
        (e["log_level"], e.get("rail"), e.get("server_id")) for e in logs if e["event"] == "prune.blocked"
    ] == [("error", "stale_view", 1)]
    assert len([e for e in logs if e["event"] == "prune.replanned"]) == 3
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
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(), SLOT)
    by_server = {r.server_id: r for r in report.servers}
    assert by_server[1].outcome is Outcome.OK
    assert by_server[2].outcome is Outcome.FAILED
    assert "not listed as completed" in (by_server[2].error or "")
    new = by_server[2].backup
    assert new is not None
    assert [
        (e["log_level"], e.get("server_id"), e.get("backup_id"))
        for e in logs
        if e["event"] == "prune.blocked" and e.get("rail") == Rail.BACKUP_NOT_COMPLETED.value
    ] == [("error", 2, new.id)]
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


# -- what a run tells its operator: the events and the result of each path ------------------------
# Operators alert on these events and read these results (the summary, exit codes, metrics): each
# path's event names and key fields are part of the interface, not decoration.


def said(logs: list[dict[str, Any]], event: str, *fields: str) -> list[dict[str, Any]]:
    """The ``event`` entries of ``logs``, each cut to its level and ``fields``."""
    return [
        {"log_level": e["log_level"], **{f: e.get(f) for f in fields}} for e in logs if e["event"] == event
    ]


def error(status: int) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json={"detail": f"refused with {status}"})


def answer_delete(hooked: Hooked, backup_id: int, status: int) -> None:
    """The API answers the DELETE of ``backup_id`` with ``status`` (without acting); others reach it."""
    path = f"/api/v1/backups/{backup_id}/"
    hooked.answer = lambda request: (
        error(status)(request) if request.method == "DELETE" and request.url.path == path else None
    )


async def test_a_clean_run_says_created_completed_and_each_delete(runner: Runner, sandbox: Sandbox) -> None:
    """One server, 10 old backups, keep 3: created, completed, then the 8 oldest deleted, oldest first."""
    old = sorted(owned(sandbox, 1), key=lambda b: b.created_at)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    new = slot_backups(sandbox, 1)
    assert len(new) == 1
    assert result.backup is not None
    assert result.backup.id == new[0].id
    assert (result.outcome, result.created, result.attempt, result.adopted) == (Outcome.OK, 1, 1, False)
    assert result.kept == 3
    assert result.deleted == [b.id for b in old[:8]]
    description = job().describe(SLOT, 1)
    assert said(logs, "backup.created", "server_id", "backup_id", "description") == [
        {"log_level": "info", "server_id": 1, "backup_id": new[0].id, "description": description}
    ]
    assert said(logs, "backup.completed", "server_id", "backup_id") == [
        {"log_level": "info", "server_id": 1, "backup_id": new[0].id}
    ]
    deleted = said(logs, "backup.deleted", "server_id", "backup_id", "created_at", "already_gone")
    assert deleted == [
        {
            "log_level": "info",
            "server_id": 1,
            "backup_id": b.id,
            "created_at": b.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "already_gone": None,
        }
        for b in old[:8]
    ]
    # a plain delete has no reason of its own (no rule kept it); a superseded failed attempt would
    assert all(e["reasons"] == [] for e in logs if e["event"] == "backup.deleted")
    assert said(logs, "backup.description_changed") == []
    assert said(logs, "backup.adopted") == []


async def test_a_dry_run_says_what_it_would_create_and_delete(runner: Runner, sandbox: Sandbox) -> None:
    """A dry run: the create it would make, each delete it would send (rail dry_run); nothing sent."""
    old = sorted(owned(sandbox, 1), key=lambda b: b.created_at)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT, dry_run=True)
    (result,) = report.servers
    assert posts(sandbox) == 0
    assert api_deletes(sandbox) == []
    assert said(logs, "backup.would_create", "server_id", "description") == [
        {"log_level": "info", "server_id": 1, "description": job().describe(SLOT, 1)}
    ]
    # the plan counts the backup the run would create: it keeps that one and the 2 newest old ones,
    # and would delete the 8 oldest, as the real run does (test_a_clean_run_says_created_completed_...)
    would = said(logs, "backup.would_delete", "server_id", "backup_id", "rail")
    assert would == [
        {"log_level": "info", "server_id": 1, "backup_id": b.id, "rail": Rail.DRY_RUN.value} for b in old[:8]
    ]
    assert said(logs, "prune.blocked") == []
    assert [b.rail for b in result.blocked] == [Rail.DRY_RUN] * 8


async def test_deletes_held_back_by_the_cap_are_said_one_by_one(runner: Runner, sandbox: Sandbox) -> None:
    """max_deletes_per_run 2: the 2 oldest go, the other 6 are held back (prune.blocked, max_deletes)."""
    old = sorted(owned(sandbox, 1), key=lambda b: b.created_at)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,), max_deletes_per_run=2), SLOT)
    (result,) = report.servers
    assert result.deleted == [b.id for b in old[:2]]
    assert said(logs, "prune.blocked", "server_id", "backup_id", "rail") == [
        {"log_level": "info", "server_id": 1, "backup_id": b.id, "rail": Rail.MAX_DELETES.value}
        for b in old[2:8]
    ]
    assert said(logs, "backup.would_delete") == []
    assert [b.decision.backup.id for b in result.blocked] == [b.id for b in old[2:8]]


async def test_a_refused_create_says_so_and_fails_the_server(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """The API answers the POST with 400: create_failed (an error), the server failed, nothing pruned."""
    hooked.answer = lambda request: error(400)(request) if request.method == "POST" else None
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert (result.error or "").startswith("create failed: POST /api/v1/backups/ (400): refused with 400")
    (entry,) = said(logs, "backup.create_failed", "server_id", "error")
    assert entry["log_level"] == "error"
    assert entry["server_id"] == 1
    assert "refused with 400" in entry["error"]
    assert api_deletes(sandbox) == []
    assert result.created == 0


async def test_a_lost_create_answer_says_unknown_with_its_attempt(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """Every answer lost, nothing listed: create_unknown (a warning) per POST with attempt 1, then an
    error saying it was never listed; the result is unknown at attempt 1, nothing counted created."""

    def lose(request: httpx.Request) -> None:
        if request.method == "POST":
            raise httpx.ReadTimeout("lost", request=request)

    hooked.before.append(lose)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,), wait_timeout=timedelta(minutes=5)), SLOT)
    (result,) = report.servers
    assert (result.outcome, result.attempt, result.created, result.backup) == (Outcome.UNKNOWN, 1, 0, None)
    assert "stayed unknown" in (result.error or "")
    unknown = said(logs, "backup.create_unknown", "server_id", "attempt", "reason")
    assert unknown[0] == {"log_level": "warning", "server_id": 1, "attempt": 1, "reason": None}
    assert unknown[-1] == {"log_level": "error", "server_id": 1, "attempt": None, "reason": "never listed"}
    assert all(
        e["error"] for e in logs if e["event"] == "backup.create_unknown" and e["log_level"] == "warning"
    )


async def test_an_answer_naming_a_known_backup_says_why(runner: Runner, sandbox: Sandbox) -> None:
    """An answer naming a backup already listed: create_invalid with the id and the reason."""
    sandbox.update_faults(lie_known_id_rate=1.0)
    known = {b.id for b in sandbox.state.backups(server_id=1)}
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert "cannot be trusted; nothing pruned, no more creates for this server" in (result.error or "")
    (entry,) = said(logs, "backup.create_invalid", "server_id", "backup_id", "reason")
    assert (entry["log_level"], entry["server_id"], entry["reason"]) == ("error", 1, "known id")
    assert entry["backup_id"] in known
    assert result.created == 0


async def test_a_lost_marker_names_the_backup_and_both_descriptions(runner: Runner, sandbox: Sandbox) -> None:
    """Descriptions cut at 30 characters: the result holds the backup made, the log what was sent and
    what came back, and the error tells where to look."""
    sandbox.update_faults(description_max_length=30)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    made = [b for b in sandbox.state.backups(server_id=1) if b.id not in {b.id for b in owned(sandbox, 1)}]
    assert result.backup is not None
    assert [result.backup.id] == [b.id for b in made]
    assert "check api.max_description_length and the description template" in (result.error or "")
    sent = job().describe(SLOT, 1)
    assert said(logs, "backup.marker_lost", "server_id", "backup_id", "sent", "returned") == [
        {"log_level": "error", "server_id": 1, "backup_id": made[0].id, "sent": sent, "returned": sent[:30]}
    ]


async def test_retried_attempts_are_counted_and_the_failure_said(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """Attempt 1 fails, attempt 2 completes: two creates counted, backup.failed for the first."""
    sandbox.update_faults(fail_rate=1.0)

    def heal(request: httpx.Request) -> None:
        if request.method == "POST" and posts(sandbox) == 1:
            sandbox.update_faults(fail_rate=0.0)

    hooked.before.append(heal)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,), retry_delay=timedelta(minutes=5)), SLOT)
    (result,) = report.servers
    assert (result.outcome, result.created, result.attempt) == (Outcome.OK, 2, 2)
    first = min(slot_backups(sandbox, 1), key=lambda b: b.id, default=None)
    failed = said(logs, "backup.failed", "server_id", "backup_id", "status")
    assert len(failed) == 1
    assert failed[0]["status"] == "failed"
    assert failed[0]["server_id"] == 1
    assert first is None or failed[0]["backup_id"] < first.id  # the failed one was pruned; its id is older
    assert said(logs, "backup.retry_waiting", "server_id", "attempt", "delay_s") == [
        {"log_level": "info", "server_id": 1, "attempt": 2, "delay_s": 300.0}
    ]


async def test_a_delete_answered_404_is_said_already_gone(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """The first DELETE finds its backup gone (404): counted deleted, said already_gone, the rest go on."""
    old = sorted(owned(sandbox, 1), key=lambda b: b.created_at)
    answer_delete(hooked, old[0].id, 404)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.OK
    assert result.deleted == [b.id for b in old[:8]]
    gone = [
        e for e in said(logs, "backup.deleted", "server_id", "backup_id", "already_gone") if e["already_gone"]
    ]
    assert gone == [{"log_level": "info", "server_id": 1, "backup_id": old[0].id, "already_gone": True}]


async def test_a_refused_delete_stops_the_servers_prune_and_says_so(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """The third DELETE is refused (400): two went, the server failed naming the backup, the rest kept."""
    old = sorted(owned(sandbox, 1), key=lambda b: b.created_at)
    answer_delete(hooked, old[2].id, 400)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert (result.error or "").startswith(f"delete of backup {old[2].id} failed:")
    assert result.deleted == [old[0].id, old[1].id]
    assert len(owned(sandbox, 1)) == 11 - 2
    (entry,) = said(logs, "backup.delete_failed", "server_id", "backup_id", "error")
    assert entry["error"] == f"DELETE /api/v1/backups/{old[2].id}/ (400): refused with 400"
    del entry["error"]
    assert entry == {"log_level": "error", "server_id": 1, "backup_id": old[2].id}


async def test_a_failed_poll_is_said_and_the_wait_goes_on(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """One poll of the waiting server fails (400): poll_failed (a warning), then the next poll finds the
    backup completed and the run ends ok; the failure is not in the result."""
    gets: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response | None:
        if request.method == "GET" and posts(sandbox) == 1:
            gets.append(request.url.path)
            if len(gets) == 1:
                return error(400)(request)
        return None

    hooked.answer = answer
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.OK, result.error
    (entry,) = said(logs, "backup.poll_failed", "server_id", "error")
    assert "(400): refused with 400" in entry["error"]
    assert (entry["log_level"], entry["server_id"]) == ("warning", 1)


async def test_the_quiet_period_ends_exactly_at_its_length(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """Answers lost, nothing listed, quiet period 75 s, polls 30 s then 45 s apart: a view read exactly
    75 s after the lost POST is the first that may decide to send again, and the next POST goes then,
    not a poll later."""
    runner.quiet_period = 75.0
    posted: list[datetime] = []

    def lose(request: httpx.Request) -> None:
        if request.method == "POST":
            posted.append(sandbox.clock.now())
            raise httpx.ReadTimeout("lost", request=request)

    hooked.before.append(lose)
    await runner.run(job(servers=(1,), wait_timeout=timedelta(minutes=3)), SLOT)
    assert len(posted) >= 2
    quiet = timedelta(seconds=runner.quiet_period)
    reads = [at for method, _, at in hooked.sent if method == "GET" and at > posted[0]]
    first_after_quiet = min(at for at in reads if at - posted[0] >= quiet)
    assert first_after_quiet - posted[0] == quiet  # the schedule puts a read on the boundary itself
    assert posted[1] == first_after_quiet


async def test_a_backup_of_the_slot_made_by_someone_else_is_adopted_and_said(
    runner: Runner, sandbox: Sandbox
) -> None:
    """The slot's backup exists already (another instance, a person): adopted (said, with its id and
    status), not created, and counted as adopted."""
    theirs = sandbox.state.add_backup(
        1, status="completed", created_at=NOW, description=f"theirs {SLOT_MARKER}"
    )
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert (result.outcome, result.adopted, result.created) == (Outcome.OK, True, 0)
    assert result.backup is not None
    assert result.backup.id == theirs.id
    assert posts(sandbox) == 0
    assert said(logs, "backup.adopted", "server_id", "backup_id", "status") == [
        {"log_level": "info", "server_id": 1, "backup_id": theirs.id, "status": "completed"}
    ]


async def test_a_wait_ends_at_its_wait_timeout_not_a_poll_later(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """wait_timeout 75 s, polls 30 s then 45 s apart, the backup completing after 90 s: the wait ends
    on the poll due exactly at 75 s (the server failed, nothing pruned), with no poll after it."""
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,), wait_timeout=timedelta(seconds=75)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert result.backup is not None
    assert result.error == f"backup {result.backup.id} still in progress after the wait_timeout"
    posted = next(at for method, _, at in hooked.sent if method == "POST")
    last_read = max(at for method, _, at in hooked.sent if method == "GET")
    assert last_read - posted <= timedelta(seconds=75)  # the poll at 75 s is the last: none at 135 s
    assert api_deletes(sandbox) == []
    assert said(logs, "backup.failed", "server_id", "backup_id", "status") == [
        {"log_level": "error", "server_id": 1, "backup_id": result.backup.id, "status": "wait_timeout"}
    ]


async def test_a_failed_re_read_before_a_later_prune_round_keeps_the_rest(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """The first DELETE takes 30 s (max_view_age 5 s), so the second is not sent on that view; the
    re-read is refused: the server fails naming the listing, the rest kept, said as partial_listing."""
    runner.max_view_age = 5.0
    refused: list[bool] = []

    def slow_first_delete(request: httpx.Request) -> None:
        if request.method == "DELETE" and not refused:
            sandbox.clock.advance(timedelta(seconds=30))
            refused.append(True)

    hooked.before.append(slow_first_delete)
    hooked.answer = lambda request: error(400)(request) if request.method == "GET" and refused else None
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.FAILED
    assert len(result.deleted) == 1
    assert (result.error or "").startswith("listing before the prune failed, nothing more deleted: GET ")
    assert len(owned(sandbox, 1)) == 11 - 1
    (entry,) = said(logs, "prune.blocked", "server_id", "rail", "error")
    assert (entry["log_level"], entry["server_id"], entry["rail"]) == ("error", 1, Rail.PARTIAL_LISTING.value)
    assert "(400): refused with 400" in entry["error"]


async def test_a_backup_that_vanishes_while_waited_for_fails_the_server(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """A third party deletes the new backup while it is still in progress: the next poll does not list
    it; no second create, the server fails saying the backup vanished, nothing pruned."""
    gone: list[int] = []

    def third_party(request: httpx.Request) -> None:
        if request.method == "GET" and posts(sandbox) == 1 and not gone:
            for backup in slot_backups(sandbox, 1):
                sandbox.state.delete_backup(backup.id, by="third_party")
                gone.append(backup.id)

    hooked.before.append(third_party)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,)), SLOT)
    (result,) = report.servers
    assert len(gone) == 1
    assert result.outcome is Outcome.FAILED
    assert result.error == f"backup {gone[0]} vanished while being waited for; nothing pruned"
    assert posts(sandbox) == 1
    assert api_deletes(sandbox) == []
    assert said(logs, "backup.failed", "server_id", "backup_id", "status") == [
        {"log_level": "error", "server_id": 1, "backup_id": gone[0], "status": "vanished"}
    ]


async def test_the_cap_counts_the_deletes_of_earlier_prune_rounds(
    runner: Runner, sandbox: Sandbox, hooked: Hooked
) -> None:
    """max_deletes_per_run 3, and the first DELETE takes 30 s (max_view_age 5 s): the server is read
    again and planned anew, and the new plan may delete only the 2 the cap has left, not 3 more. The
    backups held back are the second plan's, said once each."""
    runner.max_view_age = 5.0
    old = sorted(owned(sandbox, 1), key=lambda b: b.created_at)
    slow: list[bool] = []

    def slow_first_delete(request: httpx.Request) -> None:
        if request.method == "DELETE" and not slow:
            sandbox.clock.advance(timedelta(seconds=30))
            slow.append(True)

    hooked.before.append(slow_first_delete)
    with structlog.testing.capture_logs() as logs:
        report = await runner.run(job(servers=(1,), max_deletes_per_run=3), SLOT)
    (result,) = report.servers
    assert result.outcome is Outcome.OK, result.error
    assert len(said(logs, "prune.replanned")) == 1
    assert result.deleted == [b.id for b in old[:3]]
    assert [b.decision.backup.id for b in result.blocked] == [b.id for b in old[3:8]]
    assert {b.rail for b in result.blocked} == {Rail.MAX_DELETES}
    assert len(owned(sandbox, 1)) == 11 - 3
    assert [e["id"] for e in api_deletes(sandbox)] == [b.id for b in old[:3]]


async def test_a_dry_run_of_a_server_without_backups_plans_nothing_and_is_ok(
    runner: Runner, sandbox: Sandbox
) -> None:
    """Server 1 has no backup at all: a dry run makes none, so its prune plans on an empty listing,
    which names no server; the plan is still the server's (nothing to delete), not an error."""
    for backup in list(sandbox.state.backups(server_id=1)):
        sandbox.state.delete_backup(backup.id, by="third_party")
    report = await runner.run(job(servers=(1,)), SLOT, dry_run=True)
    (result,) = report.servers
    assert result.outcome is Outcome.OK, result.error
    assert (result.deleted, result.blocked, result.kept) == ([], [], 0)
    assert posts(sandbox) == 0
