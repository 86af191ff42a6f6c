// Loading ONNX Runtime at run time, the one place ORT errors become C++ exceptions, and RAII
// ownership for every Ort* handle this project creates.
#pragma once

#include <onnxruntime_c_api.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastembed {

// An error that ONNX Runtime reported, with its OrtErrorCode. The bindings turn it into a typed
// Python exception (fastembed_native.errors.OrtError and subclasses).
class OrtError : public std::runtime_error {
 public:
  OrtError(OrtErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  OrtErrorCode code() const noexcept { return code_; }

 private:
  OrtErrorCode code_;
};

// The runtime library could not be loaded or is too old for the headers we were built with.
class RuntimeLoadError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bad input from the caller (shapes, values): becomes ValueError.
class InvalidArgument : public std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// The process-wide ONNX Runtime: loaded once with dlopen, never unloaded (ORT keeps global thread
// pools and registrations that do not survive dlclose).
class OrtRuntime {
 public:
  // Loads the library at `library_path` the first time; later calls with the same path return the
  // loaded runtime, and calls with another path throw (two ORT copies in one process would not share
  // sessions or the environment).
  static OrtRuntime& load(const std::string& library_path);
  // The loaded runtime; throws RuntimeLoadError if load() has not succeeded yet.
  static OrtRuntime& get();
  static bool is_loaded() noexcept;

  const OrtApi& api() const noexcept { return *api_; }
  OrtEnv* env() const noexcept { return env_; }
  const std::string& library_path() const noexcept { return library_path_; }
  std::string version() const;
  std::vector<std::string> available_providers() const;

 private:
  OrtRuntime(std::string library_path, const OrtApi* api, const OrtApiBase* base);
  std::string library_path_;
  const OrtApi* api_;
  const OrtApiBase* base_;
  OrtEnv* env_ = nullptr;  // lives as long as the process, like the library
};

// The API table of the loaded runtime (shorthand for OrtRuntime::get().api()).
const OrtApi& ort_api();

// The choke point: every OrtStatus* passes through here. Null means success; anything else is
// released and rethrown as OrtError carrying ORT's code and message.
void check(OrtStatus* status);

// unique_ptr deleters calling the matching Release function of the API table.
template <typename T>
struct OrtReleaser;
#define FASTEMBED_ORT_RELEASER(Type, Release) \
  template <>                                 \
  struct OrtReleaser<Type> {                  \
    void operator()(Type* p) const noexcept { \
      if (p != nullptr) ort_api().Release(p); \
    }                                         \
  };
FASTEMBED_ORT_RELEASER(OrtSessionOptions, ReleaseSessionOptions)
FASTEMBED_ORT_RELEASER(OrtSession, ReleaseSession)
FASTEMBED_ORT_RELEASER(OrtValue, ReleaseValue)
FASTEMBED_ORT_RELEASER(OrtMemoryInfo, ReleaseMemoryInfo)
FASTEMBED_ORT_RELEASER(OrtTypeInfo, ReleaseTypeInfo)
FASTEMBED_ORT_RELEASER(OrtTensorTypeAndShapeInfo, ReleaseTensorTypeAndShapeInfo)
FASTEMBED_ORT_RELEASER(OrtCUDAProviderOptionsV2, ReleaseCUDAProviderOptions)
FASTEMBED_ORT_RELEASER(OrtRunOptions, ReleaseRunOptions)
#undef FASTEMBED_ORT_RELEASER

template <typename T>
using OrtPtr = std::unique_ptr<T, OrtReleaser<T>>;

// Names of ORT's error codes ("ORT_INVALID_ARGUMENT", ...), for messages and the Python exception.
const char* error_code_name(OrtErrorCode code) noexcept;

}  // namespace fastembed
