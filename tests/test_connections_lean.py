"""The lean transport (rotator.connections.LeanTransport) against real servers on loopback: the sandbox
under uvicorn for what works, and small raw servers for what breaks (a connection closed mid-answer, a
server that never answers, TLS that does not verify, a pool with no free connection)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from rotator import connections
from rotator.api import BackupsClient, ClientSettings
from rotator.errors import TransportError
from rotator.sandbox import RunningSandbox
from rotator.secrets import ApiToken

LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=2)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A server on 127.0.0.1 that runs ``handler`` for each connection; its base URL. Every connection
    it accepted is closed when the block ends."""
    accepted: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in accepted:
            writer.close()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def lean(verify: ssl.SSLContext | bool = True, limits: httpx.Limits = LIMITS) -> connections.LeanTransport:
    return connections.LeanTransport(verify=verify, limits=limits)


def timeouts(**given: float | None) -> dict[str, float | None]:
    return {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0, **given}


async def test_the_client_reads_writes_and_reuses_one_connection(sandbox_server: RunningSandbox) -> None:
    """Listings, a create and a delete through the lean transport; one kept-alive connection for all."""
    settings = ClientSettings(base_url=sandbox_server.api_url, max_concurrency=1, lean_transport=True)
    async with BackupsClient(ApiToken(sandbox_server.token, "test"), settings) as client:
        transport = client._transport
        assert isinstance(transport, connections.LeanTransport)
        listing = await client.list_backups()
        (idle,) = transport._idle.values()
        (first,) = idle
        server_id = listing.backups[0].server_id
        created = await client.create_backup(server_id, "lean transport test")
        assert created.server_id == server_id
        assert (await client.list_backups()).count == listing.count + 1
        await client.delete_backup(created.id)
        assert (await client.list_backups()).count == listing.count
        assert transport._idle[first.origin] == [first]  # every request on the same connection


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
    settings = ClientSettings(base_url=sandbox_server.api_url, max_concurrency=1, lean_transport=True)
    async with BackupsClient(ApiToken(sandbox_server.token, "test"), settings) as client:
        transport = client._transport
        assert isinstance(transport, connections.LeanTransport)
        await client.list_backups()
        ((first,),) = transport._idle.values()
        sock = first.wire.transport.get_extra_info("socket")  # type: ignore[union-attr]
        sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it while idle
        for _ in range(20):  # the loop sees the end of the stream within a few turns
            if not first.wire.quiet:
                break
            await asyncio.sleep(0.01)
        assert not first.wire.quiet
        assert (await client.list_backups()).count > 0
        ((second,),) = transport._idle.values()
        assert second is not first


async def test_a_connection_closed_mid_answer_is_a_remote_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        transport = lean()
        request = httpx.Request("GET", url + "/", extensions={"timeout": timeouts()})
        response = await transport.handle_async_request(request)
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
        assert not transport._idle.get(("http", "127.0.0.1", int(url.rsplit(":", 1)[1])))
        await transport.aclose()


async def test_a_connection_closed_before_any_answer_is_a_remote_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.close()

    async with raw_server(handler) as url:
        request = httpx.Request("GET", url + "/", extensions={"timeout": timeouts()})
        with pytest.raises(httpx.RemoteProtocolError):
            await lean().handle_async_request(request)


async def test_a_server_that_never_answers_is_a_read_timeout_and_the_client_a_transport_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.Event().wait()  # silent until the test ends

    async with raw_server(handler) as url:
        request = httpx.Request("GET", url + "/", extensions={"timeout": timeouts(read=0.05)})
        with pytest.raises(httpx.ReadTimeout):
            await lean().handle_async_request(request)
        settings = ClientSettings(
            base_url=url + "/api/v1", read_timeout=0.05, retry_attempts=1, lean_transport=True
        )
        async with BackupsClient(ApiToken("t0ken-lean-test-456", "test"), settings) as client:
            with pytest.raises(TransportError, match="timed out waiting") as caught:
                await client.list_backups()
        assert "t0ken-lean-test-456" not in str(caught.value)


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        request = httpx.Request("GET", f"http://127.0.0.1:{port}/", extensions={"timeout": timeouts()})
        with pytest.raises(httpx.ConnectError):
            await lean().handle_async_request(request)


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
    """A certificate the context trusts: answered; one it does not (the default context): ConnectError."""
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_head(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_server(handler, tls=served) as url:
        trusting = ssl.create_default_context(cafile=str(cert))
        request = httpx.Request("GET", url + "/", extensions={"timeout": timeouts()})
        response = await lean(verify=trusting).handle_async_request(request)
        assert (response.status_code, await response.aread()) == (200, b"ok")
        with pytest.raises(httpx.ConnectError):
            await lean(verify=True).handle_async_request(request)


async def test_no_free_connection_within_the_pool_timeout_is_a_pool_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_head(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with raw_server(handler) as url:
        transport = lean(limits=httpx.Limits(max_connections=1))
        request = httpx.Request("GET", url + "/", extensions={"timeout": timeouts(pool=0.05)})
        held = await transport.handle_async_request(request)  # its body not read: the connection is taken
        with pytest.raises(httpx.PoolTimeout):
            await transport.handle_async_request(request)
        assert await held.aread() == b"ok"  # read to its end, the connection is free again
        again = await transport.handle_async_request(request)
        assert await again.aread() == b"ok"
        await transport.aclose()


def test_a_proxy_in_the_environment_is_still_used_with_the_lean_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    made = connections.transport_unless_proxied(verify=True, limits=LIMITS, lean=True)
    assert isinstance(made, connections.LeanTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    assert connections.transport_unless_proxied(verify=True, limits=LIMITS, lean=True) is None
