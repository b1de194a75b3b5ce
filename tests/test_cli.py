"""The CLI's contract with people: output, one-line errors, exit codes, confirmations (respx)."""

from __future__ import annotations

import argparse
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from rotator import errors
from rotator.api import BackupsClient
from rotator.cli import main, run_once_exit_code
from rotator.config import load_config
from rotator.runner import Outcome, RunReport, ServerResult
from rotator.secrets import ApiToken, load_token
from tests.test_api import DOC_EXAMPLE, backup_json, page

API = "https://api.test/api/v1"
TOKEN = "cli-token-77aa-SECRET"
pytestmark = pytest.mark.usefixtures("httpx_transport")  # respx mocks httpx's own transport


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the CLI at the mocked API with a token; no systemd credentials around."""
    monkeypatch.setenv("ROTATOR_API_URL", API)
    monkeypatch.setenv("ROTATOR_API_TOKEN", TOKEN)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("ROTATOR_CONFIG", raising=False)


@pytest.fixture(name="api")
def fixture_api() -> respx.MockRouter:
    """respx routes for the API; anything not routed fails."""
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


def test_list_table_is_newest_first(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """The documentation's unsorted example is shown newest first, with sizes and expiry."""
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE))
    code, out, _ = run(capsys, "backups", "list")
    assert code == 0
    ids = [line.split()[0] for line in out.splitlines()[1:]]
    assert ids == ["501", "495", "499"]
    assert "4.4 GiB" in out
    assert out.splitlines()[0].split()[:5] == ["ID", "SERVER", "TYPE", "POLICY", "STATUS"]


def test_list_json_merges_every_page(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the API's shape with all pages merged, filters passed through."""
    api.get("/backups/", params={"server_id": "12345", "backup_type": "manual", "page": "2"}).mock(
        return_value=page(DOC_EXAMPLE[2:], 3)
    )
    api.get("/backups/", params={"server_id": "12345", "backup_type": "manual"}).mock(
        return_value=page(DOC_EXAMPLE[:2], 3, f"{API}/backups/?server_id=12345&backup_type=manual&page=2")
    )
    code, out, _ = run(capsys, "backups", "list", "--server", "12345", "--type", "manual", "--json")
    assert code == 0
    assert json.loads(out) == {"count": 3, "results": DOC_EXAMPLE}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["backups", "list", "--server", "abc"], "not a whole number"),
        (["backups", "list", "--server", "0"], "must be 1 or more"),
        (["backups", "list", "--type", "weekly"], "invalid choice"),
        (["backups", "create", "1", "--timeout", "soon"], "not a duration"),
        (["backups", "delete"], "required"),
        (["nonsense"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    """Bad arguments: exit 2 with one line naming the problem, no traceback."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    _, err = capsys.readouterr()
    assert caught.value.code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_missing_token_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No token anywhere: exit 78 naming every place it may come from."""
    monkeypatch.delenv("ROTATOR_API_TOKEN")
    code, _, err = run(capsys, "backups", "list")
    assert code == 78
    assert "ROTATOR_API_TOKEN" in err
    assert len(err.strip().splitlines()) == 1


def test_token_file_option_is_read(
    api: respx.MockRouter, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--token-file wins over the environment; its trailing newline is not part of the token."""
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    route = api.get("/backups/").mock(return_value=page([]))
    code, out, _ = run(capsys, "backups", "list", "--token-file", str(token_file))
    assert code == 0
    assert "no backups" in out
    assert route.calls.last.request.headers["authorization"] == "Bearer from-file-token"


def test_systemd_credential_is_read(
    api: respx.MockRouter, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$CREDENTIALS_DIRECTORY/api-token is used when nothing else names a token."""
    (tmp_path / "api-token").write_text("credential-token")
    monkeypatch.delenv("ROTATOR_API_TOKEN")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    route = api.get("/backups/").mock(return_value=page([]))
    assert run(capsys, "backups", "list")[0] == 0
    assert route.calls.last.request.headers["authorization"] == "Bearer credential-token"


def test_unreadable_token_file_is_78(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A token file that is missing is a configuration error naming the path."""
    code, _, err = run(capsys, "backups", "list", "--token-file", str(tmp_path / "nope"))
    assert code == 78
    assert "no such file" in err


def test_rejected_token_says_where_to_look(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """401: one line naming the token sources, exit 1."""
    api.get("/backups/").mock(return_value=httpx.Response(401, json={"detail": "Invalid token."}))
    code, _, err = run(capsys, "backups", "list")
    assert code == 1
    assert err.strip() == (
        "rotator: the API rejected the token (401: Invalid token.): check ROTATOR_API_TOKEN, "
        "--token-file or the api-token credential"
    )


def test_bad_api_url_is_78(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An API URL that is not http(s) is a configuration error."""
    code, _, err = run(capsys, "backups", "list", "--api-url", "ftp://x")
    assert code == 78
    assert "--api-url" in err


def test_invalid_api_answer_is_one_line(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """An HTML page where JSON was expected: one line, exit 1, no traceback."""
    api.get("/backups/").mock(return_value=httpx.Response(200, text="<html>maintenance</html>"))
    code, _, err = run(capsys, "backups", "list")
    assert code == 1
    assert "not JSON" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_delete_without_terminal_or_yes_deletes_nothing(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --yes and no terminal to ask on: exit 2, and no DELETE is sent."""
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE))
    delete = api.delete("/backups/499/").mock(return_value=httpx.Response(204))
    code, out, err = run(capsys, "backups", "delete", "499")
    assert code == 2
    assert "--yes" in err
    assert "499" in out  # it showed what would be deleted
    assert not delete.called


def test_delete_unknown_id_deletes_nothing(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """One unknown id among several: exit 1, nothing deleted."""
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE))
    delete = api.delete(url__regex=r".*/backups/\d+/").mock(return_value=httpx.Response(204))
    code, _, err = run(capsys, "backups", "delete", "499", "12", "--yes")
    assert code == 1
    assert "no backup with id 12" in err
    assert not delete.called


def test_delete_with_yes(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """--yes (--force for the automatic one) deletes each listed backup once and says so."""
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE))
    first = api.delete("/backups/499/").mock(return_value=httpx.Response(204))
    second = api.delete("/backups/495/").mock(return_value=httpx.Response(204))
    code, out, _ = run(capsys, "backups", "delete", "499", "495", "499", "--yes", "--force")  # 495: automatic
    assert code == 0
    assert first.call_count == 1
    assert second.call_count == 1
    assert "deleted backup 499" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_delete_asks_and_respects_no(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, anything but yes keeps the backups."""
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    api.get("/backups/").mock(return_value=page(DOC_EXAMPLE))
    delete = api.delete("/backups/499/").mock(return_value=httpx.Response(204))
    code, out, _ = run(capsys, "backups", "delete", "499")
    assert code == 0
    assert "nothing deleted" in out
    assert not delete.called


def test_restore_refuses_a_backup_of_another_server(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    """Restoring overwrites the server: a backup that is not its own is refused before any POST."""
    api.get("/backups/", params={"server_id": "777"}).mock(return_value=page([]))
    restore = api.post("/servers/777/restore/").mock(return_value=httpx.Response(202))
    code, _, err = run(capsys, "restore", "777", "499", "--yes")
    assert code == 1
    assert "not a backup of server 777" in err
    assert not restore.called


def test_restore_refuses_an_unfinished_backup(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    """An in-progress backup cannot be restored from."""
    item = backup_json(600, "2025-01-16T15:45:00Z", status="in_progress")
    api.get("/backups/", params={"server_id": "12345"}).mock(return_value=page([item]))
    restore = api.post("/servers/12345/restore/").mock(return_value=httpx.Response(202))
    code, _, err = run(capsys, "restore", "12345", "600", "--yes")
    assert code == 1
    assert "in_progress, not completed" in err
    assert not restore.called


def test_restore_with_yes(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """A completed backup of the server is restored and the API's answer shown."""
    api.get("/backups/", params={"server_id": "12345"}).mock(return_value=page(DOC_EXAMPLE))
    restore = api.post("/servers/12345/restore/").mock(
        return_value=httpx.Response(202, json={"detail": "Restore started"})
    )
    code, out, _ = run(capsys, "restore", "12345", "499", "--yes")
    assert code == 0
    assert json.loads(restore.calls.last.request.content) == {"backup_id": 499}
    assert "Restore started" in out


def test_create_json(api: respx.MockRouter, capsys: pytest.CaptureFixture[str]) -> None:
    """create prints the new backup; without --wait it does not poll."""
    created = backup_json(
        502, "2025-01-16T15:45:00Z", status="in_progress", description="Pre-deployment backup"
    )
    api.post("/backups/").mock(return_value=httpx.Response(201, json={**created, "message": "started"}))
    listing = api.get("/backups/").mock(return_value=page([]))
    code, out, _ = run(
        capsys, "backups", "create", "12345", "--description", "Pre-deployment backup", "--json"
    )
    assert code == 0
    assert json.loads(out)["id"] == 502
    assert not listing.called


def test_only_the_sandbox_command_imports_the_sandbox() -> None:
    """``rotator run`` and the others parse without starlette and uvicorn; ``sandbox`` has its options."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = (
        "import sys\n"
        "from rotator.cli import build_parser\n"
        "args = build_parser(sandbox=False).parse_args(['run', '--config', 'x.yaml'])\n"
        "assert args.command == 'run'\n"
        "heavy = ('rotator.sandbox', 'starlette', 'uvicorn')\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "assert not heavy, heavy\n"
        "args = build_parser().parse_args(['sandbox', '--port', '0'])\n"
        "assert args.port == 0\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# -- exit codes of run-once, the token's scrubbing, plain http -------------------------------

SLOT = datetime(2025, 1, 16, 3, 0, tzinfo=UTC)


def run_report(*outcomes: Outcome) -> RunReport:
    servers = [ServerResult(sid, outcome=outcome) for sid, outcome in enumerate(outcomes, start=1)]
    return RunReport("nightly", SLOT, False, servers)


@pytest.mark.parametrize(
    ("reports", "code"),
    [
        pytest.param([], 0, id="nothing-to-run"),
        pytest.param([run_report(Outcome.OK), run_report()], 0, id="ok"),
        pytest.param([run_report(Outcome.OK, Outcome.ABANDONED)], 75, id="abandoned"),
        pytest.param([run_report(Outcome.OK), run_report(Outcome.ABANDONED)], 75, id="one-policy-abandoned"),
        pytest.param([run_report(Outcome.FAILED)], 1, id="failed"),
        pytest.param([run_report(Outcome.UNKNOWN)], 1, id="unknown"),
        pytest.param([run_report(Outcome.ABANDONED, Outcome.FAILED)], 1, id="failed-beats-abandoned"),
        pytest.param([run_report(Outcome.ABANDONED), run_report(Outcome.UNKNOWN)], 1, id="unknown-beats"),
    ],
)
def test_run_once_exit_code(reports: list[RunReport], code: int) -> None:
    """0 all ok; 1 anything failed or unknown; else 75 (EX_TEMPFAIL) when a shutdown cut a run short."""
    assert run_once_exit_code(reports) == code


def test_exit_abandoned_is_ex_tempfail() -> None:
    """75 is sysexits' EX_TEMPFAIL: cron and Kubernetes read it as "try again", not as a failure."""
    assert errors.EXIT_ABANDONED == 75
    assert len({errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_ABANDONED, 78, 130}) == 6


def test_help_names_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists the exit codes a script has to tell apart, 75 (abandoned) among them."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ("0 ok", "1 ", "2 usage", "75 ", "78 configuration", "130 interrupted"):
        assert code in out, code


def test_echoed_token_is_masked_in_the_error_line(
    api: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 401 whose body repeats the Authorization header: the line shows the mask, never the token."""
    api.get("/backups/").mock(
        side_effect=lambda request: httpx.Response(
            401, json={"detail": f"Invalid token. You sent: {request.headers['authorization']}"}
        )
    )
    code, _, err = run(capsys, "backups", "list")  # run() asserts the token is nowhere in the output
    assert code == 1
    assert err.strip() == (
        "rotator: the API rejected the token (401: Invalid token. You sent: Bearer ********): "
        "check ROTATOR_API_TOKEN, --token-file or the api-token credential"
    )


def test_a_short_echoed_token_is_masked_too(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The client masks its own token whatever its length (the global scrub skips short ones)."""
    monkeypatch.setenv("ROTATOR_API_TOKEN", "k3y")
    api.get("/backups/").mock(
        side_effect=lambda request: httpx.Response(401, text=f"bad {request.headers['authorization']}")
    )
    code, _, err = run(capsys, "backups", "list")
    assert code == 1
    assert "Bearer ********" in err
    assert "k3y" not in err


def test_the_error_line_is_scrubbed_whatever_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last line of defence: a RotatorError carrying the token is printed with the mask."""

    def leaky(args: argparse.Namespace) -> int:
        load_token(environ=os.environ)  # the process holds the token, as every command does
        raise errors.RotatorError(f"something quoted {TOKEN} back\nover two lines")

    monkeypatch.setattr("rotator.cli._cmd_list", leaky)
    code, _, err = run(capsys, "backups", "list")
    assert code == 1
    assert err == "rotator: something quoted ******** back over two lines\n"


def test_the_oserror_line_is_scrubbed_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catch-all for OSError and RuntimeError is an error line of the CLI like any other."""

    def leaky(args: argparse.Namespace) -> int:
        load_token(environ=os.environ)
        raise RuntimeError(f"a library quoted {TOKEN}")

    monkeypatch.setattr("rotator.cli._cmd_list", leaky)
    code = main(["backups", "list"])
    _, err = capsys.readouterr()
    assert code == 1
    assert TOKEN not in err


@pytest.mark.parametrize("how", ["option", "environment"])
def test_plain_http_to_another_host_is_refused_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """--api-url or ROTATOR_API_URL with http to a remote host: exit 78 before any request is sent."""
    insecure = "http://api.test/api/v1"
    argv = ["backups", "list"]
    if how == "option":
        argv += ["--api-url", insecure]
    else:
        monkeypatch.setenv("ROTATOR_API_URL", insecure)
    with respx.mock(base_url=insecure, assert_all_called=False) as remote:
        route = remote.get("/backups/").mock(return_value=page([]))
        code, _, err = run(capsys, *argv)
    assert not route.called, "the token was sent over plain http"
    assert code == 78
    assert "https" in err


def test_plain_http_to_this_machine_is_fine_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--api-url http://127.0.0.1:PORT (a sandbox, a tunnel) is accepted: the request goes out."""
    with respx.mock(base_url="http://127.0.0.1:9/api/v1") as local:
        route = local.get("/backups/").mock(return_value=page([]))
        code, out, _ = run(capsys, "backups", "list", "--api-url", "http://127.0.0.1:9/api/v1")
    assert code == 0
    assert route.called
    assert "no backups" in out


def test_runner_takes_the_api_keys(tmp_path: Path) -> None:
    """api.create_quiet_period and api.max_view_age reach the runner, in seconds."""
    from rotator.cli import _runner  # noqa: PLC0415 - the wiring under test is private

    path = tmp_path / "rotator.yaml"
    path.write_text(
        "policies: [{name: n, servers: [1], retention: {keep_last: 1}}]\n"
        "api: {create_quiet_period: 5m, max_view_age: 90s}\n"
    )
    runner = _runner(BackupsClient(ApiToken("t0ken-for-test", "test")), load_config(path))
    assert (runner.quiet_period, runner.max_view_age) == (300.0, 90.0)
