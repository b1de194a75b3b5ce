"""Value types for what the Backups API returns.

These are frozen pydantic models: they validate an answer once, at the edge,
and are plain immutable values everywhere else (the retention engine reads
them and never needs pydantic itself). Unknown fields are ignored, as the API
notes ask: fields may grow.

``status`` and ``backup_type`` are open sets. An unknown value is kept as it
came; only the exact string ``"completed"`` makes a backup usable.

The documented types are held to strictly where a lenient reading could aim a
delete at the wrong backup: ids and counts must be JSON integers (not ``true``,
``"501"`` or ``501.0``), ids are >= 1, timestamps are ISO 8601 strings with an
offset (not bare numbers, not naive), and the open-set strings hold no control
characters (they end up in logs and one-line messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

COMPLETED: Final = "completed"
IN_PROGRESS: Final = "in_progress"
FAILED: Final = "failed"
MANUAL: Final = "manual"
AUTOMATIC: Final = "automatic"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _timestamp_text(value: Any) -> Any:
    # pydantic would read a number as seconds since the epoch: the API writes ISO 8601 text
    if isinstance(value, int | float):
        raise ValueError("a timestamp must be ISO 8601 text, not a number")  # noqa: TRY004 - pydantic wants ValueError
    return value


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text without control characters")
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_timestamp_text), AfterValidator(_to_utc)]
"""An aware timestamp (ISO 8601 text, any offset accepted), held in UTC."""

Id = Annotated[StrictInt, Field(ge=1)]
"""An id of the API: a JSON integer, 1 or more."""

Word = Annotated[str, AfterValidator(_printable)]
"""A value of an open set (``status``, ``backup_type``): any printable text."""


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


class ServerRef(_Wire):
    id: Id
    name: str


class Backup(_Wire):
    """One backup as the API lists it."""

    id: Id
    server: ServerRef
    backup_type: Word
    status: Word
    size_mb: Annotated[StrictInt, Field(ge=0)] | None = None
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

    count: Annotated[StrictInt, Field(ge=0)]
    next: str | None = None
    previous: str | None = None
    results: list[Backup]


class CreatedBackup(Backup):
    """The answer to a create; ``message`` is the API's note, if any."""

    message: str | None = None


@dataclass(frozen=True)
class Listing:
    """A whole listing: every page read (``pages`` of them), adding up to ``count``."""

    count: int
    backups: tuple[Backup, ...]
    pages: int = 1

    def to_api(self) -> dict[str, Any]:
        """The API's envelope with every page merged: ``{"count", "results"}``."""
        return {"count": self.count, "results": [b.to_api() for b in self.backups]}


def format_timestamp(value: datetime) -> str:
    """``2025-01-16T03:00:00Z``: UTC, whole seconds kept as the API writes them."""
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
