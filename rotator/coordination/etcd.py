"""``coordination.backend: etcd``: a leader lease and per-slot claims on etcd v3, over its JSON gateway.

The keys, under ``prefix`` (default ``/rotator/``)::

    PREFIX leader                          {"name", "fingerprint"}, on the leader's lease
    PREFIX config                          the leader's configuration fingerprint, on its lease
    PREFIX claims/POLICY/SERVER/SLOT/N     {"name"}, on the leader's lease: attempt N's create is its

How it holds (the leader key's lease is the only clock that matters):

* **Election.** An instance grants itself a lease of ``lease_ttl`` and writes
  the leader key in a transaction that succeeds only where the key does not
  exist (``create_revision == 0``). The key's create revision names the
  leadership (its *term*). Standbys watch the key and try again when it goes.
* **Keepalive.** The leader renews its lease every ``lease_ttl / 3``. It may
  act only until ``lease_ttl / 2`` after it *sent* the last renewal that etcd
  confirmed: etcd cannot expire the lease before ``lease_ttl`` after it
  received it, so a leader that cannot reach etcd (down, partitioned, paused)
  stops acting while its lease still stands, before anyone else can lead.
* **Fencing.** Every create first claims its ``(policy, server, slot,
  attempt)`` key in a transaction that also compares the leader key's create
  revision and lease with ours, and every batch of deletes is preceded by the
  same comparison: a leader that was paused past its TTL and wakes up fails
  its claim or its fence, and stops within one step.
* **One configuration per prefix.** The leader writes its configuration's
  fingerprint with the leader key; an instance with another fingerprint on the
  same prefix refuses to start (or stops) with one line.

Every request goes to one endpoint; one that does not answer (or answers
"unavailable") passes it to the next. Transactions are written so that one
sent again after a lost answer is recognised as ours (the key holds our lease).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import httpx
import structlog

from rotator import errors
from rotator.coordination import OnChange, Role, claim_path

log = structlog.get_logger("rotator.coordination")

Sleep = Callable[[float], Awaitable[None]]
MIN_LEASE_TTL: Final = 2.0  # etcd raises shorter TTLs to its own minimum anyway


@dataclass(frozen=True)
class EtcdSettings:
    """Where etcd is and how to talk to it (``coordination.etcd``, resolved)."""

    endpoints: tuple[str, ...]
    prefix: str = "/rotator/"
    lease_ttl: float = 15.0
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, a log or an error

    @property
    def request_timeout(self) -> float:
        """One request's bound: a few of them fit in the ``lease_ttl / 2`` a leader may act on."""
        return max(0.5, min(5.0, self.lease_ttl / 6))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def _first_kv(answer: dict[str, Any], index: int) -> dict[str, Any] | None:
    """The first key-value of the ``index``-th range response of a transaction's answer."""
    responses = answer.get("responses") or []
    if index >= len(responses):
        return None
    kvs = (responses[index].get("response_range") or {}).get("kvs") or []
    return dict(kvs[0]) if kvs else None


def _json_value(kv: dict[str, Any] | None) -> dict[str, Any]:
    if kv is None:
        return {}
    try:
        value = json.loads(_unb64(kv.get("value", "")))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _ssl_context(settings: EtcdSettings) -> ssl.SSLContext | bool:
    if settings.ca_file is None and settings.cert_file is None:
        return True
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(
            f"coordination.etcd.ca_file: cannot load {settings.ca_file}: {exc.strerror or exc}"
        ) from None
    if settings.cert_file is not None:
        try:
            context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise errors.ConfigError(
                f"coordination.etcd.cert_file/key_file: cannot load {settings.cert_file} with "
                f"{settings.key_file}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
    return context


def _describe_transport(exc: httpx.HTTPError | ssl.SSLError, endpoint: str = "") -> str:
    """One phrase for a request that got no answer; a TLS failure says where to look."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 8:
        chain.append(link)
        link = link.__cause__ or link.__context__
    tls = next((link for link in chain if isinstance(link, ssl.SSLError)), None)
    text = next((str(link) for link in chain if str(link)), type(exc).__name__)
    if tls is not None or "SSL" in text:
        reason = getattr(tls, "reason", None) or text
        if "ALERT" in str(reason).upper():  # the server refused our certificate (or its absence)
            return (
                f"TLS handshake refused by etcd ({reason}): check coordination.etcd.cert_file and key_file "
                "(a client certificate etcd trusts)"
            )
        return (
            f"TLS handshake failed ({reason}): check coordination.etcd.ca_file, cert_file and key_file "
            "and the endpoints' scheme"
        )
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if endpoint.startswith("https://") and any(isinstance(link, ConnectionResetError) for link in chain):
        # a plain-http server answering a TLS hello resets the connection (or the TLS layer sees EOF)
        return (
            f"TLS handshake failed ({text}): is the endpoint really https? check coordination.etcd's "
            "endpoints, ca_file, cert_file and key_file"
        )
    if endpoint.startswith("https://") and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        # TLS 1.3: a server that wants a client certificate closes the connection after the handshake
        return (
            f"{text} right after the TLS handshake: does etcd require a client certificate? "
            "(check coordination.etcd.cert_file and key_file)"
        )
    return text


class EtcdGateway:
    """etcd's v3 JSON gateway (``/v3/...``, base64 keys and values) over httpx, across endpoints."""

    UNAVAILABLE_CODES: Final = frozenset({4, 14})  # deadline exceeded, unavailable (no leader, ...)

    def __init__(self, settings: EtcdSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(
            verify=_ssl_context(settings),
            timeout=httpx.Timeout(settings.request_timeout),
            transport=transport,
            trust_env=False,
        )
        self._current = 0
        self._token: str | None = None
        self.endpoint = settings.endpoints[0]

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token is not None else {}

    async def authenticate(self) -> None:
        """Trade the username and password for a token (when configured)."""
        if self.settings.username is None:
            return
        self._token = None
        body = {"name": self.settings.username, "password": self.settings.password or ""}
        answer = await self.call("auth/authenticate", body, authenticating=True)
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise errors.CoordinationError("etcd's answer to auth/authenticate holds no token")
        self._token = token

    async def call(self, path: str, body: dict[str, Any], *, authenticating: bool = False) -> dict[str, Any]:
        """POST ``body`` to ``/v3/PATH`` on the first endpoint that answers; its JSON answer."""
        failures: list[str] = []
        endpoints = self.settings.endpoints
        reauthenticated = False
        index = 0
        while index < len(endpoints):
            endpoint = endpoints[(self._current + index) % len(endpoints)]
            try:
                response = await self._http.post(f"{endpoint}/v3/{path}", json=body, headers=self._headers())
                answer = response.json()
            except (
                httpx.HTTPError,
                ssl.SSLError,
            ) as exc:  # httpcore lets a TLS alert after the handshake out
                failures.append(f"{endpoint}: {_describe_transport(exc, endpoint)}")
                index += 1
                continue
            except ValueError:
                failures.append(f"{endpoint}: answered something that is not JSON")
                index += 1
                continue
            if not isinstance(answer, dict):
                failures.append(f"{endpoint}: answered JSON that is not an object")
                index += 1
                continue
            if response.status_code == 200:
                self._current = (self._current + index) % len(endpoints)
                self.endpoint = endpoint
                return answer
            code = answer.get("code")
            message = str(answer.get("message") or answer.get("error") or response.reason_phrase)
            if authenticating and code == 9:  # authentication is not enabled: no token needed
                return {"token": None}
            if authenticating and code == 3:
                raise errors.CoordinationRefused(
                    f"etcd at {endpoint} rejected the credentials of user {self.settings.username!r} "
                    "(check coordination.etcd.username and password_file)"
                )
            if code == 16 or response.status_code == 401 or "user name is empty" in message:
                if self.settings.username is not None and not authenticating and not reauthenticated:
                    reauthenticated = True  # the token expired: one new one, then the same request
                    await self.authenticate()
                    continue
                raise errors.CoordinationRefused(
                    f"etcd at {endpoint} requires authentication ({message}): set "
                    "coordination.etcd.username and password_file"
                )
            if code == 7 or response.status_code == 403:
                raise errors.CoordinationRefused(
                    f"etcd at {endpoint} denied {path} under {self.settings.prefix!r} ({message}): "
                    f"grant user {self.settings.username!r} read-write on the prefix"
                )
            if code in self.UNAVAILABLE_CODES or response.status_code >= 500:
                failures.append(f"{endpoint}: {message}")
                index += 1
                continue
            raise errors.CoordinationError(f"etcd at {endpoint} refused {path}: {message}")
        raise errors.CoordinationUnavailable("no etcd endpoint answered: " + "; ".join(failures))

    async def wait_for_delete(self, key: str, after_revision: int, within: float) -> bool:
        """Watch ``key`` after ``after_revision`` until it is deleted (True), at most ``within`` seconds."""
        body = {"create_request": {"key": _b64(key), "start_revision": str(after_revision + 1)}}
        bound = self.settings.request_timeout
        try:
            async with asyncio.timeout(within):
                async with self._http.stream(
                    "POST",
                    f"{self.endpoint}/v3/watch",
                    json=body,
                    headers=self._headers(),
                    timeout=httpx.Timeout(bound, read=None),
                ) as response:
                    if response.status_code != 200:
                        return False
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        result = json.loads(line).get("result") or {}
                        if any(event.get("type") == "DELETE" for event in result.get("events") or []):
                            return True
        except (TimeoutError, httpx.HTTPError, ssl.SSLError, ValueError, AttributeError):
            return False
        return False


class EtcdCoordinator:
    """The etcd backend of :class:`rotator.coordination.Coordinator` (see the module's docstring)."""

    def __init__(
        self,
        settings: EtcdSettings,
        *,
        name: str,
        fingerprint: str,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.fingerprint = fingerprint
        self.ttl = max(settings.lease_ttl, MIN_LEASE_TTL)
        self.gateway = EtcdGateway(settings, transport=transport)
        self._monotonic = monotonic
        self._sleep = sleep
        self.leader_key = f"{settings.prefix}leader"
        self.config_key = f"{settings.prefix}config"
        self._lease: int | None = None
        self._term: int | None = None  # the leader key's create revision while we lead
        self._valid_until = -math.inf  # monotonic: acting is allowed before this
        self._leading = False
        self._role = Role.STANDBY
        self._on_change: OnChange | None = None
        self.holder: str | None = None  # who leads, as last seen
        self._seen_revision = 0
        self.last_error: str | None = None
        self._warned_ttl = False

    # -- the interface -----------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int | None:
        """The leadership this instance holds now (the leader key's create revision), or None."""
        return self._term if self.is_leader() else None

    async def start(self) -> None:
        """Authenticate, and refuse a prefix that another configuration leads."""
        await self.gateway.authenticate()
        answer = await self.gateway.call(
            "kv/txn",
            {"success": [self._range(self.leader_key), self._range(self.config_key)]},
        )
        self._check_config(_first_kv(answer, 0), _first_kv(answer, 1))

    async def acquire(self) -> bool:
        await self._ensure_lease()
        assert self._lease is not None
        value = json.dumps({"name": self.name, "fingerprint": self.fingerprint})
        answer = await self.gateway.call(
            "kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(self.leader_key),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0",
                    }
                ],
                "success": [
                    self._put(self.leader_key, value),
                    self._put(self.config_key, json.dumps({"fingerprint": self.fingerprint})),
                ],
                "failure": [self._range(self.leader_key), self._range(self.config_key)],
            },
        )
        revision = int(answer.get("header", {}).get("revision", 0))
        if answer.get("succeeded"):
            self._lead(revision)
            return True
        leader, config = _first_kv(answer, 0), _first_kv(answer, 1)
        self._check_config(leader, config)
        if leader is not None and int(leader.get("lease", 0)) == self._lease:
            self._lead(int(leader["create_revision"]))  # still ours: our lease outlived a lost answer
            return True
        self.holder = _json_value(leader).get("name") if leader is not None else None
        self._seen_revision = revision
        self._leading = False
        self._term = None
        return False

    def is_leader(self) -> bool:
        return self._leading and self._monotonic() < self._valid_until

    async def claim(self, policy: str, server_id: int, slot: datetime, attempt: int) -> None:
        term, lease = self._confirmed_locally()
        key = f"{self.settings.prefix}{claim_path(policy, server_id, slot, attempt)}"
        sent = self._monotonic()
        answer = await self._fenced_call(
            {
                "compare": [
                    *self._ours(term, lease),
                    {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                ],
                "success": [self._put(key, json.dumps({"name": self.name}))],
                "failure": [self._range(key), self._range(self.leader_key)],
            }
        )
        if not answer.get("succeeded"):
            leader = _first_kv(answer, 1)
            if leader is None or int(leader.get("create_revision", 0)) != term:
                self._lost("the leader key is not ours any more")
                raise errors.NotLeader(f"{self.name} is no longer the leader: nothing created")
            taken = _first_kv(answer, 0)
            if taken is not None and int(taken.get("lease", 0)) != lease:
                owner = _json_value(taken).get("name", "another instance")
                raise errors.ClaimTaken(
                    f"attempt {attempt} of slot {claim_path(policy, server_id, slot, attempt)} "
                    f"is claimed by {owner}: not created"
                )
            # claimed by this leadership before (a create sent again after an unknown outcome)
        self._in_time(sent)

    async def fence(self) -> None:
        term, lease = self._confirmed_locally()
        sent = self._monotonic()
        answer = await self._fenced_call({"compare": self._ours(term, lease)})
        if not answer.get("succeeded"):
            self._lost("the leader key is not ours any more")
            raise errors.NotLeader(f"{self.name} is no longer the leader: nothing deleted")
        self._in_time(sent)

    async def release(self) -> None:
        lease, self._lease = self._lease, None
        was_leading = self._leading
        self._leading, self._term = False, None
        if lease is not None:
            try:
                await self.gateway.call("lease/revoke", {"ID": str(lease)})
            except errors.CoordinationError as exc:
                log.warning("coordination.release_failed", error=str(exc), expires_in_s=self.ttl)
                return
        if was_leading:
            log.info("coordination.released", name=self.name)

    async def campaign(self, on_change: OnChange, *, reacquire: bool = True) -> None:
        """Keep the lease alive while leading; otherwise take over when the leader key goes.

        ``reacquire=False`` (``run-once``): only keep the leadership already held; once it is
        lost, return.
        """
        self._on_change = on_change
        self._role = Role.LEADER if self.is_leader() else Role.STANDBY
        on_change(self._role)
        while True:
            if self._leading:
                await self._keep()
                continue
            if not reacquire:
                return
            try:
                acquired = await self.acquire()
            except errors.CoordinationUnavailable as exc:
                self._unreachable(exc)
                await self._sleep(self._retry_interval)
                continue
            if acquired:
                self._reachable()
                self._set_role(Role.LEADER, lease=self._lease, term=self._term)
                continue
            self._reachable()
            self._set_role(Role.STANDBY, holder=self.holder)
            # until the leader key is deleted; at most a third of the TTL, to keep our lease alive
            await self.gateway.wait_for_delete(self.leader_key, self._seen_revision, self.ttl / 3)

    async def aclose(self) -> None:
        await self.gateway.aclose()

    # -- the parts -----------------------------------------------------------------

    @property
    def _keepalive_interval(self) -> float:
        return self.ttl / 3

    @property
    def _retry_interval(self) -> float:
        return max(0.1, min(1.0, self.ttl / 10))

    async def _keep(self) -> None:
        """One step of a leader: wait for the next renewal (or the end of its acting time), renew."""
        now = self._monotonic()
        if now >= self._valid_until:
            self._leading, self._term = False, None
            self._set_role(
                Role.UNREACHABLE,
                reason=f"no renewal of the lease confirmed within lease_ttl/2 ({self.ttl / 2:g}s)",
                error=self.last_error,
            )
            return
        pause = self._retry_interval if self.last_error else self._keepalive_interval
        await self._sleep(max(0.0, min(pause, self._valid_until - now)))
        if self._monotonic() >= self._valid_until:
            return  # the next step says so
        try:
            alive = await self._keepalive()
        except errors.CoordinationUnavailable as exc:
            self._unreachable(exc)
            return
        self._reachable()
        if not alive:
            self._lease = None
            self._lost("the lease expired")

    async def _ensure_lease(self) -> None:
        if self._lease is not None and await self._keepalive():
            return
        sent = self._monotonic()
        answer = await self.gateway.call("lease/grant", {"TTL": math.ceil(self.ttl)})
        self._lease = int(answer["ID"])
        granted = int(answer.get("TTL", 0) or 0)
        if granted > math.ceil(self.ttl) and not self._warned_ttl:
            self._warned_ttl = True  # failover takes etcd's TTL; acting still ends at ours / 2
            log.warning("coordination.lease_ttl_raised", asked_s=math.ceil(self.ttl), granted_s=granted)
        self._valid_until = sent + self.ttl / 2

    async def _keepalive(self) -> bool:
        """Renew our lease; False when etcd says it is gone."""
        assert self._lease is not None
        sent = self._monotonic()
        answer = await self.gateway.call("lease/keepalive", {"ID": str(self._lease)})
        result = answer.get("result", answer)
        if int(result.get("TTL", 0) or 0) <= 0:
            self._lease = None
            return False
        self._valid_until = sent + self.ttl / 2
        return True

    def _lead(self, term: int) -> None:
        self._leading, self._term, self.holder = True, term, self.name

    def _confirmed_locally(self) -> tuple[int, int]:
        if not self.is_leader() or self._term is None or self._lease is None:
            why = "it is a standby" if not self._leading else "its lease is not confirmed (etcd unreachable?)"
            raise errors.NotLeader(f"{self.name} may not act: {why}")
        return self._term, self._lease

    def _in_time(self, sent: float) -> None:
        if self._monotonic() - sent >= self.ttl / 2:
            raise errors.NotLeader(f"{self.name}'s confirmation from etcd came too late to act on")

    async def _fenced_call(self, txn: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.gateway.call("kv/txn", txn)
        except errors.CoordinationUnavailable as exc:
            self._unreachable(exc)
            raise errors.NotLeader(f"{self.name} cannot confirm its leadership: {exc}") from None
        except errors.CoordinationError as exc:  # refused (a token that cannot be renewed, ...)
            log.error("coordination.fence_refused", error=str(exc))
            raise errors.NotLeader(f"{self.name} cannot confirm its leadership: {exc}") from None

    def _ours(self, term: int, lease: int) -> list[dict[str, Any]]:
        key = _b64(self.leader_key)
        return [
            {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": str(term)},
            {"key": key, "target": "LEASE", "result": "EQUAL", "lease": str(lease)},
        ]

    def _put(self, key: str, value: str) -> dict[str, Any]:
        return {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(self._lease)}}

    @staticmethod
    def _range(key: str) -> dict[str, Any]:
        return {"request_range": {"key": _b64(key)}}

    def _check_config(self, leader: dict[str, Any] | None, config: dict[str, Any] | None) -> None:
        theirs = _json_value(config).get("fingerprint") if config is not None else None
        if theirs is not None and theirs != self.fingerprint:
            holder = _json_value(leader).get("name", "an instance")
            raise errors.CoordinationRefused(
                f"etcd prefix {self.settings.prefix!r} is in use by another configuration "
                f"(led by {holder}, fingerprint {theirs}; this one is {self.fingerprint}): give each "
                "configuration its own coordination.etcd.prefix, or stop the old instances first"
            )

    def _lost(self, reason: str) -> None:
        if self._leading:
            self._leading, self._term = False, None
            self._set_role(Role.STANDBY, reason=reason)

    def _unreachable(self, exc: errors.CoordinationError) -> None:
        first = self.last_error is None
        self.last_error = str(exc)
        if first:
            log.error("coordination.unreachable", error=str(exc), acting=self.is_leader())
        if not self._leading:
            self._set_role(Role.UNREACHABLE, error=str(exc))

    def _reachable(self) -> None:
        if self.last_error is not None:
            log.info("coordination.reachable", endpoint=self.gateway.endpoint)
            self.last_error = None

    def _set_role(self, role: Role, **why: Any) -> None:
        if role is self._role:
            return
        self._role = role
        level = log.warning if role is Role.UNREACHABLE or "reason" in why else log.info
        level("coordination.role", role=role.value, name=self.name, acting=role is Role.LEADER, **why)
        if self._on_change is not None:
            self._on_change(role)
