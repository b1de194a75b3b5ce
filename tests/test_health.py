"""The health listener on a real loopback port: liveness, readiness (also after a 401), metrics, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator import errors
from rotator.api import BackupsClient, ClientSettings
from rotator.health import HealthServer, HealthState, accepts_gzip, check_health
from rotator.metrics import Metrics
from rotator.sandbox import Sandbox
from rotator.secrets import ApiToken
from rotator.telemetry import Telemetry

DEADLINE = 5.0


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def fixture_clock() -> ManualClock:
    """The monotonic clock the health state reads heartbeats with; moves only when told."""
    return ManualClock()


@pytest.fixture(name="state")
def fixture_state(clock: ManualClock) -> HealthState:
    """A daemon that loaded its configuration and runs its scheduler, no API call yet."""
    return HealthState(config_ok=True, scheduler_running=True, stale_after=30, monotonic=clock)


@pytest.fixture(name="metrics")
def fixture_metrics() -> Metrics:
    return Metrics()


@pytest.fixture(name="server")
async def fixture_server(state: HealthState, metrics: Metrics) -> AsyncIterator[HealthServer]:
    """The listener on 127.0.0.1 and a port the system chose."""
    async with HealthServer("127.0.0.1:0", state, metrics) as server:
        yield server


@pytest.fixture(name="http")
async def fixture_http(server: HealthServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the listener."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.bound_port}", timeout=DEADLINE
    ) as client:
        yield client


async def test_liveness(http: httpx.AsyncClient) -> None:
    """/healthz: 200 with the event loop's check."""
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"event_loop": "ok"}}
    assert response.headers["content-type"] == "application/json"


async def test_liveness_fails_on_a_stale_heartbeat(http: httpx.AsyncClient, clock: ManualClock) -> None:
    """No heartbeat for longer than stale_after: /healthz answers 503."""
    clock.now += 31
    response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["event_loop"] == "last heartbeat 31.0s ago"


async def test_ready(http: httpx.AsyncClient, state: HealthState) -> None:
    """/readyz: 200 when configured and scheduling, before and after an accepted call."""
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"config": "ok", "scheduler": "ok", "api_auth": "no call yet"}
    state.record_auth(200)
    assert (await http.get("/readyz")).json()["checks"]["api_auth"] == "ok"


@pytest.mark.parametrize(
    ("changes", "check", "reason"),
    [
        ({"config_ok": False}, "config", "not loaded"),
        ({"scheduler_running": False}, "scheduler", "not running"),
    ],
)
async def test_not_ready(
    http: httpx.AsyncClient, state: HealthState, changes: dict[str, bool], check: str, reason: str
) -> None:
    """/readyz: 503 naming the failing check."""
    for name, flag in changes.items():
        setattr(state, name, flag)
    response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "fail"
    assert response.json()["checks"][check] == reason


async def test_not_ready_after_a_401_from_the_sandbox(
    http: httpx.AsyncClient,
    state: HealthState,
    metrics: Metrics,
    sandbox_transport: httpx.ASGITransport,
    sandbox_api_url: str,
    sandbox: Sandbox,
) -> None:
    """A revoked token: the sandbox answers 401, rotator is not ready until a call is accepted again."""
    settings = ClientSettings(base_url=sandbox_api_url)
    telemetry = Telemetry(metrics, state)  # the client tells it of every answer, as in the daemon
    async with BackupsClient(
        ApiToken("revoked", "test"), settings, transport=sandbox_transport, observer=telemetry
    ) as client:
        with pytest.raises(errors.Unauthorized):
            await client.list_backups(server_id=1)
    response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["api_auth"] == "token rejected"
    assert (await http.get("/healthz")).status_code == 200  # alive all the same: restarting will not help
    assert "rotator_api_authenticated 0.0" in (await http.get("/metrics")).text

    async with BackupsClient(
        ApiToken(sandbox.token, "test"), settings, transport=sandbox_transport, observer=telemetry
    ) as client:
        await client.list_backups(server_id=1)
    assert "rotator_api_authenticated 1.0" in (await http.get("/metrics")).text
    assert (await http.get("/readyz")).status_code == 200


async def test_metrics_endpoint(http: httpx.AsyncClient, metrics: Metrics) -> None:
    """/metrics: Prometheus' text format with its content type."""
    metrics.observe_request("GET", "/api/v1/backups/", "200", 0.1)
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"rotator_runs", "rotator_api_requests", "rotator_api_authenticated"} <= names


async def test_unknown_path_and_method(http: httpx.AsyncClient) -> None:
    """404 off the three paths; 405 with Allow for anything but GET and HEAD; a query is ignored."""
    assert (await http.get("/")).status_code == 404
    response = await http.post("/healthz", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert (await http.get("/healthz?verbose=1")).status_code == 200


async def test_head(http: httpx.AsyncClient) -> None:
    """HEAD answers the status and length without a body."""
    response = await http.head("/readyz")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""


async def test_garbage_gets_400(server: HealthServer) -> None:
    """A request line that is not HTTP: 400, and the connection is closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    writer.write(b"HELLO\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), DEADLINE)
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_a_silent_client_does_not_block_others(server: HealthServer, http: httpx.AsyncClient) -> None:
    """A connection that never sends its request does not stop others from being answered."""
    _, silent = await asyncio.open_connection("127.0.0.1", server.bound_port)
    try:
        assert (await http.get("/healthz")).status_code == 200
    finally:
        silent.close()
        await silent.wait_closed()


async def test_heartbeat_from_the_listener(state: HealthState, metrics: Metrics, clock: ManualClock) -> None:
    """The listener beats on its own: the heartbeat moves without anyone calling beat()."""
    async with HealthServer("127.0.0.1:0", state, metrics, beat_interval=0.01):
        first = state.heartbeat
        clock.now += 5
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while state.heartbeat == first:
            assert loop.time() < deadline, "no heartbeat"
            await asyncio.sleep(0.01)
        assert state.heartbeat == clock.now


async def test_stop_closes_the_port(state: HealthState, metrics: Metrics) -> None:
    """After stop() nothing listens on the port any more."""
    server = HealthServer("127.0.0.1:0", state, metrics)
    await server.start()
    port = server.bound_port
    await server.stop()
    with pytest.raises(OSError):  # noqa: PT011 - the refusal's errno differs between platforms
        await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(RuntimeError):
        _ = server.bound_port


async def test_check_health_ok(server: HealthServer) -> None:
    """rotator healthcheck's client: both endpoints 200 -> True, with what each check said."""
    ok, message = await asyncio.to_thread(check_health, f"http://127.0.0.1:{server.bound_port}", DEADLINE)
    assert ok, message
    assert message.startswith("/healthz 200 event_loop: ok; /readyz 200 config: ok")


async def test_check_health_not_ready(server: HealthServer, state: HealthState) -> None:
    """A rejected token: healthcheck fails and says why."""
    state.record_auth(401)
    ok, message = await asyncio.to_thread(check_health, f"http://127.0.0.1:{server.bound_port}/", DEADLINE)
    assert not ok
    assert "/readyz 503" in message
    assert "api_auth: token rejected" in message


async def test_check_health_nothing_listening(state: HealthState, metrics: Metrics) -> None:
    """No listener: False with the connection error, no exception."""
    server = HealthServer("127.0.0.1:0", state, metrics)
    await server.start()
    port = server.bound_port
    await server.stop()
    ok, message = await asyncio.to_thread(check_health, f"http://127.0.0.1:{port}", DEADLINE)
    assert not ok
    assert message.startswith(f"cannot ask http://127.0.0.1:{port}: ConnectError")


async def test_metrics_gzip_when_the_scraper_asks(server: HealthServer, metrics: Metrics) -> None:
    """Accept-Encoding: gzip (as Prometheus sends it) gets the text gzip-compressed; no header, plain."""
    metrics.observe_request("GET", "/api/v1/backups/", "200", 0.1)
    base = f"http://127.0.0.1:{server.bound_port}"
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as client:
        asked = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert asked.headers["content-encoding"] == "gzip"
    assert asked.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in plain.headers
    assert asked.text == plain.text  # httpx decoded the gzip body
    assert int(asked.headers["content-length"]) < len(plain.content)
    assert "rotator_api_requests_total" in plain.text


async def test_metrics_render_off_the_event_loop(state: HealthState) -> None:
    """/metrics is rendered in a worker thread, not on the loop's thread."""
    threads: list[int] = []

    class Recording(Metrics):
        def render(self) -> bytes:
            threads.append(threading.get_ident())
            return super().render()

    async with (
        HealthServer("127.0.0.1:0", state, Recording()) as server,
        httpx.AsyncClient(timeout=DEADLINE) as client,
    ):
        response = await client.get(f"http://127.0.0.1:{server.bound_port}/metrics")
    assert response.status_code == 200
    assert threads
    assert threading.get_ident() not in threads


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("identity", False),
        ("", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("br, *;q=0.1", True),
        ("gzip;q=nonsense", False),
    ],
)
def test_accepts_gzip(header: str, gzip_ok: bool) -> None:
    """Accept-Encoding as RFC 9110 reads it: q=0 refuses, a coding named outright beats *."""
    assert accepts_gzip(header) is gzip_ok
