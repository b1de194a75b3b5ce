"""The sandbox as an ASGI app: the provider's Backups API under ``/api/v1``, plus ``/_sandbox``.

Every API request goes through the same gate, in this order: added latency,
the rate limit (a gateway-style token bucket that counts every request and
sends ``RateLimit-*`` headers on every answer when configured), the bearer
token (a 401 echoing the ``Authorization`` header under ``auth_echo``), a
third party's deletion (``third_party_delete_rate``), an injected 5xx, then
the operation itself.

Within the operations: a listing is read from the lagging view
(``listing_lag``); a page after the first may be shifted by a third party
first (``page_shift_rate``), and a page other than the last may come back
empty (``empty_page_rate``); its first page may be written to the event log
(``log_listings``). A create cuts its description (``description_max_length``),
creates the backup, may lie in its answer (``lie_known_id_rate``,
``lie_other_server_rate``), holds the answer (``create_answer_delay``), and may
drop the connection (``drop_rate``).

``/_sandbox/*`` (stats, events and notes, clock, faults, injected, reset, a
third party's deletion) needs no token and is never faulted or counted.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rotator.sandbox import fleet
from rotator.sandbox.clock import Clock, parse_instant
from rotator.sandbox.options import FaultOptions, SandboxOptions
from rotator.sandbox.ratelimit import RateDecision, TokenBucket
from rotator.sandbox.state import (
    BACKUP_TYPES,
    THIRD_PARTY,
    BackupRecord,
    RestoreRefused,
    SandboxState,
    UnknownBackup,
    UnknownServer,
)

API_PREFIX = "/api/v1"
CREATE_MESSAGE = "Backup is being created. This may take several minutes depending on server size."
DESCRIPTION_MAX_LENGTH = 255
SERVER_ERROR_STATUSES = (500, 502, 503, 504)
INJECTED_KINDS = (
    "server_error",
    "rate_limited",
    "dropped",
    "failed",
    "slow",
    "delayed",
    "page_shift",
    "lie_known_id",
    "lie_other_server",
    "empty_page",
    "third_party_delete",
)
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

Sleep = Callable[[float], Awaitable[None]]
Handler = Callable[[Request], Awaitable[Response]]


class DroppedConnection(ConnectionError):
    """Raised on purpose after a create was processed: the client never gets the answer.

    Over a socket the server then closes the connection mid-response; in
    process (``httpx.ASGITransport``) the exception reaches the caller.
    """


class _DroppedResponse(Response):
    """Starts the response, then loses the connection before the body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        raise DroppedConnection("sandbox dropped the connection after creating the backup")


class Sandbox:
    """One sandbox's parts: its options, clock, state, faults and request statistics.

    ``sleep`` (for injected latency) and ``monotonic`` (for the rate limit's
    budget) are injectable so tests never wait.
    """

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options or SandboxOptions()
        self.clock = clock or Clock(self.options.frozen_clock)
        self.sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._faults = self.options.faults
        self.state = self._build_state()
        self._stats: dict[str, Counter[str]] = {}
        self._injected: Counter[str] = Counter()
        self._fault_rng = _fault_rng(self.options.seed)
        self._limiter = self._build_limiter(self._faults)

    @property
    def token(self) -> str:
        """The bearer token the API accepts."""
        return self.options.token

    @property
    def faults(self) -> FaultOptions:
        """The faults in force now."""
        return self._faults

    def set_faults(self, faults: FaultOptions) -> None:
        """Put ``faults`` in force (a new rate limit starts with a full bucket)."""
        with self._lock:
            if (faults.rate_limit, faults.bucket_size) != (
                self._faults.rate_limit,
                self._faults.bucket_size,
            ):
                self._limiter = self._build_limiter(faults)
            self._faults = faults
            self._configure_state(self.state, faults)

    def update_faults(self, **changes: Any) -> FaultOptions:
        """Change some fault options by name; raise ``ValueError`` on a bad one."""
        faults = self._faults.updated(changes)
        self.set_faults(faults)
        return faults

    def reset(self) -> None:
        """Back to the start: the fleet rebuilt as of the clock's now, no events, no stats."""
        with self._lock:
            self._faults = self.options.faults
            self.state = self._build_state()
            self._stats = {}
            self._injected = Counter()
            self._fault_rng = _fault_rng(self.options.seed)
            self._limiter = self._build_limiter(self._faults)

    def record(self, route: str, outcome: str) -> None:
        """Count one answer of ``route`` (``"GET /api/v1/backups/"``) with ``outcome`` (``"200"``)."""
        with self._lock:
            self._stats.setdefault(route, Counter())[outcome] += 1

    def stats(self) -> dict[str, Any]:
        """``{"requests": {route: {status: n}}, "total": n}``."""
        with self._lock:
            requests = {route: dict(sorted(counts.items())) for route, counts in self._stats.items()}
        total = sum(sum(counts.values()) for counts in requests.values())
        return {"requests": dict(sorted(requests.items())), "total": total}

    def count_injected(self, kind: str) -> None:
        """Count one injected fault of a kind of :data:`INJECTED_KINDS` (but ``failed``)."""
        with self._lock:
            self._injected[kind] += 1

    def injected(self) -> dict[str, int]:
        """How many faults of each kind were injected so far (``failed``: creates set to end failed)."""
        with self._lock:
            counts = dict(self._injected)
        counts["failed"] = self.state.doomed
        return {kind: counts.get(kind, 0) for kind in INJECTED_KINDS}

    def rate_decision(self) -> RateDecision | None:
        """Spend one request of the rate limit, if one is configured."""
        limiter = self._limiter
        return limiter.take() if limiter is not None else None

    def roll(self, rate: float) -> bool:
        """A seeded coin that comes up true with probability ``rate``."""
        return rate > 0 and self._fault_rng.random() < rate

    def server_error_status(self) -> int:
        """Which 5xx an injected error answers with."""
        return self._fault_rng.choice(SERVER_ERROR_STATUSES)

    def third_party_delete(self) -> BackupRecord | None:
        """A third party deletes the newest completed manual backup of a random server (if any has one)."""
        deleted = self.state.third_party_delete_newest(self._fault_rng)
        if deleted is not None:
            self.count_injected("third_party_delete")
        return deleted

    def shift_pages(self, earlier: Sequence[BackupRecord]) -> BackupRecord | None:
        """A third party deletes one of ``earlier`` (a listing's pages before the one asked for) and makes
        a manual backup of its server, which sorts last; return the deleted one (``None``: none there)."""
        present = [record for record in earlier if self.state.exists(record.id)]
        if not present:
            return None
        gone, _ = self.state.third_party_replace(self._fault_rng.choice(present).id)
        self.count_injected("page_shift")
        return gone

    def lie_about(self, record: BackupRecord, answer: dict[str, Any]) -> dict[str, Any]:
        """The create answer ``answer`` for ``record``, maybe with another backup's id or another server."""
        faults = self._faults
        state = self.state
        if self.roll(faults.lie_known_id_rate):
            older = [b.id for b in state.backups(server_id=record.server_id) if b.id != record.id]
            if older:
                answer = {**answer, "id": self._fault_rng.choice(older)}
                self.count_injected("lie_known_id")
        if self.roll(faults.lie_other_server_rate):
            others = [server for server in state.servers() if server.id != record.server_id]
            if others:
                answer = {**answer, "server": self._fault_rng.choice(others).to_json()}
                self.count_injected("lie_other_server")
        return answer

    def _build_state(self) -> SandboxState:
        state = SandboxState(
            fleet.build(self.options, self.clock.now()),
            clock=self.clock,
            seed=self.options.seed,
            create_seconds=self.options.create_seconds,
        )
        self._configure_state(state, self._faults)
        return state

    @staticmethod
    def _configure_state(state: SandboxState, faults: FaultOptions) -> None:
        state.configure(api_clock_offset=faults.api_clock_offset, listing_lag=faults.listing_lag)

    def _build_limiter(self, faults: FaultOptions) -> TokenBucket | None:
        if faults.rate_limit is None:
            return None
        return TokenBucket(faults.rate_limit, faults.bucket_size, monotonic=self._monotonic)


def _fault_rng(seed: int) -> random.Random:
    return random.Random(f"{seed}:faults")  # noqa: S311 -- seeded simulation, not secrets


def create_app(
    options: SandboxOptions | None = None,
    *,
    clock: Clock | None = None,
    sleep: Sleep = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Starlette:
    """A new sandbox as an ASGI app; reach its parts with :func:`sandbox_of`."""
    return build_app(Sandbox(options, clock=clock, sleep=sleep, monotonic=monotonic))


def sandbox_of(app: Starlette) -> Sandbox:
    """The :class:`Sandbox` behind an app made by :func:`create_app` or :func:`build_app`."""
    sandbox = app.state.sandbox
    if not isinstance(sandbox, Sandbox):
        raise TypeError("not a sandbox app")
    return sandbox


def build_app(sandbox: Sandbox) -> Starlette:
    """The ASGI app serving ``sandbox``."""
    api = _Api(sandbox)
    control = _Control(sandbox)
    routes = [
        api.route("/backups/", {"GET": api.list_backups, "POST": api.create_backup}),
        api.route("/backups/{backup_id}/", {"DELETE": api.delete_backup}),
        api.route("/servers/{server_id}/restore/", {"POST": api.restore_server}),
        api.route("/{rest:path}", {}),
        Route("/_sandbox/stats", control.stats, methods=["GET"]),
        Route("/_sandbox/events", control.events, methods=["GET", "POST"]),
        Route("/_sandbox/injected", control.injected, methods=["GET"]),
        Route("/_sandbox/clock", control.clock, methods=["GET", "POST"]),
        Route("/_sandbox/faults", control.faults, methods=["GET", "POST"]),
        Route("/_sandbox/reset", control.reset, methods=["POST"]),
        Route("/_sandbox/third-party/delete", control.third_party_delete, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app


def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _not_found() -> JSONResponse:
    return _detail(404, "Not found.")


def _server_error(status: int) -> Response:
    titles = {
        500: "Server Error (500)",
        502: "502 Bad Gateway",
        503: "503 Service Temporarily Unavailable",
        504: "504 Gateway Time-out",
    }
    title = titles[status]
    return HTMLResponse(
        f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n", status
    )


def _parse_id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _json_body(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
    """The request's JSON object, or the DRF-style error answer for it."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and media_type != "application/json":
        return None, _detail(415, f'Unsupported media type "{content_type}" in request.')
    raw = await request.body()
    if not raw.strip():
        return {}, None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, _detail(400, f"JSON parse error - {exc}")
    if not isinstance(data, dict):
        kind = {list: "list", str: "str", int: "int", float: "float", bool: "bool"}.get(
            type(data), "NoneType" if data is None else type(data).__name__
        )
        return None, JSONResponse(
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {kind}."]},
            status_code=400,
        )
    return data, None


def _integer_field(data: dict[str, Any], name: str, errors: dict[str, list[str]]) -> int:
    if name not in data:
        errors[name] = ["This field is required."]
        return 0
    value = data[name]
    if value is None:
        errors[name] = ["This field may not be null."]
        return 0
    if not _is_integer(value):
        errors[name] = ["A valid integer is required."]
        return 0
    return int(value)


class _Api:
    """The provider's four operations behind one gate (latency, rate limit, token, 5xx)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def route(self, template: str, handlers: dict[str, Handler]) -> Route:
        """A route for ``template`` under the API prefix that answers ``handlers`` by method."""
        path = API_PREFIX + template
        label = API_PREFIX + ("/{unknown}" if template == "/{rest:path}" else template)

        async def endpoint(request: Request) -> Response:
            response = await self._gate(request, handlers)
            outcome = "dropped" if isinstance(response, _DroppedResponse) else str(response.status_code)
            self.sandbox.record(f"{request.method} {label}", outcome)
            return response

        return Route(path, endpoint, methods=ALL_METHODS)

    async def _gate(self, request: Request, handlers: dict[str, Handler]) -> Response:
        sandbox = self.sandbox
        faults = sandbox.faults
        if faults.latency > 0:
            await sandbox.sleep(faults.latency)
        decision = sandbox.rate_decision()
        rate_headers = decision.headers() if decision is not None else {}
        if not faults.rate_limit_headers:
            rate_headers = {k: v for k, v in rate_headers.items() if k == "Retry-After"}
        if decision is not None and not decision.allowed:
            sandbox.count_injected("rate_limited")
            unit = "second" if decision.retry_after == 1 else "seconds"
            return _detail(
                429,
                f"Request was throttled. Expected available in {decision.retry_after} {unit}.",
                rate_headers,
            )
        response = self._authenticate(request)
        if response is None and sandbox.roll(faults.third_party_delete_rate):
            sandbox.third_party_delete()
        if response is None and sandbox.roll(faults.error_rate):
            sandbox.count_injected("server_error")
            response = _server_error(sandbox.server_error_status())
        if response is None:
            handler = handlers.get(request.method)
            if handler is not None:
                response = await handler(request)
            elif handlers:
                response = _detail(
                    405,
                    f'Method "{request.method}" not allowed.',
                    {"Allow": ", ".join(sorted(handlers))},
                )
            else:
                response = _not_found()
        response.headers.update(rate_headers)
        return response

    def _authenticate(self, request: Request) -> Response | None:
        sent = request.headers.get("authorization")
        scheme, _, credentials = (sent or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return self._refuse("Authentication credentials were not provided.", sent)
        if not hmac.compare_digest(credentials.strip().encode(), self.sandbox.token.encode()):
            return self._refuse("Invalid token.", sent)
        return None

    def _refuse(self, detail: str, sent: str | None) -> Response:
        """A 401; under ``auth_echo`` its detail repeats the ``Authorization`` header sent, if any."""
        if sent is not None and self.sandbox.faults.auth_echo:
            detail = f"{detail} You sent: Authorization: {sent}"
        return _detail(401, detail, {"WWW-Authenticate": 'Bearer realm="api"'})

    async def list_backups(self, request: Request) -> Response:
        """``GET /backups/``: filtered, by id, DRF page-number pages with absolute links."""
        params = request.query_params
        server_id, backup_type, errors = _listing_filters(params)
        if errors:
            return JSONResponse(errors, status_code=400)
        sandbox = self.sandbox
        faults = sandbox.faults
        state = sandbox.state
        matching = state.listed(server_id=server_id, backup_type=backup_type)
        page_size = sandbox.options.page_size
        pages = max(1, math.ceil(matching.count / page_size))
        raw_page = params.get("page", "1")
        page = pages if raw_page == "last" else _parse_id(raw_page)
        if page is None or not 1 <= page <= pages:
            return _detail(404, "Invalid page.")
        start = (page - 1) * page_size
        # a third party's manual backup could not match a listing of automatic ones: count would drop
        shifted = (
            page >= 2
            and backup_type != "automatic"
            and sandbox.roll(faults.page_shift_rate)
            and sandbox.shift_pages(matching.window(0, start)) is not None
        )
        if shifted:
            matching = state.listed(server_id=server_id, backup_type=backup_type)
            pages = max(1, math.ceil(matching.count / page_size))
        window = matching.window(start, start + page_size)
        if page < pages and sandbox.roll(faults.empty_page_rate):
            sandbox.count_injected("empty_page")
            window = []
        if page == 1 and sandbox.options.log_listings:
            state.log_listing(
                {"server_id": server_id, "backup_type": backup_type, "count": matching.count, "pages": pages}
            )
        next_url, previous_url = _page_links(request, page, pages)
        return JSONResponse(
            {
                "count": matching.count,
                "next": next_url,
                "previous": previous_url,
                "results": [state.to_json(record) for record in window],
            }
        )

    async def create_backup(self, request: Request) -> Response:
        """``POST /backups/``: start a manual backup (maybe losing the answer on purpose)."""
        data, problem = await _json_body(request)
        if problem is not None or data is None:
            return problem or _detail(400, "Malformed request.")
        sandbox = self.sandbox
        faults = sandbox.faults
        errors: dict[str, list[str]] = {}
        server_id = _integer_field(data, "server_id", errors)
        description = data.get("description")
        if description is not None:
            if not isinstance(description, str):
                errors["description"] = ["Not a valid string."]
            elif faults.description_max_length is not None:
                description = description[: faults.description_max_length]  # silently, as some APIs do
            elif len(description) > DESCRIPTION_MAX_LENGTH:
                errors["description"] = [
                    f"Ensure this field has no more than {DESCRIPTION_MAX_LENGTH} characters."
                ]
        if errors:
            return JSONResponse(errors, status_code=400)
        try:
            sandbox.state.server(server_id)
        except UnknownServer:
            return _not_found()
        slow = sandbox.roll(faults.slow_rate)
        record = sandbox.state.create_backup(
            server_id,
            description,
            fail_rate=faults.fail_rate,
            seconds=faults.slow_seconds if slow else None,
        )
        if slow:
            sandbox.count_injected("slow")
        body = sandbox.lie_about(record, {**sandbox.state.to_json(record), "message": CREATE_MESSAGE})
        if faults.create_answer_delay > 0:
            sandbox.count_injected("delayed")
            await sandbox.sleep(faults.create_answer_delay)
        if sandbox.roll(faults.drop_rate):
            sandbox.count_injected("dropped")
            return _DroppedResponse(json.dumps(body).encode(), status_code=201, media_type="application/json")
        return JSONResponse(body, status_code=201)

    async def delete_backup(self, request: Request) -> Response:
        """``DELETE /backups/{id}/``: 204, or 404 for an unknown (or vanished) backup."""
        backup_id = _parse_id(request.path_params["backup_id"])
        if backup_id is None:
            return _not_found()
        try:
            self.sandbox.state.delete_backup(backup_id)
        except UnknownBackup:
            return _not_found()
        return Response(status_code=204)

    async def restore_server(self, request: Request) -> Response:
        """``POST /servers/{id}/restore/``: 202 when the backup is this server's and completed."""
        server_id = _parse_id(request.path_params["server_id"])
        state = self.sandbox.state
        if server_id is None or not state.has_server(server_id):
            return _not_found()
        data, problem = await _json_body(request)
        if problem is not None or data is None:
            return problem or _detail(400, "Malformed request.")
        errors: dict[str, list[str]] = {}
        backup_id = _integer_field(data, "backup_id", errors)
        if errors:
            return JSONResponse(errors, status_code=400)
        try:
            state.restore(server_id, backup_id)
        except (UnknownServer, UnknownBackup):
            return _not_found()
        except RestoreRefused as exc:
            return JSONResponse({"backup_id": [str(exc)]}, status_code=400)
        return JSONResponse(
            {
                "message": f"Restore of server {server_id} from backup {backup_id} has started.",
                "server_id": server_id,
                "backup_id": backup_id,
            },
            status_code=202,
        )


class _Control:
    """``/_sandbox/*``: what tests and demos use to look inside and steer."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def stats(self, request: Request) -> Response:
        """Request counts by route template and outcome."""
        return JSONResponse(self.sandbox.stats())

    async def events(self, request: Request) -> Response:
        """The event log (``?kind=deleted`` to keep one kind); POST writes a note into it.

        POST ``{"note": {...}}`` appends that note; ``{"snapshot": true}`` appends a
        note listing every backup present (optionally with ``note``'s fields too).
        """
        state = self.sandbox.state
        if request.method == "POST":
            data, problem = await _json_body(request)
            if problem is not None or data is None:
                return problem or _detail(400, "Malformed request.")
            unknown = sorted(set(data) - {"note", "snapshot"})
            note = data.get("note", {})
            snapshot = data.get("snapshot", False)
            if unknown or not isinstance(note, dict) or not isinstance(snapshot, bool):
                return _detail(400, 'Expected {"note": {...}} and/or {"snapshot": true}.')
            if not note and not snapshot:
                return _detail(400, "Nothing to note.")
            event = state.snapshot(**note) if snapshot else state.note(note)
            return JSONResponse(event.to_json(), status_code=201)
        events = state.events(request.query_params.get("kind") or None)
        return JSONResponse({"count": len(events), "events": [event.to_json() for event in events]})

    async def clock(self, request: Request) -> Response:
        """Read the clock, or ``{"freeze": bool, "set": iso, "advance": seconds}`` (in that order)."""
        clock = self.sandbox.clock
        if request.method == "POST":
            data, problem = await _json_body(request)
            if problem is not None or data is None:
                return problem or _detail(400, "Malformed request.")
            try:
                freeze, target, advance = _clock_changes(data)
            except ValueError as exc:
                return _detail(400, str(exc))
            if freeze is not None:
                clock.freeze(freeze)
            if target is not None:
                clock.set(target)
            if advance is not None:
                clock.advance(advance)
            self.sandbox.state.settle()
        return JSONResponse(clock.to_json())

    async def injected(self, request: Request) -> Response:
        """How many faults of each kind were injected."""
        return JSONResponse(self.sandbox.injected())

    async def faults(self, request: Request) -> Response:
        """Read the faults in force, or change some by name."""
        if request.method == "POST":
            data, problem = await _json_body(request)
            if problem is not None or data is None:
                return problem or _detail(400, "Malformed request.")
            try:
                self.sandbox.update_faults(**data)
            except (TypeError, ValueError) as exc:
                return _detail(400, str(exc))
        return JSONResponse(self.sandbox.faults.to_json())

    async def reset(self, request: Request) -> Response:
        """Rebuild the fleet and forget events, stats and changed faults."""
        self.sandbox.reset()
        return JSONResponse({"detail": "Sandbox reset.", "clock": self.sandbox.clock.to_json()})

    async def third_party_delete(self, request: Request) -> Response:
        """``{"backup_id": N}``: a third party deletes that backup; answers the ``deleted`` event."""
        data, problem = await _json_body(request)
        if problem is not None or data is None:
            return problem or _detail(400, "Malformed request.")
        errors: dict[str, list[str]] = {}
        backup_id = _integer_field(data, "backup_id", errors)
        unknown = sorted(set(data) - {"backup_id"})
        if unknown:
            errors["non_field_errors"] = [f"Unknown field(s): {', '.join(unknown)}."]
        if errors:
            return JSONResponse(errors, status_code=400)
        state = self.sandbox.state
        try:
            state.delete_backup(backup_id, by=THIRD_PARTY)
        except UnknownBackup:
            return _not_found()
        return JSONResponse(state.events("deleted")[-1].to_json())


def _listing_filters(params: Mapping[str, str]) -> tuple[int | None, str | None, dict[str, list[str]]]:
    """A listing's ``server_id`` and ``backup_type`` filters, and django-filter's errors for them."""
    errors: dict[str, list[str]] = {}
    server_id: int | None = None
    raw_server = params.get("server_id", "")
    if raw_server:
        server_id = _parse_id(raw_server.strip())
        if server_id is None:
            errors["server_id"] = ["Enter a whole number."]
    backup_type = params.get("backup_type") or None
    if backup_type is not None and backup_type not in BACKUP_TYPES:
        errors["backup_type"] = [f"Select a valid choice. {backup_type} is not one of the available choices."]
    return server_id, backup_type, errors


def _page_links(request: Request, page: int, pages: int) -> tuple[str | None, str | None]:
    """Absolute ``next`` and ``previous`` links of ``page`` (DRF: page 1 is linked without ``page``)."""
    url = request.url
    next_url = str(url.include_query_params(page=page + 1)) if page < pages else None
    previous_url: str | None = None
    if page == 2:
        previous_url = str(url.remove_query_params("page"))
    elif page > 2:
        previous_url = str(url.include_query_params(page=page - 1))
    return next_url, previous_url


def _clock_changes(data: dict[str, Any]) -> tuple[bool | None, datetime | None, timedelta | None]:
    """Check a ``POST /_sandbox/clock`` body; raise ``ValueError`` saying what is wrong."""
    unknown = sorted(set(data) - {"freeze", "set", "advance"})
    if unknown:
        raise ValueError(f"Unknown clock field(s): {', '.join(unknown)}.")
    freeze, instant, advance = data.get("freeze"), data.get("set"), data.get("advance")
    if freeze is not None and not isinstance(freeze, bool):
        raise ValueError("freeze must be true or false.")
    if advance is not None and (isinstance(advance, bool) or not isinstance(advance, int | float)):
        raise ValueError("advance must be a number of seconds.")
    if instant is not None and not isinstance(instant, str):
        raise ValueError("set must be an ISO 8601 instant.")
    target = parse_instant(instant) if instant is not None else None
    step = timedelta(seconds=advance) if advance is not None else None
    return freeze, target, step
