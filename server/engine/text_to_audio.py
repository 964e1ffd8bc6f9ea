"""Text (and melody, and audio prompt) to audio on a MusicGen-family model, at any length. Knows
nothing of HTTP or jobs.

Audio of any length, and audio prompts, come by sliding-window continuation (as AudioCraft does).

A model makes at most one window of audio per decode (MusicGen 30 s, AudioGen 10 s). Longer audio
comes window by window: the first window starts from the audio prompt (if any), and each next one
keeps the tail of what exists as its decoder prefix (MusicGen: 12 s) and adds the rest (18 s: the
stride). A melody is cut per window from the window's start time, wrapping around when it is
shorter than the output. Each window is one DecodeRequest, so a long request runs inside the same
continuous batch as every other request, window after window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from server.engine import decode, delay
from server.engine.chroma import chroma, window_samples
from server.engine.decode import DecodeRequest, audio_to_codes
from server.engine.errors import UnsupportedRequest
from server.engine.live import LiveAudio
from server.models.loaded import TextToAudioLM

_SEED_STEP = 0x9E3779B97F4A7C15  # window i > 0 draws from seed + i * this (mod 2^63): unrelated streams
# A streamed request decodes its final frames once this many have gathered: the first audio after
# 0.5 s of frames (at 50 Hz), so that it starts early, then 2 s at a time, because the codec's
# streaming decoder costs more per frame on short chunks (docs/benchmarks.md, streaming).
LIVE_FIRST_CHUNK_FRAMES = 25
LIVE_CHUNK_FRAMES = 100


@dataclass(frozen=True)
class Window:
    start_frame: int  # where the window starts on the whole timeline (its prefix included)
    context_frames: int  # frames it starts from: the audio prompt's or the previous windows' tail
    new_frames: int

    @property
    def n_frames(self) -> int:
        return self.context_frames + self.new_frames


def plan_windows(total_frames: int, prompt_frames: int, window_frames: int, stride_frames: int) -> list[Window]:
    """The windows that take a timeline holding `prompt_frames` to `total_frames`.

    Each window adds as much as fits beside a prefix of at most window - stride frames (the first
    window after an empty start adds a whole window); the prefix then takes whatever room is left,
    so a short last step keeps more context."""
    if not 0 < stride_frames <= window_frames:
        raise ValueError(f"the stride ({stride_frames} frames) must be within the window ({window_frames})")
    keep = window_frames - stride_frames
    windows: list[Window] = []
    have = prompt_frames
    while have < total_frames:
        new = min(total_frames - have, window_frames - min(have, keep))
        context = min(have, window_frames - new)
        windows.append(Window(have - context, context, new))
        have += new
    return windows


def window_seed(seed: int, index: int) -> int:
    return seed if index == 0 else (seed + index * _SEED_STEP) % (2**63)


@dataclass(frozen=True)
class AudioRequest:
    """One generation, as the engine sees it: text, and optionally a melody or an audio prompt."""

    prompt: str  # "" = no text
    duration_s: float  # seconds of new audio
    seed: int
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0
    melody: np.ndarray | None = None  # mono float32 [samples] at the model's rate
    prompt_audio: np.ndarray | None = None  # float32 [channels, samples] at the model's rate and channels
    include_prompt: bool = True  # the answer starts with the (re-decoded) audio prompt
    decoder: str = "encodec"  # or "mbd": Multi-Band Diffusion (LongForm's decode_piece)
    mbd_steps: int | None = None  # with mbd: denoising steps per band (None: the settings')
    style: np.ndarray | None = None  # MusicGen-Style: mono float32 [samples] at the model's rate
    style_excerpt_s: float | None = None  # the excerpt's length (None: the model's)
    style_eval_q: int | None = None  # codebooks of its bottleneck (None: the model's)
    cfg_coef_beta: float | None = None  # MusicGen-Style's double guidance (None: the usual kind)


@dataclass
class Waveform:
    audio: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    seed: int
    info: dict[str, str] = field(default_factory=dict)  # facts of how it was made (a style's excerpt)

    @property
    def duration_s(self) -> float:
        return self.audio.shape[-1] / self.sample_rate


# (codes [K, n_frames], first frame, end frame, piece index) -> the audio [channels, samples] of those frames.
PieceDecoder = Callable[[torch.Tensor, int, int, int], torch.Tensor]


class LongForm:
    """One request's windows: hands out each window's DecodeRequest, collects its codes, and in the
    end decodes the whole timeline once (so there are no seams from separate codec passes).
    decode_piece: how a piece of the timeline becomes audio (default EnCodec; MBD: server/engine/mbd/)."""

    def __init__(
        self, lm: TextToAudioLM, item: AudioRequest, stride_s: float, decode_piece: PieceDecoder | None = None
    ):
        window_s = lm.spec.window_s
        if window_s is None:
            raise UnsupportedRequest(f"{lm.spec.name} does not generate audio", field="model")
        self.lm, self.item = lm, item
        fr = lm.frame_rate_hz
        self.hop = round(lm.sample_rate / fr)
        self.prompt_codes = self._prompt_codes(item.prompt_audio)
        n_prompt = 0 if self.prompt_codes is None else self.prompt_codes.shape[1]
        self.n_prompt = n_prompt
        self.total_frames = n_prompt + max(1, math.ceil(item.duration_s * fr - 1e-9))
        window = round(window_s * fr)
        stride = max(1, round(stride_s * fr))
        delays = delay.codebook_delays(lm.num_codebooks, lm.stereo)
        self.delays = delays
        self.style = self._style() if lm.styled else None
        if lm.melody or self.style is not None:
            # A melody or style model's conditioning takes decoder positions too: the window gives way to it.
            audio = lm.model.config.chroma_length if lm.melody else self.style.states.shape[0]
            prefix = audio + len(lm.tokenizer(item.prompt).input_ids)
            room = lm.fast_lm().max_positions - prefix - int(delays.max())
            if room < 2:
                raise UnsupportedRequest(
                    f"the text prompt leaves no room to generate on {lm.spec.name}",
                    hint="use a shorter text prompt", field="prompt",
                )  # fmt: skip
            window = min(window, room)
        stride = min(stride, window)
        self.window_frames = window
        self.windows = plan_windows(self.total_frames, n_prompt, window, stride)
        self.codes = torch.zeros((lm.num_codebooks, self.total_frames), dtype=torch.long)
        if self.prompt_codes is not None:
            self.codes[:, :n_prompt] = self.prompt_codes.cpu()
        # LM steps each window runs (its prefill counts as one): the unit of progress.
        self.window_steps = [delay.num_steps(w.n_frames, delays) - w.context_frames for w in self.windows]
        self.index = 0
        self.have = n_prompt  # frames of the timeline that are final
        # The codec passes (decode.piece_bounds), decoded as soon as their frames and context are final,
        # so a long request's audio comes piece by piece between windows, not all at the end.
        self._pieces = decode.piece_bounds(self.total_frames)
        self._decode_piece = decode_piece
        self._audio: list[torch.Tensor] = []
        # Streamed (live()): the audio as it is decoded, and what take_audio() has not handed out yet.
        self.live: LiveAudio | None = None
        self._live_audio: list[np.ndarray] = []
        self._untaken = 0
        # What marks the answer's audio (a watermark), if anything: the whole answer at once, or each
        # streamed chunk as it is decoded, so that what is streamed is what is kept.
        self.mark: Callable[[np.ndarray], np.ndarray] | None = None

    def _style(self):
        """The request's style condition, once for all its windows (AudioCraft conditions every
        window of a long generation on the same style audio)."""
        from server.engine.style import condition

        settings = self.lm.style_settings
        item = self.item
        eval_q = item.style_eval_q or settings.eval_q
        if eval_q > settings.n_q_out:
            raise UnsupportedRequest(
                f"{self.lm.spec.name}'s style bottleneck has {settings.n_q_out} codebooks; eval_q {eval_q} is more",
                field="eval_q", hint=f"use eval_q 1 to {settings.n_q_out}",
            )  # fmt: skip
        excerpt_s = item.style_excerpt_s or settings.excerpt_s
        return condition(self.lm.style, self.lm.model.audio_enc_to_dec_proj, item.style, excerpt_s, eval_q, item.seed)

    def _prompt_codes(self, audio: np.ndarray | None) -> torch.Tensor | None:
        if audio is None:
            return None
        n = (audio.shape[-1] // self.hop) * self.hop  # whole frames only: the new audio follows without a gap
        if n == 0:
            raise UnsupportedRequest(
                f"the audio prompt is shorter than one frame ({1000 * self.hop / self.lm.sample_rate:g} ms)",
                hint="send a longer audio prompt", field="audio",
            )  # fmt: skip
        return audio_to_codes(self.lm, torch.from_numpy(np.ascontiguousarray(audio[:, :n])))

    # -- windows ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.index >= len(self.windows)

    def request(self) -> DecodeRequest:
        """The current window's decode request."""
        w = self.windows[self.index]
        item = self.item
        context = self.codes[:, w.start_frame : w.start_frame + w.context_frames] if w.context_frames else None
        return DecodeRequest(
            prompt=item.prompt,
            n_frames=w.n_frames,
            seed=window_seed(item.seed, self.index),
            temperature=item.temperature,
            top_k=item.top_k,
            top_p=item.top_p,
            cfg_coef=item.cfg_coef,
            prompt_codes=context,
            chroma=self._chroma(w),
            style=None if self.style is None else self.style.states,
            cfg_coef_beta=item.cfg_coef_beta,
        )

    def _chroma(self, w: Window) -> torch.Tensor | None:
        melody = self.item.melody
        if melody is None or not self.lm.melody:
            return None
        n = round(self.window_frames * self.hop)
        if len(self.windows) == 1 and self.n_prompt == 0:
            return chroma(melody[:n], self.lm.sample_rate)  # one window: the melody as given (the model repeats it)
        return chroma(window_samples(melody, w.start_frame * self.hop, n), self.lm.sample_rate)

    def accept(self, codes: torch.Tensor, decode_now: bool = True) -> None:
        """The current window's codes [K, n_frames]; moves to the next window. decode_now=False
        leaves the codec passes it made ready to the caller (pending_pieces), who may decode them
        batched with other requests'."""
        w = self.windows[self.index]
        first = w.start_frame + w.context_frames
        self.codes[:, first : w.start_frame + w.n_frames] = codes[:, w.context_frames :].cpu()
        self.index += 1
        self.have = w.start_frame + w.n_frames
        if self.live is None:
            if decode_now and self._decode_piece is None:  # EnCodec as it is ready; MBD at the end
                self._decode_ready()
            return
        self._feed(self.codes[:, self.live.frames : self.have])
        if self.have >= self.total_frames:
            self._live_audio.append(self._marked(self.live.finish()))
            self._untaken += 1

    # -- streaming ----------------------------------------------------------------------------

    def stream(self) -> None:
        """Decode the audio as its frames become final (server/engine/live.py) rather than at the end:
        an audio prompt's frames at once, each window's as stream_window hands them over. The answer
        (waveform) is then the streamed audio itself."""
        if self._decode_piece is not None:
            raise UnsupportedRequest(f"decoder {self.item.decoder} cannot stream", field="decoder")
        first, end = self._answer_span()
        self.live = LiveAudio(self.lm, first, end)
        self._feed(self.codes[:, : self.have])

    def stream_window(self, final_codes: torch.Tensor) -> None:
        """The current window's final codes from the first frame not streamed yet (DecodeBatch.
        final_codes(handle, stream_from())); decoded once enough have gathered (LIVE_*CHUNK_FRAMES)."""
        if final_codes.shape[-1] >= (LIVE_CHUNK_FRAMES if self._live_audio else LIVE_FIRST_CHUNK_FRAMES):
            self._feed(final_codes)

    def stream_from(self) -> int:
        """The current window's first frame (window-relative) that was not streamed yet."""
        assert self.live is not None
        return self.live.frames - self.windows[self.index].start_frame

    def _feed(self, codes: torch.Tensor) -> None:
        assert self.live is not None
        audio = self.live.push(codes)
        if audio.shape[-1]:
            self._live_audio.append(self._marked(audio))
            self._untaken += 1

    def _marked(self, audio: np.ndarray) -> np.ndarray:
        return self.mark(audio) if self.mark is not None and audio.shape[-1] else audio

    def take_audio(self) -> np.ndarray | None:
        """The streamed samples decoded since the last call [channels, n], or None."""
        if not self._untaken:
            return None
        parts, self._untaken = self._live_audio[-self._untaken :], 0
        return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

    def pending_pieces(self) -> list[decode.Piece]:
        """The codec passes whose frames (and context) are final and that were not decoded yet, in
        order; their audio goes to add_audio(). None when streamed (the live decoder made the audio) or
        when another decoder (MBD) makes it, at the end (waveform)."""
        if self.live is not None or self._decode_piece is not None:
            return []
        return self._ready_pieces()

    def _ready_pieces(self) -> list[decode.Piece]:
        ready = []
        for start, end in self._pieces[len(self._audio) :]:
            if self.have < self.total_frames and end + decode.DECODE_CONTEXT_FRAMES > self.have:
                break
            ready.append(decode.Piece(self.codes, start, end))
        return ready

    def add_audio(self, pieces: list[torch.Tensor]) -> None:
        """The audio of the first pending_pieces(), in their order."""
        self._audio += pieces

    def _decode_ready(self) -> None:
        if self._decode_piece is None:
            self.add_audio(decode.decode_pieces(self.lm, self.pending_pieces()))
            return
        for piece in self._ready_pieces():
            self._audio.append(self._decode_piece(piece.codes, piece.start, piece.end, len(self._audio)))

    @property
    def decodes_at_the_end(self) -> bool:
        """Its audio is decoded only by waveform(), and slowly (MBD): worth doing off the decode batch."""
        return self._decode_piece is not None

    def progress(self, steps_done: int = 0) -> tuple[int, int]:
        """(steps done, steps in all) over every window; steps_done: the current window's
        (DecodeBatch.progress minus its context frames)."""
        return sum(self.window_steps[: self.index]) + steps_done, sum(self.window_steps)

    # -- the answer ---------------------------------------------------------------------------

    def waveform(self) -> Waveform:
        """The whole timeline decoded, cut to exactly the asked duration (after the prompt, which
        leads the answer when include_prompt)."""
        lm, item = self.lm, self.item
        if self.have < self.total_frames:
            raise RuntimeError("the timeline is not complete")
        if self.live is not None:
            audio = np.concatenate(self._live_audio, axis=-1) if self._live_audio else np.zeros((lm.channels, 0))
            return Waveform(np.ascontiguousarray(audio, dtype=np.float32), lm.sample_rate, item.seed, self.facts())
        self._decode_ready()
        audio = torch.cat(self._audio, dim=-1).numpy()
        first, end = self._answer_span()
        marked = self._marked(np.ascontiguousarray(audio[:, first:end]))
        return Waveform(marked, lm.sample_rate, item.seed, self.facts())

    def facts(self) -> dict[str, str]:
        """What the answer's result says of how it was made: a style's excerpt (where it started, how
        long, the codebooks used), so the stored job shows what the model listened to."""
        if self.style is None or self.style.codes is None:
            return {}
        return {
            "style_excerpt_start_s": f"{self.style.excerpt_start_s:.3f}",
            "style_excerpt_s": f"{self.style.excerpt_s:g}",
            "style_eval_q": str(self.style.eval_q),
        }

    def _answer_span(self) -> tuple[int, int]:
        """The samples of the timeline the answer holds: [first, end)."""
        start = self.n_prompt * self.hop
        first = 0 if self.item.include_prompt else start
        return first, start + round(self.item.duration_s * self.lm.sample_rate)
