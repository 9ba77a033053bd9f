// TensorFlowApi: the part of TensorFlow's C API (tensorflow/c/c_api.h,
// tf_tensor.h, tf_tstring.h) that the TensorFlow runtime calls, resolved at
// run time from the library a tensorflow wheel ships (libtensorflow_cc.so.2),
// so that the core builds without TensorFlow.
//
// The declarations follow the C API's documented ABI; they are ours, not a
// copy of the headers. Every handle type is opaque except the three small
// structs the API passes by value or fills in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "status.h"

namespace pyserver {
namespace tf_c {

struct TF_Status;
struct TF_Graph;
struct TF_Operation;
struct TF_Session;
struct TF_SessionOptions;
struct TF_ImportGraphDefOptions;
struct TF_Tensor;

struct TF_Output {
  TF_Operation* oper;
  int index;
};

struct TF_Buffer {
  const void* data;
  size_t length;
  void (*data_deallocator)(void* data, size_t length);
};

// One element of a DT_STRING tensor: 24 bytes, 8-byte aligned; only the
// TF_String* functions look inside.
struct alignas(8) TF_TString {
  char opaque[24];
};

// TF_DataType values (tensorflow/c/tf_datatype.h).
enum TF_DataType : int {
  TF_FLOAT = 1,
  TF_DOUBLE = 2,
  TF_INT32 = 3,
  TF_UINT8 = 4,
  TF_INT16 = 5,
  TF_INT8 = 6,
  TF_STRING = 7,
  TF_INT64 = 9,
  TF_BOOL = 10,
  TF_UINT16 = 17,
  TF_HALF = 19,
  TF_UINT32 = 22,
  TF_UINT64 = 23,
};

using Deallocator = void (*)(void* data, size_t length, void* arg);

}  // namespace tf_c

// The resolved functions. Immutable once loaded; every function may be
// called from any thread as the C API allows.
struct TensorFlowApi {
  // The library at `path`, loaded once per process and never unloaded
  // (TensorFlow does not support unloading). Later calls with the same path
  // return the same table; `*api` stays valid for the process lifetime.
  // Fails with UNAVAILABLE when the library cannot be loaded or lacks a
  // function. Thread safe; blocks while the library loads.
  static Status Load(const std::string& path, const TensorFlowApi** api);

  const char* (*TF_Version)();

  tf_c::TF_Status* (*TF_NewStatus)();
  void (*TF_DeleteStatus)(tf_c::TF_Status*);
  int (*TF_GetCode)(const tf_c::TF_Status*);
  const char* (*TF_Message)(const tf_c::TF_Status*);

  tf_c::TF_Buffer* (*TF_NewBuffer)();
  void (*TF_DeleteBuffer)(tf_c::TF_Buffer*);

  tf_c::TF_Graph* (*TF_NewGraph)();
  void (*TF_DeleteGraph)(tf_c::TF_Graph*);
  tf_c::TF_Operation* (*TF_GraphOperationByName)(tf_c::TF_Graph*, const char* name);
  int (*TF_OperationNumOutputs)(tf_c::TF_Operation*);
  int (*TF_OperationOutputType)(tf_c::TF_Output);

  tf_c::TF_ImportGraphDefOptions* (*TF_NewImportGraphDefOptions)();
  void (*TF_DeleteImportGraphDefOptions)(tf_c::TF_ImportGraphDefOptions*);
  void (*TF_ImportGraphDefOptionsSetDefaultDevice)(tf_c::TF_ImportGraphDefOptions*,
                                                   const char* device);
  void (*TF_GraphImportGraphDef)(tf_c::TF_Graph*, const tf_c::TF_Buffer* graph_def,
                                 const tf_c::TF_ImportGraphDefOptions*, tf_c::TF_Status*);

  tf_c::TF_SessionOptions* (*TF_NewSessionOptions)();
  void (*TF_DeleteSessionOptions)(tf_c::TF_SessionOptions*);
  void (*TF_SetConfig)(tf_c::TF_SessionOptions*, const void* proto, size_t length,
                       tf_c::TF_Status*);
  tf_c::TF_Session* (*TF_NewSession)(tf_c::TF_Graph*, const tf_c::TF_SessionOptions*,
                                     tf_c::TF_Status*);
  tf_c::TF_Session* (*TF_LoadSessionFromSavedModel)(
      const tf_c::TF_SessionOptions*, const tf_c::TF_Buffer* run_options, const char* export_dir,
      const char* const* tags, int tags_length, tf_c::TF_Graph*, tf_c::TF_Buffer* meta_graph_def,
      tf_c::TF_Status*);
  void (*TF_CloseSession)(tf_c::TF_Session*, tf_c::TF_Status*);
  void (*TF_DeleteSession)(tf_c::TF_Session*, tf_c::TF_Status*);
  void (*TF_SessionRun)(tf_c::TF_Session*, const tf_c::TF_Buffer* run_options,
                        const tf_c::TF_Output* inputs, tf_c::TF_Tensor* const* input_values,
                        int ninputs, const tf_c::TF_Output* outputs,
                        tf_c::TF_Tensor** output_values, int noutputs,
                        const tf_c::TF_Operation* const* targets, int ntargets,
                        tf_c::TF_Buffer* run_metadata, tf_c::TF_Status*);

  tf_c::TF_Tensor* (*TF_NewTensor)(int type, const int64_t* dims, int num_dims, void* data,
                                   size_t length, tf_c::Deallocator deallocator, void* arg);
  tf_c::TF_Tensor* (*TF_AllocateTensor)(int type, const int64_t* dims, int num_dims,
                                        size_t length);
  void (*TF_DeleteTensor)(tf_c::TF_Tensor*);
  int (*TF_TensorType)(const tf_c::TF_Tensor*);
  int (*TF_NumDims)(const tf_c::TF_Tensor*);
  int64_t (*TF_Dim)(const tf_c::TF_Tensor*, int index);
  size_t (*TF_TensorByteSize)(const tf_c::TF_Tensor*);
  void* (*TF_TensorData)(const tf_c::TF_Tensor*);

  void (*TF_StringInit)(tf_c::TF_TString*);
  void (*TF_StringAssignView)(tf_c::TF_TString*, const char* source, size_t size);
  const char* (*TF_StringGetDataPointer)(const tf_c::TF_TString*);
  size_t (*TF_StringGetSize)(const tf_c::TF_TString*);
  void (*TF_StringDealloc)(tf_c::TF_TString*);

  // The status's message when its code is not OK, else an empty string.
  std::string ErrorMessage(const tf_c::TF_Status* status) const;
};

}  // namespace pyserver
