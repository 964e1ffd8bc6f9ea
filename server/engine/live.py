"""Audio while it is made: a timeline's codes decoded as their frames become final.

The LM makes frames one step at a time, and the delay pattern makes frame t final (every codebook
sampled) max(delay) steps after its first codebook. `LiveAudio` takes the final frames in order and
decodes them with EnCodec's decoder run as a stream (server/engine/codec/stream.py): every layer
keeps exactly the state it needs between chunks (the convolutions' past samples, the transposed
convolutions' overlap, the LSTM's hidden state), and holds back the few samples a later frame can
still change (the non-causal convolutions look ahead). So the streamed audio is the one-pass decode
of the same codes, up to float rounding (test/unit/test_live.py measures it), with no frames decoded
twice and no left context to choose: an overlap-and-drop decode with L frames of left context is
only as close as the LSTM forgets its start (docs/benchmarks.md has that measurement).

Stereo models interleave L/R codebooks; each channel has its own stream, as decode_piece does.
"""

from __future__ import annotations

import numpy as np
import torch

from server.engine.codec import stream
from server.models.loaded import TextToAudioLM


class LiveAudio:
    """One timeline's audio, decoded as it becomes final. Feed it the timeline's frames in order
    (`push`), then `finish`; each returns the next samples of [first_sample, end_sample)."""

    def __init__(self, lm: TextToAudioLM, first_sample: int, end_sample: int):
        self.lm = lm
        codec = lm.model.audio_encoder
        self._quantizer = codec.quantizer
        self._decoders = [stream.streaming(codec.decoder) for _ in range(lm.channels)]
        self.first_sample, self.end_sample = first_sample, end_sample
        self.frames = 0  # timeline frames pushed
        self._made = 0  # timeline samples decoded so far (the decoder's output position)

    @torch.inference_mode()
    def push(self, codes: torch.Tensor) -> np.ndarray:
        """The next frames of the timeline, aligned codes [K, n] -> the samples that became final."""
        if not codes.shape[-1]:
            return self._cut(None)
        self.frames += int(codes.shape[-1])
        codes = codes.to(self.lm.device)
        books = [codes[::2], codes[1::2]] if self.lm.stereo else [codes]
        out = [d.push(self._quantizer.decode(c[:, None, :])) for d, c in zip(self._decoders, books, strict=True)]
        return self._cut(out)

    @torch.inference_mode()
    def finish(self) -> np.ndarray:
        """The samples the decoder held back for the end (the signal's last frames)."""
        return self._cut([d.flush() for d in self._decoders])

    def _cut(self, parts: list[torch.Tensor | None] | None) -> np.ndarray:
        channels = self.lm.channels
        if not parts or any(p is None or not p.shape[-1] for p in parts):
            # The channels' decoders share one structure: they emit in step, never one without the other.
            return np.zeros((channels, 0), dtype=np.float32)
        audio = torch.cat([p[0] for p in parts]).float().cpu().numpy()  # [channels, n]
        start = self._made
        self._made += audio.shape[-1]
        lo, hi = max(start, self.first_sample), min(self._made, self.end_sample)
        if hi <= lo:
            return np.zeros((channels, 0), dtype=np.float32)
        return np.ascontiguousarray(audio[:, lo - start : hi - start])
