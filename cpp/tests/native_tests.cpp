// The C++ core without Python: loads ONNX Runtime, runs sessions and pooling, takes the error
// paths. Built with -DFASTEMBED_NATIVE_NATIVE_TESTS=ON and run under AddressSanitizer with
// LeakSanitizer on (which CPython's own exit-time allocations make useless in the Python tests).
//
//   native_tests <path to libonnxruntime> <tiny encoder .onnx (input_ids, attention_mask, token_type_ids)>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../multivector.h"
#include "../ort_runtime.h"
#include "../pooling.h"
#include "../row_quantize.h"
#include "../session.h"
#include "../shared_weights.h"
#include "../sparse.h"

namespace {

int passed = 0;
int failed = 0;

#define CHECK(condition)                                                                 \
  do {                                                                                   \
    if (condition) {                                                                     \
      ++passed;                                                                          \
    } else {                                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      ++failed;                                                                          \
    }                                                                                    \
  } while (0)

template <typename Exception, typename Fn>
bool throws(Fn&& fn) {
  try {
    fn();
  } catch (const Exception&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

using fastembed::pooling::Destination;
using fastembed::pooling::Isa;
using fastembed::pooling::Mode;

void test_pooling() {
  // Two rows, three tokens, dim 5; row 1 has one real token, so every mode agrees on it.
  const std::vector<float> states = {1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0,
                                     2, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
  const std::vector<int64_t> mask = {1, 1, 0, 1, 0, 0};
  for (Isa isa : fastembed::pooling::supported_isas()) {
    std::vector<float> out(10, -1.0f);
    fastembed::pooling::pool(Mode::Mean, states.data(), mask.data(), 2, 3, 5, false,
                             Destination{out.data(), 5, nullptr}, isa);
    CHECK(out[0] == 2.0f && out[4] == 6.0f && out[5] == 2.0f && out[6] == 0.0f);
    fastembed::pooling::pool(Mode::LastToken, states.data(), mask.data(), 2, 3, 5, true,
                             Destination{out.data(), 5, nullptr}, isa);
    CHECK(std::fabs(out[5] - 1.0f) < 1e-6f);
    const std::vector<int64_t> empty(6, 0);
    fastembed::pooling::pool(Mode::Cls, states.data(), empty.data(), 2, 3, 5, true, Destination{out.data(), 5, nullptr},
                             isa);
    for (float v : out) CHECK(v == 0.0f);  // no real token: zero, never NaN

    // A one-token prompt left out: row 0 pools its second token only, row 1 (nothing after it) is zero.
    fastembed::pooling::pool(Mode::Mean, states.data(), mask.data(), 2, 3, 5, false,
                             Destination{out.data(), 5, nullptr}, isa, 1);
    CHECK(out[0] == 3.0f && out[4] == 7.0f && out[5] == 0.0f);
    fastembed::pooling::pool(Mode::Cls, states.data(), mask.data(), 2, 3, 5, false, Destination{out.data(), 5, nullptr},
                             isa, 1);
    CHECK(out[0] == 3.0f && out[5] == 0.0f);
    // Left padding: Cls is the first real token, not position 0.
    const std::vector<int64_t> left = {0, 1, 1, 0, 0, 1};
    fastembed::pooling::pool(Mode::Cls, states.data(), left.data(), 2, 3, 5, false, Destination{out.data(), 5, nullptr},
                             isa);
    CHECK(out[0] == 3.0f && out[5] == 9.0f);
  }
}

void test_session(const std::string& model) {
  fastembed::Session session(model, fastembed::SessionConfig{});
  CHECK(session.io().inputs.size() == 3 && session.io().output_name == "last_hidden_state");
  CHECK(session.providers().back() == "CPUExecutionProvider");
  const int64_t dim = session.io().dim;
  CHECK(dim > 0);

  std::vector<int64_t> ids = {2, 4, 5, 3, 2, 6, 3, 0};
  std::vector<int64_t> mask = {1, 1, 1, 1, 1, 1, 1, 0};
  std::vector<float> out(static_cast<size_t>(3 * dim), -1.0f);
  const std::vector<int64_t> rows = {2, 0};
  for (int repeat = 0; repeat < 50; ++repeat) {  // many runs: a per-run leak would add up
    session.embed({ids.data(), mask.data(), nullptr, 2, 4}, Mode::Mean, true, 16,
                  Destination{out.data(), dim, rows.data()}, 3);
  }
  CHECK(out[static_cast<size_t>(dim)] == -1.0f);  // row 1 untouched
  double norm = 0;
  for (int64_t i = 0; i < dim; ++i)
    norm += out[static_cast<size_t>(2 * dim + i)] * out[static_cast<size_t>(2 * dim + i)];
  CHECK(std::fabs(norm - 1.0) < 1e-5);
  const fastembed::SessionStats stats = session.stats();
  CHECK(stats.runs == 50 && stats.real_tokens == 50 * 7 && stats.computed_tokens == 50 * 8);

  // Error paths release what they allocated before throwing.
  std::vector<int64_t> bad_ids = {2, 99, 3, 0};
  CHECK(throws<fastembed::InvalidArgument>([&] {
    session.embed({bad_ids.data(), mask.data(), nullptr, 1, 4}, Mode::Mean, false, 16,
                  Destination{out.data(), dim, nullptr}, 3);
  }));
  CHECK(throws<fastembed::OrtError>([&] {  // ORT's own bounds check, with our check off
    session.embed({bad_ids.data(), mask.data(), nullptr, 1, 4}, Mode::Mean, false, 0,
                  Destination{out.data(), dim, nullptr}, 3);
  }));
  CHECK(throws<fastembed::InvalidArgument>([&] {  // output narrower than the model's
    session.embed({ids.data(), mask.data(), nullptr, 2, 4}, Mode::Mean, false, 0,
                  Destination{out.data(), dim - 1, nullptr}, 3);
  }));
}

void test_heads(const std::string& model) {
  namespace sparse = fastembed::sparse;
  namespace multivector = fastembed::multivector;
  // SPLADE over [2, 2, 3] logits: row 0 has one real token, row 1 none.
  const std::vector<float> logits = {1.0f, -2.0f, 0.5f, 9.0f, 9.0f, 9.0f, 0, 0, 0, 0, 0, 0};
  const std::vector<int64_t> mask = {1, 0, 0, 0};
  for (Isa isa : fastembed::pooling::supported_isas()) {
    sparse::Rows rows;
    sparse::splade(logits.data(), mask.data(), 2, 2, 3, sparse::Pool::Max, sparse::Activation::Log1pRelu, 0, isa, rows);
    CHECK(rows.offsets == (std::vector<int64_t>{0, 2, 2}));
    CHECK(rows.indices == (std::vector<int32_t>{0, 2}));
    CHECK(std::fabs(rows.values[0] - std::log1p(1.0f)) < 1e-6f && std::fabs(rows.values[1] - std::log1p(0.5f)) < 1e-6f);
    sparse::Rows top;
    sparse::splade(logits.data(), mask.data(), 2, 2, 3, sparse::Pool::Sum, sparse::Activation::Log1pRelu, 1, isa, top);
    CHECK(top.indices == (std::vector<int32_t>{0}));
  }
  // Token weights: the largest weight of a repeated id, special ids and weights <= 0 dropped.
  const std::vector<int64_t> ids = {0, 5, 5, 7, 2};
  const std::vector<int64_t> all = {1, 1, 1, 1, 1};
  const std::vector<float> weights = {3.0f, 0.2f, 0.4f, -1.0f, 1.0f};
  sparse::Rows lexical;
  sparse::token_weights(weights.data(), ids.data(), all.data(), 1, 5, {0, 2}, lexical);
  CHECK(lexical.indices == (std::vector<int32_t>{5}) && lexical.values == (std::vector<float>{0.4f}));

  // Packing and MaxSim on the tiny model's real output, through Session::run, many times.
  fastembed::Session session(model, fastembed::SessionConfig{});
  std::vector<int64_t> tokens = {2, 4, 5, 3, 2, 6, 3, 0};
  std::vector<int64_t> attention = {1, 1, 1, 1, 1, 1, 1, 0};
  for (int repeat = 0; repeat < 20; ++repeat) {
    auto outputs = session.run({tokens.data(), attention.data(), nullptr, 2, 4}, {"last_hidden_state"}, 16);
    CHECK(outputs.size() == 1);
    const fastembed::TensorShape shape = fastembed::tensor_shape(outputs[0].get());
    const int64_t dim = shape.dims.back();
    const std::vector<uint8_t> keep = {1, 0, 1, 1, 1, 1, 1, 0};
    std::vector<int64_t> offsets(3);
    multivector::count_kept(keep.data(), 2, 4, offsets.data());
    CHECK(offsets == (std::vector<int64_t>{0, 3, 6}));
    std::vector<float> packed(static_cast<size_t>(offsets[2] * dim));
    const auto* states = static_cast<const float*>(fastembed::tensor_data(outputs[0].get()));
    multivector::pack(states, keep.data(), 2, 4, dim, true, fastembed::pooling::best_isa(), packed.data());
    std::vector<float> scores(2);
    multivector::maxsim(packed.data(), 3, packed.data(), offsets.data(), 2, dim, fastembed::pooling::best_isa(),
                        scores.data());
    CHECK(std::fabs(scores[0] - 3.0f) < 1e-4f);  // each unit query row finds itself
  }
  CHECK(throws<fastembed::InvalidArgument>(
      [&] { session.run({tokens.data(), attention.data(), nullptr, 2, 4}, {"no_such_output"}, 16); }));
}

// MaxSim against a plain double loop, with a query wide enough for the kernels' 32-row blocks and a
// 16-row tail (33 rows), and documents of 0 to 9 vectors (the 4-vector steps and every remainder),
// under the sanitizers: every load the blocked kernels make stays inside the buffers.
void test_maxsim_blocks() {
  const int64_t dim = 20, query_rows = 33;
  std::vector<int64_t> offsets{0};
  for (int64_t n = 0; n < 10; ++n) offsets.push_back(offsets.back() + n);
  std::vector<float> query(static_cast<size_t>(query_rows * dim)), docs(static_cast<size_t>(offsets.back() * dim));
  for (size_t i = 0; i < query.size(); ++i) query[i] = std::sin(0.37f * static_cast<float>(i));
  for (size_t i = 0; i < docs.size(); ++i) docs[i] = std::cos(0.23f * static_cast<float>(i));
  std::vector<float> scores(10);
  fastembed::multivector::maxsim(query.data(), query_rows, docs.data(), offsets.data(), 10, dim,
                                 fastembed::pooling::best_isa(), scores.data());
  for (int64_t d = 0; d < 10; ++d) {
    double want = 0.0;
    for (int64_t q = 0; q < query_rows && offsets[d + 1] > offsets[d]; ++q) {
      double best = -1e300;
      for (int64_t r = offsets[d]; r < offsets[d + 1]; ++r) {
        double dot = 0.0;
        for (int64_t k = 0; k < dim; ++k) dot += static_cast<double>(query[q * dim + k]) * docs[r * dim + k];
        best = std::max(best, dot);
      }
      want += best;
    }
    CHECK(std::fabs(scores[d] - want) < 1e-3 * (1.0 + std::fabs(want)));
  }
}

// The initializer table as the protobuf reader sees it: the tiny model's word table, inline.
void test_read_initializers(const std::string& model) {
  const std::vector<fastembed::InitializerRecord> records = fastembed::read_initializers(model);
  const auto word = std::find_if(records.begin(), records.end(), [](const auto& r) { return r.name == "word"; });
  CHECK(word != records.end());
  if (word != records.end()) {
    CHECK(word->data_type == 1 && word->dims.size() == 2 && word->file.empty());
    CHECK(word->length == static_cast<uint64_t>(word->dims[0] * word->dims[1]) * sizeof(float));
  }
  CHECK(throws<fastembed::InvalidArgument>([] { fastembed::read_initializers("/nonexistent/model.onnx"); }));
  // Two sessions over the file answer alike whether or not they share (inline tensors are left to ORT).
  fastembed::SessionConfig shared, alone;
  alone.share_weights = false;
  fastembed::Session a(model, shared), b(model, alone);
  CHECK(a.io().dim == b.io().dim);
}

void test_load_errors(const std::string& model) {
  CHECK(throws<fastembed::OrtError>([] { fastembed::Session("/nonexistent/model.onnx", fastembed::SessionConfig{}); }));
  fastembed::SessionConfig missing_provider;
  missing_provider.providers.push_back({"NoSuchExecutionProvider", {}});
  CHECK(throws<fastembed::OrtError>([&] { fastembed::Session(model, missing_provider); }));
  CHECK(throws<fastembed::RuntimeLoadError>([] { fastembed::OrtRuntime::load("/nonexistent/libonnxruntime.so"); }));
}

}  // namespace

// The int8 row kernels: the AVX-512 loops give the scalar loops' bytes and floats exactly, at every
// row length around the 16-lane blocks, for symmetric and one-sided rows, rows of zeros, rows below
// zero, and values on a rounding tie; the scalar loop agrees with the formula written out here.
void test_row_quantize() {
  using fastembed::RowQuantizeParams;
  RowQuantizeParams symmetric;  // zero point 128, 1/127
  RowQuantizeParams one_sided;
  one_sided.zero_point = 16;
  one_sided.inv_range = 1.0f / 239.0f;
  one_sided.floor = 2.54f;
  one_sided.symmetric = false;
  uint32_t state = 7;
  auto next = [&state] {  // a small LCG: the same values under every compiler
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 8.0f - 4.0f;
  };
  for (const RowQuantizeParams& params : {symmetric, one_sided}) {
    for (int64_t k = 1; k <= 40; ++k) {
      for (int kind = 0; kind < 5; ++kind) {  // 4: a NaN (both loops pass over it alike)
        std::vector<float> x(static_cast<size_t>(k));
        for (float& v : x) v = kind == 0 ? next() : kind == 1 ? 0.0f : kind == 2 ? -std::fabs(next()) : 0.0f;
        if (kind == 4) x[static_cast<size_t>(k / 2)] = std::nanf("");
        if (kind == 3) {  // ties: max 127 * 0.5 makes the scale 0.5; x / 0.5 = n + 0.5 for these
          x[0] = 63.5f;
          for (int64_t i = 1; i < k; ++i) x[static_cast<size_t>(i)] = (static_cast<float>(i % 9) - 4.0f) * 0.5f + 0.25f;
        }
        std::vector<uint8_t> scalar(static_cast<size_t>(k)), simd(static_cast<size_t>(k), 0xAB);
        float scalar_scale = 0.0f, simd_scale = -1.0f;
        CHECK(fastembed::quantize_row_with(false, x.data(), k, params, scalar.data(), &scalar_scale));
        if (fastembed::quantize_row_with(true, x.data(), k, params, simd.data(), &simd_scale)) {
          CHECK(simd == scalar && (simd_scale == scalar_scale || (std::isnan(simd_scale) && std::isnan(scalar_scale))));
        }
        if (kind == 4) continue;  // the formula below has no NaN rule
        float max = x[0], min = x[0];
        for (float v : x) {
          max = std::max(max, v);
          min = std::min(min, v);
        }
        const float range = std::max(std::max(max, params.symmetric ? -min : 0.0f), params.floor);
        CHECK(scalar_scale == range * params.inv_range);
        bool formula = true;
        for (int64_t i = 0; i < k; ++i) {
          const float q = std::nearbyint(x[static_cast<size_t>(i)] / scalar_scale) + params.zero_point;
          formula =
              formula && scalar[static_cast<size_t>(i)] == static_cast<uint8_t>(std::min(std::max(q, 0.0f), 255.0f));
        }
        CHECK(formula);
      }
    }
  }
  for (int64_t n = 1; n <= 40; ++n) {
    std::vector<int32_t> acc(static_cast<size_t>(n));
    std::vector<float> col(static_cast<size_t>(n)), addend(static_cast<size_t>(n)), residual(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      acc[static_cast<size_t>(i)] = static_cast<int32_t>(next() * 100000.0f);
      col[static_cast<size_t>(i)] = std::fabs(next()) * 1e-3f;
      addend[static_cast<size_t>(i)] = next();
      residual[static_cast<size_t>(i)] = next();
    }
    for (const float* with : {static_cast<const float*>(nullptr), static_cast<const float*>(residual.data())}) {
      std::vector<float> scalar(static_cast<size_t>(n)), simd(static_cast<size_t>(n), -9.0f);
      CHECK(
          fastembed::dequantize_row_with(false, acc.data(), n, 0.37f, col.data(), addend.data(), with, scalar.data()));
      if (fastembed::dequantize_row_with(true, acc.data(), n, 0.37f, col.data(), addend.data(), with, simd.data())) {
        CHECK(simd == scalar);
      }
      bool formula = true;
      for (int64_t i = 0; i < n; ++i) {
        float v = static_cast<float>(acc[static_cast<size_t>(i)]) * 0.37f;
        v = v * col[static_cast<size_t>(i)];
        v = v + addend[static_cast<size_t>(i)];
        if (with != nullptr) v = v + with[i];
        formula = formula && scalar[static_cast<size_t>(i)] == v;
      }
      CHECK(formula);
    }
  }
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <libonnxruntime> <tiny model.onnx>\n", argv[0]);
    return 2;
  }
  fastembed::OrtRuntime::load(argv[1]);
  test_pooling();
  test_session(argv[2]);
  test_heads(argv[2]);
  test_maxsim_blocks();
  test_row_quantize();
  test_read_initializers(argv[2]);
  test_load_errors(argv[2]);
  std::printf("native_tests: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
