"""Shell completion (bash, zsh, fish) and the manual page, both generated from the command line's parser.

Completion scripts come from shtab, the man page from argparse-manpage: whatever the parser knows
(commands, options, choices, help) they know, so they cannot drift from the program. Options that
take a path complete file names; the others complete nothing but their choices.

The package installs, as data files, small loaders for each shell (``share/`` in the source tree)
that ask the installed ``rotator`` for its script the first time a completion is needed, so the
completion always matches the rotator that is installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import shtab
from argparse_manpage.manpage import Manpage

from rotator import __version__

SHELLS: Final = ("bash", "zsh", "fish")

EXIT_STATUS: Final = r""".TP
.B 0
success
.TP
.B 1
the API or the run failed (the message says what)
.TP
.B 2
a usage error: bad arguments, a confirmation with no terminal and no \-\-yes, or owned or automatic
backups to delete with \-\-yes but without \-\-force
.TP
.B 75
run\-once was stopped (SIGTERM, SIGINT) before its runs finished: abandoned, not failed
.TP
.B 78
a configuration error: bad configuration, a missing, unreadable or (check\-config \-\-check\-api)
rejected token, a configured server the API does not list
.TP
.B 130
interrupted"""

ENVIRONMENT: Final = r""".TP
.B ROTATOR_CONFIG
the configuration file, when \-\-config is not given
.TP
.B ROTATOR_API_URL
the API's base URL (\-\-api\-url wins over it, it over the file's api.url)
.TP
.B ROTATOR_API_TOKEN
the API token (else \-\-token\-file, api.token_file, or the systemd credential api\-token)
.TP
.B ROTATOR_SECTION__KEY
any configuration key, e.g. ROTATOR_API__TIMEOUT=10s, ROTATOR_LOG__LEVEL=debug
.TP
.B NO_COLOR
when set and not empty, no colour in log lines even on a terminal"""


def _walk(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every action of ``parser`` and of its subcommands, each parser once."""
    seen: set[int] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for action in current._actions:
            yield action
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())


def _mark_paths(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options whose value is a path complete file names (shtab reads ``action.complete``)."""
    for action in _walk(parser):
        if action.type is Path:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return parser


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``shell`` (one of :data:`SHELLS`) for ``parser``."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r} (known: {', '.join(SHELLS)})")
    return shtab.complete(_mark_paths(parser), shell)


def manual_page(parser: argparse.ArgumentParser) -> str:
    """``rotator(1)`` in roff, with the exit status and the environment after the commands."""
    page = Manpage(parser)
    page.source = f"rotator {__version__}"
    page.manual = "rotator manual"
    page.description = "create manual backups on a schedule and prune them by retention rules"
    page.add_section("EXIT STATUS", ">", EXIT_STATUS)
    page.add_section("ENVIRONMENT", ">", ENVIRONMENT)
    page.add_section(
        "SEE ALSO", ">", "README.md and config.example.yaml in rotator's source tree; rotator COMMAND --help."
    )
    return str(page)
