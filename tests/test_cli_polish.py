"""The command line's rough edges, one test (or a few) per edge: help, pipes, colour, dates, prompts."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from bench.child_env import clean_env
from rotator.cli import build_parser, main
from rotator.observability import configure_logging
from tests.test_api import backup_json

# A meta path finder that makes starlette and uvicorn unimportable: rotator installed without the extra.
WITHOUT_SANDBOX_EXTRA = (
    "import sys\n"
    "class Missing:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Missing())\n"
    "from rotator.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_without_extra(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SANDBOX_EXTRA, *argv],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
        timeout=60,
    )


# -- rotator sandbox --help ------------------------------------------------------------------------


def test_sandbox_help_lists_its_options_without_the_extra() -> None:
    """Without starlette and uvicorn, ``rotator sandbox --help`` still lists every option."""
    result = run_without_extra("sandbox", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--fleet", "--error-rate", "--rate-limit", "--listing-lag"):
        assert flag in result.stdout
    assert "rotator[sandbox]" in result.stdout


def test_sandbox_without_the_extra_is_one_line_and_exit_78() -> None:
    """Running the sandbox without its extra: one line naming the extra, exit 78, no traceback."""
    result = run_without_extra("sandbox", "--port", "0")
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'rotator[sandbox]'" in lines[0]
    assert "uvicorn is missing" in lines[0] or "starlette is missing" in lines[0]


def test_sandbox_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """``rotator sandbox --help`` through main: the option groups and their help."""
    with pytest.raises(SystemExit) as stopped:
        main(["sandbox", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "faults (all off by default)" in out
    assert "--frozen-clock ISO" in out


# -- --now: a date is its midnight in UTC, and the hint for a time without a zone works -------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("2025-01-16", datetime(2025, 1, 16, tzinfo=UTC), id="date"),
        pytest.param("2025-01-16Z", datetime(2025, 1, 16, tzinfo=UTC), id="date-with-Z"),
        pytest.param("2025-01-16T03:00Z", datetime(2025, 1, 16, 3, tzinfo=UTC), id="instant"),
        pytest.param("2025-01-16T03:00+01:00", datetime(2025, 1, 16, 2, tzinfo=UTC), id="offset"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "run-once"])
def test_now_accepts_dates_and_instants(command: str, given: str, expected: datetime) -> None:
    """``--now`` takes an instant with its offset, or a date (midnight UTC)."""
    args = build_parser(sandbox=False).parse_args([command, "--now", given])
    assert args.now == expected
    assert args.now.tzinfo is UTC


def test_now_hint_for_a_time_without_zone_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """A naive time is refused in one line (exit 2) whose suggestions are themselves accepted."""
    with pytest.raises(SystemExit) as stopped:
        main(["plan", "--now", "2025-01-16T03:00"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    suggestions = re.findall(r"e\.g\. (\S+) or (\S+):", err)
    assert suggestions == [("2025-01-16T03:00Z", "2025-01-16T03:00+01:00")]
    for suggestion in suggestions[0]:
        assert build_parser(sandbox=False).parse_args(["plan", "--now", suggestion]).now is not None


@pytest.mark.parametrize("given", ["2025-13-01", "tomorrow", "2025-01-16T25:00Z"])
def test_now_refuses_what_is_no_instant(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a date nor an instant: one line naming the value and an example, exit 2."""
    with pytest.raises(SystemExit) as stopped:
        main(["run-once", "--now", given])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert repr(given) in err
    assert "2025-01-16T03:00Z" in err


def test_plan_on_a_date_is_the_plan_at_its_midnight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``plan --now 2025-01-16`` plans exactly as ``--now 2025-01-16T00:00Z``."""
    config = tmp_path / "rotator.yaml"
    config.write_text("policies:\n  - name: nightly\n    servers: [12345]\n    retention: {keep_days: 2}\n")
    listing = tmp_path / "listing.json"
    backups = [backup_json(i, f"2025-01-{10 + i:02d}T03:00:00Z") for i in range(1, 6)]
    listing.write_text(json.dumps({"count": len(backups), "results": backups}))
    outputs = []
    for now in ("2025-01-16", "2025-01-16T00:00Z", "2025-01-16T03:00Z"):
        code = main(["plan", "--config", str(config), "--from-file", str(listing), "--now", now, "--json"])
        assert code == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]  # the instant matters: keep_days counts back from it


# -- colour: only on a terminal, never with NO_COLOR -----------------------------------------------

ESC = "\x1b["


def log_one_warning_to_a_terminal() -> str:
    """configure_logging on a pseudo-terminal, one warning logged; what the terminal received."""
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w", encoding="utf-8") as terminal:
        assert terminal.isatty()
        configure_logging("info", "auto", terminal)
        structlog.get_logger().warning("backup.failed", server_id=12345)
        terminal.flush()
        received = os.read(leader, 65536).decode()
    os.close(leader)
    return received


def test_colour_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, without NO_COLOR, the pretty lines are coloured."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    received = log_one_warning_to_a_terminal()
    assert "backup.failed" in received
    assert ESC in received


@pytest.mark.parametrize("value", ["1", "true", "0"])
def test_no_color_turns_colour_off_on_a_terminal(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR set to anything but the empty string: pretty lines on a terminal, no escapes."""
    monkeypatch.setenv("NO_COLOR", value)
    monkeypatch.setenv("TERM", "xterm-256color")
    received = log_one_warning_to_a_terminal()
    assert "backup.failed" in received
    assert ESC not in received


def test_an_empty_no_color_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """``NO_COLOR=`` (empty) leaves colour on, as no-color.org says."""
    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.setenv("TERM", "xterm-256color")
    assert ESC in log_one_warning_to_a_terminal()


def test_dumb_terminal_has_no_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """TERM=dumb: no escapes."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "dumb")
    assert ESC not in log_one_warning_to_a_terminal()


def test_console_format_off_a_terminal_has_no_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """``log.format: console`` into a file or pipe: readable lines, no escapes."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = io.StringIO()
    configure_logging("info", "console", stream)
    structlog.get_logger().warning("backup.failed", server_id=12345)
    assert "backup.failed" in stream.getvalue()
    assert ESC not in stream.getvalue()
