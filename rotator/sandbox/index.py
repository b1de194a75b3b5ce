"""A sorted set of backup ids that answers "the ids at positions start..stop" without a scan.

The sandbox lists backups by id in DRF pages; a page of an account listing of 300,000 backups must not
cost a sort or a filter of all of them. :class:`SortedIds` keeps the ids in sorted chunks of at most
:data:`CHUNK` ids: adding or removing one costs a bisection and a short list edit, and the ids at a
page's positions cost a walk over the chunks' lengths (a few hundred for a million ids) plus the page.
New backups get ever larger ids, so most additions land at the end of the last chunk.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator

CHUNK = 512
"""Most ids a chunk holds before it is split in two."""


class SortedIds:
    """Distinct ints in ascending order, with positional slices."""

    __slots__ = ("_chunks", "_lasts", "_size")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        ordered = sorted(set(ids))
        self._chunks: list[list[int]] = [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)]
        self._lasts: list[int] = [chunk[-1] for chunk in self._chunks]
        self._size = len(ordered)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[int]:
        for chunk in self._chunks:
            yield from chunk

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int) or not self._chunks:
            return False
        at = bisect_left(self._lasts, value)
        if at == len(self._chunks):
            return False
        chunk = self._chunks[at]
        spot = bisect_left(chunk, value)
        return spot < len(chunk) and chunk[spot] == value

    def add(self, value: int) -> None:
        """Put ``value`` in its place (no-op if it is there)."""
        if not self._chunks:
            self._chunks.append([value])
            self._lasts.append(value)
            self._size = 1
            return
        at = bisect_left(self._lasts, value)
        if at == len(self._chunks):  # beyond every id so far: the usual case for a new backup
            at -= 1
            chunk = self._chunks[at]
            chunk.append(value)
            self._lasts[at] = value
        else:
            chunk = self._chunks[at]
            spot = bisect_left(chunk, value)
            if spot < len(chunk) and chunk[spot] == value:
                return
            insort(chunk, value)
        self._size += 1
        if len(chunk) > CHUNK:
            half = len(chunk) // 2
            self._chunks[at : at + 1] = [chunk[:half], chunk[half:]]
            self._lasts[at : at + 1] = [chunk[half - 1], chunk[-1]]

    def discard(self, value: int) -> None:
        """Take ``value`` out (no-op if it is not there)."""
        at = bisect_left(self._lasts, value)
        if at == len(self._chunks):
            return
        chunk = self._chunks[at]
        spot = bisect_left(chunk, value)
        if spot == len(chunk) or chunk[spot] != value:
            return
        del chunk[spot]
        self._size -= 1
        if not chunk:
            del self._chunks[at]
            del self._lasts[at]
        elif spot == len(chunk):
            self._lasts[at] = chunk[-1]

    def window(self, start: int, stop: int) -> list[int]:
        """The ids at positions ``start`` to ``stop - 1`` (clipped to the set), in order."""
        start, stop = max(0, start), min(stop, self._size)
        found: list[int] = []
        if start >= stop:
            return found
        offset = 0
        for chunk in self._chunks:
            end = offset + len(chunk)
            if end > start:
                found.extend(chunk[max(0, start - offset) : stop - offset])
                if end >= stop:
                    break
            offset = end
        return found
