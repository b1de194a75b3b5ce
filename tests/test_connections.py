"""httpx's transport (``api.lean_transport: false``): the client's pool checks idle connections with one
poll, and still drops those the server closed."""

from __future__ import annotations

import asyncio
import socket

import httpcore
import httpx
import pytest

from rotator import connections
from rotator.api import BackupsClient, ClientSettings
from rotator.sandbox import RunningSandbox
from rotator.secrets import ApiToken


def test_the_transport_has_the_backend_under_its_pool() -> None:
    """httpx keeps the pool's backend where connections.transport sets it (pinned httpx version)."""
    made = connections.transport(verify=True, limits=httpx.Limits(max_connections=2))
    assert isinstance(made._pool, httpcore.AsyncConnectionPool)
    assert isinstance(made._pool._network_backend, connections.Backend)


def test_a_socket_is_readable_once_its_peer_closed() -> None:
    """Open and quiet: not readable; the peer gone, or closed here: readable (not reusable)."""
    near, far = socket.socketpair()
    with near, far:
        assert not connections.is_readable(near)
        far.close()
        assert connections.is_readable(near)
    closed, other = socket.socketpair()
    other.close()
    closed.close()
    assert connections.is_readable(closed)


async def test_requests_reuse_connections_and_survive_a_server_that_closed_them(
    sandbox_server: RunningSandbox,
) -> None:
    """Through the real pool: requests share one kept-alive connection; one closed meanwhile is dropped."""
    settings = ClientSettings(base_url=sandbox_server.api_url, max_concurrency=1, lean_transport=False)
    async with BackupsClient(ApiToken(sandbox_server.token, "test"), settings) as client:
        await client.list_backups()
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        (connection,) = pool.connections
        stream = connection._connection._network_stream
        assert isinstance(stream, connections._Stream)
        await client.list_backups()
        assert pool.connections == [connection]  # reused, not a new one
        stream._socket.shutdown(socket.SHUT_RDWR)  # as if the server had closed it while idle
        await asyncio.sleep(0)
        listing = await client.list_backups()
        assert listing.count > 0
        assert connection not in pool.connections


def test_a_proxy_in_the_environment_is_still_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTPS_PROXY set, httpx makes its own transports (and so its proxy mount); without, ours."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = ClientSettings(base_url="https://api.example.test/api/v1", lean_transport=False)
    plain = BackupsClient(ApiToken("t0ken-proxy-test-123", "test"), settings)
    assert isinstance(plain._http._transport._pool._network_backend, connections.Backend)  # type: ignore[attr-defined]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.test:3128")
    proxied = BackupsClient(ApiToken("t0ken-proxy-test-123", "test"), settings)
    assert any(
        isinstance(mounted, httpx.AsyncHTTPTransport) and isinstance(mounted._pool, httpcore.AsyncHTTPProxy)
        for mounted in proxied._http._mounts.values()
    )
