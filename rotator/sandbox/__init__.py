"""The sandbox: an emulator of the provider's Backups API, in process or on a socket.

It reads the provider's documentation independently of ``rotator.api`` (and
imports nothing of it), so the two readings check each other. In process::

    app = create_app(SandboxOptions(frozen_clock=...))
    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test")

On a socket: ``with running_sandbox(options) as running: running.api_url``, or
``rotator sandbox`` on the command line.
"""

from rotator.sandbox.app import (
    API_PREFIX,
    DroppedConnection,
    Sandbox,
    build_app,
    create_app,
    sandbox_of,
)
from rotator.sandbox.clock import Clock, format_instant, parse_instant
from rotator.sandbox.fleet import marker
from rotator.sandbox.options import DEFAULT_TOKEN, FaultOptions, SandboxOptions
from rotator.sandbox.server import RunningSandbox, running_sandbox, serve
from rotator.sandbox.state import BackupRecord, Event, Fleet, SandboxState, Server

__all__ = [
    "API_PREFIX",
    "DEFAULT_TOKEN",
    "BackupRecord",
    "Clock",
    "DroppedConnection",
    "Event",
    "FaultOptions",
    "Fleet",
    "RunningSandbox",
    "Sandbox",
    "SandboxOptions",
    "SandboxState",
    "Server",
    "build_app",
    "create_app",
    "format_instant",
    "marker",
    "parse_instant",
    "running_sandbox",
    "sandbox_of",
    "serve",
]
