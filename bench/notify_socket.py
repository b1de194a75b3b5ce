"""systemd's side of sd_notify for the benchmarks and the tests: a unix datagram socket, read from
a thread, collecting each message with its arrival time (``time.monotonic()``)."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Message:
    at: float
    fields: dict[str, str]


class NotifySocket:
    """Listens at :attr:`path` (give it as ``NOTIFY_SOCKET``) until :meth:`close`."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="rn-", dir="/tmp")  # sun_path holds 108 bytes
        self.path = str(Path(self.directory) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            arrived = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self._lock:
                self.messages.append(Message(arrived, fields))

    def since(self, start: int = 0) -> list[Message]:
        """The messages from the ``start``-th on."""
        with self._lock:
            return self.messages[start:]

    def first(self, key: str) -> Message | None:
        """The first message that carries ``key``, if one came."""
        return next((message for message in self.since() if key in message.fields), None)

    def close(self, timeout: float = 5.0) -> None:
        self._done.set()
        self._thread.join(timeout)
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)
