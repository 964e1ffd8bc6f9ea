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

// The smallest and largest of p[0..n), with 0 in the range (a request's quantization range).
inline std::pair<float, float> range_with_zero(const float* p, int64_t n) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
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
// call, for server/engine/fastlm.py's FastLM.step: fbgemm's int8 matmul called directly, the functions
// above, and its own layer norm and GELU. What it saves is the Python and dispatch between ~850 small
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

// x * Phi(x), Phi through erf (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7), in place.
void gelu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
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
    x[i] = 0.5f * v * (1.0f + erf);
  }
}

// fbgemm's prepacked weights, from the Python object torch.ops.quantized.linear_prepack returned.
c10::intrusive_ptr<LinearPackedParamsBase> unwrap_packed(const pybind11::object& packed) {
  auto object = pybind11::cast<torch::jit::Object>(packed)._ivalue();
  const std::string name = object->type()->name()->qualifiedName();
  TORCH_CHECK(name == "__torch__.torch.classes.quantized.LinearPackedParamsBase", "not fbgemm's packed weights: ", name);
  return c10::static_intrusive_pointer_cast<LinearPackedParamsBase>(object->getSlot(0).toCapsule());
}

struct Linear {
  c10::intrusive_ptr<LinearPackedParamsBase> packed;
  at::Tensor code_sums, channel_scale;
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

// qdynamic.linear, then the bias: x [rows, in] contiguous float32, ends as quantize_spans takes them.
at::Tensor linear(const Linear& l, const at::Tensor& x, const std::vector<int64_t>& ends, int64_t levels) {
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
      : hidden_(hidden), heads_(heads), dim_(hidden / heads), scale_(static_cast<float>(scale)), levels_(levels) {
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
      at::Tensor qkv = linear(layer.qkv, norm(layer.norm_self, h), ends, levels_);
      at::Tensor att = at::empty({rows, hidden_}, h.options());
      const float* qp = qkv.data_ptr<float>();
      attend_rows(qp, qkv.stride(0), qp + hidden_, qp + 2 * hidden_, qkv.stride(0),
                  layer_caches(self_k, self_v, lengths, 1, li), row_request, heads_, dim_, self_rows.max_length, scale_,
                  cache_dtype, att.data_ptr<float>());
      add_rows(hp, linear(layer.out, att, ends, levels_), nullptr);

      // cross-attention, conditional rows only (the null rows' is exactly 0)
      if (cross) {
        at::Tensor cond_h = at::empty({n_cond, hidden_}, h.options());
        for (int64_t i = 0; i < n_cond; ++i) {
          std::memcpy(cond_h.data_ptr<float>() + i * hidden_, hp + cond_rows[i] * hidden_, hidden_ * sizeof(float));
        }
        at::Tensor cq = linear(*layer.cross_q, norm(*layer.norm_cross, cond_h), cond.ends, levels_);
        at::Tensor catt = at::empty({n_cond, hidden_}, h.options());
        attend_rows(cq.data_ptr<float>(), cq.stride(0), nullptr, nullptr, 0,
                    layer_caches(cross_k, cross_v, text_lengths, 1, li), cond.request, heads_, dim_, cond.max_length,
                    scale_, text_dtype, catt.data_ptr<float>());
        add_rows(hp, linear(*layer.cross_out, catt, cond.ends, levels_), &cond_rows);
      }

      // feed-forward
      at::Tensor f = linear(layer.fc1, norm(layer.norm_ffn, h), ends, levels_);
      gelu_inplace(f.data_ptr<float>(), f.numel());
      add_rows(hp, linear(layer.fc2, f, ends, levels_), nullptr);
    }
    return linear(*heads_out_, norm(*final_norm_, h), ends, levels_);
  }

 private:
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
  py::class_<Linear>(m, "Linear")
      .def(py::init([](const py::object& packed, at::Tensor code_sums, at::Tensor channel_scale,
                       c10::optional<at::Tensor> bias) {
             return Linear{unwrap_packed(packed), code_sums.contiguous(), channel_scale.contiguous(), bias};
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
