"""``rotator run`` and ``rotator run-once`` as real processes against the sandbox on a loopback port.

Each test starts the sandbox in a thread (its clock follows real time) and
rotator with ``subprocess.Popen``, reads rotator's JSON log lines from stderr as
they arrive, and judges the outcome from the sandbox's own records: its event
log (what was created, completed, failed and deleted, in order) and its request
counts. Nothing waits a fixed time for an outcome: every wait polls a condition
against a deadline.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.child_env import clean_env
from rotator.markers import make_marker
from rotator.sandbox import RunningSandbox, SandboxOptions, running_sandbox
from rotator.sandbox.state import Event

EX_CONFIG = 78
DEADLINE = 25.0  # seconds any one condition may take before the test fails
MARKER = re.compile(r"\[rotator:(?P<policy>[A-Za-z0-9._-]+)@(?P<slot>[0-9T:Z-]+)\]\Z")
FAST_API = {"requests_per_second": 200, "burst": 100, "max_concurrency": 8}
FAST_DAEMON = {"poll_interval": "0.5s", "poll_max_interval": "1s", "shutdown_grace": "20s"}


# -- helpers --------------------------------------------------------------------


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def slot_of(description: str | None) -> tuple[str, str] | None:
    """``(policy, slot)`` from a description ending with a rotator marker with a slot."""
    match = MARKER.search(description or "")
    return (match["policy"], match["slot"]) if match else None


def marker_spelling(slot: str) -> str:
    """A slot as rotator's log writes it (``...T03:00:00Z``), spelled as its marker does (``...T03:00Z``
    on a whole minute, with seconds otherwise)."""
    instant = datetime.fromisoformat(slot.replace("Z", "+00:00"))
    marked = slot_of(make_marker("any", instant))
    assert marked is not None
    return marked[1]


def server_of(event: Event) -> int:
    return int(event.backup["server"]["id"])


def slot_keys(events: list[Event]) -> Counter[tuple[str, int, str]]:
    """How many backups were created for each (policy, server, slot)."""
    keys: Counter[tuple[str, int, str]] = Counter()
    for event in events:
        marked = slot_of(event.backup["description"])
        if marked is not None:
            keys[(marked[0], server_of(event), marked[1])] += 1
    return keys


def minute_slot(minutes_ago: int) -> datetime:
    """The start of the minute ``minutes_ago`` minutes back, in UTC."""
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)


def hourly_cron(slot: datetime) -> str:
    """A cron whose latest slot is ``slot`` for the next hour (so it never fires during a test)."""
    return f"{slot.minute} * * * *"


def iso_minute(slot: datetime) -> str:
    return slot.strftime("%Y-%m-%dT%H:%MZ")


def write_config(path: Path, policies: list[dict[str, Any]], **sections: Any) -> Path:
    document = {
        "policies": policies,
        "api": sections.pop("api", FAST_API),
        "daemon": sections.pop("daemon", FAST_DAEMON),
        "log": {"format": "json", "level": "info"},
        **sections,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def rotator_env(sandbox: RunningSandbox) -> dict[str, str]:
    return clean_env(ROTATOR_API_URL=sandbox.api_url, ROTATOR_API_TOKEN=sandbox.token)


def run_rotator(sandbox: RunningSandbox, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A short-lived rotator command, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "rotator", *argv],
        env=rotator_env(sandbox),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def log_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


class Rotator:
    """A ``rotator`` process whose stderr JSON events are collected as they are written."""

    def __init__(self, sandbox: RunningSandbox, *argv: str) -> None:
        self.argv = argv
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rotator", *argv],
            env=rotator_env(sandbox),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self.stdout = ""
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()

    def events(self, name: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Logged events so far, optionally of one name and with these field values."""
        with self._lock:
            lines = list(self.lines)
        found = []
        for line in lines:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if name is not None and event.get("event") != name:
                continue
            if all(event.get(key) == value for key, value in fields.items()):
                found.append(event)
        return found

    def wait_for(
        self, name: str, count: int = 1, timeout: float = DEADLINE, **fields: Any
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` events ``name`` (with ``fields``) were logged; fail if the process died."""

        def seen() -> list[dict[str, Any]] | None:
            events = self.events(name, **fields)
            if len(events) >= count:
                return events
            if self.process.poll() is not None:
                raise AssertionError(
                    f"rotator exited {self.process.returncode} before {name}:\n{self.tail()}"
                )
            return None

        try:
            return list(wait_until(seen, f"{count} x {name} {fields or ''}", timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        """Send ``signum`` and wait for the exit code (and the last lines)."""
        self.send(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = DEADLINE) -> int:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def reap(self) -> None:
        """Kill the process if it still runs and release its pipes (teardown)."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def tail(self, lines: int = 25) -> str:
        with self._lock:
            return "\n".join(self.lines[-lines:])


@pytest.fixture(name="serve")
def fixture_serve() -> Iterator[Callable[[SandboxOptions], RunningSandbox]]:
    """Start sandboxes on loopback ports; they stop at the end of the test."""
    with ExitStack() as stack:
        yield lambda options: stack.enter_context(running_sandbox(options))


@pytest.fixture(name="launch")
def fixture_launch(
    serve: Callable[[SandboxOptions], RunningSandbox],
) -> Iterator[Callable[..., Rotator]]:
    """Start rotator processes; any still running at the end is killed (before the sandbox stops)."""
    started: list[Rotator] = []

    def launch(sandbox: RunningSandbox, *argv: str) -> Rotator:
        process = Rotator(sandbox, *argv)
        started.append(process)
        return process

    yield launch
    for process in started:
        process.reap()


# -- 1. scheduled runs ------------------------------------------------------------


def test_scheduled_runs_keep_exactly_the_policy(
    serve: Callable[[SandboxOptions], RunningSandbox], launch: Callable[..., Rotator], tmp_path: Path
) -> None:
    """Runs every 3 s keep each server at keep_last: 3; one backup per (policy, server, slot)."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=5, owner="tri", create_seconds=0.3)
    )
    config = write_config(
        tmp_path / "rotator.yaml",
        [
            {
                "name": "tri",
                "servers": [1, 2, 3],
                "schedule": {"interval": "3s"},
                "retention": {"keep_last": 3},
            }
        ],
    )
    before = {sid: len(sandbox.state.backups(server_id=sid)) for sid in (1, 2, 3)}
    daemon = launch(sandbox, "run", "--config", str(config))
    daemon.wait_for("run.finished", count=3, timeout=30)
    assert daemon.stop() == 0, daemon.tail()

    finished = daemon.events("run.finished")
    assert all(run["ok"] for run in finished), finished
    created = sandbox.state.events("created")
    keys = slot_keys(created)
    assert max(keys.values()) == 1, f"two backups for one (policy, server, slot): {keys.most_common(3)}"
    slots = sorted({slot for _, _, slot in keys})
    assert len(slots) >= 3
    instants = [datetime.fromisoformat(slot.replace("Z", "+00:00")) for slot in slots]
    assert all((later - instants[0]).total_seconds() % 3 == 0 for later in instants), slots
    assert {sid for _, sid, _ in keys} == {1, 2, 3}
    assert len(created) == 3 * len(slots)

    # Replay the sandbox's log: when each run starts, the previous run has left exactly 3 per server.
    owned = dict(before)
    run_slot = None
    for event in sandbox.state.events():
        sid = server_of(event)
        marked = slot_of(event.backup["description"])
        if event.kind == "created":
            assert marked is not None
            if marked[1] != run_slot:
                expected = before if run_slot is None else dict.fromkeys(before, 3)
                assert owned == expected, f"before the run of {marked[1]}: {owned}"
                run_slot = marked[1]
            owned[sid] += 1
        elif event.kind == "deleted":
            owned[sid] -= 1
    for sid in (1, 2, 3):
        left = sandbox.state.backups(server_id=sid)
        newest = sorted(e.backup["id"] for e in created if server_of(e) == sid)[-3:]
        assert sorted(b.id for b in left) == newest, f"server {sid} keeps {[b.id for b in left]}"
        assert all(b.status == "completed" for b in left)


# -- 2. faults ----------------------------------------------------------------------

NON_CANDIDATES: list[dict[str, Any]] = [
    {"backup_type": "automatic", "description": "Automatic daily backup"},
    {"status": "in_progress", "description": "stuck [rotator:guarded@2020-01-01T02:00Z]"},
    {"description": "made by hand"},
    {"description": "someone else's [rotator:other@2020-01-03T02:00Z]"},
    {"description": "a longer name [rotator:guarded2@2020-01-04T02:00Z]"},
]


def test_faults_never_duplicate_nor_delete_wrongly(
    serve: Callable[[SandboxOptions], RunningSandbox], launch: Callable[..., Rotator], tmp_path: Path
) -> None:
    """5xx, dropped creates, failed backups, 429: no duplicate, no wrong delete, no prune after a failure."""
    sandbox = serve(
        SandboxOptions(
            fleet="uniform", servers=6, backups_per_server=3, owner="guarded", create_seconds=0.3, seed=11
        )
    )
    # older than every owned backup: the first in line for a rule that forgot ownership or status
    old = datetime.now(UTC) - timedelta(days=20)
    protected = {
        sandbox.state.add_backup(sid, created_at=old, **kind).id
        for sid in range(1, 7)
        for kind in NON_CANDIDATES
    }
    # an owned failed attempt: deleted only once a later owned backup of its server completed
    superseded = {
        sandbox.state.add_backup(
            sid, created_at=old, status="failed", description="broken [rotator:guarded@2020-01-02T02:00Z]"
        ).id
        for sid in range(1, 7)
    }
    # A tight rate limit while the first run's creates go out together, lifted once it answered 429:
    # rotator's RateLimit-* pacing would otherwise crawl at about one request a second (see the report).
    sandbox.sandbox.update_faults(error_rate=0.1, drop_rate=0.2, fail_rate=0.2, rate_limit=10, burst=2)
    config = write_config(
        tmp_path / "rotator.yaml",
        [
            {
                "name": "guarded",
                "servers": list(range(1, 7)),
                "schedule": {"interval": "3s"},
                "retention": {"keep_last": 2},
                "wait_timeout": "20s",
            }
        ],
        api={"requests_per_second": 200, "burst": 50, "max_concurrency": 8},
    )
    daemon = launch(sandbox, "run", "--config", str(config))

    def outcomes() -> Counter[str]:
        seen = Counter[str]()
        for counts in sandbox.sandbox.stats()["requests"].values():
            seen.update(counts)
        return seen

    wait_until(lambda: outcomes()["429"], "a 429")
    sandbox.sandbox.update_faults(rate_limit=None, burst=None)

    def faults_seen() -> bool:
        seen = outcomes()
        return (
            len(daemon.events("run.finished")) >= 3
            and seen["dropped"] > 0
            and any(status.startswith("5") for status in seen)
            and bool(sandbox.state.events("failed"))
            and bool(sandbox.state.events("deleted"))
        )

    wait_until(faults_seen, "3 runs with every kind of fault and some deletes", timeout=40)
    assert daemon.stop() == 0, daemon.tail()

    keys = slot_keys(sandbox.state.events("created"))
    assert max(keys.values()) == 1, f"two backups for one (policy, server, slot): {keys.most_common(3)}"

    deleted = sandbox.state.events("deleted")
    assert protected <= {b.id for b in sandbox.state.backups()}, "a non-candidate was deleted"
    created_seq = {e.backup["id"]: e.seq for e in sandbox.state.events("created")}  # seeded ones: none
    completions = sandbox.state.events("completed")
    for event in deleted:
        backup = event.backup
        assert backup["backup_type"] == "manual", backup
        assert (slot_of(backup["description"]) or ("",))[0] == "guarded", backup
        if backup["status"] == "failed":
            # a failed attempt goes only once a later owned backup of its server completed
            born = created_seq.get(backup["id"], 0)
            assert any(
                server_of(done) == server_of(event)
                and created_seq.get(done.backup["id"], 0) > born
                and done.seq < event.seq
                for done in completions
            ), f"failed attempt {backup['id']} deleted before a later backup completed"
            superseded.add(backup["id"])
            continue
        assert backup["status"] == "completed", backup

    # Every delete belongs to a run (by rotator's log) whose backup of that server completed before it.
    logged = {e["backup_id"]: e for e in daemon.events("backup.deleted")}
    assert {e.backup["id"] for e in deleted} == set(logged), "a delete rotator did not log as done"
    completed_at = {
        (server_of(e), slot_of(e.backup["description"])): e.seq for e in sandbox.state.events("completed")
    }
    failed = {(server_of(e), slot_of(e.backup["description"])) for e in sandbox.state.events("failed")}
    pruned = set()
    for event in deleted:
        if event.backup["id"] in superseded:
            continue
        run = (server_of(event), ("guarded", marker_spelling(logged[event.backup["id"]]["slot"])))
        pruned.add(run)
        assert run in completed_at, (
            f"deleted {event.backup['id']} in a run whose backup never completed: {run}"
        )
        assert completed_at[run] < event.seq, (
            f"deleted {event.backup['id']} before its run's backup completed"
        )
    assert failed, "no backup failed: the fault did not happen"
    assert not failed & pruned, f"pruned after a failed backup: {failed & pruned}"


# -- 3. crash and downtime ------------------------------------------------------------


def test_kill_9_mid_run_then_restart_adopts_and_never_duplicates(
    serve: Callable[[SandboxOptions], RunningSandbox], launch: Callable[..., Rotator], tmp_path: Path
) -> None:
    """kill -9 after the first create: the restart creates only what is missing; run-once adopts the rest."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=3, owner="hourly", create_seconds=3)
    )
    slot = minute_slot(2)
    policy = {"name": "hourly", "servers": [1, 2, 3], "schedule": {"cron": hourly_cron(slot)}}
    policy["retention"] = {"keep_last": 2}
    # One request a second: the creates of the catch-up run come one at a time.
    slow = write_config(tmp_path / "slow.yaml", [policy], api={"requests_per_second": 1, "burst": 1})
    first = launch(sandbox, "run", "--config", str(slow))
    first.wait_for("backup.created")
    first.process.kill()
    assert first.wait() == -signal.SIGKILL
    assert not first.events("backup.completed")

    marker = ("hourly", iso_minute(slot))
    has_slot = {
        server_of(e) for e in sandbox.state.events("created") if slot_of(e.backup["description"]) == marker
    }
    assert has_slot, "the kill came before any create"
    assert has_slot != {1, 2, 3}, "the kill came after every create"

    fast = write_config(tmp_path / "fast.yaml", [policy])
    second = launch(sandbox, "run", "--config", str(fast))
    (catch_up,) = second.wait_for("catch_up.started")
    # the servers without the slot's backup, and any whose backup was still in progress (that run
    # was cut short before its wait and prune: catching up adopts the backup and finishes the job)
    assert set(catch_up["servers"]) >= {1, 2, 3} - has_slot
    (finished,) = second.wait_for("run.finished")
    assert finished["ok"], second.tail()
    adopted_at_restart = {e["server_id"] for e in second.events("backup.adopted")}
    assert adopted_at_restart == set(catch_up["servers"]) & has_slot
    assert second.stop() == 0

    once = run_rotator(sandbox, "run-once", "--config", str(fast))
    assert once.returncode == 0, once.stderr
    adopted = [e for e in log_events(once.stderr) if e["event"] == "backup.adopted"]
    assert sorted(e["server_id"] for e in adopted) == [1, 2, 3]
    assert "0 created, 3 adopted" in once.stdout
    keys = slot_keys(sandbox.state.events("created"))
    assert keys == Counter({("hourly", sid, marker[1]): 1 for sid in (1, 2, 3)})


def test_catch_up_after_downtime_runs_the_missed_slot_once(
    serve: Callable[[SandboxOptions], RunningSandbox], launch: Callable[..., Rotator], tmp_path: Path
) -> None:
    """A slot passed while down: the start runs it for the servers that missed it; a second start does not."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=4, backups_per_server=3, owner="hourly", create_seconds=0.3)
    )
    slot = minute_slot(2)
    sandbox.state.add_backup(
        4, created_at=slot, description=f"made elsewhere [rotator:hourly@{iso_minute(slot)}]"
    )
    config = write_config(
        tmp_path / "rotator.yaml",
        [
            {
                "name": "hourly",
                "servers": [1, 2, 3, 4],
                "schedule": {"cron": hourly_cron(slot)},
                "retention": {"keep_last": 3},
            }
        ],
    )
    first = launch(sandbox, "run", "--config", str(config))
    (catch_up,) = first.wait_for("catch_up.started")
    assert catch_up["servers"] == [1, 2, 3]
    assert catch_up["slot"].startswith(slot.strftime("%Y-%m-%dT%H:%M"))
    (finished,) = first.wait_for("run.finished")
    assert finished["ok"], finished
    assert finished["created"] == 3, finished
    assert first.stop() == 0

    keys = slot_keys(sandbox.state.events("created"))
    assert keys == Counter({("hourly", sid, iso_minute(slot)): 1 for sid in (1, 2, 3)})

    listed = sandbox.sandbox.stats()["requests"]["GET /api/v1/backups/"]["200"]
    second = launch(sandbox, "run", "--config", str(config))
    second.wait_for("daemon.started")
    wait_until(
        lambda: sandbox.sandbox.stats()["requests"]["GET /api/v1/backups/"]["200"] > listed,
        "the second start's catch-up listing",
    )
    assert second.stop() == 0  # the stop waits for the catch-up to finish deciding
    assert not second.events("catch_up.started"), second.tail()
    assert not second.events("catch_up.listing_failed"), second.tail()
    assert len(sandbox.state.events("created")) == 3


# -- 4. signals ---------------------------------------------------------------------------


def test_sigterm_mid_prune_exits_0_with_no_delete_left_unknown(
    serve: Callable[[SandboxOptions], RunningSandbox], launch: Callable[..., Rotator], tmp_path: Path
) -> None:
    """SIGTERM while deleting: grace, then no new delete; every DELETE sent was seen through and logged."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=4, backups_per_server=8, owner="slow", create_seconds=0.3)
    )
    # catch_up off: the run is one that APScheduler started, as every run after the first day is.
    policy = {"name": "slow", "servers": [1, 2, 3, 4], "schedule": {"interval": "3s"}, "catch_up": False}
    policy["retention"] = {"keep_last": 1}
    config = write_config(tmp_path / "rotator.yaml", [policy], daemon={**FAST_DAEMON, "shutdown_grace": "1s"})
    sandbox.sandbox.update_faults(latency=0.3)  # 8 deletes a server, one after another, outlast the grace
    daemon = launch(sandbox, "run", "--config", str(config))
    daemon.wait_for("backup.deleted")
    assert daemon.stop(signal.SIGTERM) == 0, daemon.tail()

    assert daemon.events("daemon.grace_expired"), daemon.tail()
    assert daemon.events("daemon.stopped")
    deleted = [e.backup["id"] for e in sandbox.state.events("deleted")]
    logged = [e["backup_id"] for e in daemon.events("backup.deleted")]
    assert sorted(deleted) == sorted(logged)
    assert 0 < len(deleted) < 4 * 8, "the stop should have cut the prune short"
    sent = sandbox.sandbox.stats()["requests"]["DELETE /api/v1/backups/{backup_id}/"]
    assert sent == {"204": len(deleted)}, f"a DELETE with another outcome: {sent}"
    assert not daemon.events("backup.delete_failed")


def test_sighup_reloads_a_valid_file_and_keeps_the_old_one_on_an_invalid_file(
    serve: Callable[[SandboxOptions], RunningSandbox], launch: Callable[..., Rotator], tmp_path: Path
) -> None:
    """SIGHUP with a broken file: logged, old policy runs on; with a new policy added: it runs too."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=4, backups_per_server=2, owner="first", create_seconds=0.3)
    )
    first = {
        "name": "first",
        "servers": [1, 2],
        "schedule": {"interval": "3s"},
        "retention": {"keep_last": 3},
    }
    second = {
        "name": "second",
        "servers": [3, 4],
        "schedule": {"interval": "3s"},
        "retention": {"keep_last": 3},
    }
    config = write_config(tmp_path / "rotator.yaml", [first])
    daemon = launch(sandbox, "run", "--config", str(config))
    daemon.wait_for("run.finished", policy="first")

    write_config(config, [{**first, "retention": {"keep_dayz": 3}}])
    daemon.send(signal.SIGHUP)
    (failed,) = daemon.wait_for("config.reload_failed")
    assert "policies[0].retention.keep_dayz: unknown key" in failed["error"]
    runs = len(daemon.events("run.finished", policy="first"))
    daemon.wait_for("run.finished", count=runs + 1, policy="first")
    assert daemon.process.poll() is None

    write_config(config, [first, second])
    daemon.send(signal.SIGHUP)
    (reloaded,) = daemon.wait_for("config.reloaded")
    assert reloaded["policies"] == ["first", "second"]
    (ran,) = daemon.wait_for("run.finished", policy="second")
    assert ran["ok"], ran
    assert ran["created"] == 2, ran
    assert daemon.stop() == 0
    made = {(policy, sid) for policy, sid, _ in slot_keys(sandbox.state.events("created"))}
    assert {("second", 3), ("second", 4)} <= made


# -- 5. request cost --------------------------------------------------------------------


def test_run_once_request_cost_over_200_servers(
    serve: Callable[[SandboxOptions], RunningSandbox], tmp_path: Path
) -> None:
    """200 servers x 5 backups, 100 a page: 200 POSTs, 200 DELETEs, and GET pages of account listings only."""
    servers, per_server, page_size = 200, 5, 100
    sandbox = serve(
        SandboxOptions(
            fleet="uniform",
            servers=servers,
            backups_per_server=per_server,
            owner="fleet",
            page_size=page_size,
            create_seconds=0.2,
        )
    )
    config = write_config(
        tmp_path / "rotator.yaml",
        [{"name": "fleet", "servers": list(range(1, servers + 1)), "retention": {"keep_last": per_server}}],
        api={"requests_per_second": 5000, "burst": 500, "max_concurrency": 16},
        daemon={**FAST_DAEMON, "poll_interval": "1s", "poll_max_interval": "1s"},
    )
    started = time.monotonic()
    once = run_rotator(sandbox, "run-once", "--config", str(config))
    took = time.monotonic() - started
    assert once.returncode == 0, once.stderr[-2000:]
    requests = sandbox.sandbox.stats()["requests"]
    posts = requests.get("POST /api/v1/backups/", {})
    deletes = requests.get("DELETE /api/v1/backups/{backup_id}/", {})
    gets = requests.get("GET /api/v1/backups/", {})
    # The strategy: one account listing before the creates (1000 manual backups: 10 pages), read
    # again once to confirm that no slot backup was skipped between its pages (the design cost of a
    # create decided only on a confirmed view: another 10 pages for all 200 servers, not 200 listings),
    # then one account listing per poll round (1200: 12 pages, fewer than the 200 pages of one listing
    # per waiting server). Every backup completes 0.2 s after its create and the first poll comes 1 s
    # after the last create, so one round suffices; two are allowed for a slow machine.
    first_listing = -(-servers * per_server // page_size)
    poll_listing = -(-servers * (per_server + 1) // page_size)
    bound = 2 * first_listing + 2 * poll_listing
    measured = f"POST {posts}, DELETE {deletes}, GET {gets} (bound {bound}) in {took:.1f}s"
    assert posts == {"201": servers}, measured
    assert deletes == {"204": servers}, measured  # keep_last 5 of 6: one delete a server
    assert set(gets) == {"200"}, measured
    assert 2 * first_listing + poll_listing <= gets["200"] <= bound, measured
    assert once.stdout.startswith(f"policy fleet ok: {servers} servers, {servers} created"), once.stdout


# -- 6. configuration and exit codes ------------------------------------------------------

VALID_POLICY: dict[str, Any] = {
    "name": "checked",
    "servers": [1],
    "schedule": {"cron": "0 3 * * *"},
    "retention": {"keep_last": 3},
}
INVALID_CONFIGS: dict[str, tuple[list[dict[str, Any]], str]] = {
    "unknown key": (
        [{**VALID_POLICY, "retention": {"keep_last": 3, "keep_dayz": 3}}],
        "policies[0].retention.keep_dayz: unknown key",
    ),
    "duplicate names": ([VALID_POLICY, VALID_POLICY], "policies: policy name 'checked' is used twice"),
    "bad cron": (
        [{**VALID_POLICY, "schedule": {"cron": "61 3 * * *"}}],
        "policies[0].schedule.cron: not a cron",
    ),
    "unknown zone": ([{**VALID_POLICY, "timezone": "Mars/Olympus_Mons"}], "policies[0].timezone: "),
    "never fires": (
        [{**VALID_POLICY, "schedule": {"cron": "0 0 31 2 *"}}],
        "policies[0].schedule.cron: the cron expression '0 0 31 2 *' can never fire",
    ),
}


def test_invalid_configurations_exit_78_naming_the_path(
    serve: Callable[[SandboxOptions], RunningSandbox], tmp_path: Path
) -> None:
    """run and check-config refuse each broken file: exit 78, a line naming the key, no API request."""
    sandbox = serve(SandboxOptions(fleet="empty", servers=1))
    processes = {}
    for case, (policies, _) in INVALID_CONFIGS.items():
        path = write_config(tmp_path / f"{case.replace(' ', '-')}.yaml", policies)
        for command in ("run", "check-config"):
            processes[case, command] = subprocess.Popen(
                [sys.executable, "-m", "rotator", command, "--config", str(path)],
                env=rotator_env(sandbox),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
    for (case, command), process in processes.items():
        out, err = process.communicate(timeout=30)
        expected = INVALID_CONFIGS[case][1]
        assert process.returncode == EX_CONFIG, f"{case}, {command}: exit {process.returncode}\n{err}"
        assert any(line.strip().startswith(expected) for line in err.splitlines()), (
            f"{case}, {command}:\n{err}"
        )
        assert "Traceback" not in err
        assert out == ""
    assert sandbox.sandbox.stats()["total"] == 0


def test_run_once_exit_code_and_summary_lines(
    serve: Callable[[SandboxOptions], RunningSandbox], tmp_path: Path
) -> None:
    """run-once: exit 0 and one ok line per policy; exit 1 with a FAILED line when a server's backup fails."""
    sandbox = serve(
        SandboxOptions(fleet="uniform", servers=4, backups_per_server=2, owner="alpha", create_seconds=0.3)
    )
    alpha = {"name": "alpha", "servers": [1, 2], "retention": {"keep_last": 2}}
    beta = {"name": "beta", "servers": [3], "retention": {"keep_last": 2}}
    gamma = {
        "name": "gamma",
        "servers": [4],
        "retention": {"keep_last": 1},
        "retries": 1,
        "retry_delay": "1s",
    }
    good = run_rotator(
        sandbox, "run-once", "--config", str(write_config(tmp_path / "good.yaml", [alpha, beta]))
    )
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["policy alpha ok", "policy beta ok"], good.stdout

    sandbox.sandbox.update_faults(fail_rate=1.0)
    bad = run_rotator(sandbox, "run-once", "--config", str(write_config(tmp_path / "bad.yaml", [gamma])))
    assert bad.returncode == 1, bad.stderr
    (line,) = bad.stdout.splitlines()
    assert line.startswith("policy gamma FAILED: 1 servers, 2 created, 0 adopted, 0 deleted"), line
    assert re.search(r"server 4: all 2 attempts of the slot failed; nothing pruned", line), line
    assert sum(1 for e in sandbox.state.events("created") if server_of(e) == 4) == 2  # the retry: #2
    assert not [e for e in sandbox.state.events("deleted") if server_of(e) == 4]
