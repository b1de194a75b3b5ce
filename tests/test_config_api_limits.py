"""``api.max_listing_items``, ``max_body_bytes``, ``answer_timeout`` and ``lean_transport``: defaults
that scale, settable."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from rotator import connections
from rotator.api import BackupsClient
from rotator.cli import build_parser, client_settings
from rotator.config import MIN_LISTING_ITEMS, load_config
from rotator.errors import ConfigError
from rotator.secrets import ApiToken


@pytest.fixture(name="clean_env", autouse=True)
def fixture_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROTATOR_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("ROTATOR_"):
            monkeypatch.delenv(name)


def config_file(tmp_path: Path, servers: int, api: str = "") -> Path:
    path = tmp_path / "rotator.yaml"
    listed = ", ".join(str(n) for n in range(1, servers + 1))
    path.write_text(
        "policies:\n"
        "  - name: nightly\n"
        f"    servers: [{listed}]\n"
        "    retention: {keep_last: 3}\n"
        "  - name: weekly\n"
        "    servers: [1, 2]\n"
        "    retention: {keep_last: 2}\n"
        "api:\n  url: http://127.0.0.1:9/api/v1\n" + api
    )
    return path


def settings_for(path: Path) -> tuple[int, int, float]:
    args = build_parser().parse_args(["run-once", "--config", str(path)])
    settings = client_settings(args, load_config(path), {})
    return settings.max_listing_items, settings.max_body_bytes, settings.answer_timeout


def test_the_listing_cap_scales_with_the_fleet(tmp_path: Path) -> None:
    """By default 100 backups a distinct server, never under 200,000: 10,000 servers read one listing."""
    assert settings_for(config_file(tmp_path, 3)) == (MIN_LISTING_ITEMS, 16 * 1024 * 1024, 300.0)
    big = load_config(config_file(tmp_path, 3)).api
    assert big.listing_items(10_000) == 1_000_000  # 10,000 servers x 30 backups fit
    assert big.listing_items(2_500) == 250_000


def test_the_caps_are_settable(tmp_path: Path) -> None:
    """Set in the file, each cap reaches the client as given."""
    caps = "  max_listing_items: 5000\n  max_body_bytes: 1048576\n  answer_timeout: 90s\n"
    path = config_file(tmp_path, 3, caps)
    assert settings_for(path) == (5000, 1048576, 90.0)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("max_listing_items: 0", "api.max_listing_items"),
        ("max_body_bytes: 1000", "api.max_body_bytes"),
        ("answer_timeout: 2h", "api.answer_timeout"),
    ],
)
def test_a_bad_cap_names_its_key(tmp_path: Path, line: str, key: str) -> None:
    """A cap out of bounds is a config error naming its key."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(config_file(tmp_path, 1, f"  {line}\n"))


@pytest.mark.parametrize(("line", "lean"), [("", True), ("  lean_transport: false\n", False)])
def test_the_transport_is_settable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, lean: bool
) -> None:
    """``api.lean_transport`` (default true) reaches the client's settings and picks its transport;
    set from the environment too."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    path = config_file(tmp_path, 1, line)
    args = build_parser().parse_args(["run-once", "--config", str(path)])
    settings = client_settings(args, load_config(path), {})
    assert settings.lean_transport is lean
    client = BackupsClient(ApiToken("t0ken-config-test", "test"), settings)
    expected = connections.LeanTransport if lean else httpx.AsyncHTTPTransport
    assert isinstance(client._transport, expected)
    monkeypatch.setenv("ROTATOR_API__LEAN_TRANSPORT", str(not lean).lower())
    assert client_settings(args, load_config(path), {}).lean_transport is (not lean)


def test_a_bad_transport_choice_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api\.lean_transport"):
        load_config(config_file(tmp_path, 1, "  lean_transport: sometimes\n"))
