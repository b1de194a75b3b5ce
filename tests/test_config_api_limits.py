"""``api.max_listing_items``, ``max_body_bytes`` and ``answer_timeout``: defaults that scale, settable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rotator.cli import build_parser, client_settings
from rotator.config import MIN_LISTING_ITEMS, load_config
from rotator.errors import ConfigError


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
