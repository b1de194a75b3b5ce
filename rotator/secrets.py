"""The API token: where it comes from, and how it is kept out of logs, errors and reprs.

Sources, first found wins:

1. ``--token-file PATH`` on the command line;
2. ``ROTATOR_API_TOKEN`` in the environment;
3. ``api.token_file`` in the configuration file;
4. ``$CREDENTIALS_DIRECTORY/api-token`` (systemd's ``LoadCredential=api-token:...``).

The token is never accepted as a command-line value: command lines are visible
to every user of the machine through ``ps``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NoReturn

from rotator.errors import ConfigError

TOKEN_ENV: Final = "ROTATOR_API_TOKEN"  # noqa: S105 - the variable's name, not a token
CREDENTIAL_NAME: Final = "api-token"
MASK: Final = "********"
_SCRUB_MIN_LENGTH: Final = 6  # shorter values would mask ordinary words; no real token is that short
_known: set[str] = set()  # every token value this process holds, for scrub()


def scrub(text: str) -> str:
    """``text`` with every API token this process holds replaced by a mask.

    The last line of defence for text that came from elsewhere (an API that
    echoes the request's Authorization header in a 401, say) on its way to an
    exception, a log line or the terminal.
    """
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    return text


class ApiToken:
    """A bearer token whose ``repr`` and ``str`` never show it; ``reveal()`` is the one way in."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        value = value.strip()
        if not value:
            raise ConfigError(f"the API token from {source} is empty")
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            # never echo the value: name the source only
            raise ConfigError(f"the API token from {source} contains whitespace or control characters")
        self._value = value
        self.source = source
        if len(value) >= _SCRUB_MIN_LENGTH:
            _known.add(value)

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` without this token (masked), whatever its length."""
        return text.replace(self._value, MASK) if self._value in text else text

    def __repr__(self) -> str:
        return f"ApiToken(source={self.source!r}, value='{MASK}')"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("ApiToken cannot be pickled")


def _read_token_file(path: Path, source: str) -> ApiToken:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read {path}: {type(exc).__name__}") from None
    return ApiToken(text, f"{source} {path}")


def load_token(
    *,
    cli_token_file: Path | None = None,
    config_token_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ApiToken:
    """Find the token in the sources above, or raise :class:`ConfigError` naming them all."""
    env = os.environ if environ is None else environ
    if cli_token_file is not None:
        return _read_token_file(cli_token_file, "--token-file")
    if env.get(TOKEN_ENV):
        return ApiToken(env[TOKEN_ENV], TOKEN_ENV)
    if config_token_file is not None:
        return _read_token_file(config_token_file, "api.token_file")
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / CREDENTIAL_NAME
        if path.exists():
            return _read_token_file(path, "systemd credential")
    raise ConfigError(
        f"no API token: set {TOKEN_ENV}, pass --token-file, set api.token_file in the configuration, "
        f"or provide the systemd credential {CREDENTIAL_NAME!r}"
    )
