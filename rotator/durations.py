"""Durations as people write them: ``30s``, ``10m``, ``6h``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"10m"``, ``"1h30m"``, ``"7d"``; raise ``ValueError`` naming the text otherwise."""
    cleaned = text.strip().lower()
    pos = 0
    seconds = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(f"not a duration: {text!r} (write e.g. 30s, 10m, 6h, 7d)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of ``value`` in the units above (``timedelta(hours=36)`` -> ``36h``)."""
    total = int(value.total_seconds())
    if total <= 0 or total != value.total_seconds():
        return f"{value.total_seconds():g}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"
