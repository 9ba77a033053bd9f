// Scheduler: the interface between the front end and a model's instances.
#pragma once

#include <cstddef>
#include <cstdint>
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

  // Cancels the request with `ticket` if it is still waiting in the queue:
  // removes it (it no longer counts against any queue bound), records it in
  // the model's statistics and hands it to the completion queue with status
  // CANCELLED before returning true. Returns false, and changes nothing, when
  // no waiting request has that ticket: never accepted, already handed to an
  // instance (it runs to completion) or already completed. A request
  // completes once either way. Thread safe; never blocks on inference. The
  // default, for schedulers that cannot take a request back, returns false.
  virtual bool Cancel(uint64_t ticket) {
    (void)ticket;
    return false;
  }

  // Requests accepted and not yet completed. Thread safe.
  virtual size_t InflightCount() const = 0;

  // Stops accepting requests, lets the instances finish every request already
  // accepted, then joins the instance threads. Blocks until they have exited.
  // Call without holding any lock the instances may need (the GIL included).
  // Idempotent.
  virtual void Stop() = 0;
};

}  // namespace pyserver
