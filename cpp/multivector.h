// The multi-vector head (ColBERT, BGE-M3's colbert output): per-token vectors of a batch packed into
// one contiguous array with offsets, and MaxSim scoring over such arrays.
// Plain C++ over raw pointers: no ORT, no pybind11.
#pragma once

#include <cstdint>

#include "kernels.h"

namespace fastembed::multivector {

// offsets[0] = 0 and offsets[b + 1] = offsets[b] + the number of non-zero entries of keep's row b:
// where each text's vectors start in the packed array. offsets has batch + 1 entries.
void count_kept(const uint8_t* keep, int64_t batch, int64_t seq_len, int64_t* offsets);

// Copies states[b, t] for every (b, t) with keep[b, t] != 0 into out, row after row in token order
// (out has offsets[batch] rows of dim floats), L2-normalising each copied vector when `normalize`.
void pack(const float* states, const uint8_t* keep, int64_t batch, int64_t seq_len, int64_t dim, bool normalize,
          simd::Isa isa, float* out);

// MaxSim (late interaction): scores[d] = sum over the query's rows q of max over document d's rows x
// of dot(q, x); document d is rows offsets[d] .. offsets[d + 1] of `documents`. A document with no
// row scores 0.
void maxsim(const float* query, int64_t query_rows, const float* documents, const int64_t* offsets,
            int64_t document_count, int64_t dim, simd::Isa isa, float* scores);

}  // namespace fastembed::multivector
