"""Whether a melody request's chroma comes from its stems (htdemucs) or from the full mix.

`melody_stems` unset means stems when htdemucs is installed where the job runs (on an API node: in
a live worker's cache). The decision is written into the job's request, so the job runs the same
way wherever and whenever it runs, and its request shows which was used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lib.catalogue import HTDEMUCS
from lib.errors import Conflict

if TYPE_CHECKING:
    from pydantic import BaseModel

    from server.services import Services


def resolve(svc: Services, request: BaseModel) -> BaseModel:
    """The request with melody_stems decided; a 409 (model_not_installed, with the pull command) when
    stems are asked for and htdemucs is not installed. It is not downloaded on demand: a job waits
    for one download at most, which is its own model's."""
    registry = svc.registry
    available = registry.is_loaded(HTDEMUCS.name) or registry.is_installed(HTDEMUCS)
    wanted = request.melody_stems
    if wanted is None:
        return request.model_copy(update={"melody_stems": available})
    if wanted and not available and registry.knows_installed():
        hint = f"resource-audiocraft models pull {HTDEMUCS.name}"
        raise Conflict(
            f"melody_stems needs {HTDEMUCS.name} ({HTDEMUCS.repo}), which is not installed; run: {hint}, "
            "or send melody_stems: false for the full mix's chroma",
            code="model_not_installed", field="melody_stems", hint=hint,
        )  # fmt: skip
    return request
