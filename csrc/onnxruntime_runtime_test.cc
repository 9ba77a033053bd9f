// Unit tests of OrtRuntime against the real ONNX Runtime library, on models
// encoded in C++ (onnx_test_models.h).
// The library comes from $PYSERVER_ONNXRUNTIME_LIBRARY (the onnxruntime
// wheel's capi/libonnxruntime.so.<version>); without it the cases that need it skip.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "onnx_test_models.h"
#include "onnxruntime_runtime.h"
#include "unit_test.h"

namespace pyserver {
namespace {

std::string AddSubModel() { return onnx_test::AddSub(); }
std::string IdentityModel(int type) { return onnx_test::Identity(type); }

NativeRuntimeConfig AddSubConfig() {
  NativeRuntimeConfig config;
  config.model_name = "add_sub";
  config.max_batch_size = 8;
  config.inputs = {{"A", DataType::kFp32, {4}}, {"B", DataType::kFp32, {4}}};
  config.outputs = {{"SUM", DataType::kFp32, {4}}, {"DIFF", DataType::kFp32, {4}}};
  return config;
}

NativeRuntimeConfig IdentityConfig(DataType type) {
  NativeRuntimeConfig config;
  config.model_name = "identity";
  config.max_batch_size = 8;
  config.inputs = {{"X", type, {-1}}};
  config.outputs = {{"Y", type, {-1}}};
  return config;
}

const char* Library() { return std::getenv("PYSERVER_ONNXRUNTIME_LIBRARY"); }

std::unique_ptr<HostMemoryPool> NewPool() {
  std::unique_ptr<HostMemoryPool> pool;
  HostMemoryPool::Create(1 << 20, false, &pool);
  return pool;
}

Status Load(NativeRuntimeConfig config, const std::string& model, HostMemoryPool* pool,
            std::unique_ptr<OrtRuntime>* runtime) {
  OrtRuntimeOptions options;
  options.library_path = Library();
  options.model_path = "test/model.onnx";
  options.model_bytes = model;
  return OrtRuntime::Create(std::move(config), options, pool, runtime);
}

TensorView Floats(const std::vector<float>& values, std::vector<int64_t> shape) {
  TensorView view;
  view.type = DataType::kFp32;
  view.shape = std::move(shape);
  view.data = values.data();
  view.byte_size = values.size() * sizeof(float);
  return view;
}

std::vector<float> AsFloats(const OutputTensor& out) {
  const float* data = static_cast<const float*>(out.Data());
  return std::vector<float>(data, data + out.byte_size / sizeof(float));
}

std::string Strings(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    uint32_t n = static_cast<uint32_t>(item.size());
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>(n >> (8 * b)));
    out += item;
  }
  return out;
}

// Skips the case where no ONNX Runtime library is given.
#define NEED_LIBRARY()                                                              \
  do {                                                                              \
    if (Library() == nullptr) {                                                     \
      SKIP("PYSERVER_ONNXRUNTIME_LIBRARY is not set (path of libonnxruntime.so)");  \
    }                                                                               \
  } while (false)

TEST(AddSubComputesBothOutputsIntoPooledMemory) {
  NEED_LIBRARY();
  auto pool = NewPool();
  std::unique_ptr<OrtRuntime> runtime;
  Status status = Load(AddSubConfig(), AddSubModel(), pool.get(), &runtime);
  EXPECT(status.IsOk());
  if (!status.IsOk()) { std::fprintf(stderr, "  %s\n", status.Message().c_str()); STOP_CASE(); }
  std::vector<float> a = {1, 2, 3, 4, 5, 6, 7, 8}, b = {8, 7, 6, 5, 4, 3, 2, 1};
  std::vector<OutputTensor> outputs;
  status = runtime->Run(2, {Floats(a, {2, 4}), Floats(b, {2, 4})}, {0, 1}, &outputs);
  EXPECT(status.IsOk());
  EXPECT(outputs.size() == 2);
  if (!status.IsOk() || outputs.size() != 2) STOP_CASE();
  EXPECT(outputs[0].index == 0 && outputs[1].index == 1);
  EXPECT((outputs[0].shape == std::vector<int64_t>{2, 4}));
  EXPECT(AsFloats(outputs[0]) == std::vector<float>(8, 9.0f));
  EXPECT((AsFloats(outputs[1]) == std::vector<float>{-7, -5, -3, -1, 1, 3, 5, 7}));
  EXPECT(pool->Stats().bytes_in_use > 0);
}

TEST(OnlyTheWantedOutputsAreReturned) {
  NEED_LIBRARY();
  auto pool = NewPool();
  std::unique_ptr<OrtRuntime> runtime;
  EXPECT(Load(AddSubConfig(), AddSubModel(), pool.get(), &runtime).IsOk());
  if (!runtime) STOP_CASE();
  std::vector<float> a = {1, 1, 1, 1}, b = {3, 3, 3, 3};
  std::vector<OutputTensor> outputs;
  EXPECT(runtime->Run(1, {Floats(a, {1, 4}), Floats(b, {1, 4})}, {1}, &outputs).IsOk());
  EXPECT(outputs.size() == 1 && outputs[0].index == 1);
  EXPECT(!outputs.empty() && AsFloats(outputs[0]) == std::vector<float>(4, -2.0f));
}

TEST(OpenOutputDimsAreCopiedOnceWithTheirRunTimeShape) {
  NEED_LIBRARY();
  auto pool = NewPool();
  std::unique_ptr<OrtRuntime> runtime;
  EXPECT(Load(IdentityConfig(DataType::kFp32), IdentityModel(ort::kFloat), pool.get(),
              &runtime).IsOk());
  if (!runtime) STOP_CASE();
  std::vector<float> x = {1, 2, 3, 4, 5, 6};
  for (int64_t cols : {3, 2}) {
    std::vector<OutputTensor> outputs;
    EXPECT(runtime->Run(6 / cols, {Floats(x, {6 / cols, cols})}, {0}, &outputs).IsOk());
    EXPECT(outputs.size() == 1);
    if (outputs.size() != 1) STOP_CASE();
    EXPECT((outputs[0].shape == std::vector<int64_t>{6 / cols, cols}));
    EXPECT(AsFloats(outputs[0]) == x);
  }
}

TEST(StringTensorsRoundTripAnyBytes) {
  NEED_LIBRARY();
  auto pool = NewPool();
  std::unique_ptr<OrtRuntime> runtime;
  Status status = Load(IdentityConfig(DataType::kString), IdentityModel(ort::kString),
                       pool.get(), &runtime);
  EXPECT(status.IsOk());
  if (!runtime) { std::fprintf(stderr, "  %s\n", status.Message().c_str()); STOP_CASE(); }
  std::string bytes = Strings({"one", "", std::string("a\0b", 3), "\xff\xfe"});
  TensorView view;
  view.type = DataType::kString;
  view.shape = {2, 2};
  view.data = bytes.data();
  view.byte_size = bytes.size();
  std::vector<OutputTensor> outputs;
  EXPECT(runtime->Run(2, {view}, {0}, &outputs).IsOk());
  EXPECT(outputs.size() == 1);
  if (outputs.size() != 1) STOP_CASE();
  EXPECT((outputs[0].shape == std::vector<int64_t>{2, 2}));
  EXPECT(outputs[0].type == DataType::kString);
  EXPECT(std::string(static_cast<const char*>(outputs[0].Data()), outputs[0].byte_size) == bytes);
}

TEST(TruncatedStringInputIsInvalidArgument) {
  NEED_LIBRARY();
  auto pool = NewPool();
  std::unique_ptr<OrtRuntime> runtime;
  EXPECT(Load(IdentityConfig(DataType::kString), IdentityModel(ort::kString), pool.get(),
              &runtime).IsOk());
  if (!runtime) STOP_CASE();
  std::string bytes = Strings({"abc"});
  bytes.pop_back();
  TensorView view;
  view.type = DataType::kString;
  view.shape = {1, 1};
  view.data = bytes.data();
  view.byte_size = bytes.size();
  std::vector<OutputTensor> outputs;
  Status status = runtime->Run(1, {view}, {0}, &outputs);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
}

TEST(AFailedRunIsInternalAndNamesOnnxruntime) {
  NEED_LIBRARY();
  auto pool = NewPool();
  std::unique_ptr<OrtRuntime> runtime;
  EXPECT(Load(AddSubConfig(), AddSubModel(), pool.get(), &runtime).IsOk());
  if (!runtime) STOP_CASE();
  std::vector<float> a(8, 1.0f), b(12, 1.0f);
  std::vector<OutputTensor> outputs;
  Status status = runtime->Run(2, {Floats(a, {2, 4}), Floats(b, {3, 4})}, {0, 1}, &outputs);
  EXPECT(status.Code() == StatusCode::kInternal);
  EXPECT(status.Message().rfind("onnxruntime: ", 0) == 0);
  // The session still serves.
  EXPECT(runtime->Run(2, {Floats(a, {2, 4}), Floats(a, {2, 4})}, {0}, &outputs).IsOk());
}

TEST(ConfigInputTheModelLacksFailsTheLoadNamingBoth) {
  NEED_LIBRARY();
  auto pool = NewPool();
  NativeRuntimeConfig config = AddSubConfig();
  config.inputs[1].name = "Q";
  std::unique_ptr<OrtRuntime> runtime;
  Status status = Load(config, AddSubModel(), pool.get(), &runtime);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(status.Message() == "model has no input 'Q'; it has A, B");
}

TEST(ConfigTypeUnlikeTheModelsFailsTheLoad) {
  NEED_LIBRARY();
  auto pool = NewPool();
  NativeRuntimeConfig config = AddSubConfig();
  config.outputs[0].type = DataType::kInt32;
  std::unique_ptr<OrtRuntime> runtime;
  Status status = Load(config, AddSubModel(), pool.get(), &runtime);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(status.Message() == "output 'SUM' is tensor(float) in the model but TYPE_INT32 in the config");
}

TEST(BytesThatAreNoModelFailTheLoad) {
  NEED_LIBRARY();
  auto pool = NewPool();
  std::unique_ptr<OrtRuntime> runtime;
  Status status = Load(AddSubConfig(), "not a model", pool.get(), &runtime);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(status.Message().rfind("onnxruntime could not load 'test/model.onnx': ", 0) == 0);
}

TEST(AMissingLibraryIsUnavailable) {
  auto pool = NewPool();
  OrtRuntimeOptions options;
  options.library_path = "/nonexistent/libonnxruntime.so";
  options.model_bytes = AddSubModel();
  std::unique_ptr<OrtRuntime> runtime;
  Status status = OrtRuntime::Create(AddSubConfig(), options, pool.get(), &runtime);
  EXPECT(status.Code() == StatusCode::kUnavailable);
  EXPECT(status.Message().find("/nonexistent/libonnxruntime.so") != std::string::npos);
}

TEST(GpuInstanceRunsOnItsDeviceOrSaysWhyNot) {
  NEED_LIBRARY();
  if (CudaRuntime::Get() == nullptr) {
    SKIP("no CUDA runtime library or no CUDA device");
  }
  auto pool = NewPool();
  NativeRuntimeConfig config = AddSubConfig();
  config.device = 0;
  std::unique_ptr<OrtRuntime> runtime;
  Status status = Load(config, AddSubModel(), pool.get(), &runtime);
  if (!status.IsOk()) {
    // A CPU-only onnxruntime build: the load must say so.
    EXPECT(status.Code() == StatusCode::kUnavailable);
    EXPECT(status.Message().find("onnxruntime-gpu") != std::string::npos);
    SKIP("this onnxruntime build has no CUDA provider");
  }
  std::vector<float> a = {1, 2, 3, 4}, b = {1, 1, 1, 1};
  std::vector<OutputTensor> outputs;
  EXPECT(runtime->Run(1, {Floats(a, {1, 4}), Floats(b, {1, 4})}, {0, 1}, &outputs).IsOk());
  EXPECT(outputs.size() == 2 && (AsFloats(outputs[0]) == std::vector<float>{2, 3, 4, 5}));
}

}  // namespace
}  // namespace pyserver

