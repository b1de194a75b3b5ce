"""The configuration's ``coordination`` section turned into a coordinator, and ``run-once``'s lease.

:func:`coordinator_from_config` builds the backend (reading the etcd password
from its file, which never reaches a log); :func:`config_fingerprint` names
what two instances must share to coordinate on one prefix: the API they act
on and their policies (not their names, listeners or log settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator

import structlog

from rotator import errors
from rotator.config import CoordinationConfig, RotatorConfig
from rotator.coordination import Coordinator, NoCoordination, Role

log = structlog.get_logger("rotator.coordination")


def config_fingerprint(config: RotatorConfig, api_url: str) -> str:
    """16 hex digits of a hash of the API's URL and every policy as configured."""
    document = {
        "api_url": api_url.rstrip("/"),
        "policies": [policy.model_dump(mode="json") for policy in config.policies],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _password(section: CoordinationConfig) -> str | None:
    etcd = section.etcd
    if etcd is None or etcd.password_file is None:
        return None
    try:
        return etcd.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise errors.ConfigError(
            f"coordination.etcd.password_file: cannot read {etcd.password_file}: {why}"
        ) from None


def coordinator_from_config(config: RotatorConfig, api_url: str) -> Coordinator:
    """The configured backend: :class:`NoCoordination`, or an :class:`EtcdCoordinator` (not started)."""
    section = config.coordination
    if section.backend == "none" or section.etcd is None:
        return NoCoordination(section.name)
    # the etcd client only where it is configured: run-once without coordination does not load it
    from rotator.coordination.etcd import EtcdCoordinator, EtcdSettings  # noqa: PLC0415

    etcd = section.etcd
    for label, path in (
        ("ca_file", etcd.ca_file),
        ("cert_file", etcd.cert_file),
        ("key_file", etcd.key_file),
    ):
        if path is not None and not path.is_file():
            raise errors.ConfigError(f"coordination.etcd.{label}: no such file: {path}")
    settings = EtcdSettings(
        endpoints=tuple(etcd.endpoints),
        prefix=etcd.prefix,
        lease_ttl=etcd.lease_ttl.total_seconds(),
        ca_file=etcd.ca_file,
        cert_file=etcd.cert_file,
        key_file=etcd.key_file,
        username=etcd.username,
        password=_password(section),
    )
    return EtcdCoordinator(settings, name=section.name, fingerprint=config_fingerprint(config, api_url))


@contextlib.asynccontextmanager
async def run_once_lease(coordinator: Coordinator) -> AsyncIterator[bool]:
    """``run-once`` under coordination: yields True while this run holds the leader lease (kept alive
    in the background; lost, the run's claims and fences fail), False when another instance leads
    (decline). The lease is released at the end, so that a daemon or the next run takes over at once."""
    if coordinator.role is Role.SINGLE:
        yield True  # no coordination: nothing to hold
        return
    await coordinator.start()
    if not await coordinator.acquire():
        holder = getattr(coordinator, "holder", None) or "another instance"
        log.warning("coordination.declined", name=coordinator.name, leader=holder)
        yield False
        return

    def on_change(role: Role) -> None:
        if role is not Role.LEADER:
            log.error("coordination.lease_lost", name=coordinator.name, role=role.value)

    keeper = asyncio.create_task(coordinator.campaign(on_change, reacquire=False), name="lease-keeper")
    try:
        yield True
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await coordinator.release()
