"""Ownership markers: how a policy recognises the backups it created.

Every backup a policy creates ends its description with a marker::

    Nightly backup [rotator:nightly@2025-01-16T03:00Z]
    Nightly backup [rotator:nightly@2025-01-16T03:00Z#2]
    Ad-hoc backup [rotator:nightly]

``POLICY`` is the policy's name (letters, digits, ``-``, ``_``, ``.``) and the
optional ``SLOT`` the scheduled time in UTC, to the minute. ``#N`` is the
attempt: a slot whose backup failed is tried again, and the N-th attempt (N >= 2)
says so, so that "at most one completed backup per slot" stays checkable; the
first attempt has no ``#`` (``#1`` is not rotator's spelling and no marker). A
backup is owned by a policy when its description *ends* with that policy's
marker; nothing else in the description matters.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

POLICY_NAME_PATTERN: Final = r"[A-Za-z0-9._-]+"
"""The grammar of a policy name (also what the configuration accepts)."""

MAX_ATTEMPT: Final = 999
"""The highest attempt a marker spells (three digits)."""
_ATTEMPT: Final = r"[2-9]|[1-9]\d{1,2}"
ASCII_ATTEMPT_PATTERN: Final = r"[2-9]|[1-9][0-9]{1,2}"
"""An attempt as rotator spells it, in ASCII digits (what the fast ownership tests take)."""

_POLICY_NAME = re.compile(POLICY_NAME_PATTERN)
_MARKER_AT_END = re.compile(
    r"\[rotator:(?P<policy>" + POLICY_NAME_PATTERN + r")"
    r"(?:@(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})T(?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2}))?Z"
    r"(?:#(?P<attempt>" + _ATTEMPT + r"))?)?"
    r"\]\Z"
)
MARKER_PREFIX: Final = "[rotator:"
# A slot that is a valid time whatever the month (day <= 28): matching it needs no datetime().
# ASCII digits only: ``\d`` takes any decimal digit, and four ARABIC-INDIC DIGIT ZEROs are the year 0 that
# parse_marker refuses, as it refuses 0000.
_PLAIN_SLOT: Final = (
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?Z"
)


@functools.cache
def owned_marker_pattern(policy: str) -> re.Pattern[str]:
    """A fast test for most descriptions that end with ``policy``'s marker.

    Every description it matches, :func:`parse_marker` reads as ``policy``'s
    marker; a miss proves nothing (e.g. a slot on the 29th): ask ``parse_marker``.
    """
    return re.compile(
        r"\[rotator:"
        + re.escape(policy)
        + r"(?:@"
        + _PLAIN_SLOT
        + r"(?:#(?:"
        + ASCII_ATTEMPT_PATTERN
        + r"))?)?\]\Z"
    )


@dataclass(frozen=True, slots=True)
class Marker:
    """A parsed marker: the policy that created the backup, its slot (UTC) if recorded, and the attempt."""

    policy: str
    slot: datetime | None = None
    attempt: int = 1

    def __str__(self) -> str:
        return make_marker(self.policy, self.slot, self.attempt)


def is_policy_name(name: str) -> bool:
    """Whether ``name`` may name a policy (and so appear in a marker)."""
    return _POLICY_NAME.fullmatch(name) is not None


def make_marker(policy: str, slot: datetime | None = None, attempt: int = 1) -> str:
    """``[rotator:POLICY]``, ``[rotator:POLICY@YYYY-MM-DDTHH:MMZ]`` or ``[...@...Z#N]`` (attempt N >= 2).

    ``slot`` must be aware; it is written in UTC to the minute, or to the second
    when it has seconds (an interval schedule of less than a minute); fractions
    of a second are dropped. Only a slot has attempts.
    """
    if not is_policy_name(policy):
        raise ValueError(f"not a policy name: {policy!r} (letters, digits, '-', '_', '.')")
    if isinstance(attempt, bool) or not 1 <= attempt <= MAX_ATTEMPT:
        raise ValueError(f"an attempt is a whole number from 1 to {MAX_ATTEMPT}, not {attempt!r}")
    if slot is None:
        if attempt != 1:
            raise ValueError("only a slot's marker has attempts")
        return f"[rotator:{policy}]"
    if slot.tzinfo is None or slot.utcoffset() is None:
        raise ValueError(f"slot must be an aware datetime, got {slot!r}")
    utc = slot.astimezone(UTC)
    seconds = f":{utc.second:02d}" if utc.second else ""  # only sub-minute interval slots have seconds
    suffix = f"#{attempt}" if attempt > 1 else ""
    return (
        f"[rotator:{policy}@{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}{seconds}Z{suffix}]"
    )


def parse_marker(description: str | None) -> Marker | None:
    """The marker that ends ``description``, or ``None`` when it does not end with a valid one."""
    if not description:
        return None
    match = _MARKER_AT_END.search(description)
    if match is None:
        return None
    policy, year, month, day, hour, minute, second, attempt = match.groups()
    if year is None:
        return Marker(policy)
    try:  # datetime() rather than strptime(): ownership is checked for every backup listed
        slot = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=UTC)
    except ValueError:  # e.g. month 13: not a marker any policy wrote
        return None
    return Marker(policy, slot, int(attempt) if attempt else 1)


def mentions_marker(description: str | None) -> bool:
    """Whether ``description`` contains anything that looks like a rotator marker (any case, valid or not).

    A policy with ``prune_unmanaged`` must not mistake such a backup for an
    unmanaged one: it was written by rotator (or meant to look so), just not by it.
    """
    return bool(description) and MARKER_PREFIX in (description or "").casefold()


def mark_description(description: str, policy: str, slot: datetime | None = None, attempt: int = 1) -> str:
    """``description`` with the policy's marker appended (separated by a space when not empty)."""
    marker = make_marker(policy, slot, attempt)
    return f"{description} {marker}" if description else marker
