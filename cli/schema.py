"""config/schema.json: the settings' JSON schema, generated from lib.settings.Settings.

    python -m cli.schema           # rewrite config/schema.json
    python -m cli.schema --check   # exit 1 when the committed file is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cli.paths import project_root


def schema_path() -> Path:
    return project_root() / "config" / "schema.json"


def generate() -> dict[str, Any]:
    from lib.settings import Settings

    schema = Settings.model_json_schema()
    prefix = Settings.model_config.get("env_prefix", "")
    for name, prop in schema.get("properties", {}).items():
        prop["x-env"] = f"{prefix}{name.upper()}"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "resource-audiocraft/config/schema.json",
        **schema,
        "title": "resource-audiocraft settings",
        "description": (
            f"Settings of the AudioCraft resource. Each is read from the environment variable named in "
            f"x-env ({prefix}<NAME>); CLI flags override them. Generated from lib.settings.Settings by "
            "`python -m cli.schema`; do not edit by hand."
        ),
    }


def render() -> str:
    return json.dumps(generate(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = schema_path()
    text = render()
    if "--check" in argv:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is out of date; run `python -m cli.schema`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
