// PythonStubRuntime: one instance of a Python model (Triton's
// TritonPythonModel), run in a stub process of its own and driven from the
// instance thread: the thread writes the requests' tensors into a shared
// memory region, sends a small binary message on the stub's socket and reads
// the outputs back into pooled memory. The server's GIL is never taken.
//
// The wire between the two (both ends are ours: this file and
// pyserver/backends/python/stub.py) is a stream of frames, each a 4-byte
// little-endian length then the payload, whose first byte is its kind:
//   server -> stub  kInitialize(model_file, args_json)
//                   kExecute(in_size, requests: [inputs: [tensor], wanted: [name]])
//                   kFinalize()
//   stub -> server  kOk() | kError(message)
//                   kResult(out_size, answers: [ok: [tensor] | error(code, message)])
// where a tensor is (name, v1 data type, dims, offset, byte_size) in the
// input or output region; kString tensors are in the core's
// length-prefixed layout (tensor.h). Integers are little-endian; strings are
// a u32 length and bytes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "host_memory_pool.h"
#include "model_runtime.h"
#include "native_runtime.h"

namespace pyserver {

// A memory file (memfd) mapped into this process; the stub maps the same
// file. Grows only. Not thread safe.
class SharedRegion {
 public:
  static Status Create(const std::string& name, size_t size, std::unique_ptr<SharedRegion>* out);
  ~SharedRegion();

  int Fd() const { return fd_; }
  size_t Size() const { return size_; }
  char* Data() const { return static_cast<char*>(data_); }
  // Writer side: makes the file and the mapping at least `size` bytes.
  Status Reserve(size_t size);
  // Reader side: maps `size` bytes after the other process grew the file.
  Status Remap(size_t size);

 private:
  SharedRegion(int fd) : fd_(fd) {}
  int fd_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

struct PythonStubOptions {
  // The stub's command line (the interpreter, its flags, the stub module);
  // the runtime appends the three descriptors' numbers and region sizes.
  std::vector<std::string> argv;
  std::string model_file;
  // TritonPythonModel.initialize's `args`, as JSON.
  std::string args_json;
  int initialize_timeout_ms = 300000;
  int finalize_timeout_ms = 30000;
};

class PythonStubRuntime : public ModelRuntime {
 public:
  // Starts the stub and initialises the model; fails with INVALID_ARG and the
  // model's own reason when it does not initialise. `pool` is borrowed and
  // must outlive the runtime. Blocks until initialised.
  static Status Create(NativeRuntimeConfig config, PythonStubOptions options,
                       HostMemoryPool* pool, std::unique_ptr<PythonStubRuntime>* runtime);

  // Finalizes the model and ends the stub (killing it after
  // finalize_timeout_ms). Blocks.
  ~PythonStubRuntime() override;

  // Hands the batch's requests to the model's execute() as a list. A stub
  // that died is started again first; requests it was running when it died
  // fail with INTERNAL naming its exit code or signal. When execute() raises
  // for several requests, each runs alone if the model allows it
  // (retry_failed_batch_per_request). Instance thread only; blocks for the
  // inference.
  void Execute(Batch* batch) override;
  bool WantsGatheredInputs() const override { return false; }

  // The stub's process id (0 when none is running). Instance thread only,
  // or while no request runs.
  pid_t Pid() const { return pid_; }

 private:
  PythonStubRuntime(NativeRuntimeConfig config, PythonStubOptions options, HostMemoryPool* pool)
      : config_(std::move(config)), options_(std::move(options)), pool_(pool) {}

  Status Start();
  // The stub is running and its socket open (reaps it otherwise).
  bool Alive();
  // Reaps a stub whose socket closed; returns how it ended, for messages.
  std::string Reap();
  void Kill();
  Status Send(const std::string& payload);
  // Reads one frame; `timeout_ms` < 0 waits for ever. Fails with UNAVAILABLE
  // when the stub is gone.
  Status Receive(int timeout_ms, std::string* payload);
  // Runs the batch once. `*model_raised` tells that the model's execute()
  // raised (every request of the batch failed together).
  Status RunOnce(Batch* batch, bool* model_raised);

  const NativeRuntimeConfig config_;
  const PythonStubOptions options_;
  HostMemoryPool* const pool_;
  pid_t pid_ = 0;
  int socket_ = -1;
  std::unique_ptr<SharedRegion> inputs_;
  std::unique_ptr<SharedRegion> outputs_;
};

}  // namespace pyserver
