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
from structlog.testing import capture_logs

from bench.child_env import clean_env
from rotator.cli import build_parser, client_settings, main
from rotator.config import load_config
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


# -- the API URL: one way besides the file (ROTATOR_API_URL), errors blamed on their source ---------

FILE_URL = "https://file.example/api/v1"


@pytest.fixture(name="url_config")
def fixture_url_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration whose api.url is FILE_URL; no URL, token or configuration in the environment."""
    for name in ("ROTATOR_API_URL", "ROTATOR_API__URL", "ROTATOR_CONFIG", "ROTATOR_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "rotator.yaml"
    path.write_text(
        "policies: [{name: nightly, servers: [1], retention: {keep_last: 2}}]\n"
        f"api: {{url: {FILE_URL}, allow_insecure_http: false}}\n"
    )
    return path


def one_line(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("name", ["ROTATOR_API__URL", "rotator_api__url"])
@pytest.mark.parametrize("command", [["check-config"], ["backups", "list"], ["plan"]])
def test_the_settings_spelling_of_the_url_is_refused(
    name: str,
    command: list[str],
    url_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ROTATOR_API__URL is not a second way: one line naming ROTATOR_API_URL, exit 78."""
    monkeypatch.setenv(name, "https://other.example/api/v1")
    code, err = one_line(capsys, *command, "--config", str(url_config))
    assert code == 78
    assert err.startswith(f"rotator: {name}: not read")
    assert "ROTATOR_API_URL" in err


def test_the_variable_overrides_the_file_and_says_so(
    url_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config names the URL in use, its source, and the file's URL it overrides (text and JSON)."""
    monkeypatch.setenv("ROTATOR_API_URL", "https://env.example/api/v1/")
    assert main(["check-config", "--config", str(url_config)]) == 0
    out = capsys.readouterr().out
    assert (
        f"api: https://env.example/api/v1 (from ROTATOR_API_URL, over the file's {FILE_URL})"
        in out.splitlines()
    )
    assert main(["check-config", "--config", str(url_config), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["api"] == {
        "url": "https://env.example/api/v1",
        "source": "ROTATOR_API_URL",
        "overrides": FILE_URL,
    }


def test_the_file_url_is_named_as_such(url_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No override: check-config says the URL is the file's."""
    assert main(["check-config", "--config", str(url_config)]) == 0
    assert f"api: {FILE_URL} (from api.url in {url_config})" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        pytest.param("ftp://x/api", "must be an http(s) URL", id="not-http"),
        pytest.param("https://x/api?token=1", "must not carry a query", id="query"),
        pytest.param("http://remote.example/api", "is plain http to another host", id="plain-http"),
    ],
)
@pytest.mark.parametrize("how", ["ROTATOR_API_URL", "--api-url"])
def test_a_bad_url_is_blamed_on_its_source(
    how: str,
    url: str,
    problem: str,
    url_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad URL from the variable or the option: one line naming it (not the file), exit 78."""
    argv = ["check-config", "--config", str(url_config)]
    if how == "--api-url":
        argv += ["--api-url", url]
    else:
        monkeypatch.setenv("ROTATOR_API_URL", url)
    code, err = one_line(capsys, *argv)
    assert code == 78
    assert err.startswith(f"rotator: {how}: ")
    assert problem in err
    assert str(url_config) not in err


def test_a_bad_url_is_blamed_on_the_variable_without_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``backups list`` with no configuration: the variable is named, and no request goes out."""
    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)
    monkeypatch.setenv("ROTATOR_API_URL", "localhost:8765/api/v1")
    code, err = one_line(capsys, "backups", "list")
    assert code == 78
    assert err.startswith("rotator: ROTATOR_API_URL: must be an http(s) URL")
    assert "'localhost:8765/api/v1'" in err


def test_plain_http_from_the_variable_is_allowed_by_the_file(
    url_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """api.allow_insecure_http: true in the file lets ROTATOR_API_URL be plain http to another host."""
    url_config.write_text(
        url_config.read_text().replace("allow_insecure_http: false", "allow_insecure_http: true")
    )
    monkeypatch.setenv("ROTATOR_API_URL", "http://remote.example/api")
    assert main(["check-config", "--config", str(url_config)]) == 0
    assert "api: http://remote.example/api (from ROTATOR_API_URL" in capsys.readouterr().out


def test_an_override_is_logged_when_the_client_is_built(url_config: Path) -> None:
    """The daemon and run-once log which URL won over the file's (info, with both URLs)."""
    config = load_config(url_config)
    args = build_parser(sandbox=False).parse_args(["run-once", "--config", str(url_config)])
    with capture_logs() as logs:
        settings = client_settings(args, config, {"ROTATOR_API_URL": "https://env.example/api/v1"})
    assert settings.base_url == "https://env.example/api/v1"
    assert logs == [
        {
            "event": "config.api_url_overridden",
            "log_level": "info",
            "url": "https://env.example/api/v1",
            "source": "ROTATOR_API_URL",
            "file_url": FILE_URL,
        }
    ]
