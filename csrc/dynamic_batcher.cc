#include "dynamic_batcher.h"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <string>

#include "batch_executor.h"
#include "clock.h"

namespace pyserver {

Status DynamicBatcher::Create(const DynamicBatcherConfig& config,
                              std::vector<std::unique_ptr<ModelRuntime>> runtimes,
                              HostMemoryPool* pool, CompletionQueue* completions,
                              ModelStats* stats, std::unique_ptr<DynamicBatcher>* batcher) {
  if (runtimes.empty()) {
    return Status(StatusCode::kInvalidArg, "a model needs at least one instance");
  }
  if (config.max_batch_size < 1) {
    return Status(StatusCode::kInvalidArg, "dynamic batching needs max_batch_size >= 1");
  }
  for (uint32_t size : config.preferred_batch_sizes) {
    if (size < 1 || size > config.max_batch_size) {
      return Status(StatusCode::kInvalidArg,
                    "preferred batch size " + std::to_string(size) +
                        " must be between 1 and max_batch_size");
    }
  }
  const uint32_t levels = std::max<uint32_t>(config.priority_levels, 1);
  if (config.default_priority_level > levels) {
    return Status(StatusCode::kInvalidArg, "default_priority_level exceeds priority_levels");
  }
  std::unique_ptr<DynamicBatcher> created(
      new DynamicBatcher(config, std::move(runtimes), pool, completions, stats));
  DynamicBatcher* self = created.get();
  for (auto& instance : created->instances_) {
    Instance* raw = instance.get();
    created->threads_.Start([self, raw] { self->InstanceLoop(raw); });
  }
  created->threads_.Start([self] { self->BatcherLoop(); });
  *batcher = std::move(created);
  return Status::Success();
}

DynamicBatcher::DynamicBatcher(const DynamicBatcherConfig& config,
                               std::vector<std::unique_ptr<ModelRuntime>> runtimes,
                               HostMemoryPool* pool, CompletionQueue* completions,
                               ModelStats* stats)
    : config_(config),
      max_preferred_(config.preferred_batch_sizes.empty()
                         ? config.max_batch_size
                         : *std::max_element(config.preferred_batch_sizes.begin(),
                                             config.preferred_batch_sizes.end())),
      level_count_(std::max<uint32_t>(config.priority_levels, 1)),
      is_preferred_(config.max_batch_size + 1, false),
      runtimes_(std::move(runtimes)),
      pool_(pool),
      completions_(completions),
      stats_(stats),
      segments_(2 * level_count_),
      level_sizes_(level_count_, 0) {
  for (uint32_t size : config.preferred_batch_sizes) is_preferred_[size] = true;
  for (uint32_t i = 0; i < level_count_; ++i) {
    auto it = config.priority_queue_policy.find(i + 1);
    policies_.push_back(it != config.priority_queue_policy.end() ? it->second
                                                                 : config.default_queue_policy);
  }
  for (auto& runtime : runtimes_) {
    instances_.push_back(std::make_unique<Instance>());
    instances_.back()->runtime = runtime.get();
  }
}

DynamicBatcher::~DynamicBatcher() { Stop(); }

Status DynamicBatcher::Enqueue(std::unique_ptr<InferRequest>* request) {
  InferRequest* r = request->get();
  uint32_t level = r->priority != 0 ? r->priority : config_.default_priority_level;
  if (level == 0) level = level_count_;
  if (level > level_count_) {
    return Status(StatusCode::kInvalidArg,
                  "priority level " + std::to_string(level) + " does not exist; the model has " +
                      std::to_string(level_count_));
  }
  const uint32_t segment = level - 1;
  std::vector<Instance*> handed;
  std::vector<RequestPtr> rejected;
  bool wake_batcher = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status(StatusCode::kUnavailable, "model is being unloaded");
    const QueuePolicy& policy = policies_[segment];
    if (policy.max_queue_size != 0 && level_sizes_[segment] >= policy.max_queue_size) {
      return Status(StatusCode::kUnavailable, "Exceeds maximum queue size");
    }
    auto slot = by_ticket_.emplace(r->ticket, EntryList::iterator());
    if (!slot.second) {
      return Status(StatusCode::kInvalidArg,
                    "ticket " + std::to_string(r->ticket) + " is already queued");
    }
    r->enqueued_ns = MonotonicNs();
    uint64_t timeout_us = policy.default_timeout_us;
    if (policy.allow_timeout_override && r->timeout_us != 0) timeout_us = r->timeout_us;
    r->deadline_ns = timeout_us != 0 ? r->enqueued_ns + timeout_us * 1000 : 0;
    EntryList& list = segments_[segment];
    list.emplace_back();
    Entry& entry = list.back();
    entry.request = std::move(*request);
    entry.segment = segment;
    entry.deadline = deadlines_.end();
    slot.first->second = std::prev(list.end());
    if (r->deadline_ns != 0) {
      // Deadlines of one level mostly arrive in order: the hint makes that O(1).
      entry.deadline = deadlines_.emplace_hint(deadlines_.end(), r->deadline_ns,
                                               std::prev(list.end()));
    }
    level_sizes_[segment] += 1;
    waiting_ += 1;
    inflight_.fetch_add(1);
    if (!pending_.entries.empty() && segment < pending_.last_segment) pending_.valid = false;
    // With every instance busy the request waits for the next one to go
    // idle, which steps the machine itself; only its deadline is timed.
    uint64_t event_ns = r->deadline_ns;
    if (!idle_.empty()) event_ns = DispatchLocked(r->enqueued_ns, &rejected, &handed);
    wake_batcher = BatcherSleepsPastLocked(event_ns);
  }
  for (Instance* instance : handed) instance->ready.notify_one();
  if (wake_batcher) batcher_cv_.notify_one();
  ReleaseRejected(&rejected);
  return Status::Success();
}

void DynamicBatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  batcher_cv_.notify_one();
  threads_.Join();
}

bool DynamicBatcher::Cancel(uint64_t ticket) {
  std::vector<RequestPtr> cancelled;
  bool wake_batcher = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = by_ticket_.find(ticket);
    if (found == by_ticket_.end()) return false;
    EntryList::iterator it = found->second;
    // The batch re-forms without it at the next step.
    if (it->pending) UnwindPendingLocked();
    cancelled.push_back(RemoveWaitingLocked(it));
    // Stopping and nothing left waiting: the batcher thread may exit.
    wake_batcher = stopping_ && waiting_ == 0 && batcher_waiting_;
  }
  if (wake_batcher) batcher_cv_.notify_one();
  InferRequest* r = cancelled.front().get();
  r->status = Status(StatusCode::kCancelled, "request cancelled while queued");
  r->compute_start_ns = r->compute_end_ns = MonotonicNs();
  Release(&cancelled);  // not part of any batch: no ordering to keep
  return true;
}

DynamicBatcher::RequestPtr DynamicBatcher::RemoveWaitingLocked(EntryList::iterator it) {
  if (it->deadline != deadlines_.end()) deadlines_.erase(it->deadline);
  by_ticket_.erase(it->request->ticket);
  level_sizes_[it->segment % level_count_] -= 1;
  waiting_ -= 1;
  RequestPtr request = std::move(it->request);
  segments_[it->segment].erase(it);
  return request;
}

void DynamicBatcher::ExpireLocked(uint64_t now, std::vector<RequestPtr>* rejected) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    EntryList::iterator it = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    it->deadline = deadlines_.end();
    if (it->pending) UnwindPendingLocked();
    InferRequest* r = it->request.get();
    r->deadline_ns = 0;  // expires once
    const uint32_t level = it->segment % level_count_;
    if (policies_[level].timeout_action == TimeoutAction::kDelay) {
      const uint32_t delayed = level_count_ + level;
      if (!pending_.entries.empty() && delayed < pending_.last_segment) UnwindPendingLocked();
      segments_[delayed].splice(segments_[delayed].end(), segments_[it->segment], it);
      it->segment = delayed;
    } else {
      r->status = Status(StatusCode::kUnavailable, "Request timeout expired");
      rejected->push_back(RemoveWaitingLocked(it));
    }
  }
}

bool DynamicBatcher::ExtendPendingLocked() {
  PendingBatch& p = pending_;
  // Every segment before the last entry's is empty while the batch is valid.
  uint32_t segment = p.entries.empty() ? 0 : p.last_segment;
  while (true) {
    if (!p.entries.empty() && p.size >= max_preferred_) return true;
    while (segment < segments_.size() && segments_[segment].empty()) ++segment;
    if (segment == segments_.size()) return false;
    EntryList& list = segments_[segment];
    const InferRequest& r = *list.front().request;
    if (!p.entries.empty() &&
        (p.size + r.batch_size > max_preferred_ || r.shape_key != p.shape_key)) {
      return true;
    }
    if (p.entries.empty()) {
      p.shape_key = r.shape_key;
      p.oldest_enqueued_ns = r.enqueued_ns;
    }
    p.oldest_enqueued_ns = std::min(p.oldest_enqueued_ns, r.enqueued_ns);
    p.size += r.batch_size;
    list.front().pending = true;
    p.entries.splice(p.entries.end(), list, list.begin());
    p.last_segment = segment;
    if (p.size < is_preferred_.size() && is_preferred_[p.size]) {
      p.preferred_count = p.entries.size();
    }
  }
}

size_t DynamicBatcher::ReadyCountLocked(uint64_t now, bool closed, uint64_t* wake_ns) const {
  *wake_ns = 0;
  const PendingBatch& p = pending_;
  if (p.entries.empty()) return 0;
  if (p.preferred_count > 0) return p.preferred_count;
  const uint64_t delay_ns = config_.max_queue_delay_us * 1000;
  if (closed || stopping_ || delay_ns == 0 || now - p.oldest_enqueued_ns >= delay_ns) {
    return p.entries.size();
  }
  *wake_ns = p.oldest_enqueued_ns + delay_ns;
  return 0;
}

void DynamicBatcher::TakePendingLocked(size_t count, std::vector<RequestPtr>* taken) {
  EntryList& entries = pending_.entries;
  taken->reserve(count);
  for (auto it = entries.begin(); count > 0; --count) {
    if (it->deadline != deadlines_.end()) deadlines_.erase(it->deadline);
    by_ticket_.erase(it->request->ticket);
    level_sizes_[it->segment % level_count_] -= 1;
    waiting_ -= 1;
    taken->push_back(std::move(it->request));
    it = entries.erase(it);
  }
  UnwindPendingLocked();
}

void DynamicBatcher::UnwindPendingLocked() {
  EntryList& entries = pending_.entries;
  while (!entries.empty()) {
    auto last = std::prev(entries.end());
    last->pending = false;
    EntryList& home = segments_[last->segment];
    home.splice(home.begin(), entries, last);
  }
  pending_ = PendingBatch();
}

size_t DynamicBatcher::StepLocked(uint64_t now, std::vector<RequestPtr>* rejected,
                                  uint64_t* wake_ns) {
  ExpireLocked(now, rejected);
  if (!pending_.valid) UnwindPendingLocked();
  const bool closed = ExtendPendingLocked();
  return ReadyCountLocked(now, closed, wake_ns);
}

uint64_t DynamicBatcher::DispatchLocked(uint64_t now, std::vector<RequestPtr>* rejected,
                                        std::vector<Instance*>* handed) {
  uint64_t wake_ns = 0;
  while (true) {
    const size_t ready = StepLocked(now, rejected, &wake_ns);
    if (ready == 0 || idle_.empty()) break;  // a ready batch waits for the next idle instance
    Instance* target = idle_.back();
    idle_.pop_back();
    TakePendingLocked(ready, &target->batch);
    target->sequence = next_sequence_++;
    handed->push_back(target);
  }
  return NextTimedEventLocked(wake_ns);
}

uint64_t DynamicBatcher::NextTimedEventLocked(uint64_t wake_ns) const {
  if (deadlines_.empty()) return wake_ns;
  const uint64_t deadline = deadlines_.begin()->first;
  return wake_ns == 0 || deadline < wake_ns ? deadline : wake_ns;
}

bool DynamicBatcher::BatcherSleepsPastLocked(uint64_t event_ns) const {
  return batcher_waiting_ && event_ns != 0 &&
         (batcher_wake_ns_ == 0 || event_ns < batcher_wake_ns_);
}

void DynamicBatcher::ReleaseRejected(std::vector<RequestPtr>* rejected) {
  if (rejected->empty()) return;
  const uint64_t now = MonotonicNs();
  for (RequestPtr& r : *rejected) r->compute_start_ns = r->compute_end_ns = now;
  Release(rejected);
}

void DynamicBatcher::BatcherLoop() {
  std::vector<RequestPtr> rejected;
  std::vector<Instance*> handed;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    const uint64_t now = MonotonicNs();
    const uint64_t event_ns = DispatchLocked(now, &rejected, &handed);
    if (!handed.empty() || !rejected.empty()) {
      lock.unlock();
      for (Instance* instance : handed) instance->ready.notify_one();
      handed.clear();
      ReleaseRejected(&rejected);
      lock.lock();
      continue;
    }
    if (stopping_ && waiting_ == 0) break;
    batcher_waiting_ = true;
    batcher_wake_ns_ = event_ns;
    if (event_ns == 0) {
      batcher_cv_.wait(lock);
    } else if (event_ns > now) {
      batcher_cv_.wait_for(lock, std::chrono::nanoseconds(event_ns - now));
    }
    batcher_waiting_ = false;
    batcher_wake_ns_ = 0;
  }
  for (auto& instance : instances_) instance->exit = true;
  lock.unlock();
  for (auto& instance : instances_) instance->ready.notify_one();
}

void DynamicBatcher::InstanceLoop(Instance* instance) {
  Batch batch;
  std::vector<RequestPtr> rejected;
  while (true) {
    std::vector<RequestPtr> taken;
    uint64_t sequence = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (taken.empty()) {
        if (!instance->batch.empty()) {  // handed over while idle
          taken.swap(instance->batch);
          sequence = instance->sequence;
          break;
        }
        if (instance->exit) return;
        uint64_t wake_ns = 0;
        const size_t ready = StepLocked(MonotonicNs(), &rejected, &wake_ns);
        if (!rejected.empty()) {
          lock.unlock();
          ReleaseRejected(&rejected);
          lock.lock();
          continue;
        }
        // Stopping and nothing left waiting: the batcher thread may exit.
        const bool drained = stopping_ && waiting_ == 0 && batcher_waiting_;
        if (ready > 0) {
          TakePendingLocked(ready, &taken);
          sequence = next_sequence_++;
          if (stopping_ && waiting_ == 0 && batcher_waiting_) batcher_cv_.notify_one();
          break;
        }
        // Idle: a forming batch or a queue timeout needs the batcher's timer.
        idle_.push_back(instance);
        if (drained || BatcherSleepsPastLocked(NextTimedEventLocked(wake_ns))) {
          batcher_cv_.notify_one();
        }
        instance->ready.wait(lock, [instance] { return !instance->batch.empty() || instance->exit; });
      }
    }
    batch.requests.clear();
    batch.total_batch_size = 0;
    for (RequestPtr& r : taken) {
      batch.requests.push_back(r.get());
      batch.total_batch_size += r->batch_size;
    }
    ExecuteBatch(instance->runtime, pool_, &batch);
    batch.requests.clear();
    Finish(std::move(taken), sequence);
  }
}

void DynamicBatcher::Finish(std::vector<RequestPtr> requests, uint64_t sequence) {
  if (!config_.preserve_ordering) {
    Release(&requests);
    return;
  }
  // Released under the lock: two instances finishing together must not
  // interleave their pushes.
  std::lock_guard<std::mutex> lock(order_mu_);
  held_back_[sequence] = std::move(requests);
  for (auto it = held_back_.begin(); it != held_back_.end() && it->first == next_release_;
       it = held_back_.erase(it)) {
    Release(&it->second);
    ++next_release_;
  }
}

void DynamicBatcher::Release(std::vector<RequestPtr>* requests) {
  for (RequestPtr& r : *requests) {
    stats_->RecordCompleted(*r);
    inflight_.fetch_sub(1);
    completions_->Push(std::move(r));
  }
  requests->clear();
}

}  // namespace pyserver
