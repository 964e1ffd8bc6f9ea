"""config/schema.json (the settings' JSON schema) and README.md's settings tables, both generated
from lib.settings.Settings, so that neither can drift from the code.

    python -m cli.schema           # rewrite config/schema.json and the tables in README.md
    python -m cli.schema --check   # exit 1 when either committed file is out of date
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


# -- README.md's settings tables ---------------------------------------------------------------------

DOCKER_PREFIX = "Docker runtime: "
# Defaults the class computes at run time, as the README says them.
COMPUTED_DEFAULTS = {
    "data_dir": "`~/.local/share/resource-audiocraft` (`$XDG_DATA_HOME/resource-audiocraft`)",
    "models_dir": "the hub cache",
    "base_image": "`python:3.11-slim-bookworm`",
}
# The README's two tables: the Docker section's, and the Settings section's (all the others).
TABLES = ("docker", "settings")


def _markers(table: str) -> tuple[str, str]:
    return (
        f"<!-- {table} table: generated from lib/settings.py by `python -m cli.schema`; do not edit -->",
        f"<!-- end of the {table} table -->",
    )


def _default(name: str, value: Any) -> str:
    if name in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[name]
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return f"`{text}`" if any(c in text for c in ":/") else text


def readme_table(table: str) -> str:
    """One Markdown table of settings: variable, default, meaning (the field's description)."""
    from lib.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = field.description or ""
        if (table == "docker") != description.startswith(DOCKER_PREFIX):
            continue
        meaning = description.removeprefix(DOCKER_PREFIX).replace("|", "\\|")
        meaning = meaning[:1].upper() + meaning[1:]
        default = field.get_default(call_default_factory=False) if field.default_factory is None else None
        rows.append(f"| `{prefix}{name.upper()}` | {_default(name, default)} | {meaning} |")
    return "\n".join(rows)


def render_readme(text: str) -> str:
    """README.md's text with each generated table (between its markers) rewritten."""
    for table in TABLES:
        begin, end = _markers(table)
        if begin not in text or end not in text:
            raise ValueError(f"README.md lacks the {table} table's markers: {begin} ... {end}")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{readme_table(table)}\n{end}{tail}"
    return text


def readme_path() -> Path:
    return project_root() / "README.md"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    readme = readme_path()
    current_readme = readme.read_text()
    outputs = [(schema_path(), render()), (readme, render_readme(current_readme))]
    if "--check" in argv:
        stale = [path for path, text in outputs if (path.read_text() if path.exists() else "") != text]
        for path in stale:
            print(f"{path} is out of date; run `python -m cli.schema`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs:
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
