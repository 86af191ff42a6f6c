#include "sparse.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace fastembed::sparse {
namespace {

float activate(float x, Activation activation) {
  const float once = std::log1p(std::max(x, 0.0f));
  return activation == Activation::Log1pLog1pRelu ? std::log1p(once) : once;
}

// Appends the positive entries of the dense row `pooled` to `out` (ascending indices), keeping only
// the `max_active_dims` largest when that is > 0, and closes the row.
void append_row(const float* pooled, int64_t vocab, int64_t max_active_dims, Rows& out) {
  const size_t first = out.indices.size();
  for (int64_t v = 0; v < vocab; ++v) {
    if (pooled[v] > 0.0f) {
      out.indices.push_back(static_cast<int32_t>(v));
      out.values.push_back(pooled[v]);
    }
  }
  const size_t count = out.indices.size() - first;
  if (max_active_dims > 0 && count > static_cast<size_t>(max_active_dims)) {
    // The k largest values (ties: the lower index, as a stable top-k keeps), back in index order.
    std::vector<std::pair<float, int32_t>> entries(count);
    for (size_t i = 0; i < count; ++i) entries[i] = {out.values[first + i], out.indices[first + i]};
    const auto larger = [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    std::nth_element(entries.begin(), entries.begin() + max_active_dims - 1, entries.end(), larger);
    entries.resize(static_cast<size_t>(max_active_dims));
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    out.indices.resize(first);
    out.values.resize(first);
    for (const auto& [value, index] : entries) {
      out.indices.push_back(index);
      out.values.push_back(value);
    }
  }
  out.offsets.push_back(static_cast<int64_t>(out.indices.size()));
}

}  // namespace

void splade(const float* logits, const int64_t* mask, int64_t batch, int64_t seq_len, int64_t vocab, Pool pool,
            Activation activation, int64_t max_active_dims, simd::Isa isa, Rows& out) {
  const simd::Kernels k = simd::kernels_for(isa);
  std::vector<float> pooled(static_cast<size_t>(vocab));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t* mask_row = mask + b * seq_len;
    const float* row = logits + b * seq_len * vocab;
    bool any = false;
    if (pool == Pool::Max) {
      std::fill(pooled.begin(), pooled.end(), -std::numeric_limits<float>::infinity());
      for (int64_t t = 0; t < seq_len; ++t) {
        if (mask_row[t] == 0) continue;
        k.max(pooled.data(), row + t * vocab, vocab);
        any = true;
      }
      for (float& value : pooled) value = any ? activate(value, activation) : 0.0f;
    } else {
      std::fill(pooled.begin(), pooled.end(), 0.0f);
      for (int64_t t = 0; t < seq_len; ++t) {
        if (mask_row[t] == 0) continue;
        const float* token = row + t * vocab;
        for (int64_t v = 0; v < vocab; ++v) pooled[v] += activate(token[v], activation);
      }
    }
    append_row(pooled.data(), vocab, max_active_dims, out);
  }
}

void token_weights(const float* weights, const int64_t* ids, const int64_t* mask, int64_t batch, int64_t seq_len,
                   const std::vector<int64_t>& dropped, Rows& out) {
  std::vector<std::pair<int64_t, float>> entries;
  for (int64_t b = 0; b < batch; ++b) {
    entries.clear();
    for (int64_t t = 0; t < seq_len; ++t) {
      const int64_t i = b * seq_len + t;
      if (mask[i] == 0 || weights[i] <= 0.0f) continue;
      if (std::find(dropped.begin(), dropped.end(), ids[i]) != dropped.end()) continue;
      entries.emplace_back(ids[i], weights[i]);
    }
    std::sort(entries.begin(), entries.end());  // by id; the largest weight of an id comes last
    for (size_t e = 0; e < entries.size(); ++e) {
      if (e + 1 < entries.size() && entries[e + 1].first == entries[e].first) continue;
      out.indices.push_back(static_cast<int32_t>(entries[e].first));
      out.values.push_back(entries[e].second);
    }
    out.offsets.push_back(static_cast<int64_t>(out.indices.size()));
  }
}

}  // namespace fastembed::sparse
