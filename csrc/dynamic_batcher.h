// DynamicBatcher: forms batches of queued requests for a model's instances
// (v1 dynamic_batching semantics, plus later Triton's queue policies).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "completion_queue.h"
#include "host_memory_pool.h"
#include "model_runtime.h"
#include "model_stats.h"
#include "scheduler.h"
#include "scheduler_threads.h"

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

// A state machine per model over its queues (one per priority level, plus
// one per level for requests that timed out under DELAY) and its pending
// batch: a prefix of the queue order (levels highest first, oldest first,
// delayed requests last) kept with its size, shape key, oldest enqueue time
// and longest preferred prefix, and extended as requests arrive.
//   - A request joins the pending batch while its batch size fits under the
//     largest preferred size and its shape_key matches the first's;
//   - the longest prefix whose total is a preferred size is ready at once;
//   - otherwise the batch is ready when it is full, when the next request
//     does not fit, when the delay is 0, when stopping, or when its oldest
//     request has waited max_queue_delay_us.
// A ready batch goes to an idle instance (one thread per instance); while
// none is idle the batch keeps growing. The machine advances on three
// events, on the thread where each happens, so no request waits for a thread
// hop the event did not need: an arrival (Enqueue hands a ready batch to an
// idle instance), an instance going idle (it takes the next ready batch
// itself), and time (the model's batcher thread sleeps until the next delay
// expiry or queue timeout, then hands ready batches to idle instances).
// Work per request is O(1) (O(log n) for a request with a queue timeout)
// whatever the queue's length; an arrival ahead of the pending batch (a
// higher level) re-forms it, at a cost bounded by its size.
// A request larger than the largest preferred size runs alone; requests are
// never split. Timed-out requests are rejected (REJECT) or moved behind every
// request that has not timed out (DELAY). With preserve_ordering, completions
// leave in the order their batches were formed. A waiting request can be
// cancelled by ticket (O(1); the pending batch re-forms if it held it).
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
  // and with INVALID_ARG when its priority level does not exist or its
  // ticket is already waiting.
  Status Enqueue(std::unique_ptr<InferRequest>* request) override;
  // A cancelled request frees its place under max_queue_size at once.
  bool Cancel(uint64_t ticket) override;
  size_t InflightCount() const override { return inflight_.load(); }
  void Stop() override;

 private:
  using RequestPtr = std::unique_ptr<InferRequest>;
  struct Entry;
  using EntryList = std::list<Entry>;
  using DeadlineIndex = std::multimap<uint64_t, EntryList::iterator>;

  // A waiting request. Its node moves (splice, never copied) between its
  // segment's list and the pending batch.
  struct Entry {
    RequestPtr request;
    uint32_t segment = 0;             // index into segments_
    bool pending = false;             // in pending_.entries, not its segment
    DeadlineIndex::iterator deadline; // deadlines_.end() without a timeout
  };

  // The batch being formed. All guarded by mu_.
  struct PendingBatch {
    EntryList entries;             // formation order
    uint64_t size = 0;             // sum of the entries' batch sizes
    uint64_t shape_key = 0;        // the first entry's
    uint64_t oldest_enqueued_ns = 0;
    size_t preferred_count = 0;    // entries in the longest preferred prefix
    uint32_t last_segment = 0;     // segment of the last entry
    bool valid = true;             // false: the queue order changed ahead of it
  };

  // The instance side of a batch hand-over. `batch` and `exit` guarded by mu_.
  struct Instance {
    ModelRuntime* runtime = nullptr;
    std::condition_variable ready;   // signalled when `batch` or `exit` is set
    std::vector<RequestPtr> batch;   // handed over by Enqueue or the batcher thread
    uint64_t sequence = 0;           // formation order of `batch`
    bool exit = false;
  };

  DynamicBatcher(const DynamicBatcherConfig& config,
                 std::vector<std::unique_ptr<ModelRuntime>> runtimes, HostMemoryPool* pool,
                 CompletionQueue* completions, ModelStats* stats);

  // The batcher thread: acts on delay expiries, queue timeouts and Stop().
  void BatcherLoop();
  void InstanceLoop(Instance* instance);

  // All *Locked helpers need mu_ held.
  // Advances the machine to `now`: expires, re-forms if needed, extends.
  // Returns how many pending requests are ready (see ReadyCountLocked).
  size_t StepLocked(uint64_t now, std::vector<RequestPtr>* rejected, uint64_t* wake_ns);
  // Hands ready batches to idle instances (appended to `handed`) while both
  // exist. Returns the next moment the batcher thread must act; 0 = none.
  uint64_t DispatchLocked(uint64_t now, std::vector<RequestPtr>* rejected,
                          std::vector<Instance*>* handed);
  // The earlier of `wake_ns` (0 = none) and the next queue timeout.
  uint64_t NextTimedEventLocked(uint64_t wake_ns) const;
  // True when the batcher thread sleeps past `event_ns` (0 = none).
  bool BatcherSleepsPastLocked(uint64_t event_ns) const;
  // Takes `it` (waiting, in its segment or the pending batch) out of the
  // queue and its indexes; returns its request.
  RequestPtr RemoveWaitingLocked(EntryList::iterator it);
  // Applies the queue policy to requests whose deadline passed: REJECT ones
  // move into `rejected`, DELAY ones to their delayed segment. O(expired).
  void ExpireLocked(uint64_t now, std::vector<RequestPtr>* rejected);
  // Adds queue-head requests to the pending batch while they fit. Returns
  // true when it cannot grow (full, or the next request does not fit).
  bool ExtendPendingLocked();
  // How many pending requests to run now; 0 with `*wake_ns` set means wait
  // until then (or an event), 0 with `*wake_ns` 0 means nothing is pending.
  size_t ReadyCountLocked(uint64_t now, bool closed, uint64_t* wake_ns) const;
  // Moves the first `count` pending requests into `taken` and returns the
  // rest to the queue heads.
  void TakePendingLocked(size_t count, std::vector<RequestPtr>* taken);
  // Returns every pending request to the head of its segment, in order.
  void UnwindPendingLocked();

  // Records statistics and hands requests to the completion queue, holding
  // batches back until earlier ones are out when ordering is preserved.
  void Finish(std::vector<RequestPtr> requests, uint64_t sequence);
  void Release(std::vector<RequestPtr>* requests);
  // Completes timed-out requests (no lock held).
  void ReleaseRejected(std::vector<RequestPtr>* rejected);

  const DynamicBatcherConfig config_;
  const uint32_t max_preferred_;
  const uint32_t level_count_;
  std::vector<bool> is_preferred_;  // indexed by batch size
  std::vector<QueuePolicy> policies_;  // index 0 = priority level 1
  std::vector<std::unique_ptr<ModelRuntime>> runtimes_;
  std::vector<std::unique_ptr<Instance>> instances_;
  HostMemoryPool* const pool_;
  CompletionQueue* const completions_;
  ModelStats* const stats_;

  std::mutex mu_;
  std::condition_variable batcher_cv_;  // wakes the batcher thread
  // Queue order: segment i < level_count_ holds level i + 1's arrivals,
  // segment level_count_ + i its requests delayed by a timeout.
  std::vector<EntryList> segments_;     // guarded by mu_
  DeadlineIndex deadlines_;             // guarded by mu_
  std::unordered_map<uint64_t, EntryList::iterator> by_ticket_;  // waiting; guarded by mu_
  PendingBatch pending_;                // guarded by mu_
  std::vector<uint32_t> level_sizes_;   // waiting per level; guarded by mu_
  size_t waiting_ = 0;                  // sum of level_sizes_; guarded by mu_
  std::vector<Instance*> idle_;         // guarded by mu_
  bool batcher_waiting_ = false;        // guarded by mu_
  uint64_t batcher_wake_ns_ = 0;        // its timed wake; 0 = none; guarded by mu_
  bool stopping_ = false;               // guarded by mu_
  uint64_t next_sequence_ = 0;          // guarded by mu_
  std::atomic<size_t> inflight_{0};

  std::mutex order_mu_;
  uint64_t next_release_ = 0;                                // guarded by order_mu_
  std::map<uint64_t, std::vector<RequestPtr>> held_back_;   // guarded by order_mu_

  SchedulerThreads threads_;
};

}  // namespace pyserver
