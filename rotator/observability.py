"""Logging set-up: structlog events, JSON lines off a terminal, pretty on one; always to stderr.

Under systemd, stderr is a stream to journald, which stores every line at the
unit's default priority (6, info) unless the line starts with a syslog prefix.
When ``$JOURNAL_STREAM`` names stderr (its device and inode, as systemd sets it),
each line starts with its event's priority (``<3>`` error, ``<4>`` warning,
``<6>`` info, ``<7>`` debug; journald strips it), so that ``journalctl -p
warning`` finds warnings and errors, and rotator writes no timestamp: journald
stamps each line itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Final, Literal, TextIO

import structlog

from rotator.secrets import scrub
from rotator.terminal import wants_colour

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error")

JOURNAL_STREAM_ENV: Final = "JOURNAL_STREAM"
# syslog(3)'s priorities of structlog's and the stdlib's level names; anything else is info
SYSLOG_PRIORITIES: Final = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
INFO_PRIORITY: Final = 6


def _stderr_logger(*args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def is_journal_stream(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd connected: ``$JOURNAL_STREAM`` is its ``DEV:INODE``.

    systemd sets the variable for a service whose stdout or stderr goes to the
    journal; a child whose stderr was redirected elsewhere inherits it, hence
    the comparison with the stream's own ``fstat``.
    """
    value = (os.environ if environ is None else environ).get(JOURNAL_STREAM_ENV, "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file under it (a StringIO), or closed
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def syslog_priority(level: object) -> int:
    """The syslog priority of a level name (``"warning"`` -> 4); info for anything unknown."""
    return SYSLOG_PRIORITIES.get(str(level).lower(), INFO_PRIORITY)


def with_syslog_prefix(text: str, priority: int) -> str:
    """``<N>`` before every line of ``text``: journald stores each line apart, each at its priority."""
    return "\n".join(f"<{priority}>{line}" for line in text.split("\n"))


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Route structlog (and the stdlib loggers of our libraries) to ``stream`` at ``level``.

    Where ``stream`` (stderr by default) is the journal's (:func:`is_journal_stream`, read
    from ``environ``, the process environment by default), lines carry their syslog
    priority and no timestamp.
    """
    out = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    pretty = fmt == "console" or (fmt == "auto" and out.isatty())
    journal = is_journal_stream(out, environ)
    render: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=wants_colour(out))
        if pretty
        else structlog.processors.JSONRenderer()
    )

    def renderer(logger: object, name: str, event: structlog.typing.EventDict) -> str:
        # the last line of defence: no token this process holds leaves in a log line, neither as
        # it stands in a value nor as the renderer escapes it (a quote or backslash in JSON)
        text = scrub(str(render(logger, name, _scrubbed(event))))
        return with_syslog_prefix(text, syslog_priority(event.get("level"))) if journal else text

    stamp: list[structlog.typing.Processor] = (
        [] if journal else [structlog.processors.TimeStamper(fmt="iso", utc=True)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *stamp,
            structlog.processors.format_exc_info if not pretty else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # stderr is looked up at each write, so a replaced sys.stderr (tests, daemons) is honoured
        logger_factory=structlog.PrintLoggerFactory(stream) if stream else _stderr_logger,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(renderer, stamp, numeric, stream)
    # httpx logs every request URL at INFO, APScheduler every job it adds and runs: ours say the
    # same without noise, and their warnings and errors still come through, as the same JSON lines
    for name in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _scrubbed(value: Any) -> Any:
    """``value`` with :func:`scrub` applied to every string in it (dicts, lists and tuples walked)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrubbed(item) for item in value)
    return value


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _route_stdlib_logging(
    renderer: structlog.typing.Processor,
    stamp: list[structlog.typing.Processor],
    level: int,
    stream: TextIO | None,
) -> None:
    """Libraries' stdlib log records (APScheduler's, httpx's) rendered like our own events."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.add_log_level, *stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler: logging.Handler = logging.StreamHandler(stream) if stream else _StderrHandler()
    handler.setFormatter(formatter)
    handler.set_name("rotator")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "rotator"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def debug_logged() -> bool:
    """Whether structlog as configured writes debug lines (its filtering wrapper's level; any other
    wrapper: yes). Asked before a hot path's debug line: each call through ``get_logger``'s proxy binds
    a new logger before its level filters the line out."""
    wrapper = structlog.get_config()["wrapper_class"]
    enabled = getattr(wrapper, "is_enabled_for", None)
    if enabled is None:
        return True
    try:
        return bool(enabled(wrapper, logging.DEBUG))  # make_filtering_bound_logger's ignores its self
    except Exception:  # noqa: BLE001 - another wrapper's own method: assume it writes them
        return True
