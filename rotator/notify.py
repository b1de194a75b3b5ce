"""sd_notify with the standard library: tell systemd that rotator is ready, alive, reloading or stopping.

The protocol (``man sd_notify``) is one datagram per message on the unix
socket named by ``$NOTIFY_SOCKET``, newline-separated ``KEY=VALUE`` lines; a
name starting with ``@`` is in the abstract namespace. Without
``$NOTIFY_SOCKET`` (a terminal, cron, a container) every method is a no-op.

The watchdog: systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``) when the
unit has ``WatchdogSec=``; :meth:`Notifier.watchdog_loop` sends ``WATCHDOG=1``
from the event loop at half that interval, so a blocked loop stops the pings
and systemd restarts the service.

A failed send is logged (``notify.failed``) and never raised: telling systemd
is never a reason to stop working.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import structlog

log = structlog.get_logger("rotator.notify")

NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"

Sleep = Callable[[float], Awaitable[None]]


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC= with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(name: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` as an AF_UNIX address: a path, or ``@name`` in the abstract namespace."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    if name.startswith("/"):
        return name
    return None  # e.g. vsock: (systemd >= 254 in VMs); not a unix socket


class Notifier:
    """Messages to the service manager. ``Notifier.from_environ()`` in the daemon; tests pass values in."""

    def __init__(
        self,
        socket_name: str | None,
        *,
        watchdog_usec: int | None = None,
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        self.socket_name = socket_name or None
        self._address = _socket_address(socket_name) if socket_name else None
        if socket_name and self._address is None:
            log.warning("notify.unsupported_socket", socket=socket_name)
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._monotonic_usec = monotonic_usec

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """The notifier systemd asked for, from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is on only when ``WATCHDOG_USEC`` is a positive number and
        ``WATCHDOG_PID``, if set, is this process (as ``sd_watchdog_enabled()``).
        """
        env = os.environ if environ is None else environ
        watchdog: int | None = None
        try:
            watchdog = int(env.get(WATCHDOG_USEC_ENV, ""))
        except ValueError:
            watchdog = None
        owner = env.get(WATCHDOG_PID_ENV)
        if watchdog is not None and owner:
            try:
                if int(owner) != (os.getpid() if pid is None else pid):
                    watchdog = None  # meant for another process (we were started by the service)
            except ValueError:
                watchdog = None
        return cls(env.get(NOTIFY_SOCKET_ENV), watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to tell."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one datagram; ``True`` if it was sent, ``False`` if not (logged)."""
        if self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("notify.failed", socket=self.socket_name, fields=list(fields), error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: configuration loaded, scheduler running (also ends a reload)."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=``: one line for ``systemctl status``, e.g. the next run."""
        return self.notify(*_status(text))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (systemd >= 253 wants both); send ``ready()`` after."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the event loop is alive."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1``: half of ``WATCHDOG_USEC``; ``None`` without a watchdog."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    async def watchdog_loop(
        self, *, on_beat: Callable[[], None] | None = None, sleep: Sleep = asyncio.sleep
    ) -> None:
        """Send ``WATCHDOG=1`` at :meth:`watchdog_interval` until cancelled; returns at once without one.

        ``on_beat`` is called at each ping (e.g. the health state's loop heartbeat).
        """
        interval = self.watchdog_interval()
        if interval is None:
            return
        log.debug("notify.watchdog_started", interval_s=interval)
        while True:
            self.watchdog()
            if on_beat is not None:
                on_beat()
            await sleep(interval)


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return (f"STATUS={' '.join(text.split())}",)  # one line: a newline would start another field
