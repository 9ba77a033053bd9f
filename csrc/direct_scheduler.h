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
  size_t InflightCount() const override { return inflight_.load(); }
  void Stop() override;

 private:
  DirectScheduler(std::vector<std::unique_ptr<ModelRuntime>> runtimes,
                  CompletionQueue* completions, ModelStats* stats);
  void InstanceLoop(ModelRuntime* runtime);

  std::vector<std::unique_ptr<ModelRuntime>> runtimes_;
  CompletionQueue* const completions_;
  ModelStats* const stats_;

  std::mutex mu_;
  std::condition_variable cv_;
  using Queue = std::list<std::unique_ptr<InferRequest>>;
  Queue queue_;                                       // guarded by mu_
  std::unordered_map<uint64_t, Queue::iterator> waiting_;  // by ticket; guarded by mu_
  bool stopping_ = false;                            // guarded by mu_
  std::atomic<size_t> inflight_{0};

  SchedulerThreads threads_;
};

}  // namespace pyserver
