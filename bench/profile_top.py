"""The top functions of a py-spy profile (``py-spy record --format raw``: collapsed stacks).

Run: ``python bench/profile_top.py PROFILE.txt [--top 25]``. Prints each function's share of the
samples by itself (self) and with what it called (total), and the share of a few groups of modules
(httpx/httpcore, anyio, pydantic, structlog/logging, stamina/tenacity, rotator's planner, ...).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

GROUPS = {
    "httpx/httpcore/h11": ("httpx/", "httpcore/", "h11/"),
    "anyio/sniffio": ("anyio/", "sniffio/"),
    "asyncio": ("asyncio/",),
    "pydantic": ("pydantic/", "pydantic_core/"),
    "logging (structlog, logging)": ("structlog/", "logging/"),
    "stamina/tenacity": ("stamina/", "tenacity/"),
    "rotator planner/retention": ("rotator/retention.py", "rotator/planner.py", "rotator/slots.py"),
    "rotator other": ("rotator/",),
}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def name(frame: str) -> tuple[str, str]:
    """``(function, file)`` with the site-packages prefix cut."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    file = match["file"]
    for cut in ("site-packages/", "lib/python3.11/"):
        if cut in file:
            file = file.split(cut, 1)[1]
    return match["func"], file


def group_of(file: str) -> str:
    for group, prefixes in GROUPS.items():
        if any(file.startswith(p) or f"/{p}" in file for p in prefixes):
            return group
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    stacks = parse(args.profile)
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for frames, count in stacks:
        names = [name(frame) for frame in frames]
        func, file = names[-1]
        own[f"{func} ({file})"] += count
        groups[group_of(file)] += count
        for label in {f"{f} ({fl})" for f, fl in names}:
            inclusive[label] += count
    print(f"{total} samples")
    print("groups (self time of the functions in them):")
    for group, count in groups.most_common():
        print(f"  {100 * count / total:5.1f} %  {group}")
    print(f"top {args.top} by self time:")
    for label, count in own.most_common(args.top):
        print(f"  {100 * count / total:5.1f} %  {label}")
    print(f"top {args.top} by total time (with callees):")
    for label, count in inclusive.most_common(args.top):
        print(f"  {100 * count / total:5.1f} %  {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
