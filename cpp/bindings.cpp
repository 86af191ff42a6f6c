// pybind11 marshalling only: check every Python argument, then hand raw pointers to the C++ core
// with the GIL released. The logic lives in session.cpp and pooling.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <optional>
#include <string>

#include "multivector.h"
#include "ort_runtime.h"
#include "pooling.h"
#include "session.h"
#include "sparse.h"

namespace py = pybind11;
using fastembed::InvalidArgument;
namespace pooling = fastembed::pooling;

namespace {

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks that `a` is a C-contiguous array of T with `ndim` dimensions and returns it unchanged:
// we never convert silently, because a converted copy would defeat the zero-copy path.
template <typename T>
py::array checked(const py::handle& obj, const char* what, py::ssize_t ndim, bool writeable = false) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(what) + " must be a numpy array, not " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<T>())) {
    throw py::type_error(std::string(what) + " must have dtype " + std::string(py::str(py::dtype::of<T>())) + ", not " +
                         std::string(py::str(a.dtype())));
  }
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(what) + " must have " + std::to_string(ndim) + " dimensions, got shape " +
                          shape_of(a));
  }
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(what) + " must be C-contiguous");
  if (writeable && !a.writeable()) throw py::value_error(std::string(what) + " must be writeable");
  return a;
}

pooling::Mode parse_mode(const std::string& name) {
  if (name == "mean") return pooling::Mode::Mean;
  if (name == "cls") return pooling::Mode::Cls;
  if (name == "last_token") return pooling::Mode::LastToken;
  throw py::value_error("unknown pooling mode '" + name + "'; expected 'mean', 'cls' or 'last_token'");
}

pooling::Isa parse_isa(const std::optional<std::string>& name) {
  if (!name) return pooling::best_isa();
  for (pooling::Isa isa : pooling::supported_isas()) {
    if (*name == pooling::isa_name(isa)) return isa;
  }
  std::string available;
  for (pooling::Isa isa : pooling::supported_isas())
    available += std::string(available.empty() ? "" : ", ") + pooling::isa_name(isa);
  throw py::value_error("instruction set '" + *name + "' is not available on this CPU (available: " + available + ")");
}

// Validates one batch's arrays against each other and the destination; returns the raw view.
struct BatchArgs {
  fastembed::TokenBatch tokens;
  pooling::Destination dest;
  int64_t dest_rows;
};

BatchArgs check_batch(const py::handle& input_ids, const py::handle& attention_mask, const py::handle& token_type_ids,
                      const py::handle& out, const py::handle& rows) {
  py::array ids = checked<int64_t>(input_ids, "input_ids", 2);
  py::array mask = checked<int64_t>(attention_mask, "attention_mask", 2);
  if (mask.shape(0) != ids.shape(0) || mask.shape(1) != ids.shape(1)) {
    throw py::value_error("attention_mask has shape " + shape_of(mask) + " but input_ids has shape " + shape_of(ids));
  }
  int64_t* types_ptr = nullptr;
  if (!token_type_ids.is_none()) {
    py::array types = checked<int64_t>(token_type_ids, "token_type_ids", 2);
    if (types.shape(0) != ids.shape(0) || types.shape(1) != ids.shape(1)) {
      throw py::value_error("token_type_ids has shape " + shape_of(types) + " but input_ids has shape " +
                            shape_of(ids));
    }
    types_ptr = static_cast<int64_t*>(types.mutable_data());
  }
  py::array result = checked<float>(out, "out", 2, /*writeable=*/true);
  const int64_t* rows_ptr = nullptr;
  if (!rows.is_none()) {
    py::array r = checked<int64_t>(rows, "rows", 1);
    if (r.shape(0) != ids.shape(0)) {
      throw py::value_error("rows has shape " + shape_of(r) + " but the batch has " + std::to_string(ids.shape(0)) +
                            " rows");
    }
    rows_ptr = static_cast<const int64_t*>(r.data());
  }
  // Arrays are borrowed from the caller's frame, which keeps them alive for the whole call.
  return {{static_cast<int64_t*>(ids.mutable_data()), static_cast<int64_t*>(mask.mutable_data()), types_ptr,
           ids.shape(0), ids.shape(1)},
          {static_cast<float*>(result.mutable_data()), result.shape(1), rows_ptr},
          result.shape(0)};
}

// A numpy array that owns `values` (moved to the heap, freed with the array): no copy.
template <typename T>
py::array_t<T> adopt(std::vector<T>&& values) {
  auto* owned = new std::vector<T>(std::move(values));
  py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, owned->data(), owner);
}

// An output of Session::run as a numpy array over ORT's own buffer: the array owns the OrtValue.
py::array wrap_output(fastembed::OrtPtr<OrtValue> value, const std::string& name) {
  const fastembed::TensorShape shape = fastembed::tensor_shape(value.get());
  py::dtype dtype;
  if (shape.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    dtype = py::dtype::of<float>();
  else if (shape.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
    dtype = py::dtype::of<int64_t>();
  else
    throw py::type_error("output '" + name + "' is neither float32 nor int64 (ONNX element type " +
                         std::to_string(static_cast<int>(shape.type)) + ")");
  void* data = const_cast<void*>(fastembed::tensor_data(value.get()));
  py::capsule owner(value.release(), [](void* p) { fastembed::ort_api().ReleaseValue(static_cast<OrtValue*>(p)); });
  return py::array(dtype, shape.dims, data, owner);
}

py::tuple sparse_rows(fastembed::sparse::Rows&& rows) {
  return py::make_tuple(adopt(std::move(rows.offsets)), adopt(std::move(rows.indices)), adopt(std::move(rows.values)));
}

fastembed::KeyValues to_key_values(const py::dict& d) {
  fastembed::KeyValues kv;
  for (auto item : d) kv.emplace_back(py::str(item.first), py::str(item.second));
  return kv;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastembed_native's compiled core: ONNX Runtime sessions and pooling kernels";
  m.attr("HEADERS_API_VERSION") = ORT_API_VERSION;

  // One translator for every C++ error: ORT errors carry their code into fastembed_native.errors.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastembed::OrtError& e) {
      py::object errors = py::module_::import("fastembed_native.errors");
      py::object exc =
          errors.attr("ort_error")(static_cast<int>(e.code()), fastembed::error_code_name(e.code()), e.what());
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    } catch (const fastembed::RuntimeLoadError& e) {
      py::object cls = py::module_::import("fastembed_native.errors").attr("RuntimeLoadError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def(
      "load_runtime", [](const std::string& path) { fastembed::OrtRuntime::load(path); }, py::arg("library_path"),
      "Load ONNX Runtime's shared library from `library_path` (once per process).");
  m.def("runtime_loaded", &fastembed::OrtRuntime::is_loaded);
  m.def("runtime_version", [] { return fastembed::OrtRuntime::get().version(); });
  m.def("runtime_library_path", [] { return fastembed::OrtRuntime::get().library_path(); });
  m.def(
      "available_providers", [] { return fastembed::OrtRuntime::get().available_providers(); },
      "Execution providers compiled into the loaded ONNX Runtime, e.g. ['CPUExecutionProvider'].");

  m.def(
      "simd_level", [] { return std::string(pooling::isa_name(pooling::best_isa())); },
      "The instruction set the pooling kernels use on this CPU.");
  m.def("supported_isas", [] {
    std::vector<std::string> names;
    for (pooling::Isa isa : pooling::supported_isas()) names.emplace_back(pooling::isa_name(isa));
    return names;
  });

  m.def(
      "pool",
      [](const py::handle& states_obj, const py::handle& mask_obj, const std::string& mode_name, bool normalize,
         const std::optional<std::string>& isa_name, int64_t skip_prefix) {
        pooling::Mode mode = parse_mode(mode_name);
        if (skip_prefix < 0) throw py::value_error("skip_prefix must be >= 0, got " + std::to_string(skip_prefix));
        py::array states = checked<float>(states_obj, "states", 3);
        py::array mask = checked<int64_t>(mask_obj, "mask", 2);
        if (mask.shape(0) != states.shape(0) || mask.shape(1) != states.shape(1)) {
          throw py::value_error("mask has shape " + shape_of(mask) + " but states has shape " + shape_of(states));
        }
        pooling::Isa isa = parse_isa(isa_name);
        const int64_t batch = states.shape(0), seq_len = states.shape(1), dim = states.shape(2);
        py::array_t<float> out({batch, dim});
        pooling::Destination dest{out.mutable_data(), dim, nullptr};
        const float* s = static_cast<const float*>(states.data());
        const int64_t* k = static_cast<const int64_t*>(mask.data());
        {
          py::gil_scoped_release release;  // only raw buffers owned by arrays held above are touched
          pooling::pool(mode, s, k, batch, seq_len, dim, normalize, dest, isa, skip_prefix);
        }
        return out;
      },
      py::arg("states"), py::arg("mask"), py::arg("mode"), py::arg("normalize") = false, py::arg("isa") = py::none(),
      py::arg("skip_prefix") = 0,
      "Pool float32 states [batch, seq, dim] under an int64 mask [batch, seq] into [batch, dim]; the first\n"
      "skip_prefix real tokens of each row (a prompt) are left out.");

  m.def(
      "splade",
      [](const py::handle& logits_obj, const py::handle& mask_obj, const std::string& pooling_name,
         const std::string& activation_name, int64_t max_active_dims, const std::optional<std::string>& isa_name) {
        namespace sparse = fastembed::sparse;
        sparse::Pool pool;
        if (pooling_name == "max")
          pool = sparse::Pool::Max;
        else if (pooling_name == "sum")
          pool = sparse::Pool::Sum;
        else
          throw py::value_error("unknown sparse pooling '" + pooling_name + "'; expected 'max' or 'sum'");
        sparse::Activation activation;
        if (activation_name == "log1p_relu")
          activation = sparse::Activation::Log1pRelu;
        else if (activation_name == "log1p_log1p_relu")
          activation = sparse::Activation::Log1pLog1pRelu;
        else
          throw py::value_error("unknown activation '" + activation_name +
                                "'; expected 'log1p_relu' or 'log1p_log1p_relu'");
        if (max_active_dims < 0) throw py::value_error("max_active_dims must be >= 0 (0: all)");
        py::array logits = checked<float>(logits_obj, "logits", 3);
        py::array mask = checked<int64_t>(mask_obj, "mask", 2);
        if (mask.shape(0) != logits.shape(0) || mask.shape(1) != logits.shape(1)) {
          throw py::value_error("mask has shape " + shape_of(mask) + " but logits has shape " + shape_of(logits));
        }
        if (logits.shape(2) > std::numeric_limits<int32_t>::max()) throw py::value_error("vocabulary too large");
        const pooling::Isa isa = parse_isa(isa_name);
        const auto* l = static_cast<const float*>(logits.data());
        const auto* k = static_cast<const int64_t*>(mask.data());
        sparse::Rows rows;
        {
          py::gil_scoped_release release;
          sparse::splade(l, k, logits.shape(0), logits.shape(1), logits.shape(2), pool, activation, max_active_dims,
                         isa, rows);
        }
        return sparse_rows(std::move(rows));
      },
      py::arg("logits"), py::arg("mask"), py::arg("pooling") = "max", py::arg("activation") = "log1p_relu",
      py::arg("max_active_dims") = 0, py::arg("isa") = py::none(),
      "SPLADE pooling of float32 logits [batch, seq, vocab] under an int64 mask [batch, seq]: one sparse row\n"
      "per text as (offsets int64 [batch + 1], indices int32, values float32), indices ascending.");

  m.def(
      "token_weights",
      [](const py::handle& weights_obj, const py::handle& ids_obj, const py::handle& mask_obj,
         const std::vector<int64_t>& dropped) {
        py::array weights = checked<float>(weights_obj, "weights", 2);
        py::array ids = checked<int64_t>(ids_obj, "input_ids", 2);
        py::array mask = checked<int64_t>(mask_obj, "mask", 2);
        for (const py::array* a : {&ids, &mask}) {
          if (a->shape(0) != weights.shape(0) || a->shape(1) != weights.shape(1)) {
            throw py::value_error("weights has shape " + shape_of(weights) + " but input_ids / mask have " +
                                  shape_of(*a));
          }
        }
        const auto* w = static_cast<const float*>(weights.data());
        const auto* i = static_cast<const int64_t*>(ids.data());
        const auto* k = static_cast<const int64_t*>(mask.data());
        fastembed::sparse::Rows rows;
        {
          py::gil_scoped_release release;
          fastembed::sparse::token_weights(w, i, k, weights.shape(0), weights.shape(1), dropped, rows);
        }
        return sparse_rows(std::move(rows));
      },
      py::arg("weights"), py::arg("input_ids"), py::arg("mask"), py::arg("dropped") = std::vector<int64_t>{},
      "One weight per token (float32 [batch, seq]) into one sparse row per text: each id's largest weight,\n"
      "ids in `dropped` and weights <= 0 left out; (offsets, indices int32, values float32).");

  m.def(
      "pack_tokens",
      [](const py::handle& states_obj, const py::handle& keep_obj, bool normalize,
         const std::optional<std::string>& isa_name) {
        py::array states = checked<float>(states_obj, "states", 3);
        py::array keep = checked<bool>(keep_obj, "keep", 2);
        if (keep.shape(0) != states.shape(0) || keep.shape(1) != states.shape(1)) {
          throw py::value_error("keep has shape " + shape_of(keep) + " but states has shape " + shape_of(states));
        }
        const pooling::Isa isa = parse_isa(isa_name);
        const int64_t batch = states.shape(0), seq_len = states.shape(1), dim = states.shape(2);
        const auto* s = static_cast<const float*>(states.data());
        const auto* k = static_cast<const uint8_t*>(keep.data());
        py::array_t<int64_t> offsets(batch + 1);
        fastembed::multivector::count_kept(k, batch, seq_len, offsets.mutable_data());
        py::array_t<float> vectors({offsets.at(batch), dim});
        float* out = vectors.mutable_data();
        {
          py::gil_scoped_release release;
          fastembed::multivector::pack(s, k, batch, seq_len, dim, normalize, isa, out);
        }
        return py::make_tuple(vectors, offsets);
      },
      py::arg("states"), py::arg("keep"), py::arg("normalize") = true, py::arg("isa") = py::none(),
      "The float32 states [batch, seq, dim] where the bool mask keep [batch, seq] is set, packed into one\n"
      "(n, dim) array (each row L2-normalised when normalize) and offsets [batch + 1] into it.");

  m.def(
      "maxsim",
      [](const py::handle& query_obj, const py::handle& documents_obj, const py::handle& offsets_obj,
         const std::optional<std::string>& isa_name) {
        py::array query = checked<float>(query_obj, "query", 2);
        py::array documents = checked<float>(documents_obj, "documents", 2);
        py::array offsets = checked<int64_t>(offsets_obj, "offsets", 1);
        if (documents.shape(1) != query.shape(1)) {
          throw py::value_error("documents have shape " + shape_of(documents) + " but the query has shape " +
                                shape_of(query) + ": the vector widths differ");
        }
        if (offsets.shape(0) < 1) throw py::value_error("offsets must have at least one entry (0)");
        const auto* o = static_cast<const int64_t*>(offsets.data());
        const int64_t count = offsets.shape(0) - 1;
        if (o[0] != 0 || o[count] != documents.shape(0)) {
          throw py::value_error("offsets must start at 0 and end at the number of document rows (" +
                                std::to_string(documents.shape(0)) + ")");
        }
        for (int64_t d = 0; d < count; ++d) {
          if (o[d + 1] < o[d]) throw py::value_error("offsets must not decrease (at " + std::to_string(d) + ")");
        }
        const pooling::Isa isa = parse_isa(isa_name);
        py::array_t<float> scores(count);
        const auto* q = static_cast<const float*>(query.data());
        const auto* x = static_cast<const float*>(documents.data());
        float* out = scores.mutable_data();
        {
          py::gil_scoped_release release;
          fastembed::multivector::maxsim(q, query.shape(0), x, o, count, query.shape(1), isa, out);
        }
        return scores;
      },
      py::arg("query"), py::arg("documents"), py::arg("offsets"), py::arg("isa") = py::none(),
      "MaxSim of a query's vectors (float32 [q, dim]) against each document of a packed array\n"
      "(documents [n, dim], offsets [count + 1]): float32 [count].");

  m.def(
      "tensor_data_address",
      [](const py::handle& obj) {
        py::array a = checked<int64_t>(obj, "array", 2);
        auto value = fastembed::tensor_over(static_cast<int64_t*>(a.mutable_data()), {a.shape(0), a.shape(1)});
        return reinterpret_cast<std::uintptr_t>(fastembed::tensor_data(value.get()));
      },
      "Address of the data of the ORT tensor created over an int64 [rows, cols] array, as embed() creates them.");

  py::class_<fastembed::Session>(m, "Session")
      .def(py::init([](const std::string& model_path, int graph_optimization_level, int intra_op_threads,
                       int inter_op_threads, const std::vector<std::pair<std::string, py::dict>>& providers,
                       const std::string& optimized_model_path, bool cpu_mem_arena, bool mem_pattern,
                       const py::dict& config_entries, const std::string& profile_prefix, bool share_weights) {
             fastembed::SessionConfig config;
             config.graph_optimization_level = graph_optimization_level;
             config.intra_op_threads = intra_op_threads;
             config.inter_op_threads = inter_op_threads;
             for (const auto& [name, options] : providers) config.providers.push_back({name, to_key_values(options)});
             config.optimized_model_path = optimized_model_path;
             config.cpu_mem_arena = cpu_mem_arena;
             config.mem_pattern = mem_pattern;
             config.config_entries = to_key_values(config_entries);
             config.profile_prefix = profile_prefix;
             config.share_weights = share_weights;
             py::gil_scoped_release release;  // loading and optimising a model takes a while; no Python objects used
             return std::make_unique<fastembed::Session>(model_path, config);
           }),
           py::arg("model_path"), py::kw_only(), py::arg("graph_optimization_level") = 99,
           py::arg("intra_op_threads") = 0, py::arg("inter_op_threads") = 0,
           py::arg("providers") = std::vector<std::pair<std::string, py::dict>>{}, py::arg("optimized_model_path") = "",
           py::arg("cpu_mem_arena") = true, py::arg("mem_pattern") = true, py::arg("config_entries") = py::dict(),
           py::arg("profile_prefix") = "", py::arg("share_weights") = true)
      .def_property_readonly("providers", &fastembed::Session::providers)
      .def_property_readonly("shared_tensors", &fastembed::Session::shared_tensors,
                             "Tensors shared with the process's other sessions over the same file (0: none)")
      .def(
          "stats",
          [](const fastembed::Session& s) {
            const fastembed::SessionStats st = s.stats();
            py::dict d;
            d["runs"] = st.runs;
            d["run_seconds"] = static_cast<double>(st.run_ns) * 1e-9;
            d["pool_seconds"] = static_cast<double>(st.pool_ns) * 1e-9;
            d["real_tokens"] = st.real_tokens;
            d["computed_tokens"] = st.computed_tokens;
            return d;
          },
          "Totals since creation or reset_stats(): runs, seconds in ORT Run and in pooling, tokens.")
      .def("reset_stats", &fastembed::Session::reset_stats)
      .def_property_readonly("input_names", [](const fastembed::Session& s) { return s.io().all_input_names; })
      .def_property_readonly("input_roles",
                             [](const fastembed::Session& s) {
                               py::dict roles;
                               for (const auto& in : s.io().inputs)
                                 roles[py::str(in.name)] = fastembed::input_role_name(in.role);
                               return roles;
                             })
      .def_property_readonly("output_names", [](const fastembed::Session& s) { return s.io().all_output_names; })
      .def_property_readonly("output_name", [](const fastembed::Session& s) { return s.io().output_name; })
      .def_property_readonly("output_is_pooled", [](const fastembed::Session& s) { return s.io().output_is_pooled; })
      .def_property_readonly("dim",
                             [](const fastembed::Session& s) -> std::optional<int64_t> {
                               if (s.io().dim < 0) return std::nullopt;
                               return s.io().dim;
                             })
      .def(
          "run",
          [](const fastembed::Session& self, const py::handle& input_ids, const py::handle& attention_mask,
             const py::handle& token_type_ids, const std::vector<std::string>& outputs, int64_t vocab_size) {
            py::array ids = checked<int64_t>(input_ids, "input_ids", 2);
            py::array mask = checked<int64_t>(attention_mask, "attention_mask", 2);
            if (mask.shape(0) != ids.shape(0) || mask.shape(1) != ids.shape(1)) {
              throw py::value_error("attention_mask has shape " + shape_of(mask) + " but input_ids has shape " +
                                    shape_of(ids));
            }
            int64_t* types_ptr = nullptr;
            if (!token_type_ids.is_none()) {
              py::array types = checked<int64_t>(token_type_ids, "token_type_ids", 2);
              if (types.shape(0) != ids.shape(0) || types.shape(1) != ids.shape(1)) {
                throw py::value_error("token_type_ids has shape " + shape_of(types) + " but input_ids has shape " +
                                      shape_of(ids));
              }
              types_ptr = static_cast<int64_t*>(types.mutable_data());
            }
            const fastembed::TokenBatch tokens{static_cast<int64_t*>(ids.mutable_data()),
                                               static_cast<int64_t*>(mask.mutable_data()), types_ptr, ids.shape(0),
                                               ids.shape(1)};
            std::vector<fastembed::OrtPtr<OrtValue>> values;
            {
              py::gil_scoped_release release;
              values = self.run(tokens, outputs, vocab_size);
            }
            py::list arrays;
            for (size_t i = 0; i < values.size(); ++i) arrays.append(wrap_output(std::move(values[i]), outputs[i]));
            return arrays;
          },
          py::arg("input_ids"), py::arg("attention_mask"), py::arg("token_type_ids"), py::arg("outputs"),
          py::arg("vocab_size") = 0,
          "Run one padded batch and return the named outputs as numpy arrays over ONNX Runtime's buffers\n"
          "(no copy), for the heads that do not pool into one vector.")
      .def(
          "embed",
          [](const fastembed::Session& self, const py::handle& input_ids, const py::handle& attention_mask,
             const py::handle& token_type_ids, const py::handle& out, const py::handle& rows,
             const std::string& mode_name, bool normalize, int64_t vocab_size, int64_t skip_prefix) {
            pooling::Mode mode = parse_mode(mode_name);
            BatchArgs args = check_batch(input_ids, attention_mask, token_type_ids, out, rows);
            // The arrays stay referenced by the caller for the whole call and ORT's Run is
            // thread-safe, so other Python threads may run (and embed) meanwhile.
            py::gil_scoped_release release;
            self.embed(args.tokens, mode, normalize, vocab_size, args.dest, args.dest_rows, skip_prefix);
          },
          py::arg("input_ids"), py::arg("attention_mask"), py::arg("token_type_ids"), py::arg("out"),
          py::arg("rows") = py::none(), py::arg("pooling") = "mean", py::arg("normalize") = false,
          py::arg("vocab_size") = 0, py::arg("skip_prefix") = 0,
          "Run one padded batch and pool row i into out[rows[i]] (out[i] when rows is None); the first\n"
          "skip_prefix real tokens of each row (a prompt) are left out of the pooling, not of attention.");
}
