"""What a sandbox is started with: the fleet, the token, the clock, and the faults to inject."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal

DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 -- the sandbox's well-known demo token
DEFAULT_PAGE_SIZE = 10
DEFAULT_CREATE_SECONDS = 30.0
DEFAULT_SLOW_SECONDS = 3600.0

FleetKind = Literal["demo", "uniform", "empty"]
FLEET_KINDS: tuple[FleetKind, ...] = ("demo", "uniform", "empty")


RATE_FIELDS = (
    "error_rate",
    "drop_rate",
    "fail_rate",
    "slow_rate",
    "page_shift_rate",
    "lie_known_id_rate",
    "lie_other_server_rate",
    "empty_page_rate",
    "third_party_delete_rate",
)
_FLAG_FIELDS = frozenset({"rate_limit_headers", "auth_echo"})
_OPTIONAL_FIELDS = frozenset({"rate_limit", "burst", "description_max_length"})
_WHOLE_FIELDS = frozenset({"burst", "description_max_length"})


@dataclass(frozen=True, slots=True)
class FaultOptions:
    """Faults the sandbox injects; all off by default.

    Failures of the transport and the gateway:

    - ``latency`` is added to every API request, in seconds.
    - ``error_rate`` is the share of API requests answered with a random
      500/502/503/504 before they are processed.
    - ``rate_limit`` (requests per second) and ``burst`` configure a token
      bucket; beyond it the API answers 429 with ``Retry-After``, and every
      answer carries ``RateLimit-*`` headers unless ``rate_limit_headers`` is
      false (a gateway that only says no).
    - ``drop_rate`` is the share of creates whose connection is dropped *after*
      the backup was created.
    - ``create_answer_delay`` holds the answer to every create that many
      seconds (the injected sleep: real time on a socket) *after* the backup
      was created, long enough to outlast a client's read timeout.

    Backups that misbehave:

    - ``fail_rate`` is the share of created backups that end ``failed``.
    - ``slow_rate`` is the share of creates that take ``slow_seconds`` (sandbox
      clock) to finish instead of the sandbox's ``create_seconds``: long enough
      to outlast a client's wait.

    An API that lags, shifts and lies:

    - ``api_clock_offset`` (seconds, negative: behind) is how far the API's own
      clock is off the sandbox clock: every time it writes for a new backup
      (``created_at``; ``expires_at`` of automatic ones) is the sandbox clock's
      now plus this. Creates still finish, and automatic backups still fall
      due and expire, on the sandbox clock.
    - ``listing_lag`` (seconds of sandbox clock) makes ``GET /backups/`` show
      every backup as it was that long ago (eventual consistency): new ones
      show late, deleted ones linger, status changes show late. Creates and
      deletes act on the true state at once. It applies to changes made while
      it is on.
    - ``page_shift_rate`` is the share of listing pages after the first before
      whose answer a third party deletes a backup of an earlier page of the
      same listing and creates a manual one that matches it (not for
      ``backup_type=automatic`` listings): ``count`` stays, and the requested
      page's first backup slides onto the page already read (page-number
      pagination without a snapshot). The third party acts on the true
      state, so under ``listing_lag`` the shift shows only once the lag passed.
    - ``empty_page_rate`` is the share of listing pages other than the last
      answered with no results, ``count``, ``next`` and ``previous`` unchanged.
    - ``third_party_delete_rate`` is the share of API requests (after the token
      check) before which a third party deletes the newest completed manual
      backup of a random server.
    - ``lie_known_id_rate`` and ``lie_other_server_rate`` are shares of creates
      that do create the backup but answer with the id of another, older
      backup of the server, or with another server in ``server`` (truthfully
      when there is no such backup or server).
    - ``description_max_length``, when set, silently cuts a longer create
      description to that many characters (stored and answered cut) instead
      of refusing one over 255 with a 400.
    - ``auth_echo`` makes a 401's detail echo the request's ``Authorization``
      header, token and all (a debug-mode API).
    """

    latency: float = 0.0
    error_rate: float = 0.0
    rate_limit: float | None = None
    burst: int | None = None
    rate_limit_headers: bool = True
    drop_rate: float = 0.0
    fail_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = DEFAULT_SLOW_SECONDS
    api_clock_offset: float = 0.0
    listing_lag: float = 0.0
    create_answer_delay: float = 0.0
    page_shift_rate: float = 0.0
    description_max_length: int | None = None
    auth_echo: bool = False
    lie_known_id_rate: float = 0.0
    lie_other_server_rate: float = 0.0
    empty_page_rate: float = 0.0
    third_party_delete_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency", "slow_seconds", "listing_lag", "create_answer_delay"):
            seconds = getattr(self, name)
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"{name} must be >= 0 seconds, not {seconds!r}")
        if not math.isfinite(self.api_clock_offset):
            raise ValueError(
                f"api_clock_offset must be a finite number of seconds, not {self.api_clock_offset!r}"
            )
        for name in RATE_FIELDS:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate!r}")
        if self.rate_limit is not None and not (math.isfinite(self.rate_limit) and self.rate_limit > 0):
            raise ValueError(f"rate_limit must be > 0 requests per second, not {self.rate_limit!r}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1, not {self.burst!r}")
        limit = self.description_max_length
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"description_max_length must be a whole number >= 0, not {limit!r}")

    @property
    def bucket_size(self) -> int:
        """The token bucket's capacity: ``burst``, or one second's worth of requests."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate_limit or 1.0))

    def updated(self, changes: dict[str, Any]) -> FaultOptions:
        """A copy with ``changes`` applied; raise ``ValueError`` on an unknown name or a bad value."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault option(s): {', '.join(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            checked[name] = _check_type(name, value)
        return replace(self, **checked)

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON object."""
        return asdict(self)


def _check_type(name: str, value: Any) -> Any:
    if name in _OPTIONAL_FIELDS and value is None:
        return None
    if name in _FLAG_FIELDS:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if name in _WHOLE_FIELDS:
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be a whole number, not {value!r}")
        return int(value)
    return float(value)


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    """How a sandbox starts.

    ``fleet`` picks the seeded history (``demo``, ``uniform`` with ``servers`` x
    ``backups_per_server`` backups owned by ``owner``, or ``empty``).
    ``frozen_clock`` freezes the sandbox clock at that instant; otherwise it
    follows real time. A create finishes ``create_seconds`` (sandbox clock)
    after it was accepted. ``log_listings`` writes a ``listed`` event for the
    first page of every listing read through the API (when a client's view was
    read). The token is never logged.
    """

    token: str = DEFAULT_TOKEN
    page_size: int = DEFAULT_PAGE_SIZE
    seed: int = 0
    fleet: FleetKind = "demo"
    servers: int = 4
    backups_per_server: int = 14
    owner: str = "nightly"
    create_seconds: float = DEFAULT_CREATE_SECONDS
    frozen_clock: datetime | None = None
    faults: FaultOptions = field(default_factory=FaultOptions)
    log_listings: bool = False

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("token must not be empty")
        if self.page_size < 1:
            raise ValueError(f"page_size must be >= 1, not {self.page_size!r}")
        if self.fleet not in FLEET_KINDS:
            raise ValueError(f"fleet must be one of {', '.join(FLEET_KINDS)}, not {self.fleet!r}")
        if self.servers < 0 or self.backups_per_server < 0:
            raise ValueError("servers and backups_per_server must be >= 0")
        if not math.isfinite(self.create_seconds) or self.create_seconds < 0:
            raise ValueError(f"create_seconds must be >= 0, not {self.create_seconds!r}")
        if self.frozen_clock is not None and self.frozen_clock.utcoffset() is None:
            raise ValueError("frozen_clock must be an aware datetime")

    def __repr__(self) -> str:
        # The token is a secret even in the sandbox: keep it out of reprs and logs.
        return (
            f"SandboxOptions(token='***', page_size={self.page_size}, seed={self.seed}, "
            f"fleet={self.fleet!r}, servers={self.servers}, "
            f"backups_per_server={self.backups_per_server}, owner={self.owner!r}, "
            f"create_seconds={self.create_seconds}, frozen_clock={self.frozen_clock!r}, "
            f"faults={self.faults!r}, log_listings={self.log_listings})"
        )
