"""Fine-tuned models in the hub cache: the repos finetuned/<base>.<label> (model <base>+<label>), each snapshot a PEFT
adapter with its finetune.json (lib.finetune.FinetuneFacts). They are found here and registered in
the catalogue (lib.catalogue.FINETUNED) at start, after a fine-tune job or an import, and whenever a
name with '+' is not known (another process may have made it). Torch-free."""

from __future__ import annotations

import logging
from pathlib import Path

from lib.catalogue import CATALOGUE, ModelSpec, finetuned_repo, finetuned_spec, set_finetuned
from lib.finetune import FinetuneFacts
from server.hub import store

log = logging.getLogger("audiocraft.finetune")

ORG = "finetuned"
FACTS = "finetune.json"
_FOLDER_PREFIX = f"models--{ORG}--"


def facts(spec: ModelSpec, hub_cache: Path) -> FinetuneFacts | None:
    snapshot = store.snapshot_dir(spec, hub_cache)
    if snapshot is None:
        return None
    try:
        return FinetuneFacts.model_validate_json((snapshot / FACTS).read_text())
    except (OSError, ValueError):
        return None


def scan(hub_cache: Path) -> dict[str, ModelSpec]:
    """Every complete fine-tuned model in the hub cache whose base is a catalogue model."""
    found: dict[str, ModelSpec] = {}
    root = Path(hub_cache)
    if not root.is_dir():
        return found
    for folder in sorted(root.glob(f"{_FOLDER_PREFIX}*")):
        base_name, _, label = folder.name[len(_FOLDER_PREFIX) :].partition(".")
        name = f"{base_name}+{label}"
        base = CATALOGUE.get(base_name)
        if base is None:
            continue
        size = store.size_on_disk_bytes(finetuned_spec(name, base, 0.0), root) / 1e9
        spec = finetuned_spec(name, base, size)
        found_facts = facts(spec, root)
        if found_facts is None or found_facts.base != base.name:
            continue  # incomplete, or not ours
        found[name] = spec
    return found


def install(hub_cache: Path, name: str, result: Path) -> None:
    """A trained adapter's folder (server/finetune/adapters.py save) as the model's repo, through the
    hub's one writer (atomic: the repo is complete before it has its name), then in the catalogue."""
    import shutil

    from server.tiny.write import write_repo

    def copy(out: Path) -> None:
        for item in result.iterdir():
            shutil.copyfile(item, out / item.name)

    readme = (result / "README.md").read_text() if (result / "README.md").is_file() else ""
    write_repo(finetuned_repo(name), readme, hub_cache, copy)
    refresh(hub_cache)


def refresh(hub_cache: Path) -> dict[str, ModelSpec]:
    specs = scan(hub_cache)
    set_finetuned(specs)
    return specs
