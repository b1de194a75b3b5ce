"""Logging set-up: structlog events, JSON lines off a terminal, pretty on one; always to stderr."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error")


def _stderr_logger(*args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Route structlog (and the stdlib loggers of our libraries) to ``stream`` at ``level``."""
    out = stream or sys.stderr
    numeric = logging.getLevelNamesMapping()[level.upper()]
    pretty = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty()) if pretty else structlog.processors.JSONRenderer()
    )
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
    # httpx logs every request URL at INFO; ours says the same without noise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
