"""The client's connection pool, with an idle connection's liveness check that costs one ``poll``.

httpcore asks every idle connection of the pool whether the server closed it (its socket readable),
each time a request joins or leaves the pool: with 8 connections about 16 checks a request. Through
anyio each check builds a dict of the socket's attributes (a ``getpeername`` among them) before the
one ``poll`` that answers; at hundreds of requests a second that was a tenth of rotator's CPU. Here
the raw socket is looked up once, when the connection is made, and each check is the ``poll`` alone.
Everything else goes to httpcore's own backend unchanged (timeouts, TLS, errors).
"""

# httpcore's stream and backend interface takes each timeout as an argument (ASYNC109)
# ruff: noqa: ASYNC109
from __future__ import annotations

import select
import socket
import ssl
import urllib.request
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR


def is_readable(sock: socket.socket | Any) -> bool:
    """Whether ``sock`` (anything with a ``fileno()``) has something to read now: on an idle connection,
    the server closed it."""
    if sock.fileno() < 0:
        return True  # closed here: not reusable
    poller = select.poll()
    poller.register(sock, _READABLE)
    return bool(poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """A stream of httpcore's backend, but for the liveness check (see the module)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        raw = inner.get_extra_info("socket")  # asyncio's TransportSocket: fileno() is what poll needs
        self._socket = raw if callable(getattr(raw, "fileno", None)) else None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return is_readable(self._socket)
        return self._inner.get_extra_info(info)


class Backend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, its streams wrapped in :class:`_Stream`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def transport(*, verify: ssl.SSLContext | bool, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport with :class:`Backend` under its pool (httpx keeps the pool's backend private:
    where it is not where this httpx version keeps it, the transport stays as httpx made it)."""
    made = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    pool = getattr(made, "_pool", None)
    if isinstance(pool, httpcore.AsyncConnectionPool) and hasattr(pool, "_network_backend"):
        pool._network_backend = Backend()  # no public way in; tests/test_connections.py pins it
    return made


def transport_unless_proxied(
    *, verify: ssl.SSLContext | bool, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport | None:
    """:func:`transport`, or ``None`` where the environment names a proxy (``HTTPS_PROXY`` and the
    like): httpx routes through it only when it makes its transports itself."""
    if urllib.request.getproxies():
        return None
    return transport(verify=verify, limits=limits)
