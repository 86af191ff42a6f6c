// One ONNX model loaded into an OrtSession: session options, execution providers, discovery of the
// token inputs and the embedding output, and Run + pooling of a padded batch.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ort_runtime.h"
#include "pooling.h"
#include "shared_weights.h"

namespace fastembed {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// An execution provider to append, by ORT's own name ("CUDAExecutionProvider", ...), with options
// already translated to ORT's keys and string values (python/fastembed_native/providers.py does that).
struct ProviderRequest {
  std::string name;
  KeyValues options;
};

struct SessionConfig {
  int graph_optimization_level = 99;  // GraphOptimizationLevel: 0 none, 1 basic, 2 extended, 99 all
  int intra_op_threads = 0;           // 0: ORT's default (one per physical core)
  int inter_op_threads = 0;
  std::vector<ProviderRequest> providers;  // priority order; CPU is always the last resort
  std::string optimized_model_path;        // non-empty: ORT writes the optimised graph there
  std::string profile_prefix;              // non-empty: ORT profiles every node, written when the session ends
  bool share_weights = true;               // CPU sessions over one file share its weights (shared_weights.h)
  bool cpu_mem_arena = true;
  bool mem_pattern = true;
  KeyValues config_entries;  // AddSessionConfigEntry, e.g. session.intra_op.allow_spinning = 0
};

// What a model's inputs are for.
enum class InputRole { InputIds, AttentionMask, TokenTypeIds, PositionIds };
const char* input_role_name(InputRole role) noexcept;

struct ModelInput {
  std::string name;
  InputRole role;
  ONNXTensorElementDataType type;  // int64 (zero copy) or int32 (converted)
};

struct ModelIO {
  std::vector<ModelInput> inputs;
  std::vector<std::string> all_input_names;
  std::string output_name;
  bool output_is_pooled = false;  // a [batch, dim] sentence embedding rather than [batch, seq, dim] states
  int64_t dim = -1;               // -1 when the model leaves it dynamic
  std::vector<std::string> all_output_names;
};

// A padded batch of token ids, borrowed from the caller (numpy arrays): [batch, seq_len], int64.
struct TokenBatch {
  int64_t* input_ids;
  int64_t* attention_mask;
  int64_t* token_type_ids;  // may be null: zeros are used if the model asks for them
  int64_t batch;
  int64_t seq_len;
};

// Counters a benchmark reads: where embed() time goes, and how much of each batch was padding.
struct SessionStats {
  int64_t runs = 0;
  int64_t run_ns = 0;           // inside OrtApi::Run
  int64_t pool_ns = 0;          // pooling + normalisation
  int64_t real_tokens = 0;      // non-zero attention-mask entries
  int64_t computed_tokens = 0;  // batch * seq_len, padding included
};

class Session {
 public:
  Session(const std::string& model_path, const SessionConfig& config);

  const ModelIO& io() const noexcept { return io_; }
  // Providers appended to this session, in priority order, ending with CPUExecutionProvider.
  const std::vector<std::string>& providers() const noexcept { return providers_; }
  SessionStats stats() const noexcept;
  void reset_stats() noexcept;
  // Tensors this session shares with the process's other sessions over the same file (0: none).
  size_t shared_tensors() const noexcept;

  // Runs the model on `tokens` and pools each row into `dest` (see pooling::Destination).
  // `vocab_size` > 0 checks every id first, so a tokenizer larger than the model's embedding
  // table is reported instead of read out of bounds. Thread-safe: ORT allows concurrent Run calls
  // on one session, and nothing here is mutated after construction. `skip_prefix` leaves each row's
  // first real tokens (a prompt) out of the pooling but not out of attention (see pooling::pool).
  void embed(const TokenBatch& tokens, pooling::Mode mode, bool normalize, int64_t vocab_size,
             pooling::Destination dest, int64_t dest_rows, int64_t skip_prefix = 0) const;

  // Runs the model on `tokens` (inputs made as embed() makes them, ids checked against
  // `vocab_size` when > 0) and returns the outputs named in `output_names`, in that order, as ORT
  // allocated them: the heads that do not pool into one vector (sparse weights, per-token vectors,
  // several outputs at once) read these. Thread-safe, like embed().
  std::vector<OrtPtr<OrtValue>> run(const TokenBatch& tokens, const std::vector<std::string>& output_names,
                                    int64_t vocab_size) const;

 private:
  // Counts one Run of `tokens` that took `run_ns` (and `pool_ns` of pooling) in the stats.
  void count_run(const TokenBatch& tokens, int64_t run_ns, int64_t pool_ns) const noexcept;

  std::shared_ptr<SharedWeights> weights_;  // first: released after the session that uses it
  OrtPtr<OrtSession> session_;
  OrtPtr<OrtMemoryInfo> cpu_memory_;
  ModelIO io_;
  std::vector<std::string> providers_;
  // Relaxed atomics: concurrent embed() calls add to them; readers want totals, not ordering.
  mutable std::atomic<int64_t> runs_{0}, run_ns_{0}, pool_ns_{0}, real_tokens_{0}, computed_tokens_{0};
};

// An OrtValue over `data` without copying it, as embed() creates for each input. Exposed so a test
// can show that ORT reads the caller's memory in place.
OrtPtr<OrtValue> tensor_over(int64_t* data, const std::vector<int64_t>& shape);
const void* tensor_data(OrtValue* value);

// The element type and dimensions of a tensor value (an output of run()).
struct TensorShape {
  ONNXTensorElementDataType type;
  std::vector<int64_t> dims;
};
TensorShape tensor_shape(const OrtValue* value);

}  // namespace fastembed
