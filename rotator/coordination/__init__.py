"""Who may act when several instances run one configuration: nobody else (``none``), or a lease on etcd.

Every backend has the same small interface, :class:`Coordinator` (after
Patroni's ``AbstractDCS``): :meth:`~Coordinator.acquire` the leadership,
ask :meth:`~Coordinator.is_leader`, :meth:`~Coordinator.claim` a slot's
attempt before its create, :meth:`~Coordinator.fence` before a batch of
deletes, :meth:`~Coordinator.release` at the end; :meth:`~Coordinator.campaign`
keeps a daemon's leadership (or waits to take it over) and reports each
change. The runner sees only :class:`Fence`, which turns the first two checks
into the hooks it calls before it acts.

``none`` (:class:`NoCoordination`) is today's single instance: always the
leader, every claim and fence granted without a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from rotator import errors


class Role(StrEnum):
    """What an instance is, as /readyz and the log say it."""

    LEADER = "leader"
    STANDBY = "standby"
    UNREACHABLE = "standby (etcd unreachable)"
    SINGLE = "single"  # no coordination: the only instance


OnChange = Callable[[Role], None]


class Coordinator(Protocol):
    """A coordination backend (see the module's docstring)."""

    name: str

    @property
    def role(self) -> Role: ...

    @property
    def term(self) -> int | None:
        """The leadership held now (distinct for every time it is won), or None."""

    async def start(self) -> None:
        """Reach the backend and check this configuration may use it; CoordinationError otherwise."""

    async def acquire(self) -> bool:
        """One attempt to become (or stay) the leader; True when this instance leads."""

    def is_leader(self) -> bool:
        """Whether this instance may act now, by what it last confirmed (no round trip)."""

    async def claim(self, policy: str, server_id: int, slot: datetime, attempt: int) -> None:
        """Claim the attempt's create, fenced by the leadership; NotLeader or ClaimTaken otherwise."""

    async def fence(self) -> None:
        """Confirm the leadership with the backend now; NotLeader otherwise."""

    async def release(self) -> None:
        """Give up the leadership (if held) so another instance takes over at once."""

    async def campaign(self, on_change: OnChange, *, reacquire: bool = True) -> None:
        """Hold the leadership or wait to take it over, until cancelled; ``on_change`` on every change."""

    async def aclose(self) -> None:
        """Release what the backend holds open (connections)."""


class NoCoordination:
    """``coordination.backend: none``: one instance, always the one that acts."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    @property
    def role(self) -> Role:
        return Role.SINGLE

    @property
    def term(self) -> int | None:
        return None

    async def start(self) -> None:
        return None

    async def acquire(self) -> bool:
        return True

    def is_leader(self) -> bool:
        return True

    async def claim(self, policy: str, server_id: int, slot: datetime, attempt: int) -> None:
        return None

    async def fence(self) -> None:
        return None

    async def release(self) -> None:
        return None

    async def campaign(self, on_change: OnChange, *, reacquire: bool = True) -> None:
        on_change(Role.SINGLE)
        await asyncio.Event().wait()  # nothing to keep: wait to be cancelled

    async def aclose(self) -> None:
        return None


_RUN_TERM: ContextVar[int | None] = ContextVar("rotator_run_term", default=None)


@contextlib.contextmanager
def pinned_term(coordinator: Coordinator) -> Iterator[None]:
    """Bind the runs started inside to the leadership held now (their tasks inherit the binding)."""
    token = _RUN_TERM.set(coordinator.term)
    try:
        yield
    finally:
        _RUN_TERM.reset(token)


class Fence:
    """The runner's guard (:class:`rotator.runner.ActGuard`) over a coordinator: a claim before each
    create, a fence before each batch of deletes, and the local check before each delete.

    A run acts only under the leadership it began under (:func:`pinned_term`): one lost and
    won again meanwhile is another, and another instance may have acted in between, on what
    this run's views do not show.
    """

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def _same_term(self) -> None:
        pinned = _RUN_TERM.get()
        if pinned is not None and self.coordinator.term != pinned:
            raise errors.NotLeader(
                f"{self.coordinator.name} lost the leadership this run began under: nothing more done"
            )

    async def before_create(self, policy: str, server_id: int, slot: datetime, attempt: int) -> None:
        self._same_term()
        await self.coordinator.claim(policy, server_id, slot, attempt)

    async def before_deletes(self, server_id: int, backup_ids: list[int]) -> None:
        self._same_term()
        await self.coordinator.fence()

    def may_act(self) -> bool:
        pinned = _RUN_TERM.get()
        return self.coordinator.is_leader() and (pinned is None or self.coordinator.term == pinned)


def claim_path(policy: str, server_id: int, slot: datetime, attempt: int) -> str:
    """``claims/POLICY/SERVER/SLOT/ATTEMPT`` under the prefix; the slot in UTC to the second."""
    instant = slot.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"claims/{policy}/{server_id}/{instant}/{attempt}"
