#include "tensorflow_runtime.h"

#include <cstring>
#include <utility>

namespace pyserver {
namespace {

using tf_c::TF_Output;
using tf_c::TF_Status;
using tf_c::TF_Tensor;
using tf_c::TF_TString;

int ToTensorFlowType(DataType type) {
  switch (type) {
    case DataType::kBool: return tf_c::TF_BOOL;
    case DataType::kUint8: return tf_c::TF_UINT8;
    case DataType::kUint16: return tf_c::TF_UINT16;
    case DataType::kUint32: return tf_c::TF_UINT32;
    case DataType::kUint64: return tf_c::TF_UINT64;
    case DataType::kInt8: return tf_c::TF_INT8;
    case DataType::kInt16: return tf_c::TF_INT16;
    case DataType::kInt32: return tf_c::TF_INT32;
    case DataType::kInt64: return tf_c::TF_INT64;
    case DataType::kFp16: return tf_c::TF_HALF;
    case DataType::kFp32: return tf_c::TF_FLOAT;
    case DataType::kFp64: return tf_c::TF_DOUBLE;
    case DataType::kString: return tf_c::TF_STRING;
    case DataType::kInvalid: break;
  }
  return 0;
}

std::string TensorFlowTypeName(int type) {
  switch (type) {
    case tf_c::TF_FLOAT: return "DT_FLOAT";
    case tf_c::TF_DOUBLE: return "DT_DOUBLE";
    case tf_c::TF_INT32: return "DT_INT32";
    case tf_c::TF_UINT8: return "DT_UINT8";
    case tf_c::TF_INT16: return "DT_INT16";
    case tf_c::TF_INT8: return "DT_INT8";
    case tf_c::TF_STRING: return "DT_STRING";
    case tf_c::TF_INT64: return "DT_INT64";
    case tf_c::TF_BOOL: return "DT_BOOL";
    case tf_c::TF_UINT16: return "DT_UINT16";
    case tf_c::TF_HALF: return "DT_HALF";
    case tf_c::TF_UINT32: return "DT_UINT32";
    case tf_c::TF_UINT64: return "DT_UINT64";
  }
  return std::to_string(type);
}

// The config's name of a type (protos/model_config.proto).
const char* ConfigTypeName(DataType type) {
  switch (type) {
    case DataType::kBool: return "TYPE_BOOL";
    case DataType::kUint8: return "TYPE_UINT8";
    case DataType::kUint16: return "TYPE_UINT16";
    case DataType::kUint32: return "TYPE_UINT32";
    case DataType::kUint64: return "TYPE_UINT64";
    case DataType::kInt8: return "TYPE_INT8";
    case DataType::kInt16: return "TYPE_INT16";
    case DataType::kInt32: return "TYPE_INT32";
    case DataType::kInt64: return "TYPE_INT64";
    case DataType::kFp16: return "TYPE_FP16";
    case DataType::kFp32: return "TYPE_FP32";
    case DataType::kFp64: return "TYPE_FP64";
    case DataType::kString: return "TYPE_STRING";
    case DataType::kInvalid: break;
  }
  return "TYPE_INVALID";
}

// Input bytes stay the caller's: TensorFlow must not free them.
void KeepBytes(void*, size_t, void*) {}

// Frees what a scope created through the C API, whatever path leaves it.
class StatusHolder {
 public:
  explicit StatusHolder(const TensorFlowApi* api) : api_(api), status_(api->TF_NewStatus()) {}
  ~StatusHolder() { api_->TF_DeleteStatus(status_); }
  TF_Status* get() const { return status_; }

 private:
  const TensorFlowApi* api_;
  TF_Status* status_;
};

class TensorsHolder {
 public:
  TensorsHolder(const TensorFlowApi* api, std::vector<TF_Tensor*>* tensors)
      : api_(api), tensors_(tensors) {}
  ~TensorsHolder() {
    for (TF_Tensor*& tensor : *tensors_) {
      if (tensor != nullptr) api_->TF_DeleteTensor(tensor);
      tensor = nullptr;
    }
  }

 private:
  const TensorFlowApi* api_;
  std::vector<TF_Tensor*>* tensors_;
};

Status NewSession(const TensorFlowApi* api, tf_c::TF_Graph* graph, const std::string& config,
                  tf_c::TF_Session** session) {
  StatusHolder status(api);
  tf_c::TF_SessionOptions* options = api->TF_NewSessionOptions();
  api->TF_SetConfig(options, config.data(), config.size(), status.get());
  std::string error = api->ErrorMessage(status.get());
  if (error.empty()) {
    *session = api->TF_NewSession(graph, options, status.get());
    error = api->ErrorMessage(status.get());
    if (!error.empty()) error = "tensorflow could not create a session: " + error;
  } else {
    error = "tensorflow rejected the session options: " + error;
  }
  api->TF_DeleteSessionOptions(options);
  if (!error.empty()) return Status(StatusCode::kInternal, error);
  return Status::Success();
}

// "op:1" -> ("op", 1); "op" -> ("op", 0).
void SplitTensorName(const std::string& name, std::string* op, int* index) {
  const size_t colon = name.rfind(':');
  if (colon != std::string::npos && colon + 1 < name.size() && colon + 1 + 9 >= name.size()) {
    bool digits = true;
    for (size_t i = colon + 1; i < name.size(); ++i) {
      digits = digits && name[i] >= '0' && name[i] <= '9';
    }
    if (digits) {
      *op = name.substr(0, colon);
      *index = std::stoi(name.substr(colon + 1));
      return;
    }
  }
  *op = name;
  *index = 0;
}

}  // namespace

// -- TensorFlowSession ---------------------------------------------------------

Status TensorFlowSession::FromGraphDef(const TensorFlowSessionOptions& options,
                                       const std::string& graph_def,
                                       std::unique_ptr<TensorFlowSession>* session) {
  const TensorFlowApi* api = nullptr;
  PYSERVER_RETURN_IF_ERROR(TensorFlowApi::Load(options.library_path, &api));
  StatusHolder status(api);
  tf_c::TF_Graph* graph = api->TF_NewGraph();
  tf_c::TF_ImportGraphDefOptions* import = api->TF_NewImportGraphDefOptions();
  if (!options.device.empty()) {
    api->TF_ImportGraphDefOptionsSetDefaultDevice(import, options.device.c_str());
  }
  const tf_c::TF_Buffer buffer{graph_def.data(), graph_def.size(), nullptr};
  api->TF_GraphImportGraphDef(graph, &buffer, import, status.get());
  api->TF_DeleteImportGraphDefOptions(import);
  const std::string error = api->ErrorMessage(status.get());
  if (!error.empty()) {
    api->TF_DeleteGraph(graph);
    return Status(StatusCode::kInvalidArg, "tensorflow could not import the GraphDef: " + error);
  }
  tf_c::TF_Session* handle = nullptr;
  Status made = NewSession(api, graph, options.config_proto, &handle);
  if (!made.IsOk()) {
    api->TF_DeleteGraph(graph);
    return made;
  }
  session->reset(new TensorFlowSession(api, graph, handle));
  return Status::Success();
}

Status TensorFlowSession::FromSavedModel(const TensorFlowSessionOptions& options,
                                         const std::string& export_dir,
                                         const std::vector<std::string>& tags,
                                         std::unique_ptr<TensorFlowSession>* session,
                                         std::string* meta_graph) {
  const TensorFlowApi* api = nullptr;
  PYSERVER_RETURN_IF_ERROR(TensorFlowApi::Load(options.library_path, &api));
  StatusHolder status(api);
  tf_c::TF_SessionOptions* session_options = api->TF_NewSessionOptions();
  api->TF_SetConfig(session_options, options.config_proto.data(), options.config_proto.size(),
                    status.get());
  std::string error = api->ErrorMessage(status.get());
  if (!error.empty()) {
    api->TF_DeleteSessionOptions(session_options);
    return Status(StatusCode::kInternal, "tensorflow rejected the session options: " + error);
  }
  std::vector<const char*> tag_names;
  for (const std::string& tag : tags) tag_names.push_back(tag.c_str());
  tf_c::TF_Graph* graph = api->TF_NewGraph();
  tf_c::TF_Buffer* meta = api->TF_NewBuffer();
  tf_c::TF_Session* handle = api->TF_LoadSessionFromSavedModel(
      session_options, nullptr, export_dir.c_str(), tag_names.data(),
      static_cast<int>(tag_names.size()), graph, meta, status.get());
  api->TF_DeleteSessionOptions(session_options);
  error = api->ErrorMessage(status.get());
  if (!error.empty()) {
    api->TF_DeleteBuffer(meta);
    api->TF_DeleteGraph(graph);
    return Status(StatusCode::kInvalidArg,
                  "tensorflow could not load the SavedModel '" + export_dir + "': " + error);
  }
  meta_graph->assign(static_cast<const char*>(meta->data), meta->length);
  api->TF_DeleteBuffer(meta);
  session->reset(new TensorFlowSession(api, graph, handle));
  return Status::Success();
}

TensorFlowSession::~TensorFlowSession() {
  StatusHolder status(api_);
  if (session_ != nullptr) {
    api_->TF_CloseSession(session_, status.get());
    api_->TF_DeleteSession(session_, status.get());
  }
  if (graph_ != nullptr) api_->TF_DeleteGraph(graph_);
}

Status TensorFlowSession::FindTensor(const std::string& name, tf_c::TF_Output* output) const {
  std::string op_name;
  int index = 0;
  SplitTensorName(name, &op_name, &index);
  tf_c::TF_Operation* op = api_->TF_GraphOperationByName(graph_, op_name.c_str());
  if (op == nullptr) {
    return Status(StatusCode::kInvalidArg, "the graph has no operation '" + op_name + "'");
  }
  const int count = api_->TF_OperationNumOutputs(op);
  if (index >= count) {
    return Status(StatusCode::kInvalidArg,
                  "operation '" + op_name + "' has " + std::to_string(count) +
                      " outputs; there is no output " + std::to_string(index));
  }
  *output = TF_Output{op, index};
  return Status::Success();
}

// -- TensorFlowRuntime ---------------------------------------------------------

TensorFlowRuntime::TensorFlowRuntime(NativeRuntimeConfig config, HostMemoryPool* pool,
                                     std::unique_ptr<TensorFlowSession> session)
    : NativeRuntime(std::move(config), pool),
      api_(session->api()),
      session_(std::move(session)),
      status_(api_->TF_NewStatus()) {}

TensorFlowRuntime::~TensorFlowRuntime() { api_->TF_DeleteStatus(status_); }

Status TensorFlowRuntime::Create(NativeRuntimeConfig config, HostMemoryPool* pool,
                                 std::unique_ptr<TensorFlowSession> session,
                                 const std::vector<std::string>& graph_tensors,
                                 const std::string& what,
                                 std::unique_ptr<TensorFlowRuntime>* runtime) {
  const size_t expected = config.inputs.size() + config.outputs.size();
  if (graph_tensors.size() != expected) {
    return Status(StatusCode::kInternal,
                  "TensorFlowRuntime::Create: " + std::to_string(graph_tensors.size()) +
                      " graph tensor names for " + std::to_string(expected) + " config tensors");
  }
  std::unique_ptr<TensorFlowRuntime> made(
      new TensorFlowRuntime(std::move(config), pool, std::move(session)));
  const NativeRuntimeConfig& bound = made->config();
  size_t next = 0;
  for (int kind = 0; kind < 2; ++kind) {
    const std::vector<TensorSpec>& specs = kind == 0 ? bound.inputs : bound.outputs;
    std::vector<TF_Output>* targets = kind == 0 ? &made->feeds_ : &made->fetchable_;
    const char* kind_name = kind == 0 ? "input" : "output";
    for (const TensorSpec& spec : specs) {
      const std::string& graph_name = graph_tensors[next++];
      TF_Output output{};
      Status found = made->session_->FindTensor(graph_name, &output);
      if (!found.IsOk()) {
        return Status(StatusCode::kInvalidArg,
                      std::string(kind_name) + " '" + spec.name + "': the " + what +
                          " has no tensor '" + graph_name + "' (" + found.Message() + ")");
      }
      const int type = made->api_->TF_OperationOutputType(output);
      if (type != ToTensorFlowType(spec.type)) {
        return Status(StatusCode::kInvalidArg,
                      std::string(kind_name) + " '" + spec.name + "' is " +
                          TensorFlowTypeName(type) + " in the model but " +
                          ConfigTypeName(spec.type) + " in the config");
      }
      targets->push_back(output);
    }
  }
  *runtime = std::move(made);
  return Status::Success();
}

Status TensorFlowRuntime::NewInputTensor(const TensorView& view, TF_Tensor** tensor) const {
  uint64_t count = 0;
  PYSERVER_RETURN_IF_ERROR(ElementCount(view.shape, &count));
  const int rank = static_cast<int>(view.shape.size());
  const int64_t* dims = view.shape.data();
  if (view.type == DataType::kString) {
    size_t consumed = 0;
    PYSERVER_RETURN_IF_ERROR(StringElementsByteSize(view.data, view.byte_size, count, &consumed));
    *tensor = api_->TF_AllocateTensor(tf_c::TF_STRING, dims, rank, count * sizeof(TF_TString));
    if (*tensor == nullptr) {
      return Status(StatusCode::kInternal, "tensorflow could not allocate a string tensor");
    }
    // Each element is a view of the caller's bytes: nothing to free after.
    auto* elements = static_cast<TF_TString*>(api_->TF_TensorData(*tensor));
    const char* cursor = static_cast<const char*>(view.data);
    for (uint64_t i = 0; i < count; ++i) {
      uint32_t length = 0;
      std::memcpy(&length, cursor, sizeof(length));  // little-endian hosts only
      api_->TF_StringInit(&elements[i]);
      api_->TF_StringAssignView(&elements[i], cursor + sizeof(length), length);
      cursor += sizeof(length) + length;
    }
    return Status::Success();
  }
  const size_t element_size = ElementByteSize(view.type);
  if (element_size == 0 || count * element_size != view.byte_size) {
    return Status(StatusCode::kInvalidArg,
                  "an input of " + std::to_string(count) + " elements holds " +
                      std::to_string(view.byte_size) + " bytes");
  }
  const int type = ToTensorFlowType(view.type);
  if (view.byte_size == 0) {
    *tensor = api_->TF_AllocateTensor(type, dims, rank, 0);
  } else {
    *tensor = api_->TF_NewTensor(type, dims, rank, const_cast<void*>(view.data), view.byte_size,
                                 KeepBytes, nullptr);
  }
  if (*tensor == nullptr) {
    return Status(StatusCode::kInternal, "tensorflow refused an input tensor");
  }
  return Status::Success();
}

Status TensorFlowRuntime::CopyOutput(const TF_Tensor* tensor, uint32_t index,
                                     OutputTensor* output) const {
  const TensorSpec& spec = config().outputs[index];
  const int type = api_->TF_TensorType(tensor);
  if (type != ToTensorFlowType(spec.type)) {
    return Status(StatusCode::kInternal, "output '" + spec.name + "' came back as " +
                                             TensorFlowTypeName(type) + ", not " +
                                             ConfigTypeName(spec.type));
  }
  output->index = index;
  output->type = spec.type;
  const int rank = api_->TF_NumDims(tensor);
  output->shape.resize(rank);
  for (int d = 0; d < rank; ++d) output->shape[d] = api_->TF_Dim(tensor, d);
  uint64_t count = 0;
  PYSERVER_RETURN_IF_ERROR(ElementCount(output->shape, &count));
  const void* data = api_->TF_TensorData(tensor);
  size_t bytes = 0;
  if (spec.type == DataType::kString) {
    const auto* elements = static_cast<const TF_TString*>(data);
    bytes = count * sizeof(uint32_t);
    for (uint64_t i = 0; i < count; ++i) bytes += api_->TF_StringGetSize(&elements[i]);
  } else {
    bytes = count * ElementByteSize(spec.type);
    if (bytes != api_->TF_TensorByteSize(tensor)) {
      return Status(StatusCode::kInternal,
                    "output '" + spec.name + "' holds " +
                        std::to_string(api_->TF_TensorByteSize(tensor)) + " bytes for " +
                        std::to_string(count) + " elements");
    }
  }
  auto storage = std::make_shared<PooledBuffer>();
  PYSERVER_RETURN_IF_ERROR(pool()->Allocate(bytes, storage.get()));
  char* out = static_cast<char*>(storage->Data());
  if (spec.type == DataType::kString) {
    const auto* elements = static_cast<const TF_TString*>(data);
    for (uint64_t i = 0; i < count; ++i) {
      const size_t size = api_->TF_StringGetSize(&elements[i]);
      if (size > UINT32_MAX) {
        return Status(StatusCode::kInternal, "output '" + spec.name + "' has an element of " +
                                                 std::to_string(size) + " bytes");
      }
      const uint32_t length = static_cast<uint32_t>(size);
      std::memcpy(out, &length, sizeof(length));
      if (length > 0) {
        std::memcpy(out + sizeof(length), api_->TF_StringGetDataPointer(&elements[i]), length);
      }
      out += sizeof(length) + length;
    }
  } else if (bytes > 0) {
    std::memcpy(out, data, bytes);
  }
  output->storage = std::move(storage);
  output->offset = 0;
  output->byte_size = bytes;
  return Status::Success();
}

Status TensorFlowRuntime::Run(uint32_t /*batch_size*/, const std::vector<TensorView>& inputs,
                              const std::vector<uint32_t>& wanted,
                              std::vector<OutputTensor>* outputs) {
  if (inputs.size() != feeds_.size()) {
    return Status(StatusCode::kInternal, "TensorFlowRuntime::Run: " +
                                             std::to_string(inputs.size()) + " inputs for " +
                                             std::to_string(feeds_.size()));
  }
  input_values_.assign(inputs.size(), nullptr);
  output_values_.assign(wanted.size(), nullptr);
  TensorsHolder free_inputs(api_, &input_values_);
  TensorsHolder free_outputs(api_, &output_values_);
  for (size_t i = 0; i < inputs.size(); ++i) {
    Status made = NewInputTensor(inputs[i], &input_values_[i]);
    if (!made.IsOk()) {
      return Status(made.Code(), "input '" + config().inputs[i].name + "': " + made.Message());
    }
  }
  fetches_.clear();
  for (uint32_t index : wanted) {
    if (index >= fetchable_.size()) {
      return Status(StatusCode::kInternal,
                    "TensorFlowRuntime::Run: no output " + std::to_string(index));
    }
    fetches_.push_back(fetchable_[index]);
  }
  api_->TF_SessionRun(session_->handle(), nullptr, feeds_.data(), input_values_.data(),
                      static_cast<int>(feeds_.size()), fetches_.data(), output_values_.data(),
                      static_cast<int>(fetches_.size()), nullptr, 0, nullptr, status_);
  const std::string error = api_->ErrorMessage(status_);
  if (!error.empty()) return Status(StatusCode::kInternal, "tensorflow: " + error);
  outputs->clear();
  outputs->resize(wanted.size());
  for (size_t k = 0; k < wanted.size(); ++k) {
    if (output_values_[k] == nullptr) {
      return Status(StatusCode::kInternal, "tensorflow returned no tensor for output '" +
                                               config().outputs[wanted[k]].name + "'");
    }
    PYSERVER_RETURN_IF_ERROR(CopyOutput(output_values_[k], wanted[k], &(*outputs)[k]));
  }
  return Status::Success();
}

}  // namespace pyserver
