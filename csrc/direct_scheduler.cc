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
  for (auto& runtime : created->runtimes_) {
    ModelRuntime* raw = runtime.get();
    DirectScheduler* self = created.get();
    created->threads_.Start([self, raw] { self->InstanceLoop(raw); });
  }
  *scheduler = std::move(created);
  return Status::Success();
}

DirectScheduler::DirectScheduler(
    std::vector<std::unique_ptr<ModelRuntime>> runtimes,
    CompletionQueue* completions, ModelStats* stats)
    : runtimes_(std::move(runtimes)), completions_(completions), stats_(stats) {}

DirectScheduler::~DirectScheduler() { Stop(); }

Status DirectScheduler::Enqueue(std::unique_ptr<InferRequest>* request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
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
  }
  cv_.notify_one();
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
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  threads_.Join();
}

void DirectScheduler::InstanceLoop(ModelRuntime* runtime) {
  Batch batch;
  batch.requests.resize(1);
  while (true) {
    std::unique_ptr<InferRequest> request;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything accepted is done
      request = std::move(queue_.front());
      queue_.pop_front();
      waiting_.erase(request->ticket);
    }
    batch.requests[0] = request.get();
    batch.total_batch_size = request->batch_size;
    ExecuteBatch(runtime, nullptr, &batch);
    stats_->RecordCompleted(*request);
    inflight_.fetch_sub(1);
    completions_->Push(std::move(request));
  }
}

}  // namespace pyserver
