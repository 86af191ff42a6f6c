#include "shared_weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "ort_runtime.h"

namespace fastembed {
namespace {

// ---------------------------------------------------------------------------------------------
// A read-only file mapping, unmapped when it goes.

struct MappedFile {
  void* address = nullptr;
  size_t size = 0;
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw InvalidArgument("cannot open " + path);
    struct stat st{};
    if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
      ::close(fd);
      throw InvalidArgument("cannot read " + path);
    }
    size = static_cast<size_t>(st.st_size);
    address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (address == MAP_FAILED) {
      address = nullptr;
      throw InvalidArgument("cannot map " + path);
    }
  }
  ~MappedFile() {
    if (address != nullptr) ::munmap(address, size);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* bytes() const noexcept { return static_cast<const uint8_t*>(address); }
};

// ---------------------------------------------------------------------------------------------
// Just enough of the protobuf wire format to walk ModelProto.graph.initializer.

class Reader {
 public:
  Reader(const uint8_t* begin, const uint8_t* end) : p_(begin), end_(end) {}
  bool done() const noexcept { return p_ >= end_; }
  const uint8_t* position() const noexcept { return p_; }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) throw InvalidArgument("truncated protobuf varint");
      const uint8_t byte = *p_++;
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw InvalidArgument("protobuf varint longer than 10 bytes");
  }

  Reader sub() {  // a length-delimited field's contents
    const uint64_t length = varint();
    if (length > static_cast<uint64_t>(end_ - p_)) throw InvalidArgument("protobuf field runs past its message");
    Reader inner(p_, p_ + length);
    p_ += length;
    return inner;
  }

  std::string string() {
    Reader inner = sub();
    return std::string(reinterpret_cast<const char*>(inner.p_), static_cast<size_t>(inner.end_ - inner.p_));
  }

  void skip(uint32_t wire) {
    switch (wire) {
      case 0:
        varint();
        return;
      case 1:
        advance(8);
        return;
      case 2:
        sub();
        return;
      case 5:
        advance(4);
        return;
      default:
        throw InvalidArgument("unsupported protobuf wire type " + std::to_string(wire));
    }
  }

  size_t size() const noexcept { return static_cast<size_t>(end_ - p_); }

 private:
  void advance(size_t n) {
    if (n > static_cast<size_t>(end_ - p_)) throw InvalidArgument("truncated protobuf field");
    p_ += n;
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

// Field numbers of onnx.proto.
constexpr uint32_t kModelGraph = 7, kGraphInitializer = 5;
constexpr uint32_t kTensorDims = 1, kTensorDataType = 2, kTensorName = 8, kTensorRawData = 9, kTensorExternalData = 13,
                   kTensorDataLocation = 14;
constexpr uint64_t kLocationExternal = 1;

size_t element_size(int32_t type) {
  switch (type) {
    case 2:  // uint8
    case 3:  // int8
    case 9:  // bool
      return 1;
    case 4:   // uint16
    case 5:   // int16
    case 10:  // float16
    case 16:  // bfloat16
      return 2;
    case 1:   // float
    case 6:   // int32
    case 12:  // uint32
      return 4;
    case 7:   // int64
    case 11:  // double
    case 13:  // uint64
      return 8;
    default:
      return 0;  // strings, complex, sub-byte types: not shared
  }
}

std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

InitializerRecord read_tensor(Reader tensor, const uint8_t* file_start, const std::string& directory, bool& raw) {
  InitializerRecord record;
  bool has_raw = false, external = false;
  std::map<std::string, std::string> entries;
  while (!tensor.done()) {
    const uint64_t tag = tensor.varint();
    const auto field = static_cast<uint32_t>(tag >> 3), wire = static_cast<uint32_t>(tag & 7);
    if (field == kTensorDims && wire == 0) {
      record.dims.push_back(static_cast<int64_t>(tensor.varint()));
    } else if (field == kTensorDims && wire == 2) {
      Reader packed = tensor.sub();
      while (!packed.done()) record.dims.push_back(static_cast<int64_t>(packed.varint()));
    } else if (field == kTensorDataType && wire == 0) {
      record.data_type = static_cast<int32_t>(tensor.varint());
    } else if (field == kTensorName && wire == 2) {
      record.name = tensor.string();
    } else if (field == kTensorRawData && wire == 2) {
      Reader bytes = tensor.sub();
      record.offset = static_cast<uint64_t>(bytes.position() - file_start);
      record.length = bytes.size();
      has_raw = true;
    } else if (field == kTensorExternalData && wire == 2) {
      Reader entry = tensor.sub();
      std::string key, value;
      while (!entry.done()) {
        const uint64_t entry_tag = entry.varint();
        if ((entry_tag >> 3) == 1 && (entry_tag & 7) == 2) {
          key = entry.string();
        } else if ((entry_tag >> 3) == 2 && (entry_tag & 7) == 2) {
          value = entry.string();
        } else {
          entry.skip(static_cast<uint32_t>(entry_tag & 7));
        }
      }
      entries[key] = value;
    } else if (field == kTensorDataLocation && wire == 0) {
      external = tensor.varint() == kLocationExternal;
    } else {
      tensor.skip(wire);
    }
  }
  raw = false;
  if (external && entries.count("location") != 0) {
    const std::string& location = entries["location"];
    if (location.empty() || location[0] == '/' || location.find("..") != std::string::npos) return record;
    record.file = directory + "/" + location;
    record.offset = entries.count("offset") ? std::strtoull(entries["offset"].c_str(), nullptr, 10) : 0;
    record.length = entries.count("length") ? std::strtoull(entries["length"].c_str(), nullptr, 10) : 0;
    raw = record.length > 0;
  } else if (!external && has_raw) {
    raw = true;
  }
  return record;
}

}  // namespace

std::vector<InitializerRecord> read_initializers(const std::string& onnx_path) {
  MappedFile file(onnx_path);
  const std::string directory = directory_of(onnx_path);
  std::vector<InitializerRecord> records;
  Reader model(file.bytes(), file.bytes() + file.size);
  while (!model.done()) {
    const uint64_t tag = model.varint();
    if ((tag >> 3) != kModelGraph || (tag & 7) != 2) {
      model.skip(static_cast<uint32_t>(tag & 7));
      continue;
    }
    Reader graph = model.sub();
    while (!graph.done()) {
      const uint64_t graph_tag = graph.varint();
      if ((graph_tag >> 3) != kGraphInitializer || (graph_tag & 7) != 2) {
        graph.skip(static_cast<uint32_t>(graph_tag & 7));
        continue;
      }
      bool raw = false;
      InitializerRecord record = read_tensor(graph.sub(), file.bytes(), directory, raw);
      if (raw && !record.name.empty()) records.push_back(std::move(record));
    }
  }
  return records;
}

namespace {

std::mutex registry_mutex;
std::map<std::string, std::weak_ptr<SharedWeights>>& registry() {
  static auto* map = new std::map<std::string, std::weak_ptr<SharedWeights>>();  // never destroyed
  return *map;
}

std::string canonical(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return path;
  std::string out(resolved);
  std::free(resolved);
  return out;
}

// The registry key: the file and its identity, so a file replaced on disk (a new int8 graph from
// `quantize`) is read afresh rather than given the weights of the file it replaced.
std::string identity(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return path;
#if defined(__APPLE__)
  const struct timespec& modified = st.st_mtimespec;
#else
  const struct timespec& modified = st.st_mtim;
#endif
  return path + "#" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(modified.tv_sec) + "." + std::to_string(modified.tv_nsec);
}

}  // namespace

struct SharedWeights::Container {
  OrtPrepackedWeightsContainer* raw = nullptr;
  Container() { check(ort_api().CreatePrepackedWeightsContainer(&raw)); }
  ~Container() { ort_api().ReleasePrepackedWeightsContainer(raw); }
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;
  OrtPrepackedWeightsContainer* get() const noexcept { return raw; }
};

std::shared_ptr<SharedWeights> SharedWeights::for_model(const std::string& onnx_path) {
  const std::string path = canonical(onnx_path);
  const std::string key = identity(path);
  std::lock_guard<std::mutex> lock(registry_mutex);
  if (auto existing = registry()[key].lock()) return existing;
  std::vector<InitializerRecord> records;
  try {
    records = read_initializers(path);
  } catch (const std::exception&) {
    return nullptr;  // ORT reads the file itself and says what is wrong with it
  }
  if (records.empty()) return nullptr;

  const OrtApi& api = ort_api();
  std::shared_ptr<SharedWeights> weights(new SharedWeights());
  std::map<std::string, size_t> mapped;  // file -> index in mappings_
  OrtMemoryInfo* raw_memory = nullptr;
  check(api.CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &raw_memory));
  OrtPtr<OrtMemoryInfo> memory(raw_memory);
  for (const InitializerRecord& record : records) {
    const size_t element = element_size(record.data_type);
    uint64_t count = 1;
    for (int64_t d : record.dims) count *= d < 0 ? 0 : static_cast<uint64_t>(d);
    if (element == 0 || count * element != record.length || record.length == 0) continue;
    const std::string& file_path = record.file.empty() ? path : record.file;
    auto found = mapped.find(file_path);
    if (found == mapped.end()) {
      try {
        MappedFile file(file_path);
        weights->mappings_.push_back({file.address, file.size});
        file.address = nullptr;  // owned by weights now
      } catch (const std::exception&) {
        continue;  // ORT reports a missing data file itself
      }
      found = mapped.emplace(file_path, weights->mappings_.size() - 1).first;
    }
    const Mapping& mapping = weights->mappings_[found->second];
    if (record.offset + record.length > mapping.size) continue;
    auto* data = static_cast<uint8_t*>(mapping.address) + record.offset;
    if (reinterpret_cast<uintptr_t>(data) % 64 != 0) continue;  // inline raw_data: ORT copies it, aligned
    OrtValue* value = nullptr;
    check(api.CreateTensorWithDataAsOrtValue(memory.get(), data, record.length, record.dims.data(), record.dims.size(),
                                             static_cast<ONNXTensorElementDataType>(record.data_type), &value));
    weights->names_.push_back(record.name);
    weights->values_.push_back(value);
  }
  if (weights->values_.empty()) return nullptr;
  // One container per weights file: the data file most tensors come from, else the graph itself.
  static auto* containers = new std::map<std::string, std::weak_ptr<Container>>();  // under registry_mutex
  std::map<std::string, size_t> per_file;
  for (const InitializerRecord& record : records) per_file[record.file.empty() ? path : record.file] += record.length;
  const std::string source =
      identity(std::max_element(per_file.begin(), per_file.end(), [](const auto& a, const auto& b) {
                 return a.second < b.second;
               })->first);
  weights->container_ = (*containers)[source].lock();
  if (weights->container_ == nullptr) {
    weights->container_ = std::make_shared<Container>();
    (*containers)[source] = weights->container_;
  }
  registry()[key] = weights;
  return weights;
}

SharedWeights::~SharedWeights() {
  const OrtApi& api = ort_api();
  for (OrtValue* value : values_) api.ReleaseValue(value);
  for (const Mapping& mapping : mappings_) ::munmap(mapping.address, mapping.size);
}

OrtPrepackedWeightsContainer* SharedWeights::container() const noexcept { return container_->get(); }

void SharedWeights::add_to(OrtSessionOptions* options) const {
  const OrtApi& api = ort_api();
  for (size_t i = 0; i < values_.size(); ++i) check(api.AddInitializer(options, names_[i].c_str(), values_[i]));
}

void SharedWeights::release_pages() const noexcept {
  for (const Mapping& mapping : mappings_) ::madvise(mapping.address, mapping.size, MADV_DONTNEED);
}

}  // namespace fastembed
