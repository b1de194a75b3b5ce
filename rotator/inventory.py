"""Views of servers' manual backups, read at the lowest page cost, each stamped with when and how it was read.

One listing of the account's manual backups serves every server at once;
per-server listings cost at least a page each. :meth:`Inventory.read` picks
whichever takes fewer pages, from the counts it has seen (probing the account
listing's first page when it knows nothing yet), and falls back to per-server
listings when the account listing is too long or changed while it was read.

Each :class:`View` says when the read that produced it began (the runner's
monotonic clock: a prune plan must rest on a view at most ``max_view_age``
old) and whether it is **confirmed**: DRF page-number pagination is not a
snapshot, so a listing read page by page while backups come and go can skip
one (a deletion on an earlier page moves a backup across the page boundary,
and a creation keeps ``count`` equal). A view read in a single page cannot
have skipped anything; a view read over several pages is confirmed only by a
second read, begun after the first ended, that lists the same backups for
that server (:meth:`Inventory.confirm`). "This slot has no backup yet, create
one" is decided only on a confirmed view (:func:`rotator.slots.decide`).
Deletions need no confirmation: a plan on a view missing backups deletes a
subset of what the complete view deletes (:mod:`rotator.retention`).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from rotator import errors
from rotator.api import BackupsClient
from rotator.models import MANUAL, Backup, Listing, ids_of

Source = Literal["account", "server"]
CONFIRM_READS: Final = 3
"""Reads of a server's listing that may disagree before its view is given up as unstable."""


@dataclass(frozen=True, slots=True)
class View:
    """One server's manual backups as one read saw them."""

    server_id: int
    backups: Sequence[Backup]  # held packed when read by the inventory (models.Backups)
    read_at: float  # monotonic seconds, when the read began
    source: Source
    pages: int  # of the read that produced it
    confirmed: bool  # cannot have skipped a backup: one page, or two reads that agree

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(ids_of(self.backups))

    def age(self, now: float) -> float:
        """Seconds since the read began, by the same monotonic clock."""
        return now - self.read_at


Views = tuple[dict[int, View], dict[int, errors.ApiError]]


@dataclass(frozen=True, slots=True)
class Seen:
    """What a confirming read compares with: the set of ids a server's unconfirmed view listed, packed
    (8 bytes a backup, where the view's rows take 48), so that a fleet's first listing is let go while
    the confirming one is read."""

    ids: bytes

    @classmethod
    def of(cls, view: View) -> Seen:
        return cls(_id_set(view.backups))


def _id_set(backups: Sequence[Backup]) -> bytes:
    """The backups' ids as a set, in a form that compares equal exactly when the sets are equal."""
    return array("q", sorted(set(ids_of(backups)))).tobytes()


class Inventory:
    """Reads views for sets of servers through one client; the clock is injected."""

    def __init__(
        self, client: BackupsClient, *, monotonic: Callable[[], float] = time.monotonic, workers: int = 0
    ) -> None:
        self._client = client
        self._monotonic = monotonic
        # per-server reads run this many at a time, so that each is stamped when it really starts
        self.workers = workers or 2 * client.budget.max_concurrency
        self.account_count: int | None = None  # manual backups in the account, last seen
        self.server_counts: dict[int, int] = {}  # manual backups per server, last seen
        self.reads = {"account": 0, "server": 0, "confirm": 0}  # for the benchmarks' cost figures

    async def read(self, server_ids: Iterable[int], *, fall_back: bool = True) -> Views:
        """A view of every listed server, and the servers whose listing could not be read whole.

        An account listing serves all of them when it takes fewer pages than
        their own listings; a failure of a server's own listing fails that server alone.
        An account listing that changed while it was read (another policy at
        work) is followed by the servers' own listings, unless ``fall_back`` is
        off (a poll, which simply tries again next round): then it is raised.
        """
        wanted = sorted(set(server_ids))
        if not wanted:
            return {}, {}
        pages_for = self._client.pages_for
        per_server = sum(pages_for(self.server_counts.get(sid, 0)) for sid in wanted)
        if len(wanted) > 1 and (self.account_count is None or pages_for(self.account_count) < per_server):
            started = self._monotonic()
            try:
                account = await self._client.list_backups_within(
                    per_server - 1, backup_type=MANUAL, grouped=True
                )
            except errors.IncompleteListing:
                if not fall_back:
                    raise
                account = None  # it changed while read (another policy at work): read server by server
            if isinstance(account, Listing):
                self.reads["account"] += 1
                self.account_count = account.count
                return self._grouped(wanted, account, started), {}
            if account is not None:
                self.account_count = account.count
        return await self._per_server(wanted)

    def _grouped(self, wanted: list[int], account: Listing, started: float) -> dict[int, View]:
        views: dict[int, View] = {}
        single = account.pages == 1
        for sid in wanted:
            mine = account.of_server(sid)
            self.server_counts[sid] = len(mine)
            views[sid] = View(sid, mine, started, "account", account.pages, single)
        return views

    async def _per_server(self, wanted: list[int]) -> Views:
        views: dict[int, View] = {}
        failed: dict[int, errors.ApiError] = {}
        queue = iter(wanted)

        async def worker() -> None:
            for sid in queue:
                started = self._monotonic()
                try:
                    listing = await self._client.list_backups(server_id=sid, backup_type=MANUAL, grouped=True)
                except errors.ApiError as exc:
                    failed[sid] = exc  # this server's own listing: the others are still good
                    continue
                self.reads["server"] += 1
                # a server filter the API ignored must not leak other servers' backups into a plan
                mine = listing.of_server(sid)
                self.server_counts[sid] = len(mine)
                views[sid] = View(sid, mine, started, "server", listing.pages, listing.pages == 1)

        await asyncio.gather(*(worker() for _ in range(max(1, min(self.workers, len(wanted))))))
        return views, failed

    async def confirm(self, views: Mapping[int, View | Seen]) -> Views:
        """Confirmed views of these servers: each unconfirmed one read again until two reads agree.

        An unconfirmed view may be given as its :class:`Seen` ids alone. A server whose reads keep
        disagreeing (:data:`CONFIRM_READS` in all) is returned as failed: its listing is too unstable
        to decide a create on.
        """
        done = {sid: view for sid, view in views.items() if isinstance(view, View) and view.confirmed}
        # what each server's last read listed, its ids alone: no rows held while the next read is read
        last = {
            sid: seen.ids if isinstance(seen, Seen) else _id_set(seen.backups)
            for sid, seen in views.items()
            if sid not in done
        }
        failed: dict[int, errors.ApiError] = {}
        for _ in range(CONFIRM_READS - 1):
            if not last:
                break
            self.reads["confirm"] += 1
            again, errs = await self.read(last)
            failed.update(errs)
            pending: dict[int, bytes] = {}
            for sid, view in again.items():
                ids = _id_set(view.backups)
                if view.confirmed or ids == last[sid]:
                    done[sid] = replace(view, confirmed=True)
                else:
                    pending[sid] = ids
            del again  # the views that disagreed: their ids are kept, not their rows
            last = pending
        for sid in last:
            failed[sid] = errors.IncompleteListing(
                f"server {sid}'s listing changed on each of {CONFIRM_READS} reads: "
                "not deciding a create on it",
                method="GET",
            )
        return done, failed

    async def poll(self, server_ids: Iterable[int]) -> Views:
        """:meth:`read` for a poll round: a changing account listing fails the round (the next one
        reads again) rather than costing every waiting server a listing of its own."""
        return await self.read(server_ids, fall_back=False)

    def note_created(self, server_id: int) -> None:
        """A create adds one backup to the listings: keep the page estimates honest."""
        self.server_counts[server_id] = self.server_counts.get(server_id, 0) + 1
        if self.account_count is not None:
            self.account_count += 1


class Rounds:
    """Views for whichever servers ask, read together: one read a round for all of them.

    ``read`` gets every asking server with the view it passed (or None) and
    answers like :meth:`Inventory.read` (:meth:`Inventory.confirm` takes the
    same shape). ``pause`` runs before each round (the poll interval, or
    nothing) and answers False to stop: every waiting server then gets
    :class:`Stopped`. Servers that ask while a round is read wait for the next.
    """

    def __init__(
        self,
        read: Callable[[dict[int, View | Seen]], Awaitable[Views]]
        | Callable[[dict[int, View | None]], Awaitable[Views]],
        pause: Callable[[], Awaitable[bool]],
    ) -> None:
        self._read: Callable[[dict[int, Any]], Awaitable[Views]] = read
        self._pause = pause
        self._waiting: dict[int, tuple[View | Seen | None, list[asyncio.Future[View]]]] = {}
        self._task: asyncio.Task[None] | None = None

    def view(self, server_id: int, seen: View | Seen | None = None) -> asyncio.Future[View]:
        """The server's view from the next round, to await; its own listing's error raised as
        :class:`ApiError`. A future, not a coroutine: a fleet's waiting servers hold no frame for it."""
        future: asyncio.Future[View] = asyncio.get_running_loop().create_future()
        _, futures = self._waiting.setdefault(server_id, (seen, []))
        futures.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._rounds())
        return future

    async def _rounds(self) -> None:
        while self._waiting:
            go_on = await self._pause()
            batch, self._waiting = self._waiting, {}
            if not go_on:
                _settle(batch, error=Stopped())
                continue
            try:
                views, failed = await self._read({sid: seen for sid, (seen, _) in sorted(batch.items())})
            except errors.ApiError as exc:
                _settle(batch, error=exc)
                continue
            except BaseException as exc:  # a bug or a cancellation: the waiters must not hang
                _settle(batch, error=Stopped() if isinstance(exc, asyncio.CancelledError) else exc)
                raise
            for sid, (_, futures) in batch.items():
                view = views.get(sid)
                error = failed.get(sid)
                for future in futures:
                    if future.done():
                        continue
                    if view is not None:
                        future.set_result(view)
                    else:
                        future.set_exception(
                            error or errors.IncompleteListing(f"server {sid} was not listed")
                        )

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Stopped(Exception):
    """A round did not happen: the run is being abandoned."""


def _settle(
    batch: dict[int, tuple[View | Seen | None, list[asyncio.Future[View]]]], *, error: BaseException
) -> None:
    for _, futures in batch.values():
        for future in futures:
            if not future.done():
                future.set_exception(error)
