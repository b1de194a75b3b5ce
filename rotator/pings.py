"""Monitoring pings at the start, success and failure of each run (healthchecks.io, Uptime Kuma, ...).

The convention: ``URL/start`` when a run starts, ``URL`` itself when it
succeeded, ``URL/fail`` when it failed, each a POST whose body is a short
summary of the run (:func:`ping_body`, from the typed run-finished event).
:class:`RunPings` is one policy's pings as an observer of its runs' events
(:mod:`rotator.events`); a dry run sends none. A ping that fails (no answer, a refused connection, an
error status) is logged as ``ping.failed`` and never fails the run: monitoring
notices a missing ping by itself. Ping URLs embed their check's key, so logs
name only the host.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from rotator.events import Event, RunFinished, RunStarted, Status

log = structlog.get_logger("rotator.pings")

DEFAULT_TIMEOUT: Final = 10.0
MAX_BODY: Final = 10_000  # bytes; healthchecks.io keeps up to 100 kB, a summary needs far less
USER_AGENT: Final = "rotator-pings"


def ping_url(url: str, suffix: str) -> str:
    """``url`` with ``/suffix`` appended to its path (before any query): ``.../start``, ``.../fail``."""
    if not suffix:
        return url
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/" + suffix
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def ping_body(run: RunFinished) -> str:
    """The run in a few lines: its headline, then one line per server that did not succeed."""
    lines = [run.headline()]
    lines += [f"server {server.server_id}: {server.outcome.value}: {server.error}" for server in run.not_ok()]
    return "\n".join(lines)


def _target(url: str) -> str:
    try:
        return urlsplit(url).netloc.rpartition("@")[2] or "?"
    except ValueError:
        return "?"


class Pinger:
    """Sends the pings; never raises. Pass a client to share it, or let it own one (``aclose()``).

    An owned client is made at the first ping: a daemon whose policies have no ``pings`` never
    pays for it (an HTTP client loads the CA bundle into its TLS context: ~0.1 s and some MB).
    """

    def __init__(self, client: httpx.AsyncClient | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._shared = client
        self._closed = False

    @functools.cached_property
    def _client(self) -> httpx.AsyncClient:
        if self._shared is not None:
            return self._shared
        if self._closed:  # as a closed client would say (a ping after aclose() fails, logged)
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        return httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._shared is None and "_client" in self.__dict__:  # ours, made by a ping
            await self._client.aclose()

    async def start(self, policy_url: str | None, body: str = "") -> bool:
        """``URL/start``: a run began (monitoring measures its duration from here)."""
        return await self._ping(policy_url, "start", body, "start")

    async def success(self, url: str | None, body: str = "") -> bool:
        """``URL``: the run succeeded."""
        return await self._ping(url, "", body, "success")

    async def fail(self, url: str | None, body: str = "") -> bool:
        """``URL/fail``: the run failed."""
        return await self._ping(url, "fail", body, "fail")

    async def finished(self, url: str | None, run: RunFinished) -> bool:
        """``success`` or ``fail`` as the run's status says, with :func:`ping_body` as the body.

        An abandoned run (a shutdown or restart cut it short) sends neither: it
        did not fail, and the next start's catch-up finishes its slot. The check
        stays started, so a daemon that never comes back still goes overdue.
        """
        if run.ok:
            return await self.success(url, ping_body(run))
        if run.status is Status.ABANDONED:
            log.info(
                "ping.skipped", reason="run abandoned by a shutdown", target=_target(url) if url else None
            )
            return False
        return await self.fail(url, ping_body(run))

    async def _ping(self, url: str | None, suffix: str, body: str, kind: str) -> bool:
        """``True`` if answered 2xx; else ``False`` and ``ping.failed`` logged. No URL: a no-op."""
        if not url:
            return False
        target = _target(url)
        content = body.encode("utf-8")[:MAX_BODY]
        try:
            response = await self._client.post(ping_url(url, suffix), content=content, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - a ping must never fail the run, whatever went wrong
            log.warning(
                "ping.failed", kind=kind, target=target, error=f"{type(exc).__name__}: {exc}".rstrip(": ")
            )
            return False
        if not response.is_success:
            log.warning("ping.failed", kind=kind, target=target, status=response.status_code)
            return False
        log.debug("ping.sent", kind=kind, target=target, status=response.status_code)
        return True


@dataclass(frozen=True)
class RunPings:
    """One policy's check as an observer of its runs: ``/start`` at ``run.started``, then success or fail.

    A dry run sends no ping: it made no backup, and monitoring should not believe it did.
    """

    pinger: Pinger
    url: str

    async def __call__(self, event: Event) -> None:
        if event.dry_run:
            return
        if isinstance(event, RunStarted):
            body = f"policy {event.policy}: run of slot {event.slot.isoformat()} started"
            await self.pinger.start(self.url, body)
        elif isinstance(event, RunFinished):
            await self.pinger.finished(self.url, event)
