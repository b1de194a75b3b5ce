"""What the backup commands tell people about backups they handle by hand: whose they are, and why care.

rotator deletes by itself only manual backups its policies own (their descriptions end with a marker,
:mod:`rotator.markers`). A backup deleted by hand outside that is one of two kinds worth a warning:

- **owned** by a policy: its retention counted on it (it may be the one backup holding a week or a
  month), and the policy's next run plans without it;
- **automatic**: the provider made it and expires it by itself; rotator never deletes one.

Asked on a terminal, people see the warning and answer. ``--yes`` (no question) does not cover these:
they also need ``--force``, so that a script written for ad-hoc backups does not delete a policy's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rotator.markers import parse_marker
from rotator.models import Backup


def policy_of(backup: Backup) -> str | None:
    """The policy whose marker ends ``backup``'s description (manual backups only), else ``None``."""
    if backup.backup_type != "manual":
        return None
    marker = parse_marker(backup.description)
    return marker.policy if marker is not None else None


def owned_by(backups: Iterable[Backup], policy: str) -> list[Backup]:
    """The backups ``policy`` owns, in their order."""
    return [backup for backup in backups if policy_of(backup) == policy]


@dataclass(frozen=True, slots=True)
class Caution:
    """Why one backup about to be deleted by hand deserves a second thought."""

    backup_id: int
    kind: Literal["owned", "automatic"]
    reason: str

    def line(self) -> str:
        return f"backup {self.backup_id} {self.reason}"


def cautions(backups: Sequence[Backup]) -> list[Caution]:
    """One caution per owned or automatic backup among ``backups``, in their order."""
    found = []
    for backup in backups:
        policy = policy_of(backup)
        if policy is not None:
            found.append(
                Caution(
                    backup.id,
                    "owned",
                    f"is owned by policy {policy!r}: its retention counts on it, and its next run "
                    "plans without it",
                )
            )
        elif backup.backup_type == "automatic":
            found.append(
                Caution(
                    backup.id,
                    "automatic",
                    "is an automatic backup: the provider expires it by itself, and rotator never "
                    "deletes one",
                )
            )
    return found


def refusal(found: Sequence[Caution]) -> str:
    """The one line that refuses ``--yes`` without ``--force`` for ``found`` (not empty)."""
    ids = ", ".join(str(c.backup_id) for c in found)
    kinds = sorted({"owned by a policy" if c.kind == "owned" else "automatic" for c in found}, reverse=True)
    subject = f"backup {ids} is" if len(found) == 1 else f"backups {ids} are"
    return (
        f"{subject} {' or '.join(kinds)}: --yes alone does not delete such backups, add --force; "
        "nothing was deleted"
    )
