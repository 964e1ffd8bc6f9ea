"""Encode (channels, samples) float32 audio into file bytes: wav, flac, mp3, ogg (vorbis)."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import soundfile as sf

from lib.schemas import MP3_SAMPLE_RATES

AudioFormat = Literal["wav", "flac", "mp3", "ogg"]
BitDepth = Literal[16, 24, 32]

MEDIA_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
}
# With the leading dot, as pathlib's suffix and with_suffix use them.
FILE_EXTENSIONS: dict[str, str] = {
    "wav": ".wav",
    "flac": ".flac",
    "mp3": ".mp3",
    "ogg": ".ogg",
}

# MP3_SAMPLE_RATES comes from lib.schemas (which validates requests with it) and is re-exported.
__all__ = ["FILE_EXTENSIONS", "MEDIA_TYPES", "MP3_MAX_CHANNELS", "MP3_SAMPLE_RATES", "encode_audio"]
MP3_MAX_CHANNELS = 2

WAV_SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}
FLAC_SUBTYPES = {16: "PCM_16", 24: "PCM_24"}
# libsndfile's compression_level runs 0 (best) to 1 (smallest). 0.2 is LAME VBR near -V2 (~170-190
# kbps on music); 0.4 is vorbis quality 6 (~190 kbps). libsndfile's defaults land near 130 kbps,
# low for full-band generated music.
MP3_COMPRESSION_LEVEL = 0.2
OGG_COMPRESSION_LEVEL = 0.4


_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # from sndfile.h
_SF_FALSE = 0


def encode_audio(
    audio: np.ndarray,
    sample_rate: int,
    fmt: AudioFormat,
    bit_depth: BitDepth = 16,
) -> tuple[bytes, str]:
    """Encode (channels, samples) audio; return (file bytes, media type).

    wav: 16/24-bit PCM, or 32-bit float; flac: 16/24-bit PCM; mp3 and ogg ignore ``bit_depth``.
    Everything except 32-bit float wav is clipped to [-1, 1] first, so that out-of-range samples
    saturate instead of depending on each codec's overflow behaviour. Float wav keeps the samples
    exactly as given. Raises ValueError for combinations the codecs cannot hold.
    """
    if audio.ndim != 2 or audio.shape[0] < 1:
        raise ValueError(f"audio must have shape (channels, samples), got {audio.shape}")
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"format must be one of {', '.join(MEDIA_TYPES)}, got {fmt!r}")
    if bit_depth not in WAV_SUBTYPES:
        raise ValueError(f"bit_depth must be 16, 24 or 32, got {bit_depth!r}")

    audio = np.nan_to_num(audio.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if not (fmt == "wav" and bit_depth == 32):
        audio = np.clip(audio, -1.0, 1.0)

    kwargs: dict = {}
    if fmt == "wav":
        kwargs = {"format": "WAV", "subtype": WAV_SUBTYPES[bit_depth]}
    elif fmt == "flac":
        if bit_depth not in FLAC_SUBTYPES:
            raise ValueError(
                "flac holds at most 24-bit integer samples; use bit_depth 16 or 24, or wav for 32-bit float"
            )
        kwargs = {"format": "FLAC", "subtype": FLAC_SUBTYPES[bit_depth]}
    elif fmt == "mp3":
        check_mp3(audio, sample_rate)
        kwargs = {"format": "MP3", "subtype": "MPEG_LAYER_III", "compression_level": MP3_COMPRESSION_LEVEL}
    else:
        kwargs = {"format": "OGG", "subtype": "VORBIS", "compression_level": OGG_COMPRESSION_LEVEL}

    buffer = io.BytesIO()
    channels = audio.shape[0]
    with sf.SoundFile(buffer, "w", sample_rate, channels, **kwargs) as out:
        if fmt == "wav" and bit_depth == 32:
            # libsndfile stamps float files with a PEAK chunk holding the wall-clock time; without
            # it the same audio always gives the same bytes (caching, ETags, reproducibility).
            sf._snd.sf_command(out._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, _SF_FALSE)
        out.write(np.ascontiguousarray(audio.T))
    return buffer.getvalue(), MEDIA_TYPES[fmt]


def check_mp3(audio: np.ndarray, sample_rate: int) -> None:
    if sample_rate not in MP3_SAMPLE_RATES:
        rates = ", ".join(str(r) for r in MP3_SAMPLE_RATES)
        raise ValueError(
            f"mp3 cannot be written at {sample_rate} Hz; it supports {rates} Hz. "
            "Pick one of those, or use wav, flac or ogg"
        )
    if audio.shape[0] > MP3_MAX_CHANNELS:
        raise ValueError(f"mp3 holds at most 2 channels, got {audio.shape[0]}; use wav, flac or ogg")
