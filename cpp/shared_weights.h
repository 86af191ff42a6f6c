// One copy of a model's weights per process, however many sessions run it.
//
// An engine holds two ONNX Runtime sessions over a model (one for single batches on every thread,
// one for concurrent bulk runs), and each would load the weights and pre-pack its MatMul weights
// for itself: twice the memory (bge-reranker-base: 350 MB per session). ORT shares pre-packed
// weights between sessions that use one OrtPrepackedWeightsContainer, but only for initializers
// the caller hands it (AddInitializer) from memory the caller owns. So SharedWeights reads the
// model's initializer table (a small protobuf reader: names, types, shapes, and where the bytes
// are), maps the .onnx file and its external data files read-only, and gives every session over
// that file the same tensors over the mapped bytes and the same container (one per data file, so a
// fused graph that reads the plain graph's data file shares its pre-packed weights too).
//
// After a session is made, the mapped pages are returned to the kernel (madvise DONTNEED): ORT
// reads most weights once, to pre-pack them, and the few it reads at run time (biases, LayerNorm,
// embedding rows) come back from the page cache on demand.
#pragma once

#include <onnxruntime_c_api.h>

#include <memory>
#include <string>
#include <vector>

namespace fastembed {

// One initializer as the model file stores it.
struct InitializerRecord {
  std::string name;
  int32_t data_type = 0;  // ONNX TensorProto.DataType, the same numbers as ONNXTensorElementDataType
  std::vector<int64_t> dims;
  std::string file;  // empty: inline raw_data in the .onnx file; else the external data file's path
  uint64_t offset = 0, length = 0;
};

// The initializers of `onnx_path` whose bytes are raw (inline raw_data or external data), in file
// order; others (typed fields such as float_data, strings) are left out. Throws InvalidArgument
// if the file is not a readable ONNX model.
std::vector<InitializerRecord> read_initializers(const std::string& onnx_path);

class SharedWeights {
 public:
  // The weights of `onnx_path` for this process, made on first use and kept while a session holds
  // them; null when the file's weights cannot be shared (nothing raw to map, unreadable layout),
  // in which case sessions load the model as ORT does by itself.
  static std::shared_ptr<SharedWeights> for_model(const std::string& onnx_path);
  ~SharedWeights();
  SharedWeights(const SharedWeights&) = delete;
  SharedWeights& operator=(const SharedWeights&) = delete;

  // AddInitializer for every tensor: call before creating a session with container().
  void add_to(OrtSessionOptions* options) const;
  OrtPrepackedWeightsContainer* container() const noexcept;
  size_t tensor_count() const noexcept { return values_.size(); }
  // Gives the mapped pages back (they are read again from the page cache when touched).
  void release_pages() const noexcept;

 private:
  SharedWeights() = default;
  struct Mapping {
    void* address = nullptr;
    size_t size = 0;
  };
  std::vector<Mapping> mappings_;
  std::vector<std::string> names_;
  std::vector<OrtValue*> values_;
  // Shared by every graph whose weights live in the same data file (a model's plain and fused
  // graphs): ORT finds a pre-packed weight in it by the packed bytes, whatever the tensor's name.
  struct Container;
  std::shared_ptr<Container> container_;
};

}  // namespace fastembed
