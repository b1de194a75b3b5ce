"""Which API URL the command line uses, where it came from, and checks that blame the right source.

There is one way to give the URL besides the file: ``--api-url``, else ``ROTATOR_API_URL``, else the
file's ``api.url``, else the provider's default. ``ROTATOR_API__URL`` (the spelling the generic
``ROTATOR_SECTION__KEY`` overrides would give) is refused with a line naming ``ROTATOR_API_URL``,
so two variables can never disagree unseen.

A URL is checked by the configuration's own rules (http(s), no query, no plain http to another host
unless ``api.allow_insecure_http``), and a bad one is blamed on where it came from: the option, the
variable, or the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from rotator.config import DEFAULT_API_URL, ApiConfig, RotatorConfig
from rotator.errors import ConfigError

API_URL_ENV = "ROTATOR_API_URL"
REFUSED_SPELLING = "ROTATOR_API__URL"


@dataclass(frozen=True, slots=True)
class ChosenUrl:
    """The URL the API is reached at, where it came from, and the file's own ``api.url`` it overrode."""

    url: str
    source: str
    overridden: str | None = None


def refuse_settings_spelling(environ: Mapping[str, str]) -> None:
    """``ConfigError`` when ``ROTATOR_API__URL`` is set (in any case, as the settings would read it)."""
    for name in environ:
        if name.upper() == REFUSED_SPELLING:
            raise ConfigError(
                f"{name}: not read; the API's URL comes from {API_URL_ENV} (or --api-url, or api.url in the "
                "configuration file): rename the variable"
            )


def choose_api_url(
    cli_value: str | None,
    environ: Mapping[str, str],
    config: RotatorConfig | None,
    config_file: Path | None = None,
) -> tuple[ChosenUrl, ApiConfig]:
    """The URL that wins and the API section to use with it, checked by the configuration's rules.

    Raises :class:`ConfigError` naming the source of a bad URL (``--api-url``, ``ROTATOR_API_URL``).
    """
    refuse_settings_spelling(environ)
    api = config.api if config is not None else ApiConfig()
    file_url = api.url if config is not None and "url" in api.model_fields_set else None
    if cli_value:
        url, source = cli_value, "--api-url"
    elif environ.get(API_URL_ENV):
        url, source = environ[API_URL_ENV], API_URL_ENV
    elif file_url is not None:
        where = f" in {config_file}" if config_file is not None else ""
        return ChosenUrl(file_url, f"api.url{where}"), api
    else:
        return ChosenUrl(DEFAULT_API_URL, "the default"), api
    try:
        checked = ApiConfig.model_validate({**api.model_dump(exclude={"url"}), "url": url})
    except ValidationError as exc:
        problem = str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
        own = f"url {url.rstrip('/')!r} "  # the rule on plain http names the URL itself
        if problem.startswith(own):
            raise ConfigError(f"{source}: {url!r} {problem.removeprefix(own)}") from None
        raise ConfigError(f"{source}: {problem} (got {url!r})") from None
    overridden = file_url if file_url is not None and file_url != checked.url else None
    return ChosenUrl(checked.url, source, overridden), checked
