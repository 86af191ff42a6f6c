// The sparse heads: a SPLADE model's [batch, seq, vocab] logits, or BGE-M3's one weight per token,
// into one sparse vector per text (ascending vocabulary indices, positive values).
// Plain C++ over raw pointers: no ORT, no pybind11.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels.h"

namespace fastembed::sparse {

enum class Pool { Max, Sum };  // over a text's real tokens (sentence-transformers' SpladePooling)
// log1p(relu(x)) is SPLADE's log saturation (sentence-transformers calls it "relu"); its "log1p_relu" applies
// log1p once more.
enum class Activation { Log1pRelu, Log1pLog1pRelu };

// Rows in compressed sparse row form: row b is indices/values[offsets[b] .. offsets[b + 1]).
struct Rows {
  std::vector<int64_t> offsets{0};
  std::vector<int32_t> indices;
  std::vector<float> values;
};

// Appends one row per text to `out`: activation(logit) pooled over the tokens whose mask is non-zero,
// its non-zero entries. Max pooling takes the maximum of the raw logits first and applies the
// activation once per vocabulary entry (both activations are monotone and map <= 0 to 0, so this is
// the same number), which is what makes it cheap: one SIMD max per token. `max_active_dims` > 0 keeps
// only that many of a row's largest values (sentence-transformers' max_active_dims). A text with no
// real token is an empty row.
void splade(const float* logits, const int64_t* mask, int64_t batch, int64_t seq_len, int64_t vocab, Pool pool,
            Activation activation, int64_t max_active_dims, simd::Isa isa, Rows& out);

// Appends one row per text to `out` from one weight per token (BGE-M3's relu(sparse_linear(h))): the
// weight of a vocabulary id is its largest over the text's real tokens with that id; ids in `dropped`
// (the special tokens) and weights <= 0 are left out.
void token_weights(const float* weights, const int64_t* ids, const int64_t* mask, int64_t batch, int64_t seq_len,
                   const std::vector<int64_t>& dropped, Rows& out);

}  // namespace fastembed::sparse
