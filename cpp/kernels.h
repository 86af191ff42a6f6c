// SIMD vector primitives shared by every head (pooling, sparse, multi-vector): one implementation per
// instruction set, the best one the CPU has picked at run time. Plain C++ over raw pointers.
#pragma once

#include <cstdint>
#include <vector>

namespace fastembed::simd {

// Instruction sets with a kernel here.
enum class Isa { Scalar, Avx2, Avx512, Neon };

const char* isa_name(Isa isa) noexcept;
std::vector<Isa> supported_isas();  // every ISA this CPU runs, Scalar first
Isa best_isa();

// The vector primitives the heads are built from, for one ISA. The scalar ones accumulate in double:
// they are the reference the SIMD ones are tested against.
struct Kernels {
  void (*add)(float* acc, const float* x, int64_t n);       // acc += x
  void (*scale)(float* v, float s, int64_t n);              // v *= s
  float (*sum_squares)(const float* v, int64_t n);          // sum(v * v)
  void (*max)(float* acc, const float* x, int64_t n);       // acc = max(acc, x), elementwise
  float (*dot)(const float* a, const float* b, int64_t n);  // sum(a * b)
  // Late interaction's inner loop, for `rows` consecutive document vectors x (rows x dim floats)
  // against a query stored transposed, qt[k * width + q] (width a multiple of kQueryBlock,
  // zero-padded): for every q < width, best[q] = max(best[q], max over r of sum_k x[r][k] * qt[k][q]).
  // Vectorised over the query rows, so no horizontal reduction per (query row, document row) pair.
  void (*max_dots)(const float* qt, int64_t width, const float* x, int64_t rows, int64_t dim, float* best);
};

// The query rows one max_dots step handles together: qt's width is a multiple of it.
constexpr int64_t kQueryBlock = 16;
Kernels kernels_for(Isa isa);

// v /= max(||v||_2, 1e-12), as torch.nn.functional.normalize: a zero vector stays zero.
void l2_normalize(const Kernels& k, float* v, int64_t n);

}  // namespace fastembed::simd
