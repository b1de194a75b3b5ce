"""Malformed API answers, fed to the client, to a daemon run and to the ``rotator`` process.

Each case is an answer rotator cannot trust: invalid JSON, a missing field, a
wrong type, an id below 1, a ``count`` the pages do not add up to, a ``next``
link off the API's origin or round in a loop, HTML or nothing where JSON
belongs, a body too big to read, a timestamp without a zone... Every one must
end in the matching :mod:`rotator.errors` exception with a one-line message
naming the problem (never the token), and no DELETE may follow from it.

The API is :class:`FakeApi`: a small, correct DRF-style Backups API whose
answers a case replaces. It records every request that reaches it, so "nothing
deleted" is asserted on what the API saw. In process it is an
``httpx.MockTransport``; for the process-level cases, ``http.server`` serves it
on loopback.

The bounds under test are :class:`rotator.api.ClientSettings`'s:
``max_body_bytes`` (16 MiB read at most, decoded), ``max_listing_items``
(200,000 backups in one listing) and ``answer_timeout`` (one whole answer).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import gzip
import json
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from structlog.testing import capture_logs

from rotator import errors
from rotator.api import BackupsClient, ClientSettings
from rotator.markers import make_marker, mark_description
from rotator.models import Backup
from rotator.retention import Policy, Retention, plan_server
from rotator.runner import JobSpec, Outcome, Runner
from rotator.secrets import ApiToken
from tests.clock import FakeTime
from tests.test_api import backup_json

TOKEN = "tok-bad-input-7f3e-SECRET"
MEMORY_ORIGIN = "https://api.test"
PREFIX = "/api/v1"
LISTING_PATH = f"{PREFIX}/backups/"
SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=30)
SERVERS = (1, 2)
OWNED_PER_SERVER = 6
KEEP_LAST = 3
FIRST_NEW_ID = 901  # the fake API's first id for a created backup (the fleet's are lower)
MIB = 1024 * 1024
BODY_LIMIT = ClientSettings().max_body_bytes
ITEM_LIMIT = ClientSettings().max_listing_items

Chunks = Callable[[], Iterator[bytes]]


# -- the fake API ----------------------------------------------------------------


@dataclass
class Answer:
    """One answer of the fake API; ``body`` is bytes, or a function giving a streamed body's chunks."""

    status: int = 200
    body: bytes | Chunks = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(data: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(data).encode())


@dataclass(frozen=True)
class Seen:
    """A request as the fake API saw it."""

    method: str
    url: str  # absolute, as sent
    path: str
    query: dict[str, str]
    body: bytes
    authorization: str | None

    @property
    def page(self) -> int:
        return int(self.query.get("page", "1"))

    def link(self, origin: str, **changes: int | None) -> str:
        """This listing's URL with query parameters changed (``None`` removes one)."""
        query: dict[str, Any] = dict(self.query)
        for key, value in changes.items():
            if value is None:
                query.pop(key, None)
            else:
                query[key] = value
        return f"{origin}{self.path}" + (f"?{urlencode(query)}" if query else "")


Corruption = Callable[["FakeApi", Seen], Answer]


def fleet() -> list[dict[str, Any]]:
    """Per server: six nightly backups owned by the policy and one automatic backup; ids not in age order."""
    backups = []
    for server in SERVERS:
        for day in range(OWNED_PER_SERVER):
            slot = SLOT - timedelta(days=OWNED_PER_SERVER - day)
            description = mark_description(f"nightly {slot:%Y-%m-%d}", "nightly", slot)
            backup_id = 100 * server + (day * 7) % OWNED_PER_SERVER + 1
            backups.append(
                backup_json(
                    backup_id, f"{slot:%Y-%m-%dT%H:%M:%SZ}", server_id=server, description=description
                )
            )
        backups.append(
            backup_json(
                100 * server + 50,
                "2025-01-16T01:00:00Z",
                server_id=server,
                backup_type="automatic",
                description=None,
            )
        )
    return backups


class FakeApi:
    """A correct DRF-style Backups API over :func:`fleet`, whose answers a case may replace.

    ``on_list``, ``on_create`` and ``on_delete`` answer instead of the API (with
    ``list_after_create``, listings are replaced only once a create was made). A
    create's backup is ``in_progress`` and has completed by the next listing.
    """

    def __init__(self, origin: str = MEMORY_ORIGIN, page_size: int = 100) -> None:
        self.origin = origin
        self.page_size = page_size
        self.backups = fleet()
        self.requests: list[Seen] = []
        self.on_list: Corruption | None = None
        self.on_create: Corruption | None = None
        self.on_delete: Corruption | None = None
        self.list_after_create = False
        self.streamed = 0  # bytes of streamed bodies handed out
        self._next_id = FIRST_NEW_ID
        self._lock = threading.Lock()

    def sent(self, method: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == method]

    @property
    def deletes(self) -> list[Seen]:
        return self.sent("DELETE")

    def handle(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            if seen.authorization != f"Bearer {TOKEN}":
                return json_answer({"detail": "Invalid token."}, 401)
            if seen.path == LISTING_PATH and seen.method == "GET":
                if self.on_list is not None and (not self.list_after_create or self.sent("POST")):
                    return self.on_list(self, seen)
                return json_answer(self.page_body(seen))
            if seen.path == LISTING_PATH and seen.method == "POST":
                if self.on_create is not None:
                    return self.on_create(self, seen)
                return json_answer(self.create(seen), 201)
            if seen.path.startswith(LISTING_PATH) and seen.method == "DELETE":
                if self.on_delete is not None:
                    return self.on_delete(self, seen)
                return Answer(204) if self.delete(seen) else json_answer({"detail": "Not found."}, 404)
            return json_answer({"detail": "Not found."}, 404)

    # -- the correct API, for cases to build on

    def items(self, seen: Seen) -> list[dict[str, Any]]:
        """The backups a listing request matches (in-progress ones complete now)."""
        for backup in self.backups:
            if backup["status"] == "in_progress":
                backup.update(status="completed", size_mb=4500)
        server = seen.query.get("server_id")
        kind = seen.query.get("backup_type")
        return [
            copy.deepcopy(b)  # a case may change what it answers, never what the API holds
            for b in self.backups
            if (server is None or str(b["server"]["id"]) == server) and kind in (None, b["backup_type"])
        ]

    def page_body(self, seen: Seen, size: int | None = None) -> dict[str, Any]:
        items = self.items(seen)
        size = size or self.page_size
        start = (seen.page - 1) * size
        more = start + size < len(items)
        return {
            "count": len(items),
            "next": seen.link(self.origin, page=seen.page + 1) if more else None,
            "previous": None,
            "results": items[start : start + size],
        }

    def create(self, seen: Seen) -> dict[str, Any]:
        asked = json.loads(seen.body)
        backup = backup_json(
            self._next_id,
            "2025-01-16T03:00:31Z",
            server_id=asked["server_id"],
            status="in_progress",
            description=asked.get("description"),
        )
        self._next_id += 1
        self.backups.append(backup)
        return {**backup, "message": "Backup is being created."}

    def delete(self, seen: Seen) -> bool:
        backup_id = int(seen.path.removeprefix(LISTING_PATH).strip("/"))
        kept = [b for b in self.backups if b["id"] != backup_id]
        found = len(kept) < len(self.backups)
        self.backups = kept
        return found

    def stream(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.streamed += len(chunk)
            yield chunk


# -- the fake API in process (httpx.MockTransport) and on loopback (http.server) -----------


class _AsyncChunks(httpx.AsyncByteStream):
    def __init__(self, chunks: Chunks) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks():
            yield chunk


def memory_transport(api: FakeApi) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen = Seen(
            request.method,
            str(request.url),
            request.url.path,
            dict(request.url.params),
            request.content,
            request.headers.get("authorization"),
        )
        answer = api.handle(seen)
        headers = dict(answer.headers)
        if answer.content_type is not None:
            headers["content-type"] = answer.content_type
        # a stream, never content=: httpx would decode (and choke on) a bad gzip body right here
        stream = _AsyncChunks(answer.body) if callable(answer.body) else httpx.ByteStream(answer.body)
        return httpx.Response(answer.status, headers=headers, stream=stream)

    return httpx.MockTransport(handler)


class _LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.0: one answer per connection, a streamed body ends when the connection closes."""

    server: _LoopbackServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        api = self.server.api
        length = int(self.headers.get("content-length") or 0)
        split = urlsplit(self.path)
        seen = Seen(
            self.command,
            f"{api.origin}{self.path}",
            split.path,
            dict(parse_qsl(split.query)),
            self.rfile.read(length) if length else b"",
            self.headers.get("authorization"),
        )
        answer = api.handle(seen)
        self.send_response(answer.status)
        if answer.content_type is not None:
            self.send_header("Content-Type", answer.content_type)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        if not callable(answer.body):
            self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        chunks = answer.body() if callable(answer.body) else iter([answer.body])
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what a refused answer should make it do

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    api: FakeApi


@pytest.fixture(name="served")
def fixture_served() -> Iterator[FakeApi]:
    """The fake API served on 127.0.0.1 and an ephemeral port while the test runs."""
    server = _LoopbackServer(("127.0.0.1", 0), _LoopbackHandler)
    server.api = FakeApi(origin=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- the cases ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A malformed answer, the error it must raise and a pattern of that error's message."""

    name: str
    answer: Corruption
    error: type[errors.ApiError]
    match: str


def raw(body: bytes, content_type: str | None = "application/json", **headers: str) -> Corruption:
    return lambda api, seen: Answer(200, body, content_type, headers)


def envelope(change: Callable[[dict[str, Any]], Any]) -> Corruption:
    """The right page with its envelope changed."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        body = api.page_body(seen)
        change(body)
        return json_answer(body)

    return corrupt


def first_item(change: Callable[[dict[str, Any]], Any]) -> Corruption:
    """The right page with its first backup changed."""
    return envelope(lambda body: change(body["results"][0]))


def one_a_page(next_link: Callable[[FakeApi, Seen], str]) -> Corruption:
    """Pages of one backup whose next link is ``next_link``'s."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        body = api.page_body(seen, size=1)
        body["next"] = next_link(api, seen)
        return json_answer(body)

    return corrupt


def moved(
    api: FakeApi, seen: Seen, *, scheme: str | None = None, host: str | None = None, port: int = 0
) -> str:
    """The next page's link, on another scheme, host or port."""
    parts = urlsplit(seen.link(api.origin, page=seen.page + 1))
    default = {"http": 80, "https": 443}[parts.scheme]
    netloc = f"{host or parts.hostname}:{(parts.port or default) + port}"
    return urlunsplit((scheme or parts.scheme, netloc, parts.path, parts.query, ""))


def two_pages(
    first: Callable[[list[Any]], list[Any]],
    second: Callable[[list[Any]], list[Any]],
    *,
    second_count: Callable[[int], int] = lambda n: n,
) -> Corruption:
    """A listing in two pages cut from the right items by ``first`` and ``second``."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        items = api.items(seen)
        if seen.page == 1:
            body = {"count": len(items), "next": seen.link(api.origin, page=2), "results": first(items)}
        else:
            body = {"count": second_count(len(items)), "next": None, "results": second(items)}
        return json_answer(body)

    return corrupt


def endless(fresh_items: bool) -> Corruption:
    """Every page links to a page after it: empty pages, or pages of backups never seen before."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        results = []
        if fresh_items:
            results = [
                backup_json(10_000 + 2 * seen.page + i, "2025-01-01T03:00:00Z", server_id=1, description=None)
                for i in range(2)
            ]
        count = len(api.items(seen))
        return json_answer(
            {"count": count, "next": seen.link(api.origin, page=seen.page + 1), "results": results}
        )

    return corrupt


def streamed(head: bytes, middle: Callable[[], Iterator[bytes]], tail: bytes) -> Corruption:
    """A 200 whose body is produced as the client reads it (and counted in ``api.streamed``)."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        def chunks() -> Iterator[bytes]:
            yield head
            yield from middle()
            yield tail

        return Answer(200, lambda: api.stream(chunks()))

    return corrupt


def spaces(total: int, chunk: int = 64 * 1024) -> Callable[[], Iterator[bytes]]:
    blank = b" " * chunk
    return lambda: (blank for _ in range(total // chunk))


def millions_of_items(total: int = 3_000_000, per_chunk: int = 250) -> Callable[[], Iterator[bytes]]:
    """``total`` backups, as fast as they can be written (the same ones over again: the client
    must refuse the page for its size before it could notice)."""
    item = json.dumps(backup_json(7, "2025-01-01T03:00:00Z", server_id=1, description=None)).encode()
    batch = b",".join([item] * per_chunk)

    def chunks() -> Iterator[bytes]:
        yield batch
        for _ in range(total // per_chunk - 1):
            yield b"," + batch

    return chunks


@functools.cache
def gzip_bomb() -> bytes:
    """About 48 kB that inflate to 48 MiB of a valid (empty) listing."""
    return gzip.compress(b'{"count": 0, "results": []' + b" " * (48 * MIB) + b"}", compresslevel=9)


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda target: target.update(values)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda target: target.pop(key)


Invalid = errors.InvalidResponse
Incomplete = errors.IncompleteListing
SHAPE = "a listing page is not in the documented shape"
ITEM = r"results\.0\."  # where a problem with the page's first backup is reported
INT = "Input should be a valid integer"
STR = "Input should be a valid string"
GE1 = "Input should be greater than or equal to 1"
ZONE = "Input should have timezone info"
DATETIME = "Input should be a valid datetime"
MISSING = "Field required"
TOO_BIG = rf"larger than the {BODY_LIMIT // MIB} MiB rotator reads"


def _server(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda item: item["server"].update(values)


def _other_scheme(api: FakeApi, seen: Seen) -> str:
    return moved(api, seen, scheme="https" if api.origin.startswith("http:") else "http")


def _back_to_the_first_page(api: FakeApi, seen: Seen) -> str:
    return seen.link(api.origin, page=2 if seen.page == 1 else None)


def _repeat_first(body: dict[str, Any]) -> None:
    body["results"][1] = body["results"][0]


LISTING_CASES = [
    # not JSON, or not an object
    Case(
        "invalid-json",
        raw(b'{"count": 3, "results": [{"id": 1,'),
        Invalid,
        r"not JSON \(application/json: EOF",
    ),
    Case(
        "html-200", raw(b"<html><body>Welcome!</body></html>", "text/html"), Invalid, r"not JSON \(text/html"
    ),
    Case("empty-body", raw(b""), Invalid, r"a listing page has an empty body"),
    Case("whitespace-body", raw(b" \r\n "), Invalid, r"a listing page has an empty body"),
    Case("no-content-type", raw(b"OK", None), Invalid, r"not JSON \(no content type"),
    Case("invalid-utf8", raw(b'{"count": 0, "results": [], "x": "\xff"}'), Invalid, r"not JSON .*unicode"),
    Case("deeply-nested", raw(b"[" * 100_000 + b"]" * 100_000), Invalid, r"not JSON .*recursion limit"),
    Case("json-array", raw(b"[1, 2]"), Invalid, rf"{SHAPE}: an array where a JSON object belongs"),
    Case("json-string", raw(b'"ok"'), Invalid, rf"{SHAPE}: a string where a JSON object belongs"),
    Case("json-null", raw(b"null"), Invalid, rf"{SHAPE}: null where a JSON object belongs"),
    Case("json-number", raw(b"42"), Invalid, rf"{SHAPE}: a number where a JSON object belongs"),
    # missing fields
    Case("missing-count", envelope(_drop("count")), Invalid, rf"{SHAPE}: count: {MISSING}"),
    Case("missing-results", envelope(_drop("results")), Invalid, rf"{SHAPE}: results: {MISSING}"),
    Case("missing-id", first_item(_drop("id")), Invalid, rf"{ITEM}id: {MISSING}"),
    Case("missing-server", first_item(_drop("server")), Invalid, rf"{ITEM}server: {MISSING}"),
    Case("missing-server-name", first_item(_server(name=None)), Invalid, rf"{ITEM}server\.name: {STR}"),
    Case("missing-status", first_item(_drop("status")), Invalid, rf"{ITEM}status: {MISSING}"),
    Case("missing-created-at", first_item(_drop("created_at")), Invalid, rf"{ITEM}created_at: {MISSING}"),
    # wrong types (nothing is coerced: "501", true and 501.0 are not ids)
    Case("count-as-string", envelope(_set(count="12")), Invalid, rf"count: {INT}"),
    Case("count-as-float", envelope(_set(count=12.0)), Invalid, rf"count: {INT}"),
    Case(
        "results-as-object",
        envelope(_set(results={"a": 1})),
        Invalid,
        r"results: Input should be a valid (list|array)",
    ),
    Case("id-as-string", first_item(_set(id="501")), Invalid, rf"{ITEM}id: {INT}"),
    Case("id-as-boolean", first_item(_set(id=True)), Invalid, rf"{ITEM}id: {INT}"),
    Case("id-as-float", first_item(_set(id=501.0)), Invalid, rf"{ITEM}id: {INT}"),
    Case("id-null", first_item(_set(id=None)), Invalid, rf"{ITEM}id: {INT}"),
    Case("server-as-number", first_item(_set(server=1)), Invalid, rf"{ITEM}server: Input should be"),
    Case("server-id-as-string", first_item(_server(id="1")), Invalid, rf"{ITEM}server\.id: {INT}"),
    Case("status-as-number", first_item(_set(status=1)), Invalid, rf"{ITEM}status: {STR}"),
    Case(
        "status-with-newline", first_item(_set(status="completed\nX")), Invalid, rf"{ITEM}status: .*printable"
    ),
    Case("size-as-string", first_item(_set(size_mb="4456")), Invalid, rf"{ITEM}size_mb: {INT}"),
    Case("description-as-number", first_item(_set(description=7)), Invalid, rf"{ITEM}description: {STR}"),
    Case("next-as-number", envelope(_set(next=2)), Invalid, rf"next: {STR}"),
    # ids and numbers out of range
    Case("id-negative", first_item(_set(id=-4)), Invalid, rf"{ITEM}id: {GE1}"),
    Case("id-zero", first_item(_set(id=0)), Invalid, rf"{ITEM}id: {GE1}"),
    Case("server-id-zero", first_item(_server(id=0)), Invalid, rf"{ITEM}server\.id: {GE1}"),
    Case("server-id-negative", first_item(_server(id=-1)), Invalid, rf"{ITEM}server\.id: {GE1}"),
    Case(
        "size-negative",
        first_item(_set(size_mb=-1)),
        Invalid,
        rf"{ITEM}size_mb: .* greater than or equal to 0",
    ),
    Case(
        "count-negative",
        envelope(_set(count=-1)),
        Invalid,
        r"count: Input should be greater than or equal to 0",
    ),
    # timestamps
    Case(
        "created-at-naive",
        first_item(_set(created_at="2025-01-10T03:00:00")),
        Invalid,
        rf"{ITEM}created_at: {ZONE}",
    ),
    Case(
        "created-at-date-only",
        first_item(_set(created_at="2025-01-10")),
        Invalid,
        rf"{ITEM}created_at: {ZONE}",
    ),
    Case(
        "created-at-unparseable",
        first_item(_set(created_at="yesterday")),
        Invalid,
        rf"{ITEM}created_at: {DATETIME}",
    ),
    Case("created-at-impossible", first_item(_set(created_at="2025-02-30T03:00:00Z")), Invalid, DATETIME),
    # a time with no local time in some zone (the first and last day datetime holds): no plan places it
    Case(
        "created-at-year-1",
        first_item(_set(created_at="0001-01-01T05:00:00Z")),
        Invalid,
        rf"{ITEM}created_at: .*a timestamp between 0001-01-02 and 9999-12-30 UTC "
        r"\(got 0001-01-01T05:00:00\+00:00\)",
    ),
    Case(
        "created-at-year-9999-offset",
        first_item(_set(created_at="9999-12-31T20:00:00-05:00")),
        Invalid,
        rf"{ITEM}created_at: .*a timestamp between 0001-01-02 and 9999-12-30 UTC",
    ),
    Case(
        "expires-at-last-day",
        first_item(_set(expires_at="9999-12-31T00:00:00Z")),
        Invalid,
        rf"{ITEM}expires_at: .*a timestamp between",
    ),
    Case(
        "created-at-number",
        first_item(_set(created_at=1736478000)),
        Invalid,
        "must be ISO 8601 text, not a number",
    ),
    Case(
        "expires-at-naive",
        first_item(_set(expires_at="2025-02-10T03:00:00")),
        Invalid,
        rf"{ITEM}expires_at: {ZONE}",
    ),
    # count against the pages
    Case(
        "count-too-high",
        envelope(lambda b: b.update(count=b["count"] + 2)),
        Incomplete,
        r"count says \d+, the pages held \d+",
    ),
    Case(
        "count-too-low",
        envelope(lambda b: b.update(count=b["count"] - 1)),
        Incomplete,
        r"count says \d+, the pages hold more",
    ),
    Case(
        "count-zero-with-items",
        envelope(_set(count=0)),
        Incomplete,
        r"count says 0, the pages hold more \(\d+ in 1 page\)",
    ),
    Case(
        "count-changes-between-pages",
        two_pages(lambda i: i[:2], lambda i: i[2:], second_count=lambda n: n + 1),
        Incomplete,
        r"changed while it was read \(count (\d+), then (?!\1)\d+\)",
    ),
    Case(
        "count-beyond-the-bound",
        envelope(_set(count=5_000_000, next="?page=2")),
        Incomplete,
        rf"count says 5000000 backups, more than the {ITEM_LIMIT} rotator reads",
    ),
    # duplicates
    Case(
        "duplicate-ids-across-pages",
        two_pages(lambda i: i[:2], lambda i: i[1:-1]),
        Incomplete,
        # its pages stop early: that is found first (a repeat across pages is found once all are read)
        r"the listing changed while it was read \(page 2 of \d+ is the last\)",
    ),
    Case(
        "duplicate-ids-in-page",
        envelope(_repeat_first),
        Incomplete,
        r"backup \d+ is listed twice .repeated on page 1",
    ),
    # next links off the origin (the token goes nowhere else)
    Case(
        "next-other-host",
        one_a_page(lambda api, seen: moved(api, seen, host="evil.test")),
        Invalid,
        r"next link points to another origin \(\w+://evil\.test\)",
    ),
    Case(
        "next-localhost-alias",
        one_a_page(lambda api, seen: moved(api, seen, host="localhost")),
        Invalid,
        r"another origin \(\w+://localhost\)",
    ),
    Case("next-other-scheme", one_a_page(_other_scheme), Invalid, r"next link points to another origin"),
    Case(
        "next-other-port",
        one_a_page(lambda api, seen: moved(api, seen, port=1)),
        Invalid,
        r"next link points to another origin",
    ),
    Case(
        "next-javascript",
        one_a_page(lambda api, seen: "javascript:alert(1)"),
        Invalid,
        r"another origin \(javascript://\)",
    ),
    Case("next-not-a-url", one_a_page(lambda api, seen: "http://[::1"), Invalid, r"next link is not a URL"),
    # next links without an end
    Case("next-self-loop", one_a_page(lambda api, seen: seen.url), Invalid, r"next links go round in a loop"),
    Case(
        "next-two-page-cycle", one_a_page(_back_to_the_first_page), Invalid, r"next links go round in a loop"
    ),
    Case(
        "next-endless-empty-pages",
        endless(fresh_items=False),
        Incomplete,
        r"is empty while its count says \d+ more",
    ),
    Case(
        "next-endless-new-items",
        endless(fresh_items=True),
        Incomplete,
        # read ahead (page-number links), the last page by the count is found to link on
        r"count says \d+, the pages hold more|page (\d+) of \1 links to \S+page=\d+",
    ),
    # too big to read: refused at the bound, never read to the end
    Case("huge-body", streamed(b'{"count": 0, "results": []', spaces(200 * MIB), b"}"), Invalid, TOO_BIG),
    Case(
        "huge-page-of-items",
        streamed(b'{"count": 3000000, "results": [', millions_of_items(), b"]}"),
        Invalid,
        TOO_BIG,
    ),
    Case(
        "huge-declared-length",
        raw(b"{}", **{"content-length": str(10 * 1024**3)}),
        Invalid,
        r"body is 10737418240 bytes",
    ),
    Case(
        "gzip-bomb",
        lambda api, seen: Answer(200, gzip_bomb(), headers={"content-encoding": "gzip"}),
        Invalid,
        TOO_BIG,
    ),
    Case(
        "gzip-garbage",
        raw(b"this is not gzip", **{"content-encoding": "gzip"}),
        Invalid,
        r"body cannot be decoded \(content encoding gzip\)",
    ),
]


def _created_body(change: Callable[[dict[str, Any]], Any], status: int = 201) -> Corruption:
    """The API creates the backup, then answers with its body changed."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        body = api.create(seen)
        change(body)
        return json_answer(body, status)

    return corrupt


def _created_raw(body: bytes, content_type: str = "application/json") -> Corruption:
    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        api.create(seen)
        return Answer(201, body, content_type)

    return corrupt


CREATED = r"; a backup may have been started"
CREATE_CASES = [
    Case(
        "create-without-id",
        _created_body(_drop("id")),
        Invalid,
        rf"the create's answer is not in the documented shape: id: Field required{CREATED}",
    ),
    Case(
        "create-id-negative",
        _created_body(_set(id=-502)),
        Invalid,
        rf"id: Input should be greater than or equal to 1{CREATED}",
    ),
    Case(
        "create-id-zero",
        _created_body(_set(id=0)),
        Invalid,
        rf"id: Input should be greater than or equal to 1{CREATED}",
    ),
    Case(
        "create-id-as-string",
        _created_body(_set(id="502")),
        Invalid,
        rf"id: Input should be a valid integer{CREATED}",
    ),
    Case(
        "create-without-status", _created_body(_drop("status")), Invalid, rf"status: Field required{CREATED}"
    ),
    Case(
        "create-created-at-naive",
        _created_body(_set(created_at="2025-01-16T03:00:31")),
        Invalid,
        rf"created_at: Input should have timezone info{CREATED}",
    ),
    Case(
        "create-html",
        _created_raw(b"<html>Created!</html>", "text/html"),
        Invalid,
        rf"the create's answer is not JSON \(text/html.*{CREATED}",
    ),
    Case(
        "create-empty-body", _created_raw(b""), Invalid, rf"the create's answer has an empty body .*{CREATED}"
    ),
    Case(
        "create-json-array", _created_raw(b"[]"), Invalid, rf"an array where a JSON object belongs{CREATED}"
    ),
    Case(
        "create-other-server",
        _created_body(lambda b: b["server"].update(id=99)),
        Invalid,
        r"the create's answer is a backup of server 99, not of server \d",
    ),
]


def _deleted_then(body: bytes, content_type: str | None = "text/html", status: int = 200) -> Corruption:
    """The API deletes the backup, then answers garbage."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        api.delete(seen)
        return Answer(status, body, content_type)

    return corrupt


UNKNOWN = r"whether backup \d+ was deleted is unknown"
DELETE_CASES = [
    Case(
        "delete-200-html",
        _deleted_then(b"<html><h1>It works!</h1></html>"),
        Invalid,
        rf"the delete's answer is not JSON \(text/html\): {UNKNOWN}",
    ),
    Case(
        "delete-200-binary",
        _deleted_then(b"\x00\x9f\xffGIF89a", "application/octet-stream"),
        Invalid,
        rf"not JSON \(application/octet-stream\): {UNKNOWN}",
    ),
    Case(
        "delete-200-invalid-json",
        _deleted_then(b'{"detail": ', "application/json"),
        Invalid,
        rf"not JSON \(application/json\): {UNKNOWN}",
    ),
    Case(
        "delete-200-json-array",
        _deleted_then(b"[1, 2]", "application/json"),
        Invalid,
        rf"is an array, not a JSON object: {UNKNOWN}",
    ),
    Case(
        "delete-200-json-string",
        _deleted_then(b'"gone"', "application/json"),
        Invalid,
        rf"is a string, not a JSON object: {UNKNOWN}",
    ),
    Case(
        "delete-202-garbage",
        _deleted_then(b"queued?", "text/plain", status=202),
        Invalid,
        rf"\(202\): the delete's answer is not JSON \(text/plain\): {UNKNOWN}",
    ),
]


def params(cases: list[Case], *names: str) -> list[Any]:
    """The cases as pytest params, each its own test id (only ``names``, when given)."""
    chosen = [c for c in cases if not names or c.name in names]
    assert not names or len(chosen) == len(names), "a case name is misspelt"
    return [pytest.param(c, id=c.name) for c in chosen]


def assert_one_clear_line(exc: BaseException, case: Case) -> None:
    """The exception is the case's type; its message one line naming the problem, without the token."""
    assert isinstance(exc, case.error), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert re.search(case.match, text), text
    assert "\n" not in text
    assert len(text) < 400, text
    assert TOKEN not in text + repr(exc)


# -- the client --------------------------------------------------------------------------


@pytest.fixture(name="api")
def fixture_api() -> FakeApi:
    """The fake API in process, on https://api.test."""
    return FakeApi()


@pytest.fixture(name="clock")
def fixture_clock() -> FakeTime:
    """Time that moves only when rotator sleeps, starting 30 s after the slot."""
    return FakeTime(NOW)


@pytest.fixture(name="client")
async def fixture_client(api: FakeApi, clock: FakeTime) -> AsyncIterator[BackupsClient]:
    """A client of the fake API on the fake clock, with retries but no retry waits."""
    settings = ClientSettings(
        base_url=f"{api.origin}{PREFIX}",
        requests_per_second=1000,
        burst=1000,
        retry_attempts=3,
        retry_wait_initial=0,
        retry_wait_max=0,
        retry_wait_jitter=0,
    )
    async with BackupsClient(
        ApiToken(TOKEN, "test"),
        settings,
        transport=memory_transport(api),
        wall_clock=clock.now,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    ) as client:
        yield client


@pytest.mark.parametrize("case", params(LISTING_CASES))
async def test_client_refuses_a_malformed_listing(client: BackupsClient, api: FakeApi, case: Case) -> None:
    """Each malformed listing: its error, one line naming the problem; only the API's origin asked."""
    api.on_list = case.answer
    with pytest.raises(errors.InvalidResponse) as caught:
        await client.list_backups(backup_type="manual")
    assert_one_clear_line(caught.value, case)
    assert api.deletes == []
    assert all(seen.url.startswith(f"{api.origin}/") for seen in api.requests)
    assert len(api.requests) <= 2 * OWNED_PER_SERVER + 1  # refused early, never followed on and on
    assert api.streamed <= BODY_LIMIT + MIB  # a body too big is not read to its end


async def test_a_count_beyond_the_bound_sends_a_budgeted_listing_to_per_server_reads(
    client: BackupsClient, api: FakeApi
) -> None:
    """list_backups_within does not raise on a huge count: it answers TooManyPages after one page."""
    api.on_list = envelope(_set(count=5_000_000, next="?page=2"))
    answer = await client.list_backups_within(1_000_000, backup_type="manual")
    assert not hasattr(answer, "backups")
    assert answer.count == 5_000_000
    assert len(api.requests) == 1


@pytest.mark.parametrize("case", params(CREATE_CASES))
async def test_client_refuses_a_malformed_create_answer(
    client: BackupsClient, api: FakeApi, case: Case
) -> None:
    """A 201 that cannot be trusted is refused, not retried (a second create could double it)."""
    api.on_create = case.answer
    with pytest.raises(errors.InvalidResponse) as caught:
        await client.create_backup(1, "nightly 2025-01-16")
    assert_one_clear_line(caught.value, case)
    assert len(api.sent("POST")) == 1
    assert api.deletes == []


@pytest.mark.parametrize("case", params(DELETE_CASES))
async def test_client_refuses_a_garbage_delete_answer(
    client: BackupsClient, api: FakeApi, case: Case
) -> None:
    """A 2xx DELETE with a body that is not JSON (or not an object): the outcome is unknown, not retried."""
    api.on_delete = case.answer
    with pytest.raises(errors.InvalidResponse) as caught:
        await client.delete_backup(101)
    assert_one_clear_line(caught.value, case)
    assert len(api.deletes) == 1


@pytest.mark.parametrize(
    "answer",
    [
        Answer(204, b"", None),
        Answer(200, b"", None),
        Answer(200, b'{"detail": "Deleted."}'),
        Answer(202, b"{}"),
    ],
    ids=["204", "200-empty", "200-json-object", "202-json-object"],
)
async def test_client_accepts_a_delete_answered_empty_or_with_an_object(
    client: BackupsClient, api: FakeApi, answer: Answer
) -> None:
    """Only garbage is refused: an empty 2xx or a JSON object is a delete done."""
    api.on_delete = lambda api, seen: (api.delete(seen), answer)[1]
    assert (await client.delete_backup(101)).value == "deleted"


async def test_client_keeps_an_unknown_status_and_never_calls_it_completed(
    client: BackupsClient, api: FakeApi
) -> None:
    """An unknown status is not an error: it is kept as it came, and not usable."""
    api.backups[0]["status"] = "verifying"
    listing = await client.list_backups(backup_type="manual")
    (odd,) = [b for b in listing.backups if b.id == api.backups[0]["id"]]
    assert odd.status == "verifying"
    assert not odd.is_completed


async def test_an_error_answer_too_big_is_cut_not_refused(client: BackupsClient, api: FakeApi) -> None:
    """A 404 with a body beyond the bound is still a 404 (its message cut), read no further than the bound."""
    api.on_delete = lambda api, seen: Answer(404, lambda: api.stream(spaces(100 * MIB)()), "text/plain")
    with pytest.raises(errors.NotFound):
        await client.delete_backup(101)
    assert api.streamed <= BODY_LIMIT + MIB


async def test_an_api_error_message_is_one_printable_line(client: BackupsClient, api: FakeApi) -> None:
    """The API's own error text is shown, but flattened: no line breaks, no terminal escapes, short."""
    detail = "Nope.\n\x1b[31mTraceback (most recent call last):\x1b[0m\r\n" + "x" * 5000
    api.on_delete = lambda api, seen: json_answer({"detail": detail}, 400)
    with pytest.raises(errors.BadRequest) as caught:
        await client.delete_backup(101)
    text = str(caught.value)
    assert text.startswith("DELETE /api/v1/backups/101/ (400): Nope. ?[31mTraceback")
    assert text.isprintable()
    assert len(text) < 400


class _Trickle(httpx.AsyncByteStream):
    """A 200 whose body never ends: a byte now and then, each well within any read timeout."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"count": 0, "results": []'
        while True:
            self.api.streamed += 1
            yield b" "
            await asyncio.sleep(0.005)


async def test_a_trickling_answer_is_cut_off_by_the_answer_timeout(api: FakeApi, clock: FakeTime) -> None:
    """Each read gets a byte in time, so only the whole-answer deadline ends it: a TransportError."""
    settings = ClientSettings(
        base_url=f"{api.origin}{PREFIX}",
        connect_timeout=0.05,
        read_timeout=0.1,
        answer_timeout=0.2,
        retry_attempts=1,
    )

    def handler(request: httpx.Request) -> httpx.Response:
        api.requests.append(Seen(request.method, str(request.url), request.url.path, {}, b"", None))
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=_Trickle(api))

    async with BackupsClient(
        ApiToken(TOKEN, "test"), settings, transport=httpx.MockTransport(handler), wall_clock=clock.now
    ) as client:
        async with asyncio.timeout(10):  # a hang fails here instead of stalling the suite
            with pytest.raises(errors.TransportError) as caught:
                await client.list_backups()
    assert str(caught.value) == "GET /api/v1/backups/: the answer did not arrive in full within 0.2s"
    assert api.streamed > 0
    assert api.deletes == []


# -- a daemon run (rotator.runner.Runner) ---------------------------------------------------


JOB = JobSpec(
    Policy("nightly", Retention(keep_last=KEEP_LAST), servers=SERVERS),
    description="nightly {date}",
    wait_timeout=timedelta(seconds=60),
)


@pytest.fixture(name="runner")
def fixture_runner(client: BackupsClient, clock: FakeTime) -> Runner:
    """A Runner on the fake clock, polling every 30 s."""
    return Runner(
        client,
        wall_clock=clock.now,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        poll_initial=30,
        poll_max=30,
    )


async def test_a_run_on_well_formed_answers_deletes(runner: Runner, api: FakeApi) -> None:
    """The baseline: the same fake API, unharmed, makes a run create, wait and delete (so the
    cases below, which send no DELETE, would have sent some)."""
    report = await runner.run(JOB, SLOT)
    assert report.ok, report.summary_line()
    assert len(api.sent("POST")) == len(SERVERS)
    assert len(api.deletes) == len(SERVERS) * (OWNED_PER_SERVER + 1 - KEEP_LAST)


def assert_every_server_failed(report: Any, pattern: str) -> None:
    assert not report.ok
    line = report.summary_line()
    assert "\n" not in line
    assert TOKEN not in line
    for result in report.servers:
        assert result.outcome is Outcome.FAILED, line
        assert result.deleted == []
        assert re.search(pattern, result.error or ""), result.error


@pytest.mark.parametrize("case", params(LISTING_CASES))
async def test_a_run_refuses_a_malformed_first_listing(runner: Runner, api: FakeApi, case: Case) -> None:
    """The run's first listing is malformed: nothing is created, nothing deleted, each server names why."""
    api.on_list = case.answer
    report = await runner.run(JOB, SLOT)
    assert_every_server_failed(report, "listing failed, nothing done: .*" + case.match)
    assert api.sent("POST") == []
    assert api.deletes == []


@pytest.mark.parametrize("case", params(LISTING_CASES))
async def test_a_run_refuses_a_malformed_listing_after_its_create(
    runner: Runner, api: FakeApi, case: Case
) -> None:
    """The listings after the creates (the ones a prune would act on) are malformed: every poll
    fails with the case's error, the wait runs out, and nothing is deleted."""
    api.on_list = case.answer
    api.list_after_create = True
    with capture_logs() as logs:
        report = await runner.run(JOB, SLOT)
    assert_every_server_failed(report, "still in progress after the wait_timeout")
    assert len(api.sent("POST")) == len(SERVERS)
    assert api.deletes == []
    polls = [event for event in logs if event["event"] == "backup.poll_failed"]
    assert polls
    assert all(re.search(case.match, event["error"]) for event in polls), polls[0]["error"]


@pytest.mark.parametrize("case", params(CREATE_CASES))
async def test_a_run_refuses_a_malformed_create_answer(runner: Runner, api: FakeApi, case: Case) -> None:
    """A create answered with something untrustworthy: that server fails, nothing is deleted."""
    api.on_create = case.answer
    report = await runner.run(JOB, SLOT)
    assert_every_server_failed(report, "create failed: .*" + case.match)
    assert len(api.sent("POST")) == len(SERVERS)
    assert api.deletes == []


@pytest.mark.parametrize("case", params(DELETE_CASES))
async def test_a_run_stops_deleting_after_a_garbage_delete_answer(
    runner: Runner, api: FakeApi, case: Case
) -> None:
    """The first DELETE is answered with garbage: the server fails, and no further DELETE is sent."""
    api.on_delete = case.answer
    report = await runner.run(JOB, SLOT, servers=[1])
    assert_every_server_failed(report, r"delete of backup \d+ failed: .*" + case.match)
    assert len(api.deletes) == 1


async def test_a_run_never_deletes_a_backup_of_unknown_status(runner: Runner, api: FakeApi) -> None:
    """Old owned backups of an unknown status are kept (and not counted); the completed surplus goes."""
    odd = [b for b in api.backups if b["server"]["id"] == 1 and b["backup_type"] == "manual"][:3]
    for backup in odd:
        backup["status"] = "verifying"
    report = await runner.run(JOB, SLOT, servers=[1])
    assert report.ok, report.summary_line()
    deleted = {int(seen.path.split("/")[-2]) for seen in api.deletes}
    assert deleted
    assert not deleted & {b["id"] for b in odd}


def _new_backups_show(status: str) -> Corruption:
    """Listings in which the backups created during the test carry ``status``."""

    def corrupt(api: FakeApi, seen: Seen) -> Answer:
        body = api.page_body(seen)
        for backup in body["results"]:
            if backup["id"] >= FIRST_NEW_ID:
                backup["status"] = status
        return json_answer(body)

    return corrupt


@pytest.mark.parametrize("where", ["create", "poll"])
async def test_a_run_treats_an_unknown_status_of_its_backup_as_not_completed(
    runner: Runner, api: FakeApi, where: str
) -> None:
    """The new backup turns "verifying" in the listing: never taken as done; retried; nothing is pruned.

    (A create *answer* saying "verifying" decides nothing: the backup is waited for in the listings,
    and pruned on only once a listing shows it completed.)"""
    if where == "create":
        api.on_create = _created_body(_set(status="verifying"))
    api.on_list = _new_backups_show("verifying")
    api.list_after_create = True
    report = await runner.run(JOB, SLOT)
    assert_every_server_failed(report, r"all 3 attempts of the slot failed; nothing pruned")
    assert api.deletes == []
    assert len(api.sent("POST")) == 3 * len(SERVERS)


# -- the rotator process, against the fake API on loopback ----------------------------------


def rotator_process(
    tmp_path: Path, *argv: str, api_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m rotator ARGV`` with a clean environment and the fake API's token."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ROTATOR_API_TOKEN": TOKEN}
    if api_url is not None:
        env["ROTATOR_API_URL"] = api_url
    return subprocess.run(
        [sys.executable, "-m", "rotator", *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, api: FakeApi) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(
        f"""\
policies:
  - name: nightly
    servers: [{", ".join(map(str, SERVERS))}]
    retention: {{keep_last: {KEEP_LAST}}}
    description: "nightly {{date}}"
    wait_timeout: 20s
api:
  url: {api.origin}{PREFIX}
  requests_per_second: 1000
  burst: 1000
log:
  format: json
  level: error
daemon:
  poll_interval: 0.05s
  poll_max_interval: 0.1s
""",
        encoding="utf-8",
    )
    return path


def run_once(tmp_path: Path, api: FakeApi, *extra: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path, api)
    return rotator_process(tmp_path, "run-once", "--config", str(config), "--now", NOW.isoformat(), *extra)


def assert_clean_failure(done: subprocess.CompletedProcess[str]) -> None:
    """Exit 1 (an API failure), no traceback, no token."""
    output = done.stdout + done.stderr
    assert done.returncode == errors.EXIT_FAILURE, output
    assert "Traceback" not in output
    assert TOKEN not in output


def test_run_once_on_well_formed_answers_deletes(served: FakeApi, tmp_path: Path) -> None:
    """The baseline for the process cases: the unharmed fake API, a run that deletes."""
    done = run_once(tmp_path, served)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(served.deletes) == len(SERVERS) * (OWNED_PER_SERVER + 1 - KEEP_LAST)


PROCESS_LISTING_CASES = (
    "invalid-json",
    "html-200",
    "empty-body",
    "count-too-high",
    "next-other-host",
    "next-self-loop",
    "huge-body",
)


@pytest.mark.parametrize("case", params(LISTING_CASES, *PROCESS_LISTING_CASES))
def test_backups_list_process_refuses_a_malformed_listing(
    served: FakeApi, tmp_path: Path, case: Case
) -> None:
    """``rotator backups list``: one line on stderr naming the problem, exit 1, nothing deleted."""
    served.on_list = case.answer
    done = rotator_process(tmp_path, "backups", "list", api_url=f"{served.origin}{PREFIX}")
    assert_clean_failure(done)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("rotator: ")
    assert re.search(case.match, line), line
    assert done.stdout == ""
    assert served.deletes == []


@pytest.mark.parametrize(
    "case",
    params(LISTING_CASES, "json-array", "next-two-page-cycle")
    + params(CREATE_CASES, "create-without-id")
    + params(DELETE_CASES, "delete-200-html"),
)
def test_run_once_process_refuses_malformed_answers(served: FakeApi, tmp_path: Path, case: Case) -> None:
    """``rotator run-once``: exit 1, the summary names the problem, stderr holds one-line JSON
    events (no traceback), and no DELETE is sent (after a garbage DELETE answer, no other one)."""
    if case in DELETE_CASES:
        served.on_delete = case.answer
    elif case in CREATE_CASES:
        served.on_create = case.answer
    else:
        served.on_list = case.answer
    done = run_once(tmp_path, served)
    assert_clean_failure(done)
    (summary,) = done.stdout.strip().splitlines()
    assert summary.startswith("policy nightly FAILED")
    assert re.search(case.match, summary), summary
    for line in done.stderr.strip().splitlines():
        assert isinstance(json.loads(line), dict), line
    assert re.search(case.match, done.stderr), done.stderr
    if case in DELETE_CASES:
        assert len(served.deletes) == len(SERVERS)  # each server's first, and then none
    else:
        assert served.deletes == []


@pytest.mark.parametrize("created_at", ["0001-01-02T00:00:00Z", "9999-12-30T23:59:59Z"])
@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_the_outermost_accepted_times_are_planned_in_far_zones(created_at: str, zone: str) -> None:
    """The first and last times the API may give (the days beyond are refused) have a local time and
    calendar buckets in every zone: a plan with every rule places them, keeps them, raises nothing."""
    slot = datetime(2025, 1, 1, tzinfo=UTC)
    backup = Backup.from_api(
        {
            "id": 5,
            "server": {"id": 1, "name": "db-1"},
            "backup_type": "manual",
            "status": "completed",
            "created_at": created_at,
            "description": f"nightly {make_marker('p', slot)}",
        }
    )
    every_rule = Retention(keep_hourly=2, keep_daily=2, keep_weekly=2, keep_monthly=2, keep_yearly=2)
    plan = plan_server([backup], Policy("p", every_rule, servers=(1,), timezone=zone), slot)
    assert [decision.backup.id for decision in plan.keep] == [5]
    assert plan.delete == ()
