"""The sandbox: an emulator of the provider's Backups API, in process or on a socket.

It reads the provider's documentation independently of ``rotator.api`` (and
imports nothing of it), so the two readings check each other. In process::

    app = create_app(SandboxOptions(frozen_clock=...))
    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test")

On a socket: ``with running_sandbox(options) as running: running.api_url``, or
``rotator sandbox`` on the command line.

The package loads its parts when first asked for them (PEP 562), so that
``rotator.sandbox.cli`` and ``rotator.sandbox.options`` import without the
``sandbox`` extra (starlette, uvicorn): ``rotator sandbox --help`` lists every
option even where the server itself cannot run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "app": ("API_PREFIX", "DroppedConnection", "Sandbox", "build_app", "create_app", "sandbox_of"),
    "clock": ("Clock", "format_instant", "parse_instant"),
    "fleet": ("marker",),
    "options": ("DEFAULT_TOKEN", "FaultOptions", "SandboxOptions"),
    "server": ("RunningSandbox", "running_sandbox", "serve"),
    "state": ("BackupRecord", "Event", "Fleet", "SandboxState", "Server"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # asked once
    return value


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
