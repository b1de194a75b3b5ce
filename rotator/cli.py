"""The ``rotator`` command: the only place that prints for people and chooses exit codes.

Exit codes: 0 success, 1 an API or runtime failure, 2 a usage error,
78 a configuration error (including a missing or unreadable token),
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rotator import __version__, errors
from rotator.api import DEFAULT_API_URL, BackupsClient, ClientSettings
from rotator.durations import format_duration, parse_duration
from rotator.models import COMPLETED, IN_PROGRESS, Backup, format_timestamp
from rotator.observability import LEVELS, configure_logging
from rotator.secrets import TOKEN_ENV, load_token

API_URL_ENV = "ROTATOR_API_URL"
CONFIG_ENV = "ROTATOR_CONFIG"
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


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
        "--log-level", choices=LEVELS, default=default("warning"), help="log events at this level and above"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rotator",
        description="Create manual backups on a schedule and prune them by retention rules.",
        epilog="exit codes: 0 ok, 1 API or runtime failure, 2 usage, 78 configuration, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    _global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    backups = commands.add_parser("backups", help="list, create and delete backups", parents=[common])
    backup_commands = backups.add_subparsers(dest="backups_command", required=True, metavar="ACTION")

    listing = backup_commands.add_parser("list", help="list backups, newest first", parents=[common])
    listing.add_argument("--server", type=_positive_int, metavar="ID", help="only this server's backups")
    listing.add_argument("--type", choices=("manual", "automatic"), help="only backups of this type")
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
    delete.set_defaults(handler=_cmd_delete)

    restore = commands.add_parser(
        "restore", help="restore a server from one of its backups (overwrites the server)", parents=[common]
    )
    restore.add_argument("server_id", type=_positive_int, metavar="SERVER_ID")
    restore.add_argument("backup_id", type=_positive_int, metavar="BACKUP_ID")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.set_defaults(handler=_cmd_restore)

    sandbox = commands.add_parser(
        "sandbox", help="run an emulator of the provider's API on loopback, with a demo fleet"
    )
    try:
        from rotator.sandbox.cli import add_arguments, run  # noqa: PLC0415 - the sandbox is an extra
    except ImportError:
        sandbox.set_defaults(handler=_sandbox_missing)
    else:
        add_arguments(sandbox)
        sandbox.set_defaults(handler=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, "auto")
    handler: Handler = args.handler
    try:
        return handler(args)
    except errors.RotatorError as exc:
        print(f"rotator: {describe_error(exc)}", file=sys.stderr)
        return exc.exit_code
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
    return str(exc).replace("\n", " ")


# -- shared plumbing -----------------------------------------------------------


def _client(args: argparse.Namespace, environ: dict[str, str] | None = None) -> BackupsClient:
    env = dict(os.environ) if environ is None else environ
    url = args.api_url or env.get(API_URL_ENV) or DEFAULT_API_URL
    try:
        settings = ClientSettings(base_url=url, ca_bundle=args.ca_bundle)
    except ValueError as exc:
        raise errors.ConfigError(f"--api-url: {exc}") from None
    if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
        raise errors.ConfigError(f"--ca-bundle: no such file: {settings.ca_bundle}")
    token = load_token(cli_token_file=args.token_file, environ=env)
    return BackupsClient(token, settings)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _confirm(question: str, *, assume_yes: bool, stdin: TextIO | None = None) -> bool:
    if assume_yes:
        return True
    stream = stdin or sys.stdin
    if not stream.isatty():
        raise errors.UsageError("no terminal to confirm on: pass --yes to proceed without asking")
    print(f"{question} [y/N] ", end="", flush=True)
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
    header = ("ID", "SERVER", "TYPE", "STATUS", "SIZE", "CREATED", "EXPIRES", "DESCRIPTION")
    rows = [
        (
            str(b.id),
            f"{b.server_id} {b.server.name}",
            b.backup_type,
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
                backup = await wait_for_backup(client, created, args.timeout, sys.stderr)
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
            print("These backups will be deleted for good:")
            print(render_table(doomed))
            if not _confirm(f"Delete {len(doomed)} backup(s)?", assume_yes=args.yes):
                print("nothing deleted")
                return errors.EXIT_OK
            failed = 0
            for backup in doomed:
                try:
                    await client.delete_backup(backup.id)
                except errors.NotFound:
                    print(f"backup {backup.id} was already gone")
                except errors.ApiError as exc:
                    failed += 1
                    print(f"rotator: backup {backup.id} not deleted: {describe_error(exc)}", file=sys.stderr)
                else:
                    print(f"deleted backup {backup.id}")
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
            print(f"Server {args.server_id} ({backup.server.name}) will be overwritten with this backup:")
            print(render_table([backup]))
            if not _confirm(f"Restore server {args.server_id} from backup {backup.id}?", assume_yes=args.yes):
                print("nothing restored")
                return errors.EXIT_OK
            answer = await client.restore_server(args.server_id, backup.id)
        shown = json.dumps(answer) if not isinstance(answer, str) else answer
        print(f"restore of server {args.server_id} from backup {backup.id} accepted: {shown}")
        return errors.EXIT_OK

    return _run(go())


def _sandbox_missing(args: argparse.Namespace) -> int:
    raise errors.ConfigError("the sandbox needs the 'sandbox' extra: pip install 'rotator[sandbox]'")
