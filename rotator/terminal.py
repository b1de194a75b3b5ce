"""What the command line owes a terminal and a pipe: colour only where wanted, quiet on a closed stdout.

- Colour only on a terminal, and never when ``NO_COLOR`` is set to anything but the empty string
  (https://no-color.org); ``TERM=dumb`` is no colour either.
- A closed stdout (``rotator backups list | head -1``) is not an error: the reader has what it wanted.
  What rotator was doing goes on (a run or a delete is never cut short by a reader that stopped
  reading), nothing more is written to stdout, and the exit code is the one the work earned, so a
  ``set -o pipefail`` script is not failed by ``head``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any, TextIO, cast

NO_COLOR_ENV = "NO_COLOR"


def wants_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to colour what goes to ``stream``: a terminal, no ``NO_COLOR``, not ``TERM=dumb``."""
    env = os.environ if environ is None else environ
    if env.get(NO_COLOR_ENV, ""):
        return False
    if env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class ReaderGoneStream:
    """A text stream that stops writing, quietly, once its reader has closed the pipe.

    On the first ``BrokenPipeError`` the file descriptor is pointed at ``/dev/null``, so that what
    the stream still buffers is flushed there at exit instead of raising again ("Exception ignored
    ... BrokenPipeError", exit 120).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError):  # not a real file (a test's capture): nothing to do
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_on_closed_stdout() -> Iterator[ReaderGoneStream]:
    """``sys.stdout`` wrapped in a :class:`ReaderGoneStream` for the block, and flushed at its end."""
    original = sys.stdout
    guarded = ReaderGoneStream(original)
    sys.stdout = cast(TextIO, guarded)
    try:
        yield guarded
    finally:
        guarded.flush()
        sys.stdout = original
