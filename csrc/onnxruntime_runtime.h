// OrtRuntime: ONNX models run through ONNX Runtime's C API, on the instance
// thread, without Python. The library (the onnxruntime wheel's
// libonnxruntime.so.<version>) is loaded at run time from a path the caller
// gives, so the core builds where ONNX Runtime is absent.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cuda_stream.h"
#include "native_runtime.h"
#include "onnxruntime_abi.h"

namespace pyserver {

// One loaded libonnxruntime: its function table and the process's
// environment. Loaded once per path and kept for the life of the process
// (ONNX Runtime's threads may outlive any one session).
class OrtLibrary {
 public:
  // Loads (first call per path) and checks the library: the API version we
  // need, and a few calls whose answers are known, so that a misnumbered
  // slot fails here and not in a session. Thread safe; blocks on the first
  // load only.
  static Status Get(const std::string& path, const OrtLibrary** library);

  const ort::Api& api() const { return api_; }
  ort::Env* env() const { return env_; }
  const std::string& version() const { return version_; }

  // The message of `status` (released here), or Success when null.
  Status Take(ort::Status* status, StatusCode code, const std::string& prefix) const;

 private:
  OrtLibrary() = default;
  Status Load(const std::string& path);

  ort::Api api_{};
  ort::Env* env_ = nullptr;
  std::string version_;
};

// How to build one session, besides the model config.
struct OrtRuntimeOptions {
  // libonnxruntime.so.<version> to load (dlopen); loaded once per process.
  std::string library_path;
  // The model: read from `model_path`, or, when `model_bytes` is not empty,
  // taken from it (`model_path` then only names the model in errors).
  std::string model_path;
  std::string model_bytes;
  // Session options, as the model config's parameters give them.
  int intra_op_threads = 1;
  int inter_op_threads = 1;
  // OrtLoggingLevel of the session's log (3 = errors only).
  int log_severity = 3;
  // Prefix of the messages of failed loads; empty means
  // "onnxruntime could not load '<model_path>': ".
  std::string load_error_prefix;
};

class OrtRuntime final : public NativeRuntime {
 public:
  // Loads the library (first use only), creates the session (CPU provider;
  // CUDA provider on `config.device` with this instance's own CudaStream as
  // its compute stream when device >= 0) and checks that every config input
  // and output exists in the model with the same data type. Errors:
  // UNAVAILABLE when the library cannot be used (missing, too old, no CUDA
  // provider), INVALID_ARG when the model cannot be loaded or does not match
  // the config (messages name the tensor). `pool` is borrowed and must
  // outlive the runtime. Blocks for the session creation; any thread.
  static Status Create(NativeRuntimeConfig config, const OrtRuntimeOptions& options,
                       HostMemoryPool* pool, std::unique_ptr<OrtRuntime>* runtime);
  ~OrtRuntime() override;

  // The version of the loaded library, e.g. "1.20.1".
  const std::string& LibraryVersion() const;

  // Binds the inputs as tensors over the caller's bytes (no copy; strings
  // are converted to ONNX Runtime's string tensors) and each output either
  // to a pooled buffer of its known shape, which the session writes into
  // directly, or, when the model leaves a non-batch dimension open or the
  // output holds strings, to ONNX Runtime's own memory, copied once into a
  // pooled buffer afterwards. Fails with INTERNAL "onnxruntime: ..." when
  // the session does, INVALID_ARG for malformed string bytes. One instance
  // thread at a time; blocks for the inference; never takes the GIL. Public
  // (NativeRuntime declares it protected) so the unit tests can call it.
  Status Run(uint32_t batch_size, const std::vector<TensorView>& inputs,
             const std::vector<uint32_t>& wanted, std::vector<OutputTensor>* outputs) override;

 private:
  // A config output as the model declares it.
  struct OutputPlan {
    // True when the model fixes every dim after the batch dimension (all of
    // them without batching) and the type is not a string: the output is
    // allocated before the run with `fixed_dims`. Otherwise it is copied
    // after the run and `fixed_dims` is empty.
    bool preallocate = false;
    std::vector<int64_t> fixed_dims;
  };

  OrtRuntime(NativeRuntimeConfig config, HostMemoryPool* pool, const OrtLibrary* library)
      : NativeRuntime(std::move(config), pool), library_(library), api_(library->api()) {}

  Status CheckTensors(const std::string& load_error_prefix);
  Status MakeInput(const TensorView& view, int element_type, ort::Value** out);
  Status CopyOutput(const ort::Value* value, uint32_t index, OutputTensor* out);
  Status Check(ort::Status* status, StatusCode code, const std::string& prefix) const;

  const OrtLibrary* const library_;
  const ort::Api& api_;
  std::unique_ptr<CudaStream> stream_;  // GPU instances only
  ort::Session* session_ = nullptr;
  ort::IoBinding* binding_ = nullptr;
  ort::MemoryInfo* cpu_info_ = nullptr;
  ort::Allocator* allocator_ = nullptr;  // the library's default; not owned
  std::vector<int> input_types_;         // per config input
  std::vector<OutputPlan> output_plans_;  // per config output
  // Scratch of Run(), kept to avoid allocations per call.
  std::vector<ort::Value*> input_values_;
  std::vector<ort::Value*> output_values_;
};

}  // namespace pyserver
