"""The engine's fast path: packed decoder step, precisions, vectorised sampling, continuous batching.

Everything runs on the tiny random-weight checkpoints, through the real loading code.
"""

from __future__ import annotations

import pytest
import torch
from engine_reference import batch_rows, generate_codes, sample

from lib.settings import Settings
from server.engine.decode import DecodeBatch, DecodeRequest, encode_text
from server.engine.fastlm import FastLM, PackedLinear
from server.engine.sampling import SamplerBatch, SamplingParams
from server.models.device import pick_precision
from server.models.registry import ModelRegistry

PRECISIONS = ["float32", "bfloat16", "int8", "int8-dynamic"]


@pytest.fixture(scope="module")
def registries(tiny_hub):
    return {p: ModelRegistry(Settings(models_dir=tiny_hub, device="cpu", dtype=p)) for p in PRECISIONS}


def _alone(lm, request):
    return generate_codes(lm, [request])[0]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_join_late_and_leave_do_not_change_a_request(registries, precision):
    lm = registries[precision].get("musicgen-small")
    first = DecodeRequest("a long orchestral film score", 45, seed=2, top_p=0.9)
    late = DecodeRequest("lofi hip hop beat", 30, seed=1)
    greedy = DecodeRequest("drums", 12, seed=3, temperature=0.0, cfg_coef=1.0)
    doomed = DecodeRequest("cancel me", 40, seed=9, temperature=0.7, top_k=20, cfg_coef=5.0)
    want = {r: _alone(lm, r) for r in (first, late, greedy)}

    batch = DecodeBatch(lm)
    handles = {batch.add(first): first}
    for _ in range(7):
        batch.step()
    handles[batch.add(late)] = late  # joins a running batch at step 7 of `first`
    for _ in range(5):
        batch.step()
    handles[batch.add(greedy)] = greedy
    gone = batch.add(doomed)
    batch.step()
    batch.step()
    assert batch_rows(batch) == 2 + 2 + 1 + 2
    assert batch.remove(gone)  # leaves mid-way: its rows and cache go now
    assert batch_rows(batch) == 2 + 2 + 1
    got = {}
    while len(batch):
        for h in batch.step():
            got[handles[h]] = batch.pop(h)
    assert batch.finished() == []
    for request, codes in want.items():
        assert torch.equal(got[request], codes), request.prompt


def test_a_finished_request_leaves_at_once(registries):
    lm = registries["float32"].get("musicgen-small")
    batch = DecodeBatch(lm)
    short = batch.add(DecodeRequest("short", 2, seed=0))  # 2 frames + 3 delay steps
    long = batch.add(DecodeRequest("long", 20, seed=0))
    finished_at = None
    for step in range(1, 24):
        done = batch.step()
        if short in done:
            finished_at = step
            assert batch.active == [long]
            assert batch_rows(batch) == 2
            assert batch.pop(short).shape == (4, 2)
        if not len(batch):
            break
    assert finished_at == 5
    assert batch.progress(long) if len(batch) else True


@pytest.mark.parametrize("name", ["musicgen-small", "musicgen-stereo-small"])
def test_step_matches_transformers_decoder(registries, name):
    """fp32 logits are bit-identical to transformers' decoder with a DynamicCache (test_isa.py checks
    it again with the kernels held to AVX2)."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    lm = registries["float32"].get(name)
    fast = lm.fast_lm()
    k_books = lm.num_codebooks
    with torch.inference_mode():
        states = encode_text(lm, "upbeat electronic music", with_null=True)
        cache = fast.new_cache(2, 12, states)
        ref_cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        mask = torch.tensor([[1] * states.shape[1], [0] * states.shape[1]])
        tokens = torch.full((2, k_books), lm.start_token_id)
        for _ in range(12):
            ref = (
                lm.model.decoder(
                    input_ids=tokens.reshape(-1, 1),
                    encoder_hidden_states=states,
                    encoder_attention_mask=mask,
                    cache=ref_cache,
                    use_cache=True,
                )
                .logits[:, -1]
                .view(2, k_books, -1)
            )
            got = fast.step(tokens, [cache], torch.tensor([0]))
            assert torch.equal(got, ref)
            tokens = ref[0].argmax(-1).view(1, -1).expand(2, -1).contiguous()


def test_low_precisions_stay_close_to_fp32(registries):
    ref = registries["float32"].get("musicgen-small")
    req = DecodeRequest("calm piano", 30, seed=0, temperature=0.0)
    want = _alone(ref, req)
    for precision in ("bfloat16", "int8"):
        lm = registries[precision].get("musicgen-small")
        assert lm.precision == precision
        assert lm.model.decoder.device.type == "meta"  # the fp32 decoder is released: one copy in memory
        got = _alone(lm, req)
        assert got.shape == want.shape
        # Greedy on random weights is the harshest case (flat logits, one flip changes the rest).
        assert (got == want).float().mean() > 0.2, precision


@pytest.mark.parametrize("precision", PRECISIONS)
def test_packed_linear_requests_are_independent(precision):
    """A request's rows (a span of 1 or 2) give the same bits whatever else is in the call."""
    torch.manual_seed(0)
    weight = torch.randn(96, 64) / 8
    lin = PackedLinear(weight, None, precision, torch.device("cpu"))
    dtype = torch.float32 if precision == "float32" else torch.bfloat16
    # Rows of very different sizes: the dynamic kernels pick each request's scale from its own rows.
    x = (torch.randn(64, 64) * torch.logspace(-2, 2, 64)[:, None]).to(dtype)
    sizes = [2, 1, 2, 2, 1, 1, 2, 2, 2, 1] * 2 + [2] * 5
    spans, start = [], 0
    for n in sizes:
        spans.append((start, start + n))
        start += n
    full = lin(x[:start], spans)
    for a, b in spans:
        assert torch.equal(lin(x[a:b]), full[a:b]), (a, b)
    for cut in (1, 3, 8, 17):  # the first `cut` requests alone
        end = spans[cut - 1][1]
        assert torch.equal(lin(x[:end], spans[:cut]), full[:end]), cut


def test_int8_weights_are_per_channel_symmetric():
    weight = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -2.0]])
    lin = PackedLinear(weight, None, "int8", torch.device("cpu"))
    assert lin.weight.dtype == torch.int8
    assert lin.weight.tolist() == [[64, -127, 32], [127, 0, -127]]
    assert lin.nbytes() == 6 + 2 * 2


def test_vectorised_sampler_equals_per_request_sampling():
    torch.manual_seed(0)
    params = [
        SamplingParams(1.0, 250, 0.0),
        SamplingParams(0.0, 250, 0.0),
        SamplingParams(0.7, 20, 0.0),
        SamplingParams(1.3, 0, 0.9),
        SamplingParams(1.0, 0, 0.0),
        SamplingParams(1.0, 5000, 0.0),
    ]
    sampler = SamplerBatch(params, 2048, torch.device("cpu"))
    seeds = [11, 12, 13, 14, 15, 16]
    gens_a = [torch.Generator().manual_seed(s) for s in seeds]
    gens_b = [torch.Generator().manual_seed(s) for s in seeds]
    for _ in range(20):
        logits = torch.randn(len(params), 4, 2048) * 3
        got = sampler(logits, gens_a)
        want = torch.stack(
            [sample(logits[i], p.temperature, p.top_k, p.top_p, gens_b[i]) for i, p in enumerate(params)]
        )
        assert torch.equal(got, want)


def test_precision_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pick_precision("auto", cpu) == "int8-dynamic"  # this machine has the x86 quantized engine
    assert pick_precision("auto", cuda) == "float16"
    assert pick_precision("int8", cpu) == "int8"
    assert pick_precision("bfloat16", cuda) == "bfloat16"
    with pytest.raises(ValueError):
        pick_precision("float16", cpu)
    with pytest.raises(ValueError):
        pick_precision("int8", cuda)


def test_default_registry_runs_the_default_precision(tiny_hub):
    reg = ModelRegistry(Settings(models_dir=tiny_hub, device="cpu"))
    lm = reg.get("musicgen-small")
    assert lm.precision == "int8-dynamic"
    assert isinstance(lm.fast, FastLM)
    codes = generate_codes(lm, [DecodeRequest("x", 5, seed=0)])[0]
    assert codes.shape == (4, 5)
    assert lm.memory_bytes() > 0


def test_each_kind_loads_as_its_own_type(registries):
    from server.engine.errors import UnsupportedRequest
    from server.models.loaded import CodecModel, TextToAudioLM

    reg = registries["int8-dynamic"]
    lm, codec = reg.get("musicgen-small"), reg.get("encodec-32khz")
    assert isinstance(lm, TextToAudioLM) and isinstance(codec, CodecModel)
    # What /health and /api/models show of a model are plain strings; EnCodec stays float32.
    assert (lm.device_type, lm.precision) == ("cpu", "int8-dynamic")
    assert (codec.device_type, codec.precision) == ("cpu", "float32")
    assert codec.memory_bytes() == reg.memory_of("encodec-32khz") > 0
    with pytest.raises(UnsupportedRequest, match="codec"):
        DecodeBatch(codec)


def test_a_step_never_reads_device_values_on_the_host(registries):
    """On CUDA a host read (item(), bool(tensor), nonzero, multinomial's checks) stalls the queue.
    Steps contain none, also right after a leave. (A join or leave uploads new index tensors once,
    at the next step: a copy from the host, not a read.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {"_local_scalar_dense", "nonzero", "multinomial", "masked_select", "equal", "is_nonzero"}

    class Spy(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.__name__.split(".")[0]
            if name in syncing:
                self.seen.append(name)
            return func(*args, **(kwargs or {}))

    lm = registries["int8"].get("musicgen-small")
    batch = DecodeBatch(lm)
    first = batch.add(DecodeRequest("a", 20, seed=0))
    batch.step()
    second = batch.add(DecodeRequest("b", 20, seed=1, temperature=0.0, cfg_coef=1.0))
    batch.add(DecodeRequest("c", 20, seed=2, top_p=0.8))
    batch.step()  # builds the layout once for the new membership (host-built index tensors)
    with Spy() as spy:
        for _ in range(4):
            batch.step()
        batch.remove(second)
        for _ in range(4):
            batch.step()
    assert spy.seen == []
    assert first in batch.active


def test_per_model_precision(tiny_hub):
    from server.models.errors import ModelLoadFailed

    reg = ModelRegistry(
        Settings(
            models_dir=tiny_hub,
            device="cpu",
            dtype="float32",
            model_dtype="musicgen-small=int8-dynamic, musicgen-medium = float16",
        )
    )
    assert reg.get("musicgen-small").precision == "int8-dynamic"
    assert reg.get("musicgen-stereo-small").precision == "float32"
    with pytest.raises(ModelLoadFailed, match="not available on cpu"):
        reg.get("musicgen-medium")
    with pytest.raises(ValueError):
        Settings(model_dtype="musicgen-small=int4")


def test_float16_path_runs(registries):
    """The CUDA default precision, exercised on the CPU (slowly) so its dtype handling is tested here."""
    lm = registries["float32"].get("musicgen-small")
    fp16 = FastLM(lm.model.decoder, "float16", torch.device("cpu"))
    ref = lm.fast_lm()
    with torch.inference_mode():
        states = encode_text(lm, "bells", with_null=True)
        a, b = ref.new_cache(2, 4, states), fp16.new_cache(2, 4, states)
        assert b.self_k.dtype == torch.float16
        tokens = torch.full((2, lm.num_codebooks), lm.start_token_id)
        for _ in range(4):
            want = ref.step(tokens, [a], torch.tensor([0]), 2)
            got = fp16.step(tokens, [b], torch.tensor([0]), 2)
            assert got.dtype == torch.float32
            assert (got - want).abs().max() < 0.05 * want.std()
            tokens = want[0].argmax(-1).view(1, -1).expand(2, -1).contiguous()
