// NativeRuntime: the base of every runtime that runs in C++ (ONNX Runtime,
// TensorFlow, TensorRT, ...). It turns a scheduler's Batch into one call of
// Run() and its whole-batch outputs into per-request outputs; the instance
// thread never takes the GIL.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "host_memory_pool.h"
#include "model_runtime.h"
#include "tensor.h"

namespace pyserver {

// A tensor of the model config: name, type and dims without the batch
// dimension (-1 = variable).
struct TensorSpec {
  std::string name;
  DataType type = DataType::kInvalid;
  std::vector<int64_t> dims;
};

// What every native runtime is built from, taken from the normalised config.
struct NativeRuntimeConfig {
  std::string model_name;
  // 0: the model takes no batch dimension; otherwise inputs and outputs carry
  // it first.
  uint32_t max_batch_size = 0;
  std::vector<TensorSpec> inputs;   // config order
  std::vector<TensorSpec> outputs;  // config order
  // When a batch of several requests fails as a whole, run each request
  // alone so that only the bad ones fail. Off for models with side effects
  // (innocent requests would run twice): then the whole batch fails.
  bool retry_failed_batch_per_request = true;
  // Kind of the instance: -1 = CPU, otherwise the CUDA device it runs on.
  int device = -1;
};

class NativeRuntime : public ModelRuntime {
 public:
  ~NativeRuntime() override = default;

  // Runs the batch: its requests' inputs (gathered by the scheduler when
  // there are several), one Run() for all of them, then each request gets
  // views of the outputs it asked for (no copies). When Run() fails for a
  // batch of several requests, either each runs alone
  // (retry_failed_batch_per_request) or every request gets the error.
  // Instance thread only; blocks for the inference.
  void Execute(Batch* batch) final;

  // CPU instances only: a GPU instance's thread holds its device.
  bool MayRunOnCallerThread() const override { return config_.device < 0; }

  const NativeRuntimeConfig& config() const { return config_; }

 protected:
  // `pool` is borrowed and must outlive the runtime.
  NativeRuntime(NativeRuntimeConfig config, HostMemoryPool* pool)
      : config_(std::move(config)), pool_(pool) {}

  // Runs one inference. `inputs[i]` is config input i for the whole batch
  // (first dimension `batch_size` when max_batch_size > 0), valid for the
  // call. `wanted` holds config output indices, ascending, no repeats. On
  // success `outputs` holds one tensor per wanted index in that order, each
  // with the batch dimension first (when batching) and storage allocated
  // from pool() or otherwise owned by the tensor. Called from one instance
  // thread at a time; blocks; never takes the GIL.
  virtual Status Run(uint32_t batch_size, const std::vector<TensorView>& inputs,
                     const std::vector<uint32_t>& wanted,
                     std::vector<OutputTensor>* outputs) = 0;

  HostMemoryPool* pool() const { return pool_; }

 private:
  const NativeRuntimeConfig config_;
  HostMemoryPool* const pool_;
};

}  // namespace pyserver
