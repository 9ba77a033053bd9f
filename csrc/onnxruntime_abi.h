// The part of ONNX Runtime's C ABI that OrtRuntime calls, declared here so
// the core builds without ONNX Runtime's headers (the onnxruntime wheel ships
// none): opaque handle types, the enum values we pass, and the positions of
// the OrtApi function-table slots we use.
//
// Where the slot numbers come from: OrtApi (onnxruntime_c_api.h) is a struct
// of function pointers whose order is frozen once a version ships; new
// functions are only appended. The numbers below are each function's index
// in that struct, counted from the header and cross-checked against the
// static_asserts in onnxruntime/core/session/onnxruntime_c_api.cc
// (ReleaseCustomOpDomain 101, ReleaseAvailableProviders 126,
// SynchronizeBoundOutputs 203, SessionOptionsAppendExecutionProvider_MIGraphX
// 209, GetBuildInfoString 254, KernelContext_GetResource 265). OrtLibrary
// probes a few of them at load time (see onnxruntime_runtime.cc).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyserver {
namespace ort {

// Opaque handles (the library's own types; only pointers cross).
struct Status;
struct Env;
struct Session;
struct SessionOptions;
struct Value;
struct MemoryInfo;
struct TypeInfo;
struct TensorTypeAndShapeInfo;
struct IoBinding;
struct CUDAProviderOptionsV2;
struct Allocator;

// The highest slot below (UpdateCUDAProviderOptionsWithValue) arrived in API
// version 16 (onnxruntime 1.16); nothing newer is needed.
constexpr uint32_t kApiVersion = 16;

// OrtErrorCode.
constexpr int kErrorInvalidArgument = 2;
// OrtLoggingLevel.
constexpr int kLoggingError = 3;
// ONNXType.
constexpr int kTypeTensor = 1;
constexpr int kTypeSequence = 2;
constexpr int kTypeMap = 3;
constexpr int kTypeOptional = 6;
// OrtAllocatorType / OrtMemType.
constexpr int kDeviceAllocator = 0;
constexpr int kMemTypeDefault = 0;

// ONNXTensorElementDataType.
enum ElementType : int {
  kUndefined = 0,
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kUint16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,
  kBool = 9,
  kFloat16 = 10,
  kDouble = 11,
  kUint32 = 12,
  kUint64 = 13,
  kComplex64 = 14,
  kComplex128 = 15,
  kBfloat16 = 16,
};

// OrtApiBase: the one exported entry point's result. Never versioned.
struct ApiBase {
  const void* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};
using GetApiBaseFn = const ApiBase* (*)();

// OrtApi slot indices.
enum Slot : int {
  kCreateStatus = 0,
  kGetErrorCode = 1,
  kGetErrorMessage = 2,
  kCreateEnv = 3,
  kCreateSession = 7,
  kCreateSessionFromArray = 8,
  kCreateSessionOptions = 10,
  kSetSessionLogSeverityLevel = 22,
  kSetIntraOpNumThreads = 24,
  kSetInterOpNumThreads = 25,
  kSessionGetInputCount = 30,
  kSessionGetOutputCount = 31,
  kSessionGetInputTypeInfo = 33,
  kSessionGetOutputTypeInfo = 34,
  kSessionGetInputName = 36,
  kSessionGetOutputName = 37,
  kCreateTensorAsOrtValue = 48,
  kCreateTensorWithDataAsOrtValue = 49,
  kGetTensorMutableData = 51,
  kGetStringTensorDataLength = 53,
  kCastTypeInfoToTensorInfo = 55,
  kGetOnnxTypeFromTypeInfo = 56,
  kGetTensorElementType = 60,
  kGetDimensionsCount = 61,
  kGetDimensions = 62,
  kGetTensorTypeAndShape = 65,
  kCreateCpuMemoryInfo = 69,
  kAllocatorFree = 76,
  kGetAllocatorWithDefaultOptions = 78,
  kReleaseStatus = 93,
  kReleaseMemoryInfo = 94,
  kReleaseSession = 95,
  kReleaseValue = 96,
  kReleaseTypeInfo = 98,
  kReleaseTensorTypeAndShapeInfo = 99,
  kReleaseSessionOptions = 100,
  kGetStringTensorElementLength = 127,
  kGetStringTensorElement = 128,
  kAddSessionConfigEntry = 130,
  kRunWithBinding = 133,
  kCreateIoBinding = 134,
  kReleaseIoBinding = 135,
  kBindInput = 136,
  kBindOutput = 137,
  kBindOutputToDevice = 138,
  kGetBoundOutputValues = 140,
  kClearBoundInputs = 141,
  kClearBoundOutputs = 142,
  kSessionOptionsAppendExecutionProvider_CUDA_V2 = 204,
  kCreateCUDAProviderOptions = 205,
  kUpdateCUDAProviderOptions = 206,
  kReleaseCUDAProviderOptions = 208,
  kGetResizedStringTensorElementBuffer = 252,
  kGetBuildInfoString = 254,
  kUpdateCUDAProviderOptionsWithValue = 263,
};

// The typed functions, filled from the table by OrtLibrary. Signatures as
// documented in onnxruntime_c_api.h (enums passed as int).
struct Api {
  Status* (*CreateStatus)(int code, const char* message);
  int (*GetErrorCode)(const Status* status);
  const char* (*GetErrorMessage)(const Status* status);
  Status* (*CreateEnv)(int log_level, const char* log_id, Env** out);
  Status* (*CreateSession)(const Env* env, const char* path, const SessionOptions* options,
                           Session** out);
  Status* (*CreateSessionFromArray)(const Env* env, const void* data, size_t length,
                                    const SessionOptions* options, Session** out);
  Status* (*CreateSessionOptions)(SessionOptions** out);
  Status* (*SetSessionLogSeverityLevel)(SessionOptions* options, int level);
  Status* (*SetIntraOpNumThreads)(SessionOptions* options, int threads);
  Status* (*SetInterOpNumThreads)(SessionOptions* options, int threads);
  Status* (*SessionGetInputCount)(const Session* session, size_t* out);
  Status* (*SessionGetOutputCount)(const Session* session, size_t* out);
  Status* (*SessionGetInputTypeInfo)(const Session* session, size_t index, TypeInfo** out);
  Status* (*SessionGetOutputTypeInfo)(const Session* session, size_t index, TypeInfo** out);
  Status* (*SessionGetInputName)(const Session* session, size_t index, Allocator* allocator,
                                 char** out);
  Status* (*SessionGetOutputName)(const Session* session, size_t index, Allocator* allocator,
                                  char** out);
  Status* (*CreateTensorAsOrtValue)(Allocator* allocator, const int64_t* shape, size_t rank,
                                    int type, Value** out);
  Status* (*CreateTensorWithDataAsOrtValue)(const MemoryInfo* info, void* data, size_t bytes,
                                            const int64_t* shape, size_t rank, int type,
                                            Value** out);
  Status* (*GetTensorMutableData)(Value* value, void** out);
  Status* (*GetStringTensorDataLength)(const Value* value, size_t* out);
  Status* (*CastTypeInfoToTensorInfo)(const TypeInfo* info, const TensorTypeAndShapeInfo** out);
  Status* (*GetOnnxTypeFromTypeInfo)(const TypeInfo* info, int* out);
  Status* (*GetTensorElementType)(const TensorTypeAndShapeInfo* info, int* out);
  Status* (*GetDimensionsCount)(const TensorTypeAndShapeInfo* info, size_t* out);
  Status* (*GetDimensions)(const TensorTypeAndShapeInfo* info, int64_t* dims, size_t rank);
  Status* (*GetTensorTypeAndShape)(const Value* value, TensorTypeAndShapeInfo** out);
  Status* (*CreateCpuMemoryInfo)(int allocator_type, int mem_type, MemoryInfo** out);
  Status* (*AllocatorFree)(Allocator* allocator, void* p);
  Status* (*GetAllocatorWithDefaultOptions)(Allocator** out);
  void (*ReleaseStatus)(Status*);
  void (*ReleaseMemoryInfo)(MemoryInfo*);
  void (*ReleaseSession)(Session*);
  void (*ReleaseValue)(Value*);
  void (*ReleaseTypeInfo)(TypeInfo*);
  void (*ReleaseTensorTypeAndShapeInfo)(TensorTypeAndShapeInfo*);
  void (*ReleaseSessionOptions)(SessionOptions*);
  Status* (*GetStringTensorElementLength)(const Value* value, size_t index, size_t* out);
  Status* (*GetStringTensorElement)(const Value* value, size_t length, size_t index, void* out);
  Status* (*AddSessionConfigEntry)(SessionOptions* options, const char* key, const char* value);
  Status* (*RunWithBinding)(Session* session, const void* run_options, const IoBinding* binding);
  Status* (*CreateIoBinding)(Session* session, IoBinding** out);
  void (*ReleaseIoBinding)(IoBinding*);
  Status* (*BindInput)(IoBinding* binding, const char* name, const Value* value);
  Status* (*BindOutput)(IoBinding* binding, const char* name, const Value* value);
  Status* (*BindOutputToDevice)(IoBinding* binding, const char* name, const MemoryInfo* info);
  Status* (*GetBoundOutputValues)(const IoBinding* binding, Allocator* allocator,
                                  Value*** values, size_t* count);
  void (*ClearBoundInputs)(IoBinding* binding);
  void (*ClearBoundOutputs)(IoBinding* binding);
  Status* (*SessionOptionsAppendExecutionProvider_CUDA_V2)(SessionOptions* options,
                                                          const CUDAProviderOptionsV2* cuda);
  Status* (*CreateCUDAProviderOptions)(CUDAProviderOptionsV2** out);
  Status* (*UpdateCUDAProviderOptions)(CUDAProviderOptionsV2* cuda, const char* const* keys,
                                       const char* const* values, size_t count);
  void (*ReleaseCUDAProviderOptions)(CUDAProviderOptionsV2*);
  Status* (*GetResizedStringTensorElementBuffer)(Value* value, size_t index, size_t length,
                                                 char** buffer);
  const char* (*GetBuildInfoString)();
  Status* (*UpdateCUDAProviderOptionsWithValue)(CUDAProviderOptionsV2* cuda, const char* key,
                                                void* value);
};

}  // namespace ort
}  // namespace pyserver
