"""Logging set-up: structlog events, JSON lines off a terminal, pretty on one; always to stderr."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

from rotator.secrets import scrub
from rotator.terminal import wants_colour

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error")


def _stderr_logger(*args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Route structlog (and the stdlib loggers of our libraries) to ``stream`` at ``level``."""
    out = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    pretty = fmt == "console" or (fmt == "auto" and out.isatty())
    render: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=wants_colour(out))
        if pretty
        else structlog.processors.JSONRenderer()
    )

    def renderer(logger: object, name: str, event: structlog.typing.EventDict) -> str:
        # the last line of defence: no token this process holds leaves in a log line, neither as
        # it stands in a value nor as the renderer escapes it (a quote or backslash in JSON)
        return scrub(str(render(logger, name, _scrubbed(event))))

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if not pretty else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # stderr is looked up at each write, so a replaced sys.stderr (tests, daemons) is honoured
        logger_factory=structlog.PrintLoggerFactory(stream) if stream else _stderr_logger,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(renderer, numeric, stream)
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


def _route_stdlib_logging(renderer: structlog.typing.Processor, level: int, stream: TextIO | None) -> None:
    """Libraries' stdlib log records (APScheduler's, httpx's) rendered like our own events."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
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
