// The engine's own CPU kernels (server/engine/native/__init__.py builds and loads this file).
//
// attend: one decode step's attention for every request of a batch, in one call
// (server/engine/fastlm.py). Why it exists: torch's CPU attention gives a row other bits in batches of
// other sizes, so the engine ran it once per request and layer, each time after copying the request's bf16 cache prefix to fp32.
// At 10 requests on musicgen-small that was ~480 small calls a step and 47 ms of a 150 ms step
// (docs/benchmarks.md, issue 20 part 3). Here every (row, head) is one task that reads its keys and
// values straight from the cache in its own dtype, with a fixed order of operations: a row's numbers
// do not depend on the batch, on the thread count, or on how tasks are split over threads.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/native/quantized/PackedParams.h>
#include <c10/util/BFloat16.h>
#include <torch/csrc/jit/api/object.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <omp.h>

namespace {

constexpr int kLanes = 16;  // partial sums per reduction (lane_sum)

inline float load(const float* p) { return *p; }
inline float load(const c10::BFloat16* p) { return static_cast<float>(*p); }
inline void store(float* p, float x) { *p = x; }
inline void store(c10::BFloat16* p, float x) { *p = c10::BFloat16(x); }  // round to nearest even, as .to()

// e^x for x <= 0 (softmax after the max is taken off): Cephes' expf polynomial on x - n ln2, scaled by
// 2^n through the exponent bits. A plain loop of it vectorizes; std::exp does not.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

// acc[0] = the sum of the kLanes partial sums, in a fixed tree.
inline float reduce_lanes(float* acc) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
}

// term(0) + ... + term(n - 1) in kLanes partial sums (term i into lane i % kLanes), then reduce_lanes:
// the same order for every row, and a loop the compiler vectorizes without reassociating.
template <typename Term>
inline float lane_sum(int64_t n, Term term) {
  float acc[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += term(i + l);
  }
  for (int l = 0; i + l < n; ++l) acc[l] += term(i + l);  // a tail (the tiny test models' head_dim 8)
  return reduce_lanes(acc);
}

template <typename T>
inline float dot(const float* q, const T* k, int64_t dim) {
  return lane_sum(dim, [&](int64_t d) { return q[d] * load(k + d); });
}

// The smallest and largest of p[0..n), with 0 in the range (a request's quantization range). Min and
// max are order-free, so the AVX2 loop gives the plain loop's result.
inline std::pair<float, float> range_with_zero(const float* p, int64_t n) {
  float lo = 0.0f, hi = 0.0f;
  int64_t i = 0;
#if defined(__AVX2__)
  __m256 lo8 = _mm256_setzero_ps(), hi8 = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(p + i);
    lo8 = _mm256_min_ps(lo8, v);
    hi8 = _mm256_max_ps(hi8, v);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo8);
  _mm256_store_ps(h, hi8);
  for (int k = 0; k < 8; ++k) lo = std::min(lo, l[k]), hi = std::max(hi, h[k]);
#endif
  for (; i < n; ++i) {
    lo = std::min(lo, p[i]);
    hi = std::max(hi, p[i]);
  }
  return {lo, hi};
}

struct Cache {
  void* k;
  void* v;
  int64_t row_stride, head_stride, pos_stride;  // elements, the same for k and v
  int64_t length;                               // positions attended (the last one written first, when new keys are given)
  int64_t first_row;                            // the request's first row in q
};

template <typename T>
void attend_one(const float* q, const float* k_new, const float* v_new, const Cache& c, int64_t row, int64_t head,
                int64_t dim, float scale, float* scores, float* out) {
  T* k = static_cast<T*>(c.k) + row * c.row_stride + head * c.head_stride;
  T* v = static_cast<T*>(c.v) + row * c.row_stride + head * c.head_stride;
  const int64_t length = c.length;
  if (k_new != nullptr) {  // this task's own slot: written, then read, by this task alone
    T* kw = k + (length - 1) * c.pos_stride;
    T* vw = v + (length - 1) * c.pos_stride;
    for (int64_t d = 0; d < dim; ++d) {
      store(kw + d, k_new[d]);
      store(vw + d, v_new[d]);
    }
  }
  float best = -INFINITY;
  for (int64_t j = 0; j < length; ++j) {
    scores[j] = dot(q, k + j * c.pos_stride, dim) * scale;
    best = std::max(best, scores[j]);
  }
  float partial[kLanes] = {0};
  int64_t j = 0;
  for (; j + kLanes <= length; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      scores[j + l] = exp_nonpositive(scores[j + l] - best);
      partial[l] += scores[j + l];
    }
  }
  for (; j < length; ++j) {
    scores[j] = exp_nonpositive(scores[j] - best);
    partial[0] += scores[j];
  }
  reduce_lanes(partial);
  for (int64_t d = 0; d < dim; ++d) out[d] = 0.0f;
  for (int64_t jj = 0; jj < length; ++jj) {
    const T* vj = v + jj * c.pos_stride;
    const float w = scores[jj];
    for (int64_t d = 0; d < dim; ++d) out[d] += w * load(vj + d);
  }
  const float inv = 1.0f / partial[0];
  for (int64_t d = 0; d < dim; ++d) out[d] *= inv;
}

// Every (row, head) of a step as one task; how tasks are split over threads changes no number.
// out: [rows, heads * dim], contiguous.
void attend_rows(const float* q, int64_t q_stride, const float* k_new, const float* v_new, int64_t new_stride,
                 const std::vector<Cache>& caches, const std::vector<int64_t>& row_request, int64_t heads, int64_t dim,
                 int64_t max_length, float scale, at::ScalarType dtype, float* out) {
  const int64_t rows = static_cast<int64_t>(row_request.size()), width = heads * dim;
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(max_length);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / heads, head = task % heads;
      const Cache& c = caches[row_request[row]];
      const int64_t offset = head * dim;
      const float* kn = k_new != nullptr ? k_new + row * new_stride + offset : nullptr;
      const float* vn = v_new != nullptr ? v_new + row * new_stride + offset : nullptr;
      const float* qr = q + row * q_stride + offset;
      float* o = out + row * width + offset;
      if (dtype == at::kFloat) {
        attend_one<float>(qr, kn, vn, c, row - c.first_row, head, dim, scale, scores.data(), o);
      } else {
        attend_one<c10::BFloat16>(qr, kn, vn, c, row - c.first_row, head, dim, scale, scores.data(), o);
      }
    }
  });
}

// Request caches are [rows, heads, positions, dim] (lead 0: the attend call's, one layer's) or
// [layers, rows, heads, positions, dim] (lead 1: the Decoder's whole caches), keys and values alike.
void check_caches(const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                  const std::vector<int64_t>& lengths, int64_t lead, int64_t heads, int64_t dim, const char* what) {
  TORCH_CHECK(!keys.empty() && keys.size() == values.size() && keys.size() == lengths.size(), what,
              ": one key cache, value cache and length per request");
  for (size_t i = 0; i < keys.size(); ++i) {
    const at::Tensor &k = keys[i], &v = values[i];
    TORCH_CHECK(k.dim() == 4 + lead && k.sizes() == v.sizes() && k.strides() == v.strides() &&
                    k.size(lead + 1) == heads && k.size(lead + 3) == dim && k.stride(lead + 3) == 1,
                what, " of request ", i, ": keys and values must be [", lead ? "layers, " : "", "rows, ", heads,
                ", positions, ", dim, "] alike");
    TORCH_CHECK(k.scalar_type() == keys[0].scalar_type() && v.scalar_type() == k.scalar_type() &&
                    (k.scalar_type() == at::kFloat || k.scalar_type() == at::kBFloat16),
                what, ": float32 or bfloat16 caches of one dtype");
    TORCH_CHECK(lengths[i] >= 1 && lengths[i] <= k.size(lead + 2), what, " of request ", i, ": length ", lengths[i],
                " outside 1..", k.size(lead + 2));
  }
}

// Each request's rows, in order: the request of every row, each request's end row, the longest length.
struct Rows {
  std::vector<int64_t> request, ends;
  int64_t max_length = 1;
};

Rows rows_of(const std::vector<at::Tensor>& keys, const std::vector<int64_t>& lengths, int64_t lead) {
  Rows out;
  for (size_t i = 0; i < keys.size(); ++i) {
    out.request.insert(out.request.end(), keys[i].size(lead), static_cast<int64_t>(i));
    out.ends.push_back(static_cast<int64_t>(out.request.size()));
    out.max_length = std::max(out.max_length, lengths[i]);
  }
  return out;
}

// One cache view per request at layer `layer` (0 where lead is 0), without making tensors.
std::vector<Cache> layer_caches(const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                                const std::vector<int64_t>& lengths, int64_t lead, int64_t layer) {
  std::vector<Cache> out(keys.size());
  int64_t first_row = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const at::Tensor &k = keys[i], &v = values[i];
    const int64_t offset = lead ? layer * k.stride(0) * k.element_size() : 0;
    out[i] = Cache{static_cast<char*>(k.data_ptr()) + offset, static_cast<char*>(v.data_ptr()) + offset,
                   k.stride(lead), k.stride(lead + 1), k.stride(lead + 2), lengths[i], first_row};
    first_row += k.size(lead);
  }
  return out;
}

void check_rows(const at::Tensor& t, const char* name, int64_t rows, int64_t width) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == width, name, " must be [", rows, ", ", width, "]");
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.stride(1) == 1, name, " must be float32 with contiguous rows");
}

// q [R, heads * dim] float32. k_caches[i], v_caches[i]: request i's [rows_i, heads, positions, dim] keys and
// values (float32 or bfloat16, both the same), rows in q's order. lengths[i]: how many positions request i
// attends over. k_new, v_new (optional, [R, heads * dim] float32): keys and values written at position
// lengths[i] - 1 first. Returns [R, heads * dim] float32: softmax(q k^T * scale) v per row and head.
at::Tensor attend(const at::Tensor& q, const std::vector<at::Tensor>& k_caches, const std::vector<at::Tensor>& v_caches,
                  const std::vector<int64_t>& lengths, double scale, const c10::optional<at::Tensor>& k_new,
                  const c10::optional<at::Tensor>& v_new) {
  TORCH_CHECK(!k_caches.empty(), "one key cache, value cache and length per request");
  const int64_t heads = k_caches[0].size(1), dim = k_caches[0].size(3);
  check_caches(k_caches, v_caches, lengths, 0, heads, dim, "cache");
  const at::ScalarType dtype = k_caches[0].scalar_type();
  const Rows request_rows = rows_of(k_caches, lengths, 0);
  const std::vector<int64_t>& row_request = request_rows.request;
  const int64_t rows = static_cast<int64_t>(row_request.size()), width = heads * dim;
  check_rows(q, "q", rows, width);
  const bool write = k_new.has_value();
  TORCH_CHECK(write == v_new.has_value(), "k_new and v_new come together");
  if (write) {
    check_rows(*k_new, "k_new", rows, width);
    check_rows(*v_new, "v_new", rows, width);
  }
  at::Tensor out = at::empty({rows, width}, q.options());
  const float* k_new_ptr = write ? k_new->data_ptr<float>() : nullptr;
  const float* v_new_ptr = write ? v_new->data_ptr<float>() : nullptr;
  pybind11::gil_scoped_release no_gil;
  attend_rows(q.data_ptr<float>(), q.stride(0), k_new_ptr, v_new_ptr, write ? k_new->stride(0) : 0,
              layer_caches(k_caches, v_caches, lengths, 0, 0), row_request, heads, dim, request_rows.max_length,
              static_cast<float>(scale), dtype, out.data_ptr<float>());
  return out;
}

// quantize_spans / dequantize_rows: the arithmetic around fbgemm's int8 matmul when one call carries
// several requests (server/engine/qdynamic.py says why each request gets its own scale and zero point).
// They compute exactly what that module's torch ops computed, in 2 calls instead of ~12 (at 10
// requests on musicgen-small: ~1,700 small calls a step); test_native_attention.py checks the bits.

// A request's scale and zero point from its range [lo, hi] (0 in it), as qdynamic._qparams computes them.
std::pair<float, int64_t> qparams(float lo, float hi, int64_t levels) {
  float scale = static_cast<float>((static_cast<double>(hi) - static_cast<double>(lo)) / static_cast<double>(levels));
  if (scale == 0.0f) scale = 1.0f;
  const double zero = std::nearbyint(-static_cast<double>(lo) / static_cast<double>(scale));
  return {scale, std::min<int64_t>(levels, std::max<int64_t>(0, static_cast<int64_t>(zero)))};
}

// x [R, in] float32; ends: each request's last row + 1, in order. Per request: its range [lo, hi] with 0
// in it, scale = float32((hi - lo) / levels) (1 if 0), zero point = round(-lo / scale) clamped to
// 0..levels, both in double as Python computes them. Returns (codes - shared_zero [R, in], scale [R, 1],
// zero point - shared_zero [R, 1]), all float32, the codes round(x / scale + zero point) clamped to 0..255.
std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_spans(const at::Tensor& x, const std::vector<int64_t>& ends,
                                                               int64_t levels, int64_t shared_zero) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x must be contiguous float32 [rows, in]");
  const int64_t rows = x.size(0), width = x.size(1);
  TORCH_CHECK(!ends.empty() && ends.back() == rows, "the spans must end at the last row");
  at::Tensor codes = at::empty_like(x), scales = at::empty({rows, 1}, x.options()), shifts = at::empty({rows, 1}, x.options());
  const float* in = x.data_ptr<float>();
  float *out = codes.data_ptr<float>(), *scale_out = scales.data_ptr<float>(), *shift_out = shifts.data_ptr<float>();
  int64_t start = 0;
  for (const int64_t end : ends) {
    TORCH_CHECK(end > start && end <= rows, "spans must be non-empty and in order");
    const auto [lo, hi] = range_with_zero(in + start * width, (end - start) * width);
    const auto [scale, zero_point] = qparams(lo, hi, levels);
    const float zero_f = static_cast<float>(zero_point), shared_f = static_cast<float>(shared_zero);
    for (int64_t i = start * width; i < end * width; ++i) {
      const float code = std::nearbyint(in[i] / scale + zero_f);
      out[i] = std::min(std::max(code, 0.0f), 255.0f) - shared_f;
    }
    for (int64_t r = start; r < end; ++r) {
      scale_out[r] = scale;
      shift_out[r] = static_cast<float>(zero_point - shared_zero);
    }
    start = end;
  }
  return {codes, scales, shifts};
}

// out [R, C] float32, fbgemm's integer sums at zero point shared_zero, in place:
// ((out - shift[r] * code_sums[c]) * scale[r]) * channel_scale[c], each product rounded on its own as the
// torch ops did (the first is exact: integers far below 2^24).
at::Tensor dequantize_rows(at::Tensor out, const at::Tensor& shift, const at::Tensor& code_sums, const at::Tensor& scale,
                           const at::Tensor& channel_scale) {
  TORCH_CHECK(out.dim() == 2 && out.scalar_type() == at::kFloat && out.is_contiguous(), "out must be contiguous float32");
  const int64_t rows = out.size(0), cols = out.size(1);
  for (const at::Tensor* t : {&shift, &scale}) {
    TORCH_CHECK(t->numel() == rows && t->scalar_type() == at::kFloat && t->is_contiguous(), "one float32 value per row");
  }
  for (const at::Tensor* t : {&code_sums, &channel_scale}) {
    TORCH_CHECK(t->numel() == cols && t->scalar_type() == at::kFloat && t->is_contiguous(), "one float32 value per column");
  }
  float* o = out.data_ptr<float>();
  const float *sh = shift.data_ptr<float>(), *sums = code_sums.data_ptr<float>();
  const float *sc = scale.data_ptr<float>(), *cs = channel_scale.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = o + r * cols;
    const float shift_r = sh[r], scale_r = sc[r];
    for (int64_t c = 0; c < cols; ++c) {
      const float exact = row[c] - shift_r * sums[c];
      const float scaled = exact * scale_r;
      row[c] = scaled * cs[c];
    }
  }
  return out;
}

// Decoder: a whole int8-dynamic decode step (every layer, the final norm and the codebook heads) in one
// call, for server/engine/fastlm.py's FastLM.step: the engine's own int8 matmul (below; fbgemm's, called
// directly, where it has none), the functions above, and its own layer norm and GELU (the GELU and the
// residual adds fused into the matmul's stores). What it saves is the Python and dispatch between ~850 small
// calls a step (one request on musicgen-small), ~10 ms of ~28. Every op is row-wise or per request, so
// a request's logits do not depend on its batch; they are close to the Python step's, not its bits.


// Row-wise layer norm and exact-form GELU for the Decoder: torch's take 10-45 us a call here for
// 2 x 1024 or 2 x 4096 values (dispatch, and a thread wake-up per call), 1.7 ms of a 20 ms step on
// musicgen-small (AMD EPYC Zen 4, 2 threads). Fixed-order sums: a row's numbers are its own.
void layer_norm_rows(const float* x, float* out, int64_t rows, int64_t width, const float* weight, const float* bias,
                     float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * width;
    float* o = out + r * width;
    const float mean = lane_sum(width, [&](int64_t i) { return xr[i]; }) / static_cast<float>(width);
    const float squares = lane_sum(width, [&](int64_t i) { return (xr[i] - mean) * (xr[i] - mean); });
    const float rstd = 1.0f / std::sqrt(squares / static_cast<float>(width) + eps);
    for (int64_t i = 0; i < width; ++i) o[i] = (xr[i] - mean) * rstd * weight[i] + bias[i];
  }
}

// x * Phi(x), Phi through erf (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7).
inline float gelu(float v) {
  const float a = std::fabs(v) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  float poly = 1.061405429f;
  poly = poly * t - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  poly = poly * t;
  const float erf_abs = 1.0f - poly * exp_nonpositive(-a * a);
  const float erf = v < 0.0f ? -erf_abs : erf_abs;
  return 0.5f * v * (1.0f + erf);
}

// The engine's own int8 matmul (int8_linear, and the Decoder's linears where it runs): int8 weight codes
// times activations quantized to unsigned codes per request, summed exactly in int32.
// Why not fbgemm's: at a decode step's few rows each call carries fbgemm's own passes (quantize, row
// offsets, requantize) and fork-joins around a weight stream that is the whole cost; here one OpenMP
// region quantizes, streams and stores, with the step's GELU and residual adds in the stores. Measured
// on an AMD EPYC Zen 5, 2 threads, musicgen-small: a one-request step 12.9 -> 10.7 ms, a ten-request
// step 46.2 -> 39.4 ms, 5 s of audio 4.58 -> 3.87 s (docs/benchmarks.md, issue 20, session 10). Held to
// AVX2 the two are level (3-6 % behind fbgemm at one request). Each output is (sum - zero_point_r * code_sum_c) * scale_r * channel_scale_c: the integer sum
// is exact, so a row's numbers do not depend on its batch, on the thread count or on the path (VNNI or
// AVX2) that summed it.
//
// Layout: blocks of 16 output channels; in a block, 4 input positions of each channel side by side
// ([blocks][in / 4][16][4], zero-padded): one 64-byte load holds 4 codes of 16 channels, which one
// VNNI vpdpbusd multiplies by a row's 4 activation codes (broadcast) into 16 int32 sums.
// Without VNNI (AVX2: AMD Zen 3 and older) vpmaddubsw adds pairs of products into int16, exact for
// activation codes up to 127 (qdynamic.activation_levels says 127 on such CPUs): 2 x 127 x 128 < 2^15.

constexpr int64_t kBlock = 16;  // output channels per block
constexpr int64_t kGroup = 4;   // input positions per 32-bit lane

struct Int8Weights {
  at::Tensor packed;     // int8 [blocks, in_groups, 64]
  at::Tensor code_sums;  // int32 [out_features]: each channel's sum of codes
  int64_t out_features = 0, in_features = 0;
};

Int8Weights pack_int8(const at::Tensor& codes) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == at::kChar, "codes must be int8 [out, in]");
  const at::Tensor c = codes.contiguous();
  const int64_t out = c.size(0), in = c.size(1);
  const int64_t blocks = (out + kBlock - 1) / kBlock, groups = (in + kGroup - 1) / kGroup;
  Int8Weights w{at::zeros({blocks, groups, kBlock * kGroup}, c.options()), at::empty({out}, c.options().dtype(at::kInt)),
                out, in};
  const int8_t* src = c.data_ptr<int8_t>();
  int8_t* dst = w.packed.data_ptr<int8_t>();
  int32_t* sums = w.code_sums.data_ptr<int32_t>();
  at::parallel_for(0, out, 64, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      int32_t sum = 0;
      int8_t* block = dst + (o / kBlock) * groups * kBlock * kGroup + (o % kBlock) * kGroup;
      for (int64_t i = 0; i < in; ++i) {
        block[(i / kGroup) * kBlock * kGroup + i % kGroup] = src[o * in + i];
        sum += src[o * in + i];
      }
      sums[o] = sum;
    }
  });
  return w;
}

at::Tensor unpack_int8(const Int8Weights& w) {
  const int64_t out = w.out_features, in = w.in_features, groups = w.packed.size(1);
  at::Tensor codes = at::empty({out, in}, w.packed.options());
  const int8_t* src = w.packed.data_ptr<int8_t>();
  int8_t* dst = codes.data_ptr<int8_t>();
  for (int64_t o = 0; o < out; ++o) {
    const int8_t* block = src + (o / kBlock) * groups * kBlock * kGroup + (o % kBlock) * kGroup;
    for (int64_t i = 0; i < in; ++i) dst[o * in + i] = block[(i / kGroup) * kBlock * kGroup + i % kGroup];
  }
  return codes;
}

enum class Int8Path { none, avx2, vnni };

// The path this build and CPU have for activation codes up to `levels`.
Int8Path int8_path(int64_t levels) {
#if defined(__AVX512F__)
  if (__builtin_cpu_supports("avx512vnni")) return Int8Path::vnni;
#endif
#if defined(__AVX2__)
  if (levels <= 127) return Int8Path::avx2;
#endif
  (void)levels;
  return Int8Path::none;
}

std::string int8_kernel(int64_t levels) {
  switch (int8_path(levels)) {
    case Int8Path::vnni: return "avx512-vnni";
    case Int8Path::avx2: return "avx2";
    default: return "";
  }
}

// One tile: CB blocks of 16 channels by RB rows, over every input group; acc [RB][CB * 16].
#if defined(__AVX512F__)
template <int CB, int RB>
__attribute__((target("avx512vnni"))) void tile_vnni(const int8_t* w, int64_t groups, int64_t block_stride,
                                                      const uint8_t* a, int64_t a_stride, int32_t* acc_out) {
  __m512i acc[CB][RB];
  for (int c = 0; c < CB; ++c)
    for (int r = 0; r < RB; ++r) acc[c][r] = _mm512_setzero_si512();
  for (int64_t g = 0; g < groups; ++g) {
    __m512i wv[CB];
    for (int c = 0; c < CB; ++c) wv[c] = _mm512_loadu_si512(w + c * block_stride + g * kBlock * kGroup);
    for (int r = 0; r < RB; ++r) {
      int32_t four;
      std::memcpy(&four, a + r * a_stride + g * kGroup, sizeof(four));
      const __m512i av = _mm512_set1_epi32(four);
      for (int c = 0; c < CB; ++c) acc[c][r] = _mm512_dpbusd_epi32(acc[c][r], av, wv[c]);
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c) _mm512_storeu_si512(acc_out + r * CB * kBlock + c * kBlock, acc[c][r]);
}
#endif

#if defined(__AVX2__)
template <int CB, int RB>
void tile_avx2(const int8_t* w, int64_t groups, int64_t block_stride, const uint8_t* a, int64_t a_stride,
               int32_t* acc_out) {
  __m256i acc[CB][2][RB];
  const __m256i ones = _mm256_set1_epi16(1);
  for (int c = 0; c < CB; ++c)
    for (int h = 0; h < 2; ++h)
      for (int r = 0; r < RB; ++r) acc[c][h][r] = _mm256_setzero_si256();
  for (int64_t g = 0; g < groups; ++g) {
    __m256i wv[CB][2];
    for (int c = 0; c < CB; ++c)
      for (int h = 0; h < 2; ++h)
        wv[c][h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * block_stride + g * kBlock * kGroup + h * 32));
    for (int r = 0; r < RB; ++r) {
      int32_t four;
      std::memcpy(&four, a + r * a_stride + g * kGroup, sizeof(four));
      const __m256i av = _mm256_set1_epi32(four);
      for (int c = 0; c < CB; ++c)
        for (int h = 0; h < 2; ++h) {
          const __m256i pairs = _mm256_maddubs_epi16(av, wv[c][h]);  // exact: codes <= 127
          acc[c][h][r] = _mm256_add_epi32(acc[c][h][r], _mm256_madd_epi16(pairs, ones));
        }
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c)
      for (int h = 0; h < 2; ++h)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc_out + r * CB * kBlock + c * kBlock + h * 8), acc[c][h][r]);
}
#endif

enum class Store { set, gelu, add };  // out = y, out = gelu(y), out += y

// A call's quantized rows and what turns the sums into outputs.
struct Int8Call {
  const uint8_t* codes;  // [rows, groups * 4]
  int64_t code_stride;
  const int32_t* zero;  // per row
  const float* scale;   // per row
  const float* channel_scale;
  const float* bias;  // or null
  float* out;
  int64_t out_stride;
  Store store;
};

// (sum - zero * code_sum) * scale * channel_scale (+ bias), stored as `store` says: rows r0.., channels c0..
// One branch-free loop per store, so each vectorizes.
void finish(const Int8Weights& w, const Int8Call& call, const int32_t* acc, int64_t acc_stride, int64_t r0,
            int64_t rows, int64_t c0, int64_t width) {
  const int32_t* __restrict sums = w.code_sums.data_ptr<int32_t>() + c0;
  const float* __restrict cs = call.channel_scale + c0;
  const float* __restrict bias = call.bias != nullptr ? call.bias + c0 : nullptr;
  width = std::min(width, w.out_features - c0);
  float y[12 * 2 * kBlock];
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t zero = call.zero[r0 + r];
    const float scale = call.scale[r0 + r];
    const int32_t* __restrict a = acc + r * acc_stride;
    float* __restrict o = call.out + (r0 + r) * call.out_stride + c0;
    for (int64_t c = 0; c < width; ++c) y[c] = static_cast<float>(a[c] - zero * sums[c]) * scale * cs[c];
    if (bias != nullptr) {
      for (int64_t c = 0; c < width; ++c) y[c] += bias[c];
    }
    switch (call.store) {
      case Store::set:
        for (int64_t c = 0; c < width; ++c) o[c] = y[c];
        break;
      case Store::gelu:
        for (int64_t c = 0; c < width; ++c) o[c] = gelu(y[c]);
        break;
      case Store::add:
        for (int64_t c = 0; c < width; ++c) o[c] = o[c] + y[c];
        break;
    }
  }
}

template <int CB, int RB>
void run_tile(Int8Path path, const int8_t* w, int64_t groups, int64_t block_stride, const uint8_t* a, int64_t a_stride,
              int32_t* acc) {
#if defined(__AVX512F__)
  if (path == Int8Path::vnni) return tile_vnni<CB, RB>(w, groups, block_stride, a, a_stride, acc);
#endif
#if defined(__AVX2__)
  tile_avx2<CB, RB>(w, groups, block_stride, a, a_stride, acc);
#endif
  (void)path, (void)w, (void)groups, (void)block_stride, (void)a, (void)a_stride, (void)acc;
}

// Rows per tile: as many as the registers hold beside the weights (32 zmm with VNNI, 16 ymm without).
template <int CB>
constexpr int max_rows(bool vnni) {
  return vnni ? (CB == 1 ? 12 : CB == 2 ? 8 : 4) : (CB == 1 ? 6 : 2);
}

// Every row against CB blocks starting at block b0.
template <int CB>
void column_tiles(Int8Path path, const Int8Weights& w, const Int8Call& call, int64_t rows, int64_t b0) {
  const int64_t groups = w.packed.size(1), block_stride = groups * kBlock * kGroup;
  const int8_t* wb = w.packed.data_ptr<int8_t>() + b0 * block_stride;
  const int rmax = path == Int8Path::vnni ? max_rows<CB>(true) : max_rows<CB>(false);
  int32_t acc[12 * CB * kBlock];
  for (int64_t r = 0; r < rows; r += rmax) {
    const int64_t n = std::min<int64_t>(rmax, rows - r);
    const uint8_t* a = call.codes + r * call.code_stride;
    switch (n) {
#define AUDIOCRAFT_TILE(R)                                                          \
  case R:                                                                           \
    run_tile<CB, R>(path, wb, groups, block_stride, a, call.code_stride, acc); \
    break;
      AUDIOCRAFT_TILE(1) AUDIOCRAFT_TILE(2) AUDIOCRAFT_TILE(3) AUDIOCRAFT_TILE(4) AUDIOCRAFT_TILE(5)
      AUDIOCRAFT_TILE(6) AUDIOCRAFT_TILE(7) AUDIOCRAFT_TILE(8) AUDIOCRAFT_TILE(9) AUDIOCRAFT_TILE(10)
      AUDIOCRAFT_TILE(11) AUDIOCRAFT_TILE(12)
#undef AUDIOCRAFT_TILE
      default: TORCH_CHECK(false, "tile of ", n, " rows");
    }
    finish(w, call, acc, CB * kBlock, r, n, b0 * kBlock, CB * kBlock);
  }
}

#if defined(__AVX2__)
// codes[i] = clamp(round_half_even(x[i] / scale + zero), 0, top): quantize_spans' codes, bit for bit
// (a product by 1 / scale, fused or not, rounds a few codes the other way).
void quantize_row(const float* x, int64_t n, float scale, float zero, int32_t top, uint8_t* codes) {
  const __m256 sc = _mm256_set1_ps(scale), z = _mm256_set1_ps(zero);
  const __m256i zero_i = _mm256_setzero_si256(), top_i = _mm256_set1_epi32(top);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i c = _mm256_cvtps_epi32(_mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), sc), z));  // nearest, ties even
    c = _mm256_min_epi32(_mm256_max_epi32(c, zero_i), top_i);
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(c, c), zero_i);
    const uint32_t low = static_cast<uint32_t>(_mm256_extract_epi32(bytes, 0));
    const uint32_t high = static_cast<uint32_t>(_mm256_extract_epi32(bytes, 4));
    std::memcpy(codes + i, &low, 4);
    std::memcpy(codes + i + 4, &high, 4);
  }
  for (; i < n; ++i) {
    const float v = std::nearbyint(x[i] / scale + zero);
    codes[i] = static_cast<uint8_t>(std::min(std::max(v, 0.0f), static_cast<float>(top)));
  }
}
#endif

// x [rows, in] float32 contiguous, each request's rows (ends) quantized with its own range (0 in it;
// scale and zero point as qparams gives them) to codes 0..levels; then the matmul and `store` into
// out [rows, out_features]. One OpenMP region for the whole call: the threads split the rows to
// quantize, then the output channels (two barriers instead of two fork-joins: at one request a call
// is ~100 us, and each fork-join cost several).
void int8_matmul(Int8Path path, const Int8Weights& w, const float* x, int64_t rows, const std::vector<int64_t>& ends,
                 int64_t levels, const float* channel_scale, const float* bias, float* out, Store store) {
#if defined(__AVX2__)
  const int64_t in = w.in_features, groups = w.packed.size(1), stride = groups * kGroup;
  std::vector<uint8_t> codes(rows * stride, 0);
  std::vector<int32_t> zero(rows);
  std::vector<float> scale(rows), lo(rows), hi(rows);
  std::vector<int64_t> span_of(rows);
  for (int64_t s = 0, first = 0; s < static_cast<int64_t>(ends.size()); first = ends[s++]) {
    TORCH_CHECK(ends[s] > first && ends[s] <= rows, "spans must be non-empty and in order");
    for (int64_t r = first; r < ends[s]; ++r) span_of[r] = s;
  }
  TORCH_CHECK(!ends.empty() && ends.back() == rows, "the spans must end at the last row");
  const Int8Call call{codes.data(), stride, zero.data(), scale.data(), channel_scale, bias, out, w.out_features, store};
  const int64_t blocks = w.packed.size(0);
  // Few rows stream the weights (one block per tile); more reuse each weight load: with VNNI, tiles of
  // 4 blocks by 4 rows were the fastest at 20 rows (musicgen-small's shapes, AMD EPYC Zen 5, 2 threads:
  // 390-420 GMAC/s against 305-340 for 2 blocks by 8 rows, 240 for 1 by 12); AVX2's registers hold 2.
  const bool vnni = path == Int8Path::vnni;
  const int64_t cb = rows <= 4 ? 1 : vnni && blocks % 4 == 0 ? 4 : blocks % 2 == 0 ? 2 : 1;
  const int64_t tiles = blocks / cb;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles)));
#pragma omp parallel num_threads(threads)
  {
    const int64_t tid = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t r = tid; r < rows; r += nt) std::tie(lo[r], hi[r]) = range_with_zero(x + r * in, in);
#pragma omp barrier
    for (int64_t r = tid; r < rows; r += nt) {
      const int64_t s = span_of[r], first = s == 0 ? 0 : ends[s - 1];
      float a = 0.0f, b = 0.0f;
      for (int64_t q = first; q < ends[s]; ++q) a = std::min(a, lo[q]), b = std::max(b, hi[q]);
      const auto [sc, zp] = qparams(a, b, levels);
      quantize_row(x + r * in, in, sc, static_cast<float>(zp), static_cast<int32_t>(levels),
                   codes.data() + r * stride);
      zero[r] = static_cast<int32_t>(zp);
      scale[r] = sc;
    }
#pragma omp barrier
    for (int64_t t = tid * tiles / nt, end = (tid + 1) * tiles / nt; t < end; ++t) {
      if (cb == 1) column_tiles<1>(path, w, call, rows, t);
      else if (cb == 2) column_tiles<2>(path, w, call, rows, t * 2);
      else column_tiles<4>(path, w, call, rows, t * 4);
    }
  }
#else
  (void)path, (void)w, (void)x, (void)rows, (void)ends, (void)levels, (void)channel_scale, (void)bias, (void)out, (void)store;
  TORCH_CHECK(false, "this build has no int8 kernel");
#endif
}

// int8_linear: x [rows, in] float32, ends: each request's last row + 1. Returns [rows, out] float32.
at::Tensor int8_linear(const Int8Weights& w, const at::Tensor& x, const std::vector<int64_t>& ends, int64_t levels,
                       const at::Tensor& channel_scale, const c10::optional<at::Tensor>& bias) {
  const Int8Path path = int8_path(levels);
  TORCH_CHECK(path != Int8Path::none, "this build and CPU have no int8 kernel for activation codes up to ", levels);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == w.in_features && x.scalar_type() == at::kFloat, "x must be float32 [rows, ",
              w.in_features, "]");
  TORCH_CHECK(!ends.empty() && ends.back() == x.size(0), "the spans must end at the last row");
  TORCH_CHECK(channel_scale.numel() == w.out_features && channel_scale.scalar_type() == at::kFloat,
              "one float32 channel scale per output");
  const at::Tensor xc = x.contiguous(), cs = channel_scale.contiguous();
  c10::optional<at::Tensor> b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->numel() == w.out_features && bias->scalar_type() == at::kFloat, "one float32 bias per output");
    b = bias->contiguous();
  }
  at::Tensor out = at::empty({x.size(0), w.out_features}, x.options());
  pybind11::gil_scoped_release no_gil;
  int8_matmul(path, w, xc.data_ptr<float>(), x.size(0), ends, levels, cs.data_ptr<float>(),
              b.has_value() ? b->data_ptr<float>() : nullptr, out.data_ptr<float>(), Store::set);
  return out;
}

// fbgemm's prepacked weights, from the Python object torch.ops.quantized.linear_prepack returned.
c10::intrusive_ptr<LinearPackedParamsBase> unwrap_packed(const pybind11::object& packed) {
  auto object = pybind11::cast<torch::jit::Object>(packed)._ivalue();
  const std::string name = object->type()->name()->qualifiedName();
  TORCH_CHECK(name == "__torch__.torch.classes.quantized.LinearPackedParamsBase", "not fbgemm's packed weights: ", name);
  return c10::static_intrusive_pointer_cast<LinearPackedParamsBase>(object->getSlot(0).toCapsule());
}

struct Linear {
  c10::intrusive_ptr<LinearPackedParamsBase> packed;  // fbgemm's, or null where `own` holds the weights
  c10::optional<Int8Weights> own;                      // the engine's int8 layout (int8_linear)
  at::Tensor code_sums, channel_scale;                 // code_sums: fbgemm's path only
  c10::optional<at::Tensor> bias;
};

struct Norm {
  at::Tensor weight, bias;
  double eps;
};

struct Layer {
  Norm norm_self;
  Linear qkv, out;
  c10::optional<Norm> norm_cross;
  c10::optional<Linear> cross_q, cross_out;
  Norm norm_ffn;
  Linear fc1, fc2;
};

// qdynamic.linear through fbgemm, then the bias: x [rows, in] contiguous float32, ends as quantize_spans takes them.
at::Tensor fbgemm_linear(const Linear& l, const at::Tensor& x, const std::vector<int64_t>& ends, int64_t levels) {
  at::Tensor out;
  if (ends.size() == 1) {  // fbgemm quantizes a request alone itself
    const auto [lo, hi] = range_with_zero(x.data_ptr<float>(), x.numel());
    const auto [scale, zero_point] = qparams(lo, hi, levels);
    out = l.packed->apply_with_input_q_dq_qweight_dq_output_fp32(x, scale, zero_point);
    float* o = out.data_ptr<float>();  // out * channel_scale, as mul_ would, without its dispatch
    const float* cs = l.channel_scale.data_ptr<float>();
    for (int64_t r = 0, rows = out.size(0), cols = out.size(1); r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) o[r * cols + c] *= cs[c];
    }
  } else {
    const int64_t shared_zero = (levels + 1) / 2;
    auto [codes, scales, shifts] = quantize_spans(x, ends, levels, shared_zero);
    out = l.packed->apply_with_input_q_dq_qweight_dq_output_fp32(codes, 1.0, shared_zero);
    dequantize_rows(out, shifts, l.code_sums, scales, l.channel_scale);
  }
  if (l.bias.has_value()) out.add_(*l.bias);
  return out;
}

at::Tensor norm(const Norm& n, const at::Tensor& x) {
  at::Tensor out = at::empty_like(x);
  layer_norm_rows(x.data_ptr<float>(), out.data_ptr<float>(), x.size(0), x.size(1), n.weight.data_ptr<float>(),
                  n.bias.data_ptr<float>(), static_cast<float>(n.eps));
  return out;
}

class Decoder {
 public:
  Decoder(int64_t hidden, int64_t heads, double scale, int64_t levels)
      : hidden_(hidden), heads_(heads), dim_(hidden / heads), scale_(static_cast<float>(scale)), levels_(levels),
        path_(int8_path(levels)) {
    TORCH_CHECK(hidden % heads == 0, "hidden size must split into heads");
  }

  void add_layer(const Layer& layer) {
    TORCH_CHECK(layers_.empty() || layer.cross_q.has_value() == layers_[0].cross_q.has_value(),
                "every layer has cross-attention, or none");
    layers_.push_back(layer);
  }

  void set_head(const Norm& final_norm, const Linear& heads) {
    final_norm_ = final_norm;
    heads_out_ = heads;
  }

  // h [R, hidden] float32: the step's input embeddings (codebooks and positions summed). self_k/self_v:
  // each request's whole cache; lengths: positions each attends over (the new one, written here, last).
  // cross_k/cross_v/text_lengths: each request's text keys (none for a decoder without cross-attention).
  // cond_rows: each request's conditional row in h. Returns the logits [R, heads' outputs].
  at::Tensor step(at::Tensor h, const std::vector<at::Tensor>& self_k, const std::vector<at::Tensor>& self_v,
                  const std::vector<int64_t>& lengths, const std::vector<at::Tensor>& cross_k,
                  const std::vector<at::Tensor>& cross_v, const std::vector<int64_t>& text_lengths,
                  const std::vector<int64_t>& cond_rows) {
    TORCH_CHECK(!layers_.empty() && heads_out_.has_value(), "the decoder has no layers or heads yet");
    TORCH_CHECK(h.dim() == 2 && h.size(1) == hidden_ && h.scalar_type() == at::kFloat, "h must be float32 [rows, ",
                hidden_, "]");
    const int64_t layers = static_cast<int64_t>(layers_.size());
    check_caches(self_k, self_v, lengths, 1, heads_, dim_, "self-attention cache");
    TORCH_CHECK(self_k[0].size(0) == layers, "the caches must hold ", layers, " layers");
    const Rows self_rows = rows_of(self_k, lengths, 1);
    const std::vector<int64_t>& row_request = self_rows.request;
    const std::vector<int64_t>& ends = self_rows.ends;
    const int64_t rows = static_cast<int64_t>(row_request.size());
    TORCH_CHECK(h.size(0) == rows, "h has ", h.size(0), " rows, the caches ", rows);
    const bool cross = layers_[0].cross_q.has_value();
    Rows cond;  // the conditional rows, one per request
    if (cross) {
      check_caches(cross_k, cross_v, text_lengths, 1, heads_, dim_, "cross-attention keys");
      TORCH_CHECK(cond_rows.size() == self_k.size(), "one conditional row per request");
      cond = rows_of(cross_k, text_lengths, 1);
      for (size_t i = 0; i < cond_rows.size(); ++i) {
        TORCH_CHECK(cross_k[i].size(1) == 1, "cross-attention keys hold the conditional row only");
        TORCH_CHECK(cond_rows[i] >= 0 && cond_rows[i] < rows && row_request[cond_rows[i]] == static_cast<int64_t>(i),
                    "request ", i, "'s conditional row ", cond_rows[i], " is not one of its rows");
      }
    }
    const at::ScalarType cache_dtype = self_k[0].scalar_type();
    const at::ScalarType text_dtype = cross ? cross_k[0].scalar_type() : at::kFloat;
    const int64_t n_cond = static_cast<int64_t>(cond_rows.size());

    pybind11::gil_scoped_release no_gil;
    h = h.contiguous().clone();  // the caller's tensor is not changed
    float* hp = h.data_ptr<float>();
    for (int64_t li = 0; li < layers; ++li) {
      const Layer& layer = layers_[li];
      // self-attention
      at::Tensor qkv = linear(layer.qkv, norm(layer.norm_self, h), ends);
      at::Tensor att = at::empty({rows, hidden_}, h.options());
      const float* qp = qkv.data_ptr<float>();
      attend_rows(qp, qkv.stride(0), qp + hidden_, qp + 2 * hidden_, qkv.stride(0),
                  layer_caches(self_k, self_v, lengths, 1, li), row_request, heads_, dim_, self_rows.max_length, scale_,
                  cache_dtype, att.data_ptr<float>());
      linear_into(layer.out, att, ends, hp, Store::add);

      // cross-attention, conditional rows only (the null rows' is exactly 0)
      if (cross) {
        at::Tensor cond_h = at::empty({n_cond, hidden_}, h.options());
        for (int64_t i = 0; i < n_cond; ++i) {
          std::memcpy(cond_h.data_ptr<float>() + i * hidden_, hp + cond_rows[i] * hidden_, hidden_ * sizeof(float));
        }
        at::Tensor cq = linear(*layer.cross_q, norm(*layer.norm_cross, cond_h), cond.ends);
        at::Tensor catt = at::empty({n_cond, hidden_}, h.options());
        attend_rows(cq.data_ptr<float>(), cq.stride(0), nullptr, nullptr, 0,
                    layer_caches(cross_k, cross_v, text_lengths, 1, li), cond.request, heads_, dim_, cond.max_length,
                    scale_, text_dtype, catt.data_ptr<float>());
        add_rows(hp, linear(*layer.cross_out, catt, cond.ends), &cond_rows);
      }

      // feed-forward
      at::Tensor f = linear(layer.fc1, norm(layer.norm_ffn, h), ends, Store::gelu);
      linear_into(layer.fc2, f, ends, hp, Store::add);
    }
    return linear(*heads_out_, norm(*final_norm_, h), ends);
  }

 private:
  // y = x W^T + b into out [rows, outputs] as `store` says: the engine's int8 matmul where it holds the
  // weights (the store fused into it), else fbgemm's and a pass after.
  void linear_into(const Linear& l, const at::Tensor& x, const std::vector<int64_t>& ends, float* out,
                   Store store) const {
    if (l.own.has_value() && path_ != Int8Path::none) {
      int8_matmul(path_, *l.own, x.data_ptr<float>(), x.size(0), ends, levels_, l.channel_scale.data_ptr<float>(),
                  l.bias.has_value() ? l.bias->data_ptr<float>() : nullptr, out, store);
      return;
    }
    TORCH_CHECK(l.packed, "the engine's int8 kernel does not run here and the layer has no fbgemm weights");
    const at::Tensor y = fbgemm_linear(l, x, ends, levels_);
    const float* yp = y.data_ptr<float>();
    for (int64_t i = 0, n = y.numel(); i < n; ++i) {
      out[i] = store == Store::add ? out[i] + yp[i] : store == Store::gelu ? gelu(yp[i]) : yp[i];
    }
  }

  at::Tensor linear(const Linear& l, const at::Tensor& x, const std::vector<int64_t>& ends,
                    Store store = Store::set) const {
    const int64_t outputs = l.own.has_value() ? l.own->out_features : l.channel_scale.numel();
    at::Tensor out = at::empty({x.size(0), outputs}, x.options());
    linear_into(l, x, ends, out.data_ptr<float>(), store);
    return out;
  }

  // h[rows[i]] += x[i] (every row in order when rows is null), one IEEE add per element.
  void add_rows(float* h, const at::Tensor& x, const std::vector<int64_t>* rows) const {
    const float* xp = x.data_ptr<float>();
    for (int64_t i = 0, n = x.size(0); i < n; ++i) {
      float* dst = h + (rows != nullptr ? (*rows)[i] : i) * hidden_;
      const float* src = xp + i * hidden_;
      for (int64_t d = 0; d < hidden_; ++d) dst[d] = dst[d] + src[d];
    }
  }

  int64_t hidden_, heads_, dim_;
  float scale_;
  int64_t levels_;
  Int8Path path_;
  std::vector<Layer> layers_;
  c10::optional<Norm> final_norm_;
  c10::optional<Linear> heads_out_;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attend", &attend, "Per-request attention over caches, batch-invariant", pybind11::arg("q"),
        pybind11::arg("k_caches"), pybind11::arg("v_caches"), pybind11::arg("lengths"), pybind11::arg("scale"),
        pybind11::arg("k_new") = pybind11::none(), pybind11::arg("v_new") = pybind11::none());
  m.def("quantize_spans", &quantize_spans, "Per-request activation codes for fbgemm's int8 matmul");
  m.def("dequantize_rows", &dequantize_rows, "Per-request and per-channel scales after fbgemm's int8 matmul");
  namespace py = pybind11;
  py::class_<Int8Weights>(m, "Int8Weights")
      .def(py::init(&pack_int8), py::arg("codes"))
      .def("codes", &unpack_int8)
      .def_property_readonly("code_sums", [](const Int8Weights& w) { return w.code_sums; })
      .def_property_readonly("shape", [](const Int8Weights& w) { return std::make_pair(w.out_features, w.in_features); });
  m.def("int8_kernel", &int8_kernel, "The engine's int8 matmul for activation codes up to levels: its name, or ''");
  m.def("int8_linear", &int8_linear, "x W^T for the engine's int8 weights, x quantized per request",
        py::arg("weights"), py::arg("x"), py::arg("ends"), py::arg("levels"), py::arg("channel_scale"),
        py::arg("bias") = py::none());
  py::class_<Linear>(m, "Linear")
      .def(py::init([](const py::object& packed, at::Tensor code_sums, at::Tensor channel_scale,
                       c10::optional<at::Tensor> bias) {
             TORCH_CHECK(channel_scale.scalar_type() == at::kFloat && (!bias.has_value() || bias->scalar_type() == at::kFloat),
                         "channel scales and bias must be float32");
             if (bias.has_value()) bias = bias->contiguous();
             if (py::isinstance<Int8Weights>(packed)) {
               return Linear{{}, packed.cast<Int8Weights>(), code_sums, channel_scale.contiguous(), bias};
             }
             return Linear{unwrap_packed(packed), {}, code_sums.contiguous(), channel_scale.contiguous(), bias};
           }),
           py::arg("packed"), py::arg("code_sums"), py::arg("channel_scale"), py::arg("bias") = py::none());
  py::class_<Norm>(m, "Norm")
      .def(py::init([](at::Tensor weight, at::Tensor bias, double eps) {
             TORCH_CHECK(weight.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat &&
                             weight.is_contiguous() && bias.is_contiguous(),
                         "norm weights must be contiguous float32");
             return Norm{weight, bias, eps};
           }),
           py::arg("weight"), py::arg("bias"), py::arg("eps"));
  py::class_<Layer>(m, "Layer")
      .def(py::init([](const Norm& norm_self, const Linear& qkv, const Linear& out, c10::optional<Norm> norm_cross,
                       c10::optional<Linear> cross_q, c10::optional<Linear> cross_out, const Norm& norm_ffn,
                       const Linear& fc1, const Linear& fc2) {
             TORCH_CHECK(norm_cross.has_value() == cross_q.has_value() && cross_q.has_value() == cross_out.has_value(),
                         "cross-attention needs its norm, query and output together");
             return Layer{norm_self, qkv, out, norm_cross, cross_q, cross_out, norm_ffn, fc1, fc2};
           }),
           py::arg("norm_self"), py::arg("qkv"), py::arg("out"), py::arg("norm_cross"), py::arg("cross_q"),
           py::arg("cross_out"), py::arg("norm_ffn"), py::arg("fc1"), py::arg("fc2"));
  py::class_<Decoder>(m, "Decoder")
      .def(py::init<int64_t, int64_t, double, int64_t>(), py::arg("hidden"), py::arg("heads"), py::arg("scale"),
           py::arg("levels"))
      .def("add_layer", &Decoder::add_layer)
      .def("set_head", &Decoder::set_head)
      .def("step", &Decoder::step);
}
