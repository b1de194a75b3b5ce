"""``python -m bench.chaos``: run a fault campaign, print what it did and the violations found.

Exit status 0 when no invariant was broken and rotator never crashed; 1 otherwise.
Replay a campaign with its printed seed: ``python -m bench.chaos --seed N``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from bench.chaos.campaign import Settings, run_campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, help="seed of every random choice (default: a new one, printed)")
    parser.add_argument("--short", action="store_true", help="the short campaign that make test runs")
    parser.add_argument("--ticks", type=int, help="run-once runs of the days phase")
    parser.add_argument("--cycles", type=int, help="daemon starts killed with SIGKILL")
    parser.add_argument("--lanes", type=int, help="rotator processes side by side in the days phase")
    parser.add_argument("--workdir", type=Path, help="keep the configuration files here")
    parser.add_argument("--events", type=Path, help="write both phases' event logs to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument(
        "--replicas",
        action="store_true",
        help="the replicas mode: three coordinated `rotator run` on a real etcd, replicas and members killed",
    )
    parser.add_argument("--seconds", type=float, default=300.0, help="replicas mode: how long (default 300)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other setting of bench.chaos.campaign.Settings, e.g. lag_share=0 (repeatable)",
    )
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    if args.replicas:
        return _replicas(seed, args)
    settings = Settings.short(seed) if args.short else Settings.long(seed)
    changes = {
        name: value
        for name, value in (("ticks", args.ticks), ("daemon_cycles", args.cycles), ("lanes", args.lanes))
        if value is not None
    }
    try:
        changes.update(_settings(args.set))
    except ValueError as exc:
        parser.error(str(exc))
    settings = replace(settings, **changes)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    extra = "".join(f" --set {item}" for item in args.set) + (" --short" if args.short else "")
    print(f"seed {seed} (replay: python -m bench.chaos --seed {seed}{extra})")
    result = run_campaign(settings, workdir=args.workdir, say=say)
    print(result.render(), flush=True)
    events = args.events
    if events is None and not result.ok:
        # a violation's timing seldom comes again: keep the evidence of the one that was seen
        events = Path(tempfile.gettempdir()) / f"rotator-chaos-{seed}-events.json"
    if events is not None:
        events.write_text(json.dumps(result.events), encoding="utf-8")
        if events != args.events:
            print(f"event logs of both phases kept in {events}", flush=True)
    return 0 if result.ok else 1


def _replicas(seed: int, args: argparse.Namespace) -> int:
    from bench.chaos.campaign import _workdir  # noqa: PLC0415
    from bench.chaos.replicas import ReplicaSettings, run_replicas  # noqa: PLC0415

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    print(f"seed {seed} (replay: python -m bench.chaos --replicas --seed {seed} --seconds {args.seconds:g})")
    with _workdir(args.workdir) as where:
        result = run_replicas(ReplicaSettings(seed=seed, seconds=args.seconds), where, say)
    print(result.render(), flush=True)
    return 0 if result.ok else 1


def _settings(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as Settings fields of their own type."""
    types = {f.name: f.type for f in fields(Settings) if f.name != "seed"}
    changes: dict[str, Any] = {}
    for item in items:
        name, _, text = item.partition("=")
        kind = types.get(name)
        if kind is None or not text:
            raise ValueError(f"--set {item!r}: not NAME=VALUE of a setting ({', '.join(sorted(types))})")
        if kind == "bool":
            changes[name] = text.lower() in ("1", "true", "yes")
        else:
            changes[name] = int(text) if kind == "int" else float(text)
    return changes


if __name__ == "__main__":
    sys.exit(main())
