// DirectScheduler: unbatched FIFO scheduling over a model's instances.
#pragma once

#include <atomic>
#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "completion_queue.h"
#include "model_runtime.h"
#include "model_stats.h"
#include "scheduler.h"
#include "scheduler_threads.h"

namespace pyserver {

// One queue shared by all instances of a model; each instance has its own
// thread that takes the oldest request and runs it alone. Finished requests
// go to the completion queue after statistics are recorded. A waiting
// request can be cancelled by ticket (Cancel, O(1)).
//
// A request for a quick model may instead run on the thread that submits it
// (EnqueueOrRun): handing a 15 µs inference to another thread costs two
// cross-thread wake-ups, more than the inference itself.
class DirectScheduler : public Scheduler {
 public:
  // Starts one thread per runtime. Takes ownership of `runtimes`;
  // `completions` and `stats` are borrowed and must outlive the scheduler.
  static Status Create(std::vector<std::unique_ptr<ModelRuntime>> runtimes,
                       CompletionQueue* completions, ModelStats* stats,
                       std::unique_ptr<DirectScheduler>* scheduler);

  // Stops (see Scheduler::Stop) before destruction.
  ~DirectScheduler() override;

  // Refuses with INVALID_ARG a ticket that is already waiting.
  Status Enqueue(std::unique_ptr<InferRequest>* request) override;
  bool Cancel(uint64_t ticket) override;

  // Runs `request` on the calling thread, as an instance thread would, when
  // all of these hold: every instance may run on the caller's thread
  // (ModelRuntime::MayRunOnCallerThread), no request waits in the queue, an
  // instance is idle, and the model's recent executions took `inline_limit_ns`
  // or less on average (once at least kInlineWarmup have been timed). Then the
  // request has completed (statistics recorded, handed to the completion
  // queue) when this returns, and `*ran_inline` is true. Otherwise it is
  // queued exactly as by Enqueue and `*ran_inline` is false. On failure the
  // caller still owns the request. Thread safe; blocks for the inference when
  // it runs it, so call without the GIL.
  Status EnqueueOrRun(std::unique_ptr<InferRequest>* request, int64_t inline_limit_ns,
                      bool* ran_inline);

  // Executions timed before EnqueueOrRun trusts the average.
  static constexpr uint32_t kInlineWarmup = 16;
  size_t InflightCount() const override { return inflight_.load(); }
  void Stop() override;

 private:
  DirectScheduler(std::vector<std::unique_ptr<ModelRuntime>> runtimes,
                  CompletionQueue* completions, ModelStats* stats);
  // Queues `request` (see Enqueue) without waking a thread. mu_ held.
  Status QueueLocked(std::unique_ptr<InferRequest>* request);
  // Wakes an instance thread for a request just queued (all of them while a
  // caller's thread runs a request on one).
  void WakeForQueued(bool inline_running);
  void InstanceLoop(size_t index);
  // Runs one request on `runtime`, times it and records it; returns it for
  // the completion queue.
  std::unique_ptr<InferRequest> RunOne(ModelRuntime* runtime, Batch* batch,
                                       std::unique_ptr<InferRequest> request);

  std::vector<std::unique_ptr<ModelRuntime>> runtimes_;
  CompletionQueue* const completions_;
  ModelStats* const stats_;

  std::mutex mu_;
  std::condition_variable cv_;
  using Queue = std::list<std::unique_ptr<InferRequest>>;
  Queue queue_;                                       // guarded by mu_
  std::unordered_map<uint64_t, Queue::iterator> waiting_;  // by ticket; guarded by mu_
  bool stopping_ = false;                            // guarded by mu_
  std::vector<bool> busy_;     // per instance: running a request; guarded by mu_
  size_t running_inline_ = 0;  // guarded by mu_
  std::condition_variable inline_done_;  // running_inline_ fell to 0
  bool inline_allowed_ = false;          // every runtime may run on a caller's thread
  std::atomic<size_t> inflight_{0};
  // Moving average of recent execution times (1/8 weight to the newest) and
  // how many were timed (saturates at kInlineWarmup).
  std::atomic<int64_t> recent_exec_ns_{0};
  std::atomic<uint32_t> timed_{0};

  SchedulerThreads threads_;
};

}  // namespace pyserver
