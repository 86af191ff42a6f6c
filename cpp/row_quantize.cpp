#include "row_quantize.h"

#include "ort_runtime.h"

#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <vector>

namespace fastembed {
namespace {

// ---------------------------------------------------------------------------------------------
// One row: its scale, then its bytes. The scalar loop is the reference; the AVX-512 one computes
// the same values (division, then round-half-even, as ONNX's QuantizeLinear and ORT's MLAS do).

float row_scale_of(float max, float min, const RowQuantizeParams& p) {
  const float neg = -min * (p.symmetric ? 1.0f : 0.0f);  // as the body: Mul(Neg(min), symmetric)
  return std::max(std::max(max, neg), p.floor) * p.inv_range;
}

void quantize_row_scalar(const float* x, int64_t k, const RowQuantizeParams& p, uint8_t* q, float* scale) {
  float max = x[0], min = x[0];
  for (int64_t i = 1; i < k; ++i) {
    max = std::max(max, x[i]);
    min = std::min(min, x[i]);
  }
  const float s = row_scale_of(max, min, p);
  const float lo = -static_cast<float>(p.zero_point), hi = 255.0f - static_cast<float>(p.zero_point);
  for (int64_t i = 0; i < k; ++i) {
    const float v = std::min(std::max(x[i] / s, lo), hi);
    q[i] = static_cast<uint8_t>(static_cast<int>(std::nearbyint(v)) + p.zero_point);
  }
  *scale = s;
}

// 16 values: divide, clamp to the byte range, round half to even (cvtps, default MXCSR), add the zero point.
__attribute__((target("avx512f"))) inline __m512i quantize16(__m512 v, __m512 scale, __m512 lo, __m512 hi,
                                                             __m512i zero_point) {
  v = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(v, scale), lo), hi);
  return _mm512_add_epi32(_mm512_cvtps_epi32(v), zero_point);
}

__attribute__((target("avx512f"))) void quantize_row_avx512(const float* x, int64_t k, const RowQuantizeParams& p,
                                                            uint8_t* q, float* scale) {
  __m512 vmax = _mm512_set1_ps(x[0]), vmin = vmax;
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    vmax = _mm512_max_ps(vmax, v);
    vmin = _mm512_min_ps(vmin, v);
  }
  const __mmask16 tail = static_cast<__mmask16>((1u << (k - i)) - 1u);
  if (tail != 0) {
    const __m512 v = _mm512_maskz_loadu_ps(tail, x + i);
    vmax = _mm512_mask_max_ps(vmax, tail, vmax, v);
    vmin = _mm512_mask_min_ps(vmin, tail, vmin, v);
  }
  const float s = row_scale_of(_mm512_reduce_max_ps(vmax), _mm512_reduce_min_ps(vmin), p);
  const __m512 vs = _mm512_set1_ps(s);
  const __m512 lo = _mm512_set1_ps(-static_cast<float>(p.zero_point));
  const __m512 hi = _mm512_set1_ps(255.0f - static_cast<float>(p.zero_point));
  const __m512i zp = _mm512_set1_epi32(p.zero_point);
  for (i = 0; i + 16 <= k; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                     _mm512_cvtepi32_epi8(quantize16(_mm512_loadu_ps(x + i), vs, lo, hi, zp)));
  }
  if (tail != 0)
    _mm512_mask_cvtepi32_storeu_epi8(q + i, tail, quantize16(_mm512_maskz_loadu_ps(tail, x + i), vs, lo, hi, zp));
  *scale = s;
}

using RowFn = void (*)(const float*, int64_t, const RowQuantizeParams&, uint8_t*, float*);

RowFn row_fn() {
  static const RowFn fn = __builtin_cpu_supports("avx512f") ? quantize_row_avx512 : quantize_row_scalar;
  return fn;
}

// ---------------------------------------------------------------------------------------------
// The ONNX Runtime kernel (C API custom op). Errors go back to ORT as an OrtStatus naming the node's
// problem; ORT raises them from Run.

struct Kernel {
  const OrtApi* api;
  RowQuantizeParams params;
  bool split;
};

OrtStatus* error(const OrtApi* api, const std::string& message) {
  return api->CreateStatus(ORT_INVALID_ARGUMENT, message.c_str());
}

#define FASTEMBED_RETURN_IF(statustatus_expr)      \
  do {                                             \
    if (OrtStatus* status_ = (statustatus_expr)) { \
      return status_;                              \
    }                                              \
  } while (0)

OrtStatus* get_float(const OrtApi* api, const OrtKernelInfo* info, const char* name, float* out) {
  return api->KernelInfoGetAttribute_float(info, name, out);
}

OrtStatus* create_kernel(const OrtApi* api, const OrtKernelInfo* info, bool split, void** out) {
  int64_t zero_point = 0, symmetric = 0;
  float inv_range = 0.0f, floor = 0.0f;
  FASTEMBED_RETURN_IF(api->KernelInfoGetAttribute_int64(info, "zero_point", &zero_point));
  FASTEMBED_RETURN_IF(api->KernelInfoGetAttribute_int64(info, "symmetric", &symmetric));
  FASTEMBED_RETURN_IF(get_float(api, info, "inv_range", &inv_range));
  FASTEMBED_RETURN_IF(get_float(api, info, "floor", &floor));
  if (zero_point < 0 || zero_point > 255 || (symmetric != 0 && symmetric != 1) || !(inv_range > 0.0f) ||
      !(floor > 0.0f) || !std::isfinite(inv_range) || !std::isfinite(floor)) {
    return error(api,
                 "RowQuantize: attributes out of range (zero_point 0..255, symmetric 0 or 1, inv_range and "
                 "floor finite and > 0)");
  }
  auto* kernel = new Kernel{api, {}, split};
  kernel->params.zero_point = static_cast<uint8_t>(zero_point);
  kernel->params.inv_range = inv_range;
  kernel->params.floor = floor;
  kernel->params.symmetric = symmetric == 1;
  *out = kernel;
  return nullptr;
}

struct Shape {
  std::vector<int64_t> dims;
  int64_t count = 0;
};

OrtStatus* shape_of(const OrtApi* api, const OrtValue* value, Shape& shape) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  FASTEMBED_RETURN_IF(api->GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatus* status = api->GetDimensionsCount(info, &rank);
  if (status == nullptr) {
    shape.dims.resize(rank);
    status = api->GetDimensions(info, shape.dims.data(), rank);
  }
  api->ReleaseTensorTypeAndShapeInfo(info);
  shape.count = 1;
  for (int64_t d : shape.dims) shape.count *= d;
  return status;
}

// The work of one ParallelFor call: rows [task * kRowsPerTask, ...).
constexpr int64_t kRowsPerTask = 16;

struct Work {
  const float* x;
  int64_t rows, k;
  const RowQuantizeParams* params;
  const float* mask;
  const int64_t* idx;
  int64_t n_outliers;
  uint8_t* xq;
  float* scale;
  float* x_outliers;
};

void run_task(void* data, size_t task) {
  const Work& w = *static_cast<const Work*>(data);
  const int64_t first = static_cast<int64_t>(task) * kRowsPerTask;
  quantize_rows(w.x, first, std::min(first + kRowsPerTask, w.rows), w.k, *w.params, w.mask, w.idx, w.n_outliers, w.xq,
                w.scale, w.x_outliers);
}

OrtStatus* compute(void* kernel_ptr, OrtKernelContext* context) {
  const Kernel& kernel = *static_cast<const Kernel*>(kernel_ptr);
  const OrtApi* api = kernel.api;
  const OrtValue* x_value = nullptr;
  FASTEMBED_RETURN_IF(api->KernelContext_GetInput(context, 0, &x_value));
  Shape x_shape;
  FASTEMBED_RETURN_IF(shape_of(api, x_value, x_shape));
  if (x_shape.dims.empty() || x_shape.dims.back() < 1) {
    return error(api, "RowQuantize: x must have at least one dimension and a last dimension of at least 1");
  }
  const int64_t k = x_shape.dims.back();
  const int64_t rows = x_shape.count / k;
  const void* x_data = nullptr;
  FASTEMBED_RETURN_IF(api->GetTensorMutableData(const_cast<OrtValue*>(x_value), const_cast<void**>(&x_data)));

  const float* mask = nullptr;
  const int64_t* idx = nullptr;
  int64_t n_outliers = 0;
  if (kernel.split) {
    const OrtValue *mask_value = nullptr, *idx_value = nullptr;
    FASTEMBED_RETURN_IF(api->KernelContext_GetInput(context, 1, &mask_value));
    FASTEMBED_RETURN_IF(api->KernelContext_GetInput(context, 2, &idx_value));
    Shape mask_shape, idx_shape;
    FASTEMBED_RETURN_IF(shape_of(api, mask_value, mask_shape));
    FASTEMBED_RETURN_IF(shape_of(api, idx_value, idx_shape));
    if (mask_shape.count != k || idx_shape.dims.size() != 1) {
      return error(api, "RowQuantizeSplit: inlier_mask must hold " + std::to_string(k) +
                            " values (x's last dimension) and outlier_idx must be 1-D");
    }
    const void* mask_data = nullptr;
    const void* idx_data = nullptr;
    FASTEMBED_RETURN_IF(api->GetTensorMutableData(const_cast<OrtValue*>(mask_value), const_cast<void**>(&mask_data)));
    FASTEMBED_RETURN_IF(api->GetTensorMutableData(const_cast<OrtValue*>(idx_value), const_cast<void**>(&idx_data)));
    mask = static_cast<const float*>(mask_data);
    idx = static_cast<const int64_t*>(idx_data);
    n_outliers = idx_shape.count;
    for (int64_t j = 0; j < n_outliers; ++j) {
      if (idx[j] < 0 || idx[j] >= k) {
        return error(api, "RowQuantizeSplit: outlier_idx[" + std::to_string(j) + "] = " + std::to_string(idx[j]) +
                              " is not a channel of x (0.." + std::to_string(k - 1) + ")");
      }
    }
  }

  std::vector<int64_t> lead_one(x_shape.dims.begin(), x_shape.dims.end() - 1);
  lead_one.push_back(1);
  OrtValue *xq_value = nullptr, *scale_value = nullptr, *outlierstatus_value = nullptr;
  FASTEMBED_RETURN_IF(api->KernelContext_GetOutput(context, 0, x_shape.dims.data(), x_shape.dims.size(), &xq_value));
  FASTEMBED_RETURN_IF(api->KernelContext_GetOutput(context, 1, lead_one.data(), lead_one.size(), &scale_value));
  void *xq = nullptr, *scale = nullptr, *x_outliers = nullptr;
  FASTEMBED_RETURN_IF(api->GetTensorMutableData(xq_value, &xq));
  FASTEMBED_RETURN_IF(api->GetTensorMutableData(scale_value, &scale));
  if (kernel.split) {
    lead_one.back() = n_outliers + 1;
    FASTEMBED_RETURN_IF(
        api->KernelContext_GetOutput(context, 2, lead_one.data(), lead_one.size(), &outlierstatus_value));
    FASTEMBED_RETURN_IF(api->GetTensorMutableData(outlierstatus_value, &x_outliers));
  }
  Work work{static_cast<const float*>(x_data),
            rows,
            k,
            &kernel.params,
            mask,
            idx,
            n_outliers,
            static_cast<uint8_t*>(xq),
            static_cast<float*>(scale),
            static_cast<float*>(x_outliers)};
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  if (tasks <= 1) {  // a query's few rows: not worth waking the pool
    if (rows > 0) run_task(&work, 0);
    return nullptr;
  }
  return api->KernelContext_ParallelFor(context, run_task, static_cast<size_t>(tasks), 0, &work);
}

// The OrtCustomOp tables for the two names; ORT calls these through function pointers.
struct OpDef {
  OrtCustomOp op;
  const char* name;
  bool split;
};

const OpDef& op_def(const OrtCustomOp* op) { return *reinterpret_cast<const OpDef*>(op); }

OpDef make_op(const char* name, bool split) {
  OpDef def{};
  def.name = name;
  def.split = split;
  OrtCustomOp& op = def.op;
  op.version = ORT_API_VERSION;
  op.GetName = [](const OrtCustomOp* self) { return op_def(self).name; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };  // CPU
  op.GetInputTypeCount = [](const OrtCustomOp* self) -> size_t { return op_def(self).split ? 3 : 1; };
  op.GetInputType = [](const OrtCustomOp*, size_t index) {
    return index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  };
  op.GetOutputTypeCount = [](const OrtCustomOp* self) -> size_t { return op_def(self).split ? 3 : 2; };
  op.GetOutputType = [](const OrtCustomOp*, size_t index) {
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.CreateKernelV2 = [](const OrtCustomOp* self, const OrtApi* api, const OrtKernelInfo* info, void** kernel) {
    return create_kernel(api, info, op_def(self).split, kernel);
  };
  op.KernelComputeV2 = compute;
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.GetStartVersion = [](const OrtCustomOp*) { return 1; };
  op.GetEndVersion = [](const OrtCustomOp*) { return INT_MAX; };
  return def;
}

}  // namespace

void quantize_rows(const float* x, int64_t first, int64_t last, int64_t k, const RowQuantizeParams& params,
                   const float* mask, const int64_t* idx, int64_t n_outliers, uint8_t* xq, float* row_scale,
                   float* x_outliers) {
  const RowFn quantize = row_fn();
  std::vector<float> masked(mask != nullptr ? static_cast<size_t>(k) : 0);
  for (int64_t r = first; r < last; ++r) {
    const float* row = x + r * k;
    if (mask != nullptr) {
      for (int64_t i = 0; i < k; ++i) masked[i] = row[i] * mask[i];
      float* out = x_outliers + r * (n_outliers + 1);
      for (int64_t j = 0; j < n_outliers; ++j) out[j] = row[idx[j]];
      out[n_outliers] = 1.0f;
      row = masked.data();
    }
    quantize(row, k, params, xq + r * k, row_scale + r);
  }
}

void register_row_quantize_ops(OrtSessionOptions* options) {
  // Static: ORT keeps pointers to the domain and to the op tables for the life of every session.
  static OpDef ops[] = {make_op("RowQuantize", false), make_op("RowQuantizeSplit", true)};
  static OrtCustomOpDomain* domain = [] {
    const OrtApi& api = ort_api();
    OrtCustomOpDomain* created = nullptr;
    check(api.CreateCustomOpDomain(kInt8Domain, &created));
    for (OpDef& def : ops) check(api.CustomOpDomain_Add(created, &def.op));
    return created;  // never released: sessions may outlive any owner we could give it
  }();
  check(ort_api().AddCustomOpDomain(options, domain));
}

}  // namespace fastembed
