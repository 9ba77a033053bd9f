#include "dynamic_batcher.h"

#include <algorithm>
#include <chrono>

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
  for (auto& runtime : created->runtimes_) {
    ModelRuntime* raw = runtime.get();
    DynamicBatcher* self = created.get();
    created->threads_.emplace_back([self, raw] { self->InstanceLoop(raw); });
  }
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
      runtimes_(std::move(runtimes)),
      pool_(pool),
      completions_(completions),
      stats_(stats),
      levels_(std::max<uint32_t>(config.priority_levels, 1)) {
  for (uint32_t i = 0; i < levels_.size(); ++i) {
    auto it = config.priority_queue_policy.find(i + 1);
    levels_[i].policy =
        it != config.priority_queue_policy.end() ? it->second : config.default_queue_policy;
  }
}

DynamicBatcher::~DynamicBatcher() { Stop(); }

Status DynamicBatcher::Enqueue(std::unique_ptr<InferRequest>* request) {
  InferRequest* r = request->get();
  uint32_t level = r->priority != 0 ? r->priority : config_.default_priority_level;
  if (level == 0) level = static_cast<uint32_t>(levels_.size());
  if (level > levels_.size()) {
    return Status(StatusCode::kInvalidArg,
                  "priority level " + std::to_string(level) + " does not exist; the model has " +
                      std::to_string(levels_.size()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status(StatusCode::kUnavailable, "model is being unloaded");
    Level& target = levels_[level - 1];
    const QueuePolicy& policy = target.policy;
    if (policy.max_queue_size != 0 && target.Size() >= policy.max_queue_size) {
      return Status(StatusCode::kUnavailable, "Exceeds maximum queue size");
    }
    r->enqueued_ns = MonotonicNs();
    uint64_t timeout_us = policy.default_timeout_us;
    if (policy.allow_timeout_override && r->timeout_us != 0) timeout_us = r->timeout_us;
    r->deadline_ns = timeout_us != 0 ? r->enqueued_ns + timeout_us * 1000 : 0;
    inflight_.fetch_add(1);
    target.queue.push_back(std::move(*request));
  }
  cv_.notify_one();
  return Status::Success();
}

void DynamicBatcher::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

bool DynamicBatcher::EmptyLocked() const {
  for (const Level& level : levels_) {
    if (level.Size() != 0) return false;
  }
  return true;
}

void DynamicBatcher::ExpireLocked(uint64_t now, std::vector<RequestPtr>* rejected) {
  for (Level& level : levels_) {
    auto& queue = level.queue;
    for (auto it = queue.begin(); it != queue.end();) {
      InferRequest* r = it->get();
      if (r->deadline_ns == 0 || now < r->deadline_ns) {
        ++it;
        continue;
      }
      r->deadline_ns = 0;  // expires once
      if (level.policy.timeout_action == TimeoutAction::kDelay) {
        level.delayed.push_back(std::move(*it));
      } else {
        r->status = Status(StatusCode::kUnavailable, "Request timeout expired");
        rejected->push_back(std::move(*it));
      }
      it = queue.erase(it);
    }
  }
}

size_t DynamicBatcher::PendingBatchLocked(uint64_t now, uint64_t* wake_ns) const {
  *wake_ns = 0;
  size_t count = 0, best = 0;
  uint64_t total = 0, shape_key = 0, oldest_ns = 0;
  bool stop = false;
  auto visit = [&](const RequestPtr& r) {
    if (count > 0 && (total + r->batch_size > max_preferred_ || r->shape_key != shape_key)) {
      stop = true;
      return false;
    }
    if (count == 0) {
      shape_key = r->shape_key;
      oldest_ns = r->enqueued_ns;
    }
    oldest_ns = std::min(oldest_ns, r->enqueued_ns);
    total += r->batch_size;
    count += 1;
    const auto& preferred = config_.preferred_batch_sizes;
    if (std::find(preferred.begin(), preferred.end(), total) != preferred.end()) best = count;
    return total < max_preferred_;
  };
  bool more = true;
  for (const Level& level : levels_) {
    for (const RequestPtr& r : level.queue) {
      if (!(more = visit(r))) break;
    }
    if (!more) break;
  }
  if (more) {
    for (const Level& level : levels_) {
      for (const RequestPtr& r : level.delayed) {
        if (!(more = visit(r))) break;
      }
      if (!more) break;
    }
  }
  if (count == 0) return 0;
  if (best > 0) return best;
  const uint64_t delay_ns = config_.max_queue_delay_us * 1000;
  if (stop || stopping_ || delay_ns == 0 || total >= max_preferred_ || now - oldest_ns >= delay_ns) {
    return count;
  }
  *wake_ns = oldest_ns + delay_ns;
  return 0;
}

void DynamicBatcher::TakeLocked(size_t count, std::vector<RequestPtr>* taken) {
  for (Level& level : levels_) {
    while (count > 0 && !level.queue.empty()) {
      taken->push_back(std::move(level.queue.front()));
      level.queue.pop_front();
      --count;
    }
  }
  for (Level& level : levels_) {
    while (count > 0 && !level.delayed.empty()) {
      taken->push_back(std::move(level.delayed.front()));
      level.delayed.pop_front();
      --count;
    }
  }
}

void DynamicBatcher::InstanceLoop(ModelRuntime* runtime) {
  Batch batch;
  while (true) {
    std::vector<RequestPtr> taken;
    std::vector<RequestPtr> rejected;
    uint64_t sequence = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        const uint64_t now = MonotonicNs();
        ExpireLocked(now, &rejected);
        if (!rejected.empty()) break;
        uint64_t wake_ns = 0;
        const size_t count = PendingBatchLocked(now, &wake_ns);
        if (count > 0) {
          TakeLocked(count, &taken);
          sequence = next_sequence_++;
          break;
        }
        if (stopping_ && EmptyLocked()) return;
        if (wake_ns == 0) {
          // Idle: wake for an arrival, or for the next queue deadline.
          uint64_t deadline = 0;
          for (const Level& level : levels_) {
            for (const RequestPtr& r : level.queue) {
              if (r->deadline_ns != 0 && (deadline == 0 || r->deadline_ns < deadline)) {
                deadline = r->deadline_ns;
              }
            }
          }
          wake_ns = deadline;
        }
        if (wake_ns == 0) {
          cv_.wait(lock);
        } else {
          cv_.wait_for(lock, std::chrono::nanoseconds(wake_ns > now ? wake_ns - now : 0));
        }
      }
      if (!EmptyLocked()) cv_.notify_one();  // let another idle instance look
    }
    if (!rejected.empty()) {
      const uint64_t now = MonotonicNs();
      for (RequestPtr& r : rejected) r->compute_start_ns = r->compute_end_ns = now;
      Release(&rejected);
      continue;
    }
    batch.requests.clear();
    batch.total_batch_size = 0;
    for (RequestPtr& r : taken) {
      batch.requests.push_back(r.get());
      batch.total_batch_size += r->batch_size;
    }
    ExecuteBatch(runtime, pool_, &batch);
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
