"""The engine's own autoregressive loop over MusicGen's weights.

Owning the loop (instead of calling generate()) is what gives each request in a batch its own
seed and sampling parameters, progress per step, cancellation between steps, streaming and
continuous batching. Greedy float32 decoding is token-identical to
MusicgenForConditionalGeneration.generate.

`DecodeBatch` is the step-able state: requests join (`add`) and leave (`remove`, or by finishing)
at any step boundary, each with its own preallocated KV cache (server/engine/fastlm.py), so a
request's tokens are the same whether it runs alone, batched, or joins a batch already running.
The job runner (server/jobs/runner.py) drives it.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field

import torch

from server.engine import delay, threads
from server.engine.codec import channels_last
from server.engine.errors import UnsupportedRequest
from server.engine.fastlm import THREAD_INVARIANT, FastLM, RequestCache
from server.engine.sampling import SamplerBatch, SamplingParams, guide, guide_double
from server.models.loaded import TextToAudioLM


@dataclass(frozen=True)
class DecodeRequest:
    prompt: str  # "" means no text: the null condition
    n_frames: int  # frames of the answer, prompt_codes included
    seed: int
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0
    # Aligned codes [K, T] the answer starts with (an audio prompt, or the previous window's tail in
    # long-form generation): the decoder's prefix, as transformers' decoder_input_ids. T < n_frames.
    prompt_codes: torch.Tensor | None = field(default=None, compare=False)
    # Melody models: the melody's one-hot chroma [frames, num_chroma]; None: no melody (transformers'
    # null melody).
    chroma: torch.Tensor | None = field(default=None, compare=False)
    # MusicGen-Style models: the style tokens [tokens, hidden] (server/engine/style.py); None: no style
    # audio (AudioCraft's empty condition, one zero token).
    style: torch.Tensor | None = field(default=None, compare=False)
    # MusicGen-Style's double classifier-free guidance (AudioCraft's cfg_coef_beta): a third row with the
    # style and no text, and uncond + cfg * (style + beta * (cond - style) - uncond). None: the usual kind.
    cfg_coef_beta: float | None = None

    @property
    def guided(self) -> bool:
        return self.cfg_coef != 1.0 or self.double_guided

    @property
    def double_guided(self) -> bool:
        return self.cfg_coef_beta is not None

    @property
    def rows(self) -> int:
        """Decoder rows: the conditional one, then (guided) the style-only one (double) and the null one."""
        return 3 if self.double_guided else 2 if self.guided else 1

    @property
    def prompt_frames(self) -> int:
        return 0 if self.prompt_codes is None else int(self.prompt_codes.shape[1])


def encode_text(lm: TextToAudioLM, prompt: str, with_null: bool) -> torch.Tensor:
    """[rows, text_len, hidden]: the prompt's encoder states, then (for guidance) the null row with
    zeroed states and mask, projected and masked exactly as transformers' generate() does (MusicGen
    projects both rows, MusicGen-Melody the prompt's before adding the null row). An empty prompt is
    the null condition itself: its mask is zero, as in AudioCraft's T5 conditioner."""
    model = lm.model
    tokens = lm.tokenizer([prompt], return_tensors="pt").to(lm.device)
    hidden = model.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    mask = tokens.attention_mask if prompt.strip() else torch.zeros_like(tokens.attention_mask)
    project = getattr(model, "enc_to_dec_proj", None)
    if project is not None and lm.melody:
        hidden = project(hidden)
    if with_null:
        hidden = torch.cat([hidden, torch.zeros_like(hidden)], dim=0)
        mask = torch.cat([mask, torch.zeros_like(mask)], dim=0)
    if project is not None and not lm.melody:
        hidden = project(hidden)
    return hidden * mask[..., None]


def melody_prefix(lm: TextToAudioLM, prompt: str, chroma: torch.Tensor | None, with_null: bool) -> torch.Tensor:
    """[rows, chroma_length + text_len, hidden]: what a melody model prepends to its decoder input,
    built as MusicgenMelodyForConditionalGeneration.generate() builds it. The chroma is projected,
    repeated (wrapping around) or cut to the model's chroma length, then the text states follow. The
    null row's melody is one-hot on bin 0; without a melody the conditional row gets that too."""
    config = lm.model.config
    text = encode_text(lm, prompt, with_null)
    length = 1 if chroma is None else chroma.shape[0]
    null = torch.zeros((1, length, config.num_chroma), device=lm.device, dtype=text.dtype)
    null[:, :, NULL_CHROMA_BIN] = 1
    audio = null if chroma is None else chroma.to(lm.device, text.dtype)[None]
    if with_null:
        audio = torch.cat([audio, null], dim=0)
    return torch.cat([chroma_states(lm.model, audio), text], dim=1)


def style_prefix(lm: TextToAudioLM, prompt: str, style: torch.Tensor | None, rows: int) -> torch.Tensor:
    """[rows, style_tokens + text_len, hidden]: what a MusicGen-Style model prepends, as AudioCraft's
    fuser does (style2music: the text prepended, then the style tokens before it). The null row is
    zeros of the same length (both conditions' masks are 0 there); double guidance's middle row
    (rows=3) keeps the style and drops the text (AudioCraft's _drop_description_condition)."""
    text = encode_text(lm, prompt, rows > 1)  # [cond, null] (or [cond])
    tokens = torch.zeros((1, text.shape[-1]), device=lm.device) if style is None else style.to(lm.device)
    audio = tokens.to(text.dtype)[None]
    if rows > 1:
        audio = torch.cat([audio] * (rows - 1) + [torch.zeros_like(audio)], dim=0)
    if rows == 3:
        text = torch.cat([text[:1], text[1:], text[1:]], dim=0)
    return torch.cat([audio, text], dim=1)


NULL_CHROMA_BIN = 0  # the null melody: one-hot on this bin (transformers' generate())


def chroma_states(model, chroma: torch.Tensor) -> torch.Tensor:
    """[rows, chroma_length, hidden]: one-hot chroma [rows, frames, num_chroma] as a melody model's
    decoder prefix takes it: projected, repeated (wrapping around) or cut to its chroma length
    (generation here, and fine-tuning: server/finetune/train.py)."""
    config = model.config
    if config.num_chroma != config.decoder.hidden_size:
        chroma = model.audio_enc_to_dec_proj(chroma)
    if chroma.shape[1] < config.chroma_length:
        chroma = chroma.repeat(1, -(-config.chroma_length // chroma.shape[1]), 1)
    return chroma[:, : config.chroma_length]


@dataclass
class _Member:
    handle: int
    request: DecodeRequest
    n_steps: int
    cache: RequestCache
    sequence: torch.Tensor  # [K, n_steps + 1] delayed codes; column 0 is the start token
    keep: torch.Tensor  # [K, n_steps + 1] bool: where a sampled token is kept (else pad)
    generator: torch.Generator
    step: int = 0  # LM steps done

    @property
    def rows(self) -> int:
        return self.cache.rows


@dataclass
class _Layout:
    """Index tensors for the current membership (rebuilt on join/leave, not per step)."""

    members: list[_Member]
    cond_rows: torch.Tensor  # [n] conditional row of each member
    null_rows: torch.Tensor  # [n] null row of each member (its conditional row when unguided)
    style_rows: torch.Tensor  # [n] double guidance's style-only row (else the conditional row)
    double: torch.Tensor  # [n, 1, 1] bool: double guidance
    beta: torch.Tensor  # [n, 1, 1] its cfg_coef_beta (1 elsewhere)
    any_double: bool
    guided: torch.Tensor  # [n, 1, 1] bool
    cfg: torch.Tensor  # [n, 1, 1]
    any_guided: bool
    cond_step: int | None  # 2: every request guided, 1: none, None: mixed
    sampler: SamplerBatch
    row_repeat: torch.Tensor  # [R] member index of each row
    generators: list[torch.Generator] = field(default_factory=list)


class DecodeBatch:
    """A running batch of decode requests on one model, advanced one LM step at a time.

    Not thread-safe: one thread calls add / remove / step / pop. A request's tokens depend only on
    the request (prompt, frames, seed, sampling): never on when it joined or who else is in the batch.
    """

    def __init__(self, lm: TextToAudioLM):
        if not isinstance(lm, TextToAudioLM):
            raise UnsupportedRequest(f"{lm.spec.name} is a codec: it does not generate", field="model")
        if lm.spec.kind == "magnet":  # non-causal: it decodes by masking (server/engine/magnet.py)
            raise UnsupportedRequest(f"{lm.spec.name} is a MAGNeT model: it decodes by masking", field="model")
        self.lm = lm
        self.fast: FastLM = lm.fast_lm()
        self.device = lm.device
        self.delays = delay.codebook_delays(lm.num_codebooks, lm.stereo)
        self._members: list[_Member] = []
        self._done: dict[int, torch.Tensor] = {}
        self._handles = itertools.count()
        self._layout: _Layout | None = None

    # -- membership ---------------------------------------------------------------------------

    @torch.inference_mode()
    def add(self, request: DecodeRequest) -> int:
        """Join the batch at the next step: encodes the conditioning, computes its cross-attention K/V
        and preallocates its KV cache. A request with a decoder prefix (a melody model's conditioning,
        an audio prompt) runs that prefix and its first step now, on its own. Returns the handle."""
        if request.n_frames < 1:
            raise ValueError("n_frames must be at least 1")
        lm = self.lm
        n_prompt = request.prompt_frames
        if n_prompt >= request.n_frames:
            raise ValueError("prompt_codes must be shorter than n_frames")
        n_steps = delay.num_steps(request.n_frames, self.delays)
        if lm.melody:
            prefix, states = melody_prefix(lm, request.prompt, request.chroma, request.guided), None
        elif lm.styled:
            prefix, states = style_prefix(lm, request.prompt, request.style, request.rows), None
        else:
            prefix, states = None, encode_text(lm, request.prompt, with_null=request.guided)
        if request.double_guided and not lm.styled:
            raise UnsupportedRequest(
                "double classifier-free guidance (cfg_coef_beta) is MusicGen-Style's", field="cfg_coef_beta"
            )
        rows = request.rows
        n_prefix = 0 if prefix is None else prefix.shape[1]
        positions = n_prefix + n_steps
        if positions > self.fast.max_positions:
            raise UnsupportedRequest(
                f"this request needs {positions} decoder positions; {lm.spec.name} has {self.fast.max_positions}",
                hint="use a shorter text prompt",
                field="prompt",
            )
        cache = self.fast.new_cache(rows=rows, steps=positions, encoder_states=states)
        k_books = lm.num_codebooks
        sequence = torch.full((k_books, n_steps + 1), lm.pad_token_id, dtype=torch.long, device=self.device)
        sequence[:, 0] = lm.start_token_id
        frames = torch.tensor([request.n_frames])
        keep = delay.valid_positions(frames, self.delays, n_steps + 1)[0].to(self.device)
        if n_prompt:
            # The prompt sits in its delayed positions and is never overwritten.
            for k, d in enumerate(self.delays.tolist()):
                sequence[k, d + 1 : d + 1 + n_prompt] = request.prompt_codes[k].to(self.device)
            given = delay.valid_positions(torch.tensor([n_prompt]), self.delays, n_steps + 1)[0].to(self.device)
            keep &= ~given
        member = _Member(
            handle=next(self._handles),
            request=request,
            n_steps=n_steps,
            cache=cache,
            sequence=sequence,
            keep=keep,
            generator=torch.Generator(device=self.device).manual_seed(request.seed),
        )
        if n_prefix or n_prompt:
            self._prefill(member, prefix, n_prompt)
        if member.step >= member.n_steps:
            self._done[member.handle] = delay.undelay(member.sequence, request.n_frames, self.delays)
        else:
            self._members.append(member)
            self._layout = None
        return member.handle

    def _prefill(self, m: _Member, prefix: torch.Tensor | None, n_prompt: int) -> None:
        """The first forward of transformers' generate(): the prefix and the input columns 0..n_prompt
        in one pass, then the first new column sampled from its last position."""
        request = m.request
        tokens = m.sequence[:, : n_prompt + 1].t()  # [n_prompt + 1, K]
        inputs = self.fast.embed_tokens(tokens)[None].expand(m.rows, -1, -1)
        if prefix is not None:
            inputs = torch.cat([prefix.float(), inputs], dim=1)
        logits = self.fast.prefill(m.cache, inputs)  # [rows, K, V]
        scores = logits[:1]
        if request.double_guided:
            cfg = torch.tensor(request.cfg_coef, dtype=torch.float32, device=self.device)
            beta = torch.tensor(request.cfg_coef_beta, dtype=torch.float32, device=self.device)
            scores = guide_double(scores, logits[1:2], logits[2:3], cfg, beta)
        elif request.guided:
            cfg = torch.tensor(request.cfg_coef, dtype=torch.float32, device=self.device)
            scores = guide(scores, logits[1:2], cfg)
        params = [SamplingParams(request.temperature, request.top_k, request.top_p)]
        chosen = SamplerBatch(params, self.fast.vocab_size, self.device)(scores, [m.generator])[0]
        m.step = n_prompt + 1
        col = m.step
        m.sequence[:, col] = torch.where(m.keep[:, col], chosen, m.sequence[:, col])

    def remove(self, handle: int) -> bool:
        """Drop a request (cancelled): its rows and cache leave the batch now. False if unknown."""
        self._done.pop(handle, None)
        for i, m in enumerate(self._members):
            if m.handle == handle:
                del self._members[i]
                self._layout = None
                return True
        return False

    def pop(self, handle: int) -> torch.Tensor:
        """The aligned codes [K, n_frames] of a finished request; forgets it."""
        return self._done.pop(handle)

    def finished(self) -> list[int]:
        """Handles that finished and were not popped yet."""
        return list(self._done)

    @property
    def active(self) -> list[int]:
        return [m.handle for m in self._members]

    def __len__(self) -> int:
        return len(self._members)

    def progress(self, handle: int) -> tuple[int, int]:
        """(steps done, steps in all) of an active request."""
        for m in self._members:
            if m.handle == handle:
                return m.step, m.n_steps
        raise KeyError(handle)

    def final_codes(self, handle: int, start: int) -> torch.Tensor:
        """Aligned codes [K, n] of an active request's frames from `start` to the last one the delay
        pattern has made final: frame t is final once its last codebook (delay max(delays)) is
        sampled, so after step s the first s - max(delay) frames are (its prompt frames from the
        start). Streaming reads them while the request runs; the tokens are the same ones pop()
        gives at the end."""
        m = next((m for m in self._members if m.handle == handle), None)
        if m is None:
            raise KeyError(handle)
        final = min(m.request.n_frames, max(m.request.prompt_frames, m.step - int(self.delays.max())))
        if final <= start:
            return m.sequence.new_empty((m.sequence.shape[0], 0))
        return torch.stack([m.sequence[k, d + 1 + start : d + 1 + final] for k, d in enumerate(self.delays.tolist())])

    # -- stepping -----------------------------------------------------------------------------

    def _build_layout(self) -> _Layout:
        dev = self.device
        members = list(self._members)
        cond, middle, null, row_member = [], [], [], []
        row = 0
        for i, m in enumerate(members):
            cond.append(row)
            middle.append(row + 1 if m.rows == 3 else row)  # double guidance's style-only row
            null.append(row + m.rows - 1)
            row_member += [i] * m.rows
            row += m.rows
        params = [SamplingParams(m.request.temperature, m.request.top_k, m.request.top_p) for m in members]

        def t(values, dtype=torch.long):
            return torch.tensor(values, dtype=dtype, device=dev)

        return _Layout(
            members=members,
            cond_rows=t(cond),
            null_rows=t(null),
            style_rows=t(middle),
            double=t([m.request.double_guided for m in members], torch.bool).view(-1, 1, 1),
            beta=t([m.request.cfg_coef_beta or 1.0 for m in members], torch.float32).view(-1, 1, 1),
            any_double=any(m.request.double_guided for m in members),
            guided=t([m.request.guided for m in members], torch.bool).view(-1, 1, 1),
            cfg=t([m.request.cfg_coef for m in members], torch.float32).view(-1, 1, 1),
            any_guided=any(m.request.guided for m in members),
            cond_step=2 if all(m.rows == 2 for m in members) else 1 if all(m.rows == 1 for m in members) else None,
            sampler=SamplerBatch(params, self.fast.vocab_size, dev),
            row_repeat=t(row_member),
            generators=[m.generator for m in members],
        )

    @torch.inference_mode()
    def step(self) -> list[int]:
        """Advance every active request by one LM step. Returns the handles that finished on this
        step; their codes are ready with pop(), and their caches are already freed."""
        if not self._members:
            return []
        if self._layout is None:
            self._layout = self._build_layout()
        lay = self._layout
        members = lay.members

        current = torch.stack([m.sequence[:, m.step] for m in members])  # [n, K]
        tokens = current.index_select(0, lay.row_repeat)  # [R, K]
        # The stepping thread's chooser; only kernels whose bits do not depend on the count adapt.
        with threads.step_threads().step(key=tokens.shape[0], adapt=self.fast.precision in THREAD_INVARIANT):
            logits = self.fast.step(tokens, [m.cache for m in members], lay.cond_rows, lay.cond_step)  # [R, K, V]

        cond = logits.index_select(0, lay.cond_rows)
        if lay.any_guided:
            uncond = logits.index_select(0, lay.null_rows)
            guided = guide(cond, uncond, lay.cfg)
            if lay.any_double:
                style = logits.index_select(0, lay.style_rows)
                guided = torch.where(lay.double, guide_double(cond, style, uncond, lay.cfg, lay.beta), guided)
            scores = torch.where(lay.guided, guided, cond)
        else:
            scores = cond
        chosen = lay.sampler(scores, lay.generators)  # [n, K]

        finished = []
        for i, m in enumerate(members):
            m.step += 1
            col = m.step
            m.sequence[:, col] = torch.where(m.keep[:, col], chosen[i], m.sequence[:, col])
            if m.step >= m.n_steps:
                finished.append(m)
        if finished:
            for m in finished:
                self._done[m.handle] = delay.undelay(m.sequence, m.request.n_frames, self.delays)
            gone = {m.handle for m in finished}
            self._members = [m for m in self._members if m.handle not in gone]
            self._layout = None
        return [m.handle for m in finished]


# Long timelines decode in pieces of this many frames (30 s at 50 Hz), each with this many frames of
# context on both sides that are decoded and dropped. EnCodec's activations grow with the length
# (musicgen's 32 kHz codec: ~1.2 GB for 30 s, ~11 GB for 300 s in one pass); with 1 s of context the
# pieces join to within float noise of a single pass (~4e-8 at real shapes, random weights).
DECODE_CHUNK_FRAMES = 1500
DECODE_CONTEXT_FRAMES = 50


# A batched codec pass (decode_pieces) holds at most this many frames in all, so it never needs
# more activation memory than one single pass of the longest piece.
DECODE_BATCH_FRAMES = DECODE_CHUNK_FRAMES


@dataclass(frozen=True)
class Piece:
    """Frames [start, end) of a timeline's codes [K, n_frames], to decode in one codec pass."""

    codes: torch.Tensor
    start: int
    end: int

    @property
    def span(self) -> tuple[int, int]:
        """The frames the pass runs over: the piece plus up to DECODE_CONTEXT_FRAMES each side."""
        return max(0, self.start - DECODE_CONTEXT_FRAMES), min(self.codes.shape[-1], self.end + DECODE_CONTEXT_FRAMES)

    def shape_key(self) -> tuple[int, int, int]:
        """Pieces with the same key decode in one batched pass: same frames in, same cut out."""
        first, last = self.span
        return last - first, self.start - first, self.end - self.start


@torch.inference_mode()
def decode_piece(lm: TextToAudioLM, codes: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """The audio [channels, (end - start) * hop] of frames [start, end) of the codes [K, n_frames]:
    one codec pass over them plus up to DECODE_CONTEXT_FRAMES on each side, which are dropped.
    Stereo models interleave L/R codebooks; each channel is decoded on its own, as transformers does."""
    return decode_pieces(lm, [Piece(codes, start, end)])[0]


@torch.inference_mode()
def decode_pieces(lm: TextToAudioLM, pieces: list[Piece]) -> list[torch.Tensor]:
    """decode_piece for each piece, in as few codec passes as memory allows: pieces of the same
    shape (Piece.shape_key, e.g. requests of one length that finish together) run as one batch of
    the codec, up to DECODE_BATCH_FRAMES frames a pass. The codec has no state across the batch, so a
    piece's audio is the one it gets alone, to float rounding (test/unit/test_codec_batch.py).
    Batching shares the weight reads: the LSTM at EnCodec's bottleneck reads its weights once per
    frame for the whole batch."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, piece in enumerate(pieces):
        groups.setdefault(piece.shape_key(), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(pieces)
    for (frames, skip_frames, n_frames), members in groups.items():
        per_pass = max(1, DECODE_BATCH_FRAMES // frames)
        for at in range(0, len(members), per_pass):
            chunk = members[at : at + per_pass]
            audio = _codec_pass(lm, [pieces[i] for i in chunk])  # [B, channels, samples]
            hop = round(lm.sample_rate / lm.frame_rate_hz)
            cut = audio[:, :, skip_frames * hop : (skip_frames + n_frames) * hop].float().cpu()
            for j, i in enumerate(chunk):
                out[i] = cut[j]
    return out  # type: ignore[return-value]


# Each codec's runner (None: transformers' decode), built on its first non-exact decode.
_CPU_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def codec_decoder(codec: torch.nn.Module, exact: bool):
    """codes [rows, K, T] -> audio [rows, 1, samples] with the model's EnCodec.

    On the CPU in float32 that is the channels-last runner (server/engine/codec/channels_last.py),
    1.4-2x faster than transformers' decoder and equal to it to float rounding. `exact` (the
    float32 precision, which reproduces transformers bit for bit), CUDA, other dtypes and
    structures the runner does not know take transformers' own decode."""
    param = next(codec.parameters())
    fast = None
    if not exact and param.device.type == "cpu" and param.dtype == torch.float32:
        if codec not in _CPU_DECODERS:
            _CPU_DECODERS[codec] = channels_last.for_codec(codec)
        fast = _CPU_DECODERS[codec]

    def decode(rows: torch.Tensor) -> torch.Tensor:
        if fast is None:
            return codec.decode(rows[None], audio_scales=[None]).audio_values
        return fast(codec.quantizer.decode(rows.transpose(0, 1)))

    return decode


def _codec_pass(lm: TextToAudioLM, pieces: list[Piece]) -> torch.Tensor:
    """One batched EnCodec decode of pieces of one shape: [B, channels, samples]."""
    decode = codec_decoder(lm.model.audio_encoder, exact=lm.precision == "float32")
    frames = torch.stack([p.codes[:, slice(*p.span)] for p in pieces]).to(lm.device)  # [B, K, T]

    if not lm.stereo:
        return decode(frames)
    left, right = frames[:, ::2], frames[:, 1::2]  # interleaved L/R codebooks
    if len(pieces) == 1:  # as transformers decodes a stereo answer: one call per channel
        return torch.cat([decode(left), decode(right)], dim=1)
    both = decode(torch.stack([left, right], dim=1).flatten(0, 1))  # [2B, 1, samples]: L, R, L, R...
    return both.view(len(pieces), 2, -1)


def piece_bounds(n_frames: int) -> list[tuple[int, int]]:
    """How a timeline of n_frames is cut into codec passes (one pass up to DECODE_CHUNK_FRAMES)."""
    return [(s, min(n_frames, s + DECODE_CHUNK_FRAMES)) for s in range(0, n_frames, DECODE_CHUNK_FRAMES)]


@torch.inference_mode()
def codes_to_audio(lm: TextToAudioLM, codes: torch.Tensor) -> torch.Tensor:
    """[K, n_frames] codes -> [channels, samples] float32 waveform at the model's native rate. Up to
    DECODE_CHUNK_FRAMES frames decode in one pass, exactly as transformers decodes them; longer ones
    in pieces (decode_piece)."""
    return torch.cat([decode_piece(lm, codes, s, e) for s, e in piece_bounds(codes.shape[-1])], dim=-1)


@torch.inference_mode()
def audio_to_codes(lm: TextToAudioLM, audio: torch.Tensor) -> torch.Tensor:
    """[channels, samples] float32 at the model's rate (its channel count) -> aligned codes [K, frames],
    as transformers' generate() encodes an audio prompt: stereo models encode each channel on its
    own and interleave the codebooks L/R."""
    codec = lm.model.audio_encoder
    audio = audio.to(lm.device, torch.float32)

    def encode(channel: torch.Tensor) -> torch.Tensor:
        return codec.encode(channel[None], return_dict=True).audio_codes[0, 0]  # [K', frames]

    if not lm.stereo:
        return encode(audio[:1])
    left, right = encode(audio[:1]), encode(audio[1:2])
    codes = left.new_ones((2 * left.shape[0], left.shape[1]))
    codes[::2], codes[1::2] = left, right
    return codes
