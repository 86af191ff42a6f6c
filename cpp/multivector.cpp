#include "multivector.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace fastembed::multivector {

void count_kept(const uint8_t* keep, int64_t batch, int64_t seq_len, int64_t* offsets) {
  offsets[0] = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const uint8_t* row = keep + b * seq_len;
    offsets[b + 1] = offsets[b] + std::count_if(row, row + seq_len, [](uint8_t k) { return k != 0; });
  }
}

void pack(const float* states, const uint8_t* keep, int64_t batch, int64_t seq_len, int64_t dim, bool normalize,
          simd::Isa isa, float* out) {
  const simd::Kernels k = simd::kernels_for(isa);
  for (int64_t i = 0; i < batch * seq_len; ++i) {
    if (keep[i] == 0) continue;
    std::memcpy(out, states + i * dim, static_cast<size_t>(dim) * sizeof(float));
    if (normalize) simd::l2_normalize(k, out, dim);
    out += dim;
  }
}

void maxsim(const float* query, int64_t query_rows, const float* documents, const int64_t* offsets,
            int64_t document_count, int64_t dim, simd::Isa isa, float* scores) {
  const simd::Kernels k = simd::kernels_for(isa);
  // The query transposed and zero-padded to whole blocks, so each document vector meets all query
  // rows in one vectorised pass (the padding rows' maxima are never summed).
  const int64_t width = (query_rows + simd::kQueryBlock - 1) / simd::kQueryBlock * simd::kQueryBlock;
  std::vector<float> transposed(static_cast<size_t>(dim * width), 0.0f);
  for (int64_t q = 0; q < query_rows; ++q) {
    for (int64_t c = 0; c < dim; ++c) transposed[static_cast<size_t>(c * width + q)] = query[q * dim + c];
  }
  std::vector<float> best(static_cast<size_t>(width));
  for (int64_t d = 0; d < document_count; ++d) {
    const int64_t first = offsets[d], last = offsets[d + 1];
    if (first == last) {
      scores[d] = 0.0f;
      continue;
    }
    std::fill(best.begin(), best.end(), -std::numeric_limits<float>::infinity());
    k.max_dots(transposed.data(), width, documents + first * dim, last - first, dim, best.data());
    float total = 0.0f;
    for (int64_t q = 0; q < query_rows; ++q) total += best[static_cast<size_t>(q)];
    scores[d] = total;
  }
}

}  // namespace fastembed::multivector
