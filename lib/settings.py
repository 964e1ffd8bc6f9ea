"""The one place that reads the environment (prefix AUDIOCRAFT_). CLI flags override it."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lib.catalogue import MBD_MAX_STEPS


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "resource-audiocraft"


def _default_hub_cache() -> Path:
    # Mirrors huggingface_hub's own resolution (HF_HUB_CACHE, then HF_HOME/hub) without importing it,
    # so a model downloaded with transformers is found and never fetched twice.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(hf_home) / "hub"


Precision = Literal["auto", "float32", "bfloat16", "float16", "int8", "int8-dynamic"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIOCRAFT_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the server binds to")
    port: int = Field(7862, ge=1, le=65535, description="Port of the REST API")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Jobs, artifacts, content, logs")
    models_dir: Path | None = Field(
        None, description="Hub-cache-layout directory holding the weights; default: the Hugging Face hub cache"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run: auto (CUDA when present), cpu, cuda"
    )
    dtype: Precision = Field(
        "auto",
        description=(
            "Language-model precision: auto, float32, bfloat16, float16, int8 or int8-dynamic. "
            "auto: int8-dynamic on a CPU where torch has its x86 quantized engine (x86 builds), int8 weight-only "
            "on other CPUs (ARM builds have only qnnpack), float16 on CUDA (server/models/device.py "
            "default_precision). float32 is bitwise transformers' decoder on every CPU kind; int8-dynamic takes "
            "7-bit activations on CPUs without VNNI (AVX2 only). The int8 kinds are CPU only, float16 CUDA only. "
            "Fidelity and speed of each, per CPU: docs/benchmarks.md"
        ),
    )
    model_dtype: str = Field(
        "",
        pattern=r"^\s*([\w.-]+\s*=\s*(auto|float32|bfloat16|float16|int8|int8-dynamic)\s*(,\s*|$))*$",
        description="Per-model precision over `dtype`: comma-separated name=precision, e.g. musicgen-large=bfloat16",
    )
    # Model management (server/models/registry.py, server/jobs/downloads.py).
    auto_download: bool = Field(
        True, description="A request for a model that is not installed downloads it first (off: 409 with the command)"
    )
    download_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Seconds the hub gets to answer a download's listing and metadata requests; file transfers "
            "use huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT between reads"
        ),
    )
    memory_budget_gb: float = Field(
        0.0,
        ge=0,
        description=(
            "Memory all loaded models may hold together; loading past it unloads the least recently used "
            "idle model first. 0 = three quarters of the RAM (or of the GPU's memory on CUDA)"
        ),
    )
    model_idle_timeout_s: float = Field(1800.0, ge=0, description="Unload a model nobody used for this long; 0 = never")
    runtime: Literal["auto", "docker", "native"] = Field(
        "auto", description="How the CLI runs the server: docker, native, or auto (docker when an engine answers)"
    )

    # The docker runtime (cli/runtime/docker.py).
    image: str = Field(
        "resource-audiocraft:latest",
        description=(
            "Docker runtime: the server image; `manage install` builds it, or pulls a registry tag (`ghcr.io/...`)"
        ),
    )
    base_image: str | None = Field(
        None,
        description=(
            "Docker runtime: BASE_IMAGE of the build, any Debian-like image with python3.11 and venv; "
            "default: the Dockerfile's (python:3.11-slim-bookworm)"
        ),
    )
    torch: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda|cu[0-9]+|rocm[0-9.]+)$",
        description=(
            "Docker runtime: torch in the image: cpu, cuda (PyPI's CUDA build), cuNNN (PyTorch's index); "
            "auto = cuda when the engine has the NVIDIA runtime, else cpu"
        ),
    )
    container_name: str = Field(
        "audiocraft",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        description="Docker runtime: the container's name; its volumes are `<name>-models` and `<name>-data`",
    )
    models_readonly: bool = Field(False, description="Docker runtime: mount AUDIOCRAFT_MODELS_DIR read-only")

    default_music_model: str = Field("musicgen-small", description="Music requests that name no model (an alias works)")
    default_sound_model: str = Field("audiogen-medium", description="Sound requests that name no model")
    default_melody_model: str = Field("musicgen-melody", description="Melody requests that name no model")
    default_codec_model: str = Field("encodec-24khz", description="Encode requests that name no model")

    # AudioSeal's watermark on generated audio (server/engine/watermark.py).
    watermark: Literal["never", "request", "always"] = Field(
        "request",
        description=(
            "Watermark generated audio with AudioSeal: request (when a request says watermark: true), always "
            "(every generation; a request cannot turn it off), never (watermark: true is refused with 422)"
        ),
    )
    watermark_message: int = Field(
        0, ge=0, le=65535, description="The 16-bit message AudioSeal embeds in watermarked audio (0 to 65535)"
    )

    max_duration_s: float = Field(300.0, gt=0, description="Longest audio one request may ask for")
    musicgen_stride_s: float = Field(
        18.0,
        gt=0,
        le=30,
        description="Long-form MusicGen (past its 30 s window): new seconds per window; the rest of the "
        "window is the previous audio's tail (12 s by default)",
    )
    audiogen_stride_s: float = Field(
        6.0,
        gt=0,
        le=10,
        description="Long-form AudioGen (past its 10 s window): new seconds per window (the rest: 4 s of context)",
    )
    mbd_steps: int = Field(
        20,
        ge=1,
        le=MBD_MAX_STEPS,
        description='Multi-Band Diffusion (`decoder: "mbd"`): denoising steps of each band when a request '
        "names none (AudioCraft's default: 20; fewer is faster and noisier)",
    )
    codec_batch: bool = Field(
        False,
        description="Decode the EnCodec audio of requests that finish on the same step as one batch (faster under "
        "load; a request's audio then equals its solo decode to float rounding, not bit for bit, so the same seed "
        "can give audio that differs in the last bit with what finished beside it)",
    )
    max_prompt_chars: int = Field(2000, ge=1, description="Longest text prompt")
    max_upload_mb: float = Field(
        100.0,
        gt=0,
        description="Largest accepted request body, counted as it arrives (chunked uploads too); past it: 413",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest pause between two reads of a request body; past it the answer is 408 and the "
        "connection is closed",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time a client gets to send a request's headers once it has started; past it the "
        "connection is closed (with 408)",
    )
    max_decode_samples: int = Field(
        345_600_000,
        ge=1,
        description="Most samples one POST /api/decode may write: frames x channels at the output rate "
        "(the default is an hour of 48 kHz stereo, 1.4 GB as 32-bit wav). Past it the decode is refused "
        "with 422 before any work",
    )
    max_mix_tracks: int = Field(16, ge=1, le=256, description="Most tracks one POST /api/mix may combine")
    max_mix_duration_s: float = Field(
        600.0,
        gt=0,
        description="Longest mix one POST /api/mix may make, and the longest track it reads (a longer one is "
        "refused with 422: trim it first)",
    )
    queue_depth: int = Field(64, ge=1, description="Queued jobs before new ones get 429")
    max_batch: int = Field(4, ge=1, description="Requests decoded together in one batch")
    stop_timeout_s: float = Field(
        30.0, ge=0, description="On stop, running work gets this long to finish; the rest runs again at next start"
    )
    job_retention_h: float = Field(168.0, gt=0, description="Finished jobs and their audio are kept this long")
    min_free_disk_mb: float = Field(
        100.0,
        ge=0,
        description="New work is refused (507) while the data dir's disk has less free space than this; "
        "it is taken again as soon as there is room. 0 = no floor",
    )
    torch_threads: int = Field(
        0, ge=0, description="Threads for torch; 0 = one per usable core (affinity and cgroup CPU quota)"
    )
    finetune_threads: int = Field(
        0,
        ge=0,
        description="Threads of a fine-tune job's training process; 0 = the usable cores but one (at least one), "
        "so generation and /health keep a core",
    )

    # Past one machine (server/jobs/cluster/): the queue on Redis, shared by API nodes and workers.
    queue_url: str = Field(
        "",
        pattern=r"^$|^(redis|rediss|unix)://",
        description=(
            "The job queue: empty = SQLite under data_dir (one process, nothing else to run); "
            "redis://host:6379/0 = Redis, shared by API nodes and workers (`serve --role`)"
        ),
    )
    role: Literal["all", "api", "worker"] = Field(
        "all",
        description=(
            "What `serve` runs: all (the API and the lanes in one process); api (the API only: no model, "
            "no torch); worker (the lanes, with /health and /metrics). api and worker need queue_url"
        ),
    )
    artifacts_dir: Path | None = Field(
        None,
        description=(
            "Job audio and inputs; default data_dir/artifacts. API nodes and workers on several machines "
            "share it (a shared volume or NFS)"
        ),
    )
    queue_visibility_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Redis queue: a job whose worker sent no heartbeat for this long is claimed by another worker "
            "and runs again with its seed"
        ),
    )
    worker_id: str = Field(
        "",
        pattern=r"^[\w.-]*$",
        description=(
            "Redis queue: this worker's name in the consumer group; default host-pid. A stable name lets a "
            "restarted worker take back its own unfinished jobs at once"
        ),
    )

    api_key: str | None = Field(None, description="When set, requests must send it as a Bearer token")
    allow_unauthenticated: bool = Field(
        False,
        description="Serve an address beyond loopback without AUDIOCRAFT_API_KEY (else the server refuses to start)",
    )
    allowed_hosts: str = Field(
        "",
        description="Host names the API answers to besides localhost, loopback and IP addresses and the bound "
        "host (comma-separated; `*` = any): a name that reaches it over the network. Others get 403 (DNS rebinding)",
    )
    allowed_origins: str = Field(
        "",
        description="Web origins (`scheme://host[:port]`, comma-separated; `*` = any page) whose pages may call "
        "the API: they get CORS headers and may send POST and DELETE; a request from any other site gets 403",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The server's log level: debug, info, warning or error (any case)"
    )

    # Enum-like settings take any case (the platform's defaults say AUDIOCRAFT_LOG_LEVEL=INFO).
    @field_validator("device", "dtype", "model_dtype", "runtime", "torch", "log_level", "role", mode="before")
    @classmethod
    def _any_case(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _roles_share_a_queue(self) -> Settings:
        if self.role != "all" and not self.queue_url:
            raise ValueError(
                f"role {self.role!r} shares the job queue with other processes: set queue_url "
                "(AUDIOCRAFT_QUEUE_URL=redis://host:6379/0), or run role 'all'"
            )
        return self

    def stride_s(self, kind: str) -> float:
        """New seconds per window of long-form generation, for a model kind."""
        return self.audiogen_stride_s if kind == "audiogen" else self.musicgen_stride_s

    def dtype_for(self, model: str) -> str:
        """The precision setting for one model: its model_dtype entry, else dtype."""
        from lib.catalogue import ALIASES

        for item in self.model_dtype.split(","):
            name, _, value = item.partition("=")
            if ALIASES.get(name.strip(), name.strip()) == model and value.strip():
                return value.strip()
        return self.dtype

    @property
    def artifacts(self) -> Path:
        return self.artifacts_dir if self.artifacts_dir is not None else self.data_dir / "artifacts"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)

    @property
    def allowed_host_names(self) -> list[str]:
        return _items(self.allowed_hosts)

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.rstrip("/") for o in _items(self.allowed_origins)]

    def unsafe_bind(self) -> str | None:
        """Why the server must not start as set: an address beyond loopback and no API key (nor the
        explicit opt-out). UNSAFE_BIND_HINT says what to do."""
        if self.api_key or self.allow_unauthenticated or is_loopback(self.host):
            return None
        return f"refusing to serve {self.host} without an API key: anyone who can reach it could use it"

    @property
    def hub_cache(self) -> Path:
        return self.models_dir if self.models_dir is not None else _default_hub_cache()

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


UNSAFE_BIND_HINT = (
    "set AUDIOCRAFT_API_KEY=<a secret> (clients send 'Authorization: Bearer <secret>'), bind 127.0.0.1 "
    "(AUDIOCRAFT_HOST), or set AUDIOCRAFT_ALLOW_UNAUTHENTICATED=true to serve the network without a key"
)


def _items(text: str) -> list[str]:
    return [item.strip().lower() for item in text.split(",") if item.strip()]


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only: localhost, 127.0.0.0/8, ::1, or a name that
    resolves to nothing else."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with non-None overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
