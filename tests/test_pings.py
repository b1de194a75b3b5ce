"""Monitoring pings against local HTTP listeners: one that records, one that errs, one that never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from structlog.testing import capture_logs

from rotator.events import RunFinished
from rotator.pings import Pinger, ping_body, ping_url
from rotator.runner import Outcome, RunReport, ServerResult

SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
TIMEOUT = 0.5  # the pinger's timeout in these tests
DEADLINE = 5.0


@dataclass(frozen=True)
class Ping:
    method: str
    path: str
    body: str


class Monitor:
    """A healthchecks.io stand-in on a loopback port: records every request, answers ``status``."""

    def __init__(self) -> None:
        self.pings: list[Ping] = []
        self.status = 200
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length).decode()
                monitor.pings.append(Ping("POST", self.path, body))
                self.send_response(monitor.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(DEADLINE)


@pytest.fixture(name="monitor")
def fixture_monitor() -> Iterator[Monitor]:
    """A recording monitoring service on loopback."""
    monitor = Monitor()
    yield monitor
    monitor.close()


@pytest.fixture(name="silent_url")
def fixture_silent_url() -> Iterator[str]:
    """A listener that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/ping/silent"
    listener.close()


@pytest.fixture(name="closed_url")
def fixture_closed_url() -> str:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ping/closed"


def report(*results: ServerResult) -> RunFinished:
    """A finished run of ``nightly`` with these results, as observers are told of it."""
    return RunReport("nightly", SLOT, False, list(results), duration=12.3).finished()


async def test_start_success_fail_follow_the_convention(monitor: Monitor) -> None:
    """start -> URL/start, success -> URL, fail -> URL/fail; each a POST carrying the body."""
    url = f"{monitor.url}/ping/abc-123"
    async with Pinger(timeout=TIMEOUT) as pinger:
        assert await pinger.start(url)
        assert await pinger.success(url, "policy nightly ok")
        assert await pinger.fail(url, "policy nightly FAILED")
    assert monitor.pings == [
        Ping("POST", "/ping/abc-123/start", ""),
        Ping("POST", "/ping/abc-123", "policy nightly ok"),
        Ping("POST", "/ping/abc-123/fail", "policy nightly FAILED"),
    ]


async def test_finished_summarises_the_run(monitor: Monitor) -> None:
    """finished(): success or fail as the report says, the body naming each failed server."""
    url = f"{monitor.url}/ping/abc"
    good = report(ServerResult(1), ServerResult(2))
    bad = report(ServerResult(1), ServerResult(2, outcome=Outcome.FAILED, error="backup 9 is failed"))
    async with httpx.AsyncClient() as client:
        pinger = Pinger(client, timeout=TIMEOUT)
        assert await pinger.finished(url, good)
        assert await pinger.finished(url, bad)
    ok, failed = monitor.pings
    assert ok.path == "/ping/abc"
    assert ok.body.startswith("policy nightly ok: 2 servers, 0 created")
    assert failed.path == "/ping/abc/fail"
    assert failed.body.splitlines()[1:] == ["server 2: failed: backup 9 is failed"]


def test_ping_body_is_short() -> None:
    """The summary line, then one line per server that did not succeed."""
    body = ping_body(
        report(
            ServerResult(4),
            ServerResult(5, outcome=Outcome.FAILED, error="backup 9 is failed"),
            ServerResult(6, outcome=Outcome.UNKNOWN, error="the create's outcome is unknown"),
        )
    )
    assert body.splitlines() == [
        "policy nightly FAILED: 3 servers, 0 created, 0 adopted, 0 deleted, 0 kept, 0 blocked, 1 failed,"
        " 1 unknown, 0 abandoned in 12.3s",
        "server 5: failed: backup 9 is failed",
        "server 6: unknown: the create's outcome is unknown",
    ]


ABANDONED = ServerResult(2, outcome=Outcome.ABANDONED, error="shutdown before the server's work was done")


@pytest.mark.parametrize(
    "results",
    [
        pytest.param([ABANDONED], id="abandoned"),
        pytest.param([ServerResult(1), ABANDONED], id="ok-and-abandoned"),
    ],
)
async def test_an_abandoned_run_sends_no_ping(monitor: Monitor, results: list[ServerResult]) -> None:
    """Cut short by a shutdown: neither success nor fail is sent (the check stays started), and it says so."""
    url = f"{monitor.url}/ping/secret-key"
    async with Pinger(timeout=TIMEOUT) as pinger:
        with capture_logs() as logs:
            assert not await pinger.finished(url, report(*results))
    assert monitor.pings == []
    assert logs == [
        {
            "event": "ping.skipped",
            "log_level": "info",
            "reason": "run abandoned by a shutdown",
            "target": monitor.url.removeprefix("http://"),
        }
    ]


@pytest.mark.parametrize(
    "results",
    [
        pytest.param([ServerResult(1, outcome=Outcome.FAILED, error="backup 9 is failed")], id="failed"),
        pytest.param(
            [ServerResult(1, outcome=Outcome.UNKNOWN, error="the create's outcome is unknown")], id="unknown"
        ),
        pytest.param(
            [ABANDONED, ServerResult(1, outcome=Outcome.FAILED, error="backup 9 is failed")],
            id="failed-and-abandoned",
        ),
        pytest.param(
            [ABANDONED, ServerResult(1, outcome=Outcome.UNKNOWN, error="lost answer")],
            id="unknown-and-abandoned",
        ),
    ],
)
async def test_a_failed_or_unknown_run_pings_fail(monitor: Monitor, results: list[ServerResult]) -> None:
    """A failure or an unknown create is /fail, even when a shutdown cut another server short."""
    url = f"{monitor.url}/ping/abc"
    async with Pinger(timeout=TIMEOUT) as pinger:
        assert await pinger.finished(url, report(*results))
    (ping,) = monitor.pings
    assert ping.path == "/ping/abc/fail"
    assert "server 1: " in ping.body


async def test_finished_through_a_mock_transport() -> None:
    """The same three cases without a socket: the requests the pinger sends, exactly."""
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(200)

    url = "https://hc-ping.example/ping/k"
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        pinger = Pinger(client, timeout=TIMEOUT)
        assert await pinger.finished(url, report(ServerResult(1)))
        assert not await pinger.finished(url, report(ABANDONED))
        assert await pinger.finished(url, report(ServerResult(1, outcome=Outcome.UNKNOWN, error="?")))
    assert sent == ["/ping/k", "/ping/k/fail"]


@pytest.mark.parametrize(
    ("url", "suffix", "expected"),
    [
        ("https://hc-ping.com/uuid", "start", "https://hc-ping.com/uuid/start"),
        ("https://hc-ping.com/uuid/", "fail", "https://hc-ping.com/uuid/fail"),
        ("https://hc-ping.com/uuid", "", "https://hc-ping.com/uuid"),
        ("https://hc-ping.com/key/slug?create=1", "start", "https://hc-ping.com/key/slug/start?create=1"),
        (
            "https://kuma.example/api/push/TOKEN?status=up",
            "fail",
            "https://kuma.example/api/push/TOKEN/fail?status=up",
        ),
    ],
)
def test_ping_url(url: str, suffix: str, expected: str) -> None:
    """The suffix joins the path, before any query."""
    assert ping_url(url, suffix) == expected


async def test_an_error_status_is_logged_not_raised(monitor: Monitor) -> None:
    """The monitor answers 500: False, ping.failed with the status and only the host."""
    monitor.status = 500
    async with Pinger(timeout=TIMEOUT) as pinger:
        with capture_logs() as logs:
            assert not await pinger.fail(f"{monitor.url}/ping/secret-key", "x")
    failed = [entry for entry in logs if entry["event"] == "ping.failed"]
    assert failed == [
        {
            "event": "ping.failed",
            "log_level": "warning",
            "kind": "fail",
            "target": monitor.url.removeprefix("http://"),
            "status": 500,
        }
    ]
    assert "secret-key" not in repr(logs)


async def test_a_listener_that_never_answers(silent_url: str) -> None:
    """No answer: the ping gives up after its timeout, logs ping.failed and returns False."""
    started = time.monotonic()
    async with Pinger(timeout=TIMEOUT) as pinger:
        with capture_logs() as logs:
            assert not await pinger.start(silent_url)
    elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed < DEADLINE
    assert logs[-1]["event"] == "ping.failed"
    assert logs[-1]["error"].startswith("ReadTimeout")
    assert logs[-1]["kind"] == "start"


async def test_a_refused_connection(closed_url: str) -> None:
    """Nothing listening: False and ping.failed, at once."""
    async with Pinger(timeout=TIMEOUT) as pinger:
        with capture_logs() as logs:
            assert not await pinger.success(closed_url, "ok")
    assert logs[-1]["event"] == "ping.failed"
    assert logs[-1]["error"].startswith("ConnectError")


@pytest.mark.parametrize("url", ["not a url", "ftp://example.invalid/x", "http://[::1"])
async def test_a_malformed_url_never_raises(url: str) -> None:
    """Even a URL httpx refuses is only logged."""
    async with Pinger(timeout=TIMEOUT) as pinger:
        with capture_logs() as logs:
            assert not await pinger.start(url)
    assert logs[-1]["event"] == "ping.failed"


async def test_no_url_is_a_no_op(monitor: Monitor) -> None:
    """A policy without pings: nothing sent, nothing logged."""
    async with Pinger(timeout=TIMEOUT) as pinger:
        with capture_logs() as logs:
            assert not await pinger.start(None)
            assert not await pinger.success("", "x")
    assert logs == []
    assert monitor.pings == []


async def test_a_shared_client_is_not_closed(monitor: Monitor) -> None:
    """A client passed in stays open after the pinger is done (its owner closes it)."""
    async with httpx.AsyncClient() as client:
        async with Pinger(client, timeout=TIMEOUT) as pinger:
            assert await pinger.start(f"{monitor.url}/ping/x")
        assert not client.is_closed
