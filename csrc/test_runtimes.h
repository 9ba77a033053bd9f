// Test doubles and helpers shared by the core's scheduler tests: runtimes
// that record what they ran, requests, and draining a completion queue.
#pragma once

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "completion_queue.h"
#include "infer_request.h"
#include "model_runtime.h"

namespace pyserver {
namespace testing {

// Records which requests it ran; optionally sleeps and fails odd tickets.
class RecordingRuntime : public ModelRuntime {
 public:
  explicit RecordingRuntime(std::chrono::microseconds delay = {}, bool fail_odd = false)
      : delay_(delay), fail_odd_(fail_odd) {}

  void Execute(Batch* batch) override {
    int now = running_.fetch_add(1) + 1;
    int seen = max_running_.load();
    while (now > seen && !max_running_.compare_exchange_weak(seen, now)) {
    }
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    for (InferRequest* request : batch->requests) {
      executed.push_back(request->ticket);
      request->result = request;  // any non-null result
      if (fail_odd_ && request->ticket % 2 == 1) {
        request->status = Status(StatusCode::kInternal, "odd ticket");
      }
    }
    running_.fetch_sub(1);
  }

  static int MaxRunning() { return max_running_.load(); }
  static void Reset() { max_running_ = 0; }

  std::vector<uint64_t> executed;

 private:
  std::chrono::microseconds delay_;
  bool fail_odd_;
  static inline std::atomic<int> running_{0};
  static inline std::atomic<int> max_running_{0};
};

inline std::unique_ptr<InferRequest> MakeRequest(uint64_t ticket, uint32_t batch_size = 1) {
  auto request = std::make_unique<InferRequest>();
  request->ticket = ticket;
  request->batch_size = batch_size;
  return request;
}

// Drains until `count` completions arrived or 5 s passed.
inline std::vector<std::unique_ptr<InferRequest>> Collect(CompletionQueue* queue, size_t count) {
  std::vector<std::unique_ptr<InferRequest>> out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    pollfd fd{queue->Fd(), POLLIN, 0};
    poll(&fd, 1, 100);
    queue->Drain(&out);
  }
  return out;
}

}  // namespace testing
}  // namespace pyserver
