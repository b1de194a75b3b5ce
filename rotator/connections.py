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

import asyncio
import select
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

import h11
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


def proxied() -> bool:
    """Whether the environment names a proxy that httpx would send rotator's requests through
    (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, any case; ``NO_PROXY`` alone names none)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def transport_unless_proxied(
    *, verify: ssl.SSLContext | bool, limits: httpx.Limits, lean: bool = True
) -> httpx.AsyncBaseTransport | None:
    """A :class:`LeanTransport` (not ``lean``: httpx's, from :func:`transport`), or ``None`` where the
    environment names a proxy: httpx routes through it only when it makes its transports itself."""
    if proxied():
        return None
    if lean:
        return LeanTransport(verify=verify, limits=limits)
    return transport(verify=verify, limits=limits)


# -- a lean HTTP/1.1 transport --------------------------------------------------------------------
#
# httpx's transport goes through httpcore's pool, its connection classes and anyio's streams: per
# request a few hundred Python calls before and after h11 does the HTTP. Rotator talks to one origin,
# HTTP/1.1, a few connections kept alive: this transport is that and no more, on an asyncio protocol
# that holds what arrived (so an idle connection's liveness is a look at a flag, not a system call).

_Origin = tuple[str, str, int]
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# bytes that arrived and are not read yet, at most (about): past this the socket is no longer read
# until they are, so a server sending faster than rotator reads fills the kernel's buffers, not ours
HIGH_WATER: Final = 256 * 1024
MAX_HEAD: Final = 100 * 1024  # an answer's status line and headers together, at most (httpcore's bound)


class _Wire(asyncio.Protocol):
    """One connection's bytes as they arrive, whether the peer is done, and flow control both ways."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []  # arrived, not read yet
        self.size = 0  # their bytes
        self.eof = False
        self.error: Exception | None = None
        self.reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None  # while writing is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def quiet(self) -> bool:
        """Open, and nothing arrived since the last answer: an idle connection fit to be used again."""
        transport = self.transport
        return transport is not None and not transport.is_closing() and not self.chunks and not self.eof

    async def read(self, timeout: float | None) -> bytes:
        """What arrived (waiting up to ``timeout`` seconds for something), or ``b""`` once the peer is
        done; the error that ended the connection, if one did."""
        if not self.chunks and not self.eof:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # a timer on the one future waited for: what asyncio.timeout does, without its cancelling
            # and uncancelling of the task (a cancellation from outside still ends the wait as one)
            timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        chunks = self.chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self.size = 0
            if self.reading_paused:
                self.reading_paused = False
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.resume_reading()
            return data
        if self.error is not None:
            raise self.error
        return b""

    async def write(self, data: bytes, timeout: float | None) -> None:
        """``data`` handed to the socket: returns once the transport's buffer is below its high-water
        mark again (waiting up to ``timeout`` seconds for that)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise self.error or ConnectionResetError("the connection is closed")
        transport.write(data)
        writable = self._writable
        if writable is not None:
            async with asyncio.timeout(timeout):
                await asyncio.shield(writable)
        if self.error is not None:
            raise self.error

    def close(self, *, broken: bool = False) -> None:
        """Close the connection: gracefully when idle; at once (what is unsent dropped) when ``broken``."""
        if self.transport is not None:
            if broken:
                self.transport.abort()
            else:
                self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection:
    __slots__ = ("h11", "idle_since", "origin", "wire")

    def __init__(self, wire: _Wire, origin: _Origin) -> None:
        self.wire = wire
        self.origin = origin
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.idle_since = 0.0

    async def next_event(self, timeout: float | None) -> Any:
        """h11's next event of the answer, reading as it needs (errors as httpx's)."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.wire.read(timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("timed out reading the answer") from None
            except OSError as exc:  # ssl.SSLError among them
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            self.h11.receive_data(data)

    async def answer_head(self, timeout: float | None) -> h11.Response:
        """The answer's status line and headers (any 1xx before them skipped)."""
        event = await self.next_event(timeout)
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event(timeout)
        if not isinstance(event, h11.Response):
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return event

    @property
    def reusable(self) -> bool:
        """The exchange is over on both sides and nothing came after the answer (neither still in h11's
        buffer nor arrived since): the next exchange may use the connection."""
        state = self.h11
        done = state.our_state is h11.DONE and state.their_state is h11.DONE
        return done and not state.trailing_data[0] and self.wire.quiet


class _Body(httpx.AsyncByteStream):
    """An answer's body as it arrives; its connection goes back to the pool once the body is whole."""

    def __init__(self, pool: LeanTransport, connection: _Connection, timeout: float | None) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        try:
            while True:
                event = await connection.next_event(self._timeout)
                if type(event) is h11.Data:
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        except BaseException:
            self._finish(reuse=False)
            raise
        self._finish(reuse=True)

    def _finish(self, *, reuse: bool) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            self._pool.release(connection, reuse=reuse)

    async def aclose(self) -> None:
        self._finish(reuse=False)  # a body not read to its end leaves the connection unusable


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio with a keep-alive pool, for one origin or a few.

    As httpx's own transport does: each request's timeouts (its ``timeout`` extension, from the
    client's ``httpx.Timeout``: ``connect`` for the TCP connection and the TLS handshake, ``write``
    for each wait for the socket to take the request, ``read`` for each wait for the answer's bytes,
    ``pool`` for a free place among ``limits.max_connections``); TLS verified with the given context
    (or httpx's for ``verify``); idle connections kept up to ``limits.max_keepalive_connections`` and
    ``limits.keepalive_expiry`` seconds, and not used again once the server closed one or sent
    anything on it while idle; a connection whose exchange failed or was cancelled, or whose answer
    was not read to its end, is dropped, never pooled. Failures are httpx's exceptions
    (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``WriteTimeout``, ``PoolTimeout``,
    ``RemoteProtocolError``, ``ReadError``, ``WriteError``, ``LocalProtocolError``). No proxies, no
    HTTP/2: :func:`transport_unless_proxied` knows when httpx's transport is needed.

    The body is handed on as it arrives, undecoded (httpx's response decodes it); how much of it is
    read is the caller's bound (the client's ``max_body_bytes``): the socket is not read while more
    than :data:`HIGH_WATER` bytes wait unread.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool,
        limits: httpx.Limits,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # made for the first https connection
        self._slots = asyncio.Semaphore(limits.max_connections or 1_000_000)
        keep = limits.max_keepalive_connections
        self._keep = keep if keep is not None else 1_000_000
        self._expiry = limits.keepalive_expiry
        self._monotonic = monotonic
        self._idle: list[_Connection] = []  # the most recently used last
        self._closed = False

    @property
    def idle(self) -> list[_Connection]:
        """The connections kept for the next requests (read them, do not change them)."""
        return self._idle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        scheme = url.scheme
        port = _DEFAULT_PORTS.get(scheme)
        if port is None:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.host, url.port or port)
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("timed out waiting for a connection") from None
        else:
            await slots.acquire()
        connection: _Connection | None = None
        read = timeouts.get("read")
        try:
            connection = self._idle_connection(origin) or await self._connect(origin, timeouts.get("connect"))
            await self._send(connection, request, timeouts.get("write"))
            event = await connection.answer_head(read)
        except BaseException:
            if connection is not None:
                connection.wire.close(broken=True)
            slots.release()
            raise
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, connection, read),
            extensions={"http_version": b"HTTP/" + event.http_version, "reason_phrase": event.reason},
        )

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        """The most recently used idle connection to ``origin`` still fit for use; on the way, those
        idle longer than the keep-alive expiry, and those of ``origin`` found unfit, are closed."""
        idle = self._idle  # in the order they became idle: the expired ones first
        if self._expiry is not None and idle:
            oldest = self._monotonic() - self._expiry
            while idle and idle[0].idle_since < oldest:
                expired = idle.pop(0)
                expired.wire.close(broken=not expired.wire.quiet)
        for index in range(len(idle) - 1, -1, -1):
            connection = idle[index]
            if connection.origin == origin:
                del idle[index]
                if connection.wire.quiet:
                    return connection
                connection.wire.close(broken=True)
        return None

    def _tls(self) -> ssl.SSLContext:
        """The TLS context: the one given, or httpx's for ``verify`` (made once: loading the CA
        certificates takes tens of milliseconds, for nothing when the API is plain http)."""
        if self._ssl is None:
            verify = self._verify
            made = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
            made.set_alpn_protocols(["http/1.1"])
            self._ssl = made
        return self._ssl

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):  # the TLS handshake included
                _, wire = await loop.create_connection(
                    _Wire, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting") from None
        except OSError as exc:  # ssl.SSLError among them: a certificate not verified, not TLS at all
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(wire, origin)

    async def _send(self, connection: _Connection, request: httpx.Request, timeout: float | None) -> None:
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        try:
            head = h11.Request(
                method=request.method, target=request.url.raw_path, headers=request.headers.raw
            )
            data = connection.h11.send(head) or b""
            if body:
                data += connection.h11.send(h11.Data(data=body)) or b""
            data += connection.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        try:
            await connection.wire.write(data, timeout)  # the head and the body in one write
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request") from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

    def release(self, connection: _Connection, *, reuse: bool) -> None:
        """A request's connection is free: kept for the next request when it may be, else closed."""
        self._slots.release()
        if reuse and self._keep > 0 and connection.reusable and not self._closed:
            idle = self._idle
            if len(idle) >= self._keep:  # the least recently used makes room
                idle.pop(0).wire.close()
            connection.h11.start_next_cycle()
            connection.idle_since = self._monotonic()
            idle.append(connection)
            return
        connection.wire.close(broken=True)

    async def aclose(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.wire.close()
        self._idle.clear()
