"""The sandbox on a real socket: uvicorn in a background thread, or in the foreground until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from rotator.sandbox.app import DroppedConnection, Sandbox, Sleep, build_app
from rotator.sandbox.clock import Clock
from rotator.sandbox.options import FaultOptions, SandboxOptions
from rotator.sandbox.state import SandboxState

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    """A sandbox served on a socket: where it listens, its token, and its parts for tests."""

    base_url: str
    api_url: str
    sandbox: Sandbox
    app: Starlette

    @property
    def token(self) -> str:
        """The bearer token the API accepts."""
        return self.sandbox.token

    @property
    def clock(self) -> Clock:
        """The sandbox clock (set, freeze and advance it from the test)."""
        return self.sandbox.clock

    @property
    def state(self) -> SandboxState:
        """Servers, backups and events."""
        return self.sandbox.state

    @property
    def options(self) -> SandboxOptions:
        """The options the sandbox started with."""
        return self.sandbox.options

    @property
    def faults(self) -> FaultOptions:
        """The faults in force now (change them with ``sandbox.update_faults``)."""
        return self.sandbox.faults

    def __repr__(self) -> str:
        return f"RunningSandbox(base_url={self.base_url!r}, token='***')"


class _HideDroppedConnections(logging.Filter):
    """uvicorn logs every exception of the app; a deliberately dropped connection is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DroppedConnection)


def _hide_dropped_connections() -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDroppedConnections) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(_HideDroppedConnections())


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: the accepted connections inherit it, and asyncio sets TCP_NODELAY only on
    # sockets that say they are TCP; without it every answer on a kept-alive connection (headers and
    # body written apart) waits for the client's delayed ACK, about 40 ms on Linux
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextmanager
def running_sandbox(
    options: SandboxOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock | None = None,
    sleep: Sleep = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    access_log: bool = False,
) -> Iterator[RunningSandbox]:
    """Serve a new sandbox on ``host:port`` (port 0: an ephemeral one) while the block runs."""
    sandbox = Sandbox(options, clock=clock, sleep=sleep, monotonic=monotonic)
    app = build_app(sandbox)
    _hide_dropped_connections()
    sock = _listening_socket(host, port)
    try:
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=access_log,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="rotator-sandbox", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(SHUTDOWN_TIMEOUT)
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)  # uvicorn offers no started event to wait on
        bound_port = sock.getsockname()[1]
        base_url = f"http://{_url_host(host)}:{bound_port}"
        try:
            yield RunningSandbox(base_url=base_url, api_url=f"{base_url}/api/v1", sandbox=sandbox, app=app)
        finally:
            server.should_exit = True
            thread.join(SHUTDOWN_TIMEOUT)
    finally:
        sock.close()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    options: SandboxOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[RunningSandbox], None] | None = None,
    access_log: bool = True,
) -> None:
    """Serve a sandbox until SIGINT/SIGTERM (or ``stop`` is set), then shut down cleanly."""
    stop = stop or threading.Event()
    with (
        _stop_on_signals(stop),
        running_sandbox(options, host=host, port=port, access_log=access_log) as running,
    ):
        if on_ready is not None:
            on_ready(running)
        while not stop.wait(0.25):
            pass
