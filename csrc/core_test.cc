// Unit tests of the C++ core, without Python. Built and run by
// tests/core/test_core_cpp.py; prints "N passed, M failed".

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "completion_queue.h"
#include "direct_scheduler.h"
#include "model_stats.h"

namespace pyserver {
namespace {

int passed = 0;
int failed = 0;

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "  %s:%d: expected %s\n", __FILE__, __LINE__, \
                   #cond);                                             \
      ok = false;                                                      \
    }                                                                  \
  } while (false)

void Run(const char* name, const std::function<bool()>& test) {
  bool ok = test();
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", name);
  (ok ? passed : failed) += 1;
}

// Records which requests it ran; optionally sleeps and fails odd tickets.
class RecordingRuntime : public ModelRuntime {
 public:
  explicit RecordingRuntime(std::chrono::microseconds delay = {}, bool fail_odd = false)
      : delay_(delay), fail_odd_(fail_odd) {}

  void Execute(const std::vector<InferRequest*>& batch) override {
    int now = running_.fetch_add(1) + 1;
    int seen = max_running_.load();
    while (now > seen && !max_running_.compare_exchange_weak(seen, now)) {
    }
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    for (InferRequest* request : batch) {
      executed.push_back(request->ticket);
      if (fail_odd_ && request->ticket % 2 == 1) {
        request->status = Status(StatusCode::kInternal, "odd ticket");
      }
    }
    running_.fetch_sub(1);
  }

  static int MaxRunning() { return max_running_.load(); }
  static void Reset() { max_running_ = 0; }

  std::vector<uint64_t> executed;

 private:
  std::chrono::microseconds delay_;
  bool fail_odd_;
  static std::atomic<int> running_;
  static std::atomic<int> max_running_;
};
std::atomic<int> RecordingRuntime::running_{0};
std::atomic<int> RecordingRuntime::max_running_{0};

std::unique_ptr<InferRequest> MakeRequest(uint64_t ticket, uint32_t batch_size = 1) {
  auto request = std::make_unique<InferRequest>();
  request->ticket = ticket;
  request->batch_size = batch_size;
  return request;
}

// Drains until `count` completions arrived or 5 s passed.
std::vector<std::unique_ptr<InferRequest>> Collect(CompletionQueue* queue, size_t count) {
  std::vector<std::unique_ptr<InferRequest>> out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    pollfd fd{queue->Fd(), POLLIN, 0};
    poll(&fd, 1, 100);
    queue->Drain(&out);
  }
  return out;
}

bool CompletionQueueSignalsOnlyWhenNonEmpty() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  EXPECT(CompletionQueue::Create(&queue).IsOk());
  pollfd fd{queue->Fd(), POLLIN, 0};
  EXPECT(poll(&fd, 1, 0) == 0);
  queue->Push(MakeRequest(1));
  queue->Push(MakeRequest(2));
  EXPECT(poll(&fd, 1, 0) == 1);
  std::vector<std::unique_ptr<InferRequest>> out;
  EXPECT(queue->Drain(&out) == 2);
  EXPECT(out.size() == 2 && out[0]->ticket == 1 && out[1]->ticket == 2);
  EXPECT(poll(&fd, 1, 0) == 0);
  return ok;
}

bool CompletionQueueLosesNothingUnderConcurrentPushes() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  EXPECT(CompletionQueue::Create(&queue).IsOk());
  constexpr int kThreads = 4, kEach = 5000;
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&queue, t] {
      for (int i = 0; i < kEach; ++i) queue->Push(MakeRequest(t * kEach + i));
    });
  }
  auto out = Collect(queue.get(), kThreads * kEach);
  for (auto& thread : producers) thread.join();
  queue->Drain(&out);
  EXPECT(out.size() == static_cast<size_t>(kThreads * kEach));
  return ok;
}

bool DirectSchedulerRunsRequestsInArrivalOrderOnOneInstance() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  auto runtime = std::make_unique<RecordingRuntime>();
  RecordingRuntime* raw = runtime.get();
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::move(runtime));
  std::unique_ptr<DirectScheduler> scheduler;
  EXPECT(DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler).IsOk());
  for (uint64_t i = 1; i <= 100; ++i) {
    auto request = MakeRequest(i);
    EXPECT(scheduler->Enqueue(&request).IsOk());
    EXPECT(request == nullptr);
  }
  auto done = Collect(queue.get(), 100);
  EXPECT(done.size() == 100);
  scheduler->Stop();
  for (uint64_t i = 0; i < raw->executed.size(); ++i) EXPECT(raw->executed[i] == i + 1);
  EXPECT(scheduler->InflightCount() == 0);
  return ok;
}

bool DirectSchedulerRunsInstancesInParallel() {
  bool ok = true;
  RecordingRuntime::Reset();
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  for (int i = 0; i < 3; ++i) {
    runtimes.push_back(std::make_unique<RecordingRuntime>(std::chrono::milliseconds(20)));
  }
  std::unique_ptr<DirectScheduler> scheduler;
  DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler);
  for (uint64_t i = 1; i <= 9; ++i) {
    auto request = MakeRequest(i);
    scheduler->Enqueue(&request);
  }
  EXPECT(Collect(queue.get(), 9).size() == 9);
  EXPECT(RecordingRuntime::MaxRunning() == 3);
  return ok;
}

bool StopFinishesEveryAcceptedRequestThenRefusesNewOnes() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::make_unique<RecordingRuntime>(std::chrono::milliseconds(2)));
  std::unique_ptr<DirectScheduler> scheduler;
  DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler);
  for (uint64_t i = 1; i <= 20; ++i) {
    auto request = MakeRequest(i);
    scheduler->Enqueue(&request);
  }
  scheduler->Stop();
  std::vector<std::unique_ptr<InferRequest>> out;
  queue->Drain(&out);
  EXPECT(out.size() == 20);
  auto late = MakeRequest(99);
  Status status = scheduler->Enqueue(&late);
  EXPECT(status.Code() == StatusCode::kUnavailable);
  EXPECT(late != nullptr);  // refused: the caller still owns it
  return ok;
}

bool StatsCountSuccessFailureAndBatchSizes() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::vector<std::unique_ptr<ModelRuntime>> runtimes;
  runtimes.push_back(std::make_unique<RecordingRuntime>(std::chrono::microseconds(0), true));
  std::unique_ptr<DirectScheduler> scheduler;
  DirectScheduler::Create(std::move(runtimes), queue.get(), &stats, &scheduler);
  for (uint64_t i = 1; i <= 10; ++i) {  // odd tickets fail
    auto request = MakeRequest(i, i <= 4 ? 4 : 1);
    scheduler->Enqueue(&request);
  }
  auto done = Collect(queue.get(), 10);
  stats.RecordRejected(2, 1000);
  ModelStatsSnapshot snap = stats.Snapshot();
  EXPECT(snap.by_batch_size[4].success_count == 2);
  EXPECT(snap.by_batch_size[4].failed_count == 2);
  EXPECT(snap.by_batch_size[1].success_count == 3);
  EXPECT(snap.by_batch_size[1].failed_count == 3);
  EXPECT(snap.by_batch_size[2].failed_count == 1);
  EXPECT(snap.inference_count == 2 * 4 + 3 * 1);
  EXPECT(snap.execution_count == 5);
  int failures = 0;
  for (auto& request : done) failures += request->status.IsOk() ? 0 : 1;
  EXPECT(failures == 5);
  return ok;
}

bool CreateRefusesAModelWithoutInstances() {
  bool ok = true;
  std::unique_ptr<CompletionQueue> queue;
  CompletionQueue::Create(&queue);
  ModelStats stats;
  std::unique_ptr<DirectScheduler> scheduler;
  Status status = DirectScheduler::Create({}, queue.get(), &stats, &scheduler);
  EXPECT(status.Code() == StatusCode::kInvalidArg);
  EXPECT(scheduler == nullptr);
  return ok;
}

}  // namespace
}  // namespace pyserver

int main() {
  using namespace pyserver;
  Run("CompletionQueueSignalsOnlyWhenNonEmpty", CompletionQueueSignalsOnlyWhenNonEmpty);
  Run("CompletionQueueLosesNothingUnderConcurrentPushes",
      CompletionQueueLosesNothingUnderConcurrentPushes);
  Run("DirectSchedulerRunsRequestsInArrivalOrderOnOneInstance",
      DirectSchedulerRunsRequestsInArrivalOrderOnOneInstance);
  Run("DirectSchedulerRunsInstancesInParallel", DirectSchedulerRunsInstancesInParallel);
  Run("StopFinishesEveryAcceptedRequestThenRefusesNewOnes",
      StopFinishesEveryAcceptedRequestThenRefusesNewOnes);
  Run("StatsCountSuccessFailureAndBatchSizes", StatsCountSuccessFailureAndBatchSizes);
  Run("CreateRefusesAModelWithoutInstances", CreateRefusesAModelWithoutInstances);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
