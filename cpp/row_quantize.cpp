#include "row_quantize.h"

#include "ort_runtime.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTEMBED_ROW_X86 1  // the AVX-512 loops; elsewhere (ARM) the scalar ones run
// GCC 12's AVX-512 headers seed _mm512_max_ps / _mm512_min_ps with a self-initialised
// _mm512_undefined_ps(), which -Wmaybe-uninitialized reports once inlined here; the value is never read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
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
    // The clamp as AVX-512's max_ps / min_ps do it (a NaN becomes lo), so no NaN reaches the cast.
    float v = x[i] / s;
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    q[i] = static_cast<uint8_t>(static_cast<int>(std::nearbyint(v)) + p.zero_point);
  }
  *scale = s;
}

#if FASTEMBED_ROW_X86
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
    vmax = _mm512_max_ps(v, vmax);  // a NaN in x is passed over, as std::max(max, x) does
    vmin = _mm512_min_ps(v, vmin);
  }
  const __mmask16 tail = static_cast<__mmask16>((1u << (k - i)) - 1u);
  if (tail != 0) {
    const __m512 v = _mm512_maskz_loadu_ps(tail, x + i);
    vmax = _mm512_mask_max_ps(vmax, tail, v, vmax);
    vmin = _mm512_mask_min_ps(vmin, tail, v, vmin);
  }
  // Horizontal max / min through memory (exact either way: max and min do not round).
  alignas(64) float maxes[16], mins[16];
  _mm512_store_ps(maxes, vmax);
  _mm512_store_ps(mins, vmin);
  const float s = row_scale_of(*std::max_element(maxes, maxes + 16), *std::min_element(mins, mins + 16), p);
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
#endif

// One row of RowDequantize, in the body's order: ((float(acc) * row_scale) * col_scale) + addend, no
// fused multiply-add (this file is built with -ffp-contract=off), so both paths give the same floats.
void dequantize_row_scalar(const int32_t* acc, int64_t n, float row_scale, const float* col_scale, const float* addend,
                           const float* residual, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(acc[i]) * row_scale * col_scale[i] + addend[i];
    y[i] = residual != nullptr ? v + residual[i] : v;
  }
}

#if FASTEMBED_ROW_X86
__attribute__((target("avx512f"))) inline __m512 dequantize16(__m512i acc, __m512 row_scale, __m512 col_scale,
                                                              __m512 addend) {
  return _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), row_scale), col_scale), addend);
}

__attribute__((target("avx512f"))) void dequantize_row_avx512(const int32_t* acc, int64_t n, float row_scale,
                                                              const float* col_scale, const float* addend,
                                                              const float* residual, float* y) {
  const __m512 rs = _mm512_set1_ps(row_scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v =
        dequantize16(_mm512_loadu_si512(acc + i), rs, _mm512_loadu_ps(col_scale + i), _mm512_loadu_ps(addend + i));
    if (residual != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(residual + i));
    _mm512_storeu_ps(y + i, v);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512 v = dequantize16(_mm512_maskz_loadu_epi32(m, acc + i), rs, _mm512_maskz_loadu_ps(m, col_scale + i),
                            _mm512_maskz_loadu_ps(m, addend + i));
    if (residual != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, residual + i));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}
#endif

using DequantizeFn = void (*)(const int32_t*, int64_t, float, const float*, const float*, const float*, float*);

bool has_avx512() {
#if FASTEMBED_ROW_X86
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

DequantizeFn dequantize_fn() {
#if FASTEMBED_ROW_X86
  if (has_avx512()) return dequantize_row_avx512;
#endif
  return dequantize_row_scalar;
}

using RowFn = void (*)(const float*, int64_t, const RowQuantizeParams&, uint8_t*, float*);

RowFn row_fn() {
#if FASTEMBED_ROW_X86
  if (has_avx512()) return quantize_row_avx512;
#endif
  return quantize_row_scalar;
}

// ---------------------------------------------------------------------------------------------
// The ONNX Runtime kernels (C API custom ops). Errors go back to ORT as an OrtStatus naming the
// node's problem; ORT raises them from Run.

enum class OpKind { Quantize, QuantizeSplit, Dequantize, DequantizeResidual };

struct Kernel {
  const OrtApi* api;
  OpKind kind;
  RowQuantizeParams params;  // the quantize ops' attributes
};

OrtStatus* error(const OrtApi* api, const std::string& message) {
  return api->CreateStatus(ORT_INVALID_ARGUMENT, message.c_str());
}

#define FASTEMBED_RETURN_IF(status_expr)      \
  do {                                        \
    if (OrtStatus* status_ = (status_expr)) { \
      return status_;                         \
    }                                         \
  } while (0)

OrtStatus* create_kernel(const OrtApi* api, const OrtKernelInfo* info, OpKind kind, void** out) {
  RowQuantizeParams params;
  if (kind == OpKind::Quantize || kind == OpKind::QuantizeSplit) {
    int64_t zero_point = 0, symmetric = 0;
    float inv_range = 0.0f, floor = 0.0f;
    FASTEMBED_RETURN_IF(api->KernelInfoGetAttribute_int64(info, "zero_point", &zero_point));
    FASTEMBED_RETURN_IF(api->KernelInfoGetAttribute_int64(info, "symmetric", &symmetric));
    FASTEMBED_RETURN_IF(api->KernelInfoGetAttribute_float(info, "inv_range", &inv_range));
    FASTEMBED_RETURN_IF(api->KernelInfoGetAttribute_float(info, "floor", &floor));
    if (zero_point < 0 || zero_point > 255 || (symmetric != 0 && symmetric != 1) || !(inv_range > 0.0f) ||
        !(floor > 0.0f) || !std::isfinite(inv_range) || !std::isfinite(floor)) {
      return error(api,
                   "RowQuantize: attributes out of range (zero_point 0..255, symmetric 0 or 1, inv_range and "
                   "floor finite and > 0)");
    }
    params.zero_point = static_cast<uint8_t>(zero_point);
    params.inv_range = inv_range;
    params.floor = floor;
    params.symmetric = symmetric == 1;
  }
  *out = new Kernel{api, kind, params};
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

// An input's shape and data (the C API hands out inputs as const values with a mutable accessor).
template <typename T>
OrtStatus* input(const OrtApi* api, OrtKernelContext* context, size_t index, Shape& shape, const T*& data) {
  const OrtValue* value = nullptr;
  FASTEMBED_RETURN_IF(api->KernelContext_GetInput(context, index, &value));
  FASTEMBED_RETURN_IF(shape_of(api, value, shape));
  void* raw = nullptr;
  FASTEMBED_RETURN_IF(api->GetTensorMutableData(const_cast<OrtValue*>(value), &raw));
  data = static_cast<const T*>(raw);
  return nullptr;
}

template <typename T>
OrtStatus* output(const OrtApi* api, OrtKernelContext* context, size_t index, const std::vector<int64_t>& dims,
                  T*& data) {
  OrtValue* value = nullptr;
  FASTEMBED_RETURN_IF(api->KernelContext_GetOutput(context, index, dims.data(), dims.size(), &value));
  void* raw = nullptr;
  FASTEMBED_RETURN_IF(api->GetTensorMutableData(value, &raw));
  data = static_cast<T*>(raw);
  return nullptr;
}

// Rows are handed to ORT's intra-op pool in tasks of this many (a query's few rows run inline).
constexpr int64_t kRowsPerTask = 16;

template <typename Work>
OrtStatus* for_each_task(const OrtApi* api, OrtKernelContext* context, int64_t rows, Work& work) {
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  auto run = [](void* data, size_t task) {
    Work& w = *static_cast<Work*>(data);
    const int64_t first = static_cast<int64_t>(task) * kRowsPerTask;
    w(first, std::min(first + kRowsPerTask, w.rows));
  };
  if (tasks <= 1) {
    if (rows > 0) work(0, rows);
    return nullptr;
  }
  return api->KernelContext_ParallelFor(context, run, static_cast<size_t>(tasks), 0, &work);
}

struct QuantizeWork {
  const float* x;
  int64_t rows, k;
  const RowQuantizeParams* params;
  const float* mask;
  const int64_t* idx;
  int64_t n_outliers;
  uint8_t* xq;
  float* scale;
  float* x_outliers;
  void operator()(int64_t first, int64_t last) const {
    quantize_rows(x, first, last, k, *params, mask, idx, n_outliers, xq, scale, x_outliers);
  }
};

OrtStatus* compute_quantize(const Kernel& kernel, OrtKernelContext* context) {
  const OrtApi* api = kernel.api;
  Shape x_shape;
  const float* x = nullptr;
  FASTEMBED_RETURN_IF(input(api, context, 0, x_shape, x));
  if (x_shape.dims.empty() || x_shape.dims.back() < 1) {
    return error(api, "RowQuantize: x must have at least one dimension and a last dimension of at least 1");
  }
  const int64_t k = x_shape.dims.back();
  const float* mask = nullptr;
  const int64_t* idx = nullptr;
  int64_t n_outliers = 0;
  if (kernel.kind == OpKind::QuantizeSplit) {
    Shape mask_shape, idx_shape;
    FASTEMBED_RETURN_IF(input(api, context, 1, mask_shape, mask));
    FASTEMBED_RETURN_IF(input(api, context, 2, idx_shape, idx));
    if (mask_shape.count != k || idx_shape.dims.size() != 1) {
      return error(api, "RowQuantizeSplit: inlier_mask must hold " + std::to_string(k) +
                            " values (x's last dimension) and outlier_idx must be 1-D");
    }
    n_outliers = idx_shape.count;
    for (int64_t j = 0; j < n_outliers; ++j) {
      if (idx[j] < 0 || idx[j] >= k) {
        return error(api, "RowQuantizeSplit: outlier_idx[" + std::to_string(j) + "] = " + std::to_string(idx[j]) +
                              " is not a channel of x (0.." + std::to_string(k - 1) + ")");
      }
    }
  }
  std::vector<int64_t> lead(x_shape.dims.begin(), x_shape.dims.end() - 1);
  lead.push_back(1);
  QuantizeWork work{x, x_shape.count / k, k, &kernel.params, mask, idx, n_outliers, nullptr, nullptr, nullptr};
  FASTEMBED_RETURN_IF(output(api, context, 0, x_shape.dims, work.xq));
  FASTEMBED_RETURN_IF(output(api, context, 1, lead, work.scale));
  if (kernel.kind == OpKind::QuantizeSplit) {
    lead.back() = n_outliers + 1;
    FASTEMBED_RETURN_IF(output(api, context, 2, lead, work.x_outliers));
  }
  return for_each_task(api, context, work.rows, work);
}

struct DequantizeWork {
  const int32_t* acc;
  int64_t rows, n;
  const float* row_scale;
  const float* col_scale;
  const float* addend;
  bool addend_per_row;
  const float* residual;  // null, or one value per value of acc
  float* y;
  void operator()(int64_t first, int64_t last) const {
    const DequantizeFn dequantize = dequantize_fn();
    for (int64_t r = first; r < last; ++r) {
      dequantize(acc + r * n, n, row_scale[r], col_scale, addend + (addend_per_row ? r * n : 0),
                 residual != nullptr ? residual + r * n : nullptr, y + r * n);
    }
  }
};

OrtStatus* compute_dequantize(const Kernel& kernel, OrtKernelContext* context) {
  const OrtApi* api = kernel.api;
  Shape acc_shape, row_shape, col_shape, addend_shape;
  DequantizeWork work{};
  FASTEMBED_RETURN_IF(input(api, context, 0, acc_shape, work.acc));
  FASTEMBED_RETURN_IF(input(api, context, 1, row_shape, work.row_scale));
  FASTEMBED_RETURN_IF(input(api, context, 2, col_shape, work.col_scale));
  FASTEMBED_RETURN_IF(input(api, context, 3, addend_shape, work.addend));
  if (acc_shape.dims.empty() || acc_shape.dims.back() < 1) {
    return error(api, "RowDequantize: acc must have at least one dimension and a last dimension of at least 1");
  }
  work.n = acc_shape.dims.back();
  work.rows = acc_shape.count / work.n;
  work.addend_per_row = addend_shape.count == acc_shape.count && addend_shape.count != work.n;
  if (row_shape.count != work.rows || col_shape.count != work.n ||
      (addend_shape.count != work.n && addend_shape.count != acc_shape.count)) {
    return error(api, "RowDequantize: for acc of " + std::to_string(work.rows) + " rows of " + std::to_string(work.n) +
                          " columns, row_scale must hold one value per row, col_scale one per column, and addend "
                          "one per column or one per value");
  }
  if (kernel.kind == OpKind::DequantizeResidual) {
    Shape residual_shape;
    FASTEMBED_RETURN_IF(input(api, context, 4, residual_shape, work.residual));
    if (residual_shape.dims != acc_shape.dims) {
      return error(api, "RowDequantizeResidual: residual must have acc's shape");
    }
  }
  FASTEMBED_RETURN_IF(output(api, context, 0, acc_shape.dims, work.y));
  return for_each_task(api, context, work.rows, work);
}

OrtStatus* compute(void* kernel_ptr, OrtKernelContext* context) {
  const Kernel& kernel = *static_cast<const Kernel*>(kernel_ptr);
  const bool quantize = kernel.kind == OpKind::Quantize || kernel.kind == OpKind::QuantizeSplit;
  return quantize ? compute_quantize(kernel, context) : compute_dequantize(kernel, context);
}

// Shape inference, so that ORT's fusions after these nodes (bias + GELU, skip + LayerNorm) see the
// same shapes they saw in the float graph: every output keeps its input's leading dimensions,
// symbolic names included.
OrtStatus* set_output(const OrtApi* api, OrtShapeInferContext* context, size_t index, ONNXTensorElementDataType type,
                      const std::vector<int64_t>& dims, std::vector<const char*> names) {
  // ORT writes a dimension with neither a value nor a name as the value -1, which the next node's
  // inference then takes for a real size; so an unknown dimension gets a name of its own, one that
  // matches no other (an unknown size says nothing about equality).
  std::vector<std::string> invented;
  invented.reserve(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0 && (names[i] == nullptr || names[i][0] == '\0')) {
      static std::atomic<uint64_t> counter{0};
      invented.push_back("fastembed_native_unknown_" + std::to_string(counter++));
      names[i] = invented.back().c_str();
    }
  }
  OrtTensorTypeAndShapeInfo* info = nullptr;
  FASTEMBED_RETURN_IF(api->CreateTensorTypeAndShapeInfo(&info));
  OrtStatus* status = api->SetTensorElementType(info, type);
  if (status == nullptr) status = api->SetDimensions(info, dims.data(), dims.size());
  if (status == nullptr) status = api->SetSymbolicDimensions(info, names.data(), names.size());
  if (status == nullptr) status = api->ShapeInferContext_SetOutputTypeShape(context, index, info);
  api->ReleaseTensorTypeAndShapeInfo(info);
  return status;
}

OrtStatus* infer(OpKind kind, OrtShapeInferContext* context) {
  const OrtApi* api = &ort_api();
  OrtTensorTypeAndShapeInfo* info = nullptr;
  FASTEMBED_RETURN_IF(api->ShapeInferContext_GetInputTypeShape(context, 0, &info));
  size_t rank = 0;
  std::vector<int64_t> dims;
  std::vector<const char*> names;
  OrtStatus* status = api->GetDimensionsCount(info, &rank);
  if (status == nullptr && rank == 0) status = error(api, "RowQuantize / RowDequantize: the first input is a scalar");
  if (status == nullptr) {
    dims.resize(rank);
    names.resize(rank);
    status = api->GetDimensions(info, dims.data(), rank);
  }
  if (status == nullptr) status = api->GetSymbolicDimensions(info, names.data(), rank);
  if (status == nullptr && (kind == OpKind::Dequantize || kind == OpKind::DequantizeResidual)) {
    status = set_output(api, context, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, dims, names);
  } else if (status == nullptr) {
    status = set_output(api, context, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, dims, names);
    std::vector<int64_t> lead = dims;
    std::vector<const char*> lead_names = names;
    lead.back() = 1;
    lead_names.back() = "";
    if (status == nullptr) status = set_output(api, context, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, lead, lead_names);
    if (status == nullptr && kind == OpKind::QuantizeSplit) {
      OrtTensorTypeAndShapeInfo* idx_info = nullptr;
      status = api->ShapeInferContext_GetInputTypeShape(context, 2, &idx_info);
      int64_t n = -1;
      size_t idx_rank = 0;
      if (status == nullptr) status = api->GetDimensionsCount(idx_info, &idx_rank);
      if (status == nullptr && idx_rank == 1) status = api->GetDimensions(idx_info, &n, 1);
      lead.back() = n < 0 ? -1 : n + 1;
      if (status == nullptr)
        status = set_output(api, context, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, lead, lead_names);
    }
  }
  return status;  // the input infos belong to the context: not released here
}

// The OrtCustomOp table for each name; ORT calls these through function pointers.
struct OpDef {
  OrtCustomOp op;  // first: ORT hands back a pointer to it, which is a pointer to the OpDef
  const char* name;
  OpKind kind;
  size_t inputs, outputs;
};

const OpDef& op_def(const OrtCustomOp* op) { return *reinterpret_cast<const OpDef*>(op); }

OpDef make_op(const char* name, OpKind kind) {
  OpDef def{};
  def.name = name;
  def.kind = kind;
  const bool quantize = kind == OpKind::Quantize || kind == OpKind::QuantizeSplit;
  def.inputs = kind == OpKind::Quantize ? 1 : kind == OpKind::QuantizeSplit ? 3 : kind == OpKind::Dequantize ? 4 : 5;
  def.outputs = kind == OpKind::QuantizeSplit ? 3 : quantize ? 2 : 1;
  OrtCustomOp& op = def.op;
  op.version = ORT_API_VERSION;
  op.GetName = [](const OrtCustomOp* self) { return op_def(self).name; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };  // CPU
  op.GetInputTypeCount = [](const OrtCustomOp* self) { return op_def(self).inputs; };
  op.GetInputType = [](const OrtCustomOp* self, size_t index) {
    switch (op_def(self).kind) {
      case OpKind::Dequantize:
      case OpKind::DequantizeResidual:
        return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
      case OpKind::QuantizeSplit:
        return index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
      default:
        return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    }
  };
  op.GetOutputTypeCount = [](const OrtCustomOp* self) { return op_def(self).outputs; };
  op.GetOutputType = [](const OrtCustomOp* self, size_t index) {
    const OpKind of = op_def(self).kind;
    const bool quantizes = of == OpKind::Quantize || of == OpKind::QuantizeSplit;
    return quantizes && index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.CreateKernelV2 = [](const OrtCustomOp* self, const OrtApi* api, const OrtKernelInfo* info, void** kernel) {
    return create_kernel(api, info, op_def(self).kind, kernel);
  };
  op.KernelComputeV2 = compute;
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.InferOutputShapeFn = [](const OrtCustomOp* self, OrtShapeInferContext* context) {
    return infer(op_def(self).kind, context);
  };
  if (!quantize) {
    // y may take acc's buffer (int32 and float are the same size; each value is read before it is
    // written), so the product of the widest MatMul is not held twice at the peak.
    op.GetMayInplace = [](int** input_index, int** output_index) -> size_t {
      *input_index = new int[1]{0};
      *output_index = new int[1]{0};
      return 1;
    };
    op.ReleaseMayInplace = [](int* input_index, int* output_index) {
      delete[] input_index;
      delete[] output_index;
    };
  }
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

bool quantize_row_with(bool simd, const float* x, int64_t k, const RowQuantizeParams& params, uint8_t* xq,
                       float* row_scale) {
  if (!simd) {
    quantize_row_scalar(x, k, params, xq, row_scale);
    return true;
  }
#if FASTEMBED_ROW_X86
  if (has_avx512()) {
    quantize_row_avx512(x, k, params, xq, row_scale);
    return true;
  }
#endif
  return false;
}

bool dequantize_row_with(bool simd, const int32_t* acc, int64_t n, float row_scale, const float* col_scale,
                         const float* addend, const float* residual, float* y) {
  if (!simd) {
    dequantize_row_scalar(acc, n, row_scale, col_scale, addend, residual, y);
    return true;
  }
#if FASTEMBED_ROW_X86
  if (has_avx512()) {
    dequantize_row_avx512(acc, n, row_scale, col_scale, addend, residual, y);
    return true;
  }
#endif
  return false;
}

void register_row_quantize_ops(OrtSessionOptions* options) {
  // Static: ORT keeps pointers to the domain and to the op tables for the life of every session.
  static OpDef ops[] = {make_op("RowQuantize", OpKind::Quantize), make_op("RowQuantizeSplit", OpKind::QuantizeSplit),
                        make_op("RowDequantize", OpKind::Dequantize),
                        make_op("RowDequantizeResidual", OpKind::DequantizeResidual)};
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
