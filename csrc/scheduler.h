// Scheduler: the interface between the front end and a model's instances.
#pragma once

#include <cstddef>
#include <memory>

#include "infer_request.h"
#include "status.h"

namespace pyserver {

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // Queues `request` for execution. On success the scheduler owns the request
  // (and `*request` is null); on failure the caller still owns it. Thread
  // safe; never blocks on inference.
  virtual Status Enqueue(std::unique_ptr<InferRequest>* request) = 0;

  // Requests accepted and not yet completed. Thread safe.
  virtual size_t InflightCount() const = 0;

  // Stops accepting requests, lets the instances finish every request already
  // accepted, then joins the instance threads. Blocks until they have exited.
  // Call without holding any lock the instances may need (the GIL included).
  // Idempotent.
  virtual void Stop() = 0;
};

}  // namespace pyserver
