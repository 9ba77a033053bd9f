// DynamicBatcher: forms batches of queued requests for a model's instances
// (v1 dynamic_batching semantics, plus later Triton's queue policies).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "completion_queue.h"
#include "host_memory_pool.h"
#include "model_runtime.h"
#include "model_stats.h"
#include "scheduler.h"

namespace pyserver {

enum class TimeoutAction { kReject, kDelay };

struct QueuePolicy {
  TimeoutAction timeout_action = TimeoutAction::kReject;
  uint64_t default_timeout_us = 0;  // 0 = requests never time out
  bool allow_timeout_override = false;
  uint32_t max_queue_size = 0;      // 0 = unbounded
};

struct DynamicBatcherConfig {
  uint32_t max_batch_size = 1;
  std::vector<uint32_t> preferred_batch_sizes;  // ascending; empty = max_batch_size
  uint64_t max_queue_delay_us = 0;
  bool preserve_ordering = false;
  uint32_t priority_levels = 0;                 // 0 = one level
  uint32_t default_priority_level = 0;          // 0 = the lowest priority
  QueuePolicy default_queue_policy;
  std::map<uint32_t, QueuePolicy> priority_queue_policy;  // level -> policy
};

// One queue per priority level, shared by every instance of the model. Each
// instance has a thread that, when idle, forms the next batch from the queue
// heads in priority order:
//   - requests are taken in order while their batch sizes fit under the
//     largest preferred size, and while their shape_key matches the first;
//   - the longest prefix whose total is a preferred size runs at once;
//   - otherwise the batch runs when it is full, when a stop condition
//     fired, when the delay is 0, or when its oldest request has waited
//     max_queue_delay_us; until then the thread waits for arrivals.
// A request larger than the largest preferred size runs alone; requests are
// never split. Timed-out requests are rejected (REJECT) or moved behind all
// others of their level (DELAY). With preserve_ordering, completions leave in
// the order their batches were formed.
class DynamicBatcher : public Scheduler {
 public:
  // Starts one thread per runtime. Takes ownership of `runtimes`; `pool`,
  // `completions` and `stats` are borrowed and must outlive the batcher.
  static Status Create(const DynamicBatcherConfig& config,
                       std::vector<std::unique_ptr<ModelRuntime>> runtimes, HostMemoryPool* pool,
                       CompletionQueue* completions, ModelStats* stats,
                       std::unique_ptr<DynamicBatcher>* batcher);

  // Stops (see Scheduler::Stop) before destruction.
  ~DynamicBatcher() override;

  // Refuses with UNAVAILABLE when the request's level is at max_queue_size,
  // and with INVALID_ARG when its priority level does not exist.
  Status Enqueue(std::unique_ptr<InferRequest>* request) override;
  size_t InflightCount() const override { return inflight_.load(); }
  void Stop() override;

 private:
  using RequestPtr = std::unique_ptr<InferRequest>;

  struct Level {
    QueuePolicy policy;
    std::deque<RequestPtr> queue;    // arrival order
    std::deque<RequestPtr> delayed;  // timed out under DELAY
    size_t Size() const { return queue.size() + delayed.size(); }
  };

  DynamicBatcher(const DynamicBatcherConfig& config,
                 std::vector<std::unique_ptr<ModelRuntime>> runtimes, HostMemoryPool* pool,
                 CompletionQueue* completions, ModelStats* stats);

  void InstanceLoop(ModelRuntime* runtime);

  // All *Locked helpers need mu_ held.
  // Moves requests whose deadline passed: REJECT ones into `rejected`,
  // DELAY ones to the back of their level.
  void ExpireLocked(uint64_t now, std::vector<RequestPtr>* rejected);
  // How many queue-head requests to run now; 0 with `*wake_ns` set means
  // wait until then (or an arrival), 0 with `*wake_ns` 0 means empty.
  size_t PendingBatchLocked(uint64_t now, uint64_t* wake_ns) const;
  // Removes the first `count` requests (in formation order) into `taken`.
  void TakeLocked(size_t count, std::vector<RequestPtr>* taken);
  bool EmptyLocked() const;

  // Records statistics and hands requests to the completion queue, holding
  // batches back until earlier ones are out when ordering is preserved.
  void Finish(std::vector<RequestPtr> requests, uint64_t sequence);
  void Release(std::vector<RequestPtr>* requests);

  const DynamicBatcherConfig config_;
  const uint32_t max_preferred_;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes_;
  HostMemoryPool* const pool_;
  CompletionQueue* const completions_;
  ModelStats* const stats_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Level> levels_;     // index 0 = priority level 1; guarded by mu_
  bool stopping_ = false;         // guarded by mu_
  uint64_t next_sequence_ = 0;    // guarded by mu_
  std::atomic<size_t> inflight_{0};

  std::mutex order_mu_;
  uint64_t next_release_ = 0;                                // guarded by order_mu_
  std::map<uint64_t, std::vector<RequestPtr>> held_back_;   // guarded by order_mu_

  std::mutex stop_mu_;
  std::vector<std::thread> threads_;
};

}  // namespace pyserver
