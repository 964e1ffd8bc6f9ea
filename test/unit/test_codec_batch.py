"""Batched EnCodec decoding of requests that finish together (decode.decode_pieces), on tiny models:
each request's audio is the one it gets decoded alone, and the decode lane's runner batches them."""

from __future__ import annotations

import pytest
import torch

from lib.schemas import MusicRequest
from lib.settings import Settings
from server.engine import decode
from server.engine.decode import Piece
from server.jobs.artifacts import ArtifactStore
from server.jobs.job import Job
from server.jobs.lanes.batch import BatchRunner
from server.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def registry(tiny_hub):
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype="float32"))


@pytest.fixture(scope="module", params=["float32", "int8-dynamic"])
def any_registry(request, tiny_hub):
    """float32 decodes with transformers' EnCodec (exact); the CPU default with the channels-last one."""
    return ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype=request.param))


def random_codes(lm, frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, lm.decoder_config.vocab_size, (lm.num_codebooks, frames), generator=generator)


class CountedDecode:
    """Counts the codec passes and the rows of each."""

    def __init__(self, lm, monkeypatch):
        self.batches: list[int] = []
        real = decode.codec_decoder

        def counted(codec, exact):
            inner = real(codec, exact)

            def run(rows):
                self.batches.append(rows.shape[0])
                return inner(rows)

            return run

        monkeypatch.setattr(decode, "codec_decoder", counted)


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-stereo-small"])
def test_a_batched_pass_gives_each_piece_its_own_audio(any_registry, name, monkeypatch):
    lm = any_registry.get(name)
    timelines = [random_codes(lm, 120, seed) for seed in range(4)]
    # Three pieces of one shape (batched), one of another shape (its own pass), one with context.
    longer = random_codes(lm, 300, 9)
    pieces = [Piece(codes, 0, 120) for codes in timelines[:3]] + [Piece(timelines[3], 0, 70), Piece(longer, 100, 200)]
    alone = [decode.decode_piece(lm, p.codes, p.start, p.end) for p in pieces]
    calls = CountedDecode(lm, monkeypatch)
    together = decode.decode_pieces(lm, pieces)
    # The CPU default decodes with the channels-last runner; float32, the exact mode, with transformers'.
    runner = decode._CPU_DECODERS.get(lm.model.audio_encoder)
    assert (runner is not None) == (lm.precision != "float32")
    channels = 2 if lm.stereo else 1
    # Stereo: both channels of the three are one batch of six; a piece alone decodes a channel a call.
    assert sorted(calls.batches) == ([1, 1, 1, 1, 6] if lm.stereo else [1, 1, 3])
    for got, want, piece in zip(together, alone, pieces, strict=True):
        assert (
            got.shape == want.shape == (channels, (piece.end - piece.start) * lm.model.config.audio_encoder.hop_length)
        )
        # The codec's convolutions and LSTM keep the batch rows apart: only the kernels' blocking
        # may differ with the batch size, so the audio agrees to float rounding.
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # A piece alone in its pass is the single-request path itself, bit for bit.
    assert torch.equal(together[3], alone[3]) and torch.equal(together[4], alone[4])


def test_a_pass_holds_at_most_one_longest_piece_of_frames(registry, monkeypatch):
    lm = registry.get("musicgen-small")
    monkeypatch.setattr(decode, "DECODE_BATCH_FRAMES", 250)
    pieces = [Piece(random_codes(lm, 100, seed), 0, 100) for seed in range(5)]
    calls = CountedDecode(lm, monkeypatch)
    together = decode.decode_pieces(lm, pieces)
    assert calls.batches == [2, 2, 1]
    for got, piece in zip(together, pieces, strict=True):
        torch.testing.assert_close(got, decode.decode_piece(lm, piece.codes, 0, 100), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("codec_batch", "passes"), [(True, [3, 1]), (False, [1, 1, 1, 1])])
def test_requests_that_finish_together_decode_in_one_pass(registry, tmp_path, monkeypatch, codec_batch, passes):
    """The decode lane's runner: three 1 s requests admitted together finish on the same step and
    share one codec pass; a 2 s request in the same batch finishes later, in its own. With
    codec_batch off (the default) each decodes alone, so its audio is its own bit for bit."""
    lm = registry.get("musicgen-small")
    monkeypatch.setattr(registry.settings, "codec_batch", codec_batch)
    runner = BatchRunner(registry, ArtifactStore(tmp_path), "music", "musicgen-small")
    jobs = [
        Job(kind="music", model="musicgen-small", request=MusicRequest(prompt=f"beat {i}", duration=d), seed=i)
        for i, d in enumerate([1, 1, 1, 2])
    ]
    calls = CountedDecode(lm, monkeypatch)
    for job in jobs:
        runner.admit(job)
    while len(runner):
        runner.step()
    assert [job.state for job in jobs] == ["succeeded"] * 4
    assert calls.batches == passes


@pytest.mark.parametrize("streamed", [False, True])
def test_a_finished_request_leaves_its_codec_pass_to_the_caller_unless_streamed(registry, streamed):
    """The runner decodes what pending_pieces() gives; a streamed request's audio was made by its
    live decoder as it went, so it gives nothing to decode twice."""
    from server.engine.text_to_audio import AudioRequest, LongForm

    lm = registry.get("musicgen-small")
    plan = LongForm(lm, AudioRequest("beat", duration_s=1.0, seed=0), stride_s=18.0)
    if streamed:
        plan.stream()
    plan.accept(random_codes(lm, plan.windows[0].n_frames, 0), decode_now=False)
    assert plan.done
    pending = plan.pending_pieces()
    assert [(p.start, p.end) for p in pending] == ([] if streamed else [(0, plan.total_frames)])
    plan.add_audio(decode.decode_pieces(lm, pending))
    assert plan.waveform().audio.shape == (1, lm.sample_rate)
