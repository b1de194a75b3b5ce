"""Fixtures shared by the whole suite: the sandbox in process and on a loopback socket."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog
from starlette.applications import Starlette

from rotator import connections
from rotator.sandbox import (
    RunningSandbox,
    Sandbox,
    SandboxOptions,
    create_app,
    running_sandbox,
    sandbox_of,
)
from rotator.sandbox.testing import ManualMonotonic, RecordingSleep

SANDBOX_NOW = datetime(2025, 1, 16, 15, 45, tzinfo=UTC)
SANDBOX_ORIGIN = "http://sandbox.test"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults: a CLI test's configure_logging (level, stream)
    must not filter what a later test captures."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in [h for h in root.handlers if h.get_name() == "rotator"]:
        root.removeHandler(handler)


@pytest.fixture(name="sandbox_now")
def fixture_sandbox_now() -> datetime:
    """The instant the sandbox clock is frozen at: 2025-01-16T15:45:00Z."""
    return SANDBOX_NOW


@pytest.fixture(name="sandbox_options")
def fixture_sandbox_options(sandbox_now: datetime) -> SandboxOptions:
    """Demo fleet, seed 7, clock frozen at ``sandbox_now``, no faults (override to change)."""
    return SandboxOptions(seed=7, frozen_clock=sandbox_now)


@pytest.fixture(name="sandbox_sleep")
def fixture_sandbox_sleep() -> RecordingSleep:
    """The sleep the in-process sandbox uses for injected latency: records, never waits."""
    return RecordingSleep()


@pytest.fixture(name="sandbox_monotonic")
def fixture_sandbox_monotonic() -> ManualMonotonic:
    """The monotonic clock of the in-process sandbox's rate limit: moves only when advanced."""
    return ManualMonotonic()


@pytest.fixture(name="sandbox_app")
def fixture_sandbox_app(
    sandbox_options: SandboxOptions,
    sandbox_sleep: RecordingSleep,
    sandbox_monotonic: ManualMonotonic,
) -> Starlette:
    """A fresh in-process sandbox app built from ``sandbox_options``."""
    return create_app(sandbox_options, sleep=sandbox_sleep, monotonic=sandbox_monotonic)


@pytest.fixture(name="sandbox")
def fixture_sandbox(sandbox_app: Starlette) -> Sandbox:
    """The parts of the in-process sandbox: clock, state, faults, stats, token."""
    return sandbox_of(sandbox_app)


@pytest.fixture(name="sandbox_transport")
def fixture_sandbox_transport(sandbox_app: Starlette) -> httpx.ASGITransport:
    """An httpx transport into the in-process sandbox (for clients built elsewhere)."""
    return httpx.ASGITransport(app=sandbox_app)


@pytest.fixture(name="sandbox_api_url")
def fixture_sandbox_api_url() -> str:
    """The API base URL of the in-process sandbox, as a client configuration would name it."""
    return f"{SANDBOX_ORIGIN}/api/v1"


@pytest.fixture(name="sandbox_client")
async def fixture_sandbox_client(
    sandbox_transport: httpx.ASGITransport, sandbox: Sandbox
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the in-process sandbox at http://sandbox.test, sending the right token."""
    async with httpx.AsyncClient(
        transport=sandbox_transport,
        base_url=SANDBOX_ORIGIN,
        headers={"Authorization": f"Bearer {sandbox.token}"},
    ) as client:
        yield client


@pytest.fixture(name="sandbox_server")
def fixture_sandbox_server(sandbox_options: SandboxOptions) -> Iterator[RunningSandbox]:
    """The sandbox served by uvicorn on 127.0.0.1 and an ephemeral port (``.base_url``, ``.api_url``)."""
    with running_sandbox(sandbox_options) as running:
        yield running


@pytest.fixture(name="cli_at_sandbox")
def fixture_cli_at_sandbox(sandbox_server: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI talks to the loopback sandbox with its token; no configuration file or credentials
    directory around (``pytestmark = pytest.mark.usefixtures("cli_at_sandbox")``)."""
    monkeypatch.setenv("ROTATOR_API_URL", sandbox_server.api_url)
    monkeypatch.setenv("ROTATOR_API_TOKEN", sandbox_server.token)
    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture(name="httpx_transport")
def fixture_httpx_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients made in the test use httpx's own transport, not rotator's lean one, whatever their
    settings say: respx mocks httpx's transport (``pytestmark = pytest.mark.usefixtures(...)``)."""
    made = connections.transport_unless_proxied

    def httpx_own(**given: Any) -> httpx.AsyncBaseTransport | None:
        return made(**{**given, "lean": False})

    monkeypatch.setattr(connections, "transport_unless_proxied", httpx_own)
