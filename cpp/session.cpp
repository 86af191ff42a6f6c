#include "session.h"

#include "row_quantize.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>

namespace fastembed {
namespace {

const char* const kCpuProvider = "CPUExecutionProvider";

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

OrtPtr<OrtSessionOptions> make_options(const SessionConfig& config, std::vector<std::string>& providers) {
  const OrtApi& api = ort_api();
  OrtSessionOptions* raw = nullptr;
  check(api.CreateSessionOptions(&raw));
  OrtPtr<OrtSessionOptions> options(raw);

  check(api.SetSessionGraphOptimizationLevel(options.get(),
                                             static_cast<GraphOptimizationLevel>(config.graph_optimization_level)));
  check(api.SetIntraOpNumThreads(options.get(), config.intra_op_threads));
  check(api.SetInterOpNumThreads(options.get(), config.inter_op_threads));
  if (!config.optimized_model_path.empty()) {
    check(api.SetOptimizedModelFilePath(options.get(), config.optimized_model_path.c_str()));
  }
  if (!config.profile_prefix.empty()) check(api.EnableProfiling(options.get(), config.profile_prefix.c_str()));
  check(config.cpu_mem_arena ? api.EnableCpuMemArena(options.get()) : api.DisableCpuMemArena(options.get()));
  check(config.mem_pattern ? api.EnableMemPattern(options.get()) : api.DisableMemPattern(options.get()));
  for (const auto& [key, value] : config.config_entries) {
    check(api.AddSessionConfigEntry(options.get(), key.c_str(), value.c_str()));
  }
  // The kernels of the int8 graphs' RowQuantize functions (row_quantize.h); unused by other models.
  register_row_quantize_ops(options.get());

  for (const ProviderRequest& request : config.providers) {
    if (request.name == kCpuProvider) continue;  // appended implicitly, always last
    std::vector<const char*> keys, values;
    for (const auto& [key, value] : request.options) {
      keys.push_back(key.c_str());
      values.push_back(value.c_str());
    }
    if (request.name == "CUDAExecutionProvider") {
      // CUDA has its own V2 entry point; its options are set through UpdateCUDAProviderOptions.
      OrtCUDAProviderOptionsV2* raw_cuda = nullptr;
      check(api.CreateCUDAProviderOptions(&raw_cuda));
      OrtPtr<OrtCUDAProviderOptionsV2> cuda(raw_cuda);
      check(api.UpdateCUDAProviderOptions(cuda.get(), keys.data(), values.data(), keys.size()));
      check(api.SessionOptionsAppendExecutionProvider_CUDA_V2(options.get(), cuda.get()));
    } else {
      // CoreML and the other plug-in providers take the generic entry point with their short name.
      std::string short_name = request.name;
      const std::string suffix = "ExecutionProvider";
      if (short_name.size() > suffix.size() &&
          short_name.compare(short_name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        short_name.resize(short_name.size() - suffix.size());
      }
      check(api.SessionOptionsAppendExecutionProvider(options.get(), short_name.c_str(), keys.data(), values.data(),
                                                      keys.size()));
    }
    providers.push_back(request.name);
  }
  providers.push_back(kCpuProvider);
  return options;
}

// The element type and shape of a model input or output.
struct TensorInfo {
  bool is_tensor = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
};

TensorInfo tensor_info(OrtTypeInfo* type_info) {
  const OrtApi& api = ort_api();
  TensorInfo info;
  ONNXType onnx_type;
  check(api.GetOnnxTypeFromTypeInfo(type_info, &onnx_type));
  if (onnx_type != ONNX_TYPE_TENSOR) return info;
  const OrtTensorTypeAndShapeInfo* tensor = nullptr;  // owned by type_info
  check(api.CastTypeInfoToTensorInfo(type_info, &tensor));
  info.is_tensor = true;
  check(api.GetTensorElementType(tensor, &info.type));
  size_t rank = 0;
  check(api.GetDimensionsCount(tensor, &rank));
  info.shape.resize(rank);
  check(api.GetDimensions(tensor, info.shape.data(), rank));
  return info;
}

// Copies a name ORT allocated with `allocator` and frees ORT's copy.
std::string take_allocated_name(OrtAllocator* allocator, char* name) {
  std::unique_ptr<char, std::function<void(char*)>> owned(name,
                                                          [allocator](char* p) { allocator->Free(allocator, p); });
  return std::string(owned.get());
}

// Name and tensor description of the session's input (or output) number `index`.
std::pair<std::string, TensorInfo> describe(OrtSession* session, OrtAllocator* allocator, size_t index, bool input) {
  const OrtApi& api = ort_api();
  char* raw_name = nullptr;
  check(input ? api.SessionGetInputName(session, index, allocator, &raw_name)
              : api.SessionGetOutputName(session, index, allocator, &raw_name));
  std::string name = take_allocated_name(allocator, raw_name);
  OrtTypeInfo* raw_type = nullptr;
  check(input ? api.SessionGetInputTypeInfo(session, index, &raw_type)
              : api.SessionGetOutputTypeInfo(session, index, &raw_type));
  OrtPtr<OrtTypeInfo> type_info(raw_type);
  return {std::move(name), tensor_info(type_info.get())};
}

ModelIO discover_io(OrtSession* session) {
  const OrtApi& api = ort_api();
  OrtAllocator* allocator = nullptr;
  check(api.GetAllocatorWithDefaultOptions(&allocator));
  ModelIO io;

  size_t input_count = 0;
  check(api.SessionGetInputCount(session, &input_count));
  std::vector<std::string> unknown;
  for (size_t i = 0; i < input_count; ++i) {
    auto [name, info] = describe(session, allocator, i, /*input=*/true);
    io.all_input_names.push_back(name);

    InputRole role;
    if (name == "input_ids")
      role = InputRole::InputIds;
    else if (name == "attention_mask")
      role = InputRole::AttentionMask;
    else if (name == "token_type_ids")
      role = InputRole::TokenTypeIds;
    else if (name == "position_ids")
      role = InputRole::PositionIds;
    else {
      unknown.push_back(name);
      continue;
    }
    if (!info.is_tensor ||
        (info.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 && info.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)) {
      throw InvalidArgument("model input '" + name + "' must be an int64 or int32 tensor");
    }
    io.inputs.push_back({name, role, info.type});
  }
  if (!unknown.empty()) {
    throw InvalidArgument("model has inputs this library cannot fill: " + join(unknown) +
                          " (all inputs: " + join(io.all_input_names) +
                          "; supported: input_ids, attention_mask, token_type_ids, position_ids)");
  }
  const bool has_ids = std::any_of(io.inputs.begin(), io.inputs.end(),
                                   [](const ModelInput& in) { return in.role == InputRole::InputIds; });
  if (!has_ids) {
    throw InvalidArgument(
        "model has no 'input_ids' input, so it does not take tokens (inputs: " + join(io.all_input_names) + ")");
  }

  // The output: token states by their usual names, else the only 3-D float output, else a 2-D
  // float output that is already a sentence embedding.
  size_t output_count = 0;
  check(api.SessionGetOutputCount(session, &output_count));
  std::vector<std::pair<std::string, TensorInfo>> float_outputs;
  for (size_t i = 0; i < output_count; ++i) {
    auto [name, info] = describe(session, allocator, i, /*input=*/false);
    io.all_output_names.push_back(name);
    if (info.is_tensor && info.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) float_outputs.emplace_back(name, info);
  }
  const std::pair<std::string, TensorInfo>* chosen = nullptr;
  for (const char* preferred : {"last_hidden_state", "token_embeddings"}) {
    for (const auto& output : float_outputs) {
      if (output.first == preferred && output.second.shape.size() == 3) chosen = &output;
    }
    if (chosen != nullptr) break;
  }
  auto pick_rank = [&](size_t rank) -> const std::pair<std::string, TensorInfo>* {
    const std::pair<std::string, TensorInfo>* found = nullptr;
    int matches = 0;
    for (const auto& output : float_outputs) {
      if (output.second.shape.size() == rank) {
        found = &output;
        ++matches;
      }
    }
    return matches == 1 ? found : nullptr;
  };
  if (chosen == nullptr) chosen = pick_rank(3);
  if (chosen == nullptr) {
    for (const char* preferred : {"sentence_embedding", "pooler_output", "embeddings"}) {
      for (const auto& output : float_outputs) {
        if (output.first == preferred && output.second.shape.size() == 2) chosen = &output;
      }
      if (chosen != nullptr) break;
    }
  }
  if (chosen == nullptr) chosen = pick_rank(2);
  if (chosen == nullptr) {
    throw InvalidArgument("cannot tell which output holds the embeddings (outputs: " + join(io.all_output_names) +
                          "); expected 'last_hidden_state', 'token_embeddings', one 3-D float output, "
                          "or one 2-D float output");
  }
  io.output_name = chosen->first;
  io.output_is_pooled = chosen->second.shape.size() == 2;
  io.dim = chosen->second.shape.back();  // -1 if symbolic
  return io;
}

void convert_to_int32(const int64_t* src, size_t count, std::vector<int32_t>& dst) {
  dst.resize(count);
  std::transform(src, src + count, dst.begin(), [](int64_t v) { return static_cast<int32_t>(v); });
}

}  // namespace

const char* input_role_name(InputRole role) noexcept {
  switch (role) {
    case InputRole::InputIds:
      return "input_ids";
    case InputRole::AttentionMask:
      return "attention_mask";
    case InputRole::TokenTypeIds:
      return "token_type_ids";
    case InputRole::PositionIds:
      return "position_ids";
  }
  return "?";
}

Session::Session(const std::string& model_path, const SessionConfig& config) {
  OrtRuntime& runtime = OrtRuntime::get();
  const OrtApi& api = runtime.api();
  OrtPtr<OrtSessionOptions> options = make_options(config, providers_);
  OrtSession* raw_session = nullptr;
  // CPU sessions over one file share its weights and their pre-packed copies (shared_weights.h).
  if (config.share_weights && providers_.size() == 1) weights_ = SharedWeights::for_model(model_path);
  if (weights_ != nullptr) {
    weights_->add_to(options.get());
    check(api.CreateSessionWithPrepackedWeightsContainer(runtime.env(), model_path.c_str(), options.get(),
                                                         weights_->container(), &raw_session));
    weights_->release_pages();  // ORT has pre-packed what it packs; the rest is read back on demand
  } else {
    check(api.CreateSession(runtime.env(), model_path.c_str(), options.get(), &raw_session));
  }
  session_.reset(raw_session);
  OrtMemoryInfo* raw_memory = nullptr;
  check(api.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &raw_memory));
  cpu_memory_.reset(raw_memory);
  io_ = discover_io(session_.get());
}

OrtPtr<OrtValue> tensor_over(int64_t* data, const std::vector<int64_t>& shape) {
  const OrtApi& api = ort_api();
  OrtMemoryInfo* raw_memory = nullptr;
  check(api.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &raw_memory));
  OrtPtr<OrtMemoryInfo> memory(raw_memory);
  size_t count = 1;
  for (int64_t d : shape) count *= static_cast<size_t>(d);
  OrtValue* value = nullptr;
  check(api.CreateTensorWithDataAsOrtValue(memory.get(), data, count * sizeof(int64_t), shape.data(), shape.size(),
                                           ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, &value));
  return OrtPtr<OrtValue>(value);
}

const void* tensor_data(OrtValue* value) {
  void* data = nullptr;
  check(ort_api().GetTensorMutableData(value, &data));
  return data;
}

TensorShape tensor_shape(const OrtValue* value) {
  const OrtApi& api = ort_api();
  OrtTensorTypeAndShapeInfo* raw_info = nullptr;
  check(api.GetTensorTypeAndShape(value, &raw_info));
  OrtPtr<OrtTensorTypeAndShapeInfo> info(raw_info);
  TensorShape shape;
  check(api.GetTensorElementType(info.get(), &shape.type));
  size_t rank = 0;
  check(api.GetDimensionsCount(info.get(), &rank));
  shape.dims.resize(rank);
  check(api.GetDimensions(info.get(), shape.dims.data(), rank));
  return shape;
}

std::vector<OrtPtr<OrtValue>> Session::run(const TokenBatch& tokens, const std::vector<std::string>& output_names,
                                           int64_t vocab_size) const {
  const OrtApi& api = ort_api();
  const int64_t batch = tokens.batch;
  const int64_t seq_len = tokens.seq_len;
  const size_t count = static_cast<size_t>(batch * seq_len);
  if (batch <= 0 || seq_len <= 0) {
    throw InvalidArgument("a batch needs at least one row and one column, got [" + std::to_string(batch) + ", " +
                          std::to_string(seq_len) + "]");
  }
  for (const std::string& name : output_names) {
    if (std::find(io_.all_output_names.begin(), io_.all_output_names.end(), name) == io_.all_output_names.end()) {
      throw InvalidArgument("the model has no output '" + name + "' (outputs: " + join(io_.all_output_names) + ")");
    }
  }
  if (vocab_size > 0) {
    for (size_t i = 0; i < count; ++i) {
      const int64_t id = tokens.input_ids[i];
      if (id < 0 || id >= vocab_size) {
        throw InvalidArgument("token id " + std::to_string(id) + " in row " + std::to_string(i / seq_len) +
                              " is outside the model's vocabulary [0, " + std::to_string(vocab_size) +
                              "); the tokenizer does not match the model");
      }
    }
  }

  // Inputs the caller did not provide are derived here: zeros for token types, positions from the mask.
  std::vector<int64_t> zeros, positions;
  std::vector<std::vector<int32_t>> narrowed;  // int32 copies for models that take int32 ids
  narrowed.reserve(io_.inputs.size());
  std::vector<OrtPtr<OrtValue>> values;
  std::vector<const OrtValue*> value_ptrs;
  std::vector<const char*> names;
  const int64_t shape[2] = {batch, seq_len};
  for (const ModelInput& input : io_.inputs) {
    int64_t* data = nullptr;
    switch (input.role) {
      case InputRole::InputIds:
        data = tokens.input_ids;
        break;
      case InputRole::AttentionMask:
        data = tokens.attention_mask;
        break;
      case InputRole::TokenTypeIds:
        if (tokens.token_type_ids != nullptr) {
          data = tokens.token_type_ids;
        } else {
          zeros.assign(count, 0);
          data = zeros.data();
        }
        break;
      case InputRole::PositionIds:
        // As Hugging Face does for padded decoders: cumsum(mask) - 1, with 1 at padded positions.
        positions.assign(count, 1);
        for (int64_t b = 0; b < batch; ++b) {
          int64_t position = 0;
          for (int64_t t = 0; t < seq_len; ++t) {
            const size_t i = static_cast<size_t>(b * seq_len + t);
            if (tokens.attention_mask[i] != 0) positions[i] = position++;
          }
        }
        data = positions.data();
        break;
    }
    OrtValue* value = nullptr;
    if (input.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64) {
      // Zero copy: the tensor is a view of the caller's numpy buffer, alive for this whole call.
      check(api.CreateTensorWithDataAsOrtValue(cpu_memory_.get(), data, count * sizeof(int64_t), shape, 2,
                                               ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, &value));
    } else {
      narrowed.emplace_back();
      convert_to_int32(data, count, narrowed.back());
      check(api.CreateTensorWithDataAsOrtValue(cpu_memory_.get(), narrowed.back().data(), count * sizeof(int32_t),
                                               shape, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, &value));
    }
    values.emplace_back(value);
    value_ptrs.push_back(value);
    names.push_back(input.name.c_str());
  }

  std::vector<const char*> outputs;
  for (const std::string& name : output_names) outputs.push_back(name.c_str());
  std::vector<OrtValue*> raw_outputs(outputs.size(), nullptr);
  const auto start = std::chrono::steady_clock::now();
  OrtStatus* failed = api.Run(session_.get(), nullptr, names.data(), value_ptrs.data(), value_ptrs.size(),
                              outputs.data(), outputs.size(), raw_outputs.data());
  std::vector<OrtPtr<OrtValue>> results;
  for (OrtValue* raw : raw_outputs) results.emplace_back(raw);  // owned before any throw
  check(failed);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
  count_run(tokens, ns.count(), 0);
  return results;
}

void Session::embed(const TokenBatch& tokens, pooling::Mode mode, bool normalize, int64_t vocab_size,
                    pooling::Destination dest, int64_t dest_rows, int64_t skip_prefix) const {
  const int64_t batch = tokens.batch;
  const int64_t seq_len = tokens.seq_len;
  if (skip_prefix < 0) throw InvalidArgument("skip_prefix must be >= 0, got " + std::to_string(skip_prefix));
  if (skip_prefix > 0 && io_.output_is_pooled) {
    throw InvalidArgument("output '" + io_.output_name +
                          "' is already pooled inside the graph, so prompt tokens cannot be left out of it");
  }
  if (batch == 0) return;
  if (dest.rows != nullptr) {
    for (int64_t b = 0; b < batch; ++b) {
      if (dest.rows[b] < 0 || dest.rows[b] >= dest_rows) {
        throw InvalidArgument("destination row " + std::to_string(dest.rows[b]) + " is outside [0, " +
                              std::to_string(dest_rows) + ")");
      }
    }
  } else if (batch > dest_rows) {
    throw InvalidArgument("output has " + std::to_string(dest_rows) + " rows for a batch of " + std::to_string(batch));
  }

  std::vector<OrtPtr<OrtValue>> outputs = run(tokens, {io_.output_name}, vocab_size);
  const auto pool_start = std::chrono::steady_clock::now();
  const std::vector<int64_t> dims = tensor_shape(outputs[0].get()).dims;
  const size_t expected_rank = io_.output_is_pooled ? 2 : 3;
  const bool shape_ok = dims.size() == expected_rank && dims[0] == batch &&
                        (io_.output_is_pooled || dims[1] == seq_len) && dims.back() == dest.out_stride;
  if (!shape_ok) {
    std::string got;
    for (int64_t d : dims) got += (got.empty() ? "" : ", ") + std::to_string(d);
    throw InvalidArgument("output '" + io_.output_name + "' has shape [" + got + "]; expected [" +
                          std::to_string(batch) + (io_.output_is_pooled ? "" : ", " + std::to_string(seq_len)) + ", " +
                          std::to_string(dest.out_stride) + "]");
  }
  const auto* states = static_cast<const float*>(tensor_data(outputs[0].get()));
  pooling::pool(io_.output_is_pooled ? pooling::Mode::Pooled : mode, states, tokens.attention_mask, batch, seq_len,
                dest.out_stride, normalize, dest, pooling::best_isa(), skip_prefix);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - pool_start);
  pool_ns_.fetch_add(ns.count(), std::memory_order_relaxed);
}

void Session::count_run(const TokenBatch& tokens, int64_t run_ns, int64_t pool_ns) const noexcept {
  const int64_t count = tokens.batch * tokens.seq_len;
  const int64_t real =
      std::count_if(tokens.attention_mask, tokens.attention_mask + count, [](int64_t m) { return m != 0; });
  runs_.fetch_add(1, std::memory_order_relaxed);
  run_ns_.fetch_add(run_ns, std::memory_order_relaxed);
  pool_ns_.fetch_add(pool_ns, std::memory_order_relaxed);
  real_tokens_.fetch_add(real, std::memory_order_relaxed);
  computed_tokens_.fetch_add(count, std::memory_order_relaxed);
}

size_t Session::shared_tensors() const noexcept { return weights_ != nullptr ? weights_->tensor_count() : 0; }

SessionStats Session::stats() const noexcept {
  return {runs_.load(std::memory_order_relaxed), run_ns_.load(std::memory_order_relaxed),
          pool_ns_.load(std::memory_order_relaxed), real_tokens_.load(std::memory_order_relaxed),
          computed_tokens_.load(std::memory_order_relaxed)};
}

void Session::reset_stats() noexcept {
  for (auto* counter : {&runs_, &run_ns_, &pool_ns_, &real_tokens_, &computed_tokens_}) {
    counter->store(0, std::memory_order_relaxed);
  }
}

}  // namespace fastembed
