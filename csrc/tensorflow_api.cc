#include "tensorflow_api.h"

#include <dlfcn.h>

#include <map>
#include <memory>
#include <mutex>

namespace pyserver {
namespace {

template <typename Function>
bool Resolve(void* library, const char* name, Function* function, std::string* missing) {
  *function = reinterpret_cast<Function>(dlsym(library, name));
  if (*function == nullptr && missing->empty()) *missing = name;
  return *function != nullptr;
}

Status ResolveAll(void* library, TensorFlowApi* api) {
  std::string missing;
#define PYSERVER_TF_RESOLVE(name) Resolve(library, #name, &api->name, &missing)
  PYSERVER_TF_RESOLVE(TF_Version);
  PYSERVER_TF_RESOLVE(TF_NewStatus);
  PYSERVER_TF_RESOLVE(TF_DeleteStatus);
  PYSERVER_TF_RESOLVE(TF_GetCode);
  PYSERVER_TF_RESOLVE(TF_Message);
  PYSERVER_TF_RESOLVE(TF_NewBuffer);
  PYSERVER_TF_RESOLVE(TF_DeleteBuffer);
  PYSERVER_TF_RESOLVE(TF_NewGraph);
  PYSERVER_TF_RESOLVE(TF_DeleteGraph);
  PYSERVER_TF_RESOLVE(TF_GraphOperationByName);
  PYSERVER_TF_RESOLVE(TF_OperationNumOutputs);
  PYSERVER_TF_RESOLVE(TF_OperationOutputType);
  PYSERVER_TF_RESOLVE(TF_NewImportGraphDefOptions);
  PYSERVER_TF_RESOLVE(TF_DeleteImportGraphDefOptions);
  PYSERVER_TF_RESOLVE(TF_ImportGraphDefOptionsSetDefaultDevice);
  PYSERVER_TF_RESOLVE(TF_GraphImportGraphDef);
  PYSERVER_TF_RESOLVE(TF_NewSessionOptions);
  PYSERVER_TF_RESOLVE(TF_DeleteSessionOptions);
  PYSERVER_TF_RESOLVE(TF_SetConfig);
  PYSERVER_TF_RESOLVE(TF_NewSession);
  PYSERVER_TF_RESOLVE(TF_LoadSessionFromSavedModel);
  PYSERVER_TF_RESOLVE(TF_CloseSession);
  PYSERVER_TF_RESOLVE(TF_DeleteSession);
  PYSERVER_TF_RESOLVE(TF_SessionRun);
  PYSERVER_TF_RESOLVE(TF_NewTensor);
  PYSERVER_TF_RESOLVE(TF_AllocateTensor);
  PYSERVER_TF_RESOLVE(TF_DeleteTensor);
  PYSERVER_TF_RESOLVE(TF_TensorType);
  PYSERVER_TF_RESOLVE(TF_NumDims);
  PYSERVER_TF_RESOLVE(TF_Dim);
  PYSERVER_TF_RESOLVE(TF_TensorByteSize);
  PYSERVER_TF_RESOLVE(TF_TensorData);
  PYSERVER_TF_RESOLVE(TF_StringInit);
  PYSERVER_TF_RESOLVE(TF_StringAssignView);
  PYSERVER_TF_RESOLVE(TF_StringGetDataPointer);
  PYSERVER_TF_RESOLVE(TF_StringGetSize);
  PYSERVER_TF_RESOLVE(TF_StringDealloc);
#undef PYSERVER_TF_RESOLVE
  if (!missing.empty()) {
    return Status(StatusCode::kUnavailable,
                  "the TensorFlow library has no function " + missing);
  }
  return Status::Success();
}

}  // namespace

Status TensorFlowApi::Load(const std::string& path, const TensorFlowApi** api) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<TensorFlowApi>>* loaded =
      new std::map<std::string, std::unique_ptr<TensorFlowApi>>();
  std::lock_guard<std::mutex> lock(mu);
  auto found = loaded->find(path);
  if (found != loaded->end()) {
    *api = found->second.get();
    return Status::Success();
  }
  void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* reason = dlerror();
    return Status(StatusCode::kUnavailable,
                  "cannot load " + path + ": " + (reason != nullptr ? reason : "unknown error"));
  }
  auto table = std::make_unique<TensorFlowApi>();
  Status status = ResolveAll(library, table.get());
  if (!status.IsOk()) {
    dlclose(library);
    return Status(status.Code(), status.Message() + " (" + path + ")");
  }
  *api = table.get();
  (*loaded)[path] = std::move(table);
  return Status::Success();
}

std::string TensorFlowApi::ErrorMessage(const tf_c::TF_Status* status) const {
  if (TF_GetCode(status) == 0) return std::string();
  const char* message = TF_Message(status);
  return message != nullptr ? message : "unknown error";
}

}  // namespace pyserver
