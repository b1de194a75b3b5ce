"""The sandbox on a real loopback socket, and ``rotator sandbox`` (its CLI)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from rotator.sandbox import FaultOptions, RunningSandbox
from rotator.sandbox import server as sandbox_server_module
from rotator.sandbox.cli import add_arguments, is_loopback, options_from_args, run

ROOT = Path(__file__).resolve().parents[2]


def client_for(running: RunningSandbox) -> httpx.Client:
    """A synchronous client sending the running sandbox's token."""
    return httpx.Client(headers={"Authorization": f"Bearer {running.token}"}, timeout=10)


def test_the_server_fixture_serves_the_api_on_loopback(sandbox_server: RunningSandbox) -> None:
    """Base and API URLs on 127.0.0.1; absolute next links name the real host and port."""
    assert sandbox_server.base_url.startswith("http://127.0.0.1:")
    assert sandbox_server.api_url == f"{sandbox_server.base_url}/api/v1"
    with client_for(sandbox_server) as client:
        page = client.get(f"{sandbox_server.api_url}/backups/").json()
        assert page["next"] == f"{sandbox_server.api_url}/backups/?page=2"
        assert client.get(page["next"]).status_code == 200
    assert "sandbox-token" not in repr(sandbox_server)


def test_the_listening_socket_says_it_is_tcp() -> None:
    """Accepted connections inherit the protocol; asyncio turns Nagle's delay off only on IPPROTO_TCP
    sockets, and without that every kept-alive answer waits ~40 ms for the client's delayed ACK."""
    sock = sandbox_server_module._listening_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_tests_drive_the_clock_of_a_served_sandbox(sandbox_server: RunningSandbox) -> None:
    """A create completes over the socket once the test advances the clock."""
    with client_for(sandbox_server) as client:
        created = client.post(f"{sandbox_server.api_url}/backups/", json={"server_id": 12345}).json()
        sandbox_server.clock.advance(sandbox_server.options.create_seconds)
        assert sandbox_server.state.backup(created["id"]).status == "completed"


def test_a_dropped_create_loses_the_connection_over_a_socket(sandbox_server: RunningSandbox) -> None:
    """The client sees a lost connection; the backup exists afterwards."""
    sandbox_server.sandbox.update_faults(drop_rate=1.0)
    with client_for(sandbox_server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(
                f"{sandbox_server.api_url}/backups/", json={"server_id": 12345, "description": "lost"}
            )
        sandbox_server.sandbox.update_faults(drop_rate=0.0)
        listed = client.get(
            f"{sandbox_server.api_url}/backups/", params={"server_id": 12345, "page": "last"}
        ).json()
        stats = client.get(f"{sandbox_server.base_url}/_sandbox/stats").json()
    assert listed["results"][-1]["description"] == "lost"
    assert stats["requests"]["POST /api/v1/backups/"] == {"dropped": 1}


# -- CLI -------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    """Parse ``rotator sandbox`` arguments."""
    parser = argparse.ArgumentParser(prog="rotator sandbox")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_defaults() -> None:
    """Loopback, port 8765, the default token, a demo fleet, no faults."""
    args = parse()
    assert (args.host, args.port, args.allow_remote) == ("127.0.0.1", 8765, False)
    options = options_from_args(args)
    assert options.token == "sandbox-token"
    assert options.fleet == "demo"
    assert options.page_size == 10
    assert options.frozen_clock is None
    assert options.faults.rate_limit is None


def test_cli_options_reach_the_sandbox() -> None:
    """Every option lands in SandboxOptions / FaultOptions."""
    args = parse(
        "--token", "t0k", "--page-size", "50", "--seed", "9", "--fleet", "uniform",
        "--servers", "1000", "--backups-per-server", "30", "--owner", "daily",
        "--latency", "0.1", "--error-rate", "0.05", "--rate-limit", "20", "--burst", "40",
        "--drop-rate", "0.01", "--fail-rate", "0.02", "--create-seconds", "5",
        "--frozen-clock", "2025-01-16T15:45:00Z",
    )  # fmt: skip
    options = options_from_args(args)
    assert (options.token, options.page_size, options.seed) == ("t0k", 50, 9)
    assert (options.fleet, options.servers, options.backups_per_server, options.owner) == (
        "uniform",
        1000,
        30,
        "daily",
    )
    assert options.create_seconds == 5.0
    assert options.frozen_clock == datetime(2025, 1, 16, 15, 45, tzinfo=UTC)
    faults = options.faults
    assert (faults.latency, faults.error_rate, faults.rate_limit, faults.burst) == (0.1, 0.05, 20.0, 40)
    assert (faults.drop_rate, faults.fail_rate) == (0.01, 0.02)


def test_cli_sets_the_faults_of_an_api_that_lags_shifts_and_lies() -> None:
    """Each of these faults has a flag that lands in FaultOptions; --log-listings in SandboxOptions."""
    args = parse(
        "--api-clock-offset", "-3600", "--listing-lag", "5", "--create-answer-delay", "1.5",
        "--page-shift-rate", "0.1", "--description-max-length", "100", "--auth-echo",
        "--lie-known-id-rate", "0.2", "--lie-other-server-rate", "0.3", "--empty-page-rate", "0.4",
        "--third-party-delete-rate", "0.05", "--log-listings",
    )  # fmt: skip
    options = options_from_args(args)
    faults = options.faults
    assert (faults.api_clock_offset, faults.listing_lag, faults.create_answer_delay) == (-3600.0, 5.0, 1.5)
    assert (faults.page_shift_rate, faults.empty_page_rate, faults.third_party_delete_rate) == (
        0.1,
        0.4,
        0.05,
    )
    assert (faults.lie_known_id_rate, faults.lie_other_server_rate) == (0.2, 0.3)
    assert (faults.description_max_length, faults.auth_echo) == (100, True)
    assert options.log_listings is True
    defaults = options_from_args(parse())
    assert defaults.faults == FaultOptions()
    assert defaults.log_listings is False


def test_cli_help_lists_every_fault(capsys: pytest.CaptureFixture[str]) -> None:
    """``rotator sandbox --help`` names a flag for every fault option and --log-listings."""
    parser = argparse.ArgumentParser(prog="rotator sandbox")
    add_arguments(parser)
    parser.print_help()
    text = capsys.readouterr().out
    flags = {
        "rate_limit_headers": "--no-rate-limit-headers",
        **{
            f.name: "--" + f.name.replace("_", "-")
            for f in fields(FaultOptions)
            if f.name != "rate_limit_headers"
        },
    }
    missing = [flag for flag in [*flags.values(), "--log-listings"] if flag not in text]
    assert not missing


def test_cli_refuses_bad_new_fault_values(capsys: pytest.CaptureFixture[str]) -> None:
    """A negative lag or delay, a rate over 1 and a negative length exit 2 with a reason."""
    for argv in (
        ("--listing-lag", "-1"),
        ("--create-answer-delay", "-0.5"),
        ("--page-shift-rate", "1.5"),
        ("--description-max-length", "-1"),
    ):
        assert run(parse(*argv)) == 2, argv
    assert capsys.readouterr().err.count("rotator sandbox:") == 4


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """Only loopback addresses and ``localhost`` count as local."""
    assert is_loopback(host) is loopback


def test_cli_refuses_a_remote_host_without_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-loopback --host is refused with exit 2 and a reason."""
    assert run(parse("--host", "0.0.0.0")) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_cli_refuses_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    """Out-of-range rates and unreadable instants exit 2."""
    assert run(parse("--error-rate", "2")) == 2
    assert run(parse("--frozen-clock", "tomorrow")) == 2
    assert capsys.readouterr().err.count("rotator sandbox:") == 2


def test_cli_run_announces_the_url_and_token_then_stops(capsys: pytest.CaptureFixture[str]) -> None:
    """``run`` serves, prints one line with the API URL and token, and exits 0 when stopped."""
    stop = threading.Event()
    stop.set()
    assert run(parse("--port", "0", "--token", "demo-t0ken"), stop=stop) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "http://127.0.0.1:" in out[0]
    assert "/api/v1" in out[0]
    assert "demo-t0ken" in out[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_stops_cleanly_on_a_signal(sig: signal.Signals) -> None:
    """In its own process, ``rotator sandbox`` exits 0 on SIGTERM and on Ctrl-C."""
    code = (
        "import argparse, sys\n"
        "from rotator.sandbox.cli import add_arguments, run\n"
        "p = argparse.ArgumentParser(); add_arguments(p)\n"
        "sys.exit(run(p.parse_args(['--port', '0'])))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "/api/v1" in line
        url = line.split("API at ", 1)[1].split()[0]
        response = httpx.get(f"{url}/backups/", headers={"Authorization": "Bearer sandbox-token"})
        assert response.status_code == 200
        process.send_signal(sig)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "sandbox-token" not in err
