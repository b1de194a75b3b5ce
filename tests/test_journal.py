"""journald: where stderr is the journal's stream, each line carries its syslog priority and no timestamp.

systemd gives a service ``$JOURNAL_STREAM=DEV:INODE`` of the stream it
connected; journald reads a leading ``<N>`` as the line's priority. The
tests hand configure_logging a real file and an environment naming (or not
naming) that file's device and inode: no monkeypatching of the process.
The boot test (tests/test_systemd_boot.py) checks the same with journald.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import structlog

from rotator.observability import configure_logging, is_journal_stream, syslog_priority, with_syslog_prefix


@pytest.fixture(name="stream")
def fixture_stream(tmp_path: Path) -> Iterator[TextIO]:
    """A real file, with a device and an inode, standing for stderr."""
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as file:
        yield file


def journal_env(stream: TextIO) -> dict[str, str]:
    """What systemd sets when ``stream`` is connected to the journal."""
    status = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}


def written(stream: TextIO) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def test_the_journals_own_stream_is_recognised(stream: TextIO) -> None:
    """DEV:INODE equal to the stream's fstat: the journal."""
    assert is_journal_stream(stream, journal_env(stream)) is True


@pytest.mark.parametrize(
    "value",
    ["", "12", "12:", ":34", "a:b", "12:34:56", " 12:34"],
)
def test_a_malformed_journal_stream_is_not_the_journal(stream: TextIO, value: str) -> None:
    """Anything but two decimal numbers is no journal (and no error)."""
    assert is_journal_stream(stream, {"JOURNAL_STREAM": value}) is False


def test_an_inherited_journal_stream_naming_another_file_is_not_ours(stream: TextIO, tmp_path: Path) -> None:
    """A child whose stderr was redirected elsewhere keeps the variable: the inode differs, no prefix."""
    with (tmp_path / "other").open("w", encoding="utf-8") as other:
        assert is_journal_stream(stream, journal_env(other)) is False
    status = os.fstat(stream.fileno())
    assert is_journal_stream(stream, {"JOURNAL_STREAM": f"{status.st_dev + 1}:{status.st_ino}"}) is False


def test_no_variable_or_no_file_is_not_the_journal(stream: TextIO) -> None:
    """No $JOURNAL_STREAM, or a stream with no file under it (a StringIO, a closed file)."""
    assert is_journal_stream(stream, {}) is False
    assert is_journal_stream(io.StringIO(), journal_env(stream)) is False


@pytest.mark.parametrize(
    ("level", "priority"),
    [("critical", 2), ("error", 3), ("ERROR", 3), ("warning", 4), ("info", 6), ("debug", 7), (None, 6)],
)
def test_syslog_priorities(level: str | None, priority: int) -> None:
    """syslog(3)'s numbers; a level nobody knows is info, journald's default."""
    assert syslog_priority(level) == priority


def test_every_line_of_a_multi_line_event_carries_the_prefix() -> None:
    """journald stores each line apart: a traceback's lines keep the event's priority."""
    assert with_syslog_prefix("first\n  second", 3) == "<3>first\n<3>  second"


def test_each_event_is_written_at_its_priority_without_a_timestamp(stream: TextIO) -> None:
    """<7> debug, <6> info, <4> warning, <3> error and exception, then the JSON that journald stores."""
    configure_logging("debug", "json", stream, journal_env(stream))
    log = structlog.get_logger("rotator.test")
    log.debug("slot.decided", server_id=1)
    log.info("run.finished", policy="nightly")
    log.warning("prune.held_back", policy="nightly", held_back=3)
    log.error("backup.failed", server_id=2)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("run.crashed")
    lines = written(stream)
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    events = [json.loads(line[3:]) for line in lines]
    assert [event["event"] for event in events] == [
        "slot.decided",
        "run.finished",
        "prune.held_back",
        "backup.failed",
        "run.crashed",
    ]
    assert all("timestamp" not in event for event in events)
    assert "RuntimeError: boom" in events[-1]["exception"]  # one line: the traceback is escaped in JSON


def test_library_records_carry_their_priority_too(stream: TextIO) -> None:
    """APScheduler's stdlib warning lands as <4>, without a timestamp, like rotator's events."""
    configure_logging("info", "json", stream, journal_env(stream))
    logging.getLogger("apscheduler.executors.default").warning("Run time of job %r was missed", "nightly")
    logging.getLogger("httpx").error("connection pool closed")
    (warning, error) = written(stream)
    assert warning.startswith("<4>{")
    assert error.startswith("<3>{")
    record = json.loads(warning[3:])
    assert (record["level"], record["logger"]) == ("warning", "apscheduler.executors.default")
    assert "timestamp" not in record


def test_the_console_format_is_prefixed_line_by_line(stream: TextIO) -> None:
    """log.format: console under journald: every line of a traceback at the event's priority."""
    configure_logging("info", "console", stream, journal_env(stream))
    try:
        raise ValueError("bad")
    except ValueError:
        structlog.get_logger("rotator.test").exception("run.crashed")
    lines = written(stream)
    assert len(lines) > 3, lines
    assert all(line.startswith("<3>") for line in lines), lines
    assert any("ValueError: bad" in line for line in lines)


def test_off_the_journal_lines_are_plain_and_stamped(stream: TextIO) -> None:
    """A file, a pipe or a terminal: no prefix, rotator's own UTC timestamp."""
    configure_logging("info", "json", stream, {})
    structlog.get_logger("rotator.test").warning("prune.held_back")
    (line,) = written(stream)
    event = json.loads(line)
    assert event["event"] == "prune.held_back"
    assert event["timestamp"].endswith("Z")
