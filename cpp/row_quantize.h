// Per-token (row) int8 quantization of activations, as one ONNX Runtime kernel.
//
// `fastembed-native quantize` writes int8 graphs that quantize each row of a MatMul's float input
// with its own scale (models/quantize.py). In standard ONNX that takes about fifteen small nodes per
// input (Shape, Reshape, ReduceMax, ReduceMin, Max, Mul, QuantizeLinear, ...), and on a single query
// their dispatch costs more than the int8 product saves. The graph therefore calls them as two
// model-local functions of the domain "fastembed_native":
//
//   RowQuantize(x) -> (xq, row_scale)
//   RowQuantizeSplit(x, inlier_mask, outlier_idx) -> (xq, row_scale, x_outliers)
//   RowDequantize(acc, row_scale, col_scale, addend) -> y
//   RowDequantizeResidual(acc, row_scale, col_scale, addend, residual) -> y
//
// whose bodies are those standard nodes, so any ONNX Runtime runs the file. Sessions created here
// register a kernel for each name (register_row_quantize_ops), which ONNX Runtime prefers to
// inlining the body: one pass over each row instead of fifteen nodes, and one pass over the product instead of
// MatMulIntegerToFloat's scale pass and a bias Add. The kernel computes exactly
// what the body computes (tests/test_row_quantize.py compares the two bit for bit).
//
// For x of shape [..., K], each row r of K values (after x *= inlier_mask in the Split form):
//   absmax    = max(max_k x[r,k], symmetric ? -min_k x[r,k] : 0, floor)
//   scale[r]  = absmax * inv_range
//   xq[r,k]   = clamp(round_half_even(x[r,k] / scale[r]) + zero_point, 0, 255)
// and, in the Split form, x_outliers[r] = [x[r, outlier_idx[0]], ..., x[r, outlier_idx[n-1]], 1]
// (the ones column carries the bias through the float32 product of the outlier channels).
//
// RowDequantize turns MatMulInteger's int32 product back into floats in one pass, adding the bias
// (addend [N]) or the outlier channels' float32 product, which holds the bias (addend [..., N]):
//   y[r,n] = float(acc[r,n]) * row_scale[r] * col_scale[n] + addend[(r,)n]
// (in that order, no fused multiply-add: the body's Cast, Mul, Mul, Add). RowDequantizeResidual then
// adds the residual stream (+ residual[r,n]), so the layer's LayerNormalization reads y directly.
// Attributes: zero_point (int), inv_range (float), floor (float), symmetric (int, 0 or 1).
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>

namespace fastembed {

// The domain of the ops above, as the graph names it.
inline constexpr const char* kInt8Domain = "fastembed_native";

struct RowQuantizeParams {
  uint8_t zero_point = 128;
  float inv_range = 1.0f / 127.0f;
  float floor = 1e-8f;
  bool symmetric = true;
};

// Quantizes rows [first, last) of x (rows x k floats). With outliers (n_outliers > 0): mask has k
// entries, idx n_outliers channel indices (< k), and x_outliers receives n_outliers + 1 floats per row.
void quantize_rows(const float* x, int64_t first, int64_t last, int64_t k, const RowQuantizeParams& params,
                   const float* mask, const int64_t* idx, int64_t n_outliers, uint8_t* xq, float* row_scale,
                   float* x_outliers);

// One row through the scalar loop (simd = false) or the AVX-512 one; false, doing nothing, when
// asked for AVX-512 on a CPU without it. For the native tests, which hold the two to each other.
bool quantize_row_with(bool simd, const float* x, int64_t k, const RowQuantizeParams& params, uint8_t* xq,
                       float* row_scale);
bool dequantize_row_with(bool simd, const int32_t* acc, int64_t n, float row_scale, const float* col_scale,
                         const float* addend, const float* residual, float* y);

// Adds the "fastembed_native" domain with the four ops to `options` (the ops live as long as the process).
void register_row_quantize_ops(OrtSessionOptions* options);

}  // namespace fastembed
