"""``rotator config-schema``: the configuration's JSON Schema accepts what rotator accepts, and flags
what it refuses that a schema can tell (checked with the ``jsonschema`` library)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from rotator.cli import main
from rotator.config import RotatorConfig, load_config
from rotator.durations import parse_duration
from rotator.schema import DURATION_PATTERN, config_schema

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


@pytest.fixture(name="validator")
def fixture_validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(name="example")
def fixture_example() -> dict[str, Any]:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def problems(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return sorted(
        "/".join(map(str, error.absolute_path)) + ": " + error.message
        for error in validator.iter_errors(document)
    )


def test_the_example_validates(validator: jsonschema.Draft202012Validator, example: dict[str, Any]) -> None:
    """config.example.yaml, which rotator loads, is valid by the schema."""
    load_config(EXAMPLE)
    assert problems(validator, example) == []


def test_pydantics_own_schema_rejects_the_example(example: dict[str, Any]) -> None:
    """Why the schema is post-processed: the plain model schema refuses the example's bare ``http:``."""
    assert example.get("http", "absent") is None  # a section with every key commented out
    naive = jsonschema.Draft202012Validator(RotatorConfig.model_json_schema())
    assert any("None is not of type 'object'" in e.message for e in naive.iter_errors(example))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        pytest.param(
            lambda d: d["policies"][0]["retention"].update(keep_dayz=3), "policies/0/retention", id="typo"
        ),
        pytest.param(
            lambda d: d["policies"][0].update(wait_timeout="2 hours"),
            "policies/0/wait_timeout",
            id="duration",
        ),
        pytest.param(
            lambda d: d["policies"][0].update(servers=["web-1"]), "policies/0/servers/0", id="server-id"
        ),
        pytest.param(lambda d: d["policies"][0].update(servers=[]), "policies/0/servers", id="no-servers"),
        pytest.param(lambda d: d["policies"][0].update(name="night ly"), "policies/0/name", id="policy-name"),
        pytest.param(lambda d: d.update(log={"level": "verbose"}), "log/level", id="log-level"),
        pytest.param(lambda d: d.update(api={"burst": 0}), "api/burst", id="burst"),
        pytest.param(lambda d: d.update(extra_section={}), "", id="unknown-section"),
        pytest.param(lambda d: d.pop("policies"), "", id="no-policies"),
    ],
)
def test_mistakes_are_flagged_at_their_path(
    validator: jsonschema.Draft202012Validator, example: dict[str, Any], change: Any, where: str
) -> None:
    """A mistyped copy of the example fails at the key's path, as rotator refuses it."""
    document = copy.deepcopy(example)
    change(document)
    found = problems(validator, document)
    assert found
    assert any(line.split(": ", 1)[0] == where for line in found), found


@pytest.mark.parametrize("text", ["30s", "10m", "1h30m", "7d", "2w", "1.5h", " 6H ", "90s"])
def test_durations_rotator_reads_match_the_pattern(text: str) -> None:
    """Every duration rotator reads is one the schema accepts."""
    parse_duration(text)
    assert jsonschema.Draft202012Validator({"type": "string", "pattern": DURATION_PATTERN}).is_valid(text)


@pytest.mark.parametrize("text", ["", "2 hours", "PT30S", "h", "10", "1h 30m", "-5m"])
def test_durations_rotator_refuses_fail_the_pattern(text: str) -> None:
    """A duration rotator refuses is one the schema refuses too."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
    assert not jsonschema.Draft202012Validator({"type": "string", "pattern": DURATION_PATTERN}).is_valid(text)


def test_defaults_are_written_as_the_file_writes_them() -> None:
    """Duration defaults read ``2h``, not ``PT2H``."""
    policy = config_schema()["$defs"]["PolicyConfig"]["properties"]
    assert policy["wait_timeout"]["default"] == "2h"
    assert policy["retry_delay"]["default"] == "10m"


def test_the_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """``rotator config-schema`` needs no configuration and prints the schema as JSON."""
    assert main(["config-schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
