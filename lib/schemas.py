"""Request and response schemas, shared by the server (validation, OpenAPI) and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StrictBool,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lib.catalogue import MBD_MAX_STEPS
from lib.errors import Invalid, ServiceError

AudioFormat = Literal["wav", "flac", "mp3", "ogg"]
# A generation may also be sent as bare PCM, which only a stream carries (a file needs a header);
# the formats a stream can carry (server/audio/outstream.py: flac needs to seek back at its end).
GenerationFormat = Literal["wav", "flac", "mp3", "ogg", "pcm"]
StreamFormat = Literal["wav", "pcm", "mp3", "ogg"]
Normalize = Literal["loudness", "peak", "none"]
MAX_SEED = 2**63 - 1
# The only rates MPEG audio layer III defines (libsndfile/LAME refuses others). Defined here so the
# CLI validates without importing the server; server.audio.encode uses this same tuple.
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000

# The validation context: the settings that request checks depend on, by their names in lib/settings.py
# (server/services.py Services.context gives their values; without one, the settings' defaults hold).
# The OpenAPI document is filled from the same context (each schema's `document`), so it states the
# limits of the server that serves it.
CONTEXT_SETTINGS = MAX_DURATION_S, MAX_PROMPT_CHARS, DEFAULT_CODEC_MODEL, MAX_MIX_TRACKS, MAX_MIX_DURATION_S = (
    "max_duration_s",
    "max_prompt_chars",
    "default_codec_model",
    "max_mix_tracks",
    "max_mix_duration_s",
)


def setting(context: Mapping[str, Any] | None, key: str) -> Any:
    if context and key in context:
        return context[key]
    from lib.settings import Settings

    return Settings.model_fields[key].default


def _unless(field: str, others: list, then: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema: the properties in `then` hold unless `field` is one of `others` (or absent). An
    implication written as anyOf, without if/then: a rule that schema-driven generators can build."""
    return {"anyOf": [{"properties": {field: {"enum": others}}}, {"properties": then}]}


class RequestSchema(BaseModel):
    """A request schema. JSON's own types stay apart, as the OpenAPI document has them: true is not 1
    and 0 is not false (pydantic's lax mode takes one for the other). Strings stay lax: a form field is
    a string."""

    @field_validator("*", mode="before")
    @classmethod
    def _bool_is_not_a_number(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, int | float) and info.field_name is not None:
            wants_bool = cls.model_fields[info.field_name].annotation in (bool, bool | None)
            if wants_bool and not isinstance(v, bool):
                raise ValueError("must be true or false")
            if isinstance(v, bool) and not wants_bool:
                raise ValueError("must not be true or false")
        return v


def _other(literal: Any, value: str) -> list[str]:
    return [v for v in get_args(literal) if v != value]


# Every request schema: unknown fields are refused, and so are numbers that are not finite (JSON's
# 1e309 parses as inf; NaN and Infinity are JSON5 that Python's parsers accept).
REQUEST_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def _models_for(capability: str) -> list[str]:
    """The names and aliases of the catalogue models that can do `capability` (the `model` enum)."""
    from lib.catalogue import CATALOGUE

    return [n for spec in CATALOGUE.values() if capability in spec.capabilities for n in (spec.name, *spec.aliases)]


class SampleOptions(RequestSchema):
    """How the samples are delivered: container, rate, depth."""

    model_config = ConfigDict(**REQUEST_CONFIG, populate_by_name=True)

    format: AudioFormat = Field("wav", description="Container and codec of the answer")
    sample_rate: int | Literal["native"] = Field(
        44100, description="Output sample rate in Hz, or 'native' for the model's own rate"
    )
    bit_depth: Literal[16, 24, 32] = Field(16, description="wav/flac sample depth; 32 means float (wav only)")

    # Combinations the codecs cannot write are refused here, as a 422 naming the field and what works,
    # rather than failing in the encoder after the audio has been generated. Field validators (format
    # comes first, so it is in info.data) so the answer names bit_depth or sample_rate, not the body.
    @field_validator("sample_rate")
    @classmethod
    def _rate_fits(cls, v: int | str, info: ValidationInfo) -> int | str:
        if isinstance(v, int) and not MIN_SAMPLE_RATE <= v <= MAX_SAMPLE_RATE:
            raise ValueError(f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, or 'native'")
        if info.data.get("format") == "mp3" and isinstance(v, int) and v not in MP3_SAMPLE_RATES:
            rates = ", ".join(str(r) for r in MP3_SAMPLE_RATES)
            raise ValueError(
                f"mp3 cannot be written at {v} Hz; it supports {rates} Hz (48000 at most). "
                "Pick one of those, or format wav, flac or ogg for other rates"
            )
        return v

    @field_validator("bit_depth")
    @classmethod
    def _depth_fits(cls, v: int, info: ValidationInfo) -> int:
        if info.data.get("format") == "flac" and v == 32:
            raise ValueError(
                "flac holds at most 24-bit integer samples; use bit_depth 16 or 24, or format wav for 32-bit float"
            )
        return v

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        """The checks of the validators, in JSON Schema, for the OpenAPI document (server/http/openapi.py
        calls it on each model's schema with the server's validation context)."""
        formats = cls.model_fields["format"].annotation
        schema["properties"]["sample_rate"] |= {"minimum": MIN_SAMPLE_RATE, "maximum": MAX_SAMPLE_RATE}
        schema.setdefault("allOf", []).extend(
            [
                _unless("format", _other(formats, "flac"), {"bit_depth": {"enum": [16, 24]}}),
                _unless("format", _other(formats, "mp3"), {"sample_rate": {"enum": [*MP3_SAMPLE_RATES, "native"]}}),
            ]
        )


class OutputOptions(SampleOptions):
    """How the audio is delivered: container, rate, depth, loudness."""

    normalize: Normalize = Field("loudness", description="loudness: -14 LUFS; peak: -1 dBFS; none: as generated")

    @property
    def file_format(self) -> AudioFormat:
        """The format of the job's stored answer: a pcm stream's job (GenerateRequest) keeps a wav file."""
        return "wav" if self.format == "pcm" else self.format


class StreamOptions(SampleOptions):
    """GET /api/jobs/{id}/stream: how the stream is sent; an option left out is the job's own (a job
    whose format cannot stream streams as wav). Streams are never normalised (that needs the end)."""

    format: StreamFormat = Field(
        "wav", description="wav (open length), pcm (bare samples; the headers give rate, channels and sample "
        "format), mp3, or ogg (Opus, 48 kHz)",
    )  # fmt: skip
    bit_depth: Literal[16, 24, 32] = Field(16, description="wav/pcm sample depth; 32 means float")


class SamplingOptions(RequestSchema):
    model_config = REQUEST_CONFIG

    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Drawn when absent; always reported")
    top_k: int = Field(250, ge=0, le=2048, description="Sample from the k most likely tokens; 0 = off")
    top_p: float = Field(0.0, ge=0.0, le=1.0, description="Nucleus sampling; 0 = off (top_k applies)")
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0 means greedy argmax")
    cfg_coef: float = Field(3.0, ge=0.0, le=30.0, description="Classifier-free guidance strength")


class GenerateRequest(OutputOptions, SamplingOptions):
    """Text to audio. Limits that depend on the server's settings come in the validation context."""

    model_config = ConfigDict(**REQUEST_CONFIG, populate_by_name=True)
    # The capability a request of this class asks of its model (the kinds of job_kinds below).
    capability: ClassVar[str | None] = None

    prompt: str = Field(
        ..., min_length=1, description="What to generate, not blank, at most the server's max_prompt_chars"
    )
    duration: float = Field(10.0, gt=0, description="Seconds of audio")
    model: str | None = Field(
        None, description="A catalogue name or an alias (small, stereo-melody-large, ...); default from settings"
    )
    async_: StrictBool = Field(False, alias="async", description="Answer 202 with the job instead of the audio")
    format: GenerationFormat = Field(
        "wav", description="Container and codec of the answer; pcm (bare samples) only with stream"
    )
    stream: StrictBool = Field(
        False,
        description="Send the audio as it is made (chunked; wav with an open length, pcm, mp3, or ogg as Opus), "
        "unnormalised; with async, answer 202 and play GET /api/jobs/{id}/stream",
    )
    watermark: StrictBool = Field(
        False,
        description="Embed AudioSeal's watermark (with the server's 16-bit message) in the audio; a server with "
        "AUDIOCRAFT_WATERMARK=always marks every generation, one with never refuses this",
    )
    decoder: Literal["encodec", "mbd"] = Field(
        "encodec",
        description="Tokens to audio: encodec (fast), or mbd, Multi-Band Diffusion (fewer artefacts, far slower; "
        "MusicGen models only, needs mbd-musicgen-32khz installed, not with stream)",
    )
    mbd_steps: int | None = Field(
        None, ge=1, le=MBD_MAX_STEPS, description="With decoder mbd: denoising steps per band; default from settings"
    )

    @model_validator(mode="after")
    def _decoder_fits(self) -> GenerateRequest:
        """A 422 naming `decoder`: MBD decodes a whole piece at once, after the last token."""
        if self.decoder == "mbd" and self.stream:
            raise Invalid(
                "decoder mbd cannot stream: Multi-Band Diffusion decodes each piece only once all its tokens exist",
                field="decoder", hint='leave stream out, or use "decoder": "encodec" to stream',
            )  # fmt: skip
        if self.mbd_steps is not None and self.decoder != "mbd":
            raise Invalid("mbd_steps applies only with decoder mbd", field="mbd_steps", hint='add "decoder": "mbd"')
        return self

    @model_validator(mode="after")
    def _streamable(self) -> GenerateRequest:
        """A 422 naming `format`: the combinations a stream, or a file, cannot carry."""
        if self.stream and self.format not in get_args(StreamFormat):
            raise Invalid(
                f"format {self.format} cannot be streamed (its file is finished by seeking back to its start)",
                field="format",
                hint="stream as wav, pcm, mp3 or ogg, or leave stream out for a flac file",
            )
        if self.format == "pcm" and not self.stream:
            raise Invalid(
                "format pcm (bare samples, no header) is sent only as a stream",
                field="format",
                hint='add "stream": true, or ask for wav',
            )
        return self

    @field_validator("prompt")
    @classmethod
    def _prompt_len(cls, v: str | None, info: ValidationInfo) -> str | None:
        limit = setting(info.context, MAX_PROMPT_CHARS)
        if v is None:  # only where the text is optional (melody, continuation)
            return v
        if not v.strip():
            raise ValueError("prompt must not be blank")
        if len(v) > limit:
            raise ValueError(f"prompt is {len(v)} characters; the limit is {limit}")
        return v

    @field_validator("duration")
    @classmethod
    def _duration_limit(cls, v: float, info: ValidationInfo) -> float:
        limit = setting(info.context, MAX_DURATION_S)
        if v > limit:
            raise ValueError(f"duration must be at most {limit:g} s")
        return v

    @model_validator(mode="after")
    def _default_duration_within_limit(self, info: ValidationInfo) -> GenerateRequest:
        """A request that leaves the duration out gets the default, or the server's limit when it is lower."""
        if "duration" not in self.model_fields_set:
            self.duration = min(self.duration, setting(info.context, MAX_DURATION_S))
        return self

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        super().document(schema, context)
        props = schema["properties"]
        limit = setting(context, MAX_DURATION_S)
        props["duration"] |= {"maximum": limit, "default": min(props["duration"]["default"], limit)}
        # Not blank: at least one character that str.strip() keeps. On the property, so it holds for
        # the string of an optional prompt and leaves its null alone.
        props["prompt"] |= {"maxLength": setting(context, MAX_PROMPT_CHARS), "pattern": r"\S"}
        schema.setdefault("allOf", []).extend(
            [
                _unless("stream", [False], {"format": {"enum": list(get_args(StreamFormat))}}),
                _unless("format", _other(GenerationFormat, "pcm"), {"stream": {"const": True}}),
            ]
        )
        # decoder mbd not with stream, and mbd_steps only with decoder mbd, are the validators' alone:
        # written into the document beside the melody and continuation rules, they made schemas that
        # schemathesis cannot generate from (test/fuzz), and a 422 naming the field says them anyway.
        if cls.capability is not None:
            props["model"]["enum"] = [*_models_for(cls.capability), None]


# audiocraft's MAGNeT.set_generation_params() defaults: what a MAGNeT request gets for what it leaves out.
MAGNET_DEFAULTS: dict[str, Any] = {
    "temperature": 3.0,
    "top_k": 0,
    "top_p": 0.9,
    "max_cfg_coef": 10.0,
    "min_cfg_coef": 1.0,
    "decoding_steps": [20, 10, 10, 10],
    "span_arrangement": "nonoverlap",
}
MAGNET_FIELDS = ("decoding_steps", "max_cfg_coef", "min_cfg_coef", "span_arrangement")


class MagnetOptions(RequestSchema):
    """The masked-decoding schedule of MAGNeT models (magnet-*, audio-magnet-*); other models refuse
    them. Left out: audiocraft's defaults (MAGNET_DEFAULTS, also for temperature, top_k and top_p)."""

    decoding_steps: list[Annotated[int, Field(ge=1, le=200)]] | None = Field(
        None, min_length=1, max_length=8,
        description="MAGNeT: decoding iterations for each codebook, one count per codebook (default 20, 10, 10, 10)",
    )  # fmt: skip
    max_cfg_coef: float | None = Field(
        None, ge=0.0, le=30.0, description="MAGNeT: guidance while everything is masked (default 10), annealed to"
    )
    min_cfg_coef: float | None = Field(
        None, ge=0.0, le=30.0, description="MAGNeT: guidance once nothing is masked (default 1)"
    )
    span_arrangement: Literal["nonoverlap", "stride1"] | None = Field(
        None, description="MAGNeT: mask whole spans of 3 frames (nonoverlap, the default) or overlapping ones"
    )


class MusicRequest(MagnetOptions, GenerateRequest):
    capability: ClassVar[str | None] = "music"

    duration: float = Field(10.0, gt=0, description="Seconds of audio (default 10)")


class SoundRequest(MagnetOptions, GenerateRequest):
    """Text to sound effect (AudioGen, audio-magnet)."""

    capability: ClassVar[str | None] = "sound"

    duration: float = Field(5.0, gt=0, description="Seconds of audio (default 5)")
    decoder: Literal["encodec", "mbd"] = Field("encodec", description="Tokens to audio: only encodec for AudioGen")

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        super().document(schema, context)
        schema["properties"]["decoder"]["enum"] = ["encodec"]

    @field_validator("decoder")
    @classmethod
    def _no_mbd(cls, v: str) -> str:
        if v == "mbd":
            raise Invalid(
                "AudioGen has no Multi-Band Diffusion decoder: AudioCraft publishes MBD for MusicGen's 32 kHz "
                "EnCodec and the 24 kHz EnCodec, none for AudioGen's 16 kHz one",
                field="decoder", hint='leave decoder out (or "encodec")',
            )  # fmt: skip
        return v


# The field naming each generation kind's input audio: the multipart file field, and the base64 JSON
# field (with `_job` and `_content` variants for references). The CLI sends these names.
INPUT_FIELDS: dict[str, str] = {"melody": "melody", "continuation": "audio", "style": "style"}
AUDIO_INPUT = "an audio file (wav, mp3, flac, ogg or m4a; any sample rate and channel count)"


def input_sources(field: str) -> tuple[str, str, str]:
    """The fields that can give a kind's input audio: the audio (upload or base64), a job, a content item."""
    return field, f"{field}_job", f"{field}_content"


# What base64.b64decode(..., validate=True) takes (server/serving/inputs.py).
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _one_source(schema: dict[str, Any], field: str, sources: tuple[str, ...] | None = None) -> None:
    """JSON Schema for server/serving/inputs.py's rules: exactly one source of the input audio is given
    (a null counts as not given; `sources`, default input_sources(field)), and the audio in JSON (`field`)
    is base64."""
    schema["properties"][field] |= {"pattern": BASE64, "contentEncoding": "base64", "contentMediaType": "audio/*"}
    names = sources or input_sources(field)
    schema["oneOf"] = [{"required": [name], "properties": {name: {"type": "string"}}} for name in names]


class MelodyRequest(GenerateRequest):
    """Music that follows a melody. The melody comes as the multipart file field `melody`, or base64
    in `melody`, or as `melody_job` (an earlier job's audio) or `melody_content` (an audio content
    item): exactly one of them."""

    capability: ClassVar[str | None] = "melody"

    prompt: str | None = Field(None, description="Text to go with the melody (optional)")
    duration: float = Field(10.0, gt=0, description="Seconds of audio (default 10)")
    melody: str | None = Field(None, description=f"The melody: {AUDIO_INPUT}, base64-encoded")
    melody_job: str | None = Field(None, description="The melody: the audio of this earlier job (its id)")
    melody_content: str | None = Field(None, description="The melody: this audio content item (its name)")
    melody_start: float | None = Field(None, ge=0, description="Seconds into the melody where it starts")
    melody_end: float | None = Field(
        None, gt=0, description="Seconds into the melody where it ends (after melody_start, within the melody)"
    )
    melody_stems: bool | None = Field(
        None,
        strict=True,
        description=(
            "Take the chroma of the melody's vocals and other stems (htdemucs separates them first), as "
            "AudioCraft does, so drums and bass do not pull it: true, false (the full mix), or unset (stems "
            "when htdemucs is installed; the job's request shows which was used)"
        ),
    )

    @model_validator(mode="after")
    def _trim_order(self) -> MelodyRequest:
        if self.melody_end is not None and self.melody_end <= (self.melody_start or 0.0):
            raise ValueError("melody_end must come after melody_start")
        return self

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        super().document(schema, context)
        _one_source(schema, INPUT_FIELDS["melody"])


# MusicGen-Style's excerpt of the style audio, in seconds: what AudioCraft trained it on, and its default.
STYLE_EXCERPT_MIN_S, STYLE_EXCERPT_MAX_S, STYLE_EXCERPT_DEFAULT_S = 1.5, 4.5, 3.0
STYLE_MAX_EVAL_Q = 6  # the published model's codebooks (n_q_out); a model with fewer says so


class StyleRequest(GenerateRequest):
    """Music in the style of an audio excerpt (MusicGen-Style), with an optional text prompt. The style
    audio comes as the multipart file field `style`, or base64 in `style`, or as `style_job` (an earlier
    job's audio) or `style_content` (an audio content item): exactly one of them. It must be at least
    `excerpt_length` long."""

    capability: ClassVar[str | None] = "style"

    prompt: str | None = Field(None, description="Text to go with the style (optional)")
    duration: float = Field(10.0, gt=0, description="Seconds of audio (default 10)")
    style: str | None = Field(None, description=f"The style audio: {AUDIO_INPUT}, base64-encoded")
    style_job: str | None = Field(None, description="The style audio: the audio of this earlier job (its id)")
    style_content: str | None = Field(None, description="The style audio: this audio content item (its name)")
    excerpt_length: float = Field(
        STYLE_EXCERPT_DEFAULT_S,
        ge=STYLE_EXCERPT_MIN_S,
        le=STYLE_EXCERPT_MAX_S,
        description=(
            f"Seconds of the style audio the model listens to ({STYLE_EXCERPT_MIN_S:g} to {STYLE_EXCERPT_MAX_S:g}, "
            f"default {STYLE_EXCERPT_DEFAULT_S:g}), from the middle or a seeded start as the model was trained"
        ),
    )
    eval_q: int | None = Field(
        None,
        ge=1,
        le=STYLE_MAX_EVAL_Q,
        description=(
            "Codebooks of the style bottleneck (1 to 6; fewer follow the style less closely); default: the "
            "model's (3). The job's request shows the one used"
        ),
    )
    cfg_coef_beta: float | None = Field(
        None,
        gt=0,
        le=20,
        description=(
            "Double classifier-free guidance for text and style together, as AudioCraft's MusicGen-Style: how "
            "much the text is pushed over the style (1 is the usual guidance; AudioCraft suggests 1 to 9, 5 "
            "with text and style). Unset: the usual guidance. It costs a third decoder row"
        ),
    )

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        super().document(schema, context)
        _one_source(schema, INPUT_FIELDS["style"])


class ContinuationRequest(GenerateRequest):
    """Continue an audio prompt. It comes as the multipart file field `audio`, or base64 in `audio`,
    or as `audio_job` (an earlier job's audio) or `audio_content` (an audio content item): exactly one."""

    capability: ClassVar[str | None] = "continuation"

    prompt: str | None = Field(None, description="Text to steer the continuation (optional)")
    duration: float = Field(10.0, gt=0, description="Seconds of new audio after the prompt (default 10)")
    audio: str | None = Field(None, description=f"The audio prompt: {AUDIO_INPUT}, base64-encoded")
    audio_job: str | None = Field(None, description="The audio prompt: the audio of this earlier job (its id)")
    audio_content: str | None = Field(None, description="The audio prompt: this audio content item (its name)")
    include_prompt: StrictBool = Field(
        True,
        description="The answer starts with the prompt (re-encoded), then the continuation; false: only the new audio",
    )

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        super().document(schema, context)
        _one_source(schema, INPUT_FIELDS["continuation"])


# -- Watermark detection: POST /api/watermark/detect -----------------------------------------------


class WatermarkDetectRequest(RequestSchema):
    """Is this audio watermarked? The audio comes as the multipart file field `audio`, or base64 in
    `audio`, or as `audio_job` (an earlier job's audio) or `audio_content` (an audio content item):
    exactly one. Any rate and channel count: each channel is read at 16 kHz on its own."""

    model_config = ConfigDict(**REQUEST_CONFIG, populate_by_name=True)

    audio: str | None = Field(None, description=f"The audio: {AUDIO_INPUT}, base64-encoded")
    audio_job: str | None = Field(None, description="The audio of this earlier job (its id)")
    audio_content: str | None = Field(None, description="This audio content item (its name)")
    model: str | None = Field(None, description="The watermark model: audioseal (the default and only one)")
    async_: StrictBool = Field(False, alias="async", description="Answer 202 with the job instead of the verdict")

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        _one_source(schema, "audio")
        schema["properties"]["model"]["enum"] = [*_models_for("watermark"), None]


class ChannelDetection(BaseModel):
    score: float = Field(description="The share of the channel's samples that carry the mark (0 to 1)")
    detected: bool = Field(description="score above the threshold")
    message: int | None = Field(None, description="The 16-bit message read from the mark (when detected)")
    message_bits: str | None = Field(None, description="The message as bits, first bit first (when detected)")


class WatermarkDetection(BaseModel):
    """POST /api/watermark/detect: AudioSeal's verdict. A channel carries the mark when more than
    `threshold` of its samples do (AudioSeal's detection probability); the audio does when any
    channel does, and its message is that of the channel with the highest score."""

    model: str
    detected: bool
    score: float = Field(description="The highest channel score (0 to 1)")
    threshold: float
    message: int | None = Field(None, description="The 16-bit message (when detected)")
    message_bits: str | None = Field(None, description="The message as bits, first bit first (when detected)")
    channels: list[ChannelDetection]
    sample_rate: int = Field(description="The audio's own rate (it is read at 16 kHz)")
    duration_s: float


# -- Mixing: POST /api/mix ---------------------------------------------------------------------------

# Where a track's audio comes from: exactly one of these (server/serving/mix.py checks it, naming the track).
TRACK_SOURCES = ("job", "content", "audio_base64", "upload")
TrackRole = Literal["music", "effect", "voice"]
DUCKED_ROLES: tuple[str, ...] = ("music",)  # lowered under the key roles when the mix has ducking
KEY_ROLES: tuple[str, ...] = ("effect", "voice")
# A bound on every time of a track, far past any mix, so that no arithmetic on it overflows; the real
# limits (the mix's length, the track's) are checked where they are known.
MAX_TRACK_TIME_S = 86400.0


class MixTrack(RequestSchema):
    """One track of a mix: its audio, from exactly one source, and where and how it plays."""

    model_config = REQUEST_CONFIG

    job: str | None = Field(None, description="The audio of this earlier job (its id): a generation, mix or decode")
    content: str | None = Field(None, description="This audio content item (its name)")
    audio_base64: str | None = Field(None, description=f"The audio: {AUDIO_INPUT}, base64-encoded")
    upload: str | None = Field(
        None, description="Multipart requests: the name of the file part that holds this track's audio"
    )
    offset_s: float = Field(0.0, ge=0, le=MAX_TRACK_TIME_S, description="Where the track starts in the mix (s)")
    gain_db: float = Field(0.0, ge=-120, le=24, description="Gain in dB; 0 = as it is")
    fade_in_s: float = Field(0.0, ge=0, le=MAX_TRACK_TIME_S, description="A linear fade-in from the track's start (s)")
    fade_out_s: float = Field(
        0.0, ge=0, le=MAX_TRACK_TIME_S, description="A linear fade-out to the track's end in the mix (s)"
    )
    trim_start_s: float = Field(
        0.0, ge=0, le=MAX_TRACK_TIME_S, description="Seconds cut from the start of the source (within it)"
    )
    trim_end_s: float | None = Field(
        None, gt=0, le=MAX_TRACK_TIME_S, description="Where in the source the track ends (s), after trim_start_s"
    )
    loop: StrictBool = Field(False, description="Repeat the (trimmed) track from its offset to the end of the mix")
    loop_crossfade_s: float = Field(
        0.05,
        ge=0,
        le=MAX_TRACK_TIME_S,
        description="With loop: each repeat overlaps the one before by this long, in an equal-power crossfade "
        "(at most half the trimmed track)",
    )
    pan: float = Field(
        0.0,
        ge=-1,
        le=1,
        description="Stereo position, -1 left to 1 right: a mono track by the constant-power law (centre -3 dB "
        "each side), a stereo one as a balance (centre as it is); ignored in a mono mix",
    )
    role: TrackRole = Field(
        "music", description="With ducking, music tracks go down while an effect or voice track sounds"
    )

    @field_validator("trim_end_s")
    @classmethod
    def _after_start(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and v <= info.data.get("trim_start_s", 0.0):
            raise ValueError("trim_end_s must come after trim_start_s")
        return v

    @model_validator(mode="after")
    def _one_source_at_most(self) -> MixTrack:
        given = [name for name in TRACK_SOURCES if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give the track's audio once, not as {' and '.join(given)}")
        return self

    def source(self) -> str | None:
        """The name of the field that gives the track's audio, if any."""
        return next((name for name in TRACK_SOURCES if getattr(self, name) is not None), None)

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        _one_source(schema, "audio_base64", TRACK_SOURCES)


class Ducking(RequestSchema):
    """Music tracks go down while an effect or voice track sounds (offline, so with look-ahead: the music is
    fully down when the effect starts)."""

    model_config = REQUEST_CONFIG

    db: float = Field(6.0, gt=0, le=60, description="How far the music goes down, in dB")
    attack_s: float = Field(
        0.05, ge=0, le=10, description="The music goes down over this long, ending where the effect starts (s)"
    )
    release_s: float = Field(0.3, ge=0, le=10, description="It comes back up over this long after the effect (s)")
    threshold_db: float = Field(
        -45.0,
        ge=-120,
        le=0,
        description="An effect or voice track sounds where its level (RMS over 10 ms blocks) is above this (dBFS)",
    )


class MixRequest(OutputOptions):
    """POST /api/mix: tracks laid out in time, summed, then normalised and encoded as a generation is.
    Multipart: `tracks` (and `ducking`) as JSON text, each uploaded file a part named by a track's `upload`."""

    model_config = ConfigDict(**REQUEST_CONFIG, populate_by_name=True)

    tracks: list[MixTrack] = Field(
        ..., min_length=1, description="The tracks, at most the server's max_mix_tracks; each from one source"
    )
    duration_s: float | None = Field(
        None, gt=0, description="Seconds of the mix (at most the server's max_mix_duration_s); default: the last end"
    )
    sample_rate: int | Literal["native"] = Field(
        44100, description="Output sample rate in Hz, or 'native': the highest rate among the tracks"
    )
    channels: Literal[1, 2] | None = Field(None, description="1 or 2; default 2 when any track is stereo or panned")
    ducking: Ducking | None = Field(None, description="Lower the music tracks under the effect and voice tracks")
    async_: StrictBool = Field(False, alias="async", description="Answer 202 with the job instead of the audio")

    @field_validator("tracks")
    @classmethod
    def _not_too_many(cls, v: list[MixTrack], info: ValidationInfo) -> list[MixTrack]:
        # Only with the server's context: a stored job is read back without one, under any setting.
        limit = (info.context or {}).get(MAX_MIX_TRACKS)
        if limit is not None and len(v) > limit:
            raise ValueError(f"{len(v)} tracks; this server mixes at most {limit} at once")
        return v

    @field_validator("duration_s")
    @classmethod
    def _duration_limit(cls, v: float | None, info: ValidationInfo) -> float | None:
        limit = (info.context or {}).get(MAX_MIX_DURATION_S)
        if v is not None and limit is not None and v > limit:
            raise ValueError(f"duration_s must be at most {limit:g} s")
        return v

    @field_validator("ducking")
    @classmethod
    def _something_to_duck(cls, v: Ducking | None, info: ValidationInfo) -> Ducking | None:
        roles = {t.role for t in info.data.get("tracks") or ()}
        if v is not None and "tracks" in info.data:
            if not roles & set(DUCKED_ROLES):
                raise ValueError("ducking lowers music tracks, and no track has role 'music'")
            if not roles & set(KEY_ROLES):
                raise ValueError("ducking lowers the music under effect or voice tracks; give one role 'effect'")
        return v

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        super().document(schema, context)
        props = schema["properties"]
        props["tracks"]["maxItems"] = setting(context, MAX_MIX_TRACKS)
        limit = setting(context, MAX_MIX_DURATION_S)
        props["duration_s"]["anyOf"] = [
            {**b, "maximum": limit} if b.get("type") == "number" else b for b in props["duration_s"]["anyOf"]
        ]


class ErrorBody(BaseModel):
    code: str = Field(..., description="Stable machine-readable code, e.g. invalid_field, model_not_installed")
    message: str
    field: str | None = None
    hint: str | None = None
    status: int | None = Field(None, description="The HTTP status this error answers with (in a job's error)")

    @classmethod
    def of(cls, exc: ServiceError) -> ErrorBody:
        return cls(status=exc.status, **exc.body())

    def as_error(self) -> ServiceError:
        """The error again, to answer a request with (a job stored before statuses were kept: 503)."""
        return ServiceError(self.message, code=self.code, status=self.status or 503, field=self.field, hint=self.hint)


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class QueueState(BaseModel):
    queued: int
    running: int
    capacity: int


class LoadedModel(BaseModel):
    name: str
    device: str
    dtype: str


class LaneSlots(BaseModel):
    capacity: int = Field(description="Jobs the lane runs at once on this worker")
    busy: int = Field(description="Jobs it runs now")
    models: list[str] = Field(default_factory=list, description="The models of the jobs it runs now")


class WorkerInfo(BaseModel):
    """What a worker says of itself with every heartbeat (the Redis queue only)."""

    name: str
    host: str
    pid: int
    device: str
    heartbeat_at: float = Field(description="Unix time of its last heartbeat")
    heartbeat_age_s: float = Field(0.0, description="Seconds since then, when this answer was made")
    loaded: list[str] = Field(default_factory=list, description="Models it holds in memory")
    installed: list[str] = Field(default_factory=list, description="Models in its model cache")
    installed_at: float = Field(0.0, description="Unix time it last looked at its model cache")
    lanes: dict[str, LaneSlots] = Field(default_factory=dict)


class WorkersReport(BaseModel):
    count: int
    busy_slots: int
    total_slots: int
    models: list[str] = Field(description="Models loaded on at least one worker")
    workers: list[WorkerInfo]

    @classmethod
    def of(cls, workers: list[WorkerInfo]) -> WorkersReport:
        return cls(
            count=len(workers),
            busy_slots=sum(s.busy for w in workers for s in w.lanes.values()),
            total_slots=sum(s.capacity for w in workers for s in w.lanes.values()),
            models=sorted({m for w in workers for m in w.loaded}),
            workers=sorted(workers, key=lambda w: w.name),
        )


class CpuReport(BaseModel):
    model: str = Field(description="The CPU's model name, with its family and model numbers")
    isa: list[str] = Field(description="The vector extensions present (AVX2, AVX-512, AVX512-VNNI, AVX512-BF16, AMX)")
    kernels: dict[str, str] = Field(
        description="The matmul kernel each precision takes on this CPU, chosen at start-up by asking the kernels"
    )
    native: dict[str, str] = Field(
        default_factory=dict,
        description="The engine's own C++ kernels (decode-step attention, the int8-dynamic step): "
        '{"kernels": "native", "level": ...} when loaded, "pending" before the first model load (with '
        '"built": "yes" or "no"), or "torch" with the "reason"',
    )


class Health(BaseModel):
    status: Literal["ok", "degraded", "starting"]
    version: str
    device: str
    uptime_s: float
    models: list[LoadedModel]
    queue: QueueState
    workers: WorkersReport | None = Field(
        None, description="The workers that share the queue (AUDIOCRAFT_QUEUE_URL); absent on the embedded queue"
    )
    cpu: CpuReport | None = Field(
        None, description="The CPU the models run on and the kernels chosen for it; absent where no models run"
    )


class ModelInfo(BaseModel):
    name: str
    aliases: list[str] = Field(
        default_factory=list, description="Other names accepted for the model (small, stereo-melody-large, ...)"
    )
    repo: str
    kind: str
    capabilities: list[str]
    installed: bool
    size_on_disk_bytes: int
    loaded: bool
    device: str | None = None
    dtype: str | None = None
    licence: str
    sample_rate: int
    channels: int
    memory_bytes: int | None = Field(None, description="Memory the loaded model holds")
    in_use: int = Field(0, description="Running jobs holding the model (it is not unloaded while > 0)")
    last_used_at: float | None = Field(None, description="When a request last used the loaded model")
    download_job: str | None = Field(None, description="The download job while one runs")
    base: str | None = Field(None, description="A fine-tuned model: the model its adapter is for")
    finetune: dict[str, Any] | None = Field(
        None, description="A fine-tuned model: its dataset, steps, first and final loss, LoRA rank and alpha"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobResult(BaseModel):
    media_type: str
    format: str
    sample_rate: int
    channels: int
    duration_s: float
    size_bytes: int
    file: str | None = Field(None, description="The answer's artifact (audio.wav, audio.ecdc, ...)")
    info: dict[str, str] = Field(
        default_factory=dict,
        description="Facts of the answer: a codec job's (its X- headers, see ENCODE_INFO); a watermarked "
        "generation's watermark (audioseal) and watermark_message; a watermark detection's verdict",
    )


class DownloadProgress(BaseModel):
    job_id: str = Field(..., description="The download job")
    bytes_done: int
    bytes_total: int = Field(..., description="0 until the hub has said how much there is")
    file: str | None = Field(None, description="The file being fetched")


class TrainingProgress(BaseModel):
    """A fine-tune job's live figures (its events carry them)."""

    step: int
    total_steps: int
    loss: float | None = None
    learning_rate: float
    seconds_per_step: float | None = None
    resumed_from: int | None = Field(None, description="The checkpoint step this run resumed from")


def parse_detail(text: str) -> DownloadProgress | TrainingProgress:
    """A job's live detail as stored (the Redis queue keeps it as JSON): a download's or a training's."""
    from pydantic import TypeAdapter

    return TypeAdapter(TrainingProgress | DownloadProgress).validate_json(text)


class DownloadRequest(BaseModel):
    """What a download job carries (kind "download")."""

    model_config = ConfigDict(extra="forbid")

    model: str


class Job(BaseModel):
    """A unit of work. Every generation is one; synchronous requests wait on theirs."""

    id: str
    kind: str = Field(..., description="music, sound, melody, continuation, ...")
    state: JobState
    model: str
    seed: int | None = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    eta_s: float | None = None
    position: int | None = Field(None, description="Place in the queue while queued (0 = next)")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorBody | None = None
    result: JobResult | None = None
    request: dict = Field(default_factory=dict)
    download: DownloadProgress | None = Field(
        None, description="Download jobs, and jobs waiting for their model to download: bytes fetched so far"
    )
    training: TrainingProgress | None = Field(None, description="Fine-tune jobs: step, loss, learning rate")


class JobAccepted(BaseModel):
    job: Job
    location: str


class JobList(BaseModel):
    jobs: list[Job]
    total: int


class JobsQuery(BaseModel):
    """The query of GET /api/jobs (other parameters are ignored)."""

    state: JobState | None = Field(None, description="Only jobs in this state")
    limit: int = Field(50, ge=1, le=1000, description="At most this many jobs, newest first")
    offset: int = Field(0, ge=0, le=10**9, description="Skip this many first")


class MusicJob(MusicRequest):
    """One item of POST /api/jobs (the body may also be a list of them)."""

    kind: Literal["music"] = "music"


class MelodyJob(MelodyRequest):
    """A melody item of POST /api/jobs (the melody as base64, melody_job or melody_content)."""

    kind: Literal["melody"]


class StyleJob(StyleRequest):
    """A style item of POST /api/jobs (the style audio as base64, style_job or style_content)."""

    kind: Literal["style"]


class ContinuationJob(ContinuationRequest):
    """A continuation item of POST /api/jobs (the prompt as base64, audio_job or audio_content)."""

    kind: Literal["continuation"]


class SoundJob(SoundRequest):
    """A sound item of POST /api/jobs."""

    kind: Literal["sound"]


def _job_kind(item: object) -> str | None:
    if isinstance(item, dict):
        return item.get("kind", "music")
    return getattr(item, "kind", None)


# One item of POST /api/jobs, told apart by `kind` (music when absent). The route parses with it.
JobItem = Annotated[
    Annotated[MusicJob, Tag("music")]
    | Annotated[SoundJob, Tag("sound")]
    | Annotated[MelodyJob, Tag("melody")]
    | Annotated[ContinuationJob, Tag("continuation")]
    | Annotated[StyleJob, Tag("style")],
    Discriminator(_job_kind),
]
JOB_KINDS: tuple[str, ...] = ("music", "sound", "melody", "continuation", "style")


class JobsRequest(RootModel[JobItem | Annotated[list[JobItem], Field(min_length=1)]]):
    """The body of POST /api/jobs: one item, by `kind` (music when absent), or a list of them."""


class JobsSubmitted(BaseModel):
    ids: list[str]
    jobs: list[Job]


# -- EnCodec: POST /api/encode and POST /api/decode --------------------------------------------

ECDC_MEDIA_TYPE = "application/octet-stream"  # an .ecdc file, as encode answers it and decode takes it

# What a bare bandwidth means: the encodec CLI's default, where the model offers it.
DEFAULT_CODEC_BANDWIDTH_KBPS = 6.0


def codec_bandwidths(model: str) -> tuple[float, ...] | None:
    """The bandwidths a catalogue codec offers; None when `model` is not a codec we know."""
    from lib.catalogue import UnknownModel, get_spec

    try:
        spec = get_spec(model)
    except UnknownModel:
        return None
    return spec.bandwidths_kbps if spec.kind == "encodec" else None


def default_bandwidth(model: str) -> float | None:
    offered = codec_bandwidths(model)
    if not offered:
        return None
    return DEFAULT_CODEC_BANDWIDTH_KBPS if DEFAULT_CODEC_BANDWIDTH_KBPS in offered else offered[0]


class EncodeOptions(RequestSchema):
    """Options of POST /api/encode: form fields with the upload, or query parameters with a raw body.

    The default model comes in the validation context (`default_codec_model`, from settings).
    """

    model_config = REQUEST_CONFIG

    model: str | None = Field(None, description="encodec-24khz (default), encodec-48khz or encodec-32khz")
    bandwidth_kbps: float | None = Field(
        None,
        gt=0,
        description="Target bandwidth; one the model offers (24 kHz: 1.5, 3, 6, 12, 24; 48 kHz: 3, 6, 12, 24; "
        "32 kHz: 2.2). Default 6, or 2.2 for encodec-32khz",
    )
    format: Literal["ecdc", "json"] = Field(
        "ecdc", description="ecdc: the .ecdc bitstream; json: the codes as integer arrays, with the frame rate"
    )

    @field_validator("bandwidth_kbps")
    @classmethod
    def _offered(cls, v: float | None, info: ValidationInfo) -> float | None:
        model = info.data.get("model") or (info.context or {}).get(DEFAULT_CODEC_MODEL)
        offered = codec_bandwidths(model) if model else None
        if v is not None and offered and v not in offered:
            valid = ", ".join(f"{b:g}" for b in offered)
            raise ValueError(f"{model} does not offer {v:g} kbps; valid values: {valid}")
        return v

    @classmethod
    def document(cls, schema: dict[str, Any], context: Mapping[str, Any]) -> None:
        """The codec models, and the bandwidths each offers (the default model's when none is named)."""
        from lib.catalogue import CATALOGUE

        codecs = [spec for spec in CATALOGUE.values() if "codec" in spec.capabilities]
        names = {spec.name: [spec.name, *spec.aliases] for spec in codecs}
        every = [n for group in names.values() for n in group]
        schema["properties"]["model"]["enum"] = [*every, None]
        offered = sorted({b for spec in codecs for b in spec.bandwidths_kbps})
        schema["properties"]["bandwidth_kbps"]["enum"] = [*offered, None]  # which model's: the rules below
        rules = [
            _unless("model", [n for n in every if n not in names[s.name]] + [None], _bandwidths(s.bandwidths_kbps))
            for s in codecs
        ]
        default = codec_bandwidths(setting(context, DEFAULT_CODEC_MODEL))
        if default:  # a model named, or the default's bandwidths
            named = {"required": ["model"], "properties": {"model": {"type": "string"}}}
            rules.append({"anyOf": [named, {"properties": _bandwidths(default)}]})
        schema.setdefault("allOf", []).extend(rules)


def _bandwidths(offered: tuple[float, ...]) -> dict[str, Any]:
    return {"bandwidth_kbps": {"enum": [*offered, None]}}


class DecodeOptions(OutputOptions):
    """Options of POST /api/decode: the generation output options, with codec defaults.

    A codec gives back what went in: by default its own sample rate and no normalisation.
    """

    model_config = ConfigDict(**REQUEST_CONFIG, populate_by_name=True)

    sample_rate: int | Literal["native"] = Field(
        "native", description="Output sample rate in Hz, or 'native' (the default) for the codec's own rate"
    )
    normalize: Normalize = Field(
        "none",
        description="none (default): as decoded; peak: -1 dBFS; loudness: -14 LUFS (files up to the "
        "server's max duration)",
    )


class EncodeJob(EncodeOptions):
    """What an encode job carries: the options, resolved (model and bandwidth), and the upload's name."""

    filename: str | None = Field(None, description="The upload's file name: its extension hints the format")


class DecodeJob(DecodeOptions):
    """What a decode job carries."""

    filename: str | None = None


# The facts a codec answer reports, in its headers (X-Bandwidth-Kbps for bandwidth_kbps) and in its
# job's result.info. The route and its OpenAPI document both read these tables.
ENCODE_INFO: dict[str, str] = {
    "model": "The codec model",
    "bandwidth_kbps": "The bandwidth encoded at",
    "codebooks": "Codebooks per frame",
    "sample_rate": "The codec's sample rate",
    "frame_rate": "Frames per second",
    "audio_length": "Samples per channel in the encoded audio",
    "duration_s": "Seconds of audio",
    "input_bytes": "Size of the upload",
    "output_bytes": "Size of this answer",
    "ecdc_bytes": "Size of the .ecdc (also for JSON answers)",
    "compression_ratio": "16-bit PCM of the input against the .ecdc",
    "bitrate_kbps": "The .ecdc's bits per second of audio / 1000",
    "encode_time_s": "Seconds the encoding took",
}
DECODE_INFO: dict[str, str] = {
    "model": "The codec model the .ecdc names",
    "sample_rate": "Sample rate of the answer",
    "channels": "Channels of the answer",
    "audio_length": "Samples per channel",
    "duration_s": "Seconds of audio",
    "codebooks": "Codebooks per frame in the .ecdc",
}
CODEC_INFO = {"encode": ENCODE_INFO, "decode": DECODE_INFO}


def codec_info(kind: str, **facts: object) -> dict[str, str]:
    """A codec job's facts, exactly the table's keys."""
    if set(facts) != set(CODEC_INFO[kind]):
        raise ValueError(f"{kind} facts {sorted(facts)} are not {sorted(CODEC_INFO[kind])}")
    return {key: str(value) for key, value in facts.items()}


def info_header(key: str) -> str:
    """bandwidth_kbps -> X-Bandwidth-Kbps."""
    return "X-" + "-".join(word.capitalize() for word in key.split("_"))


class CodecSegment(BaseModel):
    offset: int = Field(..., description="First sample of the segment")
    length: int = Field(..., description="Samples in the segment")
    scale: float | None = Field(None, description="The segment's RMS scale (models that normalise)")
    codes: list[list[int]] = Field(..., description="One array per codebook, one code per frame")


class CodecCodes(BaseModel):
    """POST /api/encode with format=json."""

    model: str
    header_model: str = Field(..., description="The model name an .ecdc header would carry")
    sample_rate: int
    channels: int
    frame_rate: float = Field(..., description="Frames per second")
    bandwidth_kbps: float
    num_codebooks: int
    codebook_size: int
    audio_length: int = Field(..., description="Samples at the model's rate")
    duration_s: float
    segment_length: int | None = Field(None, description="Samples per segment; null when the audio is one segment")
    segment_stride: int | None = None
    segments: list[CodecSegment]
