"""What ``rotator plan`` shows: the plans of the configured policies, as JSON or as a table.

Pure: :func:`build_plans` takes the policies, a listing and ``now`` and returns
the plans; :func:`plan_document` / :func:`render_json` and :func:`render_table`
turn them into text. Nothing here reads a clock, a file or the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from rotator.config import RotatorConfig
from rotator.errors import ConfigError
from rotator.models import Backup, format_timestamp
from rotator.retention import Decision, Policy, PolicyPlan, ServerPlan, Verdict, plan_policy

VERDICT_LABELS: Final = {
    Verdict.KEEP: "KEEP",
    Verdict.DELETE: "DELETE",
    Verdict.UNTOUCHED: "UNTOUCHED",
}
DESCRIPTION_WIDTH: Final = 60


def build_plans(
    policies: RotatorConfig | Iterable[Policy],
    backups: Iterable[Backup],
    now: datetime,
    *,
    policy: str | None = None,
    server: int | None = None,
) -> tuple[PolicyPlan, ...]:
    """The plan of each policy (or only ``policy``), each over its servers (or only ``server``).

    ``backups`` is a listing of any servers; each policy sees its own servers'
    backups. An unknown policy name, or a server no chosen policy has, is a
    :class:`ConfigError` (the CLI's values are configuration too).
    """
    chosen = list(policies.engine_policies() if isinstance(policies, RotatorConfig) else policies)
    if policy is not None:
        known = ", ".join(item.name for item in chosen) or "none"
        chosen = [item for item in chosen if item.name == policy]
        if not chosen:
            raise ConfigError(f"no policy named {policy!r} (known: {known})")
    if server is not None:
        chosen = [replace(item, servers=(server,)) for item in chosen if server in item.servers]
        if not chosen:
            scope = f"policy {policy!r}" if policy is not None else "any policy"
            raise ConfigError(f"server {server} is not one of the servers of {scope}")
    listing = list(backups)
    return tuple(plan_policy(listing, item, now) for item in chosen)


# --- JSON ---------------------------------------------------------------------------------------


def plan_document(plans: Iterable[PolicyPlan]) -> dict[str, Any]:
    """The document ``rotator plan --json`` prints (key order as documented)."""
    return {
        "policies": [
            {
                "policy": plan.policy,
                "now": format_timestamp(plan.now),
                "servers": [_server_document(server) for server in plan.servers],
            }
            for plan in plans
        ]
    }


def _server_document(plan: ServerPlan) -> dict[str, Any]:
    return {
        "server_id": plan.server_id,
        "keep": [_decided(decision) for decision in plan.keep],
        "delete": [_decided(decision) for decision in plan.delete],
        "untouched": [
            {
                "id": decision.backup.id,
                "created_at": format_timestamp(decision.backup.created_at),
                "reason": decision.reason,
            }
            for decision in plan.untouched
        ],
    }


def _decided(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.backup.id,
        "created_at": format_timestamp(decision.backup.created_at),
        "reasons": list(decision.reasons),
    }


def render_json(plans: Iterable[PolicyPlan], *, indent: int | None = 2) -> str:
    """:func:`plan_document` as JSON text."""
    return json.dumps(plan_document(plans), indent=indent, ensure_ascii=False)


# --- table --------------------------------------------------------------------------------------


def render_table(plans: Iterable[PolicyPlan]) -> str:
    """A table per server of each policy: every backup, newest first, with its decision."""
    blocks = [_server_table(server) for plan in plans for server in plan.servers]
    return "\n\n".join(blocks) + "\n" if blocks else "no policies to plan\n"


def _server_table(plan: ServerPlan) -> str:
    rows = plan.rows()
    names = {decision.backup.server.name for _, decision in rows}
    name = f" ({names.pop()})" if len(names) == 1 else ""
    heading = (
        f"policy {plan.policy}, server {plan.server_id}{name} at {format_timestamp(plan.now)}: "
        f"keep {len(plan.keep)}, delete {len(plan.delete)}, untouched {len(plan.untouched)}"
    )
    if not rows:
        return f"{heading}\n  (no backups)"
    cells = [("ACTION", "ID", "CREATED_AT", "DESCRIPTION", "REASONS")]
    cells += [
        (
            VERDICT_LABELS[verdict],
            str(decision.backup.id),
            format_timestamp(decision.backup.created_at),
            _clip(decision.backup.description or ""),
            decision.reason or "-",
        )
        for verdict, decision in rows
    ]
    return "\n".join([heading, *_aligned(cells)])


def _aligned(cells: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= DESCRIPTION_WIDTH:
        return flat
    # Keep the end: that is where the marker is.
    return "..." + flat[-(DESCRIPTION_WIDTH - 3) :]
