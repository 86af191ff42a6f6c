#include "kernels.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTEMBED_X86 1
#include <immintrin.h>
#elif defined(__aarch64__)
#define FASTEMBED_NEON 1
#include <arm_neon.h>
#endif

namespace fastembed::simd {
namespace {

void add_scalar(float* acc, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}
void scale_scalar(float* v, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] *= s;
}
float sum_squares_scalar(const float* v, int64_t n) {
  double total = 0.0;  // double: the scalar path is also the reference the SIMD paths are tested against
  for (int64_t i = 0; i < n; ++i) total += static_cast<double>(v[i]) * v[i];
  return static_cast<float>(total);
}

void max_scalar(float* acc, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], x[i]);
}
float dot_scalar(const float* a, const float* b, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(total);
}

void max_dots_scalar(const float* qt, int64_t width, const float* x, int64_t rows, int64_t dim, float* best) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t q = 0; q < width; ++q) {
      double total = 0.0;
      for (int64_t k = 0; k < dim; ++k) total += static_cast<double>(x[r * dim + k]) * qt[k * width + q];
      best[q] = std::max(best[q], static_cast<float>(total));
    }
  }
}

#if FASTEMBED_X86
// Compiled for AVX2/AVX-512 through target attributes, so the rest of the file (and the module)
// still runs on any x86-64; best_isa() only selects these when the CPU reports the feature.
__attribute__((target("avx2,fma"))) void add_avx2(float* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
  }
  for (; i < n; ++i) acc[i] += x[i];
}
__attribute__((target("avx2,fma"))) void scale_avx2(float* v, float s, int64_t n) {
  const __m256 factor = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, _mm256_mul_ps(_mm256_loadu_ps(v + i), factor));
  for (; i < n; ++i) v[i] *= s;
}
__attribute__((target("avx2,fma"))) float sum_squares_avx2(const float* v, int64_t n) {
  __m256 total = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(v + i);
    total = _mm256_fmadd_ps(x, x, total);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; i < n; ++i) sum += v[i] * v[i];
  return sum;
}

__attribute__((target("avx2,fma"))) void max_avx2(float* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(acc + i, _mm256_max_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
  }
  for (; i < n; ++i) acc[i] = std::max(acc[i], x[i]);
}
__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 total = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) total = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), total);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

__attribute__((target("avx2,fma"))) void max_dots_avx2(const float* qt, int64_t width, const float* x, int64_t rows,
                                                       int64_t dim, float* best) {
  for (int64_t q = 0; q < width; q += 16) {  // two registers of 8 query rows
    __m256 top0 = _mm256_loadu_ps(best + q), top1 = _mm256_loadu_ps(best + q + 8);
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {  // 4 document vectors: eight independent FMA chains (see AVX-512)
      const float* x0 = x + r * dim;
      const float* x1 = x0 + dim;
      const float* x2 = x1 + dim;
      const float* x3 = x2 + dim;
      __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps(), a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps(),
             a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps(), a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m256 c0 = _mm256_loadu_ps(qt + k * width + q);
        const __m256 c1 = _mm256_loadu_ps(qt + k * width + q + 8);
        const __m256 b0 = _mm256_set1_ps(x0[k]), b1 = _mm256_set1_ps(x1[k]);
        const __m256 b2 = _mm256_set1_ps(x2[k]), b3 = _mm256_set1_ps(x3[k]);
        a00 = _mm256_fmadd_ps(b0, c0, a00);
        a01 = _mm256_fmadd_ps(b0, c1, a01);
        a10 = _mm256_fmadd_ps(b1, c0, a10);
        a11 = _mm256_fmadd_ps(b1, c1, a11);
        a20 = _mm256_fmadd_ps(b2, c0, a20);
        a21 = _mm256_fmadd_ps(b2, c1, a21);
        a30 = _mm256_fmadd_ps(b3, c0, a30);
        a31 = _mm256_fmadd_ps(b3, c1, a31);
      }
      top0 = _mm256_max_ps(top0, _mm256_max_ps(_mm256_max_ps(a00, a10), _mm256_max_ps(a20, a30)));
      top1 = _mm256_max_ps(top1, _mm256_max_ps(_mm256_max_ps(a01, a11), _mm256_max_ps(a21, a31)));
    }
    for (; r < rows; ++r) {
      const float* xr = x + r * dim;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m256 xk = _mm256_set1_ps(xr[k]);
        a0 = _mm256_fmadd_ps(xk, _mm256_loadu_ps(qt + k * width + q), a0);
        a1 = _mm256_fmadd_ps(xk, _mm256_loadu_ps(qt + k * width + q + 8), a1);
      }
      top0 = _mm256_max_ps(top0, a0);
      top1 = _mm256_max_ps(top1, a1);
    }
    _mm256_storeu_ps(best + q, top0);
    _mm256_storeu_ps(best + q + 8, top1);
  }
}

__attribute__((target("avx512f"))) void add_avx512(float* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(x + i)));
  }
  if (i < n) {  // the tail in one masked operation instead of a scalar loop
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(acc + i, m,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(m, acc + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}
__attribute__((target("avx512f"))) void scale_avx512(float* v, float s, int64_t n) {
  const __m512 factor = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(v + i, _mm512_mul_ps(_mm512_loadu_ps(v + i), factor));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(v + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, v + i), factor));
  }
}
__attribute__((target("avx512f"))) float sum_squares_avx512(const float* v, int64_t n) {
  __m512 total = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(v + i);
    total = _mm512_fmadd_ps(x, x, total);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(m, v + i);
    total = _mm512_fmadd_ps(x, x, total);
  }
  return _mm512_reduce_add_ps(total);
}
__attribute__((target("avx512f"))) void max_avx512(float* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(acc + i, _mm512_max_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(x + i)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(acc + i, m,
                          _mm512_max_ps(_mm512_maskz_loadu_ps(m, acc + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}
__attribute__((target("avx512f"))) float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 total = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) total = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), total);
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    total = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), total);
  }
  return _mm512_reduce_add_ps(total);
}
__attribute__((target("avx512f"))) void max_dots_avx512(const float* qt, int64_t width, const float* x, int64_t rows,
                                                        int64_t dim, float* best) {
  // An FMA's result is ready 4 cycles after it starts and two start each cycle, so about eight
  // independent accumulators keep the units busy: 32 query rows (two registers) x 4 document vectors.
  // Each accumulator still sums its k in order, so the results are those of one chain per pair.
  int64_t q = 0;
  for (; q + 32 <= width; q += 32) {
    __m512 top0 = _mm512_loadu_ps(best + q), top1 = _mm512_loadu_ps(best + q + 16);
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      const float* x0 = x + r * dim;
      const float* x1 = x0 + dim;
      const float* x2 = x1 + dim;
      const float* x3 = x2 + dim;
      __m512 a00 = _mm512_setzero_ps(), a01 = _mm512_setzero_ps(), a10 = _mm512_setzero_ps(), a11 = _mm512_setzero_ps(),
             a20 = _mm512_setzero_ps(), a21 = _mm512_setzero_ps(), a30 = _mm512_setzero_ps(), a31 = _mm512_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m512 c0 = _mm512_loadu_ps(qt + k * width + q);
        const __m512 c1 = _mm512_loadu_ps(qt + k * width + q + 16);
        const __m512 b0 = _mm512_set1_ps(x0[k]), b1 = _mm512_set1_ps(x1[k]);
        const __m512 b2 = _mm512_set1_ps(x2[k]), b3 = _mm512_set1_ps(x3[k]);
        a00 = _mm512_fmadd_ps(b0, c0, a00);
        a01 = _mm512_fmadd_ps(b0, c1, a01);
        a10 = _mm512_fmadd_ps(b1, c0, a10);
        a11 = _mm512_fmadd_ps(b1, c1, a11);
        a20 = _mm512_fmadd_ps(b2, c0, a20);
        a21 = _mm512_fmadd_ps(b2, c1, a21);
        a30 = _mm512_fmadd_ps(b3, c0, a30);
        a31 = _mm512_fmadd_ps(b3, c1, a31);
      }
      top0 = _mm512_max_ps(top0, _mm512_max_ps(_mm512_max_ps(a00, a10), _mm512_max_ps(a20, a30)));
      top1 = _mm512_max_ps(top1, _mm512_max_ps(_mm512_max_ps(a01, a11), _mm512_max_ps(a21, a31)));
    }
    for (; r < rows; ++r) {
      const float* x0 = x + r * dim;
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m512 b = _mm512_set1_ps(x0[k]);
        a0 = _mm512_fmadd_ps(b, _mm512_loadu_ps(qt + k * width + q), a0);
        a1 = _mm512_fmadd_ps(b, _mm512_loadu_ps(qt + k * width + q + 16), a1);
      }
      top0 = _mm512_max_ps(top0, a0);
      top1 = _mm512_max_ps(top1, a1);
    }
    _mm512_storeu_ps(best + q, top0);
    _mm512_storeu_ps(best + q + 16, top1);
  }
  for (; q < width; q += 16) {  // a last block of 16 query rows
    __m512 top = _mm512_loadu_ps(best + q);
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      const float* x0 = x + r * dim;
      const float* x1 = x0 + dim;
      const float* x2 = x1 + dim;
      const float* x3 = x2 + dim;
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m512 column = _mm512_loadu_ps(qt + k * width + q);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(x0[k]), column, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(x1[k]), column, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(x2[k]), column, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(x3[k]), column, a3);
      }
      top = _mm512_max_ps(top, _mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(a2, a3)));
    }
    for (; r < rows; ++r) {
      const float* x0 = x + r * dim;
      __m512 a0 = _mm512_setzero_ps();
      for (int64_t k = 0; k < dim; ++k)
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(x0[k]), _mm512_loadu_ps(qt + k * width + q), a0);
      top = _mm512_max_ps(top, a0);
    }
    _mm512_storeu_ps(best + q, top);
  }
}
#endif  // FASTEMBED_X86

#if FASTEMBED_NEON
void add_neon(float* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(acc + i, vaddq_f32(vld1q_f32(acc + i), vld1q_f32(x + i)));
  for (; i < n; ++i) acc[i] += x[i];
}
void scale_neon(float* v, float s, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(v + i, vmulq_n_f32(vld1q_f32(v + i), s));
  for (; i < n; ++i) v[i] *= s;
}
float sum_squares_neon(const float* v, int64_t n) {
  float32x4_t total = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t x = vld1q_f32(v + i);
    total = vfmaq_f32(total, x, x);
  }
  float sum = vaddvq_f32(total);
  for (; i < n; ++i) sum += v[i] * v[i];
  return sum;
}
void max_neon(float* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(acc + i, vmaxq_f32(vld1q_f32(acc + i), vld1q_f32(x + i)));
  for (; i < n; ++i) acc[i] = std::max(acc[i], x[i]);
}
float dot_neon(const float* a, const float* b, int64_t n) {
  float32x4_t total = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) total = vfmaq_f32(total, vld1q_f32(a + i), vld1q_f32(b + i));
  float sum = vaddvq_f32(total);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}
void max_dots_neon(const float* qt, int64_t width, const float* x, int64_t rows, int64_t dim, float* best) {
  for (int64_t q = 0; q < width; q += 4) {
    float32x4_t top = vld1q_f32(best + q);
    for (int64_t r = 0; r < rows; ++r) {
      float32x4_t a = vdupq_n_f32(0.0f);
      for (int64_t k = 0; k < dim; ++k) a = vfmaq_n_f32(a, vld1q_f32(qt + k * width + q), x[r * dim + k]);
      top = vmaxq_f32(top, a);
    }
    vst1q_f32(best + q, top);
  }
}
#endif  // FASTEMBED_NEON

}  // namespace

Kernels kernels_for(Isa isa) {
  switch (isa) {
#if FASTEMBED_X86
    case Isa::Avx2:
      return {add_avx2, scale_avx2, sum_squares_avx2, max_avx2, dot_avx2, max_dots_avx2};
    case Isa::Avx512:
      return {add_avx512, scale_avx512, sum_squares_avx512, max_avx512, dot_avx512, max_dots_avx512};
#endif
#if FASTEMBED_NEON
    case Isa::Neon:
      return {add_neon, scale_neon, sum_squares_neon, max_neon, dot_neon, max_dots_neon};
#endif
    default:
      return {add_scalar, scale_scalar, sum_squares_scalar, max_scalar, dot_scalar, max_dots_scalar};
  }
}

void l2_normalize(const Kernels& k, float* v, int64_t n) {
  const float norm = std::sqrt(k.sum_squares(v, n));
  k.scale(v, 1.0f / std::max(norm, 1e-12f), n);
}

const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
    case Isa::Neon:
      return "neon";
    default:
      return "scalar";
  }
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas{Isa::Scalar};
#if FASTEMBED_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back(Isa::Avx2);
  if (__builtin_cpu_supports("avx512f")) isas.push_back(Isa::Avx512);
#elif FASTEMBED_NEON
  isas.push_back(Isa::Neon);  // Advanced SIMD is part of every AArch64 CPU
#endif
  return isas;
}

Isa best_isa() {
  static const Isa best = supported_isas().back();
  return best;
}

}  // namespace fastembed::simd
