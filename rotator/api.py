"""The provider's Backups API, as an async client.

One method per documented operation. Every foreign error (httpx, JSON,
pydantic) is translated here, in :func:`_map_transport_error` and
:meth:`BackupsClient._check`, into :mod:`rotator.errors`.

What the documentation leaves open is handled as its notes ask:

* listings follow DRF ``next`` links to the end, only to the API's own origin,
  and must add up to ``count``; otherwise :class:`IncompleteListing` is raised
  and nothing may be pruned on what was read;
* an answer is trusted only whole and in the documented shape: anything else
  (not JSON, an empty body, an array where an object belongs, a wrong type, a
  naive timestamp, a 2xx DELETE with a body that is not JSON) raises
  :class:`InvalidResponse` naming what is wrong;
* GET and DELETE are retried (stamina) on transport errors, 429, 502, 503
  and 504; POST create is sent again only when it surely had no effect (not
  sent, or a 429); otherwise its outcome is unknown and the caller finds out
  from the listings (:meth:`BackupsClient.create_backup`);
* a 429 pauses every caller of the client until its ``Retry-After``.

Size bounds (``ClientSettings``), so that a broken or hostile API gets a clear
refusal rather than the daemon's memory:

* ``answer_timeout`` (300 s, ``api.answer_timeout``; never less than the connect and read timeouts
  together): one attempt, from sending to the answer's last byte. The read
  timeout bounds each read only, so an answer trickling in would never end.
* ``max_body_bytes`` (16 MiB, ``api.max_body_bytes``): no answer body is read past this, decoded size
  (about 60,000 backups of the documented size in one page; a real page is 100
  or so). A 2xx answer beyond it is refused; an error answer is cut to it.
* ``max_listing_items`` (200,000 here; the configuration's ``api.max_listing_items``
  scales it with the fleet, 100 a server): a listing whose ``count`` says more is
  refused before its second page; :meth:`BackupsClient.list_backups_within` answers
  :class:`TooManyPages` instead, so a run falls back to per-server listings.
  While reading, a listing may never hold more than its ``count``, nor more
  pages than ``count`` (every page but an empty listing's holds a backup).
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Generator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import pydantic
import stamina
import structlog

from rotator import connections
from rotator.errors import (
    ApiError,
    BadRequest,
    CreateOutcomeUnknown,
    HTTPStatusError,
    IncompleteListing,
    InvalidResponse,
    NotFound,
    RateLimited,
    ServerError,
    TooLate,
    TransportError,
    Unauthorized,
    UnexpectedStatus,
)
from rotator.models import EMPTY, ROW_SIZE, BackupPage, Backups, CreatedBackup, Grouped, Listing, Table
from rotator.observability import debug_logged
from rotator.ratelimit import RequestBudget, Sleep, WallClock, parse_retry_after, utcnow
from rotator.secrets import ApiToken

DEFAULT_API_URL: Final = "https://admin.vps.org/api/v1"
USER_AGENT: Final = "rotator/0.1"
RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})
_MAX_MESSAGE = 300  # characters of a server's error text shown to people
_MIB: Final = 1024 * 1024
_JSON_KINDS: Final = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}

log = structlog.get_logger("rotator.api")
_M = TypeVar("_M")
_R = TypeVar("_R")
_PAGE: Final = pydantic.TypeAdapter(BackupPage)
_CREATED: Final = pydantic.TypeAdapter(CreatedBackup)


@dataclass(frozen=True)
class ClientSettings:
    """How the client talks to the API; the defaults suit the provider's documented API."""

    base_url: str = DEFAULT_API_URL
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    requests_per_second: float = 5.0
    burst: int = 10
    max_concurrency: int = 8
    retry_attempts: int = 6
    retry_timeout: float = 120.0  # seconds, all attempts of one call together
    retry_wait_initial: float = 0.5
    retry_wait_max: float = 30.0
    retry_wait_jitter: float = 1.0
    ca_bundle: Path | None = None
    max_pages: int = 100_000  # a listing longer than this is refused as endless
    max_body_bytes: int = 16 * _MIB  # no answer is read past this (decoded); see the module's notes
    answer_timeout: float = 300.0  # seconds for one whole answer (at least connect + read timeout)
    max_listing_items: int = 200_000  # a listing whose count says more is refused
    lean_transport: bool = True  # rotator.connections.LeanTransport, not httpx's (never with a proxy)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {self.base_url!r}")


class DeleteOutcome(enum.Enum):
    DELETED = "deleted"
    # 404 after an earlier attempt whose outcome was unknown: that attempt deleted it
    ALREADY_GONE = "already_gone"


@dataclass(frozen=True)
class TooManyPages:
    """A listing not read because it would take ``pages`` pages (``count`` items)."""

    count: int
    pages: int


@dataclass
class _Tally:
    """A listing being read: the count its first page promised, and what the pages held so far.

    It refuses as soon as the pages cannot add up: a count that changes, a
    backup listed twice, more backups than the count, or more pages than the
    count allows (every page of a listing that is not empty holds a backup).
    The backups are held packed (:class:`~rotator.models.Backups`), by server when ``grouped``.
    """

    path: str
    count: int
    grouped: bool = False
    held: int = 0
    pages: int = 0
    table: Table = field(default_factory=Table)
    rows: dict[int, bytearray] = field(default_factory=dict)  # by server id, or all of them under 0

    def _incomplete(self, problem: str) -> IncompleteListing:
        return IncompleteListing(problem, method="GET", path=self.path)

    def add(self, page: BackupPage) -> None:
        self.pages += 1
        if page.count != self.count:
            raise self._incomplete(
                f"the listing changed while it was read (count {self.count}, then {page.count})"
            )
        if not page.results and page.next:
            raise self._incomplete(
                f"page {self.pages} of the listing is empty while its count says "
                f"{self.count - self.held} more backups remain"
            )
        on_page: set[int] = set()  # a backup repeated across pages is found at the end (finish)
        for backup in page.results:
            if backup.id in on_page:
                raise self._incomplete(
                    f"the listing does not add up: backup {backup.id} is listed twice "
                    f"(repeated on page {self.pages}; count says {self.count})"
                )
            on_page.add(backup.id)
        self.held += len(page.results)
        if self.held > self.count:
            pages = f"{self.pages} page{'s' if self.pages > 1 else ''}"
            raise self._incomplete(
                f"the listing does not add up: count says {self.count}, "
                f"the pages hold more ({self.held} in {pages})"
            )
        if page.next and self.pages >= max(self.count, 1):
            raise self._incomplete(
                f"the listing's next links go on past its count ({self.count} backups, "
                f"{self.pages} pages read holding {self.held})"
            )
        packed, rows = self.table.pack_all(page.results), self.rows
        if self.grouped:
            for at, backup in enumerate(page.results):
                sid = backup.server.id
                row = packed[at * ROW_SIZE : (at + 1) * ROW_SIZE]
                if sid in rows:
                    rows[sid] += row
                else:
                    rows[sid] = bytearray(row)
        elif packed:
            rows.setdefault(0, bytearray()).extend(packed)

    def finish(self) -> Listing:
        if self.held != self.count:
            raise self._incomplete(
                f"the listing does not add up: count says {self.count}, the pages held {self.held}"
            )
        groups: dict[int, Backups] = {}
        while self.rows:  # each group's rows copied out as the last copy is let go: no second listing held
            sid, rows = self.rows.popitem()
            groups[sid] = Backups(bytes(rows), self.table)
            del rows
        twice = _repeated(groups.values(), self.count)
        if twice is not None:
            raise self._incomplete(
                f"the listing does not add up: backup {twice} is listed twice "
                f"(on two of its {self.pages} pages; count says {self.count})"
            )
        backups = Grouped(groups) if self.grouped else groups.get(0, EMPTY)
        return Listing(count=self.count, backups=backups, pages=self.pages)


def _repeated(groups: Iterable[Backups], count: int) -> int | None:
    """An id held twice in ``groups`` (``count`` backups in all), or None. A bitmap of the ids modulo
    16 x ``count`` (2 bytes a backup; ids handed out in sequence never share a bit) finds the few
    that may repeat; only those are counted exactly."""
    ids = [group.ids for group in groups]
    width = 16 * max(count, 1)
    seen = bytearray(width // 8 + 1)
    maybe: set[int] = set()
    for listed in ids:
        for id_ in listed():
            at = id_ % width
            bit = 1 << (at & 7)
            if seen[at >> 3] & bit:
                maybe.add(id_)
            else:
                seen[at >> 3] |= bit
    if not maybe:
        return None
    found: set[int] = set()
    for listed in ids:
        for id_ in listed():
            if id_ in maybe:
                if id_ in found:
                    return id_
                found.add(id_)
    return None


@dataclass
class _Attempts:
    """What the attempts of one call have seen (for DELETE's 404 rule)."""

    maybe_done: bool = False
    count: int = 0


class ApiObserver(Protocol):
    """Told of every exchange with the API (metrics, the health state): no I/O, no exceptions."""

    def on_response(self, method: str, path: str, status: int | None, seconds: float) -> None:
        """One attempt finished: its HTTP status, or None when it failed in transport."""

    def on_retry(self, method: str) -> None:
        """A failed attempt is about to be tried again."""

    def on_rate_limited(self) -> None:
        """The API answered 429."""


@dataclass
class ClientStats:
    """Counters for observability, passed on to an :class:`ApiObserver`; read them, do not write them."""

    requests: dict[str, int] = field(default_factory=dict)  # "GET 200" -> n
    retries: int = 0
    rate_limited: int = 0
    observer: ApiObserver | None = None

    def response(self, method: str, path: str, status: int | None, seconds: float) -> None:
        key = f"{method} {status if status is not None else 'transport_error'}"
        self.requests[key] = self.requests.get(key, 0) + 1
        if self.observer is not None:
            self.observer.on_response(method, path, status, seconds)

    def retry(self, method: str) -> None:
        self.retries += 1
        if self.observer is not None:
            self.observer.on_retry(method)

    def limited(self) -> None:
        self.rate_limited += 1
        if self.observer is not None:
            self.observer.on_rate_limited()


class _BearerAuth(httpx.Auth):
    """Adds the token only to requests for the API's own origin."""

    def __init__(self, token: ApiToken, origin: tuple[str, str, int | None]) -> None:
        self._token = token
        self._origin = origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port or default)


def _path_of(url: httpx.URL) -> str:
    return url.raw_path.decode("ascii", "replace")


def _map_transport_error(exc: httpx.TransportError, method: str, path: str) -> TransportError:
    """The one translation of httpx's transport errors."""
    match exc:
        case httpx.ConnectTimeout():
            what = "timed out connecting to the API"
        case httpx.ReadTimeout():
            what = "timed out waiting for the API's answer"
        case httpx.WriteTimeout():
            what = "timed out sending the request"
        case httpx.PoolTimeout():
            what = "timed out waiting for a free connection"
        case httpx.ConnectError():
            what = "could not connect to the API"
        case httpx.RemoteProtocolError() | httpx.ReadError():
            what = "the connection was lost before the answer arrived"
        case _:
            what = "the request failed in transport"
    # a request that never left this machine cannot have had an effect
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return TransportError(f"{what} ({type(exc).__name__})", method=method, path=path, request_sent=sent)


def _one_line(text: str) -> str:
    """A server's text made fit for a one-line message: no line breaks, no control characters, short."""
    flat = " ".join(text.split())
    return "".join(char if char.isprintable() else "?" for char in flat[:_MAX_MESSAGE])


def _server_message(response: httpx.Response) -> str:
    """The server's own explanation: DRF's ``detail`` or its field errors, else a short text."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        text = _one_line(response.text)
        return text if text and "<" not in text[:1] else (response.reason_phrase or "")
    if isinstance(body, dict):
        if isinstance(body.get("detail"), str):
            return _one_line(body["detail"])
        fields = []
        for key, value in body.items():
            messages = value if isinstance(value, list) else [value]
            fields.append(f"{key}: {' '.join(str(m) for m in messages)}")
        if fields:
            return _one_line("; ".join(fields))
    return response.reason_phrase or ""


class BackupsClient:
    """Async client of the Backups API. Use as ``async with BackupsClient(...) as client``."""

    def __init__(
        self,
        token: ApiToken,
        settings: ClientSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RequestBudget | None = None,
        wall_clock: WallClock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        observer: ApiObserver | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        self._token = token
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self.budget = budget or RequestBudget(
            self.settings.requests_per_second,
            self.settings.burst,
            self.settings.max_concurrency,
            monotonic=monotonic,
            sleep=sleep,
            wall_clock=wall_clock,
        )
        self.stats = ClientStats(observer=observer)
        self.page_size_seen: int | None = None  # the API's page size, once a listing had a next page
        base = httpx.URL(self.settings.base_url.rstrip("/") + "/")
        self._base = base
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(self.settings.ca_bundle))
        concurrency = self.settings.max_concurrency
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        own = transport or connections.transport_unless_proxied(
            verify=verify, limits=limits, lean=self.settings.lean_transport
        )
        self._http = httpx.AsyncClient(
            base_url=base,
            auth=_BearerAuth(token, _origin(base)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=httpx.Timeout(
                connect=self.settings.connect_timeout,
                read=self.settings.read_timeout,
                write=self.settings.read_timeout,
                pool=None,  # waiting for a connection is bounded by the budget's concurrency cap
            ),
            verify=verify,
            follow_redirects=False,  # a redirect could carry the token elsewhere
            # every place of the budget keeps its connection between requests (the pool's default of
            # 20 idle ones would not matter; its idle checks are made cheap in rotator.connections)
            limits=limits,
            transport=own,
        )
        # Requests go straight to ``own`` transport (httpx's client adds, per request, a cookie jar's
        # bookkeeping, an auth flow, redirect handling and URL joins: about a third of the client's
        # CPU); with a proxy configured (``own`` is None) they go through the client and its mounts.
        self._transport = own
        self._headers = httpx.Headers(self._http.headers)  # ours and httpx's defaults, as the client sends
        # what the client's auth flow adds, for the API's own origin only
        self._own_headers = httpx.Headers({**self._headers, "Authorization": f"Bearer {token.reveal()}"})
        self._timeouts = self._http.timeout.as_dict()
        self._origin = _origin(base)
        self._base_text = str(base) if not base.query and not base.fragment else None

    def __repr__(self) -> str:
        return f"BackupsClient(base_url={str(self._base)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- one HTTP exchange -------------------------------------------------

    async def _send_once(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        fresh: Callable[[], bool] | None = None,
        sent: _Attempts | None = None,
    ) -> httpx.Response:
        """One attempt, within the shared budget; error statuses raised as :mod:`rotator.errors`.

        ``fresh`` is asked once the budget lets the request go, right before it is
        sent: False raises :class:`TooLate` and nothing is sent. ``sent`` counts the
        requests that did go.
        """
        request = self._request(method, url, params, json)
        path = _path_of(request.url)
        s = self.settings
        deadline = max(s.answer_timeout, s.connect_timeout + s.read_timeout)
        async with self.budget.slot():
            if fresh is not None and not fresh():
                raise TooLate("not sent: what it was decided on is too old now", method=method, path=path)
            if sent is not None:
                sent.count += 1
            started = self._monotonic()
            try:
                # the read timeout bounds each read; this bounds the whole answer (a trickle never ends)
                async with asyncio.timeout(deadline):
                    streamed = await self._exchange(request)
                    try:
                        response, problem = await self._read_body(streamed)
                    finally:
                        await streamed.aclose()
            except (httpx.TransportError, TimeoutError) as exc:
                self.stats.response(method, path, None, self._monotonic() - started)
                if debug_logged():
                    log.debug("api.request", method=method, path=path, error=type(exc).__name__)
                if isinstance(exc, httpx.TransportError):
                    raise _map_transport_error(exc, method, path) from exc
                raise TransportError(
                    f"the answer did not arrive in full within {deadline:g}s", method=method, path=path
                ) from exc
        self.stats.response(method, path, response.status_code, self._monotonic() - started)
        self.budget.observe(response.headers)
        if debug_logged():  # every request: not even built at info
            log.debug(
                "api.request",
                method=method,
                path=path,
                status=response.status_code,
                duration_ms=round((self._monotonic() - started) * 1000, 1),
            )
        if problem is not None:
            raise InvalidResponse(problem, method=method, path=path, status=response.status_code)
        self._check(response, method, path)
        return response

    def _request(
        self, method: str, url: str | httpx.URL, params: dict[str, Any] | None, json: Any
    ) -> httpx.Request:
        """The request as the client would build it: its headers, timeouts, and the token for the API's
        own origin only."""
        if self._transport is None:
            return self._http.build_request(method, url, params=params, json=json)
        if isinstance(url, str):
            url = self._url(url)
        if params:
            url = url.copy_merge_params(params)
        headers = self._own_headers if _origin(url) == self._origin else self._headers
        return httpx.Request(method, url, headers=headers, json=json, extensions={"timeout": self._timeouts})

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the answer's body is left to stream."""
        if self._transport is None:
            return await self._http.send(request, stream=True)
        streamed = await self._transport.handle_async_request(request)
        streamed.request = request
        return streamed

    async def _read_body(self, streamed: httpx.Response) -> tuple[httpx.Response, str | None]:
        """The answer with its body read, never past ``max_body_bytes``, and what makes a 2xx unusable.

        An error answer is cut to the bound (only its message is wanted); a 2xx
        beyond it, or one whose body cannot be decoded, is refused.
        """
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        problem: str | None = None
        declared = streamed.headers.get("content-length", "")
        # a body sent as it is read straight from the stream (httpx's decoders, a copy each, pass it on
        # unchanged); an encoded one through httpx's decoding
        source: AsyncIterable[bytes]
        if "content-encoding" not in streamed.headers and isinstance(streamed.stream, httpx.AsyncByteStream):
            source = streamed.stream
        else:
            source = streamed.aiter_bytes()
        try:
            if declared.isdigit() and int(declared) > limit:
                problem = (
                    f"the answer's body is {int(declared)} bytes, more than the {_size(limit)} rotator reads"
                )
            else:
                async for chunk in source:
                    room = limit - size
                    if len(chunk) > room:
                        chunks.append(chunk[:room])  # an error answer's message needs only its start
                        problem = f"the answer's body is larger than the {_size(limit)} rotator reads"
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except httpx.DecodingError:
            encoding = streamed.headers.get("content-encoding", "none")
            problem = f"the answer's body cannot be decoded (content encoding {_one_line(encoding)})"
            chunks = []
        # the body is decoded now: drop the headers that described it on the wire
        headers = [
            (key, value)
            for key, value in streamed.headers.multi_items()
            if key.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        body = b"".join(chunks)
        response = httpx.Response(
            streamed.status_code, headers=headers, content=body, request=streamed.request
        )
        return response, problem if streamed.is_success else None

    def _check(self, response: httpx.Response, method: str, path: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        # the server's own words may echo what it was sent (a 401 quoting the Authorization header)
        message = self._token.scrub(_server_message(response))
        kwargs: dict[str, Any] = {"method": method, "path": path, "status": status}
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self._wall_clock())
            self.stats.limited()
            self.budget.pause(retry_after if retry_after is not None else 1.0)
            raise RateLimited(message or "too many requests", retry_after=retry_after, **kwargs)
        error: type[HTTPStatusError]
        if status == 400:
            error = BadRequest
        elif status in (401, 403):
            error = Unauthorized
            message = message or "the API rejected the token"
        elif status == 404:
            error = NotFound
        elif status >= 500:
            error = ServerError
        else:
            error = UnexpectedStatus
        raise error(message or response.reason_phrase or "error", **kwargs)

    def _retry_hook(self, exc: Exception) -> bool:
        """stamina's predicate: which failures of a GET or DELETE are worth another attempt.

        Transport errors, 429, 502, 503 and 504; also 500, since both are safe to repeat: reading
        again changes nothing, and a DELETE that did go through answers 404 next time, which
        :meth:`delete_backup` counts as done.
        """
        if isinstance(exc, TransportError):
            retry = True
        elif isinstance(exc, RateLimited):
            # the shared budget already holds every caller back until Retry-After;
            # a wait longer than all our attempts may take is not worth waiting for
            retry = exc.retry_after is None or exc.retry_after <= self.settings.retry_timeout
        else:
            retry = isinstance(exc, HTTPStatusError) and (
                exc.status in RETRYABLE_STATUSES or (exc.status == 500 and exc.method in ("GET", "DELETE"))
            )
        if retry:
            self.stats.retry(exc.method if isinstance(exc, ApiError) else "?")
        return retry

    async def _retried(
        self, call: Callable[[], Awaitable[_R]], hook: Callable[[Exception], bool] | None = None
    ) -> _R:
        """``call()`` under the retry policy (stamina, ``hook`` deciding what is tried again).

        The first attempt runs outside stamina: its retry context costs more CPU than the request
        itself, and most calls succeed at once. A failed first attempt is handed to stamina as its
        own first attempt (raised again inside it, with the time it took taken off the timeout), so
        the hook, the attempts, the waits, the timeout and stamina's logs are what they were.
        """
        started = time.monotonic()  # stamina's clock (tenacity's), not the client's injected one
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - handed to stamina, which decides (and re-raises)
            first: Exception | None = exc
        async for attempt in self._retrying(hook, spent=time.monotonic() - started):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                return await call()
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _retrying(self, hook: Callable[[Exception], bool] | None = None, *, spent: float = 0.0) -> Any:
        s = self.settings
        return stamina.retry_context(
            on=hook or self._retry_hook,
            attempts=s.retry_attempts,
            # the time already spent on the first attempt counts (stamina warns of a timeout of 0)
            timeout=max(s.retry_timeout - spent, 1e-9),
            wait_initial=s.retry_wait_initial,
            wait_max=s.retry_wait_max,
            wait_jitter=s.retry_wait_jitter,
        )

    async def _get_page(self, url: httpx.URL) -> BackupPage:
        response = await self._retried(lambda: self._send_once("GET", url))
        return _decode(_PAGE, response, "a listing page")

    # -- operations --------------------------------------------------------

    async def list_backups(
        self,
        *,
        server_id: int | None = None,
        backup_type: str | None = None,
        grouped: bool = False,
    ) -> Listing:
        """Every backup matching the filters, read to the last page, or an error: never a partial view.

        ``grouped``: the listing's backups held by server (:meth:`Listing.of_server`), read back in
        server order.
        """
        listing = await self._read_listing(server_id, backup_type, page_budget=None, grouped=grouped)
        assert isinstance(listing, Listing)  # without a budget the listing is always read
        return listing

    async def list_backups_within(
        self,
        page_budget: int,
        *,
        server_id: int | None = None,
        backup_type: str | None = None,
        grouped: bool = False,
    ) -> Listing | TooManyPages:
        """Like :meth:`list_backups`, but it stops after the first page when more than ``page_budget``
        pages would be needed (judged from ``count`` and the first page's length)."""
        return await self._read_listing(server_id, backup_type, page_budget=page_budget, grouped=grouped)

    async def _read_listing(
        self,
        server_id: int | None,
        backup_type: str | None,
        *,
        page_budget: int | None,
        grouped: bool = False,
    ) -> Listing | TooManyPages:
        params: dict[str, Any] = {}
        if server_id is not None:
            params["server_id"] = server_id
        if backup_type is not None:
            params["backup_type"] = backup_type
        path = _path_of(self._url("backups/"))
        limit = self.settings.max_listing_items
        tally: _Tally | None = None
        async with aclosing(self._pages(params)) as chain:
            async for page in chain:
                if tally is None:
                    count = page.count
                    if page.next and page.results:
                        self.page_size_seen = len(page.results)
                    too_long = count > limit
                    if page_budget is not None and (too_long or self.pages_for(count) > page_budget):
                        return TooManyPages(count, self.pages_for(count))
                    if too_long:
                        raise IncompleteListing(
                            f"the listing's count says {count} backups, more than the {limit} "
                            "rotator reads in one listing",
                            method="GET",
                            path=path,
                        )
                    tally = _Tally(path, count, grouped=grouped)
                tally.add(page)
        assert tally is not None
        return tally.finish()

    def pages_for(self, count: int) -> int:
        """How many pages a listing of ``count`` items takes, from the page size seen so far."""
        if self.page_size_seen is None:
            return 1
        return max(1, -(-count // self.page_size_seen))

    async def _pages(self, params: dict[str, Any]) -> AsyncGenerator[BackupPage, None]:
        url = self._url("backups/").copy_merge_params(params)
        first = await self._get_page(url)
        following = self._follow(first.next, url) if first.next else None
        yield first  # the caller may stop here (a page budget), before another page is asked for
        if following is None:
            return
        numbered = _numbered_pages(url, following, first)
        if numbered is not None and len(numbered) <= self.settings.max_pages:
            async for page in self._read_ahead(url, numbered):
                yield page
            return
        seen = {str(url), str(following)}
        url = following
        while True:
            page = await self._get_page(url)
            following = self._follow(page.next, url) if page.next else None
            # a loop is named as one before the repeated backups it brings are counted
            if following is not None and (str(following) in seen or len(seen) >= self.settings.max_pages):
                raise InvalidResponse(
                    f"the listing's next links go round in a loop (page {len(seen)} links back "
                    "to a page already read)",
                    method="GET",
                    path=_path_of(url),
                )
            yield page
            if following is None:
                return
            url = following
            seen.add(str(url))

    async def _read_ahead(self, first: httpx.URL, urls: list[httpx.URL]) -> AsyncGenerator[BackupPage, None]:
        """The pages at ``urls`` (pages 2 to the last of a page-number listing), yielded in order while
        up to the concurrency cap of them are on their way, each checked to link on to the next.

        Read one after the other, a listing of 300 pages waits 300 round trips however large the
        request budget; read ahead, it goes at the budget's pace (which still paces every request).
        """
        pending: deque[asyncio.Task[BackupPage]] = deque()
        ahead = max(1, self.budget.max_concurrency)
        numbers: dict[tuple[str, tuple[tuple[str, str], ...]], int] | None = None  # made when needed
        started = 0
        try:
            for index, url in enumerate(urls):
                while started < len(urls) and started - index < ahead:
                    pending.append(asyncio.create_task(self._get_page(urls[started])))
                    started += 1
                page = await pending.popleft()
                number = index + 2
                link: httpx.URL | None = None
                linked: int | None = None
                if page.next and index + 1 < len(urls) and page.next == str(urls[index + 1]):
                    # the link written as the next page's own URL: what following it would find
                    link, linked = urls[index + 1], number + 1
                elif page.next:
                    link = self._follow(page.next, url)
                    if numbers is None:
                        numbers = {_url_key(u): n for n, u in enumerate([first, *urls], start=1)}
                    linked = numbers.get(_url_key(link))
                # a loop is named as one before the repeated backups it brings are counted
                if linked is not None and linked <= number:
                    raise InvalidResponse(
                        f"the listing's next links go round in a loop (page {number} links back "
                        "to a page already read)",
                        method="GET",
                        path=_path_of(url),
                    )
                yield page  # its count and backups are checked (by the caller's tally) before its link
                if (link is None) != (number == len(urls) + 1) or (link is not None and linked != number + 1):
                    said = f"links to {self._token.scrub(page.next)[:200]}" if page.next else "is the last"
                    raise IncompleteListing(
                        f"the listing changed while it was read (page {number} of {len(urls) + 1} {said})",
                        method="GET",
                        path=_path_of(url),
                    )
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _follow(self, link: str, current: httpx.URL) -> httpx.URL:
        """A ``next`` link, accepted only on the API's own origin (the token goes nowhere else)."""
        try:
            url = current.join(link)
        except httpx.InvalidURL:
            raise InvalidResponse(
                "a listing's next link is not a URL", method="GET", path=_path_of(current)
            ) from None
        if _origin(url) != _origin(self._base):
            raise InvalidResponse(
                f"a listing's next link points to another origin ({url.scheme}://{url.host}); "
                "refusing to follow it",
                method="GET",
                path=_path_of(current),
            )
        return url

    def _url(self, relative: str) -> httpx.URL:
        if self._base_text is not None and not relative.startswith(("/", ".")) and ":" not in relative:
            return httpx.URL(self._base_text + relative)  # what join makes of it, without urljoin's work
        return self._base.join(relative)

    async def delete_backup(
        self, backup_id: int, *, fresh: Callable[[], bool] | None = None
    ) -> DeleteOutcome:
        """Delete one backup. A 404 after an attempt that may have gone through counts as done.

        ``fresh`` is asked before every attempt, the first and each retry: once it
        answers False, no (further) DELETE is sent and :class:`TooLate` is raised, so
        that a DELETE held back by 429s or failures never lands on a view grown stale
        meanwhile (the caller re-reads and plans again). An earlier attempt may have
        gone through: the fresh view tells.
        """
        url = self._url(f"backups/{backup_id}/")
        seen = _Attempts()

        async def attempt() -> httpx.Response:
            try:
                return await self._send_once("DELETE", url, fresh=fresh, sent=seen)
            except TransportError as exc:
                seen.maybe_done |= exc.request_sent
                raise
            except ServerError:
                seen.maybe_done = True
                raise

        try:
            response = await self._retried(attempt)
        except NotFound:
            if seen.maybe_done:
                log.info("backup.delete_confirmed_by_404", backup_id=backup_id, attempts=seen.count)
                return DeleteOutcome.ALREADY_GONE
            raise
        _check_delete_answer(response, backup_id)
        return DeleteOutcome.DELETED

    async def create_backup(self, server_id: int, description: str | None = None) -> CreatedBackup:
        """Start a manual backup with one POST; never sent twice when it may have reached the API.

        Tried again only when it surely had no effect: the connection could not
        be made, or the API answered 429 (within the retry bounds). When the
        request may have reached the API (a timeout or lost connection after
        sending, a 5xx), :class:`CreateOutcomeUnknown` is raised: whether a
        backup was started is for the caller to find out from the listings
        (the runner, by the slot's marker: :mod:`rotator.slots`), not for a
        second POST to guess. An answer that is garbage or names another
        server is :class:`InvalidResponse` (a backup may still have started).
        """
        body: dict[str, Any] = {"server_id": server_id}
        if description is not None:
            body["description"] = description
        url = self._url("backups/")
        path = _path_of(url)

        async def attempt() -> CreatedBackup:
            try:
                response = await self._send_once("POST", url, json=body)
            except (TransportError, ServerError) as exc:
                if isinstance(exc, TransportError) and not exc.request_sent:
                    raise  # it never reached the API: safe to try again
                log.warning("backup.create_outcome_unknown", server_id=server_id, error=str(exc))
                raise CreateOutcomeUnknown(
                    f"the create's outcome is unknown ({exc.message}): a backup may have been started",
                    path=path,
                ) from exc
            return _created(response, server_id)

        return await self._retried(attempt, self._create_retry_hook)

    def _create_retry_hook(self, exc: Exception) -> bool:
        """A create is tried again only when it surely did nothing: not sent, or refused with a 429."""
        retry = (isinstance(exc, TransportError) and not exc.request_sent) or isinstance(exc, RateLimited)
        if retry:
            self.stats.retry("POST")
        return retry

    async def restore_server(self, server_id: int, backup_id: int) -> Any:
        """Ask the API to restore ``server_id`` from ``backup_id``; any 2xx is success. Never retried."""
        url = self._url(f"servers/{server_id}/restore/")
        response = await self._send_once("POST", url, json={"backup_id": backup_id})
        if not response.content:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read as JSON
            return response.text


def _numbered_pages(first: httpx.URL, following: httpx.URL, page: BackupPage) -> list[httpx.URL] | None:
    """Pages 2 to the last of a listing, when the first page's ``next`` link is DRF's page-number
    pagination (the first page's own URL with ``page=2``); ``None`` for any other kind of link.

    How many pages there are comes from ``count`` and the first page's length; every page read is
    still checked to link on to the next one, and the whole to add up to ``count``.
    """
    if not page.results or following.params.get("page") != "2":
        return None
    if _url_key(following.copy_remove_param("page")) != _url_key(first.copy_remove_param("page")):
        return None
    pages = -(-page.count // len(page.results))
    return [following.copy_set_param("page", str(number)) for number in range(2, pages + 1)] or None


def _url_key(url: httpx.URL) -> tuple[str, tuple[tuple[str, str], ...]]:
    """What identifies ``url`` whatever the order of its query's parameters."""
    return str(url.copy_with(query=None)), tuple(sorted(url.params.multi_items()))


def _size(limit: int) -> str:
    return f"{limit // _MIB} MiB" if limit % _MIB == 0 else f"{limit} bytes"


def _content_type(response: httpx.Response) -> str:
    return _one_line(response.headers.get("content-type", "no content type").split(";")[0]) or "?"


def _decode(model: pydantic.TypeAdapter[_M], response: httpx.Response, what: str) -> _M:
    """``response``'s JSON body as ``model``, or :class:`InvalidResponse` saying what is wrong with it."""

    def invalid(problem: str) -> InvalidResponse:
        return InvalidResponse(
            f"{what} {problem}",
            method=response.request.method,
            path=_path_of(response.request.url),
            status=response.status_code,
        )

    if not response.content or response.content.isspace():
        raise invalid(f"has an empty body ({_content_type(response)})")
    try:
        return model.validate_json(response.content)
    except pydantic.ValidationError as exc:
        raise invalid(_shape_problem(exc, response)) from None


def _shape_problem(exc: pydantic.ValidationError, response: httpx.Response) -> str:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        detail = str(first.get("ctx", {}).get("error", "")) or first["msg"]
        return f"is not JSON ({_content_type(response)}: {_one_line(detail)})"
    if first["type"] in ("model_type", "dataclass_type") and not first["loc"]:
        got = first.get("input")
        kind = "null" if got is None else _JSON_KINDS.get(type(got), type(got).__name__)
        return f"is not in the documented shape: {kind} where a JSON object belongs"
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"is not in the documented shape: {where}: {_one_line(first['msg'])}{more}"


def _created(response: httpx.Response, server_id: int) -> CreatedBackup:
    """The create's answer, checked: a backup may exist even when the answer is refused, so say so."""
    try:
        created = _decode(_CREATED, response, "the create's answer")
    except InvalidResponse as exc:
        raise InvalidResponse(
            f"{exc.message}; a backup may have been started: check the server's backups",
            method=exc.method,
            path=exc.path,
            status=exc.status,
        ) from None
    if created.server_id != server_id:
        raise InvalidResponse(
            f"the create's answer is a backup of server {created.server_id}, not of server {server_id}",
            method="POST",
            path=_path_of(response.request.url),
            status=response.status_code,
        )
    return created


def _check_delete_answer(response: httpx.Response, backup_id: int) -> None:
    """A 2xx to a DELETE is trusted when it is empty (204) or a JSON object; anything else is garbage."""
    if response.status_code == 204 or not response.content or response.content.isspace():
        return
    try:
        body = response.json()
    except (ValueError, RecursionError):
        problem = f"is not JSON ({_content_type(response)})"
    else:
        if isinstance(body, dict):
            return
        kind = "null" if body is None else _JSON_KINDS.get(type(body), "not an object")
        problem = f"is {kind}, not a JSON object"
    raise InvalidResponse(
        f"the delete's answer {problem}: whether backup {backup_id} was deleted is unknown",
        method="DELETE",
        path=_path_of(response.request.url),
        status=response.status_code,
    )
