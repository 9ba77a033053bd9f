#include "direct_scheduler.h"

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
    (*request)->enqueued_ns = MonotonicNs();
    inflight_.fetch_add(1);
    queue_.push_back(std::move(*request));
  }
  cv_.notify_one();
  return Status::Success();
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
