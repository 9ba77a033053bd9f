// InferRequest: one inference request as the core sees it.
#pragma once

#include <cstdint>

#include "status.h"

namespace pyserver {

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

  void* payload = nullptr;
  void* result = nullptr;

  Status status;

  // CLOCK_MONOTONIC nanoseconds (clock.h).
  uint64_t received_ns = 0;       // set by the front end
  uint64_t enqueued_ns = 0;       // set by the scheduler
  uint64_t compute_start_ns = 0;  // set by the instance
  uint64_t compute_end_ns = 0;    // set by the instance

  // True for the request credited with its batch's execution (statistics).
  bool counts_execution = false;
};

}  // namespace pyserver
