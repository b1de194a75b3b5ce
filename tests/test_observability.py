"""Logging: our events and the libraries' stdlib records come out as the same JSON lines."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from rotator.observability import configure_logging


@pytest.fixture(name="out")
def fixture_out() -> io.StringIO:
    """A stream that logging is configured to (conftest restores the defaults afterwards)."""
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    return stream


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_library_warning_is_a_json_line(out: io.StringIO) -> None:
    """APScheduler's own warning (a missed run) is rendered like rotator's events."""
    logging.getLogger("apscheduler.executors.default").warning("Run time of job %r was missed", "nightly")
    structlog.get_logger("rotator.daemon").info("daemon.started", policies=["nightly"])
    first, second = lines(out)
    assert first["event"] == "Run time of job 'nightly' was missed"
    assert first["level"] == "warning"
    assert first["logger"] == "apscheduler.executors.default"
    assert "timestamp" in first
    assert second["event"] == "daemon.started"


def test_library_chatter_below_warning_is_dropped(out: io.StringIO) -> None:
    """APScheduler's and httpx's INFO lines (every job added, every request) stay out."""
    logging.getLogger("apscheduler.scheduler").info('Added job "policy nightly" to job store "default"')
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example/backups/")
    assert out.getvalue() == ""
