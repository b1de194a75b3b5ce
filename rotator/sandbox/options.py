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


@dataclass(frozen=True, slots=True)
class FaultOptions:
    """Faults the sandbox injects; all off by default.

    ``latency`` is added to every API request, in seconds. ``error_rate`` is the
    share of API requests answered with a random 500/502/503/504 before they are
    processed. ``rate_limit`` (requests per second) and ``burst`` configure a
    token bucket; beyond it the API answers 429 with ``Retry-After``, and every
    answer carries ``RateLimit-*`` headers unless ``rate_limit_headers`` is
    false (a gateway that only says no). ``drop_rate`` is the share of
    creates whose connection is dropped *after* the backup was created.
    ``fail_rate`` is the share of created backups that end ``failed``.
    ``slow_rate`` is the share of creates that take ``slow_seconds`` (sandbox
    clock) to finish instead of the sandbox's ``create_seconds``: long enough to
    outlast a client's wait.
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

    def __post_init__(self) -> None:
        if not math.isfinite(self.latency) or self.latency < 0:
            raise ValueError(f"latency must be >= 0 seconds, not {self.latency!r}")
        if not math.isfinite(self.slow_seconds) or self.slow_seconds < 0:
            raise ValueError(f"slow_seconds must be >= 0 seconds, not {self.slow_seconds!r}")
        for name in ("error_rate", "drop_rate", "fail_rate", "slow_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate!r}")
        if self.rate_limit is not None and not (math.isfinite(self.rate_limit) and self.rate_limit > 0):
            raise ValueError(f"rate_limit must be > 0 requests per second, not {self.rate_limit!r}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1, not {self.burst!r}")

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
    if name in ("rate_limit", "burst") and value is None:
        return None
    if name == "rate_limit_headers":
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if name == "burst":
        if value != int(value):
            raise ValueError(f"burst must be a whole number, not {value!r}")
        return int(value)
    return float(value)


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    """How a sandbox starts.

    ``fleet`` picks the seeded history (``demo``, ``uniform`` with ``servers`` x
    ``backups_per_server`` backups owned by ``owner``, or ``empty``).
    ``frozen_clock`` freezes the sandbox clock at that instant; otherwise it
    follows real time. A create finishes ``create_seconds`` (sandbox clock)
    after it was accepted. The token is never logged.
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
            f"faults={self.faults!r})"
        )
