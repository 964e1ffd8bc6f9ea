"""The channels-last EnCodec decoder (server/engine/codec/channels_last.py) against transformers'
own decoder: the real 32 kHz structure and small variants of it (causal, other padding, inputs
too short to reflect), and the choice between the two in decode.codec_decoder."""

from __future__ import annotations

import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from bench.common import real_shape_config
from server.engine.codec import channels_last
from server.engine.codec.channels_last import ChannelsLastDecoder
from server.engine.decode import codec_decoder


def small_codec(**overrides) -> EncodecModel:
    config = dict(
        sampling_rate=8000,
        audio_channels=1,
        codebook_size=64,
        num_filters=4,
        upsampling_ratios=[4, 2],
        hidden_size=8,
        num_lstm_layers=2,
        target_bandwidths=[24.0],
        norm_type="weight_norm",
        use_causal_conv=False,
        codebook_dim=8,
        normalize=False,
        pad_mode="reflect",
    )
    config.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return EncodecModel(EncodecConfig(**config)).eval()


def embeddings(codec: EncodecModel, rows: int, frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    dim = codec.config.hidden_size
    return torch.randn(rows, dim, frames, generator=generator)


@torch.inference_mode()
def test_the_real_32khz_decoder_gives_transformers_audio_to_float_rounding():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        codec = EncodecModel(real_shape_config("musicgen-small").audio_encoder).eval()
    emb = embeddings(codec, rows=3, frames=12)
    want = codec.decoder(emb)
    got = ChannelsLastDecoder(codec.decoder)(emb)
    assert got.shape == want.shape == (3, 1, 12 * 640) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.equal(got, torch.zeros_like(got))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"use_causal_conv": True},
        {"pad_mode": "constant"},
        {"upsampling_ratios": [3, 5], "kernel_size": 5, "last_kernel_size": 3},
        {"use_conv_shortcut": False, "num_lstm_layers": 1},
    ],
    ids=["reflect", "causal", "zero-pad", "odd-strides", "identity-shortcut"],
)
@pytest.mark.parametrize("frames", [1, 2, 37])
@torch.inference_mode()
def test_variants_and_inputs_too_short_to_reflect(overrides, frames):
    codec = small_codec(**overrides)
    emb = embeddings(codec, rows=2, frames=frames, seed=frames)
    want = codec.decoder(emb)
    got = ChannelsLastDecoder(codec.decoder)(emb)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@torch.inference_mode()
def test_a_row_decoded_in_a_batch_is_the_row_decoded_alone():
    codec = small_codec()
    emb = embeddings(codec, rows=4, frames=30)
    decoder = ChannelsLastDecoder(codec.decoder)
    together = decoder(emb)
    for i in range(4):
        torch.testing.assert_close(together[i : i + 1], decoder(emb[i : i + 1]), rtol=0, atol=1e-6)


@torch.inference_mode()
def test_codec_decoder_is_transformers_bit_for_bit_when_exact_and_close_otherwise():
    codec = small_codec()
    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 64, (2, codec.quantizer.num_quantizers, 25), generator=generator)
    want = codec.decode(codes[None], audio_scales=[None]).audio_values
    assert torch.equal(codec_decoder(codec, exact=True)(codes), want)
    fast = codec_decoder(codec, exact=False)(codes)
    assert fast.shape == want.shape
    torch.testing.assert_close(fast, want, rtol=1e-4, atol=1e-6)


@torch.inference_mode()
def test_a_structure_it_does_not_know_takes_transformers_decode():
    codec = small_codec(norm_type="time_group_norm")
    assert channels_last.for_codec(codec) is None
    assert channels_last.for_codec(small_codec()) is not None
    codes = torch.randint(0, 64, (1, 2, 10))
    want = codec.decode(codes[None], audio_scales=[None]).audio_values
    assert torch.equal(codec_decoder(codec, exact=False)(codes), want)
