#include "direct_scheduler.h"

#include <iterator>
#include <string>

#include "batch_executor.h"
#include "clock.h"

namespace pyserver {

Status DirectScheduler::Create(
    std::vector<std::unique_ptr<ModelRuntime>> runtimes,
    CompletionQueue* completions, ModelStats* stats,
    std::unique_ptr<DirectScheduler>* scheduler) {
  if (runtimes.empty()) {
    return Status(StatusCode::kInvalidArg, "a model needs at least one instance");
  }
  std::unique_ptr<DirectScheduler> created(
      new DirectScheduler(std::move(runtimes), completions, stats));
  DirectScheduler* self = created.get();
  for (size_t index = 0; index < created->runtimes_.size(); ++index) {
    created->threads_.Start([self, index] { self->InstanceLoop(index); });
  }
  *scheduler = std::move(created);
  return Status::Success();
}

DirectScheduler::DirectScheduler(
    std::vector<std::unique_ptr<ModelRuntime>> runtimes,
    CompletionQueue* completions, ModelStats* stats)
    : runtimes_(std::move(runtimes)), completions_(completions), stats_(stats),
      busy_(runtimes_.size(), false) {
  inline_allowed_ = true;
  for (const auto& runtime : runtimes_) {
    inline_allowed_ = inline_allowed_ && runtime->MayRunOnCallerThread();
  }
}

DirectScheduler::~DirectScheduler() { Stop(); }

Status DirectScheduler::QueueLocked(std::unique_ptr<InferRequest>* request) {
  if (stopping_) {
    return Status(StatusCode::kUnavailable, "model is being unloaded");
  }
  const uint64_t ticket = (*request)->ticket;
  auto slot = waiting_.emplace(ticket, queue_.end());
  if (!slot.second) {
    return Status(StatusCode::kInvalidArg,
                  "ticket " + std::to_string(ticket) + " is already queued");
  }
  (*request)->enqueued_ns = MonotonicNs();
  inflight_.fetch_add(1);
  queue_.push_back(std::move(*request));
  slot.first->second = std::prev(queue_.end());
  return Status::Success();
}

void DirectScheduler::WakeForQueued(bool inline_running) {
  // A thread whose instance runs a caller's request cannot take the new one:
  // then wake them all so that an idle one does.
  if (inline_running) {
    cv_.notify_all();
  } else {
    cv_.notify_one();
  }
}

Status DirectScheduler::Enqueue(std::unique_ptr<InferRequest>* request) {
  bool inline_running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status status = QueueLocked(request);
    if (!status.IsOk()) return status;
    inline_running = running_inline_ > 0;
  }
  WakeForQueued(inline_running);
  return Status::Success();
}

Status DirectScheduler::EnqueueOrRun(std::unique_ptr<InferRequest>* request,
                                     int64_t inline_limit_ns, bool* ran_inline) {
  *ran_inline = false;
  if (!inline_allowed_ || inline_limit_ns <= 0 ||
      timed_.load(std::memory_order_relaxed) < kInlineWarmup ||
      recent_exec_ns_.load(std::memory_order_relaxed) > inline_limit_ns) {
    return Enqueue(request);
  }
  size_t index = busy_.size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return Status(StatusCode::kUnavailable, "model is being unloaded");
    }
    if (queue_.empty()) {
      for (size_t i = 0; i < busy_.size(); ++i) {
        if (!busy_[i]) {
          index = i;
          break;
        }
      }
    }
    if (index == busy_.size()) {
      Status status = QueueLocked(request);
      if (!status.IsOk()) return status;
      WakeForQueued(running_inline_ > 0);
      return Status::Success();
    }
    busy_[index] = true;
    ++running_inline_;
    (*request)->enqueued_ns = MonotonicNs();
    inflight_.fetch_add(1);
  }
  Batch batch;
  batch.requests.resize(1);
  std::unique_ptr<InferRequest> done = RunOne(runtimes_[index].get(), &batch, std::move(*request));
  bool waiting;
  bool last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_[index] = false;
    --running_inline_;
    waiting = !queue_.empty();
    last = running_inline_ == 0;
  }
  completions_->Push(std::move(done));
  if (waiting) cv_.notify_all();  // this instance's thread may have passed it by
  if (last) inline_done_.notify_all();
  *ran_inline = true;
  return Status::Success();
}

bool DirectScheduler::Cancel(uint64_t ticket) {
  std::unique_ptr<InferRequest> request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = waiting_.find(ticket);
    if (found == waiting_.end()) return false;
    request = std::move(*found->second);
    queue_.erase(found->second);
    waiting_.erase(found);
  }
  request->compute_start_ns = request->compute_end_ns = MonotonicNs();
  request->status = Status(StatusCode::kCancelled, "request cancelled while queued");
  stats_->RecordCompleted(*request);
  inflight_.fetch_sub(1);
  completions_->Push(std::move(request));
  return true;
}

void DirectScheduler::Stop() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    inline_done_.wait(lock, [this] { return running_inline_ == 0; });
  }
  cv_.notify_all();
  threads_.Join();
}

void DirectScheduler::InstanceLoop(size_t index) {
  ModelRuntime* runtime = runtimes_[index].get();
  Batch batch;
  batch.requests.resize(1);
  while (true) {
    std::unique_ptr<InferRequest> request;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Not while a caller's thread runs a request on this instance.
      cv_.wait(lock, [this, index] {
        return (stopping_ && queue_.empty()) || (!queue_.empty() && !busy_[index]);
      });
      if (queue_.empty()) return;  // stopping, and everything accepted is done
      request = std::move(queue_.front());
      queue_.pop_front();
      waiting_.erase(request->ticket);
      busy_[index] = true;
    }
    std::unique_ptr<InferRequest> done = RunOne(runtime, &batch, std::move(request));
    {
      // Idle again before the completion is seen: whoever reacts to it finds
      // the instance free (EnqueueOrRun).
      std::lock_guard<std::mutex> lock(mu_);
      busy_[index] = false;
    }
    completions_->Push(std::move(done));
  }
}

std::unique_ptr<InferRequest> DirectScheduler::RunOne(ModelRuntime* runtime, Batch* batch,
                                                      std::unique_ptr<InferRequest> request) {
  batch->requests[0] = request.get();
  batch->total_batch_size = request->batch_size;
  ExecuteBatch(runtime, nullptr, batch);
  const int64_t took =
      static_cast<int64_t>(request->compute_end_ns - request->compute_start_ns);
  const uint32_t timed = timed_.load(std::memory_order_relaxed);
  // Races between instances lose an update at worst: it is an estimate.
  const int64_t recent = recent_exec_ns_.load(std::memory_order_relaxed);
  recent_exec_ns_.store(timed == 0 ? took : recent + (took - recent) / 8,
                        std::memory_order_relaxed);
  if (timed < kInlineWarmup) timed_.store(timed + 1, std::memory_order_relaxed);
  stats_->RecordCompleted(*request);
  inflight_.fetch_sub(1);
  return request;
}

}  // namespace pyserver
