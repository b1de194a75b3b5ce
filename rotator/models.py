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

import dataclasses
import functools
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Final, Generic, Self, TypeVar, overload

import pydantic
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

COMPLETED: Final = "completed"
IN_PROGRESS: Final = "in_progress"
FAILED: Final = "failed"
MANUAL: Final = "manual"
AUTOMATIC: Final = "automatic"

_K = TypeVar("_K")
_V = TypeVar("_V")


class _Shared(Generic[_K, _V]):
    """One instance for equal values seen again (a fleet's listing names each server 30 times), bounded:
    forgotten whole once it holds ``size`` of them, so a long-running daemon keeps no more."""

    __slots__ = ("_seen", "_size")

    def __init__(self, size: int) -> None:
        self._seen: dict[_K, _V] = {}
        self._size = size

    def get(self, key: _K, value: _V) -> _V:
        found = self._seen.get(key)
        if found is not None:
            return found
        if len(self._seen) >= self._size:
            self._seen.clear()
        self._seen[key] = value
        return value


# A backup's time must have a local time in every zone (offsets are under a day), or a plan could not
# place it in a calendar bucket: the first and last day that datetime can hold are refused.
_EARLIEST: Final = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
_LATEST: Final = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def _to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not _EARLIEST <= utc <= _LATEST:
        raise ValueError(
            f"a timestamp between {_EARLIEST.date().isoformat()} and {_LATEST.date().isoformat()} UTC "
            f"(got {value.isoformat()})"
        )
    return utc


def _timestamp_text(value: Any) -> Any:
    # pydantic would read a number as seconds since the epoch: the API writes ISO 8601 text
    if isinstance(value, int | float):
        raise ValueError("a timestamp must be ISO 8601 text, not a number")  # noqa: TRY004 - pydantic wants ValueError
    return value


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text without control characters")
    return sys.intern(value)  # a few words (statuses, types) held by every backup


def _shared_text(value: str | None) -> str | None:
    # descriptions repeat across servers ("nightly 2026-12-01 [rotator:...]"): one copy of each
    return None if value is None else sys.intern(value)


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_timestamp_text), AfterValidator(_to_utc)]
"""An aware timestamp (ISO 8601 text, any offset accepted), held in UTC."""

_INT64_MAX: Final = 2**63 - 1

Id = Annotated[StrictInt, Field(ge=1, le=_INT64_MAX)]
"""An id of the API: a JSON integer, 1 or more (and a 64-bit one, as every database's ids are)."""

Word = Annotated[str, AfterValidator(_printable)]
"""A value of an open set (``status``, ``backup_type``): any printable text."""

_WIRE: Final = ConfigDict(extra="ignore", str_strip_whitespace=False)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=_WIRE)
class ServerRef:
    """A backup's server: ``{"id", "name"}``. Equal ones read in one listing are one instance."""

    id: Id
    name: str


_servers: _Shared[tuple[int, str], ServerRef] = _Shared(100_000)


def _shared_server(server: ServerRef) -> ServerRef:
    return _servers.get((server.id, server.name), server)


@pydantic.dataclasses.dataclass(frozen=True, slots=True, kw_only=True, config=_WIRE)
class Backup:
    """One backup as the API lists it.

    A slotted frozen dataclass validated by pydantic at the edge (about 0.3 kB held per backup, where a
    model instance took about 2 kB): a fleet's listing of 300,000 backups is held whole in a run.
    """

    id: Id
    server: Annotated[ServerRef, AfterValidator(_shared_server)]
    backup_type: Word
    status: Word
    size_mb: Annotated[StrictInt, Field(ge=0, le=_INT64_MAX)] | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    description: Annotated[str | None, AfterValidator(_shared_text)] = None

    adapter: ClassVar[pydantic.TypeAdapter[Any]]

    @classmethod
    def from_api(cls, data: Any) -> Self:
        """A backup from the API's JSON shape (a dict), validated; raise ``pydantic.ValidationError``."""
        backup: Self = cls.adapter.validate_python(data)
        return backup

    @classmethod
    def model_construct(cls, **fields: Any) -> Self:
        """A backup from trusted values, unvalidated (a plan's would-be backup has id 0); every field
        not given takes its default. Named as pydantic's models name it."""
        backup = object.__new__(cls)
        for spec in dataclasses.fields(cls):
            if spec.name in fields:
                value = fields[spec.name]
            elif spec.default is not dataclasses.MISSING:
                value = spec.default
            else:
                raise TypeError(f"{cls.__name__}.model_construct() needs {spec.name}")
            object.__setattr__(backup, spec.name, value)
        return backup

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """This backup with the fields in ``update`` changed, unvalidated (as pydantic's models copy)."""
        fields = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}
        return self.model_construct(**{**fields, **(update or {})})

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
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["server"] = {"id": self.server.id, "name": self.server.name}
        for key in ("created_at", "expires_at"):
            if data[key] is not None:
                data[key] = format_timestamp(data[key])
        return data


@pydantic.dataclasses.dataclass(frozen=True, slots=True, kw_only=True, config=_WIRE)
class CreatedBackup(Backup):
    """The answer to a create; ``message`` is the API's note, if any."""

    message: str | None = None


Backup.adapter = pydantic.TypeAdapter(Backup)
CreatedBackup.adapter = pydantic.TypeAdapter(CreatedBackup)


class BackupPage(_Wire):
    """One page of ``GET /backups/`` (Django REST Framework's envelope)."""

    count: Annotated[StrictInt, Field(ge=0)]
    next: str | None = None
    previous: str | None = None
    results: list[Backup]


# -- backups held packed ---------------------------------------------------------------------------

# one listed backup as 48 bytes: id, created_at and expires_at (microseconds since the epoch, UTC),
# size_mb, and the server, backup_type, status and description as indexes into the listing's table
_ROW: Final = struct.Struct("<qqqqIIII")
ROW_SIZE: Final = _ROW.size  # the bytes of a packed backup
_NO_TIME: Final = -(2**63)  # expires_at None (every time held is within 0001..9999: far from it)
_NO_SIZE: Final = -1  # size_mb None (a size is >= 0)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_FIELDS: Final = tuple(spec.name for spec in dataclasses.fields(Backup))  # the order _unpacked sets


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


class Table:
    """The values a listing's backups have in common (servers, types, statuses, descriptions), each
    held once and named by its index; index 0 is None. Shared by every :class:`Backups` packed
    from one listing."""

    __slots__ = ("_index", "values")

    def __init__(self) -> None:
        self.values: list[object] = [None]
        self._index: dict[object, int] = {}

    def index(self, value: object) -> int:
        if value is None:
            return 0
        at = self._index.get(value)
        if at is None:
            at = self._index[value] = len(self.values)
            self.values.append(value)
        return at

    def pack(self, backup: Backup) -> bytes:
        """``backup`` as a row of this table (a validated one: its times are UTC)."""
        index = self.index
        expires = backup.expires_at
        return _ROW.pack(
            backup.id,
            _micros(backup.created_at),
            _NO_TIME if expires is None else _micros(expires),
            _NO_SIZE if backup.size_mb is None else backup.size_mb,
            index(backup.server),
            index(backup.backup_type),
            index(backup.status),
            index(backup.description),
        )

    def pack_all(self, backups: Sequence[Backup]) -> bytes:
        """``backups`` (a page's: a few hundred at most) as rows of this table, in order, equal to
        ``b"".join(map(self.pack, backups))``: one ``struct`` call for them all."""
        found = self._index.get
        index = self.index
        epoch, micro = _EPOCH, _MICROSECOND
        flat: list[int] = []
        put = flat.extend
        for backup in backups:
            expires = backup.expires_at
            size = backup.size_mb
            put(
                (
                    backup.id,
                    (backup.created_at - epoch) // micro,
                    _NO_TIME if expires is None else (expires - epoch) // micro,
                    _NO_SIZE if size is None else size,
                    found(backup.server) or index(backup.server),
                    found(backup.backup_type) or index(backup.backup_type),
                    found(backup.status) or index(backup.status),
                    found(backup.description) or index(backup.description),
                )
            )
        return _rows_struct(len(flat) // 8).pack(*flat)


@functools.lru_cache(maxsize=256)
def _rows_struct(count: int) -> struct.Struct:
    return struct.Struct(_ROW.format[0] + _ROW.format[1:] * count)


_set = [Backup.__dict__[name].__set__ for name in _FIELDS]  # the slots' own setters: a frozen class
_new = object.__new__


def _unpacked(rows: bytes, values: list[object]) -> Iterator[Backup]:
    set_id, set_server, set_type, set_status, set_size, set_created, set_expires, set_description = _set
    epoch, micro = _EPOCH, _MICROSECOND
    for id_, created, expires, size, server, kind, status, description in _ROW.iter_unpack(rows):
        backup = _new(Backup)
        set_id(backup, id_)
        set_server(backup, values[server])
        set_type(backup, values[kind])
        set_status(backup, values[status])
        set_size(backup, None if size == _NO_SIZE else size)
        set_created(backup, epoch + created * micro)
        set_expires(backup, None if expires == _NO_TIME else epoch + expires * micro)
        set_description(backup, values[description])
        yield backup


class _Listed(Sequence[Backup]):
    """Backups held otherwise than in a tuple, equal to any sequence of equal backups in the same order."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))


class Backups(_Listed):
    """Listed backups held packed (48 bytes each, about a fifth of a :class:`Backup` instance with
    its values), read back as equal :class:`Backup` values, new ones on each read: a fleet's listing of
    1.5 M backups is held whole in a run. Equal to any sequence of equal backups in the same order."""

    __slots__ = ("_rows", "_table")

    def __init__(self, rows: bytes, table: Table) -> None:
        self._rows = rows
        self._table = table

    @classmethod
    def of(cls, backups: Iterable[Backup], table: Table | None = None) -> Backups:
        table = table or Table()
        return cls(b"".join(map(table.pack, backups)), table)

    def __len__(self) -> int:
        return len(self._rows) // _ROW.size

    def __iter__(self) -> Iterator[Backup]:
        return _unpacked(self._rows, self._table.values)

    @overload
    def __getitem__(self, at: int) -> Backup: ...
    @overload
    def __getitem__(self, at: slice) -> tuple[Backup, ...]: ...
    def __getitem__(self, at: int | slice) -> Backup | tuple[Backup, ...]:
        if isinstance(at, slice):
            return tuple(self)[at]
        size = _ROW.size
        start = (at + len(self) if at < 0 else at) * size
        if not 0 <= start < len(self._rows):
            raise IndexError("backup index out of range")
        return next(_unpacked(self._rows[start : start + size], self._table.values))

    def ids(self) -> list[int]:
        """Every backup's id, in order, without reading the rest."""
        if _LITTLE_ENDIAN:  # a row is six 8-byte words (the four uint32 are two): every sixth
            return memoryview(self._rows).cast("q")[::6].tolist()
        return [row[0] for row in _ROW.iter_unpack(self._rows)]

    def described(self, part: str) -> Iterator[Backup]:
        """The backups whose description contains ``part``, in order; only they are read back."""
        values = self._table.values
        for at, row in enumerate(_ROW.iter_unpack(self._rows)):
            description = values[row[7]]
            if description is not None and part in description:
                yield self[at]

    def find(self, backup_id: int) -> Backup | None:
        """The backup of that id (the first, were it held twice), or None; only it is read back."""
        for at, row in enumerate(_ROW.iter_unpack(self._rows)):
            if row[0] == backup_id:
                return self[at]
        return None

    def __repr__(self) -> str:
        return f"Backups({list(self)!r})"


EMPTY: Final = Backups(b"", Table())


def ids_of(backups: Sequence[Backup]) -> list[int]:
    """The backups' ids, in order (of packed ones without reading them back)."""
    return backups.ids() if isinstance(backups, Backups) else [backup.id for backup in backups]


def find(backups: Sequence[Backup], backup_id: int) -> Backup | None:
    """The first of ``backups`` with that id, or None."""
    if isinstance(backups, Backups):
        return backups.find(backup_id)
    return next((backup for backup in backups if backup.id == backup_id), None)


class Grouped(_Listed):
    """A listing's backups by server (each group in the listing's order), read in server order."""

    __slots__ = ("groups",)

    def __init__(self, groups: dict[int, Backups]) -> None:
        self.groups = groups

    def __len__(self) -> int:
        return sum(map(len, self.groups.values()))

    def __iter__(self) -> Iterator[Backup]:
        for sid in sorted(self.groups):
            yield from self.groups[sid]

    @overload
    def __getitem__(self, at: int) -> Backup: ...
    @overload
    def __getitem__(self, at: slice) -> tuple[Backup, ...]: ...
    def __getitem__(self, at: int | slice) -> Backup | tuple[Backup, ...]:
        return tuple(self)[at]

    def __repr__(self) -> str:
        return f"Grouped({self.groups!r})"


@dataclass(frozen=True)
class Listing:
    """A whole listing: every page read (``pages`` of them), adding up to ``count``."""

    count: int
    backups: Sequence[Backup]
    pages: int = 1

    def of_server(self, server_id: int) -> Sequence[Backup]:
        """The listed backups of one server, in the listing's order."""
        if isinstance(self.backups, Grouped):
            return self.backups.groups.get(server_id, EMPTY)
        return tuple(b for b in self.backups if b.server_id == server_id)

    def to_api(self) -> dict[str, Any]:
        """The API's envelope with every page merged: ``{"count", "results"}``."""
        return {"count": self.count, "results": [b.to_api() for b in self.backups]}


def format_timestamp(value: datetime) -> str:
    """``2025-01-16T03:00:00Z``: UTC, whole seconds kept as the API writes them."""
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
