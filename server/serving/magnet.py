"""MAGNeT requests: its schedule's defaults filled in, and what MAGNeT does not take refused (422)."""

from __future__ import annotations

from pydantic import BaseModel

from lib.catalogue import ModelSpec
from lib.errors import Invalid
from lib.schemas import MAGNET_DEFAULTS, MAGNET_FIELDS


def resolve(spec: ModelSpec, request: BaseModel) -> BaseModel:
    """The request as the job runs it. On a MAGNeT model, what it leaves out of the schedule (and of
    temperature, top_k, top_p) takes audiocraft's MAGNeT defaults, written into the stored request so
    the job shows what ran. Other models refuse MAGNeT's fields."""
    given = request.model_fields_set
    if spec.kind != "magnet":
        named = [f for f in MAGNET_FIELDS if getattr(request, f, None) is not None]
        if named:
            raise Invalid(f"{named[0]} is a MAGNeT setting; {spec.name} does not take it", field=named[0],
                          hint="leave it out, or use a magnet-* / audio-magnet-* model")  # fmt: skip
        return request
    if "cfg_coef" in given:
        raise Invalid(
            "MAGNeT anneals its guidance from max_cfg_coef to min_cfg_coef; it takes no cfg_coef",
            field="cfg_coef", hint="send max_cfg_coef and min_cfg_coef instead (defaults 10 and 1)",
        )  # fmt: skip
    steps = request.decoding_steps
    if steps is not None and len(steps) != spec.codebooks:
        raise Invalid(
            f"decoding_steps has {len(steps)} counts; {spec.name} has {spec.codebooks} codebooks",
            field="decoding_steps", hint=f"give one count per codebook, e.g. {MAGNET_DEFAULTS['decoding_steps']}",
        )  # fmt: skip
    segment = spec.segment_s or 0.0
    if request.duration > segment:
        raise Invalid(
            f"{spec.name} generates at most {segment:g} s (its training segment); asked for {request.duration:g} s",
            field="duration", hint=f"ask for at most {segment:g} s, or use a -30secs MAGNeT model or MusicGen",
        )  # fmt: skip
    fill = {k: v for k, v in MAGNET_DEFAULTS.items() if k not in given or getattr(request, k) is None}
    return request.model_copy(update=fill)
