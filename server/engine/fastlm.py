"""MusicGen's decoder step, re-written over the transformers modules' weights for the engine's loop.

What it does differently from calling the transformers decoder once per step:

- **A static KV cache per request.** Each request owns a preallocated cache sized to its own length
  ([layers, rows, heads, steps, head_dim]); a step writes one position and attends over the filled
  prefix. Requests join and leave a running batch by adding or dropping their own cache: nothing is
  copied or re-padded for the others.
- **Cross-attention keys and values computed once** per request, when it joins. The null (guidance)
  row's cross-attention is skipped: its encoder states are all zero and fully masked, so transformers
  adds exactly 0 there too.
- **Fewer, larger ops:** the q/k/v projections are one matmul, the codebook embeddings one lookup, the
  codebook heads one matmul.
- **Precision:** the weights are fp32, bf16, fp16, or int8 with one scale per output channel
  (weight-only: `torch._weight_int8pack_mm` with bf16 activations). The residual stream, layer norms
  and logits stay fp32 in every precision.
- **Dense kernels per CPU** (server/engine/dense.py, chosen when the decoder is packed): MKL runs a
  2-row fp32 matmul on one thread, so fp32 splits each weight's output columns over the threads in one
  `bmm` (bitwise `F.linear`'s, checked per shape: float32 stays token-identical to transformers); bf16
  uses oneDNN's packed weights where oneDNN has native bf16. Prefill and the cross-attention keys
  (one request's many rows) keep `F.linear`.
- **The engine's own kernels** (server/engine/native/kernels.cpp, built once per CPU level): a step's
  attention for all its requests in one call, read from the bf16 or fp32 caches in place; and, for
  int8-dynamic, the whole step in one call. Torch's CPU attention gives a row other bits in batches of
  other sizes, so the Python step called it per request and layer, after copying each prefix to fp32;
  and at one request on musicgen-small about 10 of the step's 28 ms were Python and dispatch between
  ~850 small calls (AMD EPYC Zen 4, 2 threads: 18.8 ms a step in one call, 69.9 against 131.7 at 10
  requests; docs/benchmarks.md). float32 keeps torch's ops: their bits are transformers'.

**Batch independence, bit for bit.** A request's numbers must not depend on what it is batched with.
Row-wise ops (norms, attention per request, the int8 kernel) are independent of the other rows by
construction. Dense BLAS/oneDNN matmuls are not: they pick kernels by the number of rows (MKL's fp32
GEMV for one row differs from its GEMM for two). So dense matmuls always run on blocks of exactly
`row_block` rows, zero-padded: every row of every batch goes through a matmul of one fixed shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from server.engine import dense, native, qdynamic
from server.models.device import compute_dtype

# Rows per dense matmul call (see the module docstring). fp32: pairs, the shape of transformers' own
# (conditional, null) matmul, so the bits match it; padding more rows costs MKL ~3x at this size
# (it is compute-bound on small M). bf16/fp16: 8 rows (four guided requests) cost about what 2 do.
_ROW_BLOCK = {"float32": 2, "bfloat16": 8, "float16": 8}

# How each precision multiplies (docs/benchmarks.md has the speed and fidelity of each):
# - dense: F.linear in the compute dtype, in fixed row blocks;
# - int8pack: int8 weights, bf16 activations (torch._weight_int8pack_mm; a row-wise kernel);
# - qdynamic: int8 weights, uint8 activations with one scale and zero point per request (from its
#   min and max, as torch's dynamic quantized linear picks them), exact int32 sums, in one call of
#   fbgemm's prepacked int8 kernel for the whole batch (server/engine/qdynamic.py).
KERNELS = {"float32": "dense", "bfloat16": "dense", "float16": "dense", "int8": "int8pack", "int8-dynamic": "qdynamic"}
# What the matmuls take and give (the dynamic int8 kernel quantizes fp32 itself), and what the
# KV cache holds.
ACT_DTYPE = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int8": torch.bfloat16,
    "int8-dynamic": torch.float32,
}
CACHE_DTYPE = {p: torch.bfloat16 for p in KERNELS} | {"float32": torch.float32, "float16": torch.float16}
# What a decode step's self-attention computes in. The int8 precisions keep a bf16 cache (half the
# memory) but attend in fp32 over an fp32 copy of the prefix: torch's bf16 attention kernel is 3-7x
# slower than its fp32 one where bf16 has no AMX (AMD EPYC Zen 4, one core, 2 rows x 16 heads, 150
# positions: 727 us against 175 us with the copy, caches warm; 874 against 629 us with them evicted,
# as between a step's layers), and a batched step runs it once per request and layer
# (docs/benchmarks.md, concurrent requests).
ATTEND_DTYPE = CACHE_DTYPE | {"int8": torch.float32, "int8-dynamic": torch.float32}
# Precisions whose decode steps attend in the engine's own kernel (server/engine/native/kernels.cpp)
# where it is built: it reads their fp32 or bf16 caches in place, all requests of a step in one call.
# float32 keeps torch's kernel, whose bits transformers' own generate gives (token identity).
NATIVE_ATTENTION = frozenset({"bfloat16", "int8", "int8-dynamic"})
# Precisions whose step gives the same bits at any torch thread count (integer sums; measured on the
# real shape at 1 and 2 threads): the decode loop may change its thread count for these only.
THREAD_INVARIANT = frozenset({"int8", "int8-dynamic"})

Spans = list[tuple[int, int]]


# Bump when quantize_int8 gives other codes or scales: the packed-decoder cache stores its output.
QUANT_VERSION = 1


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 weight [out, in] -> (int8 codes [out, in], fp32 scale [out]): one symmetric scale per
    output row, codes in -127..127. Each row is its own, so the codes of stacked weights are the
    stacked codes (the fused q/k/v projection)."""
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


class PackedLinear:
    """y = x @ W.T (+ b) for x [rows, in], in one of the precisions above."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        precision: str,
        device: torch.device,
        scale: torch.Tensor | None = None,
        kernels=None,  # noqa: ANN001 - server/engine/native's module: int8 weights in its own layout where it runs them
    ):
        """scale: `weight` is already int8 codes with these per-row scales (`quantize_int8`), as the
        packed-decoder cache stores them (server/models/packcache.py); else it is quantized here."""
        cdt = compute_dtype(precision)
        weight = weight.detach()
        self.precision = precision
        self.kind = KERNELS[precision]
        self.out_features, self.in_features = weight.shape
        self.block = _ROW_BLOCK.get(precision, 1)
        self.bias = None if bias is None else bias.detach().to(device=device, dtype=torch.float32)
        self.scales = None
        self.packed = None
        self.weight_sums = None
        self.dense = None
        self.native = None  # the engine's kernels for qdynamic's arithmetic: FastLM.use_native sets them
        if self.kind == "dense":
            # No copy when the dtype and device already match (fp32 shares the transformers weights).
            self.weight = weight.to(device=device, dtype=cdt).contiguous()
            if device.type == "cpu":  # the CPU's kernel for this shape (server/engine/dense.py)
                self.dense = dense.DenseMatmul(self.weight, precision, self.block, exact=precision == "float32")
                self.weight = self.dense.weight
            return
        if scale is None:
            codes, scale = quantize_int8(weight.to(device=device, dtype=torch.float32))
        else:
            codes, scale = weight.to(device), scale.to(device=device, dtype=torch.float32)
        self.weight = codes.contiguous()
        if self.kind == "int8pack":
            self.scales = scale.to(cdt)
        else:  # qdynamic: the codes packed at unit scale (the channel scales go after), in the engine's
            # own layout where its int8 matmul runs, else prepacked for fbgemm
            self.native = kernels
            self._pack(self.weight, kernels, own=True)
            self.scales = scale
            self.weight = torch.empty(0, dtype=torch.int8)  # the packed copy is the one used

    def _pack(self, codes: torch.Tensor, kernels, own: bool) -> None:  # noqa: ANN001
        """self.packed (and the codes' row sums fbgemm's path corrects with) in one layout."""
        if own and qdynamic.own_kernel(kernels):
            self.packed = kernels.Int8Weights(codes)  # it sums the codes as it packs them
            self.weight_sums = self.packed.code_sums.float()
            return
        self.packed = qdynamic.prepack(codes)
        # Integer code sums, exact in fp32. numpy's int32 row sum: torch's took 36 ms on one
        # musicgen-large fc1 (8192 x 2048) against 3.8 ms, a third of a load's packing time.
        self.weight_sums = torch.from_numpy(codes.numpy().sum(axis=1, dtype=np.int32)).float()

    def use_kernels(self, kernels, own_int8: bool = True) -> None:  # noqa: ANN001 - server/engine/native's module, or None
        """Run on these kernels (None: torch's ops alone), repacking the int8 codes into the layout
        the matmul takes: the kernels' own where they have one for this CPU (own_int8=False: fbgemm's,
        which benchmarks compare); one layout is held at a time."""
        if self.kind != "qdynamic":
            return
        own = own_int8 and bool(qdynamic.own_kernel(kernels))
        if qdynamic.is_own(self.packed, self.native) != own:
            self._pack(qdynamic.codes_of(self.packed, self.native), kernels, own)
        self.native = kernels

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.weight, self.scales, self.bias, self.weight_sums) if t is not None]

    def packed_bytes(self) -> int:
        """Bytes held by the quantized engine's or oneDNN's own packed copy (not a torch tensor)."""
        if self.dense is not None:
            return self.dense.packed_bytes()
        return self.out_features * self.in_features if self.packed is not None else 0

    def nbytes(self) -> int:
        """Bytes of weight one call reads."""
        per = self.weight.element_size() if self.kind == "dense" else 1
        scales = 0 if self.scales is None else self.scales.numel() * self.scales.element_size()
        return self.out_features * self.in_features * per + scales

    def __call__(self, x: torch.Tensor, spans: Spans | None = None, blocked: bool = True) -> torch.Tensor:
        """x [rows, in]. spans: each request's rows, for kernels whose numbers depend on the whole
        call (qdynamic); None: x is one request's. blocked=False: one dense matmul over all rows, for
        inputs that belong to a single request."""
        kind = self.kind
        if kind == "dense" and self.dense is not None:
            out = _blocked(x, self.dense, self.block) if blocked else self.dense.full(x)
        elif kind == "dense":  # CUDA: F.linear
            matmul = functools.partial(F.linear, weight=self.weight)
            out = _blocked(x, matmul, self.block) if blocked else matmul(x)
        elif kind == "int8pack":
            out = torch._weight_int8pack_mm(x.contiguous(), self.weight, self.scales)
        else:  # qdynamic: fp32 in, fp32 out
            out = qdynamic.linear(x.float(), spans, self.packed, self.weight_sums, self.scales, self.native)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out


def _blocked(x: torch.Tensor, matmul, block: int) -> torch.Tensor:  # noqa: ANN001
    """matmul(x) in calls of exactly `block` rows (the last zero-padded)."""
    rows = x.shape[0]
    if rows == block:
        return matmul(x)
    pieces = []
    for start in range(0, rows, block):
        chunk = x[start : start + block]
        if chunk.shape[0] < block:
            chunk = F.pad(chunk, (0, 0, 0, block - chunk.shape[0]))
        pieces.append(matmul(chunk))
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return out[:rows]


@dataclass
class _Norm:
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    @classmethod
    def of(cls, module: torch.nn.LayerNorm, device: torch.device) -> _Norm:
        return cls(
            module.weight.detach().to(device, torch.float32),
            module.bias.detach().to(device, torch.float32),
            float(module.eps),
        )

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight, self.bias]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


@dataclass
class _Layer:
    norm_self: _Norm
    qkv: PackedLinear
    out: PackedLinear
    norm_cross: _Norm | None
    cross_q: PackedLinear | None
    cross_k: PackedLinear | None
    cross_v: PackedLinear | None
    cross_out: PackedLinear | None
    norm_ffn: _Norm
    fc1: PackedLinear
    fc2: PackedLinear
    activation: object


@dataclass
class RequestCache:
    """One request's attention state: its self-attention cache and its text's cross-attention K/V."""

    rows: int  # 2 with guidance (conditional, null), else 1
    self_k: torch.Tensor  # [layers, rows, heads, steps, head_dim]
    self_v: torch.Tensor
    cross_k: torch.Tensor | None  # [layers, 1, heads, text_len, head_dim], conditional row only, act dtype
    cross_v: torch.Tensor | None
    pos: int = 0  # positions filled so far

    def __post_init__(self) -> None:
        # Per-layer views, taken once: a step hands the native kernel each layer's caches.
        self.layer_k, self.layer_v = self.self_k.unbind(0), self.self_v.unbind(0)
        has_cross = self.cross_k is not None
        self.layer_cross_k = self.cross_k.unbind(0) if has_cross else ()
        self.layer_cross_v = self.cross_v.unbind(0) if has_cross else ()

    def nbytes(self) -> int:
        tensors = [self.self_k, self.self_v, self.cross_k, self.cross_v]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class FastLM:
    """The decoder of a MusicgenForCausalLM, as packed weights and a step function."""

    def __init__(
        self,
        causal_lm,
        precision: str,
        device: torch.device,
        release: bool = False,
        ready: Callable[[torch.nn.Module], None] | None = None,
    ):
        """release: free each transformers layer's weights (to the meta device) as soon as it is
        packed, so a load never holds the fp32 decoder and its packed copy at once (the caller gives up
        the transformers decoder).
        ready(module): called before a module's weights are first used, returns once they are in
        memory; a load still reading them from disk passes it, so each layer is packed as soon as
        its weights arrive (a failed read raises from it). None: they all are."""
        ready = ready or (lambda _module: None)
        config = causal_lm.config
        decoder = causal_lm.model.decoder
        ready(decoder.embed_tokens)
        ready(decoder.embed_positions)
        self.precision = precision
        self.device = device
        self.act_dtype = ACT_DTYPE[precision]
        self.cache_dtype = CACHE_DTYPE[precision]
        self.attend_dtype = ATTEND_DTYPE[precision]
        self.num_codebooks = int(config.num_codebooks)
        self.vocab_size = int(config.vocab_size)
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.head_dim = self.hidden // self.heads
        self.scaling = self.head_dim**-0.5
        self.max_positions = int(decoder.embed_positions.weights.shape[0])
        # fp32 keeps transformers' exact order of operations (token identity); the others are free to
        # reassociate (a fused embedding sum).
        self.exact = precision == "float32"

        tables = [emb.weight.detach() for emb in decoder.embed_tokens]
        self.table_rows = tables[0].shape[0]  # vocab + 1 (the pad/start token)
        self.embed = torch.cat(tables).to(device, torch.float32)
        self.embed_offsets = (torch.arange(self.num_codebooks, device=device) * self.table_rows).view(1, -1)
        self.positions = decoder.embed_positions.weights.detach().to(device, torch.float32)

        # The engine's kernels (server/engine/native) where they are built, else torch's ops; asked
        # once here, before the layers are packed in parallel, so each packs in the layout they take.
        kernels = native.kernels() if device.type == "cpu" else None

        def lin(module: torch.nn.Linear) -> PackedLinear:
            scale = getattr(module, "weight_scale", None)
            return PackedLinear(module.weight, module.bias, precision, device, scale=scale, kernels=kernels)

        def fused(*modules: torch.nn.Linear) -> PackedLinear:
            weight = torch.cat([m.weight.detach() for m in modules])
            biases = [m.bias for m in modules]
            bias = None if all(b is None for b in biases) else torch.cat([b.detach() for b in biases])
            # Weights the cache stored as int8 codes carry their row scales (server/models/packcache.py).
            scales = [getattr(m, "weight_scale", None) for m in modules]
            scale = None if scales[0] is None else torch.cat(scales)
            packed = PackedLinear(weight, bias, precision, device, scale=scale, kernels=kernels)
            same = packed.weight.dtype == modules[0].weight.dtype and packed.weight.device == modules[0].weight.device
            # (not where a packed copy replaced it: the CPU's dense kernel may hold its own layout)
            if packed.kind == "dense" and same and packed.weight.shape == weight.shape:
                # Same dtype and device (float32): the transformers modules take views of the fused
                # weight, so memory holds the weights once.
                start = 0
                for m in modules:
                    n = m.weight.shape[0]
                    m.weight.data = packed.weight[start : start + n]
                    start += n
            return packed

        def build(layer) -> _Layer:  # noqa: ANN001
            ready(layer)
            attn = layer.self_attn
            cross = getattr(layer, "encoder_attn", None)
            packed_layer = _Layer(
                norm_self=_Norm.of(layer.self_attn_layer_norm, device),
                qkv=fused(attn.q_proj, attn.k_proj, attn.v_proj),
                out=lin(attn.out_proj),
                norm_cross=_Norm.of(layer.encoder_attn_layer_norm, device) if cross is not None else None,
                cross_q=lin(cross.q_proj) if cross is not None else None,
                cross_k=lin(cross.k_proj) if cross is not None else None,
                cross_v=lin(cross.v_proj) if cross is not None else None,
                cross_out=lin(cross.out_proj) if cross is not None else None,
                norm_ffn=_Norm.of(layer.final_layer_norm, device),
                fc1=lin(layer.fc1),
                fc2=lin(layer.fc2),
                activation=layer.activation_fn,
            )
            if release:
                layer.to("meta")
            return packed_layer

        # Layers are packed in parallel: fbgemm's weight packing runs on one core, and packing is most
        # of an int8 model's load time (torch ops release the GIL).
        pool = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()))
        try:
            self.layers: list[_Layer] = list(pool.map(build, decoder.layers))
        finally:  # after a failure (a layer that did not pack or read), the layers not begun are dropped
            pool.shutdown(wait=True, cancel_futures=True)
        self.has_cross_attention = all(layer.cross_q is not None for layer in self.layers)
        ready(decoder.layer_norm)
        self.final_norm = _Norm.of(decoder.layer_norm, device)
        ready(causal_lm.lm_heads)
        self.heads_out = fused(*causal_lm.lm_heads)
        self.native = self.decoder = None
        self.use_native(True)

    def _native_decoder(self):  # noqa: ANN202 - native/kernels.cpp's Decoder, or None
        """The whole int8-dynamic step in one native call, where the kernels are built and every op of
        the step is one it has (the layers' activation must be torch's exact gelu)."""
        kernels = self.native
        if kernels is None or self.precision != "int8-dynamic":
            return None
        probe = torch.linspace(-6, 6, 97)
        if any(not torch.equal(layer.activation(probe), F.gelu(probe)) for layer in self.layers):
            return None

        def lin(p: PackedLinear):  # noqa: ANN202
            return kernels.Linear(p.packed, p.weight_sums, p.scales, p.bias)

        def norm(n: _Norm | None):  # noqa: ANN202
            return None if n is None else kernels.Norm(n.weight, n.bias, n.eps)

        decoder = kernels.Decoder(self.hidden, self.heads, self.scaling, qdynamic.activation_levels())
        for layer in self.layers:
            cross = layer.cross_q is not None
            decoder.add_layer(
                kernels.Layer(
                    norm(layer.norm_self),
                    lin(layer.qkv),
                    lin(layer.out),
                    norm(layer.norm_cross),
                    lin(layer.cross_q) if cross else None,
                    lin(layer.cross_out) if cross else None,
                    norm(layer.norm_ffn),
                    lin(layer.fc1),
                    lin(layer.fc2),
                )
            )
        decoder.set_head(norm(self.final_norm), lin(self.heads_out))
        return decoder

    def use_native(self, on: bool, whole_step: bool = True, own_int8: bool = True) -> None:
        """Run on the engine's kernels (where built; the default) or on torch's ops alone;
        whole_step=False keeps the Python step over the kernels, own_int8=False their int8 matmuls on
        fbgemm (tests and benchmarks compare them)."""
        kernels = native.kernels() if on and self.device.type == "cpu" else None
        self.native = kernels if self.precision in NATIVE_ATTENTION else None
        for part in self._linears():
            part.use_kernels(kernels, own_int8)
        self.decoder = self._native_decoder() if whole_step else None

    def _linears(self) -> list[PackedLinear]:
        parts = [self.heads_out]
        for layer in self.layers:
            parts += [p for p in vars(layer).values() if isinstance(p, PackedLinear)]
        return parts

    # -- sizes --------------------------------------------------------------------------------

    def weight_bytes(self) -> int:
        """Bytes of weights one step reads (the cross-attention K/V projections run once per request)."""
        total = self.heads_out.nbytes()
        for layer in self.layers:
            parts = [layer.qkv, layer.out, layer.cross_q, layer.cross_out, layer.fc1, layer.fc2]
            total += sum(p.nbytes() for p in parts if p is not None)
        return total

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the packed decoder holds (for memory accounting)."""
        out = [self.embed, self.positions, *self.final_norm.tensors(), *self.heads_out.tensors()]
        for layer in self.layers:
            for part in vars(layer).values():
                if isinstance(part, (PackedLinear, _Norm)):
                    out += part.tensors()
        return out

    def packed_bytes(self) -> int:
        """Weights held outside torch tensors (the quantized engine's packed copies)."""
        return sum(p.packed_bytes() for p in self._linears())

    def cache_bytes(self, rows: int, steps: int) -> int:
        return 2 * len(self.layers) * rows * steps * self.hidden * torch.finfo(self.cache_dtype).bits // 8

    def step_bytes(self, rows: int, steps: int) -> int:
        """Bytes one step reads on average over a request of `steps` steps: the weights, and the
        self-attention keys and values filled so far (half the cache on average)."""
        return self.weight_bytes() + self.cache_bytes(rows, steps) // 2

    # -- per request --------------------------------------------------------------------------

    def new_cache(self, rows: int, steps: int, encoder_states: torch.Tensor | None) -> RequestCache:
        """Preallocate a request's cache for `steps` positions (a prefix given to prefill() counts).
        encoder_states [rows, text_len, hidden]: the conditional row first (then the null row, as
        transformers computes them), already projected and masked; only used by decoders with
        cross-attention."""
        if steps > self.max_positions:
            raise ValueError(f"{steps} positions exceed the model's {self.max_positions}")
        shape = (len(self.layers), rows, self.heads, steps, self.head_dim)
        k = torch.empty(shape, device=self.device, dtype=self.cache_dtype)
        v = torch.empty(shape, device=self.device, dtype=self.cache_dtype)
        cross_k = cross_v = None
        if encoder_states is not None and self.has_cross_attention:
            cross_k, cross_v = self._cross_kv(encoder_states)
        return RequestCache(rows=rows, self_k=k, self_v=v, cross_k=cross_k, cross_v=cross_v)

    def _cross_kv(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, text_len, _ = states.shape
        flat = states.reshape(n * text_len, -1).to(self.act_dtype)
        ks, vs = [], []
        for layer in self.layers:
            # All rows go through the projection, as in transformers (same matmul shape, same bits);
            # only the conditional row is kept: the null row's cross-attention output is exactly 0.
            k = layer.cross_k(flat, blocked=False)[:text_len]
            v = layer.cross_v(flat, blocked=False)[:text_len]
            ks.append(k.view(1, text_len, self.heads, self.head_dim).transpose(1, 2))
            vs.append(v.view(1, text_len, self.heads, self.head_dim).transpose(1, 2))
        # Kept in the activation dtype: they are small (text length), and fp32 attention over a few
        # keys is faster on CPU than bf16.
        return torch.stack(ks).to(self.act_dtype).contiguous(), torch.stack(vs).to(self.act_dtype).contiguous()

    def _cross_attention(self, q: torch.Tensor, cache: RequestCache, li: int) -> torch.Tensor:
        """The conditional row's cross-attention, q [1, heads, L, head_dim] -> [1, heads, L, head_dim].

        float32 runs it at the batch size transformers uses (the request's rows), the conditional row
        repeated. torch's CPU attention kernel gives other bits for a row attended alone than for the
        same row in a batch of 2, for most text lengths (measured on an AMD EPYC Zen 4 with its AVX-512
        kernels and with torch, MKL and oneDNN held to AVX2: lengths 8, 9, 11-13, 15-17, ... differ);
        a row's bits do not depend on the other row's values or mask. This was why float32 was not
        bitwise transformers' on AVX2 machines. The other precisions attend the one row."""
        k, v = cache.cross_k[li], cache.cross_v[li]
        rows = cache.rows if self.exact else 1
        if rows > 1:
            q, k, v = (t.expand(rows, -1, -1, -1) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, scale=self.scaling)[:1]

    def _native_step(
        self, h: torch.Tensor, caches: list[RequestCache], cond_rows: torch.Tensor, cond_step: int | None
    ) -> torch.Tensor:
        cross = self.has_cross_attention
        rows = h.shape[0]
        logits = self.decoder.step(
            h,
            [c.self_k for c in caches],
            [c.self_v for c in caches],
            [c.pos + 1 for c in caches],
            [c.cross_k for c in caches] if cross else [],
            [c.cross_v for c in caches] if cross else [],
            [c.cross_k.shape[3] for c in caches] if cross else [],
            list(range(0, rows, cond_step)) if cond_step else cond_rows.tolist(),
        )
        for c in caches:
            c.pos += 1
        return logits.view(rows, self.num_codebooks, self.vocab_size)

    def _torch_self_attention(
        self, qkv: torch.Tensor, caches: list[RequestCache], spans: Spans, li: int, single: RequestCache | None
    ) -> torch.Tensor:
        """A step's self-attention with torch's kernel, once per request (its bits depend on the batch
        size): the new keys and values written into each cache, then attention over its prefix."""
        hidden, heads, head_dim, attend = self.hidden, self.heads, self.head_dim, self.attend_dtype
        q, k, v = qkv.split(hidden, dim=-1)
        q = q.to(attend)  # k and v convert as they are written into the cache
        att = torch.empty(qkv.shape[0], hidden, device=qkv.device, dtype=attend) if single is None else None
        for c, (r0, r1) in zip(caches, spans, strict=True):
            rows, p = c.rows, c.pos
            kc, vc = c.layer_k[li], c.layer_v[li]
            kc[:, :, p] = k[r0:r1].view(rows, heads, head_dim)
            vc[:, :, p] = v[r0:r1].view(rows, heads, head_dim)
            out = F.scaled_dot_product_attention(
                q[r0:r1].view(rows, heads, 1, head_dim),
                kc[:, :, : p + 1].to(attend),
                vc[:, :, : p + 1].to(attend),
                scale=self.scaling,
            )
            if att is None:
                att = out.transpose(1, 2).reshape(rows, hidden)
            else:
                att[r0:r1] = out.transpose(1, 2).reshape(rows, hidden)
        return att

    def _torch_cross_attention(
        self, cq: torch.Tensor, caches: list[RequestCache], li: int, single: RequestCache | None
    ) -> torch.Tensor:
        """The conditional rows' cross-attention with torch's kernel, once per request."""
        hidden, heads, head_dim = self.hidden, self.heads, self.head_dim
        catt = torch.empty(cq.shape[0], hidden, device=cq.device, dtype=cq.dtype) if single is None else None
        for i, c in enumerate(caches):
            out = self._cross_attention(cq[i : i + 1].view(1, heads, 1, head_dim), c, li)
            if catt is None:
                catt = out.transpose(1, 2).reshape(1, hidden)
            else:
                catt[i : i + 1] = out.transpose(1, 2).reshape(1, hidden)
        return catt

    # -- the step -----------------------------------------------------------------------------

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [..., K] -> summed codebook embeddings [..., hidden] (fp32)."""
        lead = tokens.shape[:-1]
        return self._embed(tokens.reshape(-1, self.num_codebooks)).view(*lead, self.hidden)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [rows, K] -> summed codebook embeddings [rows, hidden] (fp32)."""
        rows = tokens.shape[0]
        flat = (tokens + self.embed_offsets).reshape(-1)
        e = self.embed.index_select(0, flat).view(rows, self.num_codebooks, self.hidden)
        if not self.exact:
            return e.sum(dim=1)
        out = e[:, 0]  # transformers: sum(embed_k(...) for k): left to right
        for k in range(1, self.num_codebooks):
            out = out + e[:, k]
        return out

    @torch.inference_mode()
    def prefill(self, cache: RequestCache, inputs: torch.Tensor) -> torch.Tensor:
        """Run one request's first `L` positions through the decoder at once, as transformers' first
        forward does: inputs [rows, L, hidden] fp32 input embeddings (a melody model's conditioning
        prefix, then the codebook embeddings of the start token and any audio prompt), causal among
        themselves. Their keys and values fill the cache from position 0. Returns the fp32 logits of
        the last position [rows, K, vocab]; the next step() continues at position L.

        Matmuls run over all rows * L positions of the request at once (one request: no blocking
        needed for batch independence), the shape transformers uses, so float32 stays token-identical.
        """
        if cache.pos != 0:
            raise ValueError("prefill must come before any step")
        rows, length, hidden = inputs.shape
        if length > cache.self_k.shape[3]:
            raise ValueError(f"{length} prefill positions exceed the cache's {cache.self_k.shape[3]}")
        act, kv = self.act_dtype, self.cache_dtype
        heads, head_dim = self.heads, self.head_dim
        h = inputs.float() + self.positions[:length]
        flat = rows * length

        def split_heads(x: torch.Tensor, n: int) -> torch.Tensor:  # [n * L, hidden] -> [n, heads, L, head_dim]
            return x.view(n, length, heads, head_dim).transpose(1, 2)

        for li, layer in enumerate(self.layers):
            x = layer.norm_self(h).reshape(flat, hidden).to(act)
            q, k, v = layer.qkv(x, blocked=False).split(hidden, dim=-1)
            cache.self_k[li, :, :, :length] = split_heads(k, rows)
            cache.self_v[li, :, :, :length] = split_heads(v, rows)
            out = F.scaled_dot_product_attention(
                split_heads(q.to(kv), rows),
                cache.self_k[li, :, :, :length],
                cache.self_v[li, :, :, :length],
                is_causal=length > 1,
                scale=self.scaling,
            )
            att = out.transpose(1, 2).reshape(flat, hidden)
            h = h + layer.out(att.to(act), blocked=False).float().view(rows, length, hidden)

            if layer.cross_q is not None:  # the conditional row only (row 0): the null row's is exactly 0
                cq = layer.cross_q(layer.norm_cross(h[0]).to(act), blocked=False).to(act)
                out = self._cross_attention(split_heads(cq, 1), cache, li)
                cross = layer.cross_out(out.transpose(1, 2).reshape(length, hidden), blocked=False).float()
                h[0] += cross  # h is this layer's own tensor: in place is safe

            x = layer.norm_ffn(h).reshape(flat, hidden).to(act)
            f = layer.fc2(layer.activation(layer.fc1(x, blocked=False)), blocked=False)
            h = h + f.float().view(rows, length, hidden)

        cache.pos = length
        # fp32 computes the heads over every position, as transformers does (same matmul, same bits);
        # the other precisions only need the last one.
        last = self.final_norm(h if self.exact else h[:, -1:]).to(act)
        logits = self.heads_out(last.reshape(-1, hidden), blocked=False).float()
        logits = logits.view(rows, -1, self.num_codebooks, self.vocab_size)
        return logits[:, -1]

    @torch.inference_mode()
    def step(
        self,
        tokens: torch.Tensor,
        caches: list[RequestCache],
        cond_rows: torch.Tensor,
        cond_step: int | None = None,
    ) -> torch.Tensor:
        """One decode step for every request of a batch.

        tokens [R, K]: the current input codes of each row (a request's rows are adjacent, conditional
        first), caches: one per request in row order, cond_rows: long [n_requests] index of each
        request's conditional row; cond_step: 2 when every request is guided (conditional rows are
        0, 2, 4...), 1 when none is, else None. Returns fp32 logits [R, K, vocab]. Each cache's `pos`
        advances by one.
        """
        x = self._embed(tokens)
        pos = torch.cat([self.positions[c.pos : c.pos + 1].expand(c.rows, -1) for c in caches])
        h = x + pos
        if self.decoder is not None:  # the same step in one native call (server/engine/native/kernels.cpp)
            return self._native_step(h, caches, cond_rows, cond_step)
        act, hidden = self.act_dtype, self.hidden
        spans = []
        start = 0
        for c in caches:
            spans.append((start, start + c.rows))
            start += c.rows
        cond_spans = [(i, i + 1) for i in range(len(caches))]
        single = caches[0] if len(caches) == 1 else None  # one request: no gather buffers

        lengths = [c.pos + 1 for c in caches]  # positions each request attends over, this one included
        text_lengths = [c.cross_k.shape[3] for c in caches] if self.native and self.has_cross_attention else None

        for li, layer in enumerate(self.layers):
            # self-attention
            qkv = layer.qkv(layer.norm_self(h).to(act), spans)
            if self.native is not None:  # every request in one call, the new keys written by it
                q, k, v = qkv.float().split(hidden, dim=-1)
                att = self.native.attend(
                    q, [c.layer_k[li] for c in caches], [c.layer_v[li] for c in caches], lengths, self.scaling, k, v
                )
            else:
                att = self._torch_self_attention(qkv, caches, spans, li, single)
            h = h + layer.out(att.to(act), spans).float()

            # cross-attention, conditional rows only (the null rows' is exactly 0)
            if layer.cross_q is not None:
                cond_h = h[::cond_step] if cond_step else h.index_select(0, cond_rows)
                cq = layer.cross_q(layer.norm_cross(cond_h).to(act), cond_spans).to(act)
                if self.native is not None:
                    keys = [c.layer_cross_k[li] for c in caches]
                    values = [c.layer_cross_v[li] for c in caches]
                    catt = self.native.attend(cq.float(), keys, values, text_lengths, self.scaling).to(act)
                else:
                    catt = self._torch_cross_attention(cq, caches, li, single)
                cross = layer.cross_out(catt, cond_spans).float()
                if cond_step:
                    h[::cond_step] += cross  # h is this layer's own tensor: in place is safe
                else:
                    h = h.index_add(0, cond_rows, cross)

            # feed-forward
            f = layer.fc2(layer.activation(layer.fc1(layer.norm_ffn(h).to(act), spans)), spans)
            h = h + f.float()

        for c in caches:
            c.pos += 1
        logits = self.heads_out(self.final_norm(h).to(act), spans).float()
        return logits.view(h.shape[0], self.num_codebooks, self.vocab_size)
