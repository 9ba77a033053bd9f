// Tests of TensorFlowRuntime against the real TensorFlow C library, on a
// graph built here through the C API (no Python). The library comes from
// $PYSERVER_LIBTENSORFLOW (CMake sets it from the configuring Python's
// tensorflow package); without it the cases that need it skip.

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "host_memory_pool.h"
#include "infer_request.h"
#include "model_runtime.h"
#include "tensorflow_api.h"
#include "tensorflow_runtime.h"
#include "unit_test.h"

namespace pyserver {
namespace {

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// $PYSERVER_LIBTENSORFLOW, or empty.
const std::string library_path = [] {
  const char* path = std::getenv("PYSERVER_LIBTENSORFLOW");
  return std::string(path != nullptr ? path : "");
}();

// Skips the case where no TensorFlow library is given.
#define NEED_TENSORFLOW()                                                            \
  do {                                                                               \
    if (library_path.empty()) {                                                      \
      SKIP("PYSERVER_LIBTENSORFLOW is not set (no TensorFlow library)");             \
    }                                                                                \
  } while (false)

// The graph-building part of the C API, which only this test needs.
struct GraphBuilder {
  struct Description;
  Description* (*NewOperation)(tf_c::TF_Graph*, const char*, const char*) = nullptr;
  void (*SetAttrType)(Description*, const char*, int) = nullptr;
  void (*AddInput)(Description*, tf_c::TF_Output) = nullptr;
  tf_c::TF_Operation* (*FinishOperation)(Description*, tf_c::TF_Status*) = nullptr;
  void (*GraphToGraphDef)(tf_c::TF_Graph*, tf_c::TF_Buffer*, tf_c::TF_Status*) = nullptr;

  bool Load() {
    void* library = dlopen(library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) return false;
    NewOperation = reinterpret_cast<decltype(NewOperation)>(dlsym(library, "TF_NewOperation"));
    SetAttrType = reinterpret_cast<decltype(SetAttrType)>(dlsym(library, "TF_SetAttrType"));
    AddInput = reinterpret_cast<decltype(AddInput)>(dlsym(library, "TF_AddInput"));
    FinishOperation =
        reinterpret_cast<decltype(FinishOperation)>(dlsym(library, "TF_FinishOperation"));
    GraphToGraphDef =
        reinterpret_cast<decltype(GraphToGraphDef)>(dlsym(library, "TF_GraphToGraphDef"));
    return NewOperation && SetAttrType && AddInput && FinishOperation && GraphToGraphDef;
  }
};

// INPUT0, INPUT1: float placeholders; OUTPUT0 = INPUT0 + INPUT1,
// OUTPUT1 = INPUT0 - INPUT1; TEXT: a string placeholder; UPPER =
// upper(TEXT), LENGTH = byte length of TEXT (int32). Serialized GraphDef.
std::string TestGraphDef() {
  const TensorFlowApi* api = nullptr;
  GraphBuilder build;
  if (!TensorFlowApi::Load(library_path, &api).IsOk() || !build.Load()) return "";
  tf_c::TF_Status* status = api->TF_NewStatus();
  tf_c::TF_Graph* graph = api->TF_NewGraph();
  auto placeholder = [&](const char* name, int type) {
    auto* op = build.NewOperation(graph, "Placeholder", name);
    build.SetAttrType(op, "dtype", type);
    return tf_c::TF_Output{build.FinishOperation(op, status), 0};
  };
  auto unary = [&](const char* type, const char* name, tf_c::TF_Output x) {
    auto* op = build.NewOperation(graph, type, name);
    build.AddInput(op, x);
    return tf_c::TF_Output{build.FinishOperation(op, status), 0};
  };
  auto binary = [&](const char* type, const char* name, tf_c::TF_Output x, tf_c::TF_Output y) {
    auto* op = build.NewOperation(graph, type, name);
    build.AddInput(op, x);
    build.AddInput(op, y);
    build.SetAttrType(op, "T", tf_c::TF_FLOAT);
    return tf_c::TF_Output{build.FinishOperation(op, status), 0};
  };
  tf_c::TF_Output a = placeholder("INPUT0", tf_c::TF_FLOAT);
  tf_c::TF_Output b = placeholder("INPUT1", tf_c::TF_FLOAT);
  binary("AddV2", "OUTPUT0", a, b);
  binary("Sub", "OUTPUT1", a, b);
  tf_c::TF_Output text = placeholder("TEXT", tf_c::TF_STRING);
  unary("StringUpper", "UPPER", text);
  unary("StringLength", "LENGTH", text);
  tf_c::TF_Buffer* buffer = api->TF_NewBuffer();
  build.GraphToGraphDef(graph, buffer, status);
  std::string out;
  if (api->TF_GetCode(status) == 0) {
    out.assign(static_cast<const char*>(buffer->data), buffer->length);
  } else {
    std::fprintf(stderr, "  building the test graph: %s\n", api->TF_Message(status));
  }
  api->TF_DeleteBuffer(buffer);
  api->TF_DeleteGraph(graph);
  api->TF_DeleteStatus(status);
  return out;
}

NativeRuntimeConfig TestConfig() {
  NativeRuntimeConfig config;
  config.model_name = "test";
  config.max_batch_size = 8;
  config.inputs = {{"INPUT0", DataType::kFp32, {4}},
                   {"INPUT1", DataType::kFp32, {4}},
                   {"TEXT", DataType::kString, {2}}};
  config.outputs = {{"OUTPUT0", DataType::kFp32, {4}},
                    {"OUTPUT1", DataType::kFp32, {4}},
                    {"UPPER", DataType::kString, {2}},
                    {"LENGTH", DataType::kInt32, {2}}};
  return config;
}

const std::vector<std::string> kGraphTensors = {"INPUT0", "INPUT1", "TEXT",  "OUTPUT0",
                                                "OUTPUT1", "UPPER", "LENGTH:0"};

std::unique_ptr<HostMemoryPool> NewPool() {
  std::unique_ptr<HostMemoryPool> pool;
  HostMemoryPool::Create(1 << 20, false, &pool);
  return pool;
}

Status NewRuntime(HostMemoryPool* pool, const NativeRuntimeConfig& config,
                  const std::vector<std::string>& graph_tensors,
                  std::unique_ptr<TensorFlowRuntime>* runtime) {
  TensorFlowSessionOptions options;
  options.library_path = library_path;
  std::unique_ptr<TensorFlowSession> session;
  PYSERVER_RETURN_IF_ERROR(TensorFlowSession::FromGraphDef(options, TestGraphDef(), &session));
  return TensorFlowRuntime::Create(config, pool, std::move(session), graph_tensors, "graph",
                                   runtime);
}

// kString bytes: 4-byte little-endian length, then the bytes, per element.
std::string Strings(const std::vector<std::string>& elements) {
  std::string out;
  for (const std::string& e : elements) {
    const uint32_t length = static_cast<uint32_t>(e.size());
    out.append(reinterpret_cast<const char*>(&length), sizeof(length));
    out += e;
  }
  return out;
}

struct TestInputs {
  std::vector<float> a, b;
  std::string text;
  std::vector<TensorView> views;

  explicit TestInputs(int batch) {
    std::vector<std::string> words;
    for (int i = 0; i < batch * 4; ++i) {
      a.push_back(static_cast<float>(i));
      b.push_back(0.5f * static_cast<float>(i));
    }
    for (int i = 0; i < batch * 2; ++i) words.push_back(std::string(i * 20, 'a' + i));
    words[0] = "Hello";
    text = Strings(words);
    const int64_t n = batch;
    views = {{DataType::kFp32, {n, 4}, a.data(), a.size() * sizeof(float)},
             {DataType::kFp32, {n, 4}, b.data(), b.size() * sizeof(float)},
             {DataType::kString, {n, 2}, text.data(), text.size()}};
  }
};

TEST(RunComputesEveryWantedOutputForTheBatch) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  std::unique_ptr<TensorFlowRuntime> runtime;
  Status status = NewRuntime(pool.get(), TestConfig(), kGraphTensors, &runtime);
  EXPECT(status.IsOk());
  if (!status.IsOk()) STOP_CASE();
  TestInputs in(3);
  std::vector<OutputTensor> out;
  status = runtime->Run(3, in.views, {0, 1, 3}, &out);
  EXPECT(status.IsOk());
  EXPECT(out.size() == 3);
  if (test_result_->failed()) return;
  EXPECT(out[0].index == 0 && out[1].index == 1 && out[2].index == 3);
  EXPECT((out[0].shape == std::vector<int64_t>{3, 4}));
  EXPECT(out[0].byte_size == 12 * sizeof(float));
  EXPECT(out[2].type == DataType::kInt32 && (out[2].shape == std::vector<int64_t>{3, 2}));
  const auto* sum = static_cast<const float*>(out[0].Data());
  const auto* difference = static_cast<const float*>(out[1].Data());
  for (int i = 0; i < 12; ++i) {
    EXPECT(sum[i] == in.a[i] + in.b[i]);
    EXPECT(difference[i] == in.a[i] - in.b[i]);
  }
  const auto* lengths = static_cast<const int32_t*>(out[2].Data());
  EXPECT(lengths[0] == 5);
  for (int i = 1; i < 6; ++i) EXPECT(lengths[i] == i * 20);
}

TEST(StringOutputsUseTheCoresLengthPrefixedLayout) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  std::unique_ptr<TensorFlowRuntime> runtime;
  EXPECT(NewRuntime(pool.get(), TestConfig(), kGraphTensors, &runtime).IsOk());
  if (test_result_->failed()) return;
  TestInputs in(2);
  std::vector<OutputTensor> out;
  EXPECT(runtime->Run(2, in.views, {2}, &out).IsOk());
  if (test_result_->failed()) return;
  EXPECT(out.size() == 1 && out[0].type == DataType::kString);
  EXPECT((out[0].shape == std::vector<int64_t>{2, 2}));
  const std::string want = Strings({"HELLO", std::string(20, 'B'), std::string(40, 'C'),
                                    std::string(60, 'D')});
  EXPECT(out[0].byte_size == want.size());
  EXPECT(std::memcmp(out[0].Data(), want.data(), want.size()) == 0);
}

TEST(OutputsComeFromThePool) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  std::unique_ptr<TensorFlowRuntime> runtime;
  EXPECT(NewRuntime(pool.get(), TestConfig(), kGraphTensors, &runtime).IsOk());
  if (test_result_->failed()) return;
  TestInputs in(1);
  std::vector<OutputTensor> out;
  EXPECT(runtime->Run(1, in.views, {0, 2}, &out).IsOk());
  EXPECT(pool->Stats().bytes_in_use > 0);
  out.clear();
  EXPECT(pool->Stats().bytes_in_use == 0);
}

TEST(AFailedRunIsInternalWithTensorFlowsMessage) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  std::unique_ptr<TensorFlowRuntime> runtime;
  EXPECT(NewRuntime(pool.get(), TestConfig(), kGraphTensors, &runtime).IsOk());
  if (test_result_->failed()) return;
  TestInputs in(2);
  in.views[1].shape = {2, 3};  // incompatible with INPUT0's [2, 4]
  in.views[1].byte_size = 6 * sizeof(float);
  std::vector<OutputTensor> out;
  Status status = runtime->Run(2, in.views, {0}, &out);
  EXPECT(status.Code() == StatusCode::kInternal);
  EXPECT(Contains(status.Message(), "tensorflow: "));
  // The session keeps serving.
  TestInputs good(2);
  EXPECT(runtime->Run(2, good.views, {0}, &out).IsOk());
}

TEST(AStringInputThatRunsOutOfBytesIsInvalid) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  std::unique_ptr<TensorFlowRuntime> runtime;
  EXPECT(NewRuntime(pool.get(), TestConfig(), kGraphTensors, &runtime).IsOk());
  if (test_result_->failed()) return;
  TestInputs in(2);
  in.views[2].byte_size -= 3;
  std::vector<OutputTensor> out;
  Status status = runtime->Run(2, in.views, {2}, &out);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(Contains(status.Message(), "TEXT"));
}

// Two requests (batch 1 and 2) executed as one batch, the way the dynamic
// batcher hands them over: inputs gathered back to back in pooled memory.
TEST(ExecuteScattersABatchsOutputsToItsRequests) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  std::unique_ptr<TensorFlowRuntime> runtime;
  EXPECT(NewRuntime(pool.get(), TestConfig(), kGraphTensors, &runtime).IsOk());
  if (test_result_->failed()) return;
  TestInputs one(1), two(2);
  InferRequest first, second;
  first.batch_size = 1;
  second.batch_size = 2;
  first.requested_outputs = {2};     // UPPER
  second.requested_outputs = {0, 3};  // OUTPUT0, LENGTH
  Batch batch;
  batch.requests = {&first, &second};
  batch.total_batch_size = 3;
  for (size_t i = 0; i < 3; ++i) {
    for (auto pair : {std::make_pair(&first, &one), std::make_pair(&second, &two)}) {
      InputRef ref;
      ref.data = pair.second->views[i].data;
      ref.byte_size = pair.second->views[i].byte_size;
      ref.shape = pair.second->views[i].shape;
      pair.first->inputs.push_back(ref);
    }
    PooledBuffer gathered;
    EXPECT(pool->Allocate(one.views[i].byte_size + two.views[i].byte_size, &gathered).IsOk());
    char* out = static_cast<char*>(gathered.Data());
    std::memcpy(out, one.views[i].data, one.views[i].byte_size);
    std::memcpy(out + one.views[i].byte_size, two.views[i].data, two.views[i].byte_size);
    batch.gathered.push_back(std::move(gathered));
  }
  runtime->Execute(&batch);
  EXPECT(first.status.IsOk());
  EXPECT(second.status.IsOk());
  if (test_result_->failed()) return;
  EXPECT(first.outputs.size() == 1 && first.outputs[0].index == 2);
  const std::string upper = Strings({"HELLO", std::string(20, 'B')});
  EXPECT(first.outputs[0].byte_size == upper.size());
  EXPECT(std::memcmp(first.outputs[0].Data(), upper.data(), upper.size()) == 0);
  EXPECT(second.outputs.size() == 2);
  EXPECT((second.outputs[0].shape == std::vector<int64_t>{2, 4}));
  const auto* sum = static_cast<const float*>(second.outputs[0].Data());
  for (int i = 0; i < 8; ++i) EXPECT(sum[i] == two.a[i] + two.b[i]);
  const auto* lengths = static_cast<const int32_t*>(second.outputs[1].Data());
  EXPECT(lengths[0] == 5 && lengths[1] == 20 && lengths[2] == 40 && lengths[3] == 60);
}

TEST(ATypeThatDiffersFromTheConfigFailsToBind) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  NativeRuntimeConfig config = TestConfig();
  config.inputs[0].type = DataType::kFp64;
  std::unique_ptr<TensorFlowRuntime> runtime;
  Status status = NewRuntime(pool.get(), config, kGraphTensors, &runtime);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(Contains(status.Message(), "input 'INPUT0' is DT_FLOAT in the model but TYPE_FP64"));
  EXPECT(runtime == nullptr);
}

TEST(AMissingTensorFailsToBindNamingIt) {
  NEED_TENSORFLOW();
  auto pool = NewPool();
  std::vector<std::string> names = kGraphTensors;
  names[4] = "NOPE";
  names[5] = "UPPER:3";
  std::unique_ptr<TensorFlowRuntime> runtime;
  Status status = NewRuntime(pool.get(), TestConfig(), names, &runtime);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(Contains(status.Message(), "output 'OUTPUT1': the graph has no tensor 'NOPE'"));
  EXPECT(Contains(status.Message(), "no operation 'NOPE'"));
  names[4] = "OUTPUT1";
  status = NewRuntime(pool.get(), TestConfig(), names, &runtime);
  EXPECT(Contains(status.Message(), "operation 'UPPER' has 1 outputs; there is no output 3"));
}

TEST(AGraphDefTensorFlowCannotParseIsInvalid) {
  NEED_TENSORFLOW();
  TensorFlowSessionOptions options;
  options.library_path = library_path;
  std::unique_ptr<TensorFlowSession> session;
  Status status = TensorFlowSession::FromGraphDef(options, "not a graph", &session);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(Contains(status.Message(), "tensorflow could not import the GraphDef"));
  EXPECT(session == nullptr);
}

TEST(AMissingSavedModelIsInvalid) {
  NEED_TENSORFLOW();
  TensorFlowSessionOptions options;
  options.library_path = library_path;
  std::unique_ptr<TensorFlowSession> session;
  std::string meta_graph;
  Status status =
      TensorFlowSession::FromSavedModel(options, "/nonexistent/model", {"serve"}, &session,
                                        &meta_graph);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(Contains(status.Message(), "tensorflow could not load the SavedModel '/nonexistent"));
}

TEST(ALibraryThatCannotLoadIsUnavailable) {
  TensorFlowSessionOptions options;
  options.library_path = "/nonexistent/libtensorflow_cc.so.2";
  std::unique_ptr<TensorFlowSession> session;
  Status status = TensorFlowSession::FromGraphDef(options, "", &session);
  EXPECT(status.Code() == StatusCode::kUnavailable);
  EXPECT(Contains(status.Message(), "cannot load /nonexistent/libtensorflow_cc.so.2"));
}

}  // namespace
}  // namespace pyserver

