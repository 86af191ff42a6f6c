#include "pooling.h"

#include <cstring>

namespace fastembed::pooling {
namespace {

// Index of the last non-zero mask entry, or -1 when the row has none.
int64_t last_real_token(const int64_t* mask_row, int64_t seq_len) {
  for (int64_t t = seq_len - 1; t >= 0; --t) {
    if (mask_row[t] != 0) return t;
  }
  return -1;
}

// Index of the real token that follows the first `n` real tokens, or -1 when the row has no more.
int64_t real_token_after(const int64_t* mask_row, int64_t seq_len, int64_t n) {
  for (int64_t t = 0; t < seq_len; ++t) {
    if (mask_row[t] != 0 && n-- == 0) return t;
  }
  return -1;
}

}  // namespace

void pool(Mode mode, const float* states, const int64_t* mask, int64_t batch, int64_t seq_len, int64_t dim,
          bool normalize, Destination dest, Isa isa, int64_t skip_prefix) {
  const simd::Kernels k = simd::kernels_for(isa);
  for (int64_t b = 0; b < batch; ++b) {
    float* out = dest.out + (dest.rows != nullptr ? dest.rows[b] : b) * dest.out_stride;
    const int64_t* mask_row = mask + b * seq_len;
    std::memset(out, 0, static_cast<size_t>(dim) * sizeof(float));

    switch (mode) {
      case Mode::Mean: {
        const float* row_states = states + b * seq_len * dim;
        int64_t count = 0, skipped = 0;
        for (int64_t t = 0; t < seq_len; ++t) {
          if (mask_row[t] == 0 || skipped++ < skip_prefix) continue;
          k.add(out, row_states + t * dim, dim);
          ++count;
        }
        if (count > 0) k.scale(out, 1.0f / static_cast<float>(count), dim);
        break;
      }
      case Mode::Cls: {
        // The first real token, as sentence-transformers 5 takes it: position 0 under right padding,
        // the first unpadded one under left padding. A row with no real token stays zero.
        const int64_t t = real_token_after(mask_row, seq_len, skip_prefix);
        if (t >= 0) {
          std::memcpy(out, states + (b * seq_len + t) * dim, static_cast<size_t>(dim) * sizeof(float));
        }
        break;
      }
      case Mode::LastToken: {
        const int64_t t = last_real_token(mask_row, seq_len);
        if (t >= 0 && (skip_prefix == 0 || real_token_after(mask_row, seq_len, skip_prefix) >= 0)) {
          std::memcpy(out, states + (b * seq_len + t) * dim, static_cast<size_t>(dim) * sizeof(float));
        }
        break;
      }
      case Mode::Pooled:
        if (last_real_token(mask_row, seq_len) >= 0) {
          std::memcpy(out, states + b * dim, static_cast<size_t>(dim) * sizeof(float));
        }
        break;
    }

    if (normalize) simd::l2_normalize(k, out, dim);
  }
}

}  // namespace fastembed::pooling
