// Pooling of token states into one vector per text, and L2 normalisation.
// Plain C++ over raw pointers: no ORT, no pybind11, so the kernels can be tested on their own.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels.h"

namespace fastembed::pooling {

enum class Mode {
  Mean,       // masked mean over the tokens whose attention mask is non-zero
  Cls,        // the first real token's state (position 0 under right padding)
  LastToken,  // the state of the last position whose mask is non-zero (left or right padding)
  Pooled,     // the model already pooled: copy its [batch, dim] output
};

// The instruction sets of the kernels (kernels.h), by the names the bindings and tests use.
using simd::best_isa;
using simd::Isa;
using simd::isa_name;
using simd::supported_isas;

// Where pooled rows go: batch row i is written to out + rows[i] * out_stride (rows[i] = i when
// rows is null), so a sorted batch lands straight in its caller's input order.
struct Destination {
  float* out;
  int64_t out_stride;
  const int64_t* rows;
};

// states: [batch, seq_len, dim] for Mean/Cls/LastToken, [batch, dim] for Pooled (seq_len ignored);
// mask: [batch, seq_len], non-zero = real token. A row whose mask is all zeros has no token to pool:
// its result is the zero vector, for every mode (and stays zero after normalisation, never NaN).
// With normalize, each row is divided by max(||row||_2, 1e-12), as torch.nn.functional.normalize.
// skip_prefix > 0 leaves each row's first skip_prefix real tokens (a prompt) out of the pooling, as
// sentence-transformers' include_prompt=false does: Mean averages the rest, Cls takes the first token
// after them, LastToken is unchanged, and a row with no token past them is zero. Not for Pooled.
void pool(Mode mode, const float* states, const int64_t* mask, int64_t batch, int64_t seq_len, int64_t dim,
          bool normalize, Destination dest, Isa isa, int64_t skip_prefix = 0);

}  // namespace fastembed::pooling
