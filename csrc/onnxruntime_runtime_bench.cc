// Micro-benchmark of OrtRuntime::Run: µs per call for models whose outputs
// are allocated from the pool before the run (every non-batch dim known) and
// for the same models with an open output dim (the session allocates, the
// output is copied once into the pool). Run by `python -m perf ort-micro`,
// which puts onnxruntime's Python API on the same models beside it.
//
//   PYSERVER_ONNXRUNTIME_LIBRARY=<libonnxruntime.so.X> onnxruntime_runtime_bench [model_dir]
//
// Prints one line per case: "case model batch outputs us_per_run". With
// model_dir, also writes each model there as <model>_<outputs>.onnx.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "onnx_test_models.h"
#include "onnxruntime_runtime.h"

namespace pyserver {
namespace {

struct Case {
  std::string model;  // add | mlp
  std::string outputs;  // bound | copied
  uint32_t batch;
  int64_t in_features;
  std::vector<std::string> inputs;
  std::vector<std::string> output_names;
  int64_t out_features;
  std::string bytes;
};

double MicrosPerRun(OrtRuntime* runtime, const Case& c, double seconds) {
  std::vector<std::vector<float>> data(c.inputs.size(),
                                       std::vector<float>(c.batch * c.in_features, 0.5f));
  std::vector<TensorView> views;
  for (const auto& d : data) {
    TensorView view;
    view.type = DataType::kFp32;
    view.shape = {static_cast<int64_t>(c.batch), c.in_features};
    view.data = d.data();
    view.byte_size = d.size() * sizeof(float);
    views.push_back(view);
  }
  std::vector<uint32_t> wanted;
  for (uint32_t i = 0; i < c.output_names.size(); ++i) wanted.push_back(i);
  std::vector<OutputTensor> outputs;
  for (int i = 0; i < 20; ++i) runtime->Run(c.batch, views, wanted, &outputs);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  long runs = 0;
  double elapsed = 0;
  do {
    Status status = runtime->Run(c.batch, views, wanted, &outputs);
    if (!status.IsOk()) {
      std::fprintf(stderr, "run failed: %s\n", status.Message().c_str());
      std::exit(1);
    }
    outputs.clear();  // the pooled storage goes back, as after a response
    ++runs;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  return elapsed * 1e6 / runs;
}

int Main(int argc, char** argv) {
  const char* library = std::getenv("PYSERVER_ONNXRUNTIME_LIBRARY");
  if (library == nullptr) {
    std::fprintf(stderr, "set PYSERVER_ONNXRUNTIME_LIBRARY\n");
    return 2;
  }
  std::vector<Case> cases;
  for (bool open : {false, true}) {
    const std::string outputs = open ? "copied" : "bound";
    for (uint32_t batch : {1u, 8u}) {
      cases.push_back({"add", outputs, batch, 16, {"A", "B"}, {"SUM", "DIFF"}, 16,
                       onnx_test::AddSub(16, open)});
    }
    for (uint32_t batch : {1u, 32u}) {
      cases.push_back({"mlp", outputs, batch, 512, {"X"}, {"Y"}, 1000,
                       onnx_test::Mlp(512, 1000, 1000, open)});
    }
  }
  std::unique_ptr<HostMemoryPool> pool;
  HostMemoryPool::Create(64 << 20, false, &pool);
  const int rounds = 3;
  std::vector<std::vector<double>> results(cases.size());
  std::vector<std::unique_ptr<OrtRuntime>> runtimes;
  for (const Case& c : cases) {
    if (argc > 1) {
      std::ofstream(std::string(argv[1]) + "/" + c.model + "_" + c.outputs + ".onnx",
                    std::ios::binary) << c.bytes;
    }
    NativeRuntimeConfig config;
    config.model_name = c.model;
    config.max_batch_size = 32;
    for (const auto& name : c.inputs) config.inputs.push_back({name, DataType::kFp32, {c.in_features}});
    for (const auto& name : c.output_names) {
      config.outputs.push_back({name, DataType::kFp32, {c.out_features}});
    }
    OrtRuntimeOptions options;
    options.library_path = library;
    options.model_path = c.model;
    options.model_bytes = c.bytes;
    std::unique_ptr<OrtRuntime> runtime;
    Status status = OrtRuntime::Create(config, options, pool.get(), &runtime);
    if (!status.IsOk()) {
      std::fprintf(stderr, "load failed: %s\n", status.Message().c_str());
      return 1;
    }
    runtimes.push_back(std::move(runtime));
  }
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < cases.size(); ++i) {
      results[i].push_back(MicrosPerRun(runtimes[i].get(), cases[i], 0.4));
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    std::sort(results[i].begin(), results[i].end());
    std::printf("case %s %u %s %.2f\n", cases[i].model.c_str(), cases[i].batch,
                cases[i].outputs.c_str(), results[i][rounds / 2]);
  }
  return 0;
}

}  // namespace
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::Main(argc, argv); }
