"""The lean transport (rotator.connections.LeanTransport, the client's default) against real servers on
loopback: the sandbox under uvicorn for what works, and small raw servers for what breaks (a connection
closed mid-answer, a server that never answers or never reads, TLS that does not verify or never
starts, a pool with no free connection, a request cancelled halfway)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rotator import connections
from rotator.api import BackupsClient, ClientSettings
from rotator.errors import InvalidResponse, TransportError, Unauthorized
from rotator.sandbox import RunningSandbox
from rotator.secrets import ApiToken

LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=2)
TOKEN = "t0ken-lean-test-456"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Served:
    """A raw server's base URL and what it saw."""

    url: str
    accepted: list[asyncio.StreamWriter] = field(default_factory=list)
    ended: list[asyncio.StreamWriter] = field(default_factory=list)  # connections whose peer went away

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@asynccontextmanager
async def raw_server(
    handler: Handler, tls: ssl.SSLContext | None = None, receive_buffer: int | None = None
) -> AsyncIterator[Served]:
    """A server on 127.0.0.1 that runs ``handler`` for each connection (``receive_buffer``: the kernel's
    receive buffer of its sockets, in bytes). Every connection it accepted is closed when the block ends."""
    tasks: set[asyncio.Task[None]] = set()
    listening = socket.create_server(("127.0.0.1", 0))
    if receive_buffer is not None:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    served = Served(f"{'https' if tls else 'http'}://127.0.0.1:{listening.getsockname()[1]}")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.accepted.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, sock=listening, ssl=tls)
    try:
        yield served
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in served.accepted:
            writer.close()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes = OK) -> None:
    """Answer every request of the connection with ``answer`` until the client closes it."""
    while True:
        try:
            await read_head(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        writer.write(answer)
        await writer.drain()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What else the client sends until it closes the connection (its end seen: b"" or a reset)."""
    try:
        return await reader.read()
    except ConnectionError:
        return b""


def lean(
    verify: ssl.SSLContext | bool = True, limits: httpx.Limits = LIMITS, **given: Any
) -> connections.LeanTransport:
    return connections.LeanTransport(verify=verify, limits=limits, **given)


def timeouts(**given: float | None) -> dict[str, float | None]:
    return {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0, **given}


def get(url: str, **given: float | None) -> httpx.Request:
    return httpx.Request("GET", url + "/", extensions={"timeout": timeouts(**given)})


async def fetch(transport: connections.LeanTransport, url: str, **given: float | None) -> bytes:
    response = await transport.handle_async_request(get(url, **given))
    try:
        return await response.aread()
    finally:
        await response.aclose()


def client_at(url: str, **given: Any) -> BackupsClient:
    settings = ClientSettings(base_url=url + "/api/v1", retry_attempts=1, **given)
    return BackupsClient(ApiToken(TOKEN, "test"), settings)


# -- what works, against the sandbox --------------------------------------------------------------------


async def test_the_client_reads_writes_and_reuses_one_connection(sandbox_server: RunningSandbox) -> None:
    """Listings, a create and a delete through the lean transport (the default); one kept-alive
    connection for all."""
    settings = ClientSettings(base_url=sandbox_server.api_url, max_concurrency=1)
    async with BackupsClient(ApiToken(sandbox_server.token, "test"), settings) as client:
        transport = client._transport
        assert isinstance(transport, connections.LeanTransport)
        listing = await client.list_backups()
        (first,) = transport.idle
        server_id = listing.backups[0].server_id
        created = await client.create_backup(server_id, "lean transport test")
        assert created.server_id == server_id
        assert (await client.list_backups()).count == listing.count + 1
        await client.delete_backup(created.id)
        assert (await client.list_backups()).count == listing.count
        assert transport.idle == [first]  # every request on the same connection


async def test_the_answers_are_those_of_httpx_own_transport(sandbox_server: RunningSandbox) -> None:
    """Status, headers (but the date) and body of the same requests equal through both transports."""
    headers = {"Authorization": f"Bearer {sandbox_server.token}"}
    answers = []
    for transport in (lean(), httpx.AsyncHTTPTransport()):
        async with httpx.AsyncClient(transport=transport, headers=headers) as client:
            got = []
            for path in ("backups/", "backups/?page=2", "backups/999999/", "nowhere/"):
                response = await client.get(sandbox_server.api_url.rstrip("/") + "/" + path)
                kept = {k: v for k, v in response.headers.items() if k not in ("date",)}
                got.append((response.status_code, response.reason_phrase, kept, response.content))
            answers.append(got)
    assert answers[0] == answers[1]


async def test_an_idle_connection_the_server_closed_is_not_used_again(sandbox_server: RunningSandbox) -> None:
    settings = ClientSettings(base_url=sandbox_server.api_url, max_concurrency=1)
    async with BackupsClient(ApiToken(sandbox_server.token, "test"), settings) as client:
        transport = client._transport
        assert isinstance(transport, connections.LeanTransport)
        await client.list_backups()
        (first,) = transport.idle
        sock = first.wire.transport.get_extra_info("socket")  # type: ignore[union-attr]
        sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it while idle
        for _ in range(1000):  # the loop sees the end of the stream within a few turns
            if not first.wire.quiet:
                break
            await asyncio.sleep(0)
        assert not first.wire.quiet
        assert (await client.list_backups()).count > 0
        (second,) = transport.idle
        assert second is not first


# -- keep-alive -----------------------------------------------------------------------------------------


async def test_connections_are_kept_alive_up_to_the_limits() -> None:
    """Requests one after the other share one connection; two at once take two, both kept, and the
    requests after them use those two; no more are kept than max_keepalive_connections."""
    async with raw_server(answer_each) as served:
        transport = lean()
        for _ in range(5):
            assert await fetch(transport, served.url) == b"ok"
        assert len(served.accepted) == 1
        held = [await transport.handle_async_request(get(served.url)) for _ in range(2)]
        for response in held:
            assert await response.aread() == b"ok"
        assert len(served.accepted) == 2
        assert len(transport.idle) == 2
        for _ in range(4):
            assert await fetch(transport, served.url) == b"ok"
        assert len(served.accepted) == 2
        await transport.aclose()
        assert transport.idle == []

        one = lean(limits=httpx.Limits(max_connections=3, max_keepalive_connections=1))
        held = [await one.handle_async_request(get(served.url)) for _ in range(3)]
        for response in held:
            await response.aread()
        assert len(one.idle) == 1
        await one.aclose()


async def test_an_idle_connection_past_the_keepalive_expiry_is_closed_not_used() -> None:
    now = [100.0]
    async with raw_server(answer_each) as served:
        transport = lean(limits=httpx.Limits(keepalive_expiry=5.0), monotonic=lambda: now[0])
        assert await fetch(transport, served.url) == b"ok"
        (first,) = transport.idle
        now[0] += 5.0
        assert await fetch(transport, served.url) == b"ok"  # idle 5 s: still used
        assert transport.idle == [first]
        assert len(served.accepted) == 1
        now[0] += 5.01
        assert await fetch(transport, served.url) == b"ok"
        assert len(served.accepted) == 2
        (second,) = transport.idle
        assert second is not first
        assert first.wire.transport is not None
        assert first.wire.transport.is_closing()
        await transport.aclose()


async def test_an_answer_that_closes_the_connection_is_not_kept() -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_each(reader, writer, closing)

    async with raw_server(handler) as served:
        transport = lean()
        assert await fetch(transport, served.url) == b"ok"
        assert transport.idle == []
        assert await fetch(transport, served.url) == b"ok"
        assert len(served.accepted) == 2


async def test_an_idle_connection_the_server_wrote_on_is_not_used_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK + b"HTTP/1.1 200 OK\r\n")  # an answer to a request not sent yet
        await writer.drain()
        await answer_each(reader, writer)

    async with raw_server(handler) as served:
        transport = lean()
        assert await fetch(transport, served.url) == b"ok"
        assert transport.idle == []  # the stray bytes arrived with the answer
        assert await fetch(transport, served.url) == b"ok"
        assert len(served.accepted) == 2


async def test_an_answer_not_read_to_its_end_leaves_its_connection_closed() -> None:
    long = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_each(reader, writer, long)

    async with raw_server(handler) as served:
        transport = lean()
        response = await transport.handle_async_request(get(served.url))
        await response.aclose()  # its body not read
        assert transport.idle == []
        assert await fetch(transport, served.url) == b"0123456789"
        assert len(served.accepted) == 2
        await transport.aclose()


# -- what breaks ----------------------------------------------------------------------------------------


async def test_a_connection_closed_mid_answer_is_a_remote_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    async with raw_server(handler) as served:
        transport = lean(limits=httpx.Limits(max_connections=1))
        response = await transport.handle_async_request(get(served.url))
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
        assert transport.idle == []
        with pytest.raises(httpx.RemoteProtocolError):  # the one place is free again
            await fetch(transport, served.url, pool=0.5)
        await transport.aclose()


async def test_a_connection_closed_before_any_answer_is_a_remote_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.close()

    async with raw_server(handler) as served:
        with pytest.raises(httpx.RemoteProtocolError):
            await lean().handle_async_request(get(served.url))


async def test_a_server_that_never_answers_is_a_read_timeout_and_the_client_a_transport_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.Event().wait()  # silent until the test ends

    async with raw_server(handler) as served:
        with pytest.raises(httpx.ReadTimeout):
            await lean().handle_async_request(get(served.url, read=0.05))
        async with client_at(served.url, read_timeout=0.05) as client:
            with pytest.raises(TransportError, match="timed out waiting") as caught:
                await client.list_backups()
        assert TOKEN not in str(caught.value)


async def test_an_answer_that_stops_halfway_is_a_read_timeout_and_its_connection_dropped() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        seen.append(await until_closed(reader))

    async with raw_server(handler) as served:
        transport = lean(limits=httpx.Limits(max_connections=1))
        response = await transport.handle_async_request(get(served.url, read=0.05))
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()
        assert transport.idle == []
        with pytest.raises(httpx.ReadTimeout):  # the one place is free again; a new connection
            await fetch(transport, served.url, read=0.05, pool=0.5)
        assert len(served.accepted) == 2
        for _ in range(1000):
            if seen:
                break
            await asyncio.sleep(0)
        assert seen == [b""]  # the first connection was closed


async def test_a_server_that_never_reads_is_a_write_timeout() -> None:
    """A request body larger than every buffer on the way, to a server that reads nothing: the write
    timeout ends the wait; the connection is dropped at once (what was not sent is not sent later)
    and its place freed."""
    body = b"x" * (16 * 1024 * 1024)
    reading = asyncio.Event()
    received: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reading.wait()  # reads nothing until the test says
        size = 0
        try:
            while chunk := await reader.read(1024 * 1024):
                size += len(chunk)
        except ConnectionError:
            pass
        received.append(size)

    async with raw_server(handler, receive_buffer=4096) as served:
        transport = lean(limits=httpx.Limits(max_connections=1))
        request = httpx.Request(
            "POST", served.url + "/", content=body, extensions={"timeout": timeouts(write=0.05)}
        )
        with pytest.raises(httpx.WriteTimeout):
            await transport.handle_async_request(request)
        assert transport.idle == []
        with pytest.raises(httpx.WriteTimeout):  # the one place is free again
            await transport.handle_async_request(request)
        assert len(served.accepted) == 2
        reading.set()
        for _ in range(10_000):
            if len(received) == 2:
                break
            await asyncio.sleep(0)
        assert len(received) == 2
        assert all(size < len(body) for size in received)  # dropped, not flushed to the end
        await transport.aclose()


def test_the_clients_timeouts_reach_the_transport() -> None:
    """connect and read as configured, write as read, pool unbounded (the budget caps concurrency)."""
    client = client_at("https://api.example.test", connect_timeout=3.0, read_timeout=7.0)
    request = client._request("DELETE", "backups/5/", None, None)
    assert request.extensions["timeout"] == {"connect": 3.0, "read": 7.0, "write": 7.0, "pool": None}


async def test_a_tls_handshake_that_never_ends_is_a_connect_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()  # accepts the TCP connection, never speaks TLS

    async with raw_server(handler) as served:
        url = served.url.replace("http://", "https://")
        with pytest.raises(httpx.ConnectTimeout):
            await lean().handle_async_request(get(url, connect=0.05))


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(httpx.ConnectError):
            await lean().handle_async_request(get(f"http://127.0.0.1:{port}"))


async def test_tls_to_a_server_that_does_not_speak_it_is_a_connect_error(
    sandbox_server: RunningSandbox,
) -> None:
    url = sandbox_server.api_url.replace("http://", "https://")
    request = httpx.Request("GET", url, extensions={"timeout": timeouts()})
    with pytest.raises(httpx.ConnectError):
        await lean().handle_async_request(request)


@pytest.fixture(name="certificate")
def fixture_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made by openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return cert, key


async def test_tls_is_verified_with_the_given_context(certificate: tuple[Path, Path]) -> None:
    """A certificate the context trusts: answered (the connection kept); one it does not (the default
    context): ConnectError; the client's ca_bundle is that context."""
    cert, key = certificate
    served_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served_context.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer_each(reader, writer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except ssl.SSLError:
            return

    async with raw_server(handler, tls=served_context) as served:
        trusting = lean(verify=ssl.create_default_context(cafile=str(cert)))
        assert await fetch(trusting, served.url) == b"ok"
        assert await fetch(trusting, served.url) == b"ok"
        assert len(trusting.idle) == 1
        await trusting.aclose()
        with pytest.raises(httpx.ConnectError):
            await lean(verify=True).handle_async_request(get(served.url))
        async with client_at(served.url, ca_bundle=cert) as client:
            assert isinstance(client._transport, connections.LeanTransport)
            assert (await client._send_once("GET", "backups/")).content == b"ok"


async def test_no_free_connection_within_the_pool_timeout_is_a_pool_timeout() -> None:
    async with raw_server(answer_each) as served:
        transport = lean(limits=httpx.Limits(max_connections=1))
        held = await transport.handle_async_request(get(served.url))  # its body not read: the place is taken
        with pytest.raises(httpx.PoolTimeout):
            await transport.handle_async_request(get(served.url, pool=0.05))
        assert await held.aread() == b"ok"  # read to its end, the connection is free again
        assert await fetch(transport, served.url) == b"ok"
        await transport.aclose()


# -- cancellation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before the answer", "in the body"])
async def test_a_cancelled_request_leaves_no_connection_behind(where: str) -> None:
    """Cancelled while it waits for the answer or its body: the connection is closed (the server sees
    it go), not pooled, and its place is free for the next request."""
    ends: list[bytes] = []
    started = asyncio.Event()
    connections_seen = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections_seen
        connections_seen += 1
        if connections_seen > 1:
            await answer_each(reader, writer)
            return
        await read_head(reader)
        if where == "in the body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            await writer.drain()
        started.set()
        ends.append(await until_closed(reader))

    async with raw_server(handler) as served:
        transport = lean(limits=httpx.Limits(max_connections=1))

        async def request() -> bytes:
            return await fetch(transport, served.url)

        task = asyncio.create_task(request())
        await started.wait()
        for _ in range(10):  # the answer's head reaches the client
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert transport.idle == []
        assert await fetch(transport, served.url, pool=0.5) == b"ok"
        assert len(served.accepted) == 2
        for _ in range(1000):
            if ends:
                break
            await asyncio.sleep(0)
        assert ends == [b""]
        await transport.aclose()


async def test_a_call_cut_by_the_clients_deadline_leaves_no_connection_behind() -> None:
    """The client's answer_timeout (a trickle) cancels the exchange inside the transport: dropped too."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with raw_server(handler) as served:
        settings = {"read_timeout": 0.1, "connect_timeout": 0.05, "answer_timeout": 0.1, "max_concurrency": 1}
        async with client_at(served.url, **settings) as client:
            with pytest.raises(TransportError, match="did not arrive in full"):
                await client.list_backups()
            transport = client._transport
            assert isinstance(transport, connections.LeanTransport)
            assert transport.idle == []
            assert not transport._slots.locked()


# -- what the client makes of answers through it --------------------------------------------------------


async def test_a_401_that_echoes_the_token_never_shows_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        echoed = b" ".join(line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization"))
        assert TOKEN.encode() in echoed
        body = b'{"detail": "Invalid token: ' + echoed + b'"}'
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await until_closed(reader)

    async with raw_server(handler) as served, client_at(served.url) as client:
        with pytest.raises(Unauthorized) as caught:
            await client.list_backups()
    assert "Invalid token" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.args)


async def test_a_body_past_max_body_bytes_is_refused_and_its_connection_dropped() -> None:
    """Chunked, with no length said: read only to the bound, then refused; the socket was not read
    far past it (flow control), and the connection is not kept."""
    chunk = b"x" * 65536

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(1000):  # 64 MiB if it were all read
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
        except ConnectionError:
            return

    async with raw_server(handler) as served, client_at(served.url, max_body_bytes=256 * 1024) as client:
        with pytest.raises(InvalidResponse, match="larger than the 262144 bytes"):
            await client.list_backups()
        transport = client._transport
        assert isinstance(transport, connections.LeanTransport)
        assert transport.idle == []


class FakeTransport(asyncio.Transport):
    """What the protocol asks of its transport, recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return False


async def test_the_socket_is_not_read_while_much_waits_unread() -> None:
    wire = connections._Wire()
    fake = FakeTransport()
    wire.connection_made(fake)
    piece = b"y" * 65536
    for _ in range(connections.HIGH_WATER // len(piece) - 1):
        wire.data_received(piece)
    assert fake.calls == []
    wire.data_received(piece)
    assert fake.calls == ["pause"]
    wire.data_received(piece)  # what was already on its way
    assert fake.calls == ["pause"]
    data = await wire.read(1.0)
    assert len(data) == connections.HIGH_WATER + len(piece)
    assert fake.calls == ["pause", "resume"]
    assert wire.quiet


# -- which transport ------------------------------------------------------------------------------------


def test_a_proxy_in_the_environment_is_still_used_with_the_lean_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    made = connections.transport_unless_proxied(verify=True, limits=LIMITS)
    assert isinstance(made, connections.LeanTransport)
    monkeypatch.setenv("NO_PROXY", "localhost")  # names no proxy
    assert isinstance(
        connections.transport_unless_proxied(verify=True, limits=LIMITS), connections.LeanTransport
    )
    httpx_own = connections.transport_unless_proxied(verify=True, limits=LIMITS, lean=False)
    assert isinstance(httpx_own, httpx.AsyncHTTPTransport)
    for name in ("HTTPS_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://proxy.example.test:3128")
        assert connections.transport_unless_proxied(verify=True, limits=LIMITS) is None
        monkeypatch.delenv(name)
    client = BackupsClient(
        ApiToken(TOKEN, "test"), ClientSettings(base_url="https://api.example.test/api/v1")
    )
    assert isinstance(client._transport, connections.LeanTransport)
    off = ClientSettings(base_url="https://api.example.test/api/v1", lean_transport=False)
    assert isinstance(BackupsClient(ApiToken(TOKEN, "test"), off)._transport, httpx.AsyncHTTPTransport)


@pytest.mark.parametrize("bomb", [False, True])
async def test_an_encoded_body_is_decoded_and_bounded_decoded(bomb: bool) -> None:
    """gzip through the lean transport: decoded by the client as with httpx's; the bound is on the
    decoded size (a small body that inflates past it is refused)."""
    listing = {"count": 0, "next": None, "previous": None, "results": []}
    text = json.dumps(listing).encode() + (b" " * (1024 * 1024) if bomb else b"")
    body = gzip.compress(text)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        await answer_each(reader, writer, head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async with raw_server(handler) as served, client_at(served.url, max_body_bytes=256 * 1024) as client:
        if bomb:
            with pytest.raises(InvalidResponse, match="larger than the 262144 bytes"):
                await client.list_backups()
        else:
            assert (await client.list_backups()).count == 0
