"""The ``rotator`` command: the only place that prints for people and chooses exit codes.

Exit codes: 0 success, 1 an API or runtime failure, 2 a usage error,
73 run-once declined: another instance holds the coordination lease (nothing done),
75 run-once stopped before its runs finished (abandoned, not failed),
78 a configuration error (including a missing or unreadable token),
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO
from zoneinfo import ZoneInfo

import pydantic
import structlog

from rotator import __version__, errors
from rotator.addresses import health_url
from rotator.api import DEFAULT_API_URL, ApiObserver, BackupsClient, ClientSettings
from rotator.apicheck import ApiCheck, check_api
from rotator.apiurl import API_URL_ENV, choose_api_url, refuse_settings_spelling
from rotator.byhand import cautions, owned_by, policy_of, refusal
from rotator.config import CONFIG_ENV, RotatorConfig, config_path, load_config
from rotator.coordination import Coordinator, Fence
from rotator.durations import format_duration, parse_duration
from rotator.health import check_health
from rotator.inventory import Inventory, Views
from rotator.leadership import coordinator_from_config, run_once_lease
from rotator.markers import is_policy_name
from rotator.metrics import Metrics
from rotator.metrics_export import MetricsExport, exports_metrics
from rotator.models import COMPLETED, IN_PROGRESS, Backup, BackupPage, format_timestamp
from rotator.notifications import Notifications
from rotator.notify import Notifier
from rotator.observability import LEVELS, configure_logging
from rotator.pings import Pinger
from rotator.planview import PlannedJob, build_plans, plans_of_reports
from rotator.planview import render_json as render_plan_json
from rotator.planview import render_table as render_plan_table
from rotator.reports import delete_document, policy_check_document, restore_document, run_once_document
from rotator.runner import JobSpec, Runner, RunReport, Status
from rotator.schedule import next_slots
from rotator.scheduler import Daemon, ScheduledJob, daemon_settings, jobs_from_config
from rotator.secrets import TOKEN_ENV, load_token, scrub
from rotator.status import fleet_status, watched_policies
from rotator.status import render_json as render_status_json
from rotator.status import render_table as render_status_table
from rotator.telemetry import Telemetry, reported_run
from rotator.terminal import quiet_on_closed_stdout

HTTP_LISTEN_ENV = "ROTATOR_HTTP__LISTEN"
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


class Interrupted(errors.RotatorError):
    """^C while rotator waited on something that goes on without it; the message says what."""

    exit_code = EXIT_INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(errors.EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _instant(text: str) -> datetime:
    """An ISO 8601 instant with its offset (``2025-01-16T03:00Z``), or a date: its midnight in UTC.

    ``2025-01-16Z`` is read as that date too (an earlier hint suggested it).
    """
    try:
        day = date.fromisoformat(text.removesuffix("Z"))
    except ValueError:
        pass
    else:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 instant or date (e.g. 2025-01-16T03:00Z, 2025-01-16): {text!r}"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}Z or {text}+01:00: {text!r}")
    return value.astimezone(UTC)


def _policy_name(text: str) -> str:
    if not is_policy_name(text):
        raise argparse.ArgumentTypeError(f"not a policy name (letters, digits, '-', '_', '.'): {text!r}")
    return text


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before or after the command (defaults only on the top parser)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--api-url",
        metavar="URL",
        default=default(None),
        help=f"base URL of the API (env {API_URL_ENV}; default {DEFAULT_API_URL})",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        type=Path,
        default=default(None),
        help=f"file holding the API token (else env {TOKEN_ENV}, or $CREDENTIALS_DIRECTORY/api-token)",
    )
    parser.add_argument(
        "--ca-bundle", metavar="PATH", type=Path, default=default(None), help="CA bundle to verify TLS with"
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        default=default(None),
        help=f"configuration file (env {CONFIG_ENV}); needed by plan, run, run-once, check-config",
    )
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=default(None),
        help="log events at this level and above (default: warning; for run and run-once, log.level)",
    )


def build_parser(*, sandbox: bool = True) -> argparse.ArgumentParser:
    """The whole command line; ``sandbox=False`` leaves out the sandbox's options (and its imports)."""
    parser = _Parser(
        prog="rotator",
        description="Create manual backups on a schedule and prune them by retention rules.",
        epilog=(
            "exit codes: 0 ok, 1 API or runtime failure, 2 usage, 73 run-once declined (another instance "
            "leads), 75 run-once abandoned (stopped), 78 configuration, 130 interrupted"
        ),
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    _global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_backup_commands(commands, common)
    _add_rotation_commands(commands, common)
    _add_sandbox_command(commands, load=sandbox)
    _add_tool_commands(commands)
    return parser


Commands = Any  # argparse's _SubParsersAction is private


def _add_backup_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    backups = commands.add_parser("backups", help="list, create and delete backups", parents=[common])
    backup_commands = backups.add_subparsers(dest="backups_command", required=True, metavar="ACTION")

    listing = backup_commands.add_parser("list", help="list backups, newest first", parents=[common])
    listing.add_argument("--server", type=_positive_int, metavar="ID", help="only this server's backups")
    listing.add_argument("--type", choices=("manual", "automatic"), help="only backups of this type")
    listing.add_argument(
        "--policy", type=_policy_name, metavar="NAME", help="only backups this policy owns (by their marker)"
    )
    listing.add_argument("--json", action="store_true", help='print the API\'s shape: {"count", "results"}')
    listing.set_defaults(handler=_cmd_list)

    create = backup_commands.add_parser("create", help="create a manual backup", parents=[common])
    create.add_argument("server_id", type=_positive_int, metavar="SERVER_ID")
    create.add_argument("--description", metavar="TEXT", help="the backup's description")
    create.add_argument("--wait", action="store_true", help="wait until the backup completes or fails")
    create.add_argument(
        "--timeout",
        type=_duration,
        default=timedelta(hours=2),
        metavar="DURATION",
        help="how long --wait waits (e.g. 30m, 2h; default 2h)",
    )
    create.add_argument("--json", action="store_true", help="print the backup as JSON")
    create.set_defaults(handler=_cmd_create)

    delete = backup_commands.add_parser("delete", help="delete backups (cannot be undone)", parents=[common])
    delete.add_argument("backup_ids", type=_positive_int, nargs="+", metavar="BACKUP_ID")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument(
        "--force",
        action="store_true",
        help="with --yes, also delete backups a policy owns and automatic ones (asked about otherwise)",
    )
    delete.add_argument(
        "--json", action="store_true", help="print what was deleted as JSON (the rest to stderr)"
    )
    delete.set_defaults(handler=_cmd_delete)

    restore = commands.add_parser(
        "restore", help="restore a server from one of its backups (overwrites the server)", parents=[common]
    )
    restore.add_argument("server_id", type=_positive_int, metavar="SERVER_ID")
    restore.add_argument("backup_id", type=_positive_int, metavar="BACKUP_ID")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.add_argument(
        "--json", action="store_true", help="print the API's answer as JSON (the rest to stderr)"
    )
    restore.set_defaults(handler=_cmd_restore)


def _add_rotation_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    plan = commands.add_parser(
        "plan", help="show what each policy would keep and delete, deleting nothing", parents=[common]
    )
    plan.add_argument("--policy", metavar="NAME", help="only this policy")
    plan.add_argument("--server", type=_positive_int, metavar="ID", help="only this server")
    plan.add_argument(
        "--now", type=_instant, metavar="ISO8601", help="plan as of this instant (default: now)"
    )
    plan.add_argument(
        "--from-file",
        type=Path,
        metavar="LISTING.json",
        help="read the backups from a listing in the API's shape instead of the API (no token needed)",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(handler=_cmd_plan)

    daemon = commands.add_parser(
        "run", help="the daemon: run the policies on their schedules", parents=[common]
    )
    daemon.add_argument(
        "--dry-run", action="store_true", help="log every decision, create and delete nothing"
    )
    daemon.set_defaults(handler=_cmd_run)

    once = commands.add_parser(
        "run-once", help="run the policies once now (for cron and Kubernetes CronJobs)", parents=[common]
    )
    once.add_argument("--policy", metavar="NAME", help="only this policy")
    once.add_argument("--server", type=_positive_int, metavar="ID", help="only this server")
    once.add_argument("--dry-run", action="store_true", help="log every decision, create and delete nothing")
    once.add_argument(
        "--now", type=_instant, metavar="ISO8601", help="run as of this instant (default: now; for tests)"
    )
    once.add_argument("--json", action="store_true", help="print each policy's run report as JSON")
    once.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH.prom",
        help="write the run's metrics there, for node_exporter's textfile collector (atomically)",
    )
    once.add_argument(
        "--pushgateway", metavar="URL", help="push the run's metrics to this Prometheus Pushgateway"
    )
    once.set_defaults(handler=_cmd_run_once)

    status = commands.add_parser(
        "status",
        help="each server's newest backup, its age, and what is overdue or failing",
        parents=[common],
    )
    status.add_argument("--policy", metavar="NAME", help="only this policy")
    status.add_argument("--server", type=_positive_int, metavar="ID", help="only this server")
    status.add_argument(
        "--now", type=_instant, metavar="ISO8601", help="judge as of this instant (default: now)"
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_cmd_status)

    check = commands.add_parser(
        "check-config", help="validate the configuration and show each policy's next runs", parents=[common]
    )
    check.add_argument("--json", action="store_true", help="print the policies and their next runs as JSON")
    check.add_argument(
        "--check-api",
        action="store_true",
        help="also ask the API: is the token accepted, and does it list backups of every configured server",
    )
    check.set_defaults(handler=_cmd_check_config)

    health = commands.add_parser(
        "healthcheck",
        help="exit 0 when the running daemon's /healthz and /readyz answer OK (container health checks)",
        parents=[common],
    )
    health.add_argument(
        "--url",
        metavar="URL",
        help=f"the listener's base URL (default: from {HTTP_LISTEN_ENV} or the configuration's http.listen)",
    )
    health.add_argument(
        "--timeout", type=_duration, default=timedelta(seconds=5), metavar="DURATION", help="default 5s"
    )
    health.set_defaults(handler=_cmd_healthcheck)


def _add_tool_commands(commands: Commands) -> None:
    """Commands about rotator itself, for editors and shells; they need no configuration or API."""
    schema = commands.add_parser(
        "config-schema",
        help="print a JSON Schema of the configuration file (for editors: yaml-language-server)",
    )
    schema.set_defaults(handler=_cmd_config_schema)
    completion = commands.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description='Print the completion script; e.g. eval "$(rotator completion bash)" in ~/.bashrc, '
        "or rotator completion fish | source. Installed packages load it by themselves (see README).",
    )
    completion.add_argument(
        "shell", choices=("bash", "zsh", "fish"), metavar="SHELL", help="bash, zsh or fish"
    )
    completion.set_defaults(handler=_cmd_completion)
    manual = commands.add_parser(
        "man", help="print the manual page, rotator(1), in roff (man -l <(rotator man))"
    )
    manual.set_defaults(handler=_cmd_man)


def _cmd_config_schema(args: argparse.Namespace) -> int:
    from rotator.schema import config_schema  # noqa: PLC0415 - pydantic's schema generator, only here

    print(json.dumps(config_schema(), indent=2))
    return errors.EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    from rotator.completion import completion_script  # noqa: PLC0415 - shtab, only here

    print(completion_script(build_parser(), args.shell), end="")
    return errors.EXIT_OK


def _cmd_man(args: argparse.Namespace) -> int:
    from rotator.completion import manual_page  # noqa: PLC0415 - argparse-manpage, only here

    print(manual_page(build_parser()), end="")
    return errors.EXIT_OK


def _add_sandbox_command(commands: Commands, *, load: bool) -> None:
    about = "run an emulator of the provider's API on loopback, with a demo fleet"
    sandbox = commands.add_parser("sandbox", help=about, description=about + " (needs rotator[sandbox])")
    if not load:
        return  # not on the command line: its options would only cost their imports
    # the options import without the extra (starlette, uvicorn); only running the server needs it
    from rotator.sandbox.cli import add_arguments, run  # noqa: PLC0415

    add_arguments(sandbox)
    sandbox.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    with quiet_on_closed_stdout():  # `rotator backups list | head -1` ends quietly, its work done
        return _main(arguments)


def _main(arguments: list[str]) -> int:
    # commands are matched whole, so the sandbox can only be chosen when "sandbox" is an argument
    parser = build_parser(sandbox="sandbox" in arguments)
    args = parser.parse_args(arguments)
    configure_logging(args.log_level or "warning", "auto")
    handler: Handler = args.handler
    try:
        return handler(args)
    except errors.RotatorError as exc:
        print(f"rotator: {scrub(describe_error(exc))}", file=sys.stderr)
        return exc.exit_code
    except (OSError, RuntimeError) as exc:  # e.g. a port in use, a file that vanished
        print(scrub(f"rotator: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return errors.EXIT_FAILURE
    except KeyboardInterrupt:
        print("rotator: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def describe_error(exc: errors.RotatorError) -> str:
    """One line for people: what went wrong, and where to look."""
    if isinstance(exc, errors.Unauthorized):
        return (
            f"the API rejected the token ({exc.status}: {exc.message}): check {TOKEN_ENV}, "
            "--token-file or the api-token credential"
        )
    if isinstance(exc, errors.TransportError):
        return f"{exc}: is the API URL right and reachable?"
    if isinstance(exc, errors.IncompleteListing):
        return f"{exc}; nothing was changed"
    if isinstance(exc, errors.CreateOutcomeUnknown):
        return f"{exc.message}: check 'rotator backups list --server ID' before creating another"
    if isinstance(exc, errors.ConfigError):
        return str(exc)  # one line per problem, each naming its path
    return str(exc).replace("\n", " ")


# -- shared plumbing -----------------------------------------------------------


def _load_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RotatorConfig:
    env = os.environ if environ is None else environ
    refuse_settings_spelling(env)  # before the settings read it: one way to give the URL
    return load_config(config_path(args.config, env))


def _optional_config(args: argparse.Namespace) -> RotatorConfig | None:
    """The configuration when one is named (--config or ROTATOR_CONFIG); the backups commands need none."""
    if args.config is None and not os.environ.get(CONFIG_ENV):
        return None
    return _load_config(args)


def client_settings(
    args: argparse.Namespace, config: RotatorConfig | None, environ: Mapping[str, str]
) -> ClientSettings:
    chosen, api = choose_api_url(args.api_url, environ, config, args.config)
    url = chosen.url
    if chosen.overridden is not None:
        structlog.get_logger("rotator.cli").info(
            "config.api_url_overridden", url=url, source=chosen.source, file_url=chosen.overridden
        )
    try:
        settings = ClientSettings(base_url=url, ca_bundle=args.ca_bundle)
        if api is not None and config is not None:
            timeout = api.timeout.total_seconds()
            fleet = len({server for policy in config.policies for server in policy.servers})
            settings = replace(
                settings,
                connect_timeout=min(settings.connect_timeout, timeout),
                read_timeout=timeout,
                requests_per_second=api.requests_per_second,
                burst=api.burst,
                max_concurrency=api.max_concurrency,
                max_body_bytes=api.max_body_bytes,
                answer_timeout=api.answer_timeout.total_seconds(),
                max_listing_items=api.listing_items(fleet),
                lean_transport=api.lean_transport,
            )
    except ValueError as exc:
        raise errors.ConfigError(f"{chosen.source}: {exc}") from None
    if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
        raise errors.ConfigError(f"--ca-bundle: no such file: {settings.ca_bundle}")
    return settings


def _client(
    args: argparse.Namespace, config: RotatorConfig | None = None, observer: ApiObserver | None = None
) -> BackupsClient:
    env = os.environ
    if config is None:
        config = _optional_config(args)
    settings = client_settings(args, config, env)
    token = load_token(
        cli_token_file=args.token_file,
        config_token_file=config.api.token_file if config is not None else None,
        environ=env,
    )
    return BackupsClient(token, settings, observer=observer)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _confirm(
    question: str, *, assume_yes: bool, stdin: TextIO | None = None, out: TextIO | None = None
) -> bool:
    if assume_yes:
        return True
    stream = stdin or sys.stdin
    if not stream.isatty():
        raise errors.UsageError("no terminal to confirm on: pass --yes to proceed without asking")
    print(f"{question} [y/N] ", end="", flush=True, file=out or sys.stdout)
    return stream.readline().strip().lower() in ("y", "yes")


def _size(mb: int | None) -> str:
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb} MiB"


def _when(backup_time: Any) -> str:
    return "-" if backup_time is None else format_timestamp(backup_time)


def newest_first(backups: Sequence[Backup]) -> list[Backup]:
    return sorted(backups, key=lambda b: b.sort_key, reverse=True)


def render_table(backups: Sequence[Backup]) -> str:
    """A table for people, newest first by created_at."""
    header = ("ID", "SERVER", "TYPE", "POLICY", "STATUS", "SIZE", "CREATED", "EXPIRES", "DESCRIPTION")
    rows = [
        (
            str(b.id),
            f"{b.server_id} {b.server.name}",
            b.backup_type,
            policy_of(b) or "-",
            b.status,
            _size(b.size_mb),
            _when(b.created_at),
            _when(b.expires_at),
            b.description or "",
        )
        for b in newest_first(backups)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


# -- commands ------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as client:
            listing = await client.list_backups(server_id=args.server, backup_type=args.type)
        if args.policy is not None:
            owned = owned_by(listing.backups, args.policy)
            listing = replace(listing, backups=tuple(owned), count=len(owned))
        if args.json:
            print(json.dumps(listing.to_api(), indent=2))
        elif listing.backups:
            print(render_table(listing.backups))
        else:
            print("no backups")
        return errors.EXIT_OK

    return _run(go())


def _cmd_create(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as client:
            created = await client.create_backup(args.server_id, args.description)
            backup: Backup = created
            if not args.json:
                print(f"backup {created.id} of server {created.server_id} started ({created.status})")
            if args.wait:
                try:
                    backup = await wait_for_backup(client, created, args.timeout, sys.stderr)
                except asyncio.CancelledError:  # ^C: asyncio.run cancels the wait
                    if sys.stderr.isatty():
                        sys.stderr.write("\n")  # past the progress line
                    raise Interrupted(
                        f"interrupted: backup {created.id} of server {created.server_id} goes on at the "
                        f"provider (rotator only stopped waiting); see how it ends with "
                        f"'rotator backups list --server {created.server_id}'"
                    ) from None
        if args.json:
            print(json.dumps(backup.to_api(), indent=2))
        elif args.wait:
            size = f" ({_size(backup.size_mb)})" if backup.size_mb else ""
            print(f"backup {backup.id} {backup.status}{size}")
        return errors.EXIT_OK if backup.status == COMPLETED or not args.wait else errors.EXIT_FAILURE

    return _run(go())


async def wait_for_backup(
    client: BackupsClient,
    backup: Backup,
    wait_timeout: timedelta,
    progress: TextIO,
    *,
    first_poll: float = 0.5,
    max_poll: float = 15.0,
) -> Backup:
    """Poll the server's manual backups until ``backup`` is no longer in progress, or ``wait_timeout``."""
    limit = wait_timeout.total_seconds()
    started = time.monotonic()
    interval = first_poll
    spinner = "|/-\\"
    tick = 0
    while True:
        elapsed = time.monotonic() - started
        if progress.isatty():
            status = f"waiting for backup {backup.id}: {backup.status}, {elapsed:.0f}s"
            progress.write(f"\r{spinner[tick % 4]} {status}")
            progress.flush()
            tick += 1
        if backup.status != IN_PROGRESS:
            break
        if elapsed >= limit:
            if progress.isatty():
                progress.write("\n")
            raise errors.RotatorError(
                f"backup {backup.id} still {backup.status} after {format_duration(wait_timeout)}; "
                "it may yet complete: check with 'rotator backups list'"
            )
        await asyncio.sleep(min(interval, max(0.0, limit - elapsed)))
        interval = min(interval * 1.5, max_poll)
        listing = await client.list_backups(server_id=backup.server_id, backup_type="manual")
        found = next((b for b in listing.backups if b.id == backup.id), None)
        if found is None:
            raise errors.RotatorError(f"backup {backup.id} disappeared from the listing while waiting")
        backup = found
    if progress.isatty():
        progress.write("\n")
    return backup


def _cmd_delete(args: argparse.Namespace) -> int:
    say = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the document alone

    async def go() -> int:
        async with _client(args) as client:
            listing = await client.list_backups()
            by_id = {b.id: b for b in listing.backups}
            missing = [i for i in dict.fromkeys(args.backup_ids) if i not in by_id]
            if missing:
                raise errors.RotatorError(
                    f"no backup with id {', '.join(map(str, missing))}; nothing was deleted"
                )
            doomed = [by_id[i] for i in dict.fromkeys(args.backup_ids)]
            print("These backups will be deleted for good:", file=say)
            print(render_table(doomed), file=say)
            found = cautions(doomed)
            for caution in found:
                print(f"warning: {caution.line()}", file=say)
            if args.yes and found and not args.force:
                raise errors.UsageError(refusal(found))
            if not _confirm(f"Delete {len(doomed)} backup(s)?", assume_yes=args.yes, out=say):
                print("nothing deleted", file=say)
                if args.json:
                    print(json.dumps(delete_document([], [], {}), indent=2))
                return errors.EXIT_OK
            deleted: list[int] = []
            gone: list[int] = []
            failed: dict[int, str] = {}
            for backup in doomed:
                try:
                    await client.delete_backup(backup.id)
                except errors.NotFound:
                    gone.append(backup.id)
                    print(f"backup {backup.id} was already gone", file=say)
                except errors.ApiError as exc:
                    failed[backup.id] = scrub(describe_error(exc))
                    print(f"rotator: backup {backup.id} not deleted: {failed[backup.id]}", file=sys.stderr)
                else:
                    deleted.append(backup.id)
                    print(f"deleted backup {backup.id}", file=say)
        if args.json:
            print(json.dumps(delete_document(deleted, gone, failed), indent=2))
        return errors.EXIT_FAILURE if failed else errors.EXIT_OK

    return _run(go())


def _cmd_restore(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as client:
            listing = await client.list_backups(server_id=args.server_id)
            backup = next((b for b in listing.backups if b.id == args.backup_id), None)
            if backup is None or backup.server_id != args.server_id:
                raise errors.RotatorError(
                    f"backup {args.backup_id} is not a backup of server {args.server_id}; "
                    "nothing was restored"
                )
            if backup.status != COMPLETED:
                raise errors.RotatorError(
                    f"backup {backup.id} is {backup.status}, not completed; nothing was restored"
                )
            say = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the document alone
            print(
                f"Server {args.server_id} ({backup.server.name}) will be overwritten with this backup:",
                file=say,
            )
            print(render_table([backup]), file=say)
            question = f"Restore server {args.server_id} from backup {backup.id}?"
            if not _confirm(question, assume_yes=args.yes, out=say):
                print("nothing restored", file=say)
                if args.json:
                    print(json.dumps(restore_document(args.server_id, backup.id, accepted=False), indent=2))
                return errors.EXIT_OK
            answer = await client.restore_server(args.server_id, backup.id)
        if args.json:
            print(
                json.dumps(
                    restore_document(args.server_id, backup.id, accepted=True, answer=answer), indent=2
                )
            )
            return errors.EXIT_OK
        shown = json.dumps(answer) if not isinstance(answer, str) else answer
        print(f"restore of server {args.server_id} from backup {backup.id} accepted: {shown}")
        return errors.EXIT_OK

    return _run(go())


def _cmd_plan(args: argparse.Namespace) -> int:
    config = _load_config(args)
    now = args.now or datetime.now(UTC)
    jobs = jobs_from_config(config)
    policies = [config.policy(args.policy)] if args.policy else list(config.policies)
    servers = sorted({sid for p in policies for sid in p.servers if args.server in (None, sid)})
    if args.server is not None and not servers:
        raise errors.UsageError(f"server {args.server} is in none of the selected policies")
    if args.from_file is not None:
        backups = read_listing_file(args.from_file)
    else:

        async def fetch() -> list[Backup]:
            async with _client(args, config) as client:  # read as a run reads: the fewest pages
                views, failed = await Inventory(client).read(servers)
            for error in failed.values():
                raise error  # a plan on a partial listing would show too few deletes
            return [b for view in views.values() for b in view.backups]

        backups = asyncio.run(fetch())
    planned = [PlannedJob(job.spec, job.slot_for(now) if job.spec.create else None) for job in jobs]
    plans = build_plans(planned, backups, now, policy=args.policy, server=args.server)
    print(render_plan_json(plans) if args.json else render_plan_table(plans))
    return errors.EXIT_OK


def read_listing_file(path: Path) -> list[Backup]:
    """A listing in the API's shape (``rotator backups list --json``), checked like the API's."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.UsageError(f"--from-file: no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.UsageError(f"--from-file {path}: not a readable JSON file ({exc})") from None
    try:
        page = BackupPage.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise errors.UsageError(
            f"--from-file {path}: not a listing in the API's shape: {where}: {first['msg']}"
        ) from None
    if page.count != len(page.results):
        raise errors.UsageError(
            f"--from-file {path}: count says {page.count} but the file holds {len(page.results)} backups"
        )
    return list(page.results)


def _configure_run_logging(args: argparse.Namespace, config: RotatorConfig) -> None:
    configure_logging(args.log_level or config.log.level, config.log.format)


def _runner(client: BackupsClient, config: RotatorConfig) -> Runner:
    return Runner(
        client,
        poll_initial=config.daemon.poll_interval.total_seconds(),
        poll_max=config.daemon.poll_max_interval.total_seconds(),
        quiet_period=config.api.create_quiet_period.total_seconds(),
        max_view_age=config.api.max_view_age.total_seconds(),
    )


def run_once_exit_code(reports: Sequence[RunReport]) -> int:
    """0 when every run was ok; 1 when any failed (or a create's outcome stayed unknown); else 75
    (:data:`errors.EXIT_ABANDONED`) when a SIGTERM cut a run short: not a failure, the next run
    finishes the slot."""
    statuses = {report.status for report in reports}
    if statuses & {Status.FAILED, Status.UNKNOWN}:
        return errors.EXIT_FAILURE
    if Status.ABANDONED in statuses:
        return errors.EXIT_ABANDONED
    return errors.EXIT_OK


def _cmd_run_once(args: argparse.Namespace) -> int:
    config = _load_config(args)
    if args.dry_run and args.log_level is None:
        configure_logging("warning", config.log.format)  # the table says what the events would
    else:
        _configure_run_logging(args, config)
    jobs = jobs_from_config(config)
    if args.policy is not None:
        config.policy(args.policy)  # names the known policies when it is not one
        jobs = [job for job in jobs if job.name == args.policy]
    if args.server is not None:
        jobs = [job for job in jobs if args.server in job.spec.policy.servers]
        if not jobs:
            raise errors.UsageError(f"server {args.server} is in none of the selected policies")
    servers = [args.server] if args.server is not None else None
    now = args.now or datetime.now(UTC)
    export = MetricsExport.from_args(args, config, jobs, now) if exports_metrics(args) else None
    telemetry = export.telemetry if export is not None else None

    coordinator = _coordinator(args, config)

    async def go() -> list[RunReport] | None:
        try:
            async with run_once_lease(coordinator) as leading:
                if not leading:
                    return None
                return await runs()
        finally:
            await coordinator.aclose()

    async def runs() -> list[RunReport]:
        async with _client(args, config, observer=telemetry) as client, Pinger() as pinger:
            runner = _guarded(_runner(client, config), coordinator)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                # a stop ends the waits and starts no delete (one on the wire finishes): abandoned
                loop.add_signal_handler(sig, runner.abandon.set)
            reports = list(
                await asyncio.gather(
                    *(
                        reported_run(
                            runner,
                            job.spec,
                            job.slot_for(now),
                            pings_url=job.pings_url,
                            pinger=pinger,
                            observers=job.observers,
                            servers=servers,
                            dry_run=args.dry_run,
                            now=now,
                            metrics=telemetry.metrics if telemetry is not None else None,
                        )
                        for job in jobs
                    )
                )
            )
            if export is not None and not runner.abandon.is_set():
                await export.seed(runner.inventory)
            return reports

    reports = asyncio.run(go())
    if reports is None:
        holder = getattr(coordinator, "holder", None) or "another instance"
        print(
            f"rotator: declined: {holder} holds the coordination lease; nothing done (exit 73)",
            file=sys.stderr,
        )
        return errors.EXIT_DECLINED
    code = run_once_exit_code(reports)
    if export is not None:
        export.write()
    if args.json:  # the reports alone: a dry run's would-be deletes are each report's blocked entries
        print(json.dumps(run_once_document(reports, code), indent=2))
        return code
    dry = [report for report in reports if report.dry_run]
    if dry:  # what the run would do, as `rotator plan` shows it
        print(render_plan_table(plans_of_reports(dry, now)))
    for report in reports:
        print(report.summary_line())
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load_config(args)
    _configure_run_logging(args, config)
    path = config_path(args.config, os.environ)

    def reload() -> list[ScheduledJob]:
        return jobs_from_config(load_config(path))

    telemetry = Telemetry(metrics=Metrics(per_server=config.metrics.per_server))
    coordinator = _coordinator(args, config)

    async def go() -> int:
        try:
            await coordinator.start()  # unreachable, refused, another configuration: one line, no action
            return await daemon()
        finally:
            await coordinator.aclose()

    async def daemon() -> int:
        async with _client(args, config, observer=telemetry) as client, Pinger() as pinger:
            daemon = Daemon(
                jobs_from_config(config),
                _guarded(_runner(client, config), coordinator),
                reload=reload,
                settings=daemon_settings(config),
                dry_run=args.dry_run,
                telemetry=telemetry,
                notifier=Notifier.from_environ(),
                pinger=pinger,
                http_listen=config.http.listen,
                coordinator=coordinator,
            )
            return await daemon.run()

    return asyncio.run(go())


def _guarded(runner: Runner, coordinator: Coordinator) -> Runner:
    runner.guard = Fence(coordinator)  # a claim before each create, a fence before each batch of deletes
    return runner


def _coordinator(args: argparse.Namespace, config: RotatorConfig) -> Coordinator:
    return coordinator_from_config(config, client_settings(args, config, os.environ).base_url)


def _cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when every watched server is well, 1 when any is overdue or failing (a monitoring check)."""
    config = _load_config(args)
    now = args.now or datetime.now(UTC)
    triggers = {job.name: job.trigger for job in jobs_from_config(config)}
    watched = watched_policies(config, triggers, policy=args.policy, server=args.server)

    async def fetch() -> Views:
        async with _client(args, config) as client:
            return await Inventory(client).read(sorted({sid for w in watched for sid in w.servers}))

    views, failed = asyncio.run(fetch())
    for error in failed.values():
        if isinstance(error, errors.Unauthorized):
            raise error  # no server's fault: one line about the token
    listed = [backup for view in views.values() for backup in view.backups]
    unread = {sid: describe_error(exc) for sid, exc in failed.items()}
    status = fleet_status(watched, listed, now, errors=unread)
    print(render_status_json(status) if args.json else render_status_table(status), end="")
    return errors.EXIT_OK if status.ok else errors.EXIT_FAILURE


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_config(args)
    now = datetime.now(UTC)
    policies = []
    for job in jobs_from_config(config):
        policy = job.spec.policy
        warnings = []
        notify = [
            {"on": sorted(observer.on), "targets": list(observer.targets)}
            for observer in job.observers
            if isinstance(observer, Notifications)  # its targets as they may be shown: no tokens
        ]
        limit = config.api.max_description_length
        longest = longest_description(job.spec)
        if limit is not None and job.spec.create and longest > limit:
            warnings.append(
                f"descriptions with their marker take up to {longest} characters, more than "
                f"api.max_description_length ({limit}): an API that cuts them loses the marker, and "
                "the policy would never prune those backups; shorten the description template"
            )
        policies.append(
            policy_check_document(
                job.name,
                servers=policy.servers,
                timezone=policy.timezone,
                dry_run=job.spec.dry_run,
                create=job.spec.create,
                next_runs=None if job.trigger is None else next_slots(job.trigger, now, 3),
                warnings=warnings,
                notify=notify,
            )
        )
    chosen, _ = choose_api_url(args.api_url, os.environ, config, args.config)
    api = {"url": chosen.url, "source": chosen.source, "overrides": chosen.overridden}
    checked = _check_api(args, config) if args.check_api else None
    ok = checked is None or checked.ok
    if args.json:
        document = {"ok": ok, "api": api, "policies": policies}
        if checked is not None:
            document["api_check"] = checked.document()
        print(json.dumps(document, indent=2))
        return _check_api_verdict(checked)
    print(f"configuration OK: {len(config.policies)} policies")
    for shown in policies:
        flags = [f for f, on in (("dry run", shown["dry_run"]), ("prune only", not shown["create"])) if on]
        extra = f" ({', '.join(flags)})" if flags else ""
        print(
            f"policy {shown['name']}: {len(shown['servers'])} servers, time zone {shown['timezone']}{extra}"
        )
        for target in shown["notify"]:
            print(f"  notify on {', '.join(target['on'])}: {', '.join(target['targets'])}")
        for warning in shown["warnings"]:
            print(f"  warning: {warning}")
        if shown["next_runs"] is None:
            print("  no schedule: runs only with 'rotator run-once'")
            continue
        zone = ZoneInfo(shown["timezone"])
        for stamp in shown["next_runs"]:
            slot = datetime.fromisoformat(stamp)
            print(f"  next run {stamp}  ({slot.astimezone(zone):%Y-%m-%d %H:%M %Z})")
    over = f", over the file's {chosen.overridden}" if chosen.overridden else ""
    print(f"api: {chosen.url} (from {chosen.source}{over})")
    for line in checked.lines() if checked is not None else ():
        print(line)
    return _check_api_verdict(checked)


def _check_api(args: argparse.Namespace, config: RotatorConfig) -> ApiCheck:
    async def go() -> ApiCheck:
        async with _client(args, config) as client:
            return await check_api(client, config.policies)

    try:
        return asyncio.run(go())
    except errors.Unauthorized as exc:  # the token is configuration: check-config's exit code for it
        raise errors.ConfigError(describe_error(exc)) from None


def _check_api_verdict(checked: ApiCheck | None) -> int:
    if checked is None or checked.ok:
        return errors.EXIT_OK
    print(f"rotator: {checked.failure()}", file=sys.stderr)
    return errors.EXIT_CONFIG


def longest_description(spec: JobSpec) -> int:
    """The longest description ``spec`` writes: the template at a slot with seconds, the last attempt."""
    slot = datetime(2025, 12, 28, 23, 59, 59, tzinfo=UTC)
    return len(spec.describe(slot, spec.attempts))


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        listen = os.environ.get(HTTP_LISTEN_ENV)
        if listen is None:
            listen = _load_config(args).http.listen
        if listen is None:
            raise errors.ConfigError(
                f"no health listener to ask: set http.listen in the configuration, {HTTP_LISTEN_ENV} or --url"
            )
        try:
            url = health_url(listen)
        except ValueError as exc:
            raise errors.ConfigError(f"{HTTP_LISTEN_ENV}: {exc}") from None
    ok, message = check_health(url, timeout=args.timeout.total_seconds())
    print(f"{'healthy' if ok else 'unhealthy'}: {message}")
    return errors.EXIT_OK if ok else errors.EXIT_FAILURE
