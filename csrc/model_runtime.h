// ModelRuntime: what an instance thread runs a batch on.
#pragma once

#include <vector>

#include "infer_request.h"

namespace pyserver {

// One loaded copy of a model (one per instance). Backends know nothing of
// scheduling: they get a batch and fill each request's result and status.
class ModelRuntime {
 public:
  virtual ~ModelRuntime() = default;

  // Runs `batch` and sets each request's `status` (and `result` on success).
  // Called from exactly one instance thread at a time, never concurrently on
  // the same runtime; blocks for the duration of the inference. The caller
  // keeps ownership of the requests.
  virtual void Execute(const std::vector<InferRequest*>& batch) = 0;
};

}  // namespace pyserver
