"""A JSON Schema of the configuration file, generated from the pydantic models (``rotator config-schema``).

For editors (yaml-language-server, VS Code's YAML extension, JetBrains IDEs): completion, the
documentation of each section, and unknown keys flagged as rotator refuses them. It says what the
models' types say, written as the file is written:

- durations are strings such as ``30s``, ``1h30m``, ``7d`` (pydantic would say ISO 8601, ``PT30S``);
- a section with every key commented out (``http:`` alone, which YAML reads as null) is accepted,
  as rotator accepts it.

Checks that need code (a cron expression that can fire, a known time zone, a positive duration)
stay with rotator: ``rotator check-config`` makes them.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Final

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from rotator.config import RotatorConfig
from rotator.durations import format_duration

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
DURATION_PATTERN: Final = r"^\s*(?:\d+(?:\.\d+)?[smhdwSMHDW])+\s*$"
"""What :func:`rotator.durations.parse_duration` reads: numbers with units, ``s`` to ``w``, run together."""


class _FileSchema(GenerateJsonSchema):
    """pydantic's generator, with durations as the configuration file spells them."""

    def timedelta_schema(self, schema: core_schema.TimedeltaSchema) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "a duration: a number and a unit (s, m, h, d, w), e.g. 30s, 10m, 1h30m, 7d",
        }

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def _sections_that_may_be_empty() -> tuple[str, ...]:
    """The top-level keys whose null (every key commented out) the configuration reads as ``{}``."""
    validator = RotatorConfig.__pydantic_decorators__.field_validators["_empty_section"]
    return tuple(str(name) for name in validator.info.fields)


def config_schema() -> dict[str, Any]:
    """The configuration's JSON Schema (draft 2020-12), as a plain dict ready for ``json.dumps``."""
    schema = RotatorConfig.model_json_schema(schema_generator=_FileSchema)
    properties = schema["properties"]
    definitions = schema["$defs"]
    for name in _sections_that_may_be_empty():
        # the section's own schema in place, widened to null: a mistake inside it is still reported at
        # its key's path (an anyOf would report only that the section matches neither)
        field = properties[name]
        definition = definitions[field.pop("$ref").removeprefix("#/$defs/")]
        properties[name] = {**definition, **field, "type": ["object", "null"]}
    still_used = json.dumps(schema)
    for unused in [key for key in definitions if f'"#/$defs/{key}"' not in still_used]:
        del definitions[unused]
    return {
        "$schema": DIALECT,
        "title": "rotator configuration",
        **{key: value for key, value in schema.items() if key != "title"},
    }
