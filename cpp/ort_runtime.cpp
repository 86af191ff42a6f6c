#include "ort_runtime.h"

#include <dlfcn.h>

#include <mutex>

namespace fastembed {
namespace {

std::mutex g_load_mutex;
OrtRuntime* g_runtime = nullptr;  // set once under g_load_mutex, then only read

using GetApiBaseFn = const OrtApiBase* (*)();

}  // namespace

OrtRuntime::OrtRuntime(std::string library_path, const OrtApi* api, const OrtApiBase* base)
    : library_path_(std::move(library_path)), api_(api), base_(base) {}

OrtRuntime& OrtRuntime::load(const std::string& library_path) {
  std::lock_guard<std::mutex> lock(g_load_mutex);
  if (g_runtime != nullptr) {
    if (g_runtime->library_path_ != library_path) {
      throw RuntimeLoadError("ONNX Runtime is already loaded from " + g_runtime->library_path_ +
                             "; cannot load a second copy from " + library_path);
    }
    return *g_runtime;
  }

  // RTLD_LOCAL: ORT's symbols stay private to us, so a copy loaded by onnxruntime's own Python
  // module in the same process does not clash with this one.
  void* handle = dlopen(library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw RuntimeLoadError("cannot load ONNX Runtime from " + library_path + ": " +
                           (why != nullptr ? why : "unknown dlopen error"));
  }
  auto get_api_base = reinterpret_cast<GetApiBaseFn>(dlsym(handle, "OrtGetApiBase"));
  if (get_api_base == nullptr) {
    throw RuntimeLoadError(library_path + " is not an ONNX Runtime library (no OrtGetApiBase symbol)");
  }
  const OrtApiBase* base = get_api_base();
  // GetApi returns null when the runtime is older than the API version our headers describe.
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    throw RuntimeLoadError("ONNX Runtime " + std::string(base->GetVersionString()) + " at " + library_path +
                           " is older than the headers this extension was built with "
                           "(C API version " +
                           std::to_string(ORT_API_VERSION) + ", ONNX Runtime 1." + std::to_string(ORT_API_VERSION) +
                           "); install onnxruntime>=1." + std::to_string(ORT_API_VERSION));
  }

  auto* runtime = new OrtRuntime(library_path, api, base);  // intentionally never freed
  g_runtime = runtime;                                      // set before check() so its error path can use ort_api()
  OrtEnv* env = nullptr;
  OrtStatus* status = api->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "fastembed_native", &env);
  if (status != nullptr) {
    g_runtime = nullptr;
    std::string message = api->GetErrorMessage(status);
    api->ReleaseStatus(status);
    delete runtime;
    throw RuntimeLoadError("ONNX Runtime at " + library_path + " failed to create its environment: " + message);
  }
  runtime->env_ = env;
  return *runtime;
}

bool OrtRuntime::is_loaded() noexcept {
  std::lock_guard<std::mutex> lock(g_load_mutex);
  return g_runtime != nullptr && g_runtime->env_ != nullptr;
}

OrtRuntime& OrtRuntime::get() {
  std::lock_guard<std::mutex> lock(g_load_mutex);
  if (g_runtime == nullptr) {
    throw RuntimeLoadError("ONNX Runtime is not loaded yet (call load_runtime first)");
  }
  return *g_runtime;
}

std::string OrtRuntime::version() const { return base_->GetVersionString(); }

std::vector<std::string> OrtRuntime::available_providers() const {
  char** names = nullptr;
  int count = 0;
  check(api_->GetAvailableProviders(&names, &count));
  std::vector<std::string> result(names, names + count);
  check(api_->ReleaseAvailableProviders(names, count));
  return result;
}

const OrtApi& ort_api() {
  // g_runtime is written once, before any session exists; reading it without the lock is safe
  // on every path that can reach here with a live handle.
  if (g_runtime == nullptr) throw RuntimeLoadError("ONNX Runtime is not loaded yet");
  return g_runtime->api();
}

void check(OrtStatus* status) {
  if (status == nullptr) return;
  const OrtApi& api = ort_api();
  OrtErrorCode code = api.GetErrorCode(status);
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  throw OrtError(code, message);
}

const char* error_code_name(OrtErrorCode code) noexcept {
  switch (code) {
    case ORT_OK:
      return "ORT_OK";
    case ORT_FAIL:
      return "ORT_FAIL";
    case ORT_INVALID_ARGUMENT:
      return "ORT_INVALID_ARGUMENT";
    case ORT_NO_SUCHFILE:
      return "ORT_NO_SUCHFILE";
    case ORT_NO_MODEL:
      return "ORT_NO_MODEL";
    case ORT_ENGINE_ERROR:
      return "ORT_ENGINE_ERROR";
    case ORT_RUNTIME_EXCEPTION:
      return "ORT_RUNTIME_EXCEPTION";
    case ORT_INVALID_PROTOBUF:
      return "ORT_INVALID_PROTOBUF";
    case ORT_MODEL_LOADED:
      return "ORT_MODEL_LOADED";
    case ORT_NOT_IMPLEMENTED:
      return "ORT_NOT_IMPLEMENTED";
    case ORT_INVALID_GRAPH:
      return "ORT_INVALID_GRAPH";
    case ORT_EP_FAIL:
      return "ORT_EP_FAIL";
    default:
      return "ORT_UNKNOWN_ERROR";
  }
}

}  // namespace fastembed
