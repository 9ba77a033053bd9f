// InferRequest: one inference request as the core sees it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "status.h"
#include "tensor.h"

namespace pyserver {

// One input of a request: the whole batch of it (batch_size elements),
// contiguous and row-major. Borrowed from the request's payload, which keeps
// it alive. `data` is null when the bytes cannot be gathered by copying
// (variable-size elements such as TYPE_STRING); the binding gathers those.
struct InputRef {
  const void* data = nullptr;
  size_t byte_size = 0;
  // The request's shape of this input (batch dimension first when the model
  // batches). Set for native runtimes; may stay empty otherwise.
  std::vector<int64_t> shape;
};

// A request travels front end -> scheduler -> instance -> completion queue.
// Exactly one party owns it at a time (std::unique_ptr hand-offs); fields are
// written only by the current owner, so the struct needs no lock.
//
// `payload` and `result` are opaque handles owned by the binding layer (in
// practice Python object references). The core never dereferences them; the
// binding that created a request releases them when it takes the completion.
struct InferRequest {
  // Chosen by the front end to match the completion to its caller.
  uint64_t ticket = 0;
  // Number of batch elements this request carries (>= 1).
  uint32_t batch_size = 1;

  // Inputs in model-config order (dynamic batching only; may stay empty for
  // schedulers that never batch).
  std::vector<InputRef> inputs;
  // Requests with different keys are never batched together (their
  // non-batch dimensions differ).
  uint64_t shape_key = 0;
  // Priority level, 1 = highest; 0 = the model's default level.
  uint32_t priority = 0;
  // Queue timeout asked for by the client, microseconds; 0 = none. Honoured
  // only where the model's queue policy allows overrides.
  uint64_t timeout_us = 0;

  // Sequence batching only: the request's correlation id, a number or (when
  // `correlation_id_is_string`) `correlation_string`, and its
  // kSequenceStart / kSequenceEnd flags (sequence_batcher.h). 0 and "" mean
  // none.
  uint64_t correlation_id = 0;
  std::string correlation_string;
  bool correlation_id_is_string = false;
  uint32_t sequence_flags = 0;

  void* payload = nullptr;
  void* result = nullptr;

  // Native runtimes: the config output indices the client asked for
  // (ascending, no repeats), and on success the request's outputs, in that
  // order. A request completes with either `result` or `outputs`.
  std::vector<uint32_t> requested_outputs;
  std::vector<OutputTensor> outputs;

  Status status;

  // CLOCK_MONOTONIC nanoseconds (clock.h).
  uint64_t received_ns = 0;       // set by the front end
  uint64_t enqueued_ns = 0;       // set by the scheduler
  uint64_t deadline_ns = 0;       // set by the scheduler; 0 = none
  uint64_t compute_start_ns = 0;  // set by the instance
  uint64_t compute_end_ns = 0;    // set by the instance

  // True for the request credited with its batch's execution (statistics).
  bool counts_execution = false;
};

}  // namespace pyserver
