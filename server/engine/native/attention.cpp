// One decode step's attention for every request of a batch, in one call (server/engine/native/__init__.py
// builds and loads this file; server/engine/fastlm.py calls it).
//
// Why it exists: torch's CPU attention gives a row other bits in batches of other sizes, so the engine
// ran it once per request and layer, each time after copying the request's bf16 cache prefix to fp32.
// At 10 requests on musicgen-small that was ~480 small calls a step and 47 ms of a 150 ms step
// (docs/benchmarks.md, issue 20 part 3). Here every (row, head) is one task that reads its keys and
// values straight from the cache in its own dtype, with a fixed order of operations: a row's numbers
// do not depend on the batch, on the thread count, or on how tasks are split over threads.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kLanes = 16;  // partial sums per dot product: the loop vectorizes without reassociation

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

template <typename T>
inline float dot(const float* q, const T* k, int64_t dim) {
  float acc[kLanes] = {0};
  int64_t d = 0;
  for (; d + kLanes <= dim; d += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += q[d + l] * load(k + d + l);
  }
  for (int l = 0; d + l < dim; ++l) acc[l] += q[d + l] * load(k + d + l);  // a tail (the tiny test models)
  for (int width = kLanes / 2; width > 0; width /= 2) {  // a fixed tree
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
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
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) partial[l] += partial[l + width];
  }
  for (int64_t d = 0; d < dim; ++d) out[d] = 0.0f;
  for (int64_t jj = 0; jj < length; ++jj) {
    const T* vj = v + jj * c.pos_stride;
    const float w = scores[jj];
    for (int64_t d = 0; d < dim; ++d) out[d] += w * load(vj + d);
  }
  const float inv = 1.0f / partial[0];
  for (int64_t d = 0; d < dim; ++d) out[d] *= inv;
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
  const int64_t requests = static_cast<int64_t>(k_caches.size());
  TORCH_CHECK(requests > 0 && static_cast<int64_t>(v_caches.size()) == requests &&
                  static_cast<int64_t>(lengths.size()) == requests,
              "one key cache, value cache and length per request");
  const at::ScalarType dtype = k_caches[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "caches must be float32 or bfloat16");
  const int64_t heads = k_caches[0].size(1), dim = k_caches[0].size(3);
  std::vector<Cache> caches(requests);
  std::vector<int64_t> row_request;  // the request of each row of q
  int64_t max_length = 0;
  for (int64_t i = 0; i < requests; ++i) {
    const at::Tensor &k = k_caches[i], &v = v_caches[i];
    TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes() && k.strides() == v.strides(), "request ", i,
                ": key and value caches must be [rows, heads, positions, head_dim] alike");
    TORCH_CHECK(k.scalar_type() == dtype && v.scalar_type() == dtype, "request ", i, ": caches of one dtype");
    TORCH_CHECK(k.size(1) == heads && k.size(3) == dim && k.stride(3) == 1, "request ", i, ": cache shape");
    TORCH_CHECK(lengths[i] >= 1 && lengths[i] <= k.size(2), "request ", i, ": length ", lengths[i], " outside 1..",
                k.size(2));
    caches[i] = Cache{k.data_ptr(), v.data_ptr(), k.stride(0), k.stride(1), k.stride(2), lengths[i],
                      static_cast<int64_t>(row_request.size())};
    row_request.insert(row_request.end(), k.size(0), i);
    max_length = std::max(max_length, lengths[i]);
  }
  const int64_t rows = static_cast<int64_t>(row_request.size()), width = heads * dim;
  check_rows(q, "q", rows, width);
  const bool write = k_new.has_value();
  TORCH_CHECK(write == v_new.has_value(), "k_new and v_new come together");
  if (write) {
    check_rows(*k_new, "k_new", rows, width);
    check_rows(*v_new, "v_new", rows, width);
  }
  at::Tensor out = at::empty({rows, width}, q.options());
  const float* q_ptr = q.data_ptr<float>();
  const float* k_new_ptr = write ? k_new->data_ptr<float>() : nullptr;
  const float* v_new_ptr = write ? v_new->data_ptr<float>() : nullptr;
  const int64_t q_stride = q.stride(0), new_stride = write ? k_new->stride(0) : 0;
  float* out_ptr = out.data_ptr<float>();
  const float scale_f = static_cast<float>(scale);
  {
    pybind11::gil_scoped_release no_gil;
    // Tasks are (row, head) pairs; how they are split over threads changes no number.
    at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(max_length);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t row = task / heads, head = task % heads;
        const Cache& c = caches[row_request[row]];
        const int64_t offset = head * dim;
        const float* kn = write ? k_new_ptr + row * new_stride + offset : nullptr;
        const float* vn = write ? v_new_ptr + row * new_stride + offset : nullptr;
        const float* qr = q_ptr + row * q_stride + offset;
        float* o = out_ptr + row * width + offset;
        if (dtype == at::kFloat) {
          attend_one<float>(qr, kn, vn, c, row - c.first_row, head, dim, scale_f, scores.data(), o);
        } else {
          attend_one<c10::BFloat16>(qr, kn, vn, c, row - c.first_row, head, dim, scale_f, scores.data(), o);
        }
      }
    });
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attend", &attend, "Per-request attention over caches, batch-invariant", pybind11::arg("q"),
        pybind11::arg("k_caches"), pybind11::arg("v_caches"), pybind11::arg("lengths"), pybind11::arg("scale"),
        pybind11::arg("k_new") = pybind11::none(), pybind11::arg("v_new") = pybind11::none());
}
