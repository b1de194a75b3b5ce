"""sd_notify end to end: a real process, a fake ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``, real signals.

The test listens on a unix datagram socket, as systemd does, starts the daemon
with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set, and expects: ``READY=1``
(with a ``STATUS=`` naming the policy), ``WATCHDOG=1`` at about half of
``WATCHDOG_USEC`` and never later than it, ``RELOADING=1`` with
``MONOTONIC_USEC=`` on SIGHUP followed by ``READY=1``, and ``STOPPING=1`` on
SIGTERM, then exit 0.

It runs twice: on a stand-in daemon (a few lines driving
:class:`rotator.notify.Notifier`), which shows that the expectations hold for
the notifier itself; and on ``rotator run`` against the sandbox.
"""

from __future__ import annotations

import itertools
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from bench.child_env import clean_env
from bench.notify_socket import Message, NotifySocket
from rotator.sandbox import RunningSandbox, SandboxOptions, running_sandbox

DEADLINE = 25.0  # seconds any one condition may take before the test fails
WATCHDOG_USEC = 1_000_000  # pings expected every 0.5 s, never 1 s apart
PINGS = 5

STAND_IN = """
import asyncio, signal, sys
from rotator.notify import Notifier

async def main() -> int:
    notifier = Notifier.from_environ()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    def reload() -> None:
        notifier.reloading()
        notifier.ready("next run nightly 2025-01-17T03:00Z (reloaded)")
    def terminate() -> None:
        notifier.stopping()
        stop.set()
    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, terminate)
    watchdog = asyncio.create_task(notifier.watchdog_loop())
    notifier.ready("next run nightly 2025-01-17T03:00Z")
    await stop.wait()
    watchdog.cancel()
    return 0

sys.exit(asyncio.run(main()))
"""


def wait_for(
    process: subprocess.Popen[str], condition: Callable[[], object], what: str, timeout: float = DEADLINE
) -> None:
    """Poll ``condition`` against a deadline; fail at once if the process died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the process exited {process.returncode} before {what}:\n{stderr[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def first_index(messages: list[Message], key: str, start: int = 0) -> int | None:
    return next((i for i, m in enumerate(messages) if i >= start and key in m.fields), None)


@pytest.fixture(name="notify_socket")
def fixture_notify_socket() -> Iterator[NotifySocket]:
    """A fake systemd notify socket, listened on from a thread."""
    listener = NotifySocket()
    yield listener
    listener.close(DEADLINE)


@pytest.fixture(name="sandbox_server")
def fixture_sandbox_server() -> Iterator[RunningSandbox]:
    """The sandbox on a loopback port (the daemon's catch-up and runs talk to it)."""
    with running_sandbox(SandboxOptions(fleet="uniform", servers=2, backups_per_server=3)) as running:
        yield running


def stand_in_command(tmp_path: Path, sandbox: RunningSandbox) -> list[str]:
    return [sys.executable, "-c", STAND_IN]


def rotator_command(tmp_path: Path, sandbox: RunningSandbox) -> list[str]:
    config = tmp_path / "rotator.yaml"
    document = {
        "policies": [
            {
                "name": "nightly",
                "servers": [1, 2],
                "schedule": {"cron": "0 3 * * *"},
                "retention": {"keep_last": 3},
                "catch_up": False,
            }
        ],
        "log": {"format": "json", "level": "info"},
    }
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    return [sys.executable, "-m", "rotator", "run", "--config", str(config)]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(stand_in_command, id="stand-in"),
        pytest.param(
            rotator_command,
            id="rotator-run",
        ),
    ],
)
def test_ready_watchdog_reloading_stopping(
    command: Callable[[Path, RunningSandbox], list[str]],
    notify_socket: NotifySocket,
    sandbox_server: RunningSandbox,
    tmp_path: Path,
) -> None:
    """READY with a status, WATCHDOG at half of WATCHDOG_USEC, RELOADING on SIGHUP, STOPPING on SIGTERM."""
    env = clean_env(
        NOTIFY_SOCKET=notify_socket.path,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
        ROTATOR_API_URL=sandbox_server.api_url,
        ROTATOR_API_TOKEN=sandbox_server.token,
    )
    process = subprocess.Popen(
        command(tmp_path, sandbox_server),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # READY=1, with the next run in STATUS= (in the same message or soon after)
        wait_for(process, lambda: first_index(notify_socket.since(), "READY") is not None, "READY=1")
        ready = first_index(notify_socket.since(), "READY")
        assert ready is not None
        wait_for(
            process,
            lambda: any("nightly" in m.fields.get("STATUS", "") for m in notify_socket.since(ready)),
            "STATUS= naming the policy",
        )

        # WATCHDOG=1 at the pace systemd asked for
        def pings() -> list[Message]:
            return [m for m in notify_socket.since(ready) if m.fields.get("WATCHDOG") == "1"]

        wait_for(process, lambda: len(pings()) >= PINGS, f"{PINGS} x WATCHDOG=1")
        arrivals = [m.at for m in pings()]
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        half = WATCHDOG_USEC / 2 / 1e6
        assert half * 0.7 <= statistics.median(gaps) <= half * 1.3, gaps
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps  # systemd would have killed it

        # SIGHUP: RELOADING=1 with MONOTONIC_USEC=, then READY=1 again
        mark = len(notify_socket.since())
        sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        process.send_signal(signal.SIGHUP)
        wait_for(
            process, lambda: first_index(notify_socket.since(), "RELOADING", mark) is not None, "RELOADING=1"
        )
        reloading = first_index(notify_socket.since(), "RELOADING", mark)
        assert reloading is not None
        fields = notify_socket.since()[reloading].fields
        assert fields["RELOADING"] == "1"
        assert int(fields["MONOTONIC_USEC"]) >= sent
        wait_for(
            process,
            lambda: first_index(notify_socket.since(), "READY", reloading) is not None,
            "READY=1 after the reload",
        )

        # SIGTERM: STOPPING=1, then exit 0
        mark = len(notify_socket.since())
        process.send_signal(signal.SIGTERM)
        wait_for(
            process, lambda: first_index(notify_socket.since(), "STOPPING", mark) is not None, "STOPPING=1"
        )
        assert process.wait(DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=DEADLINE)
