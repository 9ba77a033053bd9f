#include "onnxruntime_runtime.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

namespace pyserver {
namespace {

// Config data types as ONNX tensor element types.
int ElementTypeOf(DataType type) {
  switch (type) {
    case DataType::kBool: return ort::kBool;
    case DataType::kUint8: return ort::kUint8;
    case DataType::kUint16: return ort::kUint16;
    case DataType::kUint32: return ort::kUint32;
    case DataType::kUint64: return ort::kUint64;
    case DataType::kInt8: return ort::kInt8;
    case DataType::kInt16: return ort::kInt16;
    case DataType::kInt32: return ort::kInt32;
    case DataType::kInt64: return ort::kInt64;
    case DataType::kFp16: return ort::kFloat16;
    case DataType::kFp32: return ort::kFloat;
    case DataType::kFp64: return ort::kDouble;
    case DataType::kString: return ort::kString;
    default: return ort::kUndefined;
  }
}

// The names onnxruntime's Python API gives element types ("tensor(float)").
std::string ElementTypeName(int type) {
  static const char* const kNames[] = {
      "undefined", "float", "uint8", "int8", "uint16", "int16", "int32", "int64", "string",
      "bool", "float16", "double", "uint32", "uint64", "complex64", "complex128", "bfloat16"};
  if (type >= 0 && type < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) {
    return std::string("tensor(") + kNames[type] + ")";
  }
  return "tensor(type " + std::to_string(type) + ")";
}

// The v1 DataType enum names (protos/model_config.proto).
const char* ConfigTypeName(DataType type) {
  static const char* const kNames[] = {
      "TYPE_INVALID", "TYPE_BOOL",  "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32",
      "TYPE_UINT64",  "TYPE_INT8",  "TYPE_INT16", "TYPE_INT32",  "TYPE_INT64",
      "TYPE_FP16",    "TYPE_FP32",  "TYPE_FP64",  "TYPE_STRING"};
  int value = static_cast<int>(type);
  return value >= 0 && value <= 13 ? kNames[value] : "TYPE_INVALID";
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return text + "]";
}

// What the model declares for one of its inputs or outputs.
struct ModelTensor {
  int onnx_type = 0;     // ONNXType
  int element_type = 0;  // for tensors
  std::vector<int64_t> dims;  // -1 (or symbolic) = open
  std::string TypeName() const {
    switch (onnx_type) {
      case ort::kTypeTensor: return ElementTypeName(element_type);
      case ort::kTypeSequence: return "seq(...)";
      case ort::kTypeMap: return "map(...)";
      case ort::kTypeOptional: return "optional(...)";
      default: return "a non-tensor value";
    }
  }
};

std::mutex libraries_mu;
std::map<std::string, std::unique_ptr<OrtLibrary>>& Libraries() {
  static auto* libraries = new std::map<std::string, std::unique_ptr<OrtLibrary>>();
  return *libraries;
}

// A byte that non-null pointers to empty tensors can point at.
char empty_tensor_byte = 0;

}  // namespace

// ---------------------------------------------------------------- OrtLibrary

Status OrtLibrary::Get(const std::string& path, const OrtLibrary** library) {
  std::lock_guard<std::mutex> lock(libraries_mu);
  auto& libraries = Libraries();
  auto found = libraries.find(path);
  if (found == libraries.end()) {
    std::unique_ptr<OrtLibrary> loaded(new OrtLibrary());
    PYSERVER_RETURN_IF_ERROR(loaded->Load(path));
    found = libraries.emplace(path, std::move(loaded)).first;
  }
  *library = found->second.get();
  return Status::Success();
}

Status OrtLibrary::Take(ort::Status* status, StatusCode code, const std::string& prefix) const {
  if (status == nullptr) return Status::Success();
  std::string message = prefix + api_.GetErrorMessage(status);
  api_.ReleaseStatus(status);
  return Status(code, std::move(message));
}

Status OrtLibrary::Load(const std::string& path) {
  const auto unavailable = [&](const std::string& why) {
    return Status(StatusCode::kUnavailable, "onnxruntime library '" + path + "': " + why);
  };
  // Never closed: sessions' thread pools and the environment live on.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* error = dlerror();
    return unavailable(error != nullptr ? error : "cannot be loaded");
  }
  auto get_base = reinterpret_cast<ort::GetApiBaseFn>(dlsym(handle, "OrtGetApiBase"));
  if (get_base == nullptr) return unavailable("exports no OrtGetApiBase");
  const ort::ApiBase* base = get_base();
  if (base == nullptr || base->GetVersionString == nullptr || base->GetApi == nullptr) {
    return unavailable("OrtGetApiBase returned no API");
  }
  version_ = base->GetVersionString();
  const auto* table = static_cast<const void* const*>(base->GetApi(ort::kApiVersion));
  if (table == nullptr) {
    return unavailable("version " + version_ + " does not offer C API version " +
                       std::to_string(ort::kApiVersion) + " (onnxruntime 1.16 or newer needed)");
  }

  bool missing = false;
  const auto slot = [&](auto* field, int index) {
    using Fn = std::remove_pointer_t<decltype(field)>;
    *field = reinterpret_cast<Fn>(const_cast<void*>(table[index]));
    missing = missing || *field == nullptr;
  };
  slot(&api_.CreateStatus, ort::kCreateStatus);
  slot(&api_.GetErrorCode, ort::kGetErrorCode);
  slot(&api_.GetErrorMessage, ort::kGetErrorMessage);
  slot(&api_.CreateEnv, ort::kCreateEnv);
  slot(&api_.CreateSession, ort::kCreateSession);
  slot(&api_.CreateSessionFromArray, ort::kCreateSessionFromArray);
  slot(&api_.CreateSessionOptions, ort::kCreateSessionOptions);
  slot(&api_.SetSessionLogSeverityLevel, ort::kSetSessionLogSeverityLevel);
  slot(&api_.SetIntraOpNumThreads, ort::kSetIntraOpNumThreads);
  slot(&api_.SetInterOpNumThreads, ort::kSetInterOpNumThreads);
  slot(&api_.SessionGetInputCount, ort::kSessionGetInputCount);
  slot(&api_.SessionGetOutputCount, ort::kSessionGetOutputCount);
  slot(&api_.SessionGetInputTypeInfo, ort::kSessionGetInputTypeInfo);
  slot(&api_.SessionGetOutputTypeInfo, ort::kSessionGetOutputTypeInfo);
  slot(&api_.SessionGetInputName, ort::kSessionGetInputName);
  slot(&api_.SessionGetOutputName, ort::kSessionGetOutputName);
  slot(&api_.CreateTensorAsOrtValue, ort::kCreateTensorAsOrtValue);
  slot(&api_.CreateTensorWithDataAsOrtValue, ort::kCreateTensorWithDataAsOrtValue);
  slot(&api_.GetTensorMutableData, ort::kGetTensorMutableData);
  slot(&api_.GetStringTensorDataLength, ort::kGetStringTensorDataLength);
  slot(&api_.CastTypeInfoToTensorInfo, ort::kCastTypeInfoToTensorInfo);
  slot(&api_.GetOnnxTypeFromTypeInfo, ort::kGetOnnxTypeFromTypeInfo);
  slot(&api_.GetTensorElementType, ort::kGetTensorElementType);
  slot(&api_.GetDimensionsCount, ort::kGetDimensionsCount);
  slot(&api_.GetDimensions, ort::kGetDimensions);
  slot(&api_.GetTensorTypeAndShape, ort::kGetTensorTypeAndShape);
  slot(&api_.CreateCpuMemoryInfo, ort::kCreateCpuMemoryInfo);
  slot(&api_.AllocatorFree, ort::kAllocatorFree);
  slot(&api_.GetAllocatorWithDefaultOptions, ort::kGetAllocatorWithDefaultOptions);
  slot(&api_.ReleaseStatus, ort::kReleaseStatus);
  slot(&api_.ReleaseMemoryInfo, ort::kReleaseMemoryInfo);
  slot(&api_.ReleaseSession, ort::kReleaseSession);
  slot(&api_.ReleaseValue, ort::kReleaseValue);
  slot(&api_.ReleaseTypeInfo, ort::kReleaseTypeInfo);
  slot(&api_.ReleaseTensorTypeAndShapeInfo, ort::kReleaseTensorTypeAndShapeInfo);
  slot(&api_.ReleaseSessionOptions, ort::kReleaseSessionOptions);
  slot(&api_.GetStringTensorElementLength, ort::kGetStringTensorElementLength);
  slot(&api_.GetStringTensorElement, ort::kGetStringTensorElement);
  slot(&api_.AddSessionConfigEntry, ort::kAddSessionConfigEntry);
  slot(&api_.RunWithBinding, ort::kRunWithBinding);
  slot(&api_.CreateIoBinding, ort::kCreateIoBinding);
  slot(&api_.ReleaseIoBinding, ort::kReleaseIoBinding);
  slot(&api_.BindInput, ort::kBindInput);
  slot(&api_.BindOutput, ort::kBindOutput);
  slot(&api_.BindOutputToDevice, ort::kBindOutputToDevice);
  slot(&api_.GetBoundOutputValues, ort::kGetBoundOutputValues);
  slot(&api_.ClearBoundInputs, ort::kClearBoundInputs);
  slot(&api_.ClearBoundOutputs, ort::kClearBoundOutputs);
  slot(&api_.SessionOptionsAppendExecutionProvider_CUDA_V2,
       ort::kSessionOptionsAppendExecutionProvider_CUDA_V2);
  slot(&api_.CreateCUDAProviderOptions, ort::kCreateCUDAProviderOptions);
  slot(&api_.UpdateCUDAProviderOptions, ort::kUpdateCUDAProviderOptions);
  slot(&api_.ReleaseCUDAProviderOptions, ort::kReleaseCUDAProviderOptions);
  slot(&api_.GetResizedStringTensorElementBuffer, ort::kGetResizedStringTensorElementBuffer);
  slot(&api_.GetBuildInfoString, ort::kGetBuildInfoString);
  slot(&api_.UpdateCUDAProviderOptionsWithValue, ort::kUpdateCUDAProviderOptionsWithValue);
  if (missing) return unavailable("its C API table has empty slots");

  // Probes with known answers, at both ends of the table we use: a status
  // round trip (slots 0-2, 93) and the build-info string (slot 254).
  static const char kProbe[] = "pyserver slot probe";
  ort::Status* probe = api_.CreateStatus(ort::kErrorInvalidArgument, kProbe);
  bool probe_ok = probe != nullptr && api_.GetErrorCode(probe) == ort::kErrorInvalidArgument &&
                  std::strcmp(api_.GetErrorMessage(probe), kProbe) == 0;
  if (probe != nullptr) api_.ReleaseStatus(probe);
  const char* build_info = probe_ok ? api_.GetBuildInfoString() : nullptr;
  if (build_info == nullptr || std::strncmp(build_info, "ORT Build Info", 14) != 0) {
    return unavailable("version " + version_ + " does not answer as its C API documents "
                       "(function table mismatch)");
  }

  // One environment per process, never released (see above).
  return Take(api_.CreateEnv(ort::kLoggingError, "pyserver", &env_), StatusCode::kUnavailable,
              "onnxruntime could not create its environment: ");
}

// ---------------------------------------------------------------- OrtRuntime

namespace {

// Releases what the C API hands out, on every path out of a scope.
template <typename T>
class OrtHandle {
 public:
  explicit OrtHandle(void (*release)(T*)) : release_(release) {}
  ~OrtHandle() { if (ptr_ != nullptr) release_(ptr_); }
  OrtHandle(const OrtHandle&) = delete;
  OrtHandle& operator=(const OrtHandle&) = delete;
  T** Out() { return &ptr_; }
  T* Get() const { return ptr_; }
  T* Release() { T* ptr = ptr_; ptr_ = nullptr; return ptr; }

 private:
  void (*release_)(T*);
  T* ptr_ = nullptr;
};

}  // namespace

Status OrtRuntime::Check(ort::Status* status, StatusCode code, const std::string& prefix) const {
  return library_->Take(status, code, prefix);
}

Status OrtRuntime::Create(NativeRuntimeConfig config, const OrtRuntimeOptions& options,
                          HostMemoryPool* pool, std::unique_ptr<OrtRuntime>* runtime) {
  const OrtLibrary* library = nullptr;
  PYSERVER_RETURN_IF_ERROR(OrtLibrary::Get(options.library_path, &library));
  const ort::Api& api = library->api();
  const int device = config.device;
  std::unique_ptr<OrtRuntime> self(new OrtRuntime(std::move(config), pool, library));
  const std::string load_error = options.load_error_prefix.empty()
      ? "onnxruntime could not load '" + options.model_path + "': "
      : options.load_error_prefix;

  OrtHandle<ort::SessionOptions> session_options(api.ReleaseSessionOptions);
  PYSERVER_RETURN_IF_ERROR(self->Check(api.CreateSessionOptions(session_options.Out()),
                                       StatusCode::kInternal, "onnxruntime: "));
  ort::SessionOptions* so = session_options.Get();
  // One thread per instance by default: instances give the parallelism, and
  // spinning pool threads would steal the cores the front end needs.
  PYSERVER_RETURN_IF_ERROR(self->Check(api.SetIntraOpNumThreads(so, options.intra_op_threads),
                                       StatusCode::kInvalidArg, load_error));
  PYSERVER_RETURN_IF_ERROR(self->Check(api.SetInterOpNumThreads(so, options.inter_op_threads),
                                       StatusCode::kInvalidArg, load_error));
  for (const char* key : {"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"}) {
    PYSERVER_RETURN_IF_ERROR(self->Check(api.AddSessionConfigEntry(so, key, "0"),
                                         StatusCode::kInternal, "onnxruntime: "));
  }
  PYSERVER_RETURN_IF_ERROR(self->Check(api.SetSessionLogSeverityLevel(so, options.log_severity),
                                       StatusCode::kInvalidArg, load_error));

  if (device >= 0) {
    PYSERVER_RETURN_IF_ERROR(CudaStream::Create(device, &self->stream_));
    OrtHandle<ort::CUDAProviderOptionsV2> cuda(api.ReleaseCUDAProviderOptions);
    const std::string no_cuda = "onnxruntime " + library->version() +
                                " cannot run on CUDA device " + std::to_string(device) +
                                " (the onnxruntime-gpu package provides it): ";
    PYSERVER_RETURN_IF_ERROR(self->Check(api.CreateCUDAProviderOptions(cuda.Out()),
                                         StatusCode::kUnavailable, no_cuda));
    const std::string device_text = std::to_string(device);
    const char* keys[] = {"device_id", "do_copy_in_default_stream"};
    const char* values[] = {device_text.c_str(), "1"};
    PYSERVER_RETURN_IF_ERROR(self->Check(api.UpdateCUDAProviderOptions(cuda.Get(), keys, values, 2),
                                         StatusCode::kUnavailable, no_cuda));
    // The instance's stream: the session computes and copies on it.
    PYSERVER_RETURN_IF_ERROR(self->Check(
        api.UpdateCUDAProviderOptionsWithValue(cuda.Get(), "user_compute_stream",
                                               self->stream_->Handle()),
        StatusCode::kUnavailable, no_cuda));
    PYSERVER_RETURN_IF_ERROR(self->Check(
        api.SessionOptionsAppendExecutionProvider_CUDA_V2(so, cuda.Get()),
        StatusCode::kUnavailable, no_cuda));
  }

  ort::Status* created =
      options.model_bytes.empty()
          ? api.CreateSession(library->env(), options.model_path.c_str(), so, &self->session_)
          : api.CreateSessionFromArray(library->env(), options.model_bytes.data(),
                                       options.model_bytes.size(), so, &self->session_);
  PYSERVER_RETURN_IF_ERROR(self->Check(created, StatusCode::kInvalidArg, load_error));

  PYSERVER_RETURN_IF_ERROR(self->CheckTensors(load_error));
  PYSERVER_RETURN_IF_ERROR(self->Check(api.CreateIoBinding(self->session_, &self->binding_),
                                       StatusCode::kInternal, "onnxruntime: "));
  PYSERVER_RETURN_IF_ERROR(self->Check(
      api.CreateCpuMemoryInfo(ort::kDeviceAllocator, ort::kMemTypeDefault, &self->cpu_info_),
      StatusCode::kInternal, "onnxruntime: "));
  *runtime = std::move(self);
  return Status::Success();
}

OrtRuntime::~OrtRuntime() {
  if (binding_ != nullptr) api_.ReleaseIoBinding(binding_);
  if (session_ != nullptr) api_.ReleaseSession(session_);
  if (cpu_info_ != nullptr) api_.ReleaseMemoryInfo(cpu_info_);
}

const std::string& OrtRuntime::LibraryVersion() const { return library_->version(); }

Status OrtRuntime::CheckTensors(const std::string& load_error) {
  PYSERVER_RETURN_IF_ERROR(Check(api_.GetAllocatorWithDefaultOptions(&allocator_),
                                 StatusCode::kInternal, "onnxruntime: "));
  // name -> declaration, for inputs then outputs.
  std::map<std::string, ModelTensor> declared[2];
  for (int kind = 0; kind < 2; ++kind) {
    size_t count = 0;
    PYSERVER_RETURN_IF_ERROR(Check(kind == 0 ? api_.SessionGetInputCount(session_, &count)
                                             : api_.SessionGetOutputCount(session_, &count),
                                   StatusCode::kInvalidArg, load_error));
    for (size_t i = 0; i < count; ++i) {
      char* name = nullptr;
      PYSERVER_RETURN_IF_ERROR(Check(kind == 0
                                         ? api_.SessionGetInputName(session_, i, allocator_, &name)
                                         : api_.SessionGetOutputName(session_, i, allocator_, &name),
                                     StatusCode::kInvalidArg, load_error));
      std::string key(name);
      Check(api_.AllocatorFree(allocator_, name), StatusCode::kInternal, "");
      OrtHandle<ort::TypeInfo> info(api_.ReleaseTypeInfo);
      PYSERVER_RETURN_IF_ERROR(Check(kind == 0
                                         ? api_.SessionGetInputTypeInfo(session_, i, info.Out())
                                         : api_.SessionGetOutputTypeInfo(session_, i, info.Out()),
                                     StatusCode::kInvalidArg, load_error));
      ModelTensor tensor;
      PYSERVER_RETURN_IF_ERROR(Check(api_.GetOnnxTypeFromTypeInfo(info.Get(), &tensor.onnx_type),
                                     StatusCode::kInvalidArg, load_error));
      if (tensor.onnx_type == ort::kTypeTensor) {
        const ort::TensorTypeAndShapeInfo* shape = nullptr;
        PYSERVER_RETURN_IF_ERROR(Check(api_.CastTypeInfoToTensorInfo(info.Get(), &shape),
                                       StatusCode::kInvalidArg, load_error));
        size_t rank = 0;
        PYSERVER_RETURN_IF_ERROR(Check(api_.GetTensorElementType(shape, &tensor.element_type),
                                       StatusCode::kInvalidArg, load_error));
        PYSERVER_RETURN_IF_ERROR(Check(api_.GetDimensionsCount(shape, &rank),
                                       StatusCode::kInvalidArg, load_error));
        tensor.dims.resize(rank);
        PYSERVER_RETURN_IF_ERROR(Check(api_.GetDimensions(shape, tensor.dims.data(), rank),
                                       StatusCode::kInvalidArg, load_error));
      }
      declared[kind].emplace(std::move(key), std::move(tensor));
    }
  }

  const NativeRuntimeConfig& cfg = config();
  const bool batching = cfg.max_batch_size > 0;
  for (int kind = 0; kind < 2; ++kind) {
    const char* kind_name = kind == 0 ? "input" : "output";
    const std::vector<TensorSpec>& specs = kind == 0 ? cfg.inputs : cfg.outputs;
    for (const TensorSpec& spec : specs) {
      auto found = declared[kind].find(spec.name);
      if (found == declared[kind].end()) {
        std::string names;
        for (const auto& item : declared[kind]) names += (names.empty() ? "" : ", ") + item.first;
        return Status(StatusCode::kInvalidArg, std::string("model has no ") + kind_name + " '" +
                                                   spec.name + "'; it has " + names);
      }
      const ModelTensor& tensor = found->second;
      const int wanted = ElementTypeOf(spec.type);
      if (tensor.onnx_type != ort::kTypeTensor || tensor.element_type != wanted ||
          wanted == ort::kUndefined) {
        return Status(StatusCode::kInvalidArg,
                      std::string(kind_name) + " '" + spec.name + "' is " + tensor.TypeName() +
                          " in the model but " + ConfigTypeName(spec.type) + " in the config");
      }
      if (kind == 0) {
        input_types_.push_back(wanted);
        continue;
      }
      // Allocate before the run when every dimension but the batch is
      // known (the batch dimension must be open when batching).
      OutputPlan plan;
      plan.preallocate = wanted != ort::kString;
      size_t first = 0;
      if (batching) {
        plan.preallocate = plan.preallocate && !tensor.dims.empty() && tensor.dims[0] < 0;
        first = 1;
      }
      for (size_t d = first; d < tensor.dims.size() && plan.preallocate; ++d) {
        plan.preallocate = tensor.dims[d] >= 0;
        plan.fixed_dims.push_back(tensor.dims[d]);
      }
      if (!plan.preallocate) plan.fixed_dims.clear();
      output_plans_.push_back(std::move(plan));
    }
  }
  return Status::Success();
}

Status OrtRuntime::MakeInput(const TensorView& view, int element_type, ort::Value** out) {
  const std::vector<int64_t>& shape = view.shape;
  if (element_type != ort::kString) {
    void* data = view.data != nullptr ? const_cast<void*>(view.data) : &empty_tensor_byte;
    return Check(api_.CreateTensorWithDataAsOrtValue(cpu_info_, data, view.byte_size, shape.data(),
                                                     shape.size(), element_type, out),
                 StatusCode::kInvalidArg, "onnxruntime: ");
  }
  // Strings: 4-byte little-endian length + bytes per element, into the
  // library's string tensor one element at a time (no NUL termination, so
  // any bytes pass).
  uint64_t count = 0;
  PYSERVER_RETURN_IF_ERROR(ElementCount(shape, &count));
  size_t consumed = 0;
  PYSERVER_RETURN_IF_ERROR(StringElementsByteSize(view.data, view.byte_size, count, &consumed));
  OrtHandle<ort::Value> value(api_.ReleaseValue);
  PYSERVER_RETURN_IF_ERROR(Check(api_.CreateTensorAsOrtValue(allocator_, shape.data(), shape.size(),
                                                             ort::kString, value.Out()),
                                 StatusCode::kInternal, "onnxruntime: "));
  const auto* bytes = static_cast<const unsigned char*>(view.data);
  size_t offset = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t length = static_cast<uint32_t>(bytes[offset]) |
                            static_cast<uint32_t>(bytes[offset + 1]) << 8 |
                            static_cast<uint32_t>(bytes[offset + 2]) << 16 |
                            static_cast<uint32_t>(bytes[offset + 3]) << 24;
    offset += 4;
    char* element = nullptr;
    PYSERVER_RETURN_IF_ERROR(
        Check(api_.GetResizedStringTensorElementBuffer(value.Get(), i, length, &element),
              StatusCode::kInternal, "onnxruntime: "));
    if (length > 0) std::memcpy(element, bytes + offset, length);
    offset += length;
  }
  *out = value.Release();
  return Status::Success();
}

Status OrtRuntime::CopyOutput(const ort::Value* value, uint32_t index, OutputTensor* out) {
  const TensorSpec& spec = config().outputs[index];
  OrtHandle<ort::TensorTypeAndShapeInfo> info(api_.ReleaseTensorTypeAndShapeInfo);
  PYSERVER_RETURN_IF_ERROR(Check(api_.GetTensorTypeAndShape(value, info.Out()),
                                 StatusCode::kInternal, "onnxruntime: "));
  size_t rank = 0;
  PYSERVER_RETURN_IF_ERROR(Check(api_.GetDimensionsCount(info.Get(), &rank),
                                 StatusCode::kInternal, "onnxruntime: "));
  out->shape.resize(rank);
  PYSERVER_RETURN_IF_ERROR(Check(api_.GetDimensions(info.Get(), out->shape.data(), rank),
                                 StatusCode::kInternal, "onnxruntime: "));
  uint64_t count = 0;
  PYSERVER_RETURN_IF_ERROR(ElementCount(out->shape, &count));
  out->index = index;
  out->type = spec.type;
  out->storage = std::make_shared<PooledBuffer>();
  out->offset = 0;
  if (spec.type != DataType::kString) {
    out->byte_size = count * ElementByteSize(spec.type);
    PYSERVER_RETURN_IF_ERROR(pool()->Allocate(out->byte_size, out->storage.get()));
    void* data = nullptr;
    PYSERVER_RETURN_IF_ERROR(Check(api_.GetTensorMutableData(const_cast<ort::Value*>(value), &data),
                                   StatusCode::kInternal, "onnxruntime: "));
    if (out->byte_size > 0) std::memcpy(out->storage->Data(), data, out->byte_size);
    return Status::Success();
  }
  // Strings: into the core's layout, each element's length before its bytes.
  size_t text_bytes = 0;
  PYSERVER_RETURN_IF_ERROR(Check(api_.GetStringTensorDataLength(value, &text_bytes),
                                 StatusCode::kInternal, "onnxruntime: "));
  out->byte_size = 4 * count + text_bytes;
  PYSERVER_RETURN_IF_ERROR(pool()->Allocate(out->byte_size, out->storage.get()));
  auto* dst = static_cast<unsigned char*>(out->storage->Data());
  size_t offset = 0;
  for (uint64_t i = 0; i < count; ++i) {
    size_t length = 0;
    PYSERVER_RETURN_IF_ERROR(Check(api_.GetStringTensorElementLength(value, i, &length),
                                   StatusCode::kInternal, "onnxruntime: "));
    if (offset + 4 + length > out->byte_size || length > UINT32_MAX) {
      return Status(StatusCode::kInternal, "onnxruntime: string output '" + spec.name +
                                               "' changed size while read");
    }
    for (int b = 0; b < 4; ++b) dst[offset + b] = static_cast<unsigned char>(length >> (8 * b));
    offset += 4;
    if (length > 0) {
      PYSERVER_RETURN_IF_ERROR(Check(api_.GetStringTensorElement(value, length, i, dst + offset),
                                     StatusCode::kInternal, "onnxruntime: "));
    }
    offset += length;
  }
  out->byte_size = offset;
  return Status::Success();
}

Status OrtRuntime::Run(uint32_t batch_size, const std::vector<TensorView>& inputs,
                       const std::vector<uint32_t>& wanted, std::vector<OutputTensor>* outputs) {
  const NativeRuntimeConfig& cfg = config();
  if (inputs.size() != cfg.inputs.size()) {
    return Status(StatusCode::kInternal, "onnxruntime: the batch has " +
                                             std::to_string(inputs.size()) + " inputs, the model " +
                                             std::to_string(cfg.inputs.size()));
  }
  const bool batching = cfg.max_batch_size > 0;
  outputs->clear();
  outputs->resize(wanted.size());
  // Every OrtValue made below is released on the way out, success or not.
  struct ReleaseAll {
    const ort::Api& api;
    std::vector<ort::Value*>& values;
    ~ReleaseAll() {
      for (ort::Value* v : values) if (v != nullptr) api.ReleaseValue(v);
      values.clear();
    }
  };
  ReleaseAll release_inputs{api_, input_values_};
  ReleaseAll release_outputs{api_, output_values_};
  struct Unbind {
    const ort::Api& api;
    ort::IoBinding* binding;
    ~Unbind() { api.ClearBoundInputs(binding); api.ClearBoundOutputs(binding); }
  } unbind{api_, binding_};

  for (size_t i = 0; i < inputs.size(); ++i) {
    ort::Value* value = nullptr;
    PYSERVER_RETURN_IF_ERROR(MakeInput(inputs[i], input_types_[i], &value));
    input_values_.push_back(value);
    PYSERVER_RETURN_IF_ERROR(Check(api_.BindInput(binding_, cfg.inputs[i].name.c_str(), value),
                                   StatusCode::kInternal, "onnxruntime: "));
  }
  for (size_t w = 0; w < wanted.size(); ++w) {
    const uint32_t index = wanted[w];
    const TensorSpec& spec = cfg.outputs[index];
    const OutputPlan& plan = output_plans_[index];
    if (!plan.preallocate) {
      // Host memory the session allocates (on a GPU instance it copies the
      // result there), copied once into the pool after the run.
      PYSERVER_RETURN_IF_ERROR(Check(api_.BindOutputToDevice(binding_, spec.name.c_str(), cpu_info_),
                                     StatusCode::kInternal, "onnxruntime: "));
      continue;
    }
    OutputTensor& out = (*outputs)[w];
    out.index = index;
    out.type = spec.type;
    out.shape.clear();
    if (batching) out.shape.push_back(batch_size);
    out.shape.insert(out.shape.end(), plan.fixed_dims.begin(), plan.fixed_dims.end());
    uint64_t count = 0;
    PYSERVER_RETURN_IF_ERROR(ElementCount(out.shape, &count));
    out.byte_size = count * ElementByteSize(spec.type);
    out.storage = std::make_shared<PooledBuffer>();
    PYSERVER_RETURN_IF_ERROR(pool()->Allocate(out.byte_size, out.storage.get()));
    ort::Value* value = nullptr;
    PYSERVER_RETURN_IF_ERROR(Check(
        api_.CreateTensorWithDataAsOrtValue(cpu_info_, out.storage->Data(), out.byte_size,
                                            out.shape.data(), out.shape.size(),
                                            ElementTypeOf(spec.type), &value),
        StatusCode::kInternal, "onnxruntime: "));
    output_values_.push_back(value);
    PYSERVER_RETURN_IF_ERROR(Check(api_.BindOutput(binding_, spec.name.c_str(), value),
                                   StatusCode::kInternal, "onnxruntime: "));
  }

  PYSERVER_RETURN_IF_ERROR(Check(api_.RunWithBinding(session_, nullptr, binding_),
                                 StatusCode::kInternal, "onnxruntime: "));

  // Outputs come back in the order they were bound (= `wanted`).
  ort::Value** bound = nullptr;
  size_t bound_count = 0;
  PYSERVER_RETURN_IF_ERROR(Check(api_.GetBoundOutputValues(binding_, allocator_, &bound, &bound_count),
                                 StatusCode::kInternal, "onnxruntime: "));
  Status status;
  for (size_t w = 0; w < bound_count; ++w) {
    if (status.IsOk() && w < wanted.size() && !output_plans_[wanted[w]].preallocate) {
      status = CopyOutput(bound[w], wanted[w], &(*outputs)[w]);
    }
    api_.ReleaseValue(bound[w]);
  }
  if (bound != nullptr) Check(api_.AllocatorFree(allocator_, bound), StatusCode::kInternal, "");
  PYSERVER_RETURN_IF_ERROR(status);
  if (bound_count != wanted.size()) {
    return Status(StatusCode::kInternal, "onnxruntime returned " + std::to_string(bound_count) +
                                             " outputs for " + std::to_string(wanted.size()));
  }
  if (batching) {
    for (const OutputTensor& out : *outputs) {
      if (out.shape.empty() || out.shape[0] != static_cast<int64_t>(batch_size)) {
        return Status(StatusCode::kInternal,
                      "onnxruntime: output '" + cfg.outputs[out.index].name + "' has shape " +
                          ShapeText(out.shape) + " for a batch of " + std::to_string(batch_size));
      }
    }
  }
  return Status::Success();
}

}  // namespace pyserver
