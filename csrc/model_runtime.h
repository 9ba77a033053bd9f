// ModelRuntime: what an instance thread runs a batch on.
#pragma once

#include <cstdint>
#include <vector>

#include "host_memory_pool.h"
#include "infer_request.h"

namespace pyserver {

// The requests an instance executes together. With more than one request,
// `gathered[i]` holds input i of every request back to back (batch order),
// in pooled memory, unless that input could not be copied (InputRef::data
// null), in which case it is empty and the runtime gathers it itself.
struct Batch {
  std::vector<InferRequest*> requests;
  uint32_t total_batch_size = 0;
  std::vector<PooledBuffer> gathered;
};

// One loaded copy of a model (one per instance). Backends know nothing of
// scheduling: they get a batch and fill each request's result and status.
class ModelRuntime {
 public:
  virtual ~ModelRuntime() = default;

  // Runs `batch` and sets each request's `status` (and `result` on success).
  // Called from exactly one instance thread at a time, never concurrently on
  // the same runtime; blocks for the duration of the inference. The caller
  // keeps ownership of the batch; the runtime may take (move out) its
  // gathered buffers.
  virtual void Execute(Batch* batch) = 0;

  // Whether a batch of several requests should arrive with its inputs
  // gathered into `Batch::gathered`. Runtimes that hand the requests over
  // one by one (Python models) say no and save the copy. Constant.
  virtual bool WantsGatheredInputs() const { return true; }

  // Whether Execute may be called from a thread other than the instance's own (still
  // never concurrently): runtimes that compute on the CPU in this process with no
  // per-thread state. A runtime that waits on another process (Python models) or sets up
  // a device per thread says no. Constant.
  virtual bool MayRunOnCallerThread() const { return false; }
};

}  // namespace pyserver
