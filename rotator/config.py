"""rotator's configuration: one YAML file, overridable by ``ROTATOR_*`` environment variables.

Sources, highest priority first (see :meth:`RotatorConfig.settings_customise_sources`):

1. values passed to ``RotatorConfig(...)`` (tests, the CLI);
2. the environment: ``ROTATOR_API__TIMEOUT``, ``ROTATOR_POLICIES`` (JSON) ... (``__``
   separates nesting levels; the command line reads the API's URL from ``ROTATOR_API_URL`` and
   refuses ``ROTATOR_API__URL``, see :mod:`rotator.apiurl`);
3. the YAML file given by ``--config`` or ``ROTATOR_CONFIG``.

Unknown keys are errors. :func:`load_config` turns every problem into one
:class:`~rotator.errors.ConfigError` whose message has one line per error,
each naming the field's dotted path and the bad value::

    policies[0].retention.keep_dayz: unknown key (got 3)

The API token is not configured here (it comes from ``ROTATOR_API_TOKEN``, the
``api.token_file`` or systemd credentials, see :mod:`rotator.secrets`).
"""

from __future__ import annotations

import gc
import os
import pickle
import socket
from collections import Counter
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from rotator.addresses import is_loopback, parse_listen
from rotator.durations import format_duration, parse_duration
from rotator.errors import ConfigError
from rotator.markers import POLICY_NAME_PATTERN
from rotator.retention import RULE_NAMES, Policy, Retention, load_zone

CONFIG_ENV: Final = "ROTATOR_CONFIG"
DEFAULT_API_URL: Final = "https://admin.vps.org/api/v1"


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("write a duration as a string such as 30s, 10m, 6h")  # noqa: TRY004
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return duration


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A positive duration, written ``"30s"``, ``"10m"``, ``"1h30m"``, ``"7d"``."""

Count = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    """A part of the configuration: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RetentionConfig(Section):
    """``policies[].retention``: counts >= 0 (0 or absent: off), rules OR-ed."""

    keep_last: Count = 0
    keep_days: Count = 0
    keep_hourly: Count = 0
    keep_daily: Count = 0
    keep_weekly: Count = 0
    keep_monthly: Count = 0
    keep_yearly: Count = 0
    min_keep: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _some_rule_is_on(self) -> RetentionConfig:
        if not any(getattr(self, name) for name in RULE_NAMES):
            raise ValueError("no retention rule is on: set at least one of " + ", ".join(RULE_NAMES))
        return self

    def to_retention(self) -> Retention:
        return Retention(**self.model_dump())


class ScheduleConfig(Section):
    """``policies[].schedule``: ``cron`` (in the policy's zone) or ``interval``, with optional ``jitter``."""

    cron: str | None = None
    interval: Duration | None = None
    jitter: Duration | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            # the grammar is APScheduler's, read only when a cron expression is checked: importing
            # the configuration loads no scheduler (the daemon builds the triggers, rotator.scheduler)
            from rotator.schedule import check_cron  # noqa: PLC0415

            check_cron(value)
        return value

    @field_validator("interval")
    @classmethod
    def _whole_seconds(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and (value.total_seconds() < 1 or value.microseconds):
            raise ValueError("an interval is a whole number of seconds, at least 1s")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron or interval")
        if self.jitter is not None and self.interval is not None and self.jitter >= self.interval:
            raise ValueError("jitter must be shorter than the interval")
        return self


DESCRIPTION_FIELDS: Final = ("policy", "date", "time", "slot")


def _http_url(value: str, example: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL such as {example}")
    return value


class PingsConfig(Section):
    """``policies[].pings``: a monitoring check pinged at each run's start, success and failure."""

    url: str

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value, "https://hc-ping.com/UUID")


class NotifyConfig(Section):
    """``policies[].notify``: Apprise URLs told of each run that failed or succeeded (``rotator[notify]``).

    The URLs are secrets (they carry tokens): their repr is masked, and they are
    checked by Apprise when the policies are built, never echoed in full.
    """

    urls: Annotated[list[SecretStr], Field(min_length=1)]
    on: Annotated[list[Literal["failure", "success"]], Field(min_length=1)] = ["failure"]


class PolicyConfig(Section):
    """One entry of ``policies``."""

    name: Annotated[str, Field(pattern=f"^{POLICY_NAME_PATTERN}$")]
    servers: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    timezone: str = "UTC"
    retention: RetentionConfig
    prune_unmanaged: bool = False
    schedule: ScheduleConfig | None = None
    description: Annotated[str, Field(max_length=200)] = "{policy} {date}"
    create: bool = True
    wait_timeout: Duration = timedelta(hours=2)
    max_deletes_per_run: Annotated[int, Field(ge=0)] = 10
    catch_up: bool = True
    dry_run: bool = False
    pings: PingsConfig | None = None
    notify: NotifyConfig | None = None
    retries: Annotated[int, Field(ge=0, le=20)] = 2
    retry_delay: Duration = timedelta(minutes=10)
    # `rotator status`: how long after a slot its backup may still be missing (default: see status.py)
    status_grace: Duration | None = None

    @field_validator("description")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            value.format(**dict.fromkeys(DESCRIPTION_FIELDS, ""))
        except KeyError as exc:
            known = ", ".join("{" + name + "}" for name in DESCRIPTION_FIELDS)
            raise ValueError(f"unknown placeholder {{{exc.args[0]}}} (known: {known})") from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        if "[rotator:" in value:
            raise ValueError("the ownership marker is appended by rotator; leave it out")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        load_zone(value)
        return value

    @field_validator("servers")
    @classmethod
    def _distinct_servers(cls, value: list[int]) -> list[int]:
        repeated = sorted(server for server, times in Counter(value).items() if times > 1)
        if repeated:
            raise ValueError(f"server listed twice: {', '.join(map(str, repeated))}")
        return value

    def to_policy(self) -> Policy:
        """The engine's view of this policy."""
        return Policy(
            name=self.name,
            retention=self.retention.to_retention(),
            servers=tuple(self.servers),
            timezone=self.timezone,
            prune_unmanaged=self.prune_unmanaged,
        )


def _bounded(limit: timedelta) -> Any:
    def check(value: timedelta) -> timedelta:
        if value > limit:
            raise ValueError(f"must be at most {format_duration(limit)}")
        return value

    return AfterValidator(check)


MIN_BODY_BYTES: Final = 64 * 1024  # a page of 100 backups is about 30 KiB
MIN_LISTING_ITEMS: Final = 200_000
LISTING_ITEMS_PER_SERVER: Final = 100


class ApiConfig(Section):
    """``api``: where the provider's API is, how hard rotator may press it, and how far it trusts it."""

    url: str = DEFAULT_API_URL
    token_file: Path | None = None
    timeout: Duration = timedelta(seconds=30)
    requests_per_second: Annotated[float, Field(gt=0)] = 5.0
    burst: Annotated[int, Field(ge=1)] = 10
    max_concurrency: Annotated[int, Field(ge=1)] = 8
    # plain http sends the bearer token in clear: only to this machine, unless allowed outright
    allow_insecure_http: bool = False
    # no second create for a slot until its backup stayed unlisted this long (the API's listing lag)
    create_quiet_period: Annotated[Duration, _bounded(timedelta(hours=1))] = timedelta(minutes=2)
    # a prune plan rests on a view at most this old when its first DELETE goes
    max_view_age: Annotated[Duration, _bounded(timedelta(hours=1))] = timedelta(seconds=60)
    # the API's longest description, when known: check-config warns about templates beyond it
    max_description_length: Annotated[int, Field(ge=1)] | None = None
    # how far rotator trusts one answer and one listing (None: scales with the fleet, see listing_items)
    max_listing_items: Annotated[int, Field(ge=1)] | None = None
    max_body_bytes: Annotated[int, Field(ge=MIN_BODY_BYTES)] = 16 * 1024 * 1024
    answer_timeout: Annotated[Duration, _bounded(timedelta(hours=1))] = timedelta(minutes=5)
    # rotator's own HTTP/1.1 transport (h11 on asyncio); false: httpx's (httpcore). With a proxy in
    # the environment (HTTPS_PROXY and the like) httpx's is used either way
    lean_transport: bool = True

    def listing_items(self, servers: int) -> int:
        """The longest listing rotator reads whole: ``max_listing_items``, or by default
        :data:`LISTING_ITEMS_PER_SERVER` a server for ``servers`` servers, and never fewer than
        :data:`MIN_LISTING_ITEMS` (so the account's listing serves a large fleet)."""
        if self.max_listing_items is not None:
            return self.max_listing_items
        return max(MIN_LISTING_ITEMS, LISTING_ITEMS_PER_SERVER * servers)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://admin.vps.org/api/v1")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _no_token_in_clear(self) -> ApiConfig:
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not self.allow_insecure_http and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"url {self.url!r} is plain http to another host: the API token would travel in clear "
                "(use https, or set api.allow_insecure_http: true)"
            )
        return self


_yaml_file: ContextVar[Path | None] = ContextVar("rotator_config_yaml_file", default=None)

_INT_TAG: Final = "tag:yaml.org,2002:int"


def _plain_decimal(value: str) -> bool:
    """``123``: what both the int resolver and constructor read as ``int(value)``, and nothing else."""
    return value.isascii() and value.isdigit() and value[0] != "0"


def _fast_loader() -> type[yaml.SafeLoader] | None:
    """``yaml.CSafeLoader`` (when PyYAML has libyaml), with a short cut for the many server ids.

    The pure-Python parser takes seconds (and tens of MB of nodes) for a configuration listing
    100,000 servers; libyaml's takes a fraction of that. Constructor and resolver stay
    SafeLoader's: a plain decimal such as ``1234`` skips their regular expressions, which
    resolve and construct it to the same int (no other implicit type matches digits alone).
    """
    base: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    if base is None:
        return None

    class Loader(base):  # type: ignore[valid-type,misc]
        def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
            if kind is yaml.ScalarNode and implicit[0] and _plain_decimal(value):
                return _INT_TAG
            resolved: str = super().resolve(kind, value, implicit)
            return resolved

        def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
            if _plain_decimal(node.value):
                return int(node.value)
            constructed: int = super().construct_yaml_int(node)
            return constructed

    Loader.add_constructor(_INT_TAG, Loader.construct_yaml_int)
    return Loader


_FastSafeLoader: Final = _fast_loader()


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, fast, with PyYAML's own error messages and a compact result.

    A document libyaml rejects is parsed again by the pure-Python parser, so that a mistake is
    reported as it always was (libyaml words its errors differently and places some elsewhere).

    The result is copied once the parser's node tree is gone: the parsed objects were allocated
    between its ~100 bytes per node, and the server ids alone would then keep most of the tree's
    memory arenas (tens of MB for a large fleet) from ever going back to the system.
    """
    if _FastSafeLoader is None:
        data = yaml.safe_load(text)
    else:
        try:
            data = yaml.load(text, Loader=_FastSafeLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError:
            data = yaml.safe_load(text)
    if not isinstance(data, dict | list):
        return data
    # pickle makes fresh objects of every type safe_load produces (dates, sets, shared anchors)
    blob = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    del data  # the last reference to the parsed objects: their arenas are freed before the copy
    gc.collect()  # a full collection also empties the free lists, whose tuples pin those arenas
    return pickle.loads(blob)  # noqa: S301 - bytes pickled just above, from our own objects


class _YamlFile(YamlConfigSettingsSource):
    """The YAML file, with its own problems (syntax, not a mapping) as ConfigErrors."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            with open(file_path, encoding="utf-8") as stream:
                text = stream.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file_path}: cannot read: {exc}") from exc
        try:
            data = _parse_yaml(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{file_path}: not valid YAML{where}: {problem}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            # PyYAML's constructors fail this way on an explicit tag that does not fit its value
            # (``!!int foo``, ``!!timestamp x``): still the file's mistake, not rotator's
            raise ConfigError(f"{file_path}: not valid YAML: a tagged value cannot be read ({exc})") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"{file_path}: the top level must be a mapping, got {type(data).__name__}")
        return data


class LogConfig(Section):
    """``log``: how rotator writes its events (to stderr, for journald or the container runtime)."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class HttpConfig(Section):
    """``http``: the health and metrics listener (``/healthz``, ``/readyz``, ``/metrics``); off if unset."""

    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value


class MetricsConfig(Section):
    """``metrics``: what ``/metrics``, ``--metrics-file`` and ``--pushgateway`` hold."""

    # one series per server (rotator_last_success_timestamp_seconds{policy,server_id}): for small
    # fleets; the per-policy gauges (servers overdue, the oldest last success) are always there
    per_server: bool = False


class DaemonConfig(Section):
    """``daemon``: how runs wait for backups and how the daemon stops."""

    poll_interval: Duration = timedelta(seconds=5)
    poll_max_interval: Duration = timedelta(minutes=1)
    shutdown_grace: Duration = timedelta(minutes=5)
    misfire_grace: Duration = timedelta(hours=1)


class EtcdConfig(Section):
    """``coordination.etcd``: the cluster, the keys' prefix, the lease, and how to authenticate."""

    endpoints: Annotated[list[str], Field(min_length=1)] = ["http://127.0.0.1:2379"]
    prefix: str = "/rotator/"
    lease_ttl: Annotated[Duration, _bounded(timedelta(minutes=5))] = timedelta(seconds=15)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"{url!r} is not an etcd client URL such as http://127.0.0.1:2379")
        return [url.rstrip("/") for url in value]

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/") or not value.endswith("/") or len(value) < 3:
            raise ValueError("must start and end with '/', e.g. /rotator/production/")
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _ttl(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=2):
            raise ValueError("must be at least 2s")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> EtcdConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        tls = self.ca_file is not None or self.cert_file is not None
        plain = [url for url in self.endpoints if url.startswith("http://")]
        if tls and plain:
            raise ValueError(f"ca_file/cert_file are for https endpoints, but {plain[0]!r} is plain http")
        remote = [url for url in plain if not is_loopback(urlsplit(url).hostname or "")]
        if self.username is not None and remote:
            raise ValueError(
                f"{remote[0]!r} is plain http to another host: the etcd password would travel in clear "
                "(use https)"
            )
        return self


class CoordinationConfig(Section):
    """``coordination``: one instance acts (``none``: this is the only one), or a leader elected on etcd."""

    backend: Literal["none", "etcd"] = "none"
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")] = Field(
        default_factory=socket.gethostname
    )
    etcd: EtcdConfig | None = None

    @model_validator(mode="after")
    def _etcd_given(self) -> CoordinationConfig:
        if self.backend == "etcd" and self.etcd is None:
            raise ValueError("backend etcd needs an etcd section (at least its endpoints)")
        return self


class RotatorConfig(BaseSettings):
    """The whole configuration file."""

    model_config = SettingsConfigDict(
        env_prefix="ROTATOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    policies: Annotated[list[PolicyConfig], Field(min_length=1)]
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    daemon: DaemonConfig = DaemonConfig()
    http: HttpConfig = HttpConfig()
    metrics: MetricsConfig = MetricsConfig()
    coordination: CoordinationConfig = Field(default_factory=CoordinationConfig)

    @field_validator("api", "log", "daemon", "http", "metrics", "coordination", mode="before")
    @classmethod
    def _empty_section(cls, value: object) -> object:
        return {} if value is None else value  # a section with every key commented out

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, value: list[PolicyConfig]) -> list[PolicyConfig]:
        seen: dict[str, int] = {}
        for index, policy in enumerate(value):
            if policy.name in seen:
                raise ValueError(
                    f"policy name {policy.name!r} is used twice "
                    f"(policies[{seen[policy.name]}] and policies[{index}])"
                )
            seen[policy.name] = index
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: explicit values, then ROTATOR_* variables, then the YAML file.
        # No .env file and no secrets directory: the token has its own module.
        return (init_settings, env_settings, _YamlFile(settings_cls, yaml_file=_yaml_file.get()))

    def engine_policies(self) -> tuple[Policy, ...]:
        """Every policy as the retention engine takes it, in file order."""
        return tuple(policy.to_policy() for policy in self.policies)

    def policy(self, name: str) -> PolicyConfig:
        """The policy called ``name``; ``ConfigError`` listing the known names otherwise."""
        for policy in self.policies:
            if policy.name == name:
                return policy
        known = ", ".join(policy.name for policy in self.policies)
        raise ConfigError(f"no policy named {name!r} (known: {known})")


def config_path(cli_value: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """The configuration file: ``--config`` if given, else ``ROTATOR_CONFIG``."""
    chosen = cli_value if cli_value not in (None, "") else environ.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(f"no configuration file: pass --config PATH or set {CONFIG_ENV}")
    return Path(chosen)


def load_config(path: str | os.PathLike[str]) -> RotatorConfig:
    """Read and validate the configuration at ``path`` (with ``ROTATOR_*`` overrides).

    Raises :class:`ConfigError` with one line per problem.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no such configuration file")
    token = _yaml_file.set(file)
    try:
        return RotatorConfig()
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, source=str(file), environ=os.environ)) from exc
    finally:
        _yaml_file.reset(token)


def describe_errors(
    error: ValidationError, *, source: str = "", environ: Mapping[str, str] | None = None
) -> str:
    """One line per error: ``dotted.path[0].key: what is wrong (got VALUE)``, no URLs.

    A value that came from a ``ROTATOR_*`` variable of ``environ`` is blamed on it, not on the file:
    ``ROTATOR_API__TIMEOUT (api.timeout): ...``.
    """
    details = error.errors(include_url=False)
    env = {name.upper() for name, value in (environ or {}).items() if name.upper().startswith("ROTATOR_")}
    blamed = [_variable_of(detail["loc"], env) for detail in details]
    lines = [_describe(detail, variable) for detail, variable in zip(details, blamed, strict=True)]
    count = len(lines)
    from_file = source and any(variable is None for variable in blamed)
    head = f"{source}: " if from_file else "the environment: " if source else ""
    head += f"invalid configuration ({count} error{'s' if count != 1 else ''}):"
    return "\n".join([head, *(f"  {line}" for line in lines)])


def _variable_of(loc: tuple[int | str, ...], env: set[str]) -> str | None:
    """The ``ROTATOR_*`` variable set in ``env`` that the value at ``loc`` came from, if any.

    The environment wins over the file key by key, so the longest set prefix of the path is the
    source: ``api.timeout`` from ``ROTATOR_API__TIMEOUT``, ``policies[0].name`` from ``ROTATOR_POLICIES``.
    """
    names = []
    for part in loc:
        if not isinstance(part, str):
            break
        names.append(part.upper())
    for end in range(len(names), 0, -1):
        variable = "ROTATOR_" + "__".join(names[:end])
        if variable in env:
            return variable
    return None


def _describe(detail: Any, variable: str | None = None) -> str:
    path = dotted_path(detail["loc"])
    if variable is not None:
        path = f"{variable} ({path})"
    kind = detail["type"]
    if kind == "missing":
        return f"{path}: required"
    message = "unknown key" if kind == "extra_forbidden" else str(detail["msg"])
    message = message.removeprefix("Value error, ")
    loc = detail["loc"]
    if "notify" in loc and "on" not in loc:  # notification URLs carry tokens: never echoed
        return f"{path}: {message} (value not shown: notification URLs are secrets)"
    return f"{path}: {message} (got {_shorten(detail.get('input'))})"


def dotted_path(loc: tuple[int | str, ...]) -> str:
    """``("policies", 0, "retention", "keep_dayz")`` -> ``policies[0].retention.keep_dayz``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
