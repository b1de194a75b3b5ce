"""Value types for what the Backups API returns.

These are frozen pydantic models: they validate an answer once, at the edge,
and are plain immutable values everywhere else (the retention engine reads
them and never needs pydantic itself). Unknown fields are ignored, as the API
notes ask: fields may grow.

``status`` and ``backup_type`` are open sets. An unknown value is kept as it
came; only the exact string ``"completed"`` makes a backup usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

COMPLETED: Final = "completed"
IN_PROGRESS: Final = "in_progress"
FAILED: Final = "failed"
MANUAL: Final = "manual"
AUTOMATIC: Final = "automatic"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An aware timestamp (any offset accepted), held in UTC."""


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


class ServerRef(_Wire):
    id: int = Field(ge=1)
    name: str


class Backup(_Wire):
    """One backup as the API lists it."""

    id: int = Field(ge=1)
    server: ServerRef
    backup_type: str
    status: str
    size_mb: int | None = Field(default=None, ge=0)
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    description: str | None = None

    @property
    def server_id(self) -> int:
        return self.server.id

    @property
    def is_completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def is_manual(self) -> bool:
        return self.backup_type == MANUAL

    @property
    def sort_key(self) -> tuple[datetime, int]:
        """Age order: by ``created_at``, ties broken by id (the higher id is the newer)."""
        return (self.created_at, self.id)

    def to_api(self) -> dict[str, Any]:
        """The API's own JSON shape (timestamps with a ``Z``)."""
        data = self.model_dump(mode="json")
        for key in ("created_at", "expires_at"):
            if data[key] is not None:
                data[key] = format_timestamp(getattr(self, key))
        return data


class BackupPage(_Wire):
    """One page of ``GET /backups/`` (Django REST Framework's envelope)."""

    count: int = Field(ge=0)
    next: str | None = None
    previous: str | None = None
    results: list[Backup]


class CreatedBackup(Backup):
    """The answer to a create; ``message`` is the API's note, if any."""

    message: str | None = None


@dataclass(frozen=True)
class Listing:
    """A whole listing: every page read, adding up to ``count``."""

    count: int
    backups: tuple[Backup, ...]

    def to_api(self) -> dict[str, Any]:
        """The API's envelope with every page merged: ``{"count", "results"}``."""
        return {"count": self.count, "results": [b.to_api() for b in self.backups]}


def format_timestamp(value: datetime) -> str:
    """``2025-01-16T03:00:00Z``: UTC, whole seconds kept as the API writes them."""
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
