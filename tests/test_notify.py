"""sd_notify against a real unix datagram socket: the messages, the watchdog's pace, the no-op case."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotator.notify import Notifier

DEADLINE = 5.0


class Listener:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, name: str, address: str | bytes) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def receive(self, timeout: float = DEADLINE) -> dict[str, str]:
        """The next message as its fields; fails after ``timeout``."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)
        return True


@pytest.fixture(name="path_listener")
def fixture_path_listener() -> Iterator[Listener]:
    """A notify socket at a file path (in a short directory: sun_path holds 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="rn-", dir="/tmp")
    path = str(Path(directory) / "notify")
    listener = Listener(path, path)
    yield listener
    listener.sock.close()
    shutil.rmtree(directory)


@pytest.fixture(name="abstract_listener")
def fixture_abstract_listener() -> Iterator[Listener]:
    """A notify socket in the abstract namespace (``@name``), as systemd uses for user managers."""
    name = f"rotator-test-{uuid.uuid4().hex}"
    listener = Listener(f"@{name}", b"\0" + name.encode())
    yield listener
    listener.sock.close()


def test_ready_carries_the_status(path_listener: Listener) -> None:
    """ready(status) is one datagram: READY=1 and STATUS=."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path_listener.name})
    assert notifier.ready("next run nightly 2025-01-16T03:00Z")
    assert path_listener.receive() == {"READY": "1", "STATUS": "next run nightly 2025-01-16T03:00Z"}


def test_abstract_socket(abstract_listener: Listener) -> None:
    """A NOTIFY_SOCKET starting with @ is reached in the abstract namespace."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": abstract_listener.name})
    assert notifier.enabled
    assert notifier.status("waiting for 3 backups")
    assert abstract_listener.receive() == {"STATUS": "waiting for 3 backups"}


def test_status_is_one_line(path_listener: Listener) -> None:
    """A newline in a status cannot inject another field."""
    Notifier(path_listener.name).status("two\nlines\nREADY=1")
    assert path_listener.receive() == {"STATUS": "two lines READY=1"}


def test_reloading_carries_monotonic_usec(path_listener: Listener) -> None:
    """RELOADING=1 with MONOTONIC_USEC= on CLOCK_MONOTONIC, as systemd >= 253 wants."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(path_listener.name).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = path_listener.receive()
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_stopping_and_watchdog(path_listener: Listener) -> None:
    """stopping() and watchdog() send their one field each."""
    notifier = Notifier(path_listener.name)
    notifier.watchdog()
    notifier.stopping()
    assert path_listener.receive() == {"WATCHDOG": "1"}
    assert path_listener.receive() == {"STOPPING": "1"}


def test_no_socket_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET nothing is sent, nothing fails, and there is no watchdog."""
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert notifier.watchdog_interval() is None


async def test_watchdog_loop_returns_at_once_without_a_watchdog(path_listener: Listener) -> None:
    """No WATCHDOG_USEC: the loop has nothing to do and returns."""
    await asyncio.wait_for(Notifier(path_listener.name).watchdog_loop(), DEADLINE)
    assert not path_listener.pending()


def test_a_vanished_socket_is_logged_not_raised() -> None:
    """A socket that is gone: the send is logged as notify.failed and reported False."""
    with capture_logs() as logs:
        assert not Notifier("/nonexistent/rotator-notify").ready()
    assert logs[0]["event"] == "notify.failed"
    assert logs[0]["fields"] == ["READY=1"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str], expected: float | None) -> None:
    """Half of WATCHDOG_USEC, and only for this process (WATCHDOG_PID)."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@rotator-test", **environ})
    assert notifier.watchdog_interval() == expected


async def test_watchdog_loop_pings_at_half_the_interval(path_listener: Listener) -> None:
    """WATCHDOG_USEC=200ms: WATCHDOG=1 about every 100 ms, with a heartbeat each time."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path_listener.name, "WATCHDOG_USEC": "200000"})
    beats: list[float] = []
    task = asyncio.create_task(notifier.watchdog_loop(on_beat=lambda: beats.append(time.monotonic())))
    try:
        for _ in range(5):
            fields = await asyncio.to_thread(path_listener.receive)
            assert fields == {"WATCHDOG": "1"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(beats) >= 5
    # the pace is measured where the pings are sent: arrival times carry the receiver's scheduling noise
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert min(gaps) >= 0.09, gaps  # never faster than half the interval (asyncio's timer slack aside)
    assert sum(gaps) / len(gaps) < 0.2, gaps  # and on average well within the watchdog's timeout
