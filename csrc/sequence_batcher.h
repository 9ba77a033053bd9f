// SequenceBatcher: schedules the requests of stateful models (Triton's
// sequence_batching): every request belongs to a sequence named by its
// correlation id, a sequence's requests run in order and one at a time, and
// the batcher tells the model through control inputs where a sequence
// starts, ends, which batch rows hold real requests and whose they are.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "completion_queue.h"
#include "host_memory_pool.h"
#include "model_runtime.h"
#include "model_stats.h"
#include "scheduler.h"
#include "scheduler_threads.h"
#include "tensor.h"

namespace pyserver {

enum class SequenceStrategy {
  // Each sequence owns one batch row (slot) of one instance for its life;
  // state kept by the model per row stays put.
  kDirect,
  // Each instance batches the requests of up to max_candidate_sequences
  // sequences (its own for their life) oldest first, at most one per
  // sequence per batch, in any row.
  kOldest,
};

enum class ControlKind { kStart, kEnd, kReady, kCorrId };

// One control tensor the batcher fills per batch row. START / END / READY
// hold `false_value` or `true_value` (type kInt32, kFp32 or kBool); CORRID
// holds the correlation id as `type` (kUint64, kInt64, kUint32, kInt32: the
// low bits of the id; kString: the string id, or a number's decimal text).
struct SequenceControl {
  ControlKind kind = ControlKind::kStart;
  uint32_t input_index = 0;  // position in InferRequest::inputs
  DataType type = DataType::kInt32;
  double false_value = 0;
  double true_value = 1;
};

// Implicit state: the model's output `output_index` of one request is fed
// back as input `input_index` of the sequence's next request; a sequence's
// first request (and padding rows) get `initial` (dims fixed).
struct SequenceState {
  uint32_t input_index = 0;   // position in InferRequest::inputs
  uint32_t output_index = 0;  // config output index of the runtime
  std::string output_name;
  DataType type = DataType::kFp32;
  std::vector<int64_t> dims;  // without the batch dimension
  std::vector<char> initial;  // byte size of one row
};

struct SequenceBatcherConfig {
  std::string model_name;
  // 0: the model takes no batch dimension (one row per instance).
  uint32_t max_batch_size = 0;
  SequenceStrategy strategy = SequenceStrategy::kDirect;
  uint64_t max_sequence_idle_us = 1000000;
  // kOldest only.
  uint32_t max_candidate_sequences = 0;         // per instance; 0 = max(1, max_batch_size)
  std::vector<uint32_t> preferred_batch_sizes;  // ascending
  uint64_t max_queue_delay_us = 0;
  // Inputs the client sends (the config's); controls and states follow them
  // in InferRequest::inputs.
  uint32_t input_count = 0;
  std::vector<SequenceControl> controls;
  std::vector<SequenceState> states;
};

// InferRequest::sequence_flags bits (the v1 InferRequestHeader.Flag values).
constexpr uint32_t kSequenceStart = 1;
constexpr uint32_t kSequenceEnd = 2;

// Lifecycle of a sequence: a request with START and a new correlation id
// creates it; it takes a free slot, or waits in the backlog (FIFO) until a
// slot frees. Its requests queue in arrival order; the request at the head
// runs when its slot's instance forms a batch, and the next only after it
// completed. A request with END unmaps the id (a later request with that id
// needs START again); the slot frees once the END request completed. A
// mapped sequence with nothing queued or running for max_sequence_idle_us
// is released the same way, and its id forgotten. START on a mapped id
// ends the previous sequence there: the new one continues in its queue and
// slot, its START row resetting the implicit state.
//
// A sequence keeps its slot, and so its instance, for life: slot s belongs to
// instance s % instances, and free slots go lowest first, so the first
// sequences spread over the instances.
// Direct: slot s is row s / instances of its instance. An instance's batch holds its
// rows up to the highest one with a runnable request; rows below without one
// are padding (READY false, inputs copied from a real row, results dropped).
// It runs as soon as one row is runnable.
// Oldest: an idle instance takes its runnable sequences oldest first (their
// head requests' arrival), up to max_batch_size; the batch runs when full,
// at a preferred size, or when its oldest request waited
// max_queue_delay_us. Formation is O(slots).
//
// Threads: one per instance (it forms its own batches under the lock and
// runs them without it), and one reaper for idle sequences.
class SequenceBatcher : public Scheduler {
 public:
  // Starts one thread per runtime and the reaper. Takes ownership of
  // `runtimes`; `pool`, `completions` and `stats` are borrowed and must
  // outlive the batcher. Fails with INVALID_ARG for an inconsistent config.
  static Status Create(const SequenceBatcherConfig& config,
                       std::vector<std::unique_ptr<ModelRuntime>> runtimes, HostMemoryPool* pool,
                       CompletionQueue* completions, ModelStats* stats,
                       std::unique_ptr<SequenceBatcher>* batcher);

  // Stops (see Scheduler::Stop) before destruction.
  ~SequenceBatcher() override;

  // Refuses with INVALID_ARG a request with batch_size > 1, without a
  // correlation id, with an id of the wrong kind for the CORRID control, or
  // without START for an id that has no sequence; with UNAVAILABLE once
  // stopping. Thread safe; never blocks on inference.
  Status Enqueue(std::unique_ptr<InferRequest>* request) override;
  // Takes back a request still waiting behind its sequence's running one
  // (see Scheduler::Cancel). Its START moves to the sequence's next waiting
  // request and its END to the one before it, when those wait too; a
  // sequence left with nothing settles as after a completion.
  bool Cancel(uint64_t ticket) override;
  size_t InflightCount() const override { return inflight_.load(); }
  // Accepted requests all run: sequences with nothing queued are released at
  // once so that the backlog drains too.
  void Stop() override;

  // Sequences mapped to a correlation id, holding a slot or in the backlog.
  // Thread safe (tests and statistics).
  size_t ActiveSequenceCount();
  size_t BacklogCount();

 private:
  using RequestPtr = std::unique_ptr<InferRequest>;
  struct Sequence;
  using SequenceList = std::list<Sequence>;
  using IdleIndex = std::multimap<uint64_t, Sequence*>;

  struct Sequence {
    std::string key;                 // the encoded correlation id
    uint64_t numeric_id = 0;
    std::string string_id;
    std::deque<RequestPtr> queue;    // waiting, arrival order
    bool running = false;            // its head request is executing
    bool mapped = true;              // its id still routes to it (no END yet)
    int64_t slot = -1;               // -1: in the backlog
    IdleIndex::iterator idle;        // idle_.end() unless idle
    std::vector<OutputTensor> state;  // per SequenceState; empty = initial
    SequenceList::iterator self;
  };

  // The instance side: its padding requests and the control bytes of its
  // rows (valid while the instance runs the batch they were written for).
  struct Instance {
    uint32_t index = 0;
    ModelRuntime* runtime = nullptr;
    std::condition_variable ready;  // work may be runnable for it
    bool waiting = false;           // guarded by mu_
    std::vector<InferRequest> padding;          // one per row
    std::vector<uint64_t> control_bytes;        // rows x controls, 8 bytes each
    std::vector<std::string> corrid_strings;    // rows x controls (kString CORRID)
  };

  // One row of a formed batch.
  struct Row {
    Sequence* sequence = nullptr;  // null: padding
    InferRequest* request = nullptr;
  };

  SequenceBatcher(const SequenceBatcherConfig& config,
                  std::vector<std::unique_ptr<ModelRuntime>> runtimes, HostMemoryPool* pool,
                  CompletionQueue* completions, ModelStats* stats);

  void InstanceLoop(Instance* instance);
  void ReaperLoop();

  // All *Locked helpers need mu_ held.
  // Forms the next batch for `instance` into `rows`; empty with `*wake_ns`
  // set means wait until then (oldest's delay), 0 = until an event.
  void FormBatchLocked(Instance* instance, uint64_t now, std::vector<Row>* rows,
                       uint64_t* wake_ns);
  void FormDirectLocked(Instance* instance, std::vector<Row>* rows);
  void FormOldestLocked(Instance* instance, uint64_t now, std::vector<Row>* rows,
                        uint64_t* wake_ns);
  bool RunnableLocked(const Sequence* sequence) const {
    return sequence != nullptr && !sequence->running && !sequence->queue.empty();
  }
  // Points the request of every row (padding included) at its controls and
  // states.
  void BindRowsLocked(Instance* instance, const std::vector<Row>& rows);
  // After a run: takes each sequence's new state, pops its request into
  // `done`, and releases or idles sequences.
  void FinishRowsLocked(const std::vector<Row>& rows, uint64_t now,
                        std::vector<RequestPtr>* done);
  // A sequence with nothing queued or running: freed when unmapped or
  // stopping, otherwise idle from `now`.
  void SettleLocked(Sequence* sequence, uint64_t now);
  void MarkBusyLocked(Sequence* sequence);
  // Frees the sequence's slot (the backlog's oldest takes it) and the
  // sequence itself.
  void ReleaseLocked(Sequence* sequence);
  void AssignSlotLocked(Sequence* sequence, uint32_t slot);
  // Wakes the instance owning `sequence`'s slot if it waits.
  void WakeForLocked(const Sequence* sequence);
  bool DrainedLocked() const;
  // Once stopping and drained: tells every thread to exit.
  void ExitIfDrainedLocked();

  void Complete(std::vector<RequestPtr>* done);

  const SequenceBatcherConfig config_;
  const uint32_t rows_;  // rows per instance: max(1, max_batch_size)
  std::vector<std::unique_ptr<ModelRuntime>> runtimes_;
  std::vector<std::unique_ptr<Instance>> instances_;
  HostMemoryPool* const pool_;
  CompletionQueue* const completions_;
  ModelStats* const stats_;
  int corrid_control_ = -1;  // index into config_.controls, -1 = none

  std::mutex mu_;
  SequenceList sequences_;                             // guarded by mu_
  std::unordered_map<std::string, Sequence*> mapped_;  // guarded by mu_
  // Waiting (not running) requests by ticket, for Cancel.
  std::unordered_map<uint64_t, Sequence*> waiting_;    // guarded by mu_
  std::vector<Sequence*> slots_;                       // guarded by mu_
  std::set<uint32_t> free_slots_;                      // guarded by mu_
  std::deque<Sequence*> backlog_;                      // guarded by mu_
  IdleIndex idle_;                                     // guarded by mu_
  std::condition_variable reaper_cv_;
  uint64_t reaper_wake_ns_ = 0;                        // 0 = none; guarded by mu_
  bool stopping_ = false;                              // guarded by mu_
  bool exit_ = false;                                  // guarded by mu_
  std::atomic<size_t> inflight_{0};

  SchedulerThreads threads_;
};

}  // namespace pyserver
