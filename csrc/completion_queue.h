// CompletionQueue: hands finished requests from instance threads to the
// event loop, waking it through an eventfd.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "infer_request.h"
#include "status.h"

namespace pyserver {

class CompletionQueue {
 public:
  // Creates a queue with its own non-blocking eventfd.
  static Status Create(std::unique_ptr<CompletionQueue>* queue);
  ~CompletionQueue();

  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  // The descriptor that becomes readable when completions are waiting. Owned
  // by the queue; valid for its lifetime.
  int Fd() const { return fd_; }

  // Takes ownership of a finished request. Thread safe; never blocks beyond a
  // short critical section and one write(2) when the queue was empty.
  void Push(std::unique_ptr<InferRequest> request);

  // Moves every waiting completion into `out` (appending) and rearms the
  // descriptor. Meant for one consumer thread; safe to call concurrently with
  // Push. Returns the number of requests moved.
  size_t Drain(std::vector<std::unique_ptr<InferRequest>>* out);

 private:
  explicit CompletionQueue(int fd) : fd_(fd) {}

  const int fd_;
  std::mutex mu_;
  std::vector<std::unique_ptr<InferRequest>> ready_;
};

}  // namespace pyserver
