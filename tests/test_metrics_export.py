"""``run-once --metrics-file`` (node_exporter's textfile collector) and ``--pushgateway``, as real
processes against the sandbox on loopback; the push received by a small HTTP server of the test's own."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.metrics import Metrics, PolicyWatch, write_textfile
from rotator.sandbox import RunningSandbox, SandboxOptions
from tests.promtool import PromtoolMissing, find_promtool
from tests.test_daemon_e2e import fixture_serve, run_rotator, write_config

__all__ = ["fixture_serve"]

NIGHTLY = {
    "name": "nightly",
    "servers": [1, 2, 3],
    "schedule": {"cron": "0 3 * * *"},
    "retention": {"keep_last": 2},
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Push:
    method: str
    path: str
    content_type: str
    body: bytes


@dataclass
class Gateway:
    """A stand-in for a Pushgateway on loopback: records each request, answers ``status``."""

    url: str
    pushes: list[Push] = field(default_factory=list)
    status: int = 200


@pytest.fixture(name="gateway")
def fixture_gateway() -> Iterator[Gateway]:
    """An HTTP server on 127.0.0.1 that records what is pushed to it."""
    gateway = Gateway(url="")

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            gateway.pushes.append(Push(self.command, self.path, self.headers.get("Content-Type", ""), body))
            self.send_response(gateway.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = _record

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(name="sandbox")
def fixture_sandbox(serve: Callable[[SandboxOptions], RunningSandbox]) -> RunningSandbox:
    """3 servers with 2 nightly backups each, on a loopback port."""
    return serve(
        SandboxOptions(fleet="uniform", servers=3, backups_per_server=2, owner="nightly", create_seconds=0.2)
    )


def test_metrics_file_for_the_textfile_collector(sandbox: RunningSandbox, tmp_path: Path) -> None:
    """run-once writes its metrics to PATH.prom (readable by all, no temporary file left), with every
    server's last success and the fleet gauges; promtool accepts the file."""
    config = write_config(tmp_path / "rotator.yaml", [NIGHTLY])
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    target = textfile_dir / "rotator.prom"
    done = run_rotator(sandbox, "run-once", "--config", str(config), "--metrics-file", str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(textfile_dir)) == ["rotator.prom"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    text = target.read_text(encoding="utf-8")
    found = samples(text)
    nightly = frozenset({("policy", "nightly")})
    assert found[("rotator_runs_total", nightly | {("outcome", "ok"), ("dry_run", "false")})] == 1
    assert found[("rotator_runs_total", nightly | {("outcome", "failed"), ("dry_run", "false")})] == 0
    assert found[("rotator_backups_created_total", nightly)] == 3
    assert found[("rotator_servers", nightly)] == 3
    assert found[("rotator_servers_overdue", nightly)] == 0
    assert found[("rotator_servers_failing", nightly)] == 0
    assert found[("rotator_oldest_last_success_timestamp_seconds", nightly)] > 0
    assert found[("rotator_policy_max_age_seconds", nightly)] == (24 * 3600 + 6 * 3600 + 20 * 60)
    assert found[("rotator_api_authenticated", frozenset())] == 1
    assert not [name for name, _ in found if name.endswith("_created")]
    try:
        promtool = find_promtool()
    except PromtoolMissing as exc:  # the rest is checked; say why this part was not
        pytest.skip(f"the file was checked, but not by promtool: {exc}")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_failed_run_says_so_in_the_file(sandbox: RunningSandbox, tmp_path: Path) -> None:
    """Every backup fails: exit 1, and the file counts the servers failing and the failed run."""
    sandbox.sandbox.update_faults(fail_rate=1.0)
    policy = {**NIGHTLY, "retries": 0}
    config = write_config(tmp_path / "rotator.yaml", [policy])
    target = tmp_path / "rotator.prom"
    done = run_rotator(sandbox, "run-once", "--config", str(config), "--metrics-file", str(target))
    assert done.returncode == 1, done.stderr
    found = samples(target.read_text(encoding="utf-8"))
    nightly = frozenset({("policy", "nightly")})
    assert found[("rotator_servers_failing", nightly)] == 3
    assert found[("rotator_runs_total", nightly | {("outcome", "failed"), ("dry_run", "false")})] == 1
    assert found[("rotator_backups_failed_total", nightly)] == 3


def test_pushgateway_receives_the_runs_metrics(
    sandbox: RunningSandbox, gateway: Gateway, tmp_path: Path
) -> None:
    """--pushgateway PUTs the text format to /metrics/job/rotator, grouped by --policy."""
    config = write_config(tmp_path / "rotator.yaml", [NIGHTLY])
    done = run_rotator(
        sandbox, "run-once", "--config", str(config), "--policy", "nightly", "--pushgateway", gateway.url
    )
    assert done.returncode == 0, done.stderr
    (push,) = gateway.pushes
    assert push.method == "PUT"
    assert push.path == "/metrics/job/rotator/policy/nightly"
    assert push.content_type.startswith("text/plain")
    found = samples(push.body.decode())
    nightly = frozenset({("policy", "nightly")})
    assert found[("rotator_runs_total", nightly | {("outcome", "ok"), ("dry_run", "false")})] == 1
    assert found[("rotator_servers_overdue", nightly)] == 0


def test_a_dry_run_is_labelled_apart(sandbox: RunningSandbox, gateway: Gateway, tmp_path: Path) -> None:
    """run-once --dry-run pushes runs under dry_run="true" and moves no last success."""
    config = write_config(tmp_path / "rotator.yaml", [NIGHTLY])
    done = run_rotator(
        sandbox, "run-once", "--config", str(config), "--dry-run", "--pushgateway", gateway.url
    )
    assert done.returncode == 0, done.stderr
    (push,) = gateway.pushes
    assert push.path == "/metrics/job/rotator"
    found = samples(push.body.decode())
    nightly = frozenset({("policy", "nightly")})
    assert found[("rotator_runs_total", nightly | {("outcome", "ok"), ("dry_run", "true")})] == 1
    assert ("rotator_runs_total", nightly | {("outcome", "ok"), ("dry_run", "false")}) not in found
    assert found[("rotator_backups_created_total", nightly)] == 0


def test_a_failed_push_is_said_and_does_not_fail_the_run(
    sandbox: RunningSandbox, gateway: Gateway, tmp_path: Path
) -> None:
    """The gateway answers 500: one line on stderr naming the gateway, the run's exit code stays 0."""
    gateway.status = 500
    config = write_config(tmp_path / "rotator.yaml", [NIGHTLY])
    done = run_rotator(sandbox, "run-once", "--config", str(config), "--pushgateway", gateway.url)
    assert done.returncode == 0, done.stderr
    assert len(gateway.pushes) == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("rotator: metrics not handed on")]
    assert len(lines) == 1, done.stderr
    assert gateway.url in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-file", "{tmp}/rotator.txt"], "reads only *.prom files"),
        (["--metrics-file", "{tmp}/missing/rotator.prom"], "no such directory"),
        (["--pushgateway", "pushgateway:9091"], "not an http(s) URL"),
        (["--pushgateway", "ftp://pushgateway"], "not an http(s) URL"),
    ],
)
def test_bad_export_arguments_exit_2_before_any_run(
    sandbox: RunningSandbox, tmp_path: Path, argv: list[str], message: str
) -> None:
    """A bad path or URL: exit 2, one line naming the option, and no request to the API."""
    config = write_config(tmp_path / "rotator.yaml", [NIGHTLY])
    arguments = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    done = run_rotator(sandbox, "run-once", "--config", str(config), *arguments)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"rotator: {argv[0]}"), line
    assert message in line
    assert sandbox.sandbox.stats()["total"] == 0
    assert done.stdout == ""


def test_write_textfile_replaces_the_file_by_a_rename(tmp_path: Path) -> None:
    """An existing file is replaced whole (a new inode: a reader sees the old file or the new one,
    never half of one), and no temporary file stays behind."""
    target = tmp_path / "rotator.prom"
    target.write_text("# an older run's metrics\n", encoding="utf-8")
    before = target.stat().st_ino
    metrics = Metrics(policies=[PolicyWatch("nightly", (1, 2))])
    write_textfile(metrics, target)
    assert target.stat().st_ino != before
    assert target.read_bytes() == metrics.render()
    assert sorted(os.listdir(tmp_path)) == ["rotator.prom"]


def test_write_textfile_leaves_nothing_when_it_fails(tmp_path: Path) -> None:
    """A rename that fails (the target is a directory) raises and removes the temporary file."""
    target = tmp_path / "rotator.prom"
    target.mkdir()
    (target / "keep").write_text("x", encoding="utf-8")
    with pytest.raises(OSError, match=r"rotator\.prom"):
        write_textfile(Metrics(), target)
    assert sorted(os.listdir(tmp_path)) == ["rotator.prom"]
