"""Mutation testing with mutmut 3, and its results as a score table: ``make mutation``.

    python bench/mutation.py                                   # the pure core, its fast tests
    python bench/mutation.py --modules rotator/runner.py --tests tests/test_runner.py
    python bench/mutation.py --report-only                     # the table of the last run again
    python bench/mutation.py --keep                            # reuse mutants/ (only changed code reruns)

mutmut copies ``rotator/`` and ``tests/`` to ``mutants/``, mutates the modules named,
finds which tests reach each function and runs only those against each mutant, two at
a time (the machine has two cores). This script tells mutmut which modules and tests
(``[tool.mutmut]`` in pyproject.toml holds the rest), starts from a clean ``mutants/``
unless ``--keep``, then reads mutmut's verdicts and writes ``bench/MUTATION.md``: per
module killed / total, the survivors with their line and diff, and the mutants listed
below as equivalent (they cannot change behaviour), each with its reason.

Score = (killed + timed out) / (mutants - equivalent). A mutant no selected test reaches
counts as surviving: the tests named are the ones that must catch it.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
REPORT = ROOT / "bench" / "MUTATION.md"

CORE_MODULES = ("rotator/retention.py", "rotator/planner.py", "rotator/markers.py", "rotator/slots.py")
CORE_TESTS = (
    "tests/test_retention.py",
    "tests/test_retention_properties.py",
    "tests/test_retention_restic.py",
    "tests/test_planner.py",
    "tests/test_markers.py",
    "tests/test_slots.py",  # another engineer's; used when it exists
    "tests/test_slot_decision.py",
    "tests/test_slots_bounds.py",
)
TARGET = 0.95

# mutmut's exit codes (mutmut/stats.py), grouped as this report counts them
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
NO_TESTS = {5, 33}
SURVIVED = {0}

R, S, U = "rotator/retention.py", "rotator/slots.py", "rotator/runner.py"
_STEPS = (
    "the start is only where the bucket jump lands: `None` or a start inside the bucket makes "
    "`_calendar_keeps` step one backup at a time instead (same plan, slower)"
)
_IF_FOUND = (
    "if start <= newest and (best is None or start > best) and rule.floor(start.astimezone(zone)) == floor:"
)
_JUMP = "index = bisect_left(times, start, 0, index) - 1"
_NEXT_MONTH = (
    "return datetime(floor.year + floor.month // 12, floor.month % 12 + 1, 1)  # noqa: DTZ001 (wall clock)"
)
_NEXT_YEAR = "return datetime(floor.year + 1, 1, 1)  # noqa: DTZ001 (wall clock)"
_FOLLOWING = (
    "the next month's/year's start is looked for only to catch a clock that falls back from it into the "
    "middle of this bucket; no zone in tzdata does that across a month or year boundary (all 1,634 "
    "transition patterns 1900-2037 checked), and a wrong next start only ever makes the engine step"
)
_SCREEN = (
    "the stem only screens descriptions for `slot_attempt`, which decides: a shorter one lets more through"
)
_STEM = 'stem = slot_marker(policy, slot)[: -len("Z]")]  # what every attempt\'s marker contains'

EQUIVALENT: dict[tuple[str, str, str, str], str] = {
    # the runner's create and prune path
    (
        U,
        "_Flow.adopt",
        "self.deadline = self.runner._monotonic() + self.run.job.wait_timeout.total_seconds()",
        "self.deadline = None",
    ): (
        "adopt() returns straight to wait() (no await between), which sets the same deadline at the same "
        "instant when it finds none; a completed backup returns without waiting"
    ),
    (U, "_Flow.wait", "self.poll_error = None", 'self.poll_error = ""'): (
        "poll_error is only read for its truth (`if self.poll_error`): None and '' both say no failed poll"
    ),
    (
        U,
        "Runner._create",
        "expected = Marker(job.name, run.slot.astimezone(UTC).replace(microsecond=0), attempt)",
        "expected = Marker(job.name, run.slot.astimezone(None).replace(microsecond=0), attempt)",
    ): "the slot is aware and markers compare slots as instants: any zone gives an equal Marker",
    (U, "Runner._prune_rounds", "blocked_from = len(result.blocked)", "blocked_from = None"): (
        "a server's blocked list is only filled by its prune (`_apply`), so it is empty when the prune "
        "starts: `del result.blocked[None:]` and `del result.blocked[0:]` clear the same entries"
    ),
    # (module, function, line before, line after): why the mutant cannot change behaviour.
    (R, "_bucket_start", "start = _latest_start(floor, rule, zone, newest)", "start = None"): _STEPS,
    (R, "_bucket_start", "if start is None:", "if start is not None:"): _STEPS,
    (
        R,
        "_bucket_start",
        "return start if left is None or left < start else None",
        "return start if (left is None or left < start) and False else None",
    ): _STEPS,
    (
        R,
        "_bucket_start",
        "return start if left is None or left < start else None",
        "return start if left is None or left <= start else None",
    ): "`left` and `start` are starts of two different buckets: never equal",
    (R, "_calendar_keeps", "last: datetime | None = None", 'last: datetime | None = ""'): (
        "any value that is no floor works as 'nothing kept yet'"
    ),
    (R, "_calendar_keeps", "start = _bucket_start(floor, rule, zone, created)", "start = None"): _STEPS,
    (R, "_calendar_keeps", _JUMP, "index = bisect_left(times, start, 0, None) - 1"): (
        "`times[index]` >= start, so the search never passes `index`: the bound only saves time"
    ),
    (R, "_calendar_keeps", _JUMP, "index = bisect_left(times, start, 0, ) - 1"): (
        "`times[index]` >= start, so the search never passes `index`: the bound only saves time"
    ),
    (R, "_calendar_keeps", _JUMP, "index = bisect_left(times, start, index) - 1"): (
        "lands on `index - 1`: one step back instead of a jump (same plan, slower)"
    ),
    (
        R,
        "_latest_start",
        "start = floor.replace(tzinfo=zone, fold=fold).astimezone(UTC)",
        "start = floor.replace(tzinfo=zone, fold=fold).astimezone(None)",
    ): "the same instant in another zone: aware datetimes compare as instants",
    (R, "_latest_start", _IF_FOUND, _IF_FOUND.replace(") and rule", ") or rule")): (
        "also takes a start after `newest`, and then (the same function finding the next bucket's start) "
        "makes `_bucket_start` return None: the engine steps; checked against every tzdata transition"
    ),
    (R, "_latest_start", _IF_FOUND, _IF_FOUND.replace("newest and (", "newest or (")): (
        "also takes the fold outside the bucket, but the same change takes the next bucket's (future) "
        "start as `left`, so `_bucket_start` returns None and the engine steps; checked against every "
        "tzdata transition"
    ),
    (R, "_latest_start", _IF_FOUND, _IF_FOUND.replace("start <= newest", "start < newest")): (
        "a bucket starting exactly at `newest` gets no start: the engine steps over it"
    ),
    (R, "_latest_start", _IF_FOUND, _IF_FOUND.replace("start > best", "start >= best")): (
        "fold 1 equal to fold 0 is the same instant: taking it again changes nothing"
    ),
    (R, "_latest_start", "best = start", "best = None"): _STEPS,
    (
        R,
        "_month_floor",
        "return datetime(local.year, local.month, 1)  # noqa: DTZ001 (wall clock)",
        "return datetime(local.year, local.month, 2)  # noqa: DTZ001 (wall clock)",
    ): "a bucket's key only has to be the same within the month and differ between months; its start "
    "is then later than the month's, and a later start only makes the engine step",
    (
        R,
        "_year_floor",
        "return datetime(local.year, 1, 1)  # noqa: DTZ001 (wall clock)",
        "return datetime(local.year, 2, 1)  # noqa: DTZ001 (wall clock)",
    ): "a bucket's key only has to be the same within the year and differ between years; its start "
    "is then later than the year's, and a later start only makes the engine step",
    (
        R,
        "_year_floor",
        "return datetime(local.year, 1, 1)  # noqa: DTZ001 (wall clock)",
        "return datetime(local.year, 1, 2)  # noqa: DTZ001 (wall clock)",
    ): "a bucket's key only has to be the same within the year and differ between years; its start "
    "is then later than the year's, and a later start only makes the engine step",
    **{
        (R, "_next_month", _NEXT_MONTH, _NEXT_MONTH.replace(old, new, 1)): _FOLLOWING
        for old, new in [
            ("year + floor", "year - floor"),
            ("// 12", "// 13"),
            ("% 12 + 1", "% 12 - 1"),
            ("% 12 + 1", "% 13 + 1"),
            ("% 12 + 1", "% 12 + 2"),
            ("+ 1, 1)", "+ 1, 2)"),
        ]
    },
    **{
        (R, "_next_year", _NEXT_YEAR, _NEXT_YEAR.replace(old, new, 1)): _FOLLOWING
        for old, new in [
            ("+ 1, 1, 1)", "- 1, 1, 1)"),
            ("+ 1, 1, 1)", "+ 2, 1, 1)"),
            ("1, 1, 1)", "1, 2, 1)"),
            ("1, 1)", "1, 2)"),
        ]
    },
    (R, "_plan_one_server", "description = backup.description", "description = None"): (
        "skips the fast path: `untouched_reason` then decides the same backup the same way, slower"
    ),
    **{
        (R, "_plan_one_server", "if any(map(eq, times, islice(times, 1, None))):", after): (
            "always takes the tie-breaking sort by (created_at, id): the same order, slower"
        )
        for after in (
            "if any(map(eq, times, islice(times, None, None))):",
            "if any(map(eq, times, islice(times, None))):",
            "if any(map(eq, times, islice(times, 1, ))):",
        )
    },
    (
        R,
        "_plan_one_server",
        "above = len(candidates)  # candidates[above:] are decided",
        "above = None  # candidates[above:] are decided",
    ): "a slice to None is a slice to the end, which is `len(candidates)`",
    (
        "rotator/markers.py",
        "mentions_marker",
        'return bool(description) and MARKER_PREFIX in (description or "").casefold()',
        'return bool(description) and MARKER_PREFIX in (description or "XXXX").casefold()',
    ): "the `or` is reached only with a non-empty description (it is there for mypy)",
    (
        S,
        "decide",
        "attempt, backup = max(completed, key=lambda pair: (pair[1].sort_key, pair[0]))",
        "attempt, backup = max(completed, key=lambda pair: (pair[1].sort_key, pair[1]))",
    ): "sort_key is (created_at, id): two entries tie only if one backup is listed twice, and the API "
    "client refuses such a listing",
    (
        S,
        "decide",
        "attempt, backup = max(running, key=lambda pair: (pair[1].sort_key, pair[0]))",
        "attempt, backup = max(running, key=lambda pair: (pair[1].sort_key, pair[1]))",
    ): "sort_key is (created_at, id): two entries tie only if one backup is listed twice, and the API "
    "client refuses such a listing",
    (S, "slot_backups", _STEM, _STEM.replace("(policy, slot)", "(policy, None)")): _SCREEN,
    (S, "slot_backups", _STEM, _STEM.replace("[: -len", "[: +len")): _SCREEN,
    (
        S,
        "slot_backups",
        'if stem in (backup.description or ""):',
        'if stem in (backup.description or "XXXX"):',
    ): ("a backup without a description has no marker either way"),
    (
        S,
        "_cron_after",
        "if best_wall is not None and local > best_wall:",
        "if best_wall is not None and local >= best_wall:",
    ): "a wall time equal to `best_wall` is `best` itself (fold 0 of a time `best` was read from): stopping "
    "there returns the same `best`, one step sooner",
    (
        S,
        "_cron_after",
        "if instant > after and (best is None or instant < best):",
        "if instant > after and (best is None or instant <= best):",
    ): "an instant equal to `best` replaces `best` by itself (and `best_wall` by the same wall time)",
    (
        S,
        "_shift_bound",
        "offsets = [(moment + timedelta(days=days)).astimezone(zone).utcoffset() for days in (-1, 0, 1)]",
        "offsets = [(moment - timedelta(days=days)).astimezone(zone).utcoffset() for days in (-1, 0, 1)]",
    ): "the days are symmetric: minus (-1, 0, 1) days is the same three moments",
    (S, "upcoming", "steps = [0]", "steps = [1]"): (
        "the counter is reset to 0 before each cron search and interval searches take no steps"
    ),
    (
        S,
        "SlotTrigger.get_next_fire_time",
        "fire: datetime | None = self._apply_jitter(slot, self.jitter, now)",
        "fire: datetime | None = self._apply_jitter(slot, self.jitter, None)",
    ): "APScheduler 3's `BaseTrigger._apply_jitter` does not read `now`",
}
"""Mutants that cannot change behaviour, by the line they change (stable when mutants renumber)."""


@dataclass
class Mutant:
    name: str
    module: str
    function: str
    status: str
    line: int = 0
    before: str = ""
    after: str = ""
    diff: str = ""
    part: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.module, self.function, self.before, self.after)


@dataclass
class ModuleScore:
    module: str
    counts: Counter[str] = field(default_factory=Counter)
    parts: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def score(self, counts: Counter[str] | None = None) -> float:
        counts = self.counts if counts is None else counts
        judged = sum(counts.values()) - counts["equivalent"]
        return (counts["killed"] + counts["timeout"]) / judged if judged else 1.0


# --- running mutmut ----------------------------------------------------------------------------

_CHILD = """
import json, sys
from mutmut.configuration import config
settings = json.loads(sys.argv[1])
cfg = config()  # [tool.mutmut] in pyproject.toml; then what this run mutates and which tests judge it
cfg.only_mutate = settings["modules"]
cfg.pytest_add_cli_args_test_selection = settings["tests"]
from mutmut.__main__ import cli
cli(["run", "--max-children", str(settings["children"]), *settings["patterns"]])
"""


def mutant_patterns(modules: list[str], functions: list[str]) -> list[str]:
    """mutmut's name patterns for ``functions`` (``name`` or ``Class.name``) of ``modules``."""
    patterns = []
    for module in modules:
        dotted = module.removesuffix(".py").replace("/", ".")
        for function in functions:
            cls, _, name = function.rpartition(".")
            mangled = f"xǁ{cls}ǁ{name}" if cls else f"x_{name}"
            patterns.append(f"{dotted}.{mangled}__mutmut_*")
    return patterns


def default_tests(modules: list[str]) -> list[str]:
    """The core's tests for the core; for other modules ``tests/test_<name>*.py``."""
    if sorted(modules) == sorted(CORE_MODULES):
        return [test for test in CORE_TESTS if (ROOT / test).exists()]
    found: list[str] = []
    for module in modules:
        stem = Path(module).stem
        found += sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob(f"test_{stem}*.py"))
    return found


def run_mutmut(
    modules: list[str], tests: list[str], children: int, functions: list[str] | None = None
) -> int:
    patterns = mutant_patterns(modules, functions or [])
    settings = json.dumps({"modules": modules, "tests": tests, "children": children, "patterns": patterns})
    child = subprocess.run([sys.executable, "-c", _CHILD, settings], cwd=ROOT, check=False)
    return child.returncode


# --- reading mutmut's results ------------------------------------------------------------------


def status_of(exit_code: int | None) -> str:
    if exit_code in KILLED:
        return "killed"
    if exit_code in TIMEOUT:
        return "timeout"
    if exit_code in NO_TESTS:
        return "no tests"
    if exit_code in SURVIVED:
        return "survived"
    if exit_code is None:
        return "not checked"
    return "suspicious"


def function_lines(module: str) -> tuple[dict[str, int], dict[str, str]]:
    """Where each function (``name`` or ``Class.name``) starts, and the ``# --- part ---`` it is in."""
    source = (ROOT / module).read_text()
    tree = ast.parse(source)
    sections = [
        (number, match.group(1).strip())
        for number, line in enumerate(source.splitlines(), start=1)
        if (match := re.match(r"# --- (.+?) -+\s*$", line))
    ]
    starts: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            starts[node.name] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    starts[f"{node.name}.{item.name}"] = item.lineno
    parts = {}
    for name, line in starts.items():
        before = [title for number, title in sections if number < line]
        parts[name] = before[-1] if before else "top"
    return starts, parts


def function_of(mutant_name: str) -> str:
    mangled = mutant_name.partition("__mutmut_")[0].rpartition(".")[2]
    if "ǁ" in mangled:
        _, cls, method = mangled.split("ǁ")
        return f"{cls}.{method}"
    return mangled.removeprefix("x_")


def describe(mutant: Mutant, start: int) -> None:
    """Fill in the mutant's diff, the line it changes (before and after) and that line's number."""
    import libcst as cst  # noqa: PLC0415 - installed with mutmut, only for `make mutation`
    from mutmut.mutation.diff_apply import (  # noqa: PLC0415
        read_functions_from_index,
        read_mutant_function,
        read_mutants_module,
        read_original_function,
    )

    cwd = Path.cwd()
    os.chdir(ROOT)  # mutmut reads mutants/ relative to the working directory
    try:
        functions = read_functions_from_index(mutant.name, mutant.module)
        if functions is None:
            module = read_mutants_module(mutant.module)
            functions = (
                read_original_function(module, mutant.name),
                read_mutant_function(module, mutant.name),
            )
    except (FileNotFoundError, KeyError, ValueError) as exc:
        mutant.diff = f"(no diff: {exc})"
        return
    finally:
        os.chdir(cwd)
    original, mutated = (cst.Module([function]).code.strip().splitlines() for function in functions)
    mutant.diff = "\n".join(
        difflib.unified_diff(original, mutated, mutant.module, mutant.module, lineterm="", n=2)
    )
    matcher = difflib.SequenceMatcher(a=original, b=mutated, autojunk=False)
    change = next((op for op in matcher.get_opcodes() if op[0] != "equal"), None)
    if change is None:
        return
    _, first, last, new_first, new_last = change
    mutant.before = " / ".join(line.strip() for line in original[first:last])
    mutant.after = " / ".join(line.strip() for line in mutated[new_first:new_last])
    # the function's text starts with any comments above it; ``start`` is its ``def`` line
    header = next((i for i, line in enumerate(original) if re.match(r"(async\s+)?def ", line)), 0)
    mutant.line = start + first - header if start else 0


def collect(modules: list[str], functions: list[str] | None = None) -> tuple[list[ModuleScore], list[Mutant]]:
    scores: list[ModuleScore] = []
    mutants: list[Mutant] = []
    for module in modules:
        meta = MUTANTS / f"{module}.meta"
        score = ModuleScore(module)
        scores.append(score)
        if not meta.exists():
            continue
        starts, parts = function_lines(module)
        exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        for name, exit_code in sorted(exit_codes.items(), key=lambda item: natural(item[0])):
            function = function_of(name)
            if functions and function not in functions:
                continue  # a run of selected functions judges only them
            mutant = Mutant(name, module, function, status_of(exit_code), part=parts.get(function, "top"))
            if mutant.status not in ("killed", "timeout"):
                describe(mutant, starts.get(function, 0))
                if mutant.key in EQUIVALENT:
                    mutant.status = "equivalent"
                mutants.append(mutant)
            score.counts[mutant.status] += 1
            score.parts.setdefault(mutant.part, Counter())[mutant.status] += 1
    return scores, mutants


def natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return (stem, int(number) if number.isdigit() else 0)


# --- the report --------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, mutmut {metadata.version('mutmut')}"
    )


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def table(scores: list[ModuleScore]) -> list[str]:
    rows = [
        "| module | part | killed | timeout | survived | no tests | equivalent | total | score | raw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for score in scores:
        groups = [("all", score.counts)]
        if len(score.parts) > 1:
            groups += sorted(score.parts.items(), key=lambda item: (item[0] == "top", item[0]))
        for part, counts in groups:
            verdict = "" if score.score(counts) >= TARGET else " (below 95 %)"
            module = score.module if part == "all" else ""
            total = sum(counts.values())
            raw = (counts["killed"] + counts["timeout"]) / total if total else 1.0
            name = "the rest" if part == "top" else part
            rows.append(
                f"| {module} | {name} | {counts['killed']} | {counts['timeout']} | {counts['survived']} "
                f"| {counts['no tests']} | {counts['equivalent']} | {total} "
                f"| {percent(score.score(counts))}{verdict} | {percent(raw)} |"
            )
    return rows


def survivor_block(mutant: Mutant) -> list[str]:
    where = f"{mutant.module}:{mutant.line}" if mutant.line else mutant.module
    lines = [
        f"- `{mutant.name}` ({mutant.status}), {where} in `{mutant.function}`: "
        f"`{mutant.before}` -> `{mutant.after}`"
    ]
    if mutant.status == "equivalent":
        lines[0] += f"  \n  equivalent: {EQUIVALENT[mutant.key]}"
    return lines


def render(
    scores: list[ModuleScore],
    mutants: list[Mutant],
    tests: list[str],
    seconds: float | None,
    functions: list[str] | None = None,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    runtime = f"{seconds / 60:.1f} min" if seconds is not None else "not timed (--report-only)"
    lines = [
        "# Mutation testing",
        "",
        "Written by `make mutation` (`bench/mutation.py`, mutmut). Score = (killed + timed out) / "
        "(mutants - equivalent); a mutant that no selected test reaches counts against the score; raw = "
        "(killed + timed out) / mutants. Parts are the `# --- ... ---` sections of a module. "
        f"Target: {percent(TARGET)} for each module.",
        "",
        f"- date: {when}",
        f"- machine: {machine()}",
        f"- run time: {runtime}",
        f"- tests: {', '.join(f'`{test}`' for test in tests) if tests else '(unknown: --report-only)'}",
        *([f"- functions: {', '.join(f'`{name}`' for name in functions)}"] if functions else []),
        "",
        *table(scores),
        "",
        "## Surviving mutants",
        "",
    ]
    alive = [m for m in mutants if m.status != "equivalent"]
    lines += [row for mutant in alive for row in survivor_block(mutant)] or ["None."]
    lines += ["", "## Equivalent mutants", ""]
    same = [m for m in mutants if m.status == "equivalent"]
    lines += [row for mutant in same for row in survivor_block(mutant)] or ["None."]
    lines += ["", "## Diffs of the surviving mutants", ""]
    for mutant in alive:
        lines += [f"`{mutant.name}` ({mutant.status})", "", "```diff", mutant.diff, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modules", nargs="*", default=None, help="source files to mutate (default: the core)"
    )
    parser.add_argument("--tests", nargs="*", default=None, help="test files that judge them")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ and its verdicts")
    parser.add_argument("--report-only", action="store_true", help="only write the table of the last run")
    parser.add_argument(
        "--functions",
        nargs="*",
        default=None,
        help="mutate and count only these functions (`name` or `Class.name`; default: all)",
    )
    parser.add_argument(
        "--pytest-args",
        default="",
        help="more pytest arguments for the selected tests, e.g. `-k 'not served'`",
    )
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    # make passes empty strings for unset MODULES/TESTS; split "a b" given as one word too
    modules = [m for word in args.modules or [] for m in word.split()] or list(CORE_MODULES)
    tests = [t for word in args.tests or [] for t in word.split()] or default_tests(modules)
    functions = [f for word in args.functions or [] for f in word.split()]
    pytest_args = shlex.split(args.pytest_args)

    seconds = None
    if not args.report_only:
        missing = [path for path in (*modules, *tests) if not (ROOT / path.partition("::")[0]).exists()]
        if missing:
            parser.error(f"no such file: {', '.join(missing)}")
        if not args.keep and MUTANTS.exists():
            shutil.rmtree(MUTANTS)  # a fresh run: no verdict stands on code or tests that changed
        print(f"mutating {' '.join(modules)}\njudged by {' '.join(tests)}", flush=True)
        started = time.monotonic()
        code = run_mutmut(modules, [*tests, *pytest_args], args.children, functions)
        seconds = time.monotonic() - started
        if code != 0:
            print(f"mutmut exited with {code}", file=sys.stderr)
            return code

    scores, mutants = collect(modules, functions)
    shown = [*tests, *pytest_args] if not args.report_only else []
    text = render(scores, mutants, shown, seconds, functions)
    args.out.write_text(text)
    print()
    print("\n".join(table(scores)))
    print()
    for mutant in mutants:
        if mutant.status != "equivalent":
            print("\n".join(survivor_block(mutant)))
    print(f"\nwritten to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
