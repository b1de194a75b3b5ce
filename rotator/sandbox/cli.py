"""``rotator sandbox``: serve the emulated Backups API on this machine.

Its options import without the ``sandbox`` extra (starlette, uvicorn): only :func:`run` needs them, so
``rotator sandbox --help`` is complete wherever rotator is installed.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
from typing import TYPE_CHECKING

from rotator.sandbox.clock import parse_instant
from rotator.sandbox.options import (
    DEFAULT_CREATE_SECONDS,
    DEFAULT_PAGE_SIZE,
    DEFAULT_SLOW_SECONDS,
    DEFAULT_TOKEN,
    FLEET_KINDS,
    FaultOptions,
    SandboxOptions,
)

if TYPE_CHECKING:
    from rotator.sandbox.server import RunningSandbox

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # as rotator's: the installation lacks what the command needs
DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``rotator sandbox`` options to ``parser``."""
    where = parser.add_argument_group("where")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    where.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s; 0: any)")
    where.add_argument(
        "--allow-remote", action="store_true", help="allow a --host that is not a loopback address"
    )
    world = parser.add_argument_group("the emulated provider")
    world.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token to accept")
    world.add_argument(
        "--page-size", type=int, default=DEFAULT_PAGE_SIZE, help="backups per page (default: %(default)s)"
    )
    world.add_argument("--seed", type=int, default=0, help="seed of the fleet and of the faults")
    world.add_argument("--fleet", choices=FLEET_KINDS, default="demo", help="starting fleet")
    world.add_argument("--servers", type=int, default=4, help="servers of a uniform or empty fleet")
    world.add_argument(
        "--backups-per-server", type=int, default=14, help="backups per server of a uniform fleet"
    )
    world.add_argument("--owner", default="nightly", help="policy name in the seeded ownership markers")
    world.add_argument(
        "--create-seconds",
        type=float,
        default=DEFAULT_CREATE_SECONDS,
        help="sandbox-clock seconds a create takes (default: %(default)s)",
    )
    world.add_argument(
        "--frozen-clock",
        metavar="ISO",
        help="freeze the sandbox clock at this instant (e.g. 2025-01-16T15:45:00Z)",
    )
    faults = parser.add_argument_group("faults (all off by default)")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 5xx")
    faults.add_argument("--rate-limit", type=float, metavar="RPS", help="requests per second before 429")
    faults.add_argument("--burst", type=int, help="requests allowed at once (default: one second's worth)")
    faults.add_argument(
        "--no-rate-limit-headers",
        dest="rate_limit_headers",
        action="store_false",
        help="send no RateLimit-* headers (a 429 still says Retry-After)",
    )
    faults.add_argument(
        "--drop-rate", type=float, default=0.0, help="share of creates whose answer is lost after the create"
    )
    faults.add_argument("--fail-rate", type=float, default=0.0, help="share of created backups that fail")
    faults.add_argument(
        "--slow-rate", type=float, default=0.0, help="share of creates that take --slow-seconds to finish"
    )
    faults.add_argument(
        "--slow-seconds",
        type=float,
        default=DEFAULT_SLOW_SECONDS,
        help="sandbox-clock seconds a slow create takes (default: %(default)s)",
    )
    faults.add_argument(
        "--create-answer-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold every create's answer this long (real time) after the backup was created",
    )
    faults.add_argument(
        "--api-clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how far the API's clock, which writes created_at and expires_at, is off the sandbox clock "
        "(negative: behind)",
    )
    faults.add_argument(
        "--listing-lag",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="listings show backups as they were this many sandbox-clock seconds ago (eventual consistency)",
    )
    faults.add_argument(
        "--page-shift-rate",
        type=float,
        default=0.0,
        help="share of listing pages after the first before which a third party deletes a backup of an "
        "earlier page and creates one (the page's first backup is skipped)",
    )
    faults.add_argument(
        "--empty-page-rate",
        type=float,
        default=0.0,
        help="share of listing pages other than the last answered with no results (count and links kept)",
    )
    faults.add_argument(
        "--third-party-delete-rate",
        type=float,
        default=0.0,
        help="share of requests before which a third party deletes a server's newest completed manual backup",
    )
    faults.add_argument(
        "--lie-known-id-rate",
        type=float,
        default=0.0,
        help="share of creates answered with the id of another, older backup of the server",
    )
    faults.add_argument(
        "--lie-other-server-rate",
        type=float,
        default=0.0,
        help="share of creates answered naming another server",
    )
    faults.add_argument(
        "--description-max-length",
        type=int,
        metavar="N",
        help="cut longer create descriptions to N characters silently (default: refuse over 255 with 400)",
    )
    faults.add_argument(
        "--auth-echo",
        action="store_true",
        help="401 answers echo the request's Authorization header, token and all (a debug-mode API)",
    )
    log = parser.add_argument_group("event log")
    log.add_argument(
        "--log-listings",
        action="store_true",
        help="write a 'listed' event for the first page of every listing read through the API",
    )


def options_from_args(args: argparse.Namespace) -> SandboxOptions:
    """The sandbox options the parsed arguments ask for; raise ``ValueError`` on a bad value."""
    frozen = parse_instant(args.frozen_clock) if args.frozen_clock else None
    return SandboxOptions(
        token=args.token,
        page_size=args.page_size,
        seed=args.seed,
        fleet=args.fleet,
        servers=args.servers,
        backups_per_server=args.backups_per_server,
        owner=args.owner,
        create_seconds=args.create_seconds,
        frozen_clock=frozen,
        log_listings=args.log_listings,
        faults=FaultOptions(
            latency=args.latency,
            error_rate=args.error_rate,
            rate_limit=args.rate_limit,
            burst=args.burst,
            rate_limit_headers=args.rate_limit_headers,
            drop_rate=args.drop_rate,
            fail_rate=args.fail_rate,
            slow_rate=args.slow_rate,
            slow_seconds=args.slow_seconds,
            api_clock_offset=args.api_clock_offset,
            listing_lag=args.listing_lag,
            create_answer_delay=args.create_answer_delay,
            page_shift_rate=args.page_shift_rate,
            description_max_length=args.description_max_length,
            auth_echo=args.auth_echo,
            lie_known_id_rate=args.lie_known_id_rate,
            lie_other_server_rate=args.lie_other_server_rate,
            empty_page_rate=args.empty_page_rate,
            third_party_delete_rate=args.third_party_delete_rate,
        ),
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """Serve the sandbox until Ctrl-C or SIGTERM (or ``stop`` is set); return the exit code."""
    if not is_loopback(args.host) and not args.allow_remote:
        print(
            f"rotator sandbox: refusing to listen on {args.host}, which is not a loopback address "
            "(the sandbox has a well-known token); pass --allow-remote to do it anyway",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        options = options_from_args(args)
    except (TypeError, ValueError) as exc:
        print(f"rotator sandbox: {exc}", file=sys.stderr)
        return EXIT_USAGE

    try:
        from rotator.sandbox.server import serve  # noqa: PLC0415 - starlette and uvicorn are an extra
    except ImportError as exc:
        print(
            f"rotator sandbox: needs the 'sandbox' extra ({exc.name} is missing): "
            "pip install 'rotator[sandbox]'",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    def announce(running: RunningSandbox) -> None:
        print(
            f"rotator sandbox: API at {running.api_url} with token {running.token} "
            f"(fleet {options.fleet}, seed {options.seed}; Ctrl-C stops)",
            flush=True,
        )

    try:
        serve(options, args.host, args.port, stop=stop, on_ready=announce)
    except OSError as exc:
        print(f"rotator sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
