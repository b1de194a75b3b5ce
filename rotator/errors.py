"""rotator's one exception tree.

Every error that leaves a rotator module is one of these; foreign exceptions
(httpx, pydantic, YAML, OS) are translated where they happen, with
``raise ... from exc``, so callers catch only what is drawn here::

    RotatorError                      (exit 1 unless said otherwise)
    ├── ConfigError                   bad configuration or missing token (exit 78)
    ├── UsageError                    a command that cannot go on as given (exit 2)
    └── ApiError                      anything that went wrong talking to the API
        ├── TransportError            no HTTP answer: connect error, timeout, lost connection
        ├── HTTPStatusError           the API answered with an error status
        │   ├── BadRequest            400
        │   ├── Unauthorized          401 / 403
        │   ├── NotFound              404
        │   ├── RateLimited           429 (``retry_after`` in seconds, if the API said)
        │   ├── ServerError           5xx
        │   └── UnexpectedStatus      any other status the documentation does not list
        ├── InvalidResponse           an answer rotator cannot trust (not JSON, an empty body,
        │   │                         wrong shape or types, a body beyond the size bound, a
        │   │                         ``next`` link to another origin or round in a loop, a
        │   │                         2xx DELETE whose body is garbage)
        │   └── IncompleteListing     a listing that could not be read whole (``count`` disagrees
        │                             with the pages, a backup listed twice, a count beyond
        │                             the listing bound)
        └── CreateOutcomeUnknown      a create whose outcome cannot be told; nothing was retried
    CoordinationError                 etcd (coordination.backend) could not be used as configured
    ├── CoordinationUnavailable       no etcd endpoint answered (down, unreachable, TLS handshake)
    ├── CoordinationRefused           etcd refused us: wrong credentials, or another configuration
    │                                 on the same prefix (exit 78)
    └── NotLeader                     this instance may not act now (leadership not held, lost,
        │                             or not confirmable)
        └── ClaimTaken                the (policy, server, slot, attempt) is claimed by another

No message, ``str()`` or ``repr()`` of these ever contains the API token: the
client never puts request headers into them, and the token is held by
:class:`rotator.secrets.ApiToken`, whose ``repr`` is masked.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ABANDONED = 75  # EX_TEMPFAIL: run-once was stopped (SIGTERM) before it finished; the next run finishes
EXIT_DECLINED = 73  # run-once with coordination: another instance holds the lease; nothing was done
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd units use RestartPreventExitStatus=78


class RotatorError(Exception):
    """Base of every error rotator raises on purpose."""

    exit_code: int = EXIT_FAILURE


class ConfigError(RotatorError):
    """The configuration (file, environment, token source, CLI values) is invalid."""

    exit_code = EXIT_CONFIG


class UsageError(RotatorError):
    """The command cannot go on as given (e.g. a confirmation without a terminal)."""

    exit_code = EXIT_USAGE


class ApiError(RotatorError):
    """A call to the provider's API failed.

    ``method`` and ``path`` name the request (the path without the query's
    secrets: rotator never puts a secret in a URL).
    """

    def __init__(self, message: str, *, method: str = "", path: str = "", status: int | None = None) -> None:
        self.message = message
        self.method = method
        self.path = path
        self.status = status
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f"{self.method} {self.path}".strip()
        status = f" ({self.status})" if self.status is not None else ""
        return f"{where}{status}: {self.message}" if where else self.message


class TransportError(ApiError):
    """No HTTP answer: the connection failed, timed out or was lost.

    ``request_sent`` is False only when the request surely never reached the
    API (the connection could not be made), so it cannot have had an effect.
    """

    def __init__(self, message: str, *, method: str = "", path: str = "", request_sent: bool = True) -> None:
        self.request_sent = request_sent
        super().__init__(message, method=method, path=path)


class HTTPStatusError(ApiError):
    """The API answered with an error status; ``message`` is the server's own text when it sent one."""


class BadRequest(HTTPStatusError):
    """400: the API rejected the request's parameters."""


class Unauthorized(HTTPStatusError):
    """401 or 403: the API rejected the token."""


class NotFound(HTTPStatusError):
    """404: the server or backup does not exist."""


class RateLimited(HTTPStatusError):
    """429: too many requests; ``retry_after`` is the wait the API asked for, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, method=method, path=path, status=status)


class ServerError(HTTPStatusError):
    """5xx: the API failed on its side."""


class UnexpectedStatus(HTTPStatusError):
    """A status the documentation does not list for this operation."""


class InvalidResponse(ApiError):
    """An answer that rotator cannot trust: not JSON, the wrong shape, too big, a foreign link.

    Never retried: an API that answers garbage once is not asked to act again
    on the same call (for a create or a delete, its outcome is unknown).
    """


class IncompleteListing(InvalidResponse):
    """A listing could not be read whole; nothing may be pruned on it."""


class TooLate(ApiError):
    """A request not sent (again): what it was decided on has grown too old to act on.

    A DELETE throttled or failing long enough for its view to pass ``max_view_age``
    is not sent on that view: the caller reads the server again and plans anew.
    """


class CreateOutcomeUnknown(ApiError):
    """A create's answer was lost and the listing cannot tell whether it happened.

    rotator does not create a second backup in that case; ``candidates`` are the
    ids of backups that might be the one created (possibly none were seen).
    """

    def __init__(
        self, message: str, *, method: str = "POST", path: str = "", candidates: tuple[int, ...] = ()
    ) -> None:
        self.candidates = candidates
        super().__init__(message, method=method, path=path)


class CoordinationError(RotatorError):
    """etcd, the coordination backend, could not be used as configured."""


class CoordinationUnavailable(CoordinationError):
    """No etcd endpoint answered: down, unreachable, timed out, or its TLS handshake failed."""


class CoordinationRefused(CoordinationError):
    """etcd refused this instance: wrong credentials, or another configuration uses the same prefix."""

    exit_code = EXIT_CONFIG


class NotLeader(CoordinationError):
    """This instance may not act now: it does not hold the leadership, lost it, or cannot confirm it."""


class ClaimTaken(NotLeader):
    """The (policy, server, slot, attempt) was claimed by another instance: its create is not ours to send."""
