"""The sandbox clock: real time plus an offset by default, or frozen and moved by hand."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def _real_now() -> datetime:
    return datetime.now(UTC)


def format_instant(instant: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, whole seconds, as the provider writes times."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant with a ``Z`` or an offset; raise ``ValueError`` on a naive one."""
    instant = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if instant.utcoffset() is None:
        raise ValueError(f"not an instant with a time zone: {text!r} (add Z or +00:00)")
    return instant.astimezone(UTC)


class Clock:
    """A clock tests can set, freeze and advance.

    Unfrozen, ``now()`` is ``wall() + offset`` so a live demo moves on by itself;
    ``set`` and ``advance`` then shift the offset. Frozen, ``now()`` stays put
    until ``set`` or ``advance`` moves it. Safe to use from several threads.
    """

    def __init__(
        self,
        frozen_at: datetime | None = None,
        *,
        wall: Callable[[], datetime] = _real_now,
    ) -> None:
        if frozen_at is not None and frozen_at.utcoffset() is None:
            raise ValueError("frozen_at must be an aware datetime")
        self._wall = wall
        self._lock = threading.Lock()
        self._frozen_at = frozen_at.astimezone(UTC) if frozen_at is not None else None
        self._offset = timedelta(0)

    @property
    def frozen(self) -> bool:
        """Whether the clock stands still between explicit moves."""
        return self._frozen_at is not None

    def now(self) -> datetime:
        """The sandbox's current instant, aware, in UTC."""
        with self._lock:
            return self._now_locked()

    def _now_locked(self) -> datetime:
        if self._frozen_at is not None:
            return self._frozen_at
        return self._wall().astimezone(UTC) + self._offset

    def set(self, instant: datetime) -> datetime:
        """Jump to ``instant`` (frozen or not); return the new now."""
        if instant.utcoffset() is None:
            raise ValueError("instant must be an aware datetime")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = instant.astimezone(UTC)
            else:
                self._offset = instant - self._wall()
            return self._now_locked()

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a ``timedelta`` or seconds); return the new now."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += step
            else:
                self._offset += step
            return self._now_locked()

    def freeze(self, frozen: bool = True) -> datetime:
        """Stop the clock at its current instant, or (``False``) let it follow real time again."""
        with self._lock:
            current = self._now_locked()
            if frozen:
                self._frozen_at = current
            elif self._frozen_at is not None:
                self._offset = current - self._wall()
                self._frozen_at = None
            return current

    def to_json(self) -> dict[str, object]:
        """``{"now": iso, "frozen": bool}``."""
        with self._lock:
            return {"now": format_instant(self._now_locked()), "frozen": self.frozen}
