"""The model catalogue: every model the service knows, as data."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from lib.errors import NotFound

Kind = Literal[
    "musicgen", "musicgen-melody", "musicgen-style", "audiogen", "magnet", "encodec", "audioseal", "mbd", "demucs"
]
# "stems": a source separator, used by melody conditioning (melody_stems), not a generation kind.
Capability = Literal["music", "sound", "melody", "style", "continuation", "codec", "watermark", "decoder", "stems"]

WEIGHTS_LICENCE = "CC-BY-NC-4.0"
# The model that watermarks generated audio (watermark: true) and detects the mark.
WATERMARK_MODEL = "audioseal"
# Multi-Band Diffusion: the most denoising steps a request or the settings may ask for (AudioCraft: 20).
MBD_MAX_STEPS = 100


@dataclass(frozen=True)
class ModelSpec:
    name: str
    repo: str
    kind: Kind
    hub_format: Literal["transformers", "audiocraft", "adapter", "audioseal", "mbd", "demucs"]
    sample_rate: int
    channels: int
    codebooks: int
    codebook_size: int
    frame_rate_hz: float
    capabilities: tuple[Capability, ...]
    approx_size_gb: float
    text_encoder: str | None = None
    # (hidden size, attention heads, layers) of the language model, for the real checkpoints.
    lm_shape: tuple[int, int, int] | None = None
    bandwidths_kbps: tuple[float, ...] = ()
    licence: str = WEIGHTS_LICENCE
    # Extra repos the model needs at run time (AudioGen's T5 lives in its own repo).
    extra_repos: tuple[str, ...] = field(default=())
    # Other names accepted for it wherever a model is named (see ALIASES).
    aliases: tuple[str, ...] = field(default=())
    # A fine-tuned model: the catalogue model its adapter is for (server/hub/finetuned.py).
    base: str | None = None
    # MAGNeT: the one length it generates (its training segment); requests ask for at most this.
    segment_s: float | None = None

    @property
    def window_s(self) -> float | None:
        if self.kind in ("musicgen", "musicgen-melody", "musicgen-style"):
            return 30.0
        if self.kind == "audiogen":
            return 10.0
        return self.segment_s


def _musicgen(name: str, lm_shape: tuple[int, int, int], size_gb: float, stereo: bool, melody: bool) -> ModelSpec:
    caps: tuple[Capability, ...] = ("music", "continuation") + (("melody",) if melody else ())
    return ModelSpec(
        name=name,
        repo=f"facebook/{name}",
        kind="musicgen-melody" if melody else "musicgen",
        hub_format="transformers",
        sample_rate=32000,
        channels=2 if stereo else 1,
        codebooks=8 if stereo else 4,
        codebook_size=2048,
        frame_rate_hz=50.0,
        capabilities=caps,
        approx_size_gb=size_gb,
        text_encoder="t5-base",
        lm_shape=lm_shape,
        # The short names of AudioCraft's docs and Replicate's `model_version`: small, medium, large,
        # melody, melody-large, stereo-large, stereo-melody-large, ...
        aliases=(name.removeprefix("musicgen-"),),
    )


SMALL, MEDIUM, LARGE = (1024, 16, 24), (1536, 24, 48), (2048, 32, 48)


def _magnet(name: str, lm_shape: tuple[int, int, int], size_gb: float, segment_s: float, audio: bool) -> ModelSpec:
    """MAGNeT (non-autoregressive masked decoding) in audiocraft's export format: text to music at
    32 kHz (T5-base), or text to sound at 16 kHz (T5-large, AudioGen's codec)."""
    return ModelSpec(
        name=name,
        repo=f"facebook/{name}",
        kind="magnet",
        hub_format="audiocraft",
        sample_rate=16000 if audio else 32000,
        channels=1,
        codebooks=4,
        codebook_size=2048,
        frame_rate_hz=50.0,
        capabilities=("sound",) if audio else ("music",),
        approx_size_gb=size_gb,
        text_encoder="t5-large" if audio else "t5-base",
        lm_shape=lm_shape,
        extra_repos=("google-t5/t5-large",) if audio else ("google-t5/t5-base",),
        segment_s=segment_s,
    )


# MusicGen-Style (arXiv 2407.12563): text and a 1.5-4.5 s style excerpt to music. A medium MusicGen
# in audiocraft's export format whose prefix is the style conditioner's tokens and the text; the
# conditioner runs MERT-v1-95M (its own repo, CC-BY-NC 4.0 like the model's weights) and the T5-base.
MUSICGEN_STYLE = ModelSpec(
    name="musicgen-style",
    repo="facebook/musicgen-style",
    kind="musicgen-style",
    hub_format="audiocraft",
    sample_rate=32000,
    channels=1,
    codebooks=4,
    codebook_size=2048,
    frame_rate_hz=50.0,
    capabilities=("style", "music"),
    approx_size_gb=6.4,
    text_encoder="t5-base",
    lm_shape=MEDIUM,
    extra_repos=("google-t5/t5-base", "m-a-p/MERT-v1-95M"),
    aliases=("style",),
)

# Demucs v4 (Hybrid Transformer Demucs): the separator AudioCraft's ChromaStemConditioner runs before
# taking a melody's chroma. Its hub layout is demucs 4.1's: <name>.yaml (the bag) and one
# <signature>.safetensors per model (server/models/demucs.py). Code and weights are MIT.
HTDEMUCS = ModelSpec(
    name="htdemucs",
    repo="adefossez/HTDemucs",
    kind="demucs",
    hub_format="demucs",
    sample_rate=44100,
    channels=2,
    codebooks=0,
    codebook_size=0,
    frame_rate_hz=0.0,
    capabilities=("stems",),
    approx_size_gb=0.17,
    licence="MIT",
)

CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        _musicgen("musicgen-small", SMALL, 2.4, stereo=False, melody=False),
        _musicgen("musicgen-medium", MEDIUM, 8.0, stereo=False, melody=False),
        _musicgen("musicgen-large", LARGE, 13.0, stereo=False, melody=False),
        _musicgen("musicgen-melody", MEDIUM, 6.2, stereo=False, melody=True),
        _musicgen("musicgen-melody-large", LARGE, 13.0, stereo=False, melody=True),
        _musicgen("musicgen-stereo-small", SMALL, 2.4, stereo=True, melody=False),
        _musicgen("musicgen-stereo-medium", MEDIUM, 8.0, stereo=True, melody=False),
        _musicgen("musicgen-stereo-large", LARGE, 13.0, stereo=True, melody=False),
        _musicgen("musicgen-stereo-melody", MEDIUM, 6.2, stereo=True, melody=True),
        _musicgen("musicgen-stereo-melody-large", LARGE, 13.0, stereo=True, melody=True),
        ModelSpec(
            name="audiogen-medium",
            repo="facebook/audiogen-medium",
            kind="audiogen",
            hub_format="audiocraft",
            sample_rate=16000,
            channels=1,
            codebooks=4,
            codebook_size=2048,
            frame_rate_hz=50.0,
            capabilities=("sound", "continuation"),
            approx_size_gb=6.0,
            text_encoder="t5-large",
            lm_shape=MEDIUM,
            extra_repos=("google-t5/t5-large",),
        ),
        _magnet("magnet-small-10secs", SMALL, 1.9, 10.0, audio=False),
        _magnet("magnet-medium-10secs", MEDIUM, 6.7, 10.0, audio=False),
        _magnet("magnet-small-30secs", SMALL, 1.9, 30.0, audio=False),
        _magnet("magnet-medium-30secs", MEDIUM, 6.7, 30.0, audio=False),
        _magnet("audio-magnet-small", SMALL, 2.9, 10.0, audio=True),
        _magnet("audio-magnet-medium", MEDIUM, 7.7, 10.0, audio=True),
        ModelSpec(
            name="encodec-24khz",
            repo="facebook/encodec_24khz",
            kind="encodec",
            hub_format="transformers",
            sample_rate=24000,
            channels=1,
            codebooks=32,
            codebook_size=1024,
            frame_rate_hz=75.0,
            capabilities=("codec",),
            approx_size_gb=0.09,
            bandwidths_kbps=(1.5, 3.0, 6.0, 12.0, 24.0),
        ),
        ModelSpec(
            name="encodec-48khz",
            repo="facebook/encodec_48khz",
            kind="encodec",
            hub_format="transformers",
            sample_rate=48000,
            channels=2,
            codebooks=16,
            codebook_size=1024,
            frame_rate_hz=150.0,
            capabilities=("codec",),
            approx_size_gb=0.08,
            bandwidths_kbps=(3.0, 6.0, 12.0, 24.0),
        ),
        ModelSpec(
            name="encodec-32khz",
            repo="facebook/encodec_32khz",
            kind="encodec",
            hub_format="transformers",
            sample_rate=32000,
            channels=1,
            codebooks=4,
            codebook_size=2048,
            frame_rate_hz=50.0,
            capabilities=("codec",),
            approx_size_gb=0.24,
            bandwidths_kbps=(2.2,),
        ),
        ModelSpec(  # AudioSeal's watermark generator and detector (16 kHz, 16-bit messages)
            name="audioseal",
            repo="facebook/audioseal",
            kind="audioseal",
            hub_format="audioseal",
            sample_rate=16000,
            channels=1,
            codebooks=0,
            codebook_size=0,
            frame_rate_hz=50.0,
            capabilities=("watermark",),
            approx_size_gb=0.09,
            licence="MIT",
        ),
        # Multi-Band Diffusion: a decoder from MusicGen's 32 kHz EnCodec tokens (`decoder: "mbd"`).
        # The repo's other checkpoints (mbd_comp_*.pt) are for the 24 kHz EnCodec; there is no 16 kHz
        # MBD, so AudioGen has none.
        ModelSpec(
            name="mbd-musicgen-32khz",
            repo="facebook/multiband-diffusion",
            kind="mbd",
            hub_format="mbd",
            sample_rate=32000,
            channels=1,
            codebooks=4,
            codebook_size=2048,
            frame_rate_hz=50.0,
            capabilities=("decoder",),
            approx_size_gb=2.7,  # 662 M float32 parameters at the shape AudioCraft's configs give it
            aliases=("mbd",),
        ),
        HTDEMUCS,
        MUSICGEN_STYLE,
    ]
}


# Every alias and the catalogue name it stands for: the one alias table.
ALIASES: dict[str, str] = {alias: spec.name for spec in CATALOGUE.values() for alias in spec.aliases}
assert not set(ALIASES) & set(CATALOGUE), "an alias may not be another model's name"


def close_matches(name: str, limit: int = 3) -> list[str]:
    """The models closest to a misspelt `name`: catalogue names, or `alias (name)` when the alias is closer."""
    key = name.strip().lower()
    found = difflib.get_close_matches(key, [*CATALOGUE, *ALIASES], n=2 * limit, cutoff=0.6)
    # A name the typed one begins (audiogen -> audiogen-medium) comes before one that merely looks alike.
    found.sort(key=lambda n: not n.startswith(key))
    shown: dict[str, str] = {}
    for n in found:
        target = ALIASES.get(n, n)
        shown.setdefault(target, f"{n} ({target})" if n in ALIASES else n)
    return list(shown.values())[:limit]


class UnknownModel(NotFound, LookupError):
    """A model name that is neither a catalogue name nor an alias; `suggestions` are the close ones.
    The close matches are in the message; the hint has every name and alias (GET /api/models too)."""

    code = "unknown_model"

    def __init__(self, name: str):
        self.name = name
        self.suggestions = close_matches(name)
        text = f"there is no model named '{name}'"
        if self.suggestions:
            *rest, last = self.suggestions
            text += f"; did you mean {', '.join(rest) + ' or ' if rest else ''}{last}?"
        hint = f"use a catalogue name ({', '.join(CATALOGUE)}) or an alias ({', '.join(ALIASES)})"
        super().__init__(text, field="model", hint=hint)


# Fine-tuned models (<base>+<label>), found in the hub cache by server/hub/finetuned.py: they come
# and go while the server runs, so they live apart from the fixed catalogue.
FINETUNED: dict[str, ModelSpec] = {}
_finder: Callable[[], None] | None = None
_finetuned_lock = threading.Lock()


def set_finetuned(specs: dict[str, ModelSpec]) -> None:
    with _finetuned_lock:
        FINETUNED.clear()
        FINETUNED.update(specs)


def set_finder(finder: Callable[[], None] | None) -> None:
    """What looks for fine-tuned models again when a name is not known (the composition root sets it)."""
    global _finder
    _finder = finder


def finetuned_repo(name: str) -> str:
    """The hub repo of a fine-tuned model: finetuned/<base>.<label> (a repo id has no '+'; neither
    a catalogue name nor a label has a '.')."""
    return f"finetuned/{name.replace('+', '.', 1)}"


def finetuned_spec(name: str, base: ModelSpec, size_gb: float) -> ModelSpec:
    """A fine-tuned model: its base's kind, rates and capabilities, its own repo."""
    return replace(
        base, name=name, repo=finetuned_repo(name), hub_format="adapter", aliases=(), base=base.name,
        approx_size_gb=size_gb,
    )  # fmt: skip


def mbd_for(spec: ModelSpec) -> ModelSpec | None:
    """The Multi-Band Diffusion decoder for a generation model's tokens (one per EnCodec sample rate),
    if there is one: MusicGen's 32 kHz has one, AudioGen's 16 kHz none."""
    if spec.kind not in ("musicgen", "musicgen-melody", "musicgen-style"):
        return None
    return next((s for s in CATALOGUE.values() if s.kind == "mbd" and s.sample_rate == spec.sample_rate), None)


def all_specs() -> list[ModelSpec]:
    return [*CATALOGUE.values(), *FINETUNED.values()]


def resolve_name(name: str) -> str:
    """The catalogue name for a name or an alias (any case); raises UnknownModel."""
    if name in CATALOGUE or name in FINETUNED:
        return name
    key = name.strip().lower()
    if key in CATALOGUE or key in FINETUNED:
        return key
    if key in ALIASES:
        return ALIASES[key]
    if "+" in key and _finder is not None:
        _finder()
        if key in FINETUNED:
            return key
    raise UnknownModel(name)


def get_spec(name: str) -> ModelSpec:
    """The catalogue entry for a name or an alias; raises UnknownModel."""
    key = resolve_name(name)
    spec = CATALOGUE.get(key) or FINETUNED.get(key)
    if spec is None:
        raise UnknownModel(name)
    return spec

