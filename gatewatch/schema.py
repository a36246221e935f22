"""The config JSON schema, generated from the config model (shipped as schemas/config.schema.json)."""

from __future__ import annotations

import json

from gatewatch.config import config_model


def config_schema_text() -> str:
    schema = config_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "gatewatch config"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
