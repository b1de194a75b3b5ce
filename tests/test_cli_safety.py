"""The CLI's safety nets: plain http refused, descriptions an API would cut, the token masked in logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from bench.child_env import clean_env
from rotator.cli import longest_description, main
from rotator.config import load_config
from rotator.observability import configure_logging
from rotator.scheduler import jobs_from_config
from rotator.secrets import MASK, ApiToken

POLICY: dict[str, Any] = {"name": "nightly", "servers": [101], "retention": {"keep_daily": 7}}
# "nightly 2025-12-28" (18) + " " + "[rotator:nightly@2025-12-28T23:59:59Z#3]" (40): the default
# template at a slot with seconds, on its last attempt (retries 2: attempt 3)
LONGEST_DEFAULT = 59


def write_config(path: Path, *policies: dict[str, Any], **api: Any) -> Path:
    document: dict[str, Any] = {"policies": list(policies) or [POLICY]}
    if api:
        document["api"] = api
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def rotator(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m rotator ARGV`` with none of this shell's ROTATOR_* settings."""
    return subprocess.run(
        [sys.executable, "-m", "rotator", *argv],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- plain http to another host ------------------------------------------------------------


def test_check_config_refuses_plain_http_to_another_host(tmp_path: Path) -> None:
    """Exit 78; under the file's heading one line naming api's url and both fixes; no traceback."""
    config = write_config(tmp_path / "rotator.yaml", url="http://admin.vps.org/api/v1")
    done = rotator("check-config", "--config", str(config))
    assert done.returncode == 78, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"rotator: {config}: invalid configuration (1 error):",
        "  api: url 'http://admin.vps.org/api/v1' is plain http to another host: the API token would "
        "travel in clear (use https, or set api.allow_insecure_http: true) (got "
        + done.stderr.split("(got ", 1)[1].rstrip("\n"),
    ]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        pytest.param("http://admin.vps.org/api/v1", {"allow_insecure_http": True}, id="opted-in"),
        pytest.param("http://127.0.0.1:8080/api/v1", {}, id="127.0.0.1"),
        pytest.param("http://localhost:8080/api/v1", {}, id="localhost"),
        pytest.param("http://[::1]:8080/api/v1", {}, id="::1"),
        pytest.param("https://admin.vps.org/api/v1", {}, id="https"),
    ],
)
def test_check_config_accepts_safe_urls(tmp_path: Path, url: str, extra: dict[str, Any]) -> None:
    """The opt-in, loopback in its three spellings, and https: exit 0."""
    done = rotator("check-config", "--config", str(write_config(tmp_path / "rotator.yaml", url=url, **extra)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("configuration OK: 1 policies")


def test_run_once_refuses_plain_http_before_any_request(tmp_path: Path) -> None:
    """The commands that talk to the API refuse the file the same way, before the token is read."""
    config = write_config(tmp_path / "rotator.yaml", url="http://admin.vps.org/api/v1")
    done = rotator("run-once", "--config", str(config))
    assert done.returncode == 78
    assert "api.allow_insecure_http: true" in done.stderr
    assert "Traceback" not in done.stderr


# -- descriptions an API would cut ---------------------------------------------------------


def check_config(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    code = main(["check-config", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.splitlines()


def warnings(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip().startswith("warning:")]


def warning_for(longest: int, limit: int) -> str:
    return (
        f"warning: descriptions with their marker take up to {longest} characters, more than "
        f"api.max_description_length ({limit}): an API that cuts them loses the marker, and the policy "
        "would never prune those backups; shorten the description template"
    )


@pytest.mark.parametrize(
    ("policy", "limit", "longest"),
    [
        pytest.param({}, None, None, id="no-limit"),
        pytest.param({}, LONGEST_DEFAULT, None, id="fits-exactly"),
        pytest.param({}, LONGEST_DEFAULT - 1, LONGEST_DEFAULT, id="one-over"),
        pytest.param({"retries": 0}, LONGEST_DEFAULT - 2, None, id="no-retries-no-attempt"),
        pytest.param({"retries": 9}, LONGEST_DEFAULT, LONGEST_DEFAULT + 1, id="attempt-10"),
        pytest.param({"description": ""}, 39, 40, id="marker-only"),
        pytest.param({"description": "{slot} {time}"}, 66, 67, id="slot-and-time"),
        pytest.param({"timezone": "Asia/Kolkata", "description": "{date} {time}"}, 56, 57, id="zone"),
        pytest.param({"create": False}, 10, None, id="prune-only"),
    ],
)
def test_check_config_warns_about_descriptions_the_api_cuts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    policy: dict[str, Any],
    limit: int | None,
    longest: int | None,
) -> None:
    """Beyond api.max_description_length: one warning under the policy, still exit 0; none otherwise."""
    api = {"max_description_length": limit} if limit is not None else {}
    lines = check_config(capsys, write_config(tmp_path / "rotator.yaml", {**POLICY, **policy}, **api))
    assert lines[0] == "configuration OK: 1 policies"
    if longest is None:
        assert warnings(lines) == []
    else:
        assert limit is not None
        assert lines[1].startswith("policy nightly: 1 servers")
        assert lines[2].strip() == warning_for(longest, limit)
        assert warnings(lines) == [warning_for(longest, limit)]


def test_the_warning_names_only_the_policy_that_is_too_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two policies, one with a long template: the warning follows that policy's line."""
    long = {**POLICY, "name": "weekly", "servers": [102], "description": "weekly backup of {date} at {time}"}
    config = write_config(tmp_path / "rotator.yaml", POLICY, long, max_description_length=LONGEST_DEFAULT)
    lines = check_config(capsys, config)
    (warned,) = [i for i, line in enumerate(lines) if "warning:" in line]
    assert lines[warned - 1].startswith("policy weekly: 1 servers")
    # "weekly backup of 2025-12-28 at 23:59" (36) + " " + "[rotator:weekly@2025-12-28T23:59:59Z#3]" (39)
    assert lines[warned].strip() == warning_for(76, LONGEST_DEFAULT)


def test_longest_description_is_what_the_job_writes(tmp_path: Path) -> None:
    """The longest case, spelled out: the template at 23:59:59, the marker with seconds and the last #N."""
    (job,) = jobs_from_config(load_config(write_config(tmp_path / "rotator.yaml")))
    slot = datetime(2025, 12, 28, 23, 59, 59, tzinfo=UTC)
    assert job.spec.describe(slot, 3) == "nightly 2025-12-28 [rotator:nightly@2025-12-28T23:59:59Z#3]"
    assert longest_description(job.spec) == LONGEST_DEFAULT
    # a whole-minute slot or an earlier attempt is shorter: never the case to warn about
    assert len(job.spec.describe(slot.replace(second=0), 3)) < LONGEST_DEFAULT
    assert len(job.spec.describe(slot, 1)) == LONGEST_DEFAULT - 2  # no "#N" on a first attempt


# -- the token in log lines ------------------------------------------------------------------

TOKEN = "log-token-9c1e77"


@pytest.fixture(name="held_token")
def fixture_held_token() -> ApiToken:
    """The token this process holds, as every command that talks to the API does."""
    return ApiToken(TOKEN, "test")


@pytest.mark.usefixtures("held_token")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_log_line_carries_the_token(fmt: Any) -> None:
    """Our events and the libraries' stdlib records alike: the token is masked in every rendered line."""
    stream = io.StringIO()
    configure_logging("debug", fmt, stream)
    structlog.get_logger("rotator.test").error("api.request", error=f"401: You sent: Bearer {TOKEN}")
    structlog.get_logger("rotator.test").debug("nested", detail={"headers": [f"Bearer {TOKEN}"]})
    logging.getLogger("httpx").warning("a library quoting %s", TOKEN)
    text = stream.getvalue()
    assert TOKEN not in text
    assert text.count(MASK) == 3, text
    if fmt == "json":
        events = [json.loads(line) for line in text.splitlines()]
        assert events[0]["error"] == f"401: You sent: Bearer {MASK}"
        assert [event["event"] for event in events] == ["api.request", "nested", f"a library quoting {MASK}"]


def test_a_token_json_escapes_is_masked_in_json_lines() -> None:
    """A token with a quote or a backslash (valid in a header) is masked, not only its raw spelling."""
    token = 'quo"ted\\token1'
    ApiToken(token, "test")
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    structlog.get_logger("rotator.test").warning("api.request", error=f"You sent: Bearer {token}")
    (event,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert token not in event["error"]
