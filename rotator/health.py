"""The health and metrics listener (``http.listen``), and the client behind ``rotator healthcheck``.

Three read-only paths, on asyncio's own server (no web framework at run time):

``/healthz``
    liveness: the process answers, and the event loop's heartbeat is recent.
``/readyz``
    readiness: configuration valid, scheduler running, and the last API call
    authenticated (a revoked token makes rotator not ready; before the first
    call the token is given the benefit of the doubt).
``/metrics``
    :class:`~rotator.metrics.Metrics` in Prometheus' text format, rendered in a
    worker thread (a large fleet's text never holds up the event loop) and
    gzip-compressed when the scraper sends ``Accept-Encoding: gzip`` (as
    Prometheus does).

``/healthz`` and ``/readyz`` answer 200 or 503 with a small JSON body naming
each check. Only ``GET`` and ``HEAD`` are served; every connection is closed
after one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import httpx
import structlog

from rotator.addresses import parse_listen

if TYPE_CHECKING:  # the health state stands alone; only the listener serves the metrics
    from rotator.metrics import Metrics

log = structlog.get_logger("rotator.health")

HEALTH_PATHS: Final = ("/healthz", "/readyz", "/metrics")
_MAX_HEADER_LINES: Final = 100
_MAX_LINE: Final = 8192


@dataclass
class HealthState:
    """What the daemon tells the listener about itself; it updates the fields, the listener reads them."""

    config_ok: bool = False
    scheduler_running: bool = False
    last_auth_ok: bool | None = None  # None: no API call answered yet
    heartbeat: float | None = None  # monotonic time of the event loop's last beat
    stale_after: float = 30.0  # seconds without a beat before /healthz fails
    role: str | None = None  # with coordination: leader, standby, or standby (etcd unreachable)
    monotonic: Callable[[], float] = field(default=time.monotonic, repr=False)

    def beat(self) -> None:
        """The event loop is alive (called from a loop task: the watchdog or the listener's own)."""
        self.heartbeat = self.monotonic()

    def record_auth(self, status: int) -> None:
        """An API answer: 401/403 mean the token was rejected, any other answer that it was accepted."""
        self.last_auth_ok = status not in (401, 403)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        if self.heartbeat is None:
            return False, {"event_loop": "no heartbeat yet"}
        age = self.monotonic() - self.heartbeat
        ok = age <= self.stale_after
        return ok, {"event_loop": "ok" if ok else f"last heartbeat {age:.1f}s ago"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "config": "ok" if self.config_ok else "not loaded",
            "scheduler": "ok" if self.scheduler_running else "not running",
            "api_auth": {None: "no call yet", True: "ok", False: "token rejected"}[self.last_auth_ok],
        }
        if self.role is not None:
            # a standby is ready: it is alive and takes over when needed (a sidecar's readiness gates
            # its pod's traffic); the role says whether this instance acts
            checks["role"] = self.role
        ok = self.config_ok and self.scheduler_running and self.last_auth_ok is not False
        return ok, checks


class _BadRequest(Exception):
    pass


class HealthServer:
    """The listener: ``await start()``, then ``bound_port``; ``await stop()`` at shutdown."""

    def __init__(
        self,
        listen: str,
        state: HealthState,
        metrics: Metrics,
        *,
        beat_interval: float = 5.0,
        read_timeout: float = 10.0,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self.state = state
        self.metrics = metrics
        self.beat_interval = beat_interval
        self.read_timeout = read_timeout
        self._server: asyncio.Server | None = None
        self._beater: asyncio.Task[None] | None = None

    @property
    def bound_port(self) -> int:
        """The port actually listened on (the chosen one when ``listen`` named port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the health listener is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_LINE)
        self.state.beat()
        self._beater = asyncio.create_task(self._beat(), name="health-heartbeat")
        log.info("health.listening", host=self.host, port=self.bound_port)

    async def stop(self) -> None:
        if self._beater is not None:
            self._beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beater
            self._beater = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.beat_interval)
            self.state.beat()

    # -- one exchange ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(self._read_request(reader), self.read_timeout)
            except (_BadRequest, ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                await self._answer(writer, HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain")
                return
            except TimeoutError:
                return  # a client that never finished its request gets no answer
            method, path, gzip_ok = request
            if path == "/metrics" and method in ("GET", "HEAD"):
                status, body, content_type, extra = await self._metrics(gzip_ok)
            else:
                status, body, content_type, extra = self._route(method, path)
            await self._answer(
                writer, status, b"" if method == "HEAD" else body, content_type, extra, length=len(body)
            )
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bool]:
        """The method, the path, and whether the client takes a gzip-compressed answer."""
        line = (await reader.readuntil(b"\n")).decode("latin-1").strip()
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
            raise _BadRequest(line)
        gzip_ok = False
        for _ in range(_MAX_HEADER_LINES):
            header = (await reader.readuntil(b"\n")).decode("latin-1").strip()
            if header == "":
                return parts[0], parts[1].split("?", 1)[0], gzip_ok
            name, _, value = header.partition(":")
            if name.strip().lower() == "accept-encoding":
                gzip_ok = gzip_ok or accepts_gzip(value)
        raise _BadRequest("too many header lines")

    async def _metrics(self, gzip_ok: bool) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        from rotator.metrics import CONTENT_TYPE  # noqa: PLC0415 - loaded with self.metrics

        render = self.metrics.render_gzip if gzip_ok else self.metrics.render
        body = await asyncio.to_thread(render)
        extra = {"Vary": "Accept-Encoding", **({"Content-Encoding": "gzip"} if gzip_ok else {})}
        return HTTPStatus.OK, body, CONTENT_TYPE, extra

    def _route(self, method: str, path: str) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        if path not in HEALTH_PATHS:
            return HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", {}
        if method not in ("GET", "HEAD"):
            return (
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                "text/plain",
                {"Allow": "GET, HEAD"},
            )
        ok, checks = self.state.liveness() if path == "/healthz" else self.state.readiness()
        body = json.dumps({"status": "ok" if ok else "fail", "checks": checks}).encode() + b"\n"
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        return status, body, "application/json", {}

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
        *,
        length: int | None = None,
    ) -> None:
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body) if length is None else length),
            "Cache-Control": "no-store",
            "Connection": "close",
            **(extra or {}),
        }
        head = f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1") + body)
        await writer.drain()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip: ``gzip`` (or ``x-gzip``) at a quality above 0,
    else ``*`` above 0 (RFC 9110: a coding named outright wins over ``*``)."""
    qualities: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, number = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        coding = coding.lower()
        qualities["gzip" if coding == "x-gzip" else coding] = quality
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0


def check_health(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """``rotator healthcheck``: GET ``url``/healthz and ``url``/readyz; ``(True, ...)`` when both are 200.

    The message is one line for people (and for ``docker inspect``'s health log).
    """
    base = url.rstrip("/")
    answers = []
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            for path in ("/healthz", "/readyz"):
                response = client.get(base + path)
                answers.append(f"{path} {response.status_code} {_checks_of(response)}".rstrip())
                if response.status_code != 200:
                    return False, "; ".join(answers)
    except httpx.HTTPError as exc:
        return False, f"cannot ask {base}: {type(exc).__name__}: {exc}".rstrip(": ")
    return True, "; ".join(answers)


def _checks_of(response: httpx.Response) -> str:
    try:
        checks = response.json().get("checks", {})
    except (ValueError, AttributeError):
        return ""
    if not isinstance(checks, dict):
        return ""
    return ", ".join(f"{name}: {value}" for name, value in checks.items())
