"""The deployment examples in deploy/: valid for the tools that read them, and keeping rotator's promises.

Every Kubernetes manifest is validated by ``kubernetes-validate --strict``
against a current Kubernetes (the schemas ship inside the PyPI package), the
compose file by ``check-jsonschema`` against the Compose Specification's schema
(vendored in check-jsonschema as ``vendor.compose-spec``). Neither needs the
network: where this machine can make an empty network namespace (root,
``unshare``), the validators run inside one, so a download would fail the test.
Then the examples' promises: a sidecar never makes its application unready,
one rotator per configuration, the CronJob's slots, the lock-down.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import all_versions

from rotator.config import RotatorConfig
from rotator.errors import EXIT_CONFIG

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose.yaml"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
KUBERNETES_VERSION = "1.37.0"  # the newest that the pinned kubernetes-validate ships schemas for
HEALTH_PORT = 9188
TOKEN_SECRET = "rotator-api-token"
CREATE_SECRET = f"kubectl create secret generic {TOKEN_SECRET} --from-file=api-token=./api-token"


# -- running the validators, offline --------------------------------------------------


@functools.cache
def offline() -> tuple[str, ...]:
    """``unshare --net --``: a command in a new network namespace, with no interface but a down loopback."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    probe = subprocess.run([unshare, "--net", "--", "true"], capture_output=True, timeout=30, check=False)
    return (unshare, "--net", "--") if probe.returncode == 0 else ()


def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} is missing: it is in the test extra (make install)"
    return found


def run_offline(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*offline(), *argv], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def kubernetes_validate(path: Path) -> tuple[bool, str]:
    """Strict validation of every document of ``path``; a WARN (an unknown kind: no schema) fails too."""
    result = run_offline(tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", str(path))
    output = result.stdout + result.stderr
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    passed = [line for line in output.splitlines() if line.startswith("INFO ") and " passed " in line]
    ok = result.returncode == 0 and len(passed) == len(documents) and "WARN" not in output
    return ok, output


def compose_validate(path: Path) -> tuple[bool, str]:
    result = run_offline(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))
    return result.returncode == 0, result.stdout + result.stderr


def test_the_validators_really_run_without_network() -> None:
    """Where the tests cut the network, it is cut: not even loopback answers inside."""
    if not offline():
        pytest.skip("no network namespace here (needs root and unshare): the validators run with the network")
    probe = "import socket; socket.create_connection(('127.0.0.1', 9), timeout=5)"
    result = run_offline(sys.executable, "-c", probe)
    assert result.returncode != 0
    assert "Network is unreachable" in result.stderr, result.stderr


def test_the_kubernetes_version_is_the_newest_shipped() -> None:
    """The manifests are checked against the newest Kubernetes that kubernetes-validate knows."""
    versions = all_versions()
    assert KUBERNETES_VERSION in versions
    assert versions[-1] == KUBERNETES_VERSION


# -- every manifest validates; a broken copy does not -------------------------------


def test_the_examples_are_there() -> None:
    """The three Kubernetes examples: a sidecar, rotator's own Deployment, a CronJob (others may join)."""
    assert {"cronjob.yaml", "deployment.yaml", "sidecar.yaml"} <= {path.name for path in MANIFESTS}


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_every_manifest_validates_strictly(path: Path) -> None:
    """kubernetes-validate --strict: each document passes, none is of a kind without a schema."""
    ok, output = kubernetes_validate(path)
    assert ok, output


@pytest.mark.parametrize(
    ("mistake", "replace"),
    [
        pytest.param(("livenessProbe:", "livenesProbe:"), True, id="misspelt-key"),
        pytest.param(("replicas: 1", "replicas: one"), True, id="wrong-type"),
        pytest.param(("kind: Deployment", "kind: Deploymnet"), True, id="unknown-kind"),
    ],
)
def test_a_broken_manifest_is_caught(tmp_path: Path, mistake: tuple[str, str], replace: bool) -> None:
    """A misspelt key, a wrong type and an unknown kind each fail the check (strict, WARN included)."""
    text = (KUBERNETES / "deployment.yaml").read_text(encoding="utf-8")
    assert mistake[0] in text
    broken = tmp_path / "deployment.yaml"
    broken.write_text(text.replace(mistake[0], mistake[1], 1), encoding="utf-8")
    ok, output = kubernetes_validate(broken)
    assert not ok, output


def test_the_compose_file_follows_the_compose_specification() -> None:
    """check-jsonschema, the Compose Specification's schema: the file is valid (its top-level name: too)."""
    ok, output = compose_validate(COMPOSE)
    assert ok, output
    assert "name" in yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # hence Compose v2, as it says
    assert "Compose v2" in COMPOSE.read_text(encoding="utf-8")


def test_a_broken_compose_file_is_caught(tmp_path: Path) -> None:
    """A key the specification does not know (restart_policy is Swarm's deploy key) fails the check."""
    text = COMPOSE.read_text(encoding="utf-8")
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        text.replace("restart: unless-stopped", "restart_policy: unless-stopped"), encoding="utf-8"
    )
    ok, output = compose_validate(broken)
    assert not ok, output
    assert "restart_policy" in output


def test_no_manifest_lies_outside_deploy_kubernetes() -> None:
    """Every Kubernetes object in docs/ or deploy/ is in a file the validation above reads."""
    stray = []
    for path in [*ROOT.glob("docs/**/*.y*ml"), *ROOT.glob("deploy/**/*.y*ml")]:
        if path.parent == KUBERNETES:
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict) and {"apiVersion", "kind"} <= document.keys():
                stray.append(str(path.relative_to(ROOT)))
    assert stray == []


# -- what the examples promise --------------------------------------------------------


def documents(name: str) -> dict[str, dict[str, Any]]:
    loaded = [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text(encoding="utf-8")) if doc]
    by_kind = {doc["kind"]: doc for doc in loaded}
    assert len(by_kind) == len(loaded), f"{name}: two documents of one kind"
    return by_kind


def pod_of(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def rotator_of(pod: dict[str, Any]) -> dict[str, Any]:
    (rotator,) = [container for container in pod["containers"] if container["name"] == "rotator"]
    return rotator


def configuration(docs: dict[str, dict[str, Any]]) -> RotatorConfig:
    return RotatorConfig(**yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"]))


def check_locked_down(name: str, pod: dict[str, Any], docs: dict[str, dict[str, Any]]) -> None:
    """Non-root, read-only, no capabilities; token and configuration from their Secret and ConfigMap."""
    rotator = rotator_of(pod)
    security = {**pod.get("securityContext", {}), **rotator.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["fsGroup"] == 65532  # the Secret's group: rotator reads the token
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in rotator["volumeMounts"]}
    assert all(mount["readOnly"] for mount in mounts.values())
    token = volumes[mounts["/run/secrets"]["name"]]["secret"]
    assert token["secretName"] == TOKEN_SECRET
    assert token["defaultMode"] == 0o440
    config = volumes[mounts["/etc/rotator"]["name"]]["configMap"]
    assert config["name"] == docs["ConfigMap"]["metadata"]["name"]
    env = {variable["name"]: variable["value"] for variable in rotator["env"]}
    assert env == {"ROTATOR_CONFIG": "/etc/rotator/config.yaml", "CREDENTIALS_DIRECTORY": "/run/secrets"}
    assert pod["terminationGracePeriodSeconds"] > 300  # longer than the default shutdown_grace
    assert "Secret" not in docs  # made from a file (the header says how), never a token in a manifest
    assert CREATE_SECRET in (KUBERNETES / name).read_text(encoding="utf-8")


def http_probe(container: dict[str, Any], kind: str) -> str | None:
    probe = container.get(kind)
    if probe is None:
        return None
    assert probe["httpGet"]["port"] == container["ports"][0]["name"]
    path: str = probe["httpGet"]["path"]
    return path


def test_the_sidecar_never_makes_its_application_unready() -> None:
    """Startup and liveness probes on /healthz for rotator, no readiness probe; the app keeps its own."""
    docs = documents("sidecar.yaml")
    assert set(docs) == {"ConfigMap", "Deployment"}
    pod = pod_of(docs["Deployment"])
    rotator = rotator_of(pod)
    (app,) = [container for container in pod["containers"] if container["name"] != "rotator"]
    assert http_probe(rotator, "startupProbe") == "/healthz"
    assert http_probe(rotator, "livenessProbe") == "/healthz"
    assert http_probe(rotator, "readinessProbe") is None
    assert "readinessProbe" in app
    assert rotator["ports"] == [{"name": "rotator-health", "containerPort": HEALTH_PORT}]
    assert docs["Deployment"]["spec"]["replicas"] == 1  # one rotator per configuration
    startup = rotator["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    check_locked_down("sidecar.yaml", pod, docs)
    assert configuration(docs).http.listen == f"0.0.0.0:{HEALTH_PORT}"


def test_rotators_own_deployment_never_runs_two() -> None:
    """One replica, replaced with Recreate; liveness and startup on /healthz, readiness on /readyz."""
    docs = documents("deployment.yaml")
    assert set(docs) == {"ConfigMap", "Deployment"}
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = pod_of(docs["Deployment"])
    assert [container["name"] for container in pod["containers"]] == ["rotator"]
    rotator = rotator_of(pod)
    assert rotator["args"] == ["run"]
    assert http_probe(rotator, "startupProbe") == "/healthz"
    assert http_probe(rotator, "livenessProbe") == "/healthz"
    assert http_probe(rotator, "readinessProbe") == "/readyz"
    assert pod["automountServiceAccountToken"] is False
    check_locked_down("deployment.yaml", pod, docs)
    assert configuration(docs).http.listen == f"0.0.0.0:{HEALTH_PORT}"


def test_the_cronjob_runs_once_per_slot() -> None:
    """run-once on the configuration's own schedule and zone, never overlapping, not retried on exit 78."""
    docs = documents("cronjob.yaml")
    assert set(docs) == {"ConfigMap", "CronJob"}
    cronjob = docs["CronJob"]["spec"]
    config = configuration(docs)
    for policy in config.policies:
        assert policy.schedule is not None
        assert policy.schedule.jitter is None  # run-once's slot is the scheduled time itself
        assert (policy.schedule.cron, policy.timezone) == (cronjob["schedule"], cronjob["timeZone"])
    assert cronjob["concurrencyPolicy"] == "Forbid"
    job = cronjob["jobTemplate"]["spec"]
    longest = max(
        policy.wait_timeout * (policy.retries + 1) + policy.retry_delay * policy.retries
        for policy in config.policies
    )
    assert job["activeDeadlineSeconds"] > longest.total_seconds()
    rules = job["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "rotator", "operator": "In",
            "values": [EXIT_CONFIG]}} in rules  # fmt: skip
    pod = pod_of(docs["CronJob"])
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    rotator = rotator_of(pod)
    assert rotator["args"] == ["run-once"]
    assert not {"startupProbe", "livenessProbe", "readinessProbe", "ports"} & rotator.keys()
    check_locked_down("cronjob.yaml", pod, docs)
    assert config.http.listen is None


def test_docker_compose() -> None:
    """compose: read-only, non-root, the token as a secret, the health port on loopback only."""
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    service = compose["services"]["rotator"]
    assert service["read_only"] is True
    assert not service["user"].startswith("0")
    assert service["secrets"] == ["api-token"]
    assert compose["secrets"]["api-token"] == {"file": "./api-token"}
    assert service["environment"]["CREDENTIALS_DIRECTORY"] == "/run/secrets"
    assert service["ports"] == [f"127.0.0.1:{HEALTH_PORT}:{HEALTH_PORT}"]
    assert service["healthcheck"]["test"] == ["CMD", "rotator", "healthcheck"]
    assert service["stop_signal"] == "SIGTERM"
    for volume in service["volumes"]:
        source = volume.split(":")[0]
        assert (COMPOSE.parent / source).exists(), f"{source} is not there, relative to {COMPOSE}"
    assert (COMPOSE.parent / service["build"] / "Dockerfile").is_file()


# -- the docs point at these files ----------------------------------------------------

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", ["README.md", "docs/deploy.md"])
def test_the_docs_links_lead_somewhere(page: str) -> None:
    """Every relative link of the page names a file or folder of the repository."""
    path = ROOT / page
    targets = [target for target in LINK.findall(path.read_text(encoding="utf-8")) if "://" not in target]
    assert targets
    missing = [target for target in targets if not (path.parent / target).exists()]
    assert missing == []


def test_the_docs_name_every_example() -> None:
    """Each example in deploy/ is linked from a page of docs/; the three of docs/deploy.md from there."""
    pages = {page.name: page.read_text(encoding="utf-8") for page in (ROOT / "docs").glob("*.md")}
    for path in [*MANIFESTS, COMPOSE]:
        link = f"(../{path.relative_to(ROOT)})"
        assert any(link in text for text in pages.values()), path
    for name in ("sidecar.yaml", "deployment.yaml", "cronjob.yaml"):
        assert f"(../deploy/kubernetes/{name})" in pages["deploy.md"]
    assert "(../deploy/compose.yaml)" in pages["deploy.md"]
