"""The configuration file: the example validates, mistakes name their key's path."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from rotator.config import RotatorConfig, config_path, dotted_path, load_config
from rotator.errors import EXIT_CONFIG, ConfigError
from rotator.retention import Policy, Retention

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"

MINIMAL = """\
policies:
  - name: nightly
    servers: [101]
    retention: {keep_daily: 7}
"""


@pytest.fixture(name="clean_env", autouse=True)
def fixture_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROTATOR_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("ROTATOR_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(text)
    return path


def error_lines(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.exit_code == EXIT_CONFIG
    message = str(caught.value)
    assert "pydantic" not in message
    assert "errors.pydantic.dev" not in message  # no documentation links, just the problem
    assert "Traceback" not in message
    return [line.strip() for line in message.splitlines()[1:]]


def test_the_example_validates() -> None:
    """config.example.yaml loads, with the sandbox's demo fleet and a GFS retention."""
    config = load_config(EXAMPLE)
    (nightly,) = config.policies
    assert nightly.name == "nightly"
    assert nightly.servers == [12345, 12346, 12347]
    assert nightly.schedule is not None
    assert nightly.schedule.cron == "0 3 * * *"
    assert nightly.retention.keep_daily == 7
    assert nightly.retention.keep_weekly == 4
    assert nightly.retention.keep_monthly == 6
    assert config.api.url == "https://admin.vps.org/api/v1"
    assert config.api.timeout == timedelta(seconds=30)
    assert config.engine_policies() == (
        Policy(
            name="nightly",
            servers=(12345, 12346, 12347),
            timezone="Europe/Berlin",
            retention=Retention(keep_daily=7, keep_weekly=4, keep_monthly=6, min_keep=3),
        ),
    )


def test_a_mistyped_example_names_the_key_path(tmp_path: Path) -> None:
    """A typo in a copy of the example fails with the key's dotted path and its value."""
    text = EXAMPLE.read_text().replace("keep_daily: 7", "keep_dayz: 7")
    assert text != EXAMPLE.read_text()
    lines = error_lines(write(tmp_path, text))
    assert "policies[0].retention.keep_dayz: unknown key (got 7)" in lines


def test_defaults(tmp_path: Path) -> None:
    """A minimal file gets the documented defaults."""
    config = load_config(write(tmp_path, MINIMAL))
    policy = config.policies[0]
    assert (policy.timezone, policy.prune_unmanaged, policy.retention.min_keep) == ("UTC", False, 1)
    assert (policy.retries, policy.retry_delay) == (2, timedelta(minutes=10))
    assert config.api.model_dump() == {
        "url": "https://admin.vps.org/api/v1",
        "token_file": None,
        "timeout": timedelta(seconds=30),
        "requests_per_second": 5.0,
        "burst": 10,
        "max_concurrency": 8,
        "allow_insecure_http": False,
        "create_quiet_period": timedelta(minutes=2),
        "max_view_age": timedelta(seconds=60),
        "max_description_length": None,
        "max_listing_items": None,
        "max_body_bytes": 16 * 1024 * 1024,
        "answer_timeout": timedelta(minutes=5),
        "lean_transport": True,
    }


BAD = [
    pytest.param({"policies": [{"name": "a b"}]}, "policies[0].name: String should match pattern", id="name"),
    pytest.param(
        {"policies": [{"servers": []}]}, "policies[0].servers: List should have at least 1", id="no-server"
    ),
    pytest.param(
        {"policies": [{"servers": [0]}]}, "policies[0].servers[0]: Input should be greater", id="server-0"
    ),
    pytest.param(
        {"policies": [{"servers": [5, 5]}]}, "policies[0].servers: server listed twice: 5", id="dup-server"
    ),
    pytest.param(
        {"policies": [{"timezone": "Mars/Base"}]}, "policies[0].timezone: unknown time zone", id="zone"
    ),
    pytest.param(
        {"policies": [{"retention": {"keep_daily": 0}}]},
        "policies[0].retention: no retention rule is on",
        id="all-rules-off",
    ),
    pytest.param(
        {"policies": [{"retention": {"keep_daily": -1}}]},
        "policies[0].retention.keep_daily: Input should be greater than or equal to 0 (got -1)",
        id="negative",
    ),
    pytest.param(
        {"policies": [{"retention": {"keep_daily": 1, "min_keep": 0}}]},
        "policies[0].retention.min_keep: Input should be greater than or equal to 1 (got 0)",
        id="min-keep-0",
    ),
    pytest.param({"policies": [{"prune_unmanaged": "maybe"}]}, "policies[0].prune_unmanaged:", id="bool"),
    pytest.param(
        {"policies": [{"shedule": {"cron": "0 3 * * *"}}]},
        "policies[0].shedule: unknown key",
        id="unknown-key",
    ),
    pytest.param(
        {"policies": [{"schedule": "daily"}]},
        "policies[0].schedule: Input should be",
        id="schedule-not-a-map",
    ),
    pytest.param(
        {"policies": [{"schedule": {"cron": "61 3 * * *"}}]},
        "policies[0].schedule.cron: not a cron expression: '61 3 * * *'",
        id="bad-cron",
    ),
    pytest.param(
        {"policies": [{"schedule": {"cron": "0 3 * *"}}]},
        "policies[0].schedule.cron: not a cron expression",
        id="cron-four-fields",
    ),
    pytest.param(
        {"policies": [{"schedule": {"cron": "0 0 30 2 *"}}]},
        "policies[0].schedule.cron: the cron expression '0 0 30 2 *' can never fire",
        id="never-fires",
    ),
    pytest.param(
        {"policies": [{"schedule": {"cron": "0 3 * * *", "interval": "6h"}}]},
        "policies[0].schedule: give exactly one of cron or interval",
        id="cron-and-interval",
    ),
    pytest.param(
        {"policies": [{"schedule": {"interval": "1h", "jitter": "2h"}}]},
        "policies[0].schedule: jitter must be shorter than the interval",
        id="jitter-too-long",
    ),
    pytest.param(
        {"policies": [{"schedule": {"interval": "0.5s"}}]},
        "policies[0].schedule.interval: an interval is a whole number of seconds",
        id="interval-fraction",
    ),
    pytest.param(
        {"policies": [{"description": "{policy} {host}"}]},
        "policies[0].description: unknown placeholder {host}",
        id="description-placeholder",
    ),
    pytest.param(
        {"policies": [{"description": "x [rotator:other]"}]},
        "policies[0].description: the ownership marker is appended by rotator",
        id="description-marker",
    ),
    pytest.param(
        {"policies": [{"wait_timeout": "forever"}]}, "policies[0].wait_timeout: not a duration", id="wait"
    ),
    pytest.param(
        {"policies": [{"max_deletes_per_run": -1}]},
        "policies[0].max_deletes_per_run: Input should be greater than or equal to 0",
        id="max-deletes",
    ),
    pytest.param({"policies": [{"dry_run": "sometimes"}]}, "policies[0].dry_run:", id="dry-run"),
    pytest.param(
        {"log": {"format": "xml"}}, "log.format: Input should be 'auto', 'json' or 'console'", id="log-format"
    ),
    pytest.param({"daemon": {"shutdown_grace": "-1s"}}, "daemon.shutdown_grace: not a duration", id="grace"),
    pytest.param({"api": {"timeout": "soon"}}, "api.timeout: not a duration: 'soon'", id="timeout"),
    pytest.param({"api": {"timeout": 30}}, "api.timeout: write a duration as a string", id="timeout-number"),
    pytest.param({"api": {"timeout": "0s"}}, "api.timeout: must be longer than 0s", id="timeout-zero"),
    pytest.param(
        {"api": {"requests_per_second": 0}},
        "api.requests_per_second: Input should be greater than 0",
        id="rps",
    ),
    pytest.param({"api": {"burst": 0}}, "api.burst: Input should be greater than or equal to 1", id="burst"),
    pytest.param({"api": {"max_concurrency": 0}}, "api.max_concurrency:", id="concurrency"),
    pytest.param({"api": {"url": "ftp://x"}}, "api.url: must be an http(s) URL", id="url"),
    pytest.param(
        {"api": {"url": "http://backups.example/api/v1"}},
        "api: url 'http://backups.example/api/v1' is plain http to another host",
        id="url-insecure",
    ),
    pytest.param(
        {"api": {"allow_insecure_http": "perhaps"}}, "api.allow_insecure_http: Input should be", id="insecure"
    ),
    pytest.param(
        {"api": {"create_quiet_period": "61m"}},
        "api.create_quiet_period: must be at most 1h",
        id="quiet-long",
    ),
    pytest.param(
        {"api": {"create_quiet_period": "0s"}},
        "api.create_quiet_period: must be longer than 0s",
        id="quiet-0",
    ),
    pytest.param(
        {"api": {"create_quiet_period": 120}},
        "api.create_quiet_period: write a duration as a string",
        id="quiet-number",
    ),
    pytest.param({"api": {"max_view_age": "3601s"}}, "api.max_view_age: must be at most 1h", id="view-age"),
    pytest.param({"api": {"max_view_age": "never"}}, "api.max_view_age: not a duration", id="view-age-text"),
    pytest.param(
        {"api": {"max_description_length": 0}},
        "api.max_description_length: Input should be greater than or equal to 1 (got 0)",
        id="description-length-0",
    ),
    pytest.param(
        {"api": {"max_description_length": "long"}},
        "api.max_description_length: Input should be a valid integer",
        id="description-length-text",
    ),
    pytest.param(
        {"policies": [{"retries": -1}]},
        "policies[0].retries: Input should be greater than or equal to 0 (got -1)",
        id="retries-negative",
    ),
    pytest.param(
        {"policies": [{"retries": 21}]},
        "policies[0].retries: Input should be less than or equal to 20 (got 21)",
        id="retries-21",
    ),
    pytest.param(
        {"policies": [{"retry_delay": "0s"}]}, "policies[0].retry_delay: must be longer than 0s", id="delay-0"
    ),
    pytest.param(
        {"policies": [{"retry_delay": "later"}]}, "policies[0].retry_delay: not a duration", id="delay-text"
    ),
    pytest.param(
        {"policies": [{"status_grace": "soon"}]}, "policies[0].status_grace: not a duration", id="grace-text"
    ),
    pytest.param(
        {"policies": [{"status_grace": "0s"}]},
        "policies[0].status_grace: must be longer than 0s",
        id="grace-0",
    ),
    pytest.param({"api": {"token": "secret"}}, "api.token: unknown key", id="token-is-not-config"),
    pytest.param({"logging": {"level": "info"}}, "logging: unknown key", id="unknown-section"),
    pytest.param({"policies": []}, "policies: List should have at least 1 item", id="no-policies"),
    pytest.param({"http": {"listen": "9188"}}, "http.listen: not HOST:PORT: '9188'", id="listen"),
    pytest.param(
        {"http": {"listen": "::1:9188"}}, "http.listen: write an IPv6 address in brackets", id="ipv6"
    ),
    pytest.param({"http": {"listen": "0.0.0.0:70000"}}, "http.listen: port out of range", id="port"),
    pytest.param({"http": {"port": 9188}}, "http.port: unknown key", id="http-key"),
    pytest.param(
        {"policies": [{"pings": {"url": "hc-ping.com/x"}}]},
        "policies[0].pings.url: must be an http(s) URL",
        id="pings-url",
    ),
    pytest.param({"policies": [{"pings": {}}]}, "policies[0].pings.url: required", id="pings-missing"),
    pytest.param(
        {"policies": [{"pings": "https://hc-ping.com/x"}]},
        "policies[0].pings: Input should be",
        id="pings-str",
    ),
]


def merged(change: dict[str, object]) -> dict[str, object]:
    document = yaml.safe_load(MINIMAL)
    for key, value in change.items():
        if key == "policies" and isinstance(value, list) and value:
            document["policies"][0].update(value[0])
        else:
            document[key] = value
    return document


@pytest.mark.parametrize(("change", "expected"), BAD)
def test_each_mistake_is_one_line_naming_its_path(
    tmp_path: Path, change: dict[str, object], expected: str
) -> None:
    """Every error is one line: the field's dotted path, what is wrong, the bad value."""
    lines = error_lines(write(tmp_path, yaml.safe_dump(merged(change))))
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes give several lines, one each, under one heading naming the file."""
    path = write(tmp_path, yaml.safe_dump(merged({"api": {"burst": 0, "timeout": "x"}, "extra": 1})))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    heading, *lines = str(caught.value).splitlines()
    assert heading == f"{path}: invalid configuration (3 errors):"
    assert [line.split(":")[0].strip() for line in lines] == ["api.timeout", "api.burst", "extra"]


def test_duplicate_policy_names(tmp_path: Path) -> None:
    """Two policies cannot share a name (it is their ownership marker)."""
    document = yaml.safe_load(MINIMAL)
    document["policies"].append(dict(document["policies"][0], servers=[102]))
    lines = error_lines(write(tmp_path, yaml.safe_dump(document)))
    assert lines == [
        "policies: policy name 'nightly' is used twice (policies[0] and policies[1]) (got "
        + lines[0].split("(got ", 1)[1]
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policies: [", "not valid YAML (line 1, column 12)"),
        ("- a\n- b\n", "the top level must be a mapping, got list"),
        ("", "policies: required"),
        ("policies: !!int many\n", "not valid YAML: a tagged value cannot be read"),
        ("policies:\n- name: !!timestamp soon\n", "not valid YAML: a tagged value cannot be read"),
    ],
    ids=["syntax", "not-a-mapping", "empty", "int-tag", "timestamp-tag"],
)
def test_file_level_problems(tmp_path: Path, text: str, expected: str) -> None:
    """Broken YAML, a list at the top, an empty file: clean one-line errors."""
    with pytest.raises(ConfigError, match=r"rotator\.yaml") as caught:
        load_config(write(tmp_path, text))
    assert expected in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    """A path that is not a file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.yaml")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ROTATOR_API__* variables win over the file, key by key; unrelated ROTATOR_* are ignored."""
    path = write(tmp_path, MINIMAL + "api:\n  url: https://file.example/api/v1\n  burst: 3\n")
    monkeypatch.setenv("ROTATOR_API__TIMEOUT", "10s")
    monkeypatch.setenv("ROTATOR_API__URL", "http://127.0.0.1:8080/api/v1/")
    monkeypatch.setenv("ROTATOR_API_TOKEN", "not-config")
    monkeypatch.setenv("ROTATOR_CONFIG", str(path))
    config = load_config(path)
    assert config.api.url == "http://127.0.0.1:8080/api/v1"
    assert config.api.timeout == timedelta(seconds=10)
    assert config.api.burst == 3


def test_environment_errors_name_the_variable_and_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad override is blamed on its variable (with the key's path), and the file is not named."""
    monkeypatch.setenv("ROTATOR_API__MAX_CONCURRENCY", "zero")
    path = write(tmp_path, MINIMAL)
    lines = error_lines(path)
    assert lines == [
        "ROTATOR_API__MAX_CONCURRENCY (api.max_concurrency): Input should be a valid integer, "
        "unable to parse string as an integer (got 'zero')"
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith("the environment: invalid configuration (1 error):")
    assert str(path) not in str(caught.value)


def test_errors_from_file_and_environment_are_each_blamed_on_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One bad key in the file, one bad variable: the file heads the message, each line names its source."""
    monkeypatch.setenv("rotator_api__timeout", "soon")  # the settings read variables in any case
    path = write(tmp_path, MINIMAL + "api:\n  burst: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    head, *lines = str(caught.value).splitlines()
    assert head == f"{path}: invalid configuration (2 errors):"
    assert sorted(line.split(":")[0].strip() for line in lines) == [
        "ROTATOR_API__TIMEOUT (api.timeout)",
        "api.burst",
    ]


def test_init_values_win(tmp_path: Path) -> None:
    """Values given to RotatorConfig(...) take precedence (the CLI's overrides)."""
    config = RotatorConfig(policies=[{"name": "x", "servers": [1], "retention": {"keep_last": 2}}])
    assert config.engine_policies()[0].retention == Retention(keep_last=2)
    with pytest.raises(ConfigError, match="no policy named 'y'"):
        config.policy("y")


def test_config_path_resolution() -> None:
    """--config wins over ROTATOR_CONFIG; neither is a ConfigError."""
    assert config_path("a.yaml", {"ROTATOR_CONFIG": "b.yaml"}) == Path("a.yaml")
    assert config_path(None, {"ROTATOR_CONFIG": "b.yaml"}) == Path("b.yaml")
    with pytest.raises(ConfigError, match="--config"):
        config_path(None, {})


def test_dotted_path() -> None:
    """Locations read like the YAML they point at."""
    assert dotted_path(("policies", 0, "retention", "keep_dayz")) == "policies[0].retention.keep_dayz"
    assert dotted_path(()) == "(top level)"


YAML_CASES = [
    MINIMAL,
    "a: 0x1F\nb: 1_000\nc: 0o17\nd: .inf\ne: 1e3\nf: yes\ng: ~\nh: 017\ni: 1:20\nj: 08\nk: '5'\n",
    "l: !!str 5\nm: !!int '7'\nn: [1, -2, +3, 0, 10, 2001-02-03]\no: &a [1]\np: *a\nq: !!set {a, b}\n",
    "r:\n  <<: {x: 1}\n  y: 2\ns: 1\u0661\nt: 2001-02-03T04:05:06Z\n",
]


@pytest.mark.parametrize("text", YAML_CASES)
def test_yaml_reads_as_safe_load(text: str) -> None:
    """The fast reader gives what yaml.safe_load gives, value for value and type for type."""
    from rotator.config import _parse_yaml  # noqa: PLC0415 - the private reader, on its own

    fast, plain = _parse_yaml(text), yaml.safe_load(text)
    assert fast == plain
    assert [type(value) for value in fast.values()] == [type(value) for value in plain.values()]
    if "*a" in text:
        assert fast["o"] is fast["p"]  # an alias is still the same object


def test_servers_listed_twice_in_a_large_policy(tmp_path: Path) -> None:
    """Repeated ids are all named, in order, among thousands (and found without a quadratic scan)."""
    servers = [*range(1, 20_001), 7, 19_999, 7]
    document = yaml.safe_load(MINIMAL)
    document["policies"][0]["servers"] = servers
    lines = error_lines(write(tmp_path, yaml.safe_dump(document)))
    assert len(lines) == 1
    assert lines[0].startswith("policies[0].servers: server listed twice: 7, 19999 (got ")


# -- plain http, the new api and policy keys ----------------------------------------------

REMOTE_HTTP = [
    "http://admin.vps.org/api/v1",
    "http://10.0.0.7:8080/api/v1",
    "http://0.0.0.0:8080/api/v1",  # every address of this machine, reachable from others
    "http://[2001:db8::1]/api/v1",
    "http://localhost.example.com/api/v1",  # a name that only starts like this machine's
    "http://evil-localhost/api/v1",
    "http://127.0.0.1.nip.io/api/v1",
    "http://localhost@backups.example/api/v1",  # userinfo, the host is another
    "http://127.1/api/v1",  # a short form the check does not read: refused, the safe side
    "HTTP://ADMIN.VPS.ORG/api/v1",
]
LOOPBACK_HTTP = [
    "http://127.0.0.1:8080/api/v1",
    "http://127.5.6.7/api/v1",
    "http://localhost:8080/api/v1",
    "http://LOCALHOST/api/v1",
    "http://localhost./api/v1",
    "http://[::1]:8080/api/v1",
    "http://sandbox.localhost/api/v1",
]


def with_api(**api: object) -> str:
    return MINIMAL + yaml.safe_dump({"api": api})


@pytest.mark.parametrize("url", REMOTE_HTTP)
def test_plain_http_to_another_host_is_refused(tmp_path: Path, url: str) -> None:
    """The token would travel in clear: one line naming api's url, with both ways out."""
    (line,) = error_lines(write(tmp_path, with_api(url=url)))
    assert line.startswith(f"api: url {url.rstrip('/')!r} is plain http to another host"), line
    assert "use https, or set api.allow_insecure_http: true" in line


@pytest.mark.parametrize("url", REMOTE_HTTP)
def test_allow_insecure_http_lets_it_through(tmp_path: Path, url: str) -> None:
    """allow_insecure_http: true is the explicit opt-in for plain http anywhere."""
    config = load_config(write(tmp_path, with_api(url=url, allow_insecure_http=True)))
    assert config.api.url == url.rstrip("/")
    assert config.api.allow_insecure_http


@pytest.mark.parametrize("url", LOOPBACK_HTTP)
def test_plain_http_to_this_machine_is_allowed(tmp_path: Path, url: str) -> None:
    """127.0.0.0/8, localhost and ::1 never leave the machine: http is fine without the opt-in."""
    config = load_config(write(tmp_path, with_api(url=url)))
    assert config.api.url == url
    assert not config.api.allow_insecure_http


def test_https_anywhere_is_allowed(tmp_path: Path) -> None:
    """https needs no opt-in, to any host."""
    assert load_config(write(tmp_path, with_api(url="https://10.0.0.7/api/v1"))).api.url == (
        "https://10.0.0.7/api/v1"
    )


def test_plain_http_from_the_environment_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ROTATOR_API__URL is checked like the file's key; ROTATOR_API__ALLOW_INSECURE_HTTP opts in."""
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("ROTATOR_API__URL", "http://backups.example/api/v1")
    (line,) = error_lines(path)
    assert line.startswith("api: url 'http://backups.example/api/v1' is plain http to another host")
    monkeypatch.setenv("ROTATOR_API__ALLOW_INSECURE_HTTP", "true")
    assert load_config(path).api.url == "http://backups.example/api/v1"


def test_new_keys_at_their_bounds(tmp_path: Path) -> None:
    """The largest quiet period and view age (1h), retries 0 and 20, a description limit of 1."""
    document = merged(
        {"api": {"create_quiet_period": "1h", "max_view_age": "60m", "max_description_length": 1}}
    )
    document["policies"][0].update(retries=20, retry_delay="1s")
    document["policies"].append(
        {"name": "once", "servers": [102], "retention": {"keep_last": 1}, "retries": 0, "retry_delay": "36h"}
    )
    config = load_config(write(tmp_path, yaml.safe_dump(document)))
    assert config.api.create_quiet_period == timedelta(hours=1)
    assert config.api.max_view_age == timedelta(hours=1)
    assert config.api.max_description_length == 1
    assert [(p.retries, p.retry_delay) for p in config.policies] == [
        (20, timedelta(seconds=1)),
        (0, timedelta(hours=36)),
    ]


def test_new_keys_reach_the_jobs(tmp_path: Path) -> None:
    """retries and retry_delay become the job's; a slot gets the first attempt and its retries."""
    from rotator.scheduler import jobs_from_config  # noqa: PLC0415 - the daemon's side, for this test only

    document = merged({"policies": [{"retries": 5, "retry_delay": "30m"}]})
    (job,) = jobs_from_config(load_config(write(tmp_path, yaml.safe_dump(document))))
    assert (job.spec.retries, job.spec.retry_delay, job.spec.attempts) == (5, timedelta(minutes=30), 6)


def _model_keys(model: type[object]) -> set[str]:
    return set(getattr(model, "model_fields", {}))


def test_the_example_names_every_key() -> None:
    """Every key of api and of a policy is explained (named, set or commented out) in the example."""
    from rotator.config import ApiConfig, PolicyConfig  # noqa: PLC0415

    text = EXAMPLE.read_text()
    missing = sorted(
        f"{section}.{key}"
        for section, model in (("api", ApiConfig), ("policies[]", PolicyConfig))
        for key in _model_keys(model)
        if f"{key}:" not in text
    )
    assert missing == []
